/**
 * Topics in one process: which connections subscribe to which topic, and
 * publishing to them. A published message is framed once (server frames are
 * unmasked, so every subscriber's frame is the same bytes) and those bytes
 * are queued to each subscriber's outbox, which writes everything queued in
 * one turn as one write; a subscriber that negotiated permessage-deflate
 * gets the message through its own compression queue instead (RFC 7692
 * §6: with context takeover a compressed frame depends on that
 * connection's history, so it cannot be shared).
 *
 * Publishing never waits: each subscriber's delivery is `trySend`'s, under
 * the subscriber's own `maxBufferedAmount` and overflow policy (`"close"`
 * closes it with 1008, anything else drops the message and counts it), and
 * every outcome is counted, per publish (`PublishResult`) and in total (the
 * hub's metrics).
 *
 * A hub may have a `Relay` (the Redis adapter): it is told when a topic gets
 * its first local subscriber and loses its last, and is handed every
 * message published here, once; what it receives from elsewhere it delivers
 * with `deliver`, which does not hand it back.
 *
 * @internal
 */
import * as Context from "effect/Context"
import * as Metric from "effect/Metric"
import { Buffer } from "node:buffer"
import * as Frame from "../Frame.ts"
import type * as WebSocket from "../WebSocket.ts"

/** How one subscriber took a published message. */
export const Outcome = {
  /** Queued, the subscriber's buffer below its high-water mark. */
  Sent: 0,
  /** Queued, the buffer above the high-water mark (a slow subscriber). */
  Queued: 1,
  /** Discarded: the buffer was above `maxBufferedAmount` (counted in its `droppedMessages`). */
  Dropped: 2,
  /** Not sent: the connection is closing or closed, or this message's overflow has just closed it (1008). */
  Closed: 3
} as const

/** @internal */
export type Outcome = typeof Outcome[keyof typeof Outcome]

/**
 * A message on its way to subscribers: its payload encoded once, its frame
 * encoded once when the first subscriber without compression needs it.
 */
export class Shared {
  readonly text: boolean
  readonly payload: Uint8Array
  private message: WebSocket.Message | undefined
  private encoded: Uint8Array | undefined = undefined

  constructor(text: boolean, payload: Uint8Array, message?: WebSocket.Message) {
    this.text = text
    this.payload = payload
    this.message = message
  }

  static of(message: WebSocket.Message): Shared {
    return typeof message === "string" ? new Shared(true, Buffer.from(message, "utf8"), message) : new Shared(false, message, message)
  }

  /** The whole frame: FIN, the opcode, no RSV bit, unmasked (RFC 6455 §5.2, §5.1). */
  frame(): Uint8Array {
    if (this.encoded !== undefined) return this.encoded
    const length = this.payload.length
    const frame = Buffer.allocUnsafe(Frame.headerSize(length) + length)
    const at = Frame.writeHeader(frame, 0, 0x80 | (this.text ? Frame.Opcode.Text : Frame.Opcode.Binary), length)
    frame.set(this.payload, at)
    return (this.encoded = frame)
  }

  /** The message as a handler would send it (for a compression queue). */
  value(): WebSocket.Message {
    const payload = this.payload
    return (this.message ??= this.text ? Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString("utf8") : payload)
  }
}

/** The key under which a connection's handle gives its subscriber (to exclude it from a publish). */
export const SubscriberOf: unique symbol = Symbol.for("websock/Topics/Subscriber")

/** The subscriber behind a handle, if it is one of ours. */
export const subscriberOf = (handle: WebSocket.WebSocketConnection | undefined): Subscriber | undefined =>
  handle === undefined ? undefined : (handle as { readonly [SubscriberOf]?: Subscriber })[SubscriberOf]

/** A connection, as the hub sees it. */
export interface Subscriber {
  /** The topics it subscribes to (allocated on its first subscription). */
  topics: Set<string> | undefined
  /** Queues a published message under the subscriber's own limits; never waits. */
  deliver(message: Shared): Outcome
}

/** What reaches other processes (see `RedisTopics`). */
export interface Relay {
  /** A topic got its first local subscriber. */
  readonly subscribed: (topic: string) => void
  /** A topic lost its last local subscriber. */
  readonly unsubscribed: (topic: string) => void
  /** A message published in this process, to send on once. */
  readonly publish: (topic: string, message: Shared) => void
}

/** The hub's totals, read by its metrics. */
export class Counts {
  published = 0
  sent = 0
  queued = 0
  dropped = 0
  closed = 0
}

const NONE: WebSocket.PublishResult = { subscribers: 0, sent: 0, queued: 0, dropped: 0, closed: 0 }

/** @internal */
export class Hub {
  /** Subscribers by topic; a topic without subscribers has no entry. */
  private readonly topics = new Map<string, Set<Subscriber>>()
  /** Subscriptions in all. */
  private subscriptions = 0
  readonly counts: Counts
  relay: Relay | undefined = undefined

  constructor(counts: Counts) {
    this.counts = counts
  }

  /** Subscribes; false when already subscribed. */
  subscribe(subscriber: Subscriber, topic: string): boolean {
    const mine = (subscriber.topics ??= new Set())
    if (mine.has(topic)) return false
    mine.add(topic)
    let set = this.topics.get(topic)
    if (set === undefined) {
      this.topics.set(topic, set = new Set())
      this.relay?.subscribed(topic)
    }
    set.add(subscriber)
    this.subscriptions++
    return true
  }

