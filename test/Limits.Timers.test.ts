/**
 * Time and count limits over real TCP (issue 6): the handshake timeout
 * (slowloris) and head size, keepalive Pings, the idle timeout, the maximum
 * lifetime, the maximum number of connections, and graceful shutdown (503 to
 * half-open handshakes, 1001 to open connections, waiting for their closing
 * handshakes up to `shutdownTimeout` or `closeTimeout`).
 *
 * The server's timers run on real time, kept short here. No test measures a
 * duration: each asserts what the timer did (the 408, the Close and its
 * code, the outcome), and where "how soon" matters it counts the server's
 * own Pings, which run on the same clock as the timer under test, or sets
 * every other timer far beyond the test's waits so that only the one under
 * test can have acted.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { afterEach, describe, expect, it } from "vitest"
import * as Frame from "../src/Frame.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { answerClose, closeFromClient, readToClose } from "./Limits.helpers.ts"
import { text } from "./support/Bytes.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"
import { until, within } from "./support/Wait.ts"

afterEach(() => RawClient.destroyAll())

/** A timer that cannot fire within a test: only the other timers can act. */
const NEVER = 20_000

/** The HTTP answer to a request that is not upgraded; it must say `Connection: close`, and the server must then end the connection. */
const rejected = async (port: number, options: Parameters<typeof RawClient.request>[1]) => {
  const c = await RawClient.request(port, options)
  expect(c.response.headers.get("connection")?.toLowerCase()).toContain("close")
  await c.expectEnd()
  c.end()
  return c.response.status
}

/**
 * The server's Close, read past Pings and echoed text messages (both
 * counted); with `answer`, each Ping gets a Pong and a message. Fails after
 * `maxPings` Pings without a Close.
 */
const closeAfterPings = async (c: RawClient, options: { readonly answer?: boolean; readonly maxPings?: number } = {}) => {
  let pings = 0 // Pings before the Close
  let echoes = 0 // text messages before the Close
  for (;;) {
    const frame = await c.nextFrame(2_000)
    if (frame.opcode === Frame.Opcode.Close) {
      const parsed = Frame.parseClose(frame.payload)
      if (parsed._tag !== "Code") throw new Error(`expected a Close with a code, got ${parsed._tag}`)
      return { code: parsed.code, reason: parsed.reason, pings, echoes }
    }
    if (frame.opcode === Frame.Opcode.Text) {
      echoes++
      continue
    }
    expect(frame.opcode).toBe(Frame.Opcode.Ping)
    pings++
    if (options.maxPings !== undefined && pings > options.maxPings) throw new Error(`no Close after ${pings} Pings`)
    if (options.answer === true) {
      // an active peer: a Pong and a message for each Ping
      await c.pong(frame.payload)
      await c.sendText(`busy ${pings}`)
    }
  }
}

describe("handshake limits", () => {
  it("a partial request head that stalls is answered 408 after handshakeTimeout and closed", async () => {
    await TestServer.withServer({ handshakeTimeout: 200 }, async (port) => {
      expect(await rejected(port, { request: "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n" })).toBe(408)
    })
  })

  it("a head trickled one byte every 40 ms is cut at handshakeTimeout: the timeout is for the whole head, not per read", async () => {
    await TestServer.withServer({ handshakeTimeout: 200 }, async (port) => {
      // A valid request of ~150 bytes, each byte its own read, a read every
      // 40 ms: a timer restarted by every read would never fire, the head
      // would complete (after ~6 s, within the wait) and be answered 101.
      const status = await rejected(port, { chop: { size: 1, delay: 40 }, timeout: 10_000 })
      expect(status).toBe(408)
    })
  })

  it("a request head above maxHeadSize is answered 431, whether or not it ends", async () => {
    await TestServer.withServer({ maxHeadSize: 1024 }, async (port) => {
      expect(await rejected(port, { headers: { "X-Padding": "x".repeat(2_000) } })).toBe(431)
      // no blank line: the limit, not the end of the head, decides
      expect(await rejected(port, { request: `GET /ws HTTP/1.1\r\nX-Padding: ${"x".repeat(2_000)}` })).toBe(431)
      // just under the limit is fine
      const c = await RawClient.connect(port, { headers: { "X-Padding": "x".repeat(700) } })
      await c.sendClose(1000)
      await c.expectClose(1000)
    })
  })
})

