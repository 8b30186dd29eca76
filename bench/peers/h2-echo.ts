/**
 * Peer for bench/h2.ts: websock's echo on a `node:http2` secure server with
 * `allowHTTP1` (the test certificate), answering HTTP/2 extended CONNECT
 * streams (RFC 8441) and HTTP/1.1 upgrades over TLS on PORT, and the same
 * echo on a plain TCP `Server.make` on TCP_PORT. No keepalive pings, no
 * idle timeout, so that every frame the client reads is an echo.
 *
 *     PORT=9443 TCP_PORT=9080 node bench/peers/h2-echo.ts
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import { readFileSync } from "node:fs"
import * as NodeHttp2 from "node:http2"
import * as Http2 from "../../src/Http2.ts"
import * as Server from "../../src/Server.ts"
import type * as WebSocket from "../../src/WebSocket.ts"

const port = Number(process.env.PORT ?? 9443)
const tcpPort = Number(process.env.TCP_PORT ?? 9080)
const fixture = (name: string) => readFileSync(new URL(`../../test/fixtures/${name}`, import.meta.url))

const echo = (ws: WebSocket.WebSocketConnection) => ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch)))
const options = { pingInterval: 0, idleTimeout: 0, maxConnections: 100_000, routes: { "/ws": echo } } as const

const program = Effect.gen(function*() {
  const server = NodeHttp2.createSecureServer({ cert: fixture("localhost.crt"), key: fixture("localhost.key"), allowHTTP1: true })
  yield* Effect.acquireRelease(
    Effect.callback<void>((resume) => void server.listen(port, "127.0.0.1", () => resume(Effect.void))),
    () => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
  )
  // BENCH_H2_WINDOW: the connection-level receive window of each session (bytes; default HTTP/2's 65,535).
  const window = Number(process.env.BENCH_H2_WINDOW ?? 0)
  if (window > 0) server.on("session", (session) => session.setLocalWindowSize(window))
  yield* Http2.attach(server, options)
  yield* Server.make({ ...options, host: "127.0.0.1", port: tcpPort })
  console.log(`h2 echo listening on https://127.0.0.1:${port}/ws (h2 and HTTP/1.1), ws://127.0.0.1:${tcpPort}/ws`)
  return yield* Effect.never
}).pipe(Effect.scoped)

const fiber = Effect.runFork(program)
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => Effect.runFork(Fiber.interrupt(fiber)).addObserver(() => process.exit(0)))
