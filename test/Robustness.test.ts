/**
 * Regressions found in review of the server's I/O layer: each test fails
 * without its fix in src/Server.ts or src/WebSocket.ts.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { Buffer } from "node:buffer"
import { afterEach, describe, expect, it } from "vitest"
import { ConnectionClosed, WebSocketError } from "../src/Errors.ts"
import * as Frame from "../src/Frame.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"

afterEach(() => RawClient.destroyAll())

describe("robustness of the I/O layer", () => {
  it("a route's protocol function that throws answers 500 and the server goes on", async () => {
    await TestServer.withServer(
      {
        routes: {
          "/boom": {
            protocol: () => {
              throw new Error("route bug")
            },
            handler: () => Effect.void
          },
          "/ws": TestServer.echo
        }
      },
      async (port) => {
        const failed = await RawClient.request(port, { path: "/boom", headers: { "Sec-WebSocket-Protocol": "chat" } })
        expect(failed.response.status).toBe(500)
        await failed.expectEnd()
        const c = await RawClient.connect(port)
        await c.sendText("still here")
        expect(await c.expectText()).toBe("still here")
        await c.sendClose(1000)
        await c.expectClose(1000)
      }
    )
  })

  it("a handler failing with its own connection's ConnectionClosed closes it with 1000 (another's: see Handler.test.ts)", async () => {
    const relay = (ws: { readonly id: number }) =>
      Effect.fail(new WebSocketError({ reason: new ConnectionClosed({ connection: ws.id, code: 1001, reason: "closing" }) }))
    await TestServer.withServer({ routes: { "/ws": relay } }, async (port) => {
      const c = await RawClient.connect(port)
      await c.expectClose(1000)
    })
  })

  it("messages that fill the inbox in the upgrade's own packet keep the socket paused", async () => {
    const mask = Uint8Array.of(1, 2, 3, 4)
    const frame = (payload: Uint8Array) => Buffer.concat([...Frame.encode(Frame.Opcode.Binary, payload, { mask })])
    // A handler that never reads its messages, and an echo for the control below.
    await TestServer.withServer({ inboxHighWaterMark: 8, routes: { "/ws": (ws) => ws.closed, "/echo": TestServer.echo } }, async (port) => {
      // More than the inbox holds travels with the request itself.
      const first = Buffer.concat(Array.from({ length: 20 }, () => frame(new Uint8Array(4))))
      const c = await RawClient.connect(port, { extra: first })
      await c.untilServerRead()
      const packet = c.bytesSent // the request and its 20 frames
      expect(c.serverBytesRead()).toBe(packet)
      // More after the 101: a server that resumed reading would take it.
      await c.write(Buffer.concat(Array.from({ length: 16 }, () => frame(new Uint8Array(1024)))))
      // Control: the same server (one event loop) upgrades another connection
      // and answers its Ping. Loopback delivers a write at once, so the bytes
      // above were readable before that Ping was sent: a resumed socket would
      // have been read by the time the Pong comes back.
      const other = await RawClient.connect(port, { path: "/echo" })
      await other.ping("control")
      await other.expectPong()
      expect(c.serverBytesRead()).toBe(packet)
      await other.sendClose(1000)
      await other.expectClose(1000)
      c.destroy() // it would not answer the shutdown's Close
    })
  })

  it("a handler that takes one message and stops reading does not delay the answer to the peer's Close", async () => {
    const took = Deferred.makeUnsafe<void>()
    await TestServer.withServer(
      {
        // far beyond the waits below: the answer cannot come from a timer
        closeTimeout: 20_000,
        routes: {
          "/ws": (ws) =>
            ws.messages.pipe(
              Stream.take(1),
              Stream.runDrain,
              Effect.andThen(Deferred.succeed(took, undefined)),
              Effect.andThen(ws.closed)
            )
        }
      },
      async (port) => {
        const c = await RawClient.connect(port)
        await c.sendText("one")
        await c.sendText("two")
        // the handler has taken "one" and stopped; the server has read "two",
        // which waits in the inbox, untaken, when the Close arrives
        await Effect.runPromise(Deferred.await(took))
        await c.untilServerRead()
        await c.sendClose(1000)
        await c.expectClose(1000)
      }
    )
  })
})
