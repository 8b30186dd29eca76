/**
 * Backpressure over real TCP (issue 6): a fast handler sending to a client
 * that does not read (`send` suspends near `highWaterMark`; the `"drop"` and
 * `"close"` policies above `maxBufferedAmount`), a client that floods Pings
 * and never reads our Pongs, and a handler that does not consume its
 * messages (the server stops reading; the inbox stays near
 * `inboxHighWaterMark`). The client stops reading by pausing its socket, so
 * the kernel buffers fill and the server's own buffer is what is measured.
 */
import { Buffer } from "node:buffer"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { afterEach, describe, expect, it } from "vitest"
import { WebSocketError } from "../src/Errors.ts"
import * as Frame from "../src/Frame.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { answerClose, buffered, flood, numbered, numberOf, readToClose, settled } from "./Limits.helpers.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"
import { until } from "./support/Wait.ts"

afterEach(() => RawClient.destroyAll())

/** Runs `body` against a fresh server; destroys every client before the shutdown (a failed test does not wait for its closing handshake). */
const withServer = (options: TestServer.TestOptions, body: (port: number) => Promise<void>): Promise<void> =>
  TestServer.withServer(options, async (port) => {
    try {
      await body(port)
    } finally {
      RawClient.destroyAll()
    }
  })

const KiB = 1024
/** The size of the messages sent; a frame adds a 4-byte header. */
const M = 16 * KiB
/** Slack for frame headers of the messages gathered in one flush. */
const HEADERS = 64

/** What a handler exposes to the test. */
interface Probe {
  ws: WebSocket.WebSocket | undefined
  /** Sends completed. */
  sent: number
  /** The handler sends while `sent < limit`. */
  limit: number
  done: boolean
  error: unknown
  dropped: number
  /** Largest bufferedAmount sampled. */
  maxBuffered: number
}

const probe = (limit: number): Probe => ({ ws: undefined, sent: 0, limit, done: false, error: undefined, dropped: 0, maxBuffered: 0 })

const sample = (p: Probe) => (): void => {
  p.maxBuffered = Math.max(p.maxBuffered, buffered(p.ws))
}

/** Sends numbered messages one after the other while `sent < limit`, records the outcome, then waits for the close. */
const producer = (p: Probe) => (ws: WebSocket.WebSocket) =>
  Effect.gen(function*() {
    p.ws = ws
    const loop = Effect.gen(function*() {
      while (p.sent < p.limit) {
        yield* ws.send(numbered(p.sent, M))
        p.sent++
        p.maxBuffered = Math.max(p.maxBuffered, yield* ws.bufferedAmount)
      }
    })
    const exit = yield* Effect.exit(loop)
    if (exit._tag === "Failure") p.error = exit.cause.reasons[0]?._tag === "Fail" ? exit.cause.reasons[0].error : exit.cause
    p.dropped = yield* ws.droppedMessages
    p.done = true
    if (exit._tag === "Success") yield* ws.close(1000, "done")
    else yield* ws.closed
  })