describe("keepalive, idle timeout, maximum lifetime", () => {
  it("sends a Ping every pingInterval: about maxLifetime / pingInterval of them before the lifetime ends, not a burst", async () => {
    await TestServer.withServer({ pingInterval: 100, idleTimeout: 0, maxLifetime: 1_000 }, async (port) => {
      const c = await RawClient.connect(port)
      const close = await closeAfterPings(c, { maxPings: 20 })
      expect(close.code).toBe(1001)
      // one Ping per 100 ms of the server's clock over 1 s: at most 10 (a burst
      // or a Ping per timer sweep would be dozens), and more than a couple
      expect(close.pings).toBeGreaterThanOrEqual(3)
      expect(close.pings).toBeLessThanOrEqual(10)
      await answerClose(c, 1001)
    })
  })

  it.each([0, 100])(
    "a peer that answers nothing (no Pong, no data) is closed with 1001 \"idle timeout\" after idleTimeout (pingInterval %i)",
    async (pingInterval) => {
      await TestServer.withServer({ pingInterval, idleTimeout: 500 }, async (port) => {
        const c = await RawClient.connect(port)
        const close = await closeAfterPings(c)
        expect(close).toMatchObject({ code: 1001, reason: "idle timeout" })
        if (pingInterval === 0) {
          expect(close.pings).toBe(0)
        } else {
          // pinged first, and closed after about idleTimeout / pingInterval Pings
          expect(close.pings).toBeGreaterThanOrEqual(1)
          expect(close.pings).toBeLessThanOrEqual(6)
        }
        await answerClose(c, 1001)
      })
    }
  )

  it("a peer that answers the Pings with Pongs stays open well beyond idleTimeout", async () => {
    await TestServer.withServer({ pingInterval: 100, idleTimeout: 300 }, async (port) => {
      const c = await RawClient.connect(port)
      // 9 Pings at least 100 ms apart on the server's clock: 800 ms, beyond
      // two idle timeouts; a Close in between fails expectFrame
      for (let i = 0; i < 9; i++) {
        const ping = await c.expectFrame(Frame.Opcode.Ping, 1_000)
        await c.pong(ping.payload)
      }
      await c.sendText("still here")
      let frame = await c.nextFrame()
      while (frame.opcode === Frame.Opcode.Ping) frame = await c.nextFrame()
      expect(frame.opcode).toBe(Frame.Opcode.Text)
      expect((await closeFromClient(c)).code).toBe(1000)
    })
  })

  it("a busy peer is not idle while the server has paused reading it (the handler is slow)", async () => {
    // The handler holds its first batch; with inboxHighWaterMark 1 the
    // messages after it fill the inbox and the server stops reading. The
    // peer goes on answering Pings and sending; those bytes wait in the
    // kernel. The peer was never silent: it must not be closed as idle.
    const took = Deferred.makeUnsafe<void>()
    const release = Deferred.makeUnsafe<void>()
    await TestServer.withServer(
      {
        pingInterval: 100,
        idleTimeout: 300,
        inboxHighWaterMark: 1,
        routes: {
          "/ws": (ws) => {
            let first = true // the first batch is held until the test releases it
            return ws.messages.pipe(Stream.runForEachArray((batch) => {
              const hold = first ? Effect.andThen(Deferred.succeed(took, undefined), Deferred.await(release)) : Effect.void
              first = false
              return Effect.andThen(hold, ws.sendAll(batch))
            }))
          }
        }
      },
      async (port) => {
        const c = await RawClient.connect(port)
        await c.sendText("m0")
        await Effect.runPromise(Deferred.await(took))
        // more messages than the inbox holds: the server stops reading
        let n = 1 // messages sent
        for (; n < 4; n++) await c.sendText(`m${n}`)
        // Each Ping answered with a Pong and a message, until 6 Pings in a row
        // (at least 500 ms of the server's clock, beyond idleTimeout) found
        // the server's bytesRead unchanged: it read nothing from the peer
        // while the peer kept sending. (Bytes sent before a Ping would have
        // been read before the server sent it, had it been reading.)
        let read = c.serverBytesRead() // what the server had read at the last Ping
        let quiet = 0 // Pings in a row with nothing read
        for (let pings = 1; quiet < 6; pings++) {
          if (pings > 40) throw new Error(`the server never stopped reading (${read} of ${c.bytesSent} bytes read)`)
          const frame = await c.nextFrame(2_000)
          if (frame.opcode === Frame.Opcode.Close) throw new Error(`closed while paused: ${JSON.stringify(Frame.parseClose(frame.payload))}`)
          expect(frame.opcode).toBe(Frame.Opcode.Ping)
          const now = c.serverBytesRead()
          quiet = now === read ? quiet + 1 : 0
          read = now
          await c.pong(frame.payload)
          await c.sendText(`m${n++}`)
        }
        expect(c.serverBytesRead()).toBeLessThan(c.bytesSent)
        await Effect.runPromise(Deferred.succeed(release, undefined))
        // every message is echoed, in order, past Pings
        for (let i = 0; i < n; i++) {
          let frame = await c.nextFrame(2_000)
          while (frame.opcode === Frame.Opcode.Ping) frame = await c.nextFrame(2_000)
          if (frame.opcode === Frame.Opcode.Close) {
            throw new Error(`closed after ${i} of ${n} echoes: ${JSON.stringify(Frame.parseClose(frame.payload))}`)
          }
          expect(frame.opcode, `message ${i} of ${n}`).toBe(Frame.Opcode.Text)
          expect(text(frame.payload)).toBe(`m${i}`)
        }
        expect((await closeFromClient(c)).code).toBe(1000)
      }
    )
  })

  it("a connection is closed with 1001 after maxLifetime, even while active", async () => {
    await TestServer.withServer({ pingInterval: 100, idleTimeout: 0, maxLifetime: 500 }, async (port) => {
      const c = await RawClient.connect(port)
      // a message at once, then a Pong and a message for every Ping until the
      // Close; activity does not extend the lifetime
      await c.sendText("busy 0")
      const close = await closeAfterPings(c, { answer: true, maxPings: 15 })
      expect(close.code).toBe(1001)
      // it was active (echoes came back), and it ended after about maxLifetime / pingInterval Pings
      expect(close.echoes).toBeGreaterThanOrEqual(1)
      expect(close.pings).toBeLessThanOrEqual(6)
      await answerClose(c, 1001)
    })
  })
})

