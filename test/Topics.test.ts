/**
 * Topics in one process (src/Topics.ts, src/internal/topics.ts), over real
 * sockets: fan-out to many subscribers with the sender excluded, the frame
 * encoded once and byte-identical for every subscriber, per-subscriber
 * overflow policies under a subscriber that does not read (the publisher
 * and the other subscribers unaffected), compression per subscriber where
 * it was negotiated, subscriptions ending with their connection, one
 * `Topics` shared by two servers, and the `websock.pubsub.*` metrics.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { Buffer } from "node:buffer"
import * as zlib from "node:zlib"
import { afterEach, describe, expect, it } from "vitest"
import { WebSocketError } from "../src/Errors.ts"
import * as Frame from "../src/Frame.ts"
import * as Server from "../src/Server.ts"
import * as Topics from "../src/Topics.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { readToClose } from "./Limits.helpers.ts"
import { bytes, RawClient } from "./support/RawClient.ts"
import { join, type Results, start, type Started, subscribers, value, withServer } from "./support/TopicServer.ts"
import { until } from "./support/Wait.ts"

afterEach(() => RawClient.destroyAll())

const KiB = 1024

describe("fan-out in one process", () => {
  it("50 subscribers: a text and a binary message published by one reach the 49 others once each, in order, not the sender; the results count 49 sent", async () => {
    await withServer({}, async (s) => {
      const clients = await join(s, "room", 50)
      const binary = Uint8Array.from({ length: 256 }, (_, i) => i)
      await clients[0]!.sendText("héllo, room")
      await clients[0]!.sendBinary(binary)
      for (const client of clients.slice(1)) {
        expect(await client.expectText()).toBe("héllo, room")
        expect(Buffer.from(await client.expectBinary()).equals(Buffer.from(binary))).toBe(true)
      }
      await until("both publishes", () => s.results.length === 2)
      expect(s.results).toEqual([
        { subscribers: 49, sent: 49, queued: 0, dropped: 0, closed: 0 },
        { subscribers: 49, sent: 49, queued: 0, dropped: 0, closed: 0 }
      ])
      // The sender got nothing back: its next frame is the answer to a Ping.
      await clients[0]!.ping("after")
      expect(bytes("after")).toEqual(await clients[0]!.expectPong())
      // Another topic's subscriber got nothing either.
      const other = (await join(s, "elsewhere", 1))[0]!
      await clients[1]!.sendText("only room")
      await other.ping("x")
      await other.expectPong()
      for (const client of clients.slice(0, 1).concat(clients.slice(2))) expect(await client.expectText()).toBe("only room")
    })
  })

  it("the server's publish reaches every subscriber (nobody excluded), as one unmasked FIN frame whose bytes are the same for all", async () => {
    await withServer({}, async (s) => {
      const clients = await join(s, "news", 20)
      const payload = "x".repeat(300) // a 16-bit length header
      const result = await Effect.runPromise(s.server.publish("news", payload))
      expect(result).toEqual({ subscribers: 20, sent: 20, queued: 0, dropped: 0, closed: 0 })
      const frames = await Promise.all(clients.map((c) => c.nextFrame()))
      for (const frame of frames) {
        expect(frame.fin).toBe(true)
        expect(frame.rsv1).toBe(false)
        expect(frame.opcode).toBe(Frame.Opcode.Text)
        expect(Buffer.from(frame.payload).toString()).toBe(payload)
      }
      // Nobody subscribes to this one.
      expect(await Effect.runPromise(s.server.publish("nobody", "x"))).toEqual({ subscribers: 0, sent: 0, queued: 0, dropped: 0, closed: 0 })
    })
  })

  it("many messages published in one go reach a subscriber in one write (batched per turn)", async () => {
    await withServer({}, async (s) => {
      const [client] = await join(s, "burst", 1)
      let chunks = 0
      client!.socket.on("data", () => chunks++)
      await Effect.runPromise(Effect.forEach(Array.from({ length: 100 }, (_, i) => `m${i}`), (m) => s.server.publish("burst", m), { discard: true }))
      for (let i = 0; i < 100; i++) expect(await client!.expectText()).toBe(`m${i}`)
      // 100 frames of 4-5 bytes: one write of the server's, so at most a couple of reads here.
      expect(chunks).toBeLessThanOrEqual(2)
    })
  })
})

describe("slow subscribers", () => {
  const silent = async (s: Started, topic: string): Promise<RawClient> => {
    const [client] = await join(s, topic, 1)
    client!.socket.pause() // never reads: the kernel's buffers fill, then the server's
    return client!
  }

  /**
   * Publishes `count` messages, one at a time, each once the healthy
   * subscriber has it: the healthy one never falls behind, the stuck one
   * falls further behind with every message.
   */
  const paced = async (s: Started, healthy: RawClient, count: number, size: number): Promise<Results> => {
    const message = new Uint8Array(size).fill(7)
    const results: Results = []
    for (let i = 0; i < count; i++) {
      results.push(await Effect.runPromise(s.server.publish("feed", message)))
      expect((await healthy.expectBinary(5_000)).length).toBe(size)
    }
    return results
  }

  it("\"drop\": a subscriber that does not read loses what passes maxBufferedAmount, counted; the healthy subscriber gets all 300", async () => {
    await withServer({ overflow: "drop", maxBufferedAmount: 256 * KiB, highWaterMark: 64 * KiB }, async (s) => {
      const stuck = await silent(s, "feed")
      const [healthy] = await join(s, "feed", 1)
      const results = await paced(s, healthy!, 300, 64 * KiB)
      const dropped = results.reduce((n, r) => n + r.dropped, 0)
      // What the kernel's buffers did not take was dropped, past the ceiling.
      expect(dropped).toBeGreaterThan(100)
      expect(results.every((r) => r.subscribers === 2 && r.closed === 0 && r.sent + r.queued + r.dropped === 2)).toBe(true)
      expect(value(s, "websock.pubsub.deliveries", { "websock.delivery.outcome": "dropped" })).toBe(dropped)
      expect(value(s, "websock.messages.dropped")).toBe(dropped)
      // The stuck one is still open, and gets what was queued before the ceiling once it reads.
      stuck.socket.resume()
      expect((await stuck.expectBinary(5_000)).length).toBe(64 * KiB)
      expect(subscribers(s.server, "feed")).toBe(2)
    })
  })

  it("\"close\": the subscriber that does not read is closed with 1008 at its ceiling; the healthy one goes on", async () => {
    await withServer({ overflow: "close", maxBufferedAmount: 256 * KiB, highWaterMark: 64 * KiB }, async (s) => {
      const stuck = await silent(s, "feed")
      const [healthy] = await join(s, "feed", 1)
      const results = await paced(s, healthy!, 300, 64 * KiB)
      expect(results.reduce((n, r) => n + r.dropped, 0)).toBe(0)
      // Closed once (1008), then "closed" for every later message until its socket is gone.
      expect(results.reduce((n, r) => n + r.closed, 0)).toBeGreaterThan(0)
      stuck.socket.resume()
      const close = await readToClose(stuck, { timeout: 5_000, skipData: true })
      expect(close.code).toBe(1008)
      expect(close.skipped).toBeGreaterThan(0) // what was queued before the ceiling came first
      await until("the stuck subscriber's end", () => subscribers(s.server, "feed") === 1)
    })
  })
})

