/**
 * Time and count limits over real TCP (issue 6): the handshake timeout
 * (slowloris) and head size, keepalive Pings, the idle timeout, the maximum
 * lifetime, the maximum number of connections, and graceful shutdown (503 to
 * half-open handshakes, 1001 to open connections, waiting for their closing
 * handshakes up to `shutdownTimeout`).
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { afterEach, describe, expect, it } from "vitest"
import * as Frame from "../src/Frame.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { answerClose, closeFromClient, readToClose, sleep, until } from "./Limits.helpers.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"

afterEach(() => RawClient.destroyAll())

/** The HTTP answer to a request that is not upgraded; the server must then end the connection. */
const rejected = async (port: number, options: Parameters<typeof RawClient.request>[1]) => {
  const c = await RawClient.request(port, options)
  await c.expectEnd()
  c.end()
  return c.response.status
}

describe("handshake limits", () => {
  it("a partial request head that stalls is answered 408 after handshakeTimeout and closed", async () => {
    await TestServer.withServer({ handshakeTimeout: 200 }, async (port) => {
      const started = Date.now()
      const status = await rejected(port, { request: "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n", timeout: 1_500 })
      expect(status).toBe(408)
      expect(Date.now() - started).toBeGreaterThanOrEqual(180)
    })
  })

  it("a head trickled one byte every 40 ms is cut at handshakeTimeout: the timeout is for the whole head, not per read", async () => {
    await TestServer.withServer({ handshakeTimeout: 200 }, async (port) => {
      const started = Date.now()
      // a valid request of ~150 bytes: 6 s at this pace
      const status = await rejected(port, { chop: { size: 1, delay: 40 }, timeout: 1_500 })
      expect(status).toBe(408)
      expect(Date.now() - started).toBeLessThan(1_000)
    })
  })

  it("a request head above maxHeadSize is answered 431, whether or not it ends", async () => {
    await TestServer.withServer({ maxHeadSize: 1024 }, async (port) => {
      expect(await rejected(port, { headers: { "X-Padding": "x".repeat(2_000) } })).toBe(431)
      expect(await rejected(port, { request: `GET /ws HTTP/1.1\r\nX-Padding: ${"x".repeat(2_000)}` })).toBe(431)
      // just under the limit is fine
      const c = await RawClient.connect(port, { headers: { "X-Padding": "x".repeat(700) } })
      await c.sendClose(1000)
      await c.expectClose(1000)
    })
  })
})