  /** Unsubscribes; false when not subscribed. */
  unsubscribe(subscriber: Subscriber, topic: string): boolean {
    const mine = subscriber.topics
    if (mine === undefined || !mine.delete(topic)) return false
    this.leave(subscriber, topic)
    return true
  }

  /** Ends every subscription of a connection (when it ends). */
  unsubscribeAll(subscriber: Subscriber): void {
    const mine = subscriber.topics
    if (mine === undefined) return
    subscriber.topics = undefined
    for (const topic of mine) this.leave(subscriber, topic)
  }

  private leave(subscriber: Subscriber, topic: string): void {
    const set = this.topics.get(topic)
    if (set === undefined || !set.delete(subscriber)) return
    this.subscriptions--
    if (set.size === 0) {
      this.topics.delete(topic)
      this.relay?.unsubscribed(topic)
    }
  }

  /** Local subscribers of a topic. */
  subscriberCount(topic: string): number {
    return this.topics.get(topic)?.size ?? 0
  }

  /** Topics with local subscribers. */
  topicCount(): number {
    return this.topics.size
  }

  /** Subscriptions in all, over every topic. */
  subscriptionCount(): number {
    return this.subscriptions
  }

  /** Publishes here (to every local subscriber but `exclude`) and, through the relay, elsewhere. */
  publish(topic: string, message: WebSocket.Message, exclude: Subscriber | undefined): WebSocket.PublishResult {
    this.counts.published++
    if (this.relay === undefined && !this.topics.has(topic)) return NONE
    const shared = Shared.of(message)
    this.relay?.publish(topic, shared)
    return this.deliver(topic, shared, exclude)
  }

  /** Delivers to the local subscribers only (a message from elsewhere, or after `publish`). */
  deliver(topic: string, shared: Shared, exclude?: Subscriber): WebSocket.PublishResult {
    const set = this.topics.get(topic)
    if (set === undefined) return NONE
    let subscribers = 0 // subscribers reached (all but the excluded one)
    let sent = 0
    let queued = 0
    let dropped = 0
    let closed = 0
    for (const subscriber of set) {
      if (subscriber === exclude) continue
      subscribers++
      switch (subscriber.deliver(shared)) {
        case Outcome.Sent:
          sent++
          break
        case Outcome.Queued:
          queued++
          break
        case Outcome.Dropped:
          dropped++
          break
        case Outcome.Closed:
          closed++
          break
      }
    }
    const counts = this.counts
    counts.sent += sent
    counts.queued += queued
    counts.dropped += dropped
    counts.closed += closed
    return { subscribers, sent, queued, dropped, closed }
  }
}

const noop = (): void => {}

/** The hubs reporting into one registry: their counts add up, their gauges too. */
interface Reporting {
  readonly counts: Counts
  readonly hubs: Set<Hub>
}

const byRegistry = new WeakMap<Metric.MetricRegistry, Reporting>()

const counter = (context: Context.Context<never>, name: string, description: string, attributes: Record<string, string>, get: () => number): void => {
  Metric.registerUnsafe(
    Metric.counter(name, { description, attributes, incremental: true }),
    context,
    { get: () => ({ count: get(), incremental: true }), update: noop, modify: noop }
  )
}

const gauge = (context: Context.Context<never>, name: string, description: string, attributes: Record<string, string>, get: () => number): void => {
  Metric.registerUnsafe(
    Metric.gauge(name, { description, attributes }),
    context,
    { get: () => ({ value: get() }), update: noop, modify: noop }
  )
}

/** Registers the `websock.pubsub.*` series of a registry, reading the hubs that report into it. */
const register = (context: Context.Context<never>, reporting: Reporting): void => {
  const { counts, hubs } = reporting
  const sum = (f: (hub: Hub) => number) => () => {
    let total = 0
    for (const hub of hubs) total += f(hub)
    return total
  }
  counter(context, "websock.pubsub.published", "Messages published to a topic in this process ({message})", { unit: "{message}" }, () => counts.published)
  const delivery = (outcome: string, get: () => number) =>
    counter(
      context,
      "websock.pubsub.deliveries",
      "Published messages offered to local subscribers, by outcome ({message})",
      { unit: "{message}", "websock.delivery.outcome": outcome },
      get
    )
  delivery("sent", () => counts.sent)
  delivery("queued", () => counts.queued)
  delivery("dropped", () => counts.dropped)
  delivery("closed", () => counts.closed)
  gauge(context, "websock.pubsub.subscriptions", "Subscriptions of local connections, over every topic ({subscription})", { unit: "{subscription}" }, sum((hub) => hub.subscriptionCount()))
  gauge(context, "websock.pubsub.topics", "Topics with local subscribers ({topic})", { unit: "{topic}" }, sum((hub) => hub.topicCount()))
}

/**
 * A hub whose counts report into the metric registry of `context` (shared by
 * the hubs of that registry), or into nothing; `release` takes it out of its
 * registry's gauges.
 */
export const makeHub = (context: Context.Context<never> | undefined): { readonly hub: Hub; readonly release: () => void } => {
  if (context === undefined) return { hub: new Hub(new Counts()), release: noop }
  const registry = Context.get(context, Metric.MetricRegistry)
  let reporting = byRegistry.get(registry)
  if (reporting === undefined) {
    reporting = { counts: new Counts(), hubs: new Set() }
    byRegistry.set(registry, reporting)
    register(context, reporting)
  }
  const hub = new Hub(reporting.counts)
  const hubs = reporting.hubs
  hubs.add(hub)
  return { hub, release: () => hubs.delete(hub) }
}
