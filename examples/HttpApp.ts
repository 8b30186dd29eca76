/**
 * One port for HTTP and WebSockets: a `node:http` server on PORT (default
 * 8080) answers `GET /health` with `ok` and `GET /metrics` with every
 * metric (websock's `websock.*` among them) in the Prometheus text format,
 * and websock serves, on the same port:
 *
 * - `/ws`: an echo, with permessage-deflate and the limits of
 *   examples/EchoServer.ts;
 * - `/private`: 401 unless the request has `Authorization: Bearer
 *   demo-token`; then `hello demo` as the first message, then an echo.
 *
 * With TLS_CERT and TLS_KEY (paths to PEM files) it serves the same over
 * HTTPS and WSS.
 *
 *     npm run example:http
 *     curl localhost:8080/health
 *     curl localhost:8080/metrics
 *
 * SIGINT or SIGTERM: websock's connections get 1001, then the HTTP server
 * closes.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as PrometheusMetrics from "effect/observability/PrometheusMetrics"
import * as Stream from "effect/Stream"
import { readFileSync } from "node:fs"
import * as Http from "node:http"
import * as Https from "node:https"
import * as Server from "../src/Server.ts"
import * as Upgrade from "../src/Upgrade.ts"
import type * as WebSocket from "../src/WebSocket.ts"

const port = Number(process.env.PORT ?? 8080)
const cert = process.env.TLS_CERT
const key = process.env.TLS_KEY

const echo = (ws: WebSocket.WebSocketConnection) => ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch)))

/** The plain HTTP routes; `/metrics` reads the metrics of `context` (the registry websock reports into). */
const http = (context: Context.Context<never>) => (req: Http.IncomingMessage, res: Http.ServerResponse) => {
  if (req.method === "GET" && req.url === "/health") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok")
  } else if (req.method === "GET" && req.url === "/metrics") {
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(PrometheusMetrics.formatUnsafe(context))
  } else {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found")
  }
}

/** The HTTP(S) server, listening, closed with the scope. */
const listen = (handler: Http.RequestListener) => Effect.acquireRelease(
  Effect.callback<Http.Server | Https.Server, Error>((resume) => {
    const server = cert !== undefined && key !== undefined
      ? Https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, handler)
      : Http.createServer(handler)
    server.once("error", (error) => resume(Effect.fail(error)))
    server.listen(port, () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
)

export const HttpApp = Effect.gen(function*() {
  const server = yield* listen(http(yield* Effect.context<never>()))
  // Attached after listening: on shutdown websock detaches and closes its
  // connections (1001) first, then the HTTP server closes.
  yield* Upgrade.attach(server, {
    maxMessageSize: 64 * 1024 * 1024,
    maxConnections: 100_000,
    compression: {},
    routes: {
      "/ws": echo,
      "/private": Server.route({
        upgrade: (request) =>
          request.headers.get("authorization") === "Bearer demo-token"
            ? Effect.succeed({ user: "demo" })
            : Server.reject(401, { headers: [["WWW-Authenticate", "Bearer realm=\"demo\""]], body: "token required" }),
        handler: (ws, { user }) => Effect.andThen(ws.send(`hello ${user}`), echo(ws))
      })
    }
  })
  const scheme = server instanceof Https.Server ? "https" : "http"
  const bound = (server.address() as { readonly port: number }).port
  yield* Effect.logInfo(`listening on ${scheme}://127.0.0.1:${bound} (GET /health and /metrics, WebSocket /ws and /private)`)
  return yield* Effect.never
}).pipe(Effect.scoped)

if (import.meta.main) NodeRuntime.runMain(HttpApp)
