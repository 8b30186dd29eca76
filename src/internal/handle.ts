/**
 * The handle given to handlers (`WebSocket.WebSocketConnection`): a thin view
 * of its connection's driver and parts, with nothing allocated per
 * connection beyond itself (streams and effects are made when asked for).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import type { WebSocketError } from "../Errors.ts"
import * as Frame from "../Frame.ts"
import type * as WebSocket from "../WebSocket.ts"
import type { Inbox } from "./inbox.ts"
import type { Outbox } from "./outbox.ts"
import type { Sender } from "./sender.ts"
import { type Subscriber, SubscriberOf } from "./topics.ts"

type Message = WebSocket.Message

/** The connection, as its handle sees it. */
export interface HandleTarget {
  readonly id: number
  readonly request: WebSocket.Request
  readonly protocol: string | undefined
  readonly extensions: string | undefined
  /** The policy of `send` and `sendAll`. */
  readonly limits: { readonly overflow: WebSocket.OverflowPolicy }
  readonly inbox: Inbox
  readonly outbox: Outbox
  readonly sender: Sender
  ping(payload: Uint8Array | undefined): Effect.Effect<number, WebSocketError>
  close(code: number, reason: string): Effect.Effect<WebSocket.CloseOutcome, WebSocketError>
  terminate(): void
  awaitOutcome(): Effect.Effect<WebSocket.CloseOutcome>
  subscribe(topic: string): Effect.Effect<void, WebSocketError>
  unsubscribe(topic: string): void
  subscriptions(): ReadonlyArray<string>
  publish(topic: string, message: Message, self: boolean): WebSocket.PublishResult
  readonly subscriber: Subscriber
}

/** @internal */
export class Handle implements WebSocket.WebSocketConnection {
  readonly #driver: HandleTarget
  constructor(driver: HandleTarget) {
    this.#driver = driver
  }
  get id(): number {
    return this.#driver.id
  }
  get request(): WebSocket.Request {
    return this.#driver.request
  }
  get protocol(): string | undefined {
    return this.#driver.protocol
  }
  get extensions(): string | undefined {
    return this.#driver.extensions
  }
  get messages(): Stream.Stream<Message> {
    return this.#driver.inbox.stream()
  }
  get receive(): Effect.Effect<Message, WebSocketError> {
    return this.#driver.inbox.receive()
  }
  send(message: Message): Effect.Effect<void, WebSocketError> {
    return Effect.suspend(() => this.#driver.sender.send([message], this.#driver.limits.overflow))
  }
  sendAll(messages: ReadonlyArray<Message>): Effect.Effect<void, WebSocketError> {
    return Effect.suspend(() => (messages.length === 0 ? Effect.void : this.#driver.sender.send(messages, this.#driver.limits.overflow)))
  }
  trySend(message: Message, options?: { readonly overflow?: "drop" | "close" }): Effect.Effect<WebSocket.SendStatus> {
    return Effect.sync(() => this.#driver.sender.trySend(message, options?.overflow ?? "drop"))
  }
  ping(payload?: Uint8Array): Effect.Effect<number, WebSocketError> {
    return Effect.suspend(() => this.#driver.ping(payload))
  }
  close(code: number = Frame.CloseCode.Normal, reason = ""): Effect.Effect<WebSocket.CloseOutcome, WebSocketError> {
    return Effect.suspend(() => this.#driver.close(code, reason))
  }
  get terminate(): Effect.Effect<void> {
    return Effect.sync(() => this.#driver.terminate())
  }
  get closed(): Effect.Effect<WebSocket.CloseOutcome> {
    return Effect.suspend(() => this.#driver.awaitOutcome())
  }
  get bufferedAmount(): Effect.Effect<number> {
    return Effect.sync(() => this.#driver.outbox.buffered())
  }
  get droppedMessages(): Effect.Effect<number> {
    return Effect.sync(() => this.#driver.sender.droppedMessages)
  }
  subscribe(topic: string): Effect.Effect<void, WebSocketError> {
    return Effect.suspend(() => this.#driver.subscribe(topic))
  }
  unsubscribe(topic: string): Effect.Effect<void> {
    return Effect.sync(() => this.#driver.unsubscribe(topic))
  }
  get subscriptions(): Effect.Effect<ReadonlyArray<string>> {
    return Effect.sync(() => this.#driver.subscriptions())
  }
  publish(topic: string, message: Message, options?: { readonly self?: boolean }): Effect.Effect<WebSocket.PublishResult> {
    return Effect.sync(() => this.#driver.publish(topic, message, options?.self === true))
  }
  /** The connection as its topics' subscriber (to exclude it from a publish). */
  get [SubscriberOf](): Subscriber {
    return this.#driver.subscriber
  }
}
