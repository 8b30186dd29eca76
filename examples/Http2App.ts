/**
 * WebSockets over HTTP/2 (RFC 8441) and HTTP/1.1 on one HTTPS port: a
 * `node:http2` secure server with `allowHTTP1` on PORT (default 8443), its
 * certificate and key from TLS_CERT and TLS_KEY (PEM files; default the
 * self-signed localhost pair of test/fixtures), serving
 *
 * - `GET /`: a page that opens `wss://<host>/ws` and echoes what you type
 *   (a browser opens it as a stream of the page's own HTTP/2 connection);
 * - `GET /stats`: the WebSockets opened so far by HTTP version, as JSON
 *   (`{"1.1":0,"2":3}`);
 * - `/ws`: an echo with permessage-deflate, over an HTTP/1.1 upgrade or an
 *   HTTP/2 extended CONNECT stream.
 *
 *     npm run example:h2
 *     open https://localhost:8443/ (accept the self-signed certificate)
 *
 * SIGINT or SIGTERM: websock's connections get 1001, their sessions a
 * GOAWAY, then the server closes.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { Buffer } from "node:buffer"
import { readFileSync } from "node:fs"
import * as NodeHttp2 from "node:http2"
import * as Http2 from "../src/Http2.ts"
import type * as WebSocket from "../src/WebSocket.ts"

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>websock over HTTP/2</title>
<p>Echo over <code>wss://</code>: <span id="state">connecting</span></p>
<form id="form"><input id="input" autocomplete="off"> <button>send</button></form>
<pre id="log"></pre>
<script>
  const log = (line) => { document.getElementById("log").textContent += line + "\\n" }
  const ws = new WebSocket("wss://" + location.host + "/ws")
  ws.binaryType = "arraybuffer"
  ws.onopen = () => { document.getElementById("state").textContent = "open" }
  ws.onclose = (event) => { document.getElementById("state").textContent = "closed " + event.code }
  ws.onmessage = (event) => log("< " + (typeof event.data === "string" ? event.data : event.data.byteLength + " bytes"))
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault()
    const input = document.getElementById("input")
    ws.send(input.value)
    log("> " + input.value)
    input.value = ""
  }
</script>
`

/** What the example needs: where to listen and its TLS pair (PEM). */
export interface Config {
  readonly port: number
  readonly host?: string | undefined
  readonly cert: string | Buffer
  readonly key: string | Buffer
}

/** The example's server, listening; closed with the scope. */
export interface Running {
  readonly server: NodeHttp2.Http2SecureServer
  readonly port: number
  /** WebSockets opened, by `WebSocket.Request.httpVersion`. */
  readonly opened: Record<string, number>
  readonly upgrader: Http2.Upgrader
}

const listen = (config: Config, handler: (req: NodeHttp2.Http2ServerRequest, res: NodeHttp2.Http2ServerResponse) => void) =>
  Effect.acquireRelease(
    Effect.callback<NodeHttp2.Http2SecureServer, Error>((resume) => {
      const server = NodeHttp2.createSecureServer({ cert: config.cert, key: config.key, allowHTTP1: true }, handler)
      server.once("error", (error) => resume(Effect.fail(error)))
      server.listen(config.port, config.host, () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
  )

/** Starts the example in the current scope. */
export const make = (config: Config) =>
  Effect.gen(function*() {
    const opened: Record<string, number> = { "1.1": 0, "2": 0 }
    const server = yield* listen(config, (req, res) => {
      if (req.method === "GET" && req.url === "/") {
        res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(PAGE)
      } else if (req.method === "GET" && req.url === "/stats") {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(opened))
      } else {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found")
      }
    })
    const echo = (ws: WebSocket.WebSocketConnection) =>
      Effect.andThen(
        Effect.sync(() => void (opened[ws.request.httpVersion] = (opened[ws.request.httpVersion] ?? 0) + 1)),
        ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch)))
      )
    // Attached after listening, before any session: on shutdown websock
    // detaches, closes its connections (1001), sends GOAWAY, then the
    // server closes.
    const upgrader = yield* Http2.attach(server, {
      maxMessageSize: 64 * 1024 * 1024,
      compression: {},
      routes: { "/ws": echo }
    })
    const port = (server.address() as { readonly port: number }).port
    return { server, port, opened, upgrader } satisfies Running
  })

export const Http2App = Effect.gen(function*() {
  const fixture = (name: string) => new URL(`../test/fixtures/${name}`, import.meta.url)
  const { port } = yield* make({
    port: Number(process.env.PORT ?? 8443),
    cert: readFileSync(process.env.TLS_CERT ?? fixture("localhost.crt")),
    key: readFileSync(process.env.TLS_KEY ?? fixture("localhost.key"))
  })
  yield* Effect.logInfo(`listening on https://localhost:${port} (HTTP/2 and HTTP/1.1; page at /, WebSocket at /ws)`)
  return yield* Effect.never
}).pipe(Effect.scoped)

if (import.meta.main) NodeRuntime.runMain(Http2App)
