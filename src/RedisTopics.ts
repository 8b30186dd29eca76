/**
 * Topics across processes on Redis pub/sub: a `Topics` whose publishes reach
 * the subscribers of every process using the same Redis (and the same
 * `prefix`), built on the node-redis client of `@effect/platform-node`'s
 * `NodeRedis` layer.
 *
 * - A process subscribes to a topic's Redis channel only while it has local
 *   subscribers of that topic, so a process receives only the topics it
 *   serves.
 * - A message is published to Redis once per publish, and delivered locally
 *   once: the copy that comes back from Redis to the process that published
 *   it is recognized (each process has a random 8-byte origin) and skipped.
 * - Topic names are escaped into ASCII channel names (`prefix` + the topic,
 *   percent-encoded outside `A-Z a-z 0-9 - . _ : /`), one-to-one, so no two
 *   topics share a channel; payloads travel as bytes (binary-safe, no
 *   base64), text checked as UTF-8 on arrival.
 * - When Redis goes away, both connections reconnect with capped exponential
 *   backoff (with jitter, up to 2 s, forever) and the subscriber resubscribes
 *   every live topic; local delivery never waits for Redis. What cannot be
 *   published meanwhile is counted (`websock.pubsub.redis.unpublished`), not
 *   queued; what other processes published meanwhile and never arrived is
 *   counted by its receivers (`websock.pubsub.redis.missed`), from the
 *   sequence number each message carries per origin and topic.
 *
 * The guarantee is Redis pub/sub's: at most once, in order per publisher and
 * topic (one connection publishes, in order, and Redis keeps the order of one
 * connection's messages).
 *
 * Why not `effect/persistence/Redis`'s `subscribe`: it opens one Redis
 * connection per channel (a `duplicate` of the client per call), which a
 * server with thousands of topics cannot afford, and its commands take
 * strings only, which binary messages would pay for with base64 (a third
 * more bytes, and the encoding). This module uses the same node-redis client
 * (`NodeRedis.client`) for one publishing and one subscribing connection in
 * all.
 *
 * @since 0.2.0
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Redis from "effect/persistence/Redis"
import type * as Scope from "effect/Scope"
import { Buffer, isUtf8 } from "node:buffer"
import { randomBytes } from "node:crypto"
import * as Internal from "./internal/topics.ts"
import * as Topics from "./Topics.ts"

/**
 * @since 0.2.0
 * @category options
 */
export interface Options {
  /** Prepended to every channel name. Default `"websock:topic:"`. */
  readonly prefix?: string | undefined
}

/** What the adapter counts (see the README's table). */
class Counts {
  published = 0
  unpublished = 0
  received = 0
  missed = 0
  malformed = 0
  reconnects = 0
}

/** Bytes before the payload: the kind, the origin, the sequence number. */
const HEADER = 13
const TEXT = 1
const BINARY = 2

const SAFE = /^[A-Za-z0-9\-._:/]$/

/**
 * A topic as an ASCII channel name, one-to-one: safe characters as they are,
 * everything else percent-encoded (UTF-8 bytes as `%XX`, a lone surrogate,
 * which has no UTF-8, as `%uXXXX`).
 *
 * @since 0.2.0
 * @category channels
 */
export const escapeTopic = (topic: string): string => {
  let out = ""
  for (let i = 0; i < topic.length; i++) {
    const c = topic[i]!
    if (SAFE.test(c)) {
      out += c
      continue
    }
    const code = topic.charCodeAt(i)
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < topic.length) {
      const next = topic.charCodeAt(i + 1)
      if (next >= 0xdc00 && next <= 0xdfff) {
        for (const byte of Buffer.from(topic.slice(i, i + 2), "utf8")) out += "%" + hex2(byte)
        i++
        continue
      }
    }
    if (code >= 0xd800 && code <= 0xdfff) out += "%u" + code.toString(16).padStart(4, "0")
    else for (const byte of Buffer.from(c, "utf8")) out += "%" + hex2(byte)
  }
  return out
}

const hex2 = (byte: number): string => byte.toString(16).padStart(2, "0")

/** Capped exponential backoff with jitter, forever: Redis may be back at any time. */
const backoff = (retries: number): number => Math.min(50 * 2 ** retries, 2000) + Math.floor(Math.random() * 100)

/** The topic's sequence numbers, per origin (`hex`), as last seen here. */
type Seen = Map<string, number>