describe("keepalive, idle timeout, maximum lifetime", () => {
  it("sends a Ping every pingInterval", async () => {
    await TestServer.withServer({ pingInterval: 100, idleTimeout: 0 }, async (port) => {
      const c = await RawClient.connect(port)
      const started = Date.now()
      for (let i = 0; i < 3; i++) await c.expectFrame(Frame.Opcode.Ping, 1_000)
      // three intervals, not a burst
      expect(Date.now() - started).toBeGreaterThanOrEqual(250)
      expect((await closeFromClient(c)).code).toBe(1000)
    })
  })

  it("a peer that answers nothing (no Pong, no data) is closed with 1001 \"idle timeout\" after idleTimeout", async () => {
    await TestServer.withServer({ pingInterval: 100, idleTimeout: 300 }, async (port) => {
      const c = await RawClient.connect(port)
      const started = Date.now()
      const close = await readToClose(c, { timeout: 1_500 })
      const elapsed = Date.now() - started
      expect(close).toMatchObject({ code: 1001, reason: "idle timeout" })
      expect(close.skipped).toBeGreaterThanOrEqual(1) // it was pinged first
      expect(elapsed).toBeGreaterThanOrEqual(250)
      expect(elapsed).toBeLessThan(1_000)
      await answerClose(c, 1001)
    })
  })

  it("a peer that answers the Pings with Pongs stays open well beyond idleTimeout", async () => {
    await TestServer.withServer({ pingInterval: 100, idleTimeout: 300 }, async (port) => {
      const c = await RawClient.connect(port)
      const started = Date.now()
      while (Date.now() - started < 900) {
        const ping = await c.expectFrame(Frame.Opcode.Ping, 1_000) // a Close here fails the test
        await c.pong(ping.payload)
      }
      await c.sendText("still here")
      expect(await c.expectText()).toBe("still here")
      expect((await closeFromClient(c)).code).toBe(1000)
    })
  })

  it("a busy peer is not idle while the server has paused reading it (the handler is slow)", async () => {
    // The handler holds its first batch for longer than idleTimeout; the peer
    // keeps sending (and answering Pings); those bytes wait in the kernel
    // because the inbox is full. The peer was never silent.
    await TestServer.withServer(
      {
        pingInterval: 100,
        idleTimeout: 300,
        inboxHighWaterMark: 1,
        routes: {
          "/ws": (ws) => {
            let first = true // the first batch is held for 700 ms
            return ws.messages.pipe(Stream.runForEachArray((batch) => {
              const hold = first ? Effect.sleep(700) : Effect.void
              first = false
              return Effect.andThen(hold, ws.sendAll(batch))
            }))
          }
        }
      },
      async (port) => {
        const c = await RawClient.connect(port)
        const started = Date.now()
        let n = 0 // messages sent
        while (Date.now() - started < 900) {
          await c.sendText(`m${n++}`)
          await sleep(50)
        }
        // no Close 1001 came: every message is echoed, in order, past Pings
        for (let i = 0; i < n; i++) {
          let frame = await c.nextFrame(2_000)
          while (frame.opcode === Frame.Opcode.Ping) frame = await c.nextFrame(2_000)
          if (frame.opcode === Frame.Opcode.Close) {
            const close = Frame.parseClose(frame.payload)
            throw new Error(`closed after ${i} of ${n} echoes: ${JSON.stringify(close)}`)
          }
          expect(frame.opcode, `message ${i} of ${n}`).toBe(Frame.Opcode.Text)
        }
        expect((await closeFromClient(c)).code).toBe(1000)
      }
    )
  })

  it("a connection is closed with 1001 after maxLifetime, even while active", async () => {
    await TestServer.withServer({ maxLifetime: 300 }, async (port) => {
      const c = await RawClient.connect(port)
      const started = Date.now()
      // echo traffic every 50 ms until the Close arrives
      let close: Awaited<ReturnType<typeof readToClose>> | undefined = undefined
      for (let i = 0; close === undefined; i++) {
        if (Date.now() - started > 1_500) throw new Error("no Close after maxLifetime")
        await c.sendText(`busy ${i}`)
        const frame = await c.nextFrame(1_000)
        if (frame.opcode === Frame.Opcode.Close) {
          const parsed = Frame.parseClose(frame.payload)
          close = parsed._tag === "Code" ? { code: parsed.code, reason: parsed.reason, skipped: 0 } : { code: 1005, reason: "", skipped: 0 }
        } else {
          await sleep(50)
        }
      }
      expect(close.code).toBe(1001)
      expect(Date.now() - started).toBeGreaterThanOrEqual(250)
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
    await TestServer.withServer({ maxConnections: 2, handshakeTimeout: 300 }, async (port) => {
      const stalled = [0, 1].map(() => RawClient.request(port, { request: "GET /ws HTTP/1.1\r\n", timeout: 2_000 }))
      await sleep(50)
      expect(await rejected(port, {})).toBe(503)
      for (const pending of stalled) expect((await pending).response.status).toBe(408)
    })
  })
})

describe("graceful shutdown", () => {
  /** A server whose handler echoes, and reports its close outcome. */
  const observed = async (options: TestServer.TestOptions) => {
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
    return { server, outcome: () => Effect.runPromise(Deferred.await(outcome).pipe(Effect.timeout(2_000))) }
  }

  it("a half-open handshake (head not complete) is answered 503", async () => {
    const { server } = await observed({})
    const pending = RawClient.request(server.port, { request: "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n" })
    await sleep(50)
    const closing = server.close()
    const c = await pending
    expect(c.response.status).toBe(503)
    await c.expectEnd()
    c.end()
    await closing
  })

  it("open connections get Close 1001; the shutdown waits for the closing handshake, then ends well before shutdownTimeout", async () => {
    const { server, outcome } = await observed({ closeTimeout: 2_000, shutdownTimeout: 3_000 })
    const c = await RawClient.connect(server.port)
    await c.sendText("hi")
    expect(await c.expectText()).toBe("hi")
    const started = Date.now()
    let done = false // the shutdown has ended
    const closing = server.close().then(() => {
      done = true
    })
    const close = await readToClose(c)
    expect(close.code).toBe(1001)
    // the shutdown waits for our answer
    await sleep(200)
    expect(done).toBe(false)
    await answerClose(c, 1001)
    await closing
    expect(Date.now() - started).toBeLessThan(1_000)
    expect(await outcome()).toMatchObject({ code: 1001, clean: true, initiator: "local" })
  })

  it("a client that never answers the 1001 is cut after shutdownTimeout", async () => {
    const { server } = await observed({ closeTimeout: 5_000, shutdownTimeout: 300 })
    const c = await RawClient.connect(server.port)
    const started = Date.now()
    const closing = server.close()
    expect((await readToClose(c)).code).toBe(1001)
    await closing
    const elapsed = Date.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(250)
    expect(elapsed).toBeLessThan(1_500) // not closeTimeout
    await c.expectEnd(1_000)
  })

  it("after the shutdown begins, new connections are refused", async () => {
    const { server } = await observed({ shutdownTimeout: 1_000 })
    const c = await RawClient.connect(server.port)
    const closing = server.close()
    expect((await readToClose(c)).code).toBe(1001)
    await expect(RawClient.connect(server.port, { timeout: 500 })).rejects.toThrow()
    await answerClose(c, 1001)
    await closing
  })
})