describe("outbound backpressure", () => {
  it("\"wait\": send suspends while bufferedAmount is above highWaterMark; a late reader gets every message in order", async () => {
    const highWaterMark = 64 * KiB
    const p = probe(Number.MAX_SAFE_INTEGER)
    await withServer(
      { highWaterMark, maxBufferedAmount: 1024 * KiB, overflow: "wait", closeTimeout: 1_000, routes: { "/ws": producer(p) } },
      async (port) => {
        const c = await RawClient.connect(port)
        c.socket.pause()
        // the sends stop growing, with the buffer above the mark (a pause of the
        // machine alone would leave it below)
        const deadline = Date.now() + 6_000
        let stalled = await settled("the handler's completed sends", () => p.sent, { sample: sample(p), timeout: 6_000 })
        while (buffered(p.ws) <= highWaterMark && Date.now() < deadline) {
          stalled = await settled("the handler's completed sends", () => p.sent, { sample: sample(p), timeout: 6_000 })
        }
        expect(stalled).toBeGreaterThan(0)
        // suspended because the buffer is above the mark, and not much above it
        const now = buffered(p.ws)
        expect(now).toBeGreaterThan(highWaterMark)
        expect(now).toBeLessThanOrEqual(highWaterMark + M + HEADERS)
        expect(p.maxBuffered).toBeLessThanOrEqual(highWaterMark + M + HEADERS)
        // the reader starts: everything arrives, in order, then the handler's Close
        p.limit = stalled + 20
        c.socket.resume()
        for (let i = 0; i < p.limit; i++) {
          expect(numberOf(await c.expectBinary())).toBe(i)
        }
        await c.expectClose(1000)
        expect(p.error).toBeUndefined()
      }
    )
  })

  // Node emits 'drain' only after a write() that returned false, i.e. once
  // the socket's own buffer reached its writableHighWaterMark (64 KiB since
  // Node 22): a highWaterMark below it must not wait for that event alone.
  it.each([1 * KiB, 32 * KiB])("\"wait\": send to a reading peer never hangs with highWaterMark %i, below the socket's writableHighWaterMark", async (highWaterMark) => {
    const total = 50
    const p = probe(total)
    let completed = 0 // sends completed when the test ended
    await withServer(
      { highWaterMark, overflow: "wait", routes: { "/ws": producer(p) } },
      async (port) => {
        const c = await RawClient.connect(port)
        try {
          // the client reads: every send must complete
          for (let i = 0; i < total; i++) {
            expect(numberOf(await c.expectBinary(500))).toBe(i)
          }
          await c.expectClose(1000)
        } finally {
          completed = p.sent
        }
      }
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\n(the handler had completed ${completed} of ${total} sends)`)
    })
  })

  // Sequential senders: with highWaterMark below the ceiling (the defaults'
  // shape) and above it (so that the buffer can reach the ceiling before
  // `send` suspends).
  describe.each([
    { shape: "highWaterMark below maxBufferedAmount", highWaterMark: 64 * KiB },
    { shape: "highWaterMark above maxBufferedAmount", highWaterMark: 16 * 1024 * KiB }
  ])("$shape", ({ highWaterMark }) => {
    const maxBufferedAmount = 256 * KiB
    const total = 2_000 // 32 MiB: more than the kernel's buffers hold

    it("\"drop\": every send completes, the excess is counted in droppedMessages, bufferedAmount stays near the ceiling", async () => {
      const p = probe(total)
      await withServer(
        { highWaterMark, maxBufferedAmount, overflow: "drop", closeTimeout: 1_000, routes: { "/ws": producer(p) } },
        async (port) => {
          const c = await RawClient.connect(port)
          c.socket.pause()
          await until("every send to complete", () => p.done, 1_500, () => `${p.sent} of ${total} completed, ${buffered(p.ws)} bytes buffered`)
          expect(p.error).toBeUndefined()
          expect(p.dropped).toBeGreaterThan(0)
          expect(p.maxBuffered).toBeLessThanOrEqual(maxBufferedAmount + M + HEADERS)
          // what arrives is in order, and what did not arrive was counted
          c.socket.resume()
          let last = -1 // number of the last message received
          let received = 0 // messages received
          for (;;) {
            const frame = await c.nextFrame()
            if (frame.opcode === Frame.Opcode.Close) break
            const n = numberOf(Uint8Array.from(frame.payload))
            expect(n).toBeGreaterThan(last)
            last = n
            received++
          }
          expect(received + p.dropped).toBe(total)
          await answerClose(c, 1000)
        }
      )
    })

    it("\"close\": the connection is closed with 1008 and send fails with BufferOverflow", async () => {
      const p = probe(total)
      await withServer(
        { highWaterMark, maxBufferedAmount, overflow: "close", closeTimeout: 1_000, routes: { "/ws": producer(p) } },
        async (port) => {
          const c = await RawClient.connect(port)
          c.socket.pause()
          await until("send to fail", () => p.done, 1_500, () => `${p.sent} of ${total} completed, ${buffered(p.ws)} bytes buffered`)
          expect(p.error).toBeInstanceOf(WebSocketError)
          const error = p.error as WebSocketError
          expect(error.reason._tag).toBe("BufferOverflow")
          expect(p.maxBuffered).toBeLessThanOrEqual(maxBufferedAmount + M + HEADERS)
          c.socket.resume()
          const close = await readToClose(c, { skipData: true })
          expect(close.code).toBe(1008)
          await answerClose(c, 1008)
        }
      )
    })
  })

  it("automatic Pongs to a peer that floods Pings and never reads: the server stops reading, its buffer stays bounded", async () => {
    const maxBufferedAmount = 256 * KiB
    const p = probe(0)
    await withServer(
      {
        maxBufferedAmount,
        routes: {
          "/ws": (ws) => {
            p.ws = ws
            return ws.closed
          }
        }
      },
      async (port) => {
        const c = await RawClient.connect(port)
        c.socket.pause()
        // 500 Pings of 125 bytes (the most a control frame carries), written again and again
        const ping = c.frame(Frame.Opcode.Ping, new Uint8Array(125).fill(0x50))
        const batch = Buffer.concat(Array.from({ length: 500 }, () => ping))
        // the client's writes back up (2 MiB wait in its socket and stay): the server is not reading
        const written = await flood(c.socket, () => batch, {
          backlog: 2 * 1024 * KiB,
          sample: sample(p),
          detail: () => `server bufferedAmount ${buffered(p.ws)}`
        })
        expect(written).toBeGreaterThan(0)
        expect(p.maxBuffered).toBeLessThanOrEqual(maxBufferedAmount + 64 * KiB + 1024)
        c.destroy()
      }
    )
  })
})

describe("inbound backpressure", () => {
  it("a handler that does not take its messages: the server stops reading, the inbox stays near inboxHighWaterMark, nothing is lost", async () => {
    const inboxHighWaterMark = 8
    const gate = Deferred.makeUnsafe<void>()
    const batches: Array<number> = []
    const received: Array<number> = []
    await withServer(
      {
        inboxHighWaterMark,
        closeTimeout: 1_000,
        routes: {
          "/ws": (ws) =>
            Effect.andThen(
              Deferred.await(gate),
              ws.messages.pipe(Stream.runForEachArray((batch) =>
                Effect.sync(() => {
                  batches.push(batch.length)
                  for (const m of batch) received.push(numberOf(m))
                })
              ))
            )
        }
      },
      async (port) => {
        const c = await RawClient.connect(port)
        let sent = 0 // messages written
        await flood(c.socket, () => c.frame(Frame.Opcode.Binary, numbered(sent++, M)), { backlog: 1024 * KiB })
        expect(received.length).toBe(0)
        // the handler starts reading: its first batch is what the inbox held
        Deferred.doneUnsafe(gate, Effect.void)
        await until("every message to reach the handler", () => received.length === sent, 5_000, () => `${received.length} of ${sent}`)
        // one read (64 KiB: 4 messages and a part) may land after the mark is reached
        expect(batches[0]).toBeLessThanOrEqual(inboxHighWaterMark + 64 * KiB / M + 1)
        expect(received).toEqual(Array.from({ length: sent }, (_, i) => i))
        await c.sendClose(1000)
        await c.expectClose(1000)
      }
    )
  })
})
