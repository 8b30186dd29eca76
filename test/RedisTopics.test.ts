/**
 * Topics across processes on a real Redis server (Debian's redis-server,
 * started here on a free port; the tests fail when it cannot start): two
 * servers, each with its own Redis connections and origin as two processes
 * have, exchange topic messages both ways, text and binary byte for byte,
 * each delivered once (no echo to the origin); a server subscribes to a
 * topic's channel only while it has local subscribers; topic names map to
 * channels one-to-one; Redis stopped and restarted mid-test: local delivery
 * goes on, losses are counted, delivery across resumes; gaps in another
 * process's sequence numbers are counted as missed; foreign messages on a
 * channel are dropped and counted.
 *
 * @since 0.2.0
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import fc from "fast-check"
import { Buffer } from "node:buffer"
import { createClient } from "redis"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import * as RedisTopics from "../src/RedisTopics.ts"
import { RawClient } from "./support/RawClient.ts"
import * as RedisServer from "./support/RedisServer.ts"
import { join, start, type Started, subscribers, value } from "./support/TopicServer.ts"
import { until } from "./support/Wait.ts"

let redis: RedisServer.RedisServer
/** A plain client of the test's own, for PUBSUB NUMSUB and forged messages. */
let probe: ReturnType<typeof createClient>

beforeAll(async () => {
  redis = await RedisServer.start()
  probe = createClient({ url: redis.url, socket: { reconnectStrategy: () => 100 } })
  probe.on("error", () => {})
  await probe.connect()
})

afterAll(async () => {
  probe.destroy()
  await redis.stop()
})

const servers: Array<Started> = []
afterEach(async () => {
  RawClient.destroyAll()
  for (const s of servers.splice(0)) await s.close()
})

/** A server with topics on Redis: its own client, its own origin (as a process of its own would have). */
const onRedis = async (prefix?: string): Promise<Started> => {
  const layer = RedisTopics.layer({ prefix }).pipe(Layer.provide(NodeRedis.layer({ url: redis.url })))
  const s = await start({}, layer)
  servers.push(s)
  return s
}