/**
 * Topics on Redis, in the current scope (the two connections close with
 * it). Fails with `RedisError` when Redis cannot be reached at start.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (options?: Options): Effect.Effect<Topics.TopicsService, Redis.RedisError, NodeRedis.NodeRedis | Scope.Scope> =>
  Effect.gen(function*() {
    const prefix = options?.prefix ?? "websock:topic:"
    const { client } = yield* NodeRedis.NodeRedis
    const context = yield* Effect.context<never>()
    const runSync = Effect.runSyncWith(context)
    const made = yield* Effect.acquireRelease(Effect.sync(() => Internal.makeHub(context)), (made) => Effect.sync(made.release))
    const hub = made.hub
    const counts = new Counts()
    registerMetrics(context, counts)
    const origin = randomBytes(8)
    const self = origin.toString("hex")
    const connect = (name: string, extra: Record<string, unknown>, onBack: () => void = () => {}) =>
      Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            let ready = false // set on the first `ready`: before it, a failure fails the layer (Redis unreachable at start)
            const socket = {
              ...(client.options?.socket ?? {}),
              reconnectStrategy: (retries: number, cause: Error) => (ready ? backoff(retries) : cause)
            }
            const connection = client.duplicate({ ...extra, socket })
            let lost = false
            connection.on("error", (cause: unknown) => {
              if (lost) return
              lost = true
              runSync(Effect.logWarning(`websock: Redis ${name} connection lost; reconnecting`, String(cause)))
            })
            connection.on("ready", () => {
              ready = true
              if (!lost) return
              lost = false
              counts.reconnects++
              runSync(Effect.logInfo(`websock: Redis ${name} connection back`))
              onBack()
            })
            await connection.connect()
            return connection
          },
          catch: (cause) => new Redis.RedisError({ cause })
        }),
        (connection) => Effect.sync(() => connection.destroy())
      )
    // Commands fail at once while the connection is down (counted), instead of queueing without bound.
    const publisher = yield* connect("publisher", { disableOfflineQueue: true })
    // Back after a loss: every live topic is subscribed again. node-redis
    // resubscribes the channels it had answers for, but not one whose
    // SUBSCRIBE was in flight when the connection went (subscribing twice is
    // one subscription).
    const subscriber = yield* connect("subscriber", {}, () => {
      if (channels.size > 0) subscriber.subscribe([...channels.keys()], onMessage, true).catch(warn("SUBSCRIBE after reconnecting"))
    })
    /** Topics with local subscribers, by channel; what was seen of each, per origin. */
    const channels = new Map<string, { readonly topic: string; readonly seen: Seen }>()
    /** The next sequence number of each topic published here. */
    const sequence = new Map<string, number>()

    const onMessage = (message: Buffer, channel: Buffer): void => {
      const entry = channels.get(channel.toString())
      if (entry === undefined) return // unsubscribed meanwhile
      const kind = message.length >= HEADER ? message[0] : 0
      if (kind !== TEXT && kind !== BINARY) {
        counts.malformed++
        return
      }
      const from = message.toString("hex", 1, 9)
      if (from === self) return // published here, delivered here already
      const seq = message.readUInt32BE(9)
      const last = entry.seen.get(from)
      if (last !== undefined) {
        const gap = (seq - last - 1) >>> 0
        // One connection publishes in order: a number below the last is its
        // origin's sequence starting again, delivered as a new baseline.
        if (gap > 0 && gap < 0x80000000) counts.missed += gap
      }
      entry.seen.set(from, seq)
      const payload = message.subarray(HEADER)
      if (kind === TEXT && !isUtf8(payload)) {
        counts.malformed++
        return
      }
      counts.received++
      hub.deliver(entry.topic, new Internal.Shared(kind === TEXT, payload))
    }

    const warn = (what: string) => (cause: unknown) => {
      runSync(Effect.logWarning(`websock: Redis ${what} failed`, String(cause)))
    }

    hub.relay = {
      subscribed: (topic) => {
        const channel = prefix + escapeTopic(topic)
        channels.set(channel, { topic, seen: new Map() })
        subscriber.subscribe(channel, onMessage, true).catch(warn(`SUBSCRIBE ${channel}`))
      },
      unsubscribed: (topic) => {
        const channel = prefix + escapeTopic(topic)
        channels.delete(channel)
        subscriber.unsubscribe(channel, onMessage, true).catch(warn(`UNSUBSCRIBE ${channel}`))
      },
      publish: (topic, shared) => {
        if (!publisher.isReady) {
          counts.unpublished++
          return
        }
        const seq = sequence.get(topic) ?? 0
        sequence.set(topic, (seq + 1) >>> 0)
        const payload = shared.payload
        const envelope = Buffer.allocUnsafe(HEADER + payload.length)
        envelope[0] = shared.text ? TEXT : BINARY
        origin.copy(envelope, 1)
        envelope.writeUInt32BE(seq, 9)
        envelope.set(payload, HEADER)
        publisher.publish(prefix + escapeTopic(topic), envelope).then(
          () => void counts.published++,
          () => void counts.unpublished++
        )
      }
    }
    yield* Effect.addFinalizer(() => Effect.sync(() => (hub.relay = undefined)))
    return Topics.fromHub(hub)
  })

/**
 * `Topics` on Redis (see the module's doc), for the servers built with it:
 * needs `NodeRedis` (`NodeRedis.layer({ url })` of `@effect/platform-node`).
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<Topics.Topics, Redis.RedisError, NodeRedis.NodeRedis> =>
  Layer.effect(Topics.Topics, make(options))

const noop = (): void => {}

const registerMetrics = (context: Context.Context<never>, counts: Counts): void => {
  const counter = (name: string, description: string, unit: string, get: () => number) =>
    Metric.registerUnsafe(
      Metric.counter(`websock.pubsub.redis.${name}`, { description, attributes: { unit }, incremental: true }),
      context,
      { get: () => ({ count: get(), incremental: true }), update: noop, modify: noop }
    )
  counter("published", "Messages published to Redis ({message})", "{message}", () => counts.published)
  counter("unpublished", "Messages that could not be published to Redis (it was unreachable, or the command failed) ({message})", "{message}", () => counts.unpublished)
  counter("received", "Messages from other processes delivered here ({message})", "{message}", () => counts.received)
  counter("missed", "Messages of other processes that never arrived, from the gaps in their sequence numbers ({message})", "{message}", () => counts.missed)
  counter("malformed", "Messages on a topic's channel that were not websock's, or not UTF-8 text, dropped ({message})", "{message}", () => counts.malformed)
  counter("reconnects", "Times a Redis connection came back after it was lost ({reconnect})", "{reconnect}", () => counts.reconnects)
}
