/**
 * Regressions found in review of the server's I/O layer: each test fails
 * without its fix in src/Server.ts or src/WebSocket.ts.
 */
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

  it("a handler failing with another connection's ConnectionClosed closes its own connection with 1000", async () => {
    const relay = () => Effect.fail(new WebSocketError({ reason: new ConnectionClosed({ code: 1001, reason: "other side left" }) }))
    await TestServer.withServer({ routes: { "/ws": relay } }, async (port) => {
      const c = await RawClient.connect(port)
      await c.expectClose(1000)
    })
  })

  it("messages that fill the inbox in the upgrade's own packet keep the socket paused", async () => {
    const mask = Uint8Array.of(1, 2, 3, 4)
    const frame = (payload: Uint8Array) => Buffer.concat([...Frame.encode(Frame.Opcode.Binary, payload, { mask })])
    // A handler that never reads its messages.
    await TestServer.withServer({ inboxHighWaterMark: 8, routes: { "/ws": (ws) => ws.closed } }, async (port) => {
      // More than the inbox holds travels with the request itself.
      const first = Buffer.concat(Array.from({ length: 20 }, () => frame(new Uint8Array(4))))
      const c = await RawClient.connect(port, { extra: first })
      const chunk = frame(new Uint8Array(16 * 1024))
      let written = 0 // 16 KiB frames handed to the client's socket
      // A server that still reads takes all 32 MiB; one that paused pushes back.
      while (written < 2_000 && c.socket.writableLength < 1024 * 1024) {
        c.socket.write(chunk)
        written++
        if (written % 32 === 0) await new Promise((resolve) => setTimeout(resolve, 2))
      }
      expect(written).toBeLessThan(2_000)
      expect(c.socket.writableLength).toBeGreaterThanOrEqual(1024 * 1024)
    })
  })

  it("a handler that takes one message and stops reading does not delay the answer to the peer's Close", async () => {
    await TestServer.withServer(
      {
        closeTimeout: 3_000,
        routes: {
          "/ws": (ws) => Effect.andThen(ws.messages.pipe(Stream.take(1), Stream.runDrain), ws.closed)
        }
      },
      async (port) => {
        const c = await RawClient.connect(port)
        await c.sendText("one")
        await c.sendText("two")
        await new Promise((resolve) => setTimeout(resolve, 50))
        const started = Date.now()
        await c.sendClose(1000)
        await c.expectClose(1000)
        expect(Date.now() - started).toBeLessThan(1_000)
      }
    )
  })
})