describe("two servers on one Redis", () => {
  it("exchange messages both ways, text and all 256 byte values, each delivered once: no echo back to the origin", async () => {
    const a = await onRedis()
    const b = await onRedis()
    const onA = await join(a, "chat", 2)
    const onB = await join(b, "chat", 2)
    await untilNumsub("websock:topic:chat", 2)
    await onA[0]!.sendText("from a: ünïcødé ✓")
    for (const c of [onA[1]!, ...onB]) expect(await c.expectText()).toBe("from a: ünïcødé ✓")
    const binary = Uint8Array.from({ length: 256 }, (_, i) => i)
    await onB[0]!.sendBinary(binary)
    for (const c of [...onA, onB[1]!]) expect(Buffer.from(await c.expectBinary()).equals(Buffer.from(binary))).toBe(true)
    // Nothing came twice: every client's next frame is the answer to its Ping.
    for (const c of [...onA, ...onB]) {
      await c.ping("end")
      expect(Buffer.from(await c.expectPong()).toString()).toBe("end")
    }
    expect(value(a, "websock.pubsub.redis.published")).toBe(1)
    expect(value(a, "websock.pubsub.redis.received")).toBe(1)
    expect(value(b, "websock.pubsub.redis.received")).toBe(1)
  })

  it("1,000 messages published on one server reach the other's subscriber all, in order (one publishing connection per process)", async () => {
    const a = await onRedis()
    const b = await onRedis()
    const [onB] = await join(b, "ordered", 1)
    await untilNumsub("websock:topic:ordered", 1)
    await Effect.runPromise(Effect.forEach(Array.from({ length: 1000 }, (_, i) => `#${i}`), (m) => a.server.publish("ordered", m), { discard: true }))
    for (let i = 0; i < 1000; i++) expect(await onB!.expectText(5_000)).toBe(`#${i}`)
    await until("1000 published", () => value(a, "websock.pubsub.redis.published") === 1000)
    expect(value(b, "websock.pubsub.redis.received")).toBe(1000)
    expect(value(b, "websock.pubsub.redis.missed")).toBe(0)
  })

  it("a server subscribes to a topic's channel only while it has local subscribers, and gets none of another topic's traffic", async () => {
    const a = await onRedis()
    const b = await onRedis()
    const [onA] = await join(a, "only-a", 1)
    await untilNumsub("websock:topic:only-a", 1) // a's subscriber connection alone
    await join(b, "other", 1)
    await untilNumsub("websock:topic:other", 1)
    for (let i = 0; i < 20; i++) await probe.publish("websock:topic:only-a", "noise")
    const published = await Effect.runPromise(b.server.publish("only-a", "from b"))
    expect(published.subscribers).toBe(0) // no local subscriber on b
    expect(await onA!.expectText()).toBe("from b")
    // b got none of only-a's traffic (it is not subscribed to it): nothing received, nothing malformed.
    expect(value(b, "websock.pubsub.redis.received")).toBe(0)
    expect(value(b, "websock.pubsub.redis.malformed")).toBe(0)
    expect(value(a, "websock.pubsub.redis.malformed")).toBe(20) // the probe's "noise" is not websock's
    onA!.destroy()
    await untilNumsub("websock:topic:only-a", 0)
  })

  it("topics that look alike map to distinct channels (':', '%', '*', '?', spaces, non-ASCII, the prefix itself): each reaches its own subscribers only", async () => {
    const a = await onRedis()
    const b = await onRedis()
    // (A lone surrogate cannot come through a path: the property below covers it.)
    const topics = ["a:b", "a%3ab", "a%3Ab", "a*", "a?", "a b", "ä", "a\ufffd", "websock:topic:a"]
    const clients = new Map<string, RawClient>()
    for (const topic of topics) clients.set(topic, await RawClient.connect(b.port, { path: `/topic/${encodePath(topic)}` }))
    await until("b's subscribers", () => topics.every((t) => subscribers(b.server, t) === 1))
    for (const topic of topics) await untilNumsub(`websock:topic:${RedisTopics.escapeTopic(topic)}`, 1)
    for (const topic of topics) await Effect.runPromise(a.server.publish(topic, `to ${JSON.stringify(topic)}`))
    for (const topic of topics) {
      const c = clients.get(topic)!
      expect(await c.expectText()).toBe(`to ${JSON.stringify(topic)}`)
      await c.ping("1")
      await c.expectPong()
    }
  })

  it("escapeTopic is one-to-one and ASCII", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), fc.string({ unit: "binary" }), (x, y) => {
        const ex = RedisTopics.escapeTopic(x)
        expect(/^[\x21-\x7e]*$/.test(ex)).toBe(true)
        if (x !== y) expect(ex).not.toBe(RedisTopics.escapeTopic(y))
      }),
      { numRuns: 2_000 }
    )
    // One-to-one because it can be undone: decoding gives the topic back.
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), (x) => {
        expect(unescapeTopic(RedisTopics.escapeTopic(x))).toBe(x)
      }),
      { numRuns: 2_000 }
    )
  })
})

