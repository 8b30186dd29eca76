/**
 * Publish/subscribe topics: connections subscribe to topics
 * (`ws.subscribe("room:42")`), and the server, a connection or any part of
 * the application publishes a text or binary message to every subscriber.
 *
 * Each server has topics of its own unless a `Topics` service is in the
 * context it is built in: provide `Topics.layer` to share one set of topics
 * between servers (and to publish from outside a connection, e.g. an HTTP
 * route), or `RedisTopics.layer` to reach the subscribers of every process
 * that uses the same Redis.
 *
 * A published message is encoded once (one frame, the same bytes queued to
 * every subscriber; a subscriber that negotiated permessage-deflate
 * compresses it on its own), and what one turn of the event loop queues to
 * a subscriber goes out in one write. Publishing never waits: each
 * subscriber gets the message under its own `maxBufferedAmount` and overflow
 * policy (`"close"` closes it with 1008; `"wait"` and `"drop"` drop the
 * message and count it in its `droppedMessages`), so that a slow subscriber
 * slows nobody else, and every outcome is counted (`PublishResult`, and the
 * `websock.pubsub.*` metrics).
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Internal from "./internal/topics.ts"
import type * as WebSocket from "./WebSocket.ts"

/**
 * @since 0.2.0
 * @category models
 */
export type PublishResult = WebSocket.PublishResult

/**
 * The topics, as a service.
 *
 * @since 0.2.0
 * @category models
 */
export interface TopicsService {
  /**
   * Publishes to every subscriber of `topic` (in this process, and in the
   * others with `RedisTopics`), but `exclude`; never waits. The result counts
   * this process's subscribers.
   */
  readonly publish: (
    topic: string,
    message: WebSocket.Message,
    options?: { readonly exclude?: WebSocket.WebSocketConnection | undefined }
  ) => Effect.Effect<PublishResult>
  /** The connections of this process subscribed to `topic`. */
  readonly subscriberCount: (topic: string) => Effect.Effect<number>
  /** Topics with at least one subscriber in this process. */
  readonly topicCount: Effect.Effect<number>
  /** @internal */
  readonly hub: Internal.Hub
}

/**
 * The topics servers use when it is in their context (see the module's doc).
 *
 * @since 0.2.0
 * @category services
 */
export class Topics extends Context.Service<Topics, TopicsService>()("websock/Topics") {}

/** @internal */
export const fromHub = (hub: Internal.Hub): TopicsService => ({
  publish: (topic, message, options) => Effect.sync(() => hub.publish(topic, message, Internal.subscriberOf(options?.exclude))),
  subscriberCount: (topic) => Effect.sync(() => hub.subscriberCount(topic)),
  topicCount: Effect.sync(() => hub.topicCount()),
  hub
})

/**
 * Topics in this process, their metrics (`websock.pubsub.*`) reported into
 * the current context's metric registry until the scope closes.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make: Effect.Effect<TopicsService, never, Scope.Scope> = makeWith({ metrics: true })

/** @internal */
export function makeWith(options: { readonly metrics: boolean }): Effect.Effect<TopicsService, never, Scope.Scope> {
  return Effect.contextWith((context: Context.Context<never>) =>
    Effect.acquireRelease(
      Effect.sync(() => Internal.makeHub(options.metrics ? context : undefined)),
      (made) => Effect.sync(made.release)
    ).pipe(Effect.map((made) => fromHub(made.hub)))
  )
}

/**
 * Topics in this process, shared by every server built with this layer.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer: Layer.Layer<Topics> = Layer.effect(Topics, make)