describe("compression per subscriber", () => {
  it("a subscriber that negotiated permessage-deflate gets the message deflated (RSV1), one that did not gets the shared frame, from one publish", async () => {
    await withServer({ compression: { threshold: 0 } }, async (s) => {
      const [plain] = await join(s, "mixed", 1)
      const [deflating] = await join(s, "mixed", 1, { headers: { "Sec-WebSocket-Extensions": "permessage-deflate" }, allowRsv1: true })
      const text = "compress me ".repeat(100)
      expect(await Effect.runPromise(s.server.publish("mixed", text))).toMatchObject({ subscribers: 2, sent: 2 })
      const raw = await plain!.nextFrame()
      expect(raw.rsv1).toBe(false)
      expect(Buffer.from(raw.payload).toString()).toBe(text)
      const compressed = await deflating!.nextFrame()
      expect(compressed.rsv1).toBe(true)
      expect(compressed.payload.length).toBeLessThan(text.length / 4)
      const inflated = zlib.inflateRawSync(Buffer.concat([compressed.payload, Buffer.from([0, 0, 0xff, 0xff])]), {
        finishFlush: zlib.constants.Z_SYNC_FLUSH
      })
      expect(inflated.toString()).toBe(text)
    })
  })
})

describe("subscriptions", () => {
  it("end with their connection; subscribing twice is once; unsubscribe; a closed connection's subscribe fails with ConnectionClosed", async () => {
    const seen: Array<ReadonlyArray<string>> = []
    let lateSubscribe: Exit.Exit<void, WebSocketError> | undefined = undefined
    const routes = {
      "/ws": (ws: WebSocket.WebSocketConnection) =>
        Effect.gen(function*() {
          yield* ws.subscribe("a")
          yield* ws.subscribe("a")
          yield* ws.subscribe("b")
          yield* ws.subscribe("c")
          yield* ws.unsubscribe("b")
          yield* ws.unsubscribe("never")
          seen.push(yield* ws.subscriptions)
          yield* ws.closed
          lateSubscribe = yield* Effect.exit(ws.subscribe("d"))
        })
    }
    await withServer({ routes } as Partial<Server.Options>, async (s) => {
      const client = await RawClient.connect(s.port, { path: "/ws" })
      await until("subscribed", () => seen.length === 1)
      expect(seen[0]).toEqual(["a", "c"])
      expect(subscribers(s.server, "a")).toBe(1)
      expect(subscribers(s.server, "b")).toBe(0)
      expect(Effect.runSync(s.server.topics.topicCount)).toBe(2)
      expect(value(s, "websock.pubsub.subscriptions")).toBe(2)
      await client.sendClose(1000)
      await client.expectClose(1000)
      await until("the late subscribe", () => lateSubscribe !== undefined)
      expect(Exit.isFailure(lateSubscribe!)).toBe(true)
      const failure = Exit.isFailure(lateSubscribe!) ? lateSubscribe!.cause.reasons[0] : undefined
      expect(failure?._tag === "Fail" && failure.error.reason._tag).toBe("ConnectionClosed")
      expect(subscribers(s.server, "a")).toBe(0)
      expect(Effect.runSync(s.server.topics.topicCount)).toBe(0)
      expect(value(s, "websock.pubsub.subscriptions")).toBe(0)
    })
  })

  it("a connection dropped without a Close (1006) leaves its topics too", async () => {
    await withServer({}, async (s) => {
      const [client] = await join(s, "t", 1)
      client!.destroy()
      await until("no subscriber", () => subscribers(s.server, "t") === 0)
    })
  })

  it("100,000 subscriptions of one connection: counted, and all gone when it closes", async () => {
    const routes = {
      "/many": (ws: WebSocket.WebSocketConnection) =>
        Effect.gen(function*() {
          for (let i = 0; i < 100_000; i++) yield* ws.subscribe(`topic-${i}`)
          yield* ws.send("subscribed")
          yield* ws.closed
        })
    }
    await withServer({ routes } as Partial<Server.Options>, async (s) => {
      const client = await RawClient.connect(s.port, { path: "/many" })
      expect(await client.expectText(10_000)).toBe("subscribed")
      expect(Effect.runSync(s.server.topics.topicCount)).toBe(100_000)
      expect(await Effect.runPromise(s.server.publish("topic-99999", "last"))).toMatchObject({ subscribers: 1, sent: 1 })
      expect(await client.expectText()).toBe("last")
      client.destroy()
      await until("every topic gone", () => Effect.runSync(s.server.topics.topicCount) === 0)
    })
  })
})