describe("Redis goes away and comes back", () => {
  it("local delivery goes on, what could not be published is counted, nothing crashes; delivery across resumes after the restart", async () => {
    const a = await onRedis()
    const b = await onRedis()
    const onA = await join(a, "r", 2)
    const [onB] = await join(b, "r", 1)
    await untilNumsub("websock:topic:r", 2)
    await onA[0]!.sendText("before")
    expect(await onA[1]!.expectText()).toBe("before")
    expect(await onB!.expectText()).toBe("before")

    await redis.stop()
    // Down: the local subscriber still gets every message at once; Redis's share is counted as unpublished.
    for (let i = 0; i < 5; i++) {
      await onA[0]!.sendText(`during ${i}`)
      expect(await onA[1]!.expectText()).toBe(`during ${i}`)
    }
    await until("5 unpublished", () => value(a, "websock.pubsub.redis.unpublished") === 5)

    await redis.restart()
    // Back: both connections reconnect, the subscriber resubscribes; a publish goes through again.
    await until("a and b reconnected", () => value(a, "websock.pubsub.redis.reconnects") >= 2 && value(b, "websock.pubsub.redis.reconnects") >= 2, 15_000)
    await untilNumsub("websock:topic:r", 2, 15_000)
    await onA[0]!.sendText("after")
    expect(await onA[1]!.expectText()).toBe("after")
    expect(await onB!.expectText(10_000)).toBe("after")
    // b never got the ones published during the outage (at most once), and nothing else came.
    await onB!.ping("p")
    await onB!.expectPong()
  })
})

describe("what arrives on a channel", () => {
  /** A message as another process would publish it: kind, 8-byte origin, sequence number, payload. */
  const envelope = (origin: number, seq: number, payload: string | Uint8Array, kind = 1): Buffer => {
    const header = Buffer.alloc(13)
    header[0] = kind
    header.writeUInt32BE(origin, 5)
    header.writeUInt32BE(seq, 9)
    return Buffer.concat([header, Buffer.from(payload)])
  }

  it("gaps in another process's sequence numbers are counted as missed; invalid UTF-8 text and foreign bytes are dropped and counted", async () => {
    const a = await onRedis()
    const [c] = await join(a, "seq", 1)
    await untilNumsub("websock:topic:seq", 1)
    const channel = "websock:topic:seq"
    await probe.publish(channel, envelope(7, 10, "ten"))
    await probe.publish(channel, envelope(7, 11, "eleven"))
    await probe.publish(channel, envelope(7, 15, "fifteen")) // 12, 13, 14 never came
    await probe.publish(channel, envelope(8, 0, "another origin"))
    await probe.publish(channel, envelope(7, 16, Uint8Array.of(0xce, 0xba, 0xe1))) // text cut inside a character
    await probe.publish(channel, envelope(7, 17, Uint8Array.of(0xff, 0xfe))) // never UTF-8
    await probe.publish(channel, envelope(7, 18, Uint8Array.of(0xff, 0xfe), 2)) // binary: fine
    await probe.publish(channel, envelope(7, 19, "nineteen", 3)) // no such kind
    await probe.publish(channel, Buffer.from("short"))
    await probe.publish(channel, envelope(7, 20, "twenty"))
    for (const text of ["ten", "eleven", "fifteen", "another origin"]) expect(await c!.expectText()).toBe(text)
    expect(Array.from(await c!.expectBinary())).toEqual([0xff, 0xfe])
    expect(await c!.expectText()).toBe("twenty")
    expect(value(a, "websock.pubsub.redis.missed")).toBe(4) // 12, 13, 14, and 19 (its envelope is not trusted)
    expect(value(a, "websock.pubsub.redis.malformed")).toBe(4)
    expect(value(a, "websock.pubsub.redis.received")).toBe(6)
  })
})

const untilNumsub = (channel: string, n: number, timeout?: number): Promise<void> => redis.untilNumsub(channel, n, timeout)

/** The inverse of `escapeTopic`: `%uXXXX` is a UTF-16 unit, runs of `%XX` are UTF-8 bytes. */
const unescapeTopic = (channel: string): string =>
  channel.replace(/%u([0-9a-f]{4})|(?:%[0-9a-f]{2})+/g, (run, unit: string | undefined) =>
    unit !== undefined ? String.fromCharCode(parseInt(unit, 16)) : Buffer.from(run.replaceAll("%", ""), "hex").toString("utf8"))

const encodePath = (topic: string): string => Array.from(Buffer.from(topic, "utf8")).map((b) => "%" + b.toString(16).padStart(2, "0")).join("")