describe("maxConnections", () => {
  it("with maxConnections: 2 a third upgrade gets 503; a slot freed by a close can be used again", async () => {
    await TestServer.withServer({ maxConnections: 2 }, async (port, server) => {
      const a = await RawClient.connect(port)
      const b = await RawClient.connect(port)
      expect(await rejected(port, {})).toBe(503)
      await a.sendClose(1000)
      await a.expectClose(1000)
      await until("the closed connection to be released", () => Effect.runSync(server.connections) === 1)
      const d = await RawClient.connect(port)
      await d.sendText("hello")
      expect(await d.expectText()).toBe("hello")
      for (const c of [b, d]) {
        await c.sendClose(1000)
        await c.expectClose(1000)
      }
    })
  })

  it("half-open handshakes count: two stalled requests fill maxConnections: 2", async () => {
    await TestServer.withServer({ maxConnections: 2, handshakeTimeout: 300 }, async (port, server) => {
      const stalled = [0, 1].map(() => RawClient.request(port, { request: "GET /ws HTTP/1.1\r\n", timeout: 2_000 }))
      await until("the server to hold both stalled handshakes", () => Effect.runSync(server.connections) === 2)
      expect(await rejected(port, {})).toBe(503)
      for (const pending of stalled) expect((await pending).response.status).toBe(408)
    })
  })
})