describe("one Topics for two servers (Topics.layer)", () => {
  it("a publish on one server reaches the other's subscribers, and the service publishes from outside any connection", async () => {
    const shared = Topics.layer
    const scope = Scope.makeUnsafe()
    const topics = await Effect.runPromise(Layer.buildWithScope(shared, scope))
    const layer = Layer.succeedContext(topics)
    const a = await start({}, layer)
    const b = await start({}, layer)
    try {
      const [onA] = await join(a, "x", 1)
      const [onB] = await join(b, "x", 1)
      await onA!.sendText("from a")
      expect(await onB!.expectText()).toBe("from a")
      const result = await Effect.runPromise(Effect.flatMap(Topics.Topics, (t) => t.publish("x", "from outside")).pipe(Effect.provideContext(topics)))
      expect(result).toMatchObject({ subscribers: 2, sent: 2 })
      expect(await onA!.expectText()).toBe("from outside")
      expect(await onB!.expectText()).toBe("from outside")
    } finally {
      RawClient.destroyAll()
      await a.close()
      await b.close()
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })
})

describe("metrics", () => {
  it("websock.pubsub.published and deliveries by outcome move with a scripted session", async () => {
    await withServer({}, async (s) => {
      const clients = await join(s, "m", 3)
      await clients[0]!.sendText("one")
      await clients[1]!.expectText()
      await clients[2]!.expectText()
      await Effect.runPromise(s.server.publish("m", "two"))
      for (const c of clients) await c.expectText()
      expect(value(s, "websock.pubsub.published")).toBe(2)
      expect(value(s, "websock.pubsub.deliveries", { "websock.delivery.outcome": "sent" })).toBe(5)
      expect(value(s, "websock.pubsub.topics")).toBe(1)
      // Published messages count as messages sent, once per subscriber.
      expect(value(s, "websock.messages.sent", { "websocket.message.type": "text" })).toBe(5)
    })
  })
})
