/**
 * An Effect `HttpRouter` app served with websock as the WebSocket engine of
 * Effect's own HTTP server (`websock/NodeHttpServer` in place of
 * `@effect/platform-node`'s `NodeHttpServer`), on PORT (default 8081):
 *
 * - `GET /health`: `ok`;
 * - `GET /metrics`: every metric (websock's `websock.*` among them) in the
 *   Prometheus text format (`PrometheusMetrics.layerHttp`);
 * - `/ws`: an echo written with Effect's Socket API
 *   (`HttpServerRequest.upgrade`), every message back as it came, with
 *   permessage-deflate and the limits of examples/EchoServer.ts;
 * - `/rpc`: the `EchoRpcs` group over Effect RPC's WebSocket protocol
 *   (`RpcServer.layerProtocolWebsocket`, JSON serialization): `Echo`
 *   returns its text, `Count` streams 1..n.
 *
 *     npm run example:effect
 *     curl localhost:8081/health
 *     curl localhost:8081/metrics
 *
 * SIGINT or SIGTERM: websock's connections get 1001, then Effect closes the
 * HTTP server.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as PrometheusMetrics from "effect/observability/PrometheusMetrics"
import * as Rpc from "effect/rpc/Rpc"
import * as RpcGroup from "effect/rpc/RpcGroup"
import * as RpcSerialization from "effect/rpc/RpcSerialization"
import * as RpcServer from "effect/rpc/RpcServer"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Http from "node:http"
import * as NodeHttpServer from "../src/NodeHttpServer.ts"

const port = Number(process.env.PORT ?? 8081)

/**
 * The RPC group served at `/rpc`.
 *
 * @since 0.2.0
 */
export class EchoRpcs extends RpcGroup.make(
  Rpc.make("Echo", { payload: { text: Schema.String }, success: Schema.String }),
  Rpc.make("Count", { payload: { n: Schema.Number }, success: Schema.Number, stream: true })
) {}

const EchoHandlers = EchoRpcs.toLayer({
  Echo: ({ text }) => Effect.succeed(text),
  Count: ({ n }) => Stream.range(1, n)
})

const Health = HttpRouter.add("GET", "/health", HttpServerResponse.text("ok"))

/** Every message back, in the batches they arrive in, until the client closes. */
const Echo = HttpRouter.add(
  "GET",
  "/ws",
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const socket = yield* request.upgrade
    const { pull } = yield* socket.reader
    const { writeAll } = yield* socket.writer
    while (true) yield* writeAll(yield* pull)
  }).pipe(
    Effect.catchReason("SocketError", "SocketCloseError", () => Effect.void),
    Effect.as(HttpServerResponse.empty())
  )
)

const Rpcs = RpcServer.layer(EchoRpcs).pipe(
  Layer.provide(EchoHandlers),
  Layer.provide(RpcServer.layerProtocolWebsocket({ path: "/rpc" })),
  Layer.provide(RpcSerialization.layerJson)
)

/**
 * The routes, for any `HttpRouter.serve`.
 *
 * @since 0.2.0
 */
export const Routes = Layer.mergeAll(Health, Echo, Rpcs, PrometheusMetrics.layerHttp())

/**
 * websock's settings here: Autobahn's largest cases pass (16 MiB messages,
 * 4 MiB in 64-byte fragments), and compression whenever a client offers it.
 *
 * @since 0.2.0
 */
export const websock: NodeHttpServer.WebsockOptions = { maxMessageSize: 64 * 1024 * 1024, maxConnections: 100_000, compression: {} }

/**
 * The app, on websock's `NodeHttpServer.layer`.
 *
 * @since 0.2.0
 */
export const EffectHttpApp = HttpRouter.serve(Routes).pipe(
  Layer.provide(NodeHttpServer.layer(Http.createServer, { port, websock }))
)

if (import.meta.main) NodeRuntime.runMain(Layer.launch(EffectHttpApp))
