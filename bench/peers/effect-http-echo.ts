/**
 * Peer: an echo served the way an Effect app serves WebSockets, as an
 * `HttpRouter` route that calls `HttpServerRequest.upgrade` and writes each
 * batch it pulls back with `writeAll` (the `/ws` route of
 * examples/EffectHttpApp.ts), on one of two HTTP servers:
 *
 * - ENGINE=websock (default): websock's `NodeHttpServer.layer` (websock under
 *   the upgrade), with the message limit raised for scenario E;
 * - ENGINE=effect: @effect/platform-node's own `NodeHttpServer.layer` (ws
 *   under the upgrade; it uses `bufferutil` when installed, WS_NO_BUFFER_UTIL=1
 *   stops it).
 *
 * DEFLATE=1 turns permessage-deflate on.
 *
 *     PORT=9000 ENGINE=effect node bench/peers/effect-http-echo.ts
 */
import * as PlatformNodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Http from "node:http"
import * as NodeHttpServer from "../../src/NodeHttpServer.ts"

const port = Number(process.env.PORT ?? 9000)
const engine = process.env.ENGINE ?? "websock"
const deflate = process.env.DEFLATE === "1"
if (engine !== "websock" && engine !== "effect") throw new Error(`ENGINE must be websock or effect, got ${engine}`)

const Echo = HttpRouter.add(
  "GET",
  "/ws",
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const socket = yield* request.upgrade
    const { pull } = yield* socket.reader
    const { writeAll } = yield* socket.writer
    while (true) yield* writeAll(yield* pull)
  }).pipe(Effect.ignore, Effect.as(HttpServerResponse.empty()))
)

const server = engine === "websock"
  ? NodeHttpServer.layer(Http.createServer, {
    host: "127.0.0.1",
    port,
    websock: { maxMessageSize: 64 * 1024 * 1024, maxConnections: 100_000, compression: deflate ? {} : false }
  })
  : PlatformNodeHttpServer.layer(Http.createServer, { host: "127.0.0.1", port, websocket: { perMessageDeflate: deflate } })

const App = HttpRouter.serve(Echo, { disableLogger: true }).pipe(Layer.provide(server))

console.log(`effect-http echo (${engine}) listening on ws://127.0.0.1:${port}/ws (deflate: ${deflate})`)
NodeRuntime.runMain(Layer.launch(App))