describe("graceful shutdown", () => {
  /**
   * Runs `body` against a server whose handler echoes and reports its close
   * outcome; the body shuts the server down itself, and the server is shut
   * down after it in any case.
   */
  const observed = async (
    options: TestServer.TestOptions,
    body: (server: TestServer.StartedServer, outcome: () => Promise<WebSocket.CloseOutcome>) => Promise<void>
  ) => {
    const outcome = Deferred.makeUnsafe<WebSocket.CloseOutcome>()
    const server = await TestServer.start({
      ...options,
      routes: {
        "/ws": (ws) =>
          Effect.andThen(
            Effect.forkDetach(Effect.andThen(ws.closed, (o) => Deferred.succeed(outcome, o))),
            TestServer.echo(ws)
          )
      }
    })
    try {
      await body(server, () => Effect.runPromise(Deferred.await(outcome).pipe(Effect.timeout(2_000))))
    } finally {
      await server.close()
    }
  }

  it("a half-open handshake (head not complete) is answered 503", () =>
    observed({}, async (server) => {
      const pending = RawClient.request(server.port, { request: "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n" })
      await until("the server to hold the handshake", () => Effect.runSync(server.server.connections) === 1)
      const closing = server.close()
      const c = await pending
      expect(c.response.status).toBe(503)
      await c.expectEnd()
      c.end()
      await closing
    }))

  it("open connections get Close 1001; the shutdown waits for the closing handshake, then ends (its timers far off)", () =>
    observed({ closeTimeout: NEVER, shutdownTimeout: NEVER }, async (server, outcome) => {
      const c = await RawClient.connect(server.port)
      await c.sendText("hi")
      expect(await c.expectText()).toBe("hi")
      let done = false // the shutdown has ended
      const closing = server.close().then(() => {
        done = true
      })
      const close = await readToClose(c)
      expect(close.code).toBe(1001)
      // the shutdown waits for our answer
      expect(done).toBe(false)
      await answerClose(c, 1001)
      // no timer can end it within this wait: the closing handshake did
      await within(closing, 5_000, "the shutdown to end after the closing handshake")
      expect(await outcome()).toMatchObject({ code: 1001, clean: true, initiator: "local" })
    }))

  it.each([
    ["closeTimeout", { closeTimeout: 200, shutdownTimeout: NEVER }],
    ["shutdownTimeout", { closeTimeout: NEVER, shutdownTimeout: 300 }]
  ] as const)("a client that never answers the 1001 is cut after %s, the shorter, and the shutdown ends", (_, timers) =>
    observed(timers, async (server, outcome) => {
      const c = await RawClient.connect(server.port)
      const closing = server.close()
      expect((await readToClose(c)).code).toBe(1001)
      // the other timer is far beyond this wait
      await within(closing, 5_000, "the shutdown to end")
      await c.expectEnd(1_000)
      expect(await outcome()).toMatchObject({ clean: false, initiator: "local" })
    }))

  it("after the shutdown begins, new connections are refused, and after it ends too", () =>
    observed({ shutdownTimeout: 1_000 }, async (server) => {
      const c = await RawClient.connect(server.port)
      const closing = server.close()
      expect((await readToClose(c)).code).toBe(1001)
      await expect(RawClient.connect(server.port, { timeout: 500 })).rejects.toThrow()
      await answerClose(c, 1001)
      await closing
      await expect(RawClient.connect(server.port, { timeout: 500 })).rejects.toThrow()
    }))
})
