/**
 * Topics: a chat of rooms, in one process, across processes on Redis, or on
 * every core of the machine.
 *
 * On PORT (default 8082), a `node:http` server answers `GET /` with a small
 * chat page (plain HTML and browser JavaScript), `GET /health` and `GET
 * /metrics` (Prometheus text, `websock.pubsub.*` among them), and websock
 * serves `/topic/NAME` on the same port: the connection subscribes to topic
 * NAME and every text or binary message it sends is published to NAME, the
 * sender excluded. Each 101 carries `X-Websock-Worker: <pid>`.
 *
 * - `REDIS_URL` (e.g. `redis://127.0.0.1:6379`): topics span every process
 *   using that Redis (`RedisTopics.layer`).
 * - `WORKERS=N`: N worker processes share the port (SO_REUSEPORT where the
 *   platform has it, Linux and the BSDs; `node:cluster` elsewhere); set
 *   `REDIS_URL` too, or each worker's rooms stay its own. A worker that dies
 *   is started again.
 *
 *     npm run example:pubsub
 *     REDIS_URL=redis://127.0.0.1:6379 WORKERS=2 npm run example:pubsub
 *     open http://localhost:8082/
 *
 * SIGINT or SIGTERM: websock's connections get 1001, then the HTTP server
 * closes (the primary passes the signal on to its workers and waits).
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PrometheusMetrics from "effect/observability/PrometheusMetrics"
import * as Stream from "effect/Stream"
import { type ChildProcess, fork } from "node:child_process"
import cluster, { type Worker } from "node:cluster"
import * as Http from "node:http"
import * as RedisTopics from "../src/RedisTopics.ts"
import * as Server from "../src/Server.ts"
import * as Topics from "../src/Topics.ts"
import * as Upgrade from "../src/Upgrade.ts"

const port = Number(process.env.PORT ?? 8082)
const redisUrl = process.env.REDIS_URL
const workers = Number(process.env.WORKERS ?? 1)
/** Platforms whose kernel spreads the connections of one port among processes (SO_REUSEPORT). */
const reusePort = ["linux", "freebsd"].includes(process.platform)

const page = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>websock rooms</title>
<style>
  body { font: 15px system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
  #log { list-style: none; padding: 0; min-height: 12rem; border: 1px solid #ccc; padding: .5rem; }
  #log .me { color: #555; }
  form { display: flex; gap: .5rem; margin: .5rem 0; }
  input[name=text] { flex: 1; }
</style>
<h1>websock rooms</h1>
<form id="join">
  <input name="room" value="lobby" aria-label="room"> <input name="name" placeholder="your name" aria-label="name">
  <button>Join</button>
</form>
<p id="status">not connected</p>
<ul id="log"></ul>
<form id="say">
  <input name="text" autocomplete="off" aria-label="message" disabled> <button disabled>Send</button>
</form>
<script>
  const log = document.getElementById("log")
  const status = document.getElementById("status")
  const say = document.getElementById("say")
  let socket
  const show = (text, mine) => {
    const item = document.createElement("li")
    item.textContent = text
    if (mine) item.className = "me"
    log.append(item)
  }
  document.getElementById("join").addEventListener("submit", (event) => {
    event.preventDefault()
    const form = new FormData(event.target)
    const room = String(form.get("room"))
    const name = String(form.get("name") || "anonymous")
    socket?.close()
    const scheme = location.protocol === "https:" ? "wss:" : "ws:"
    socket = new WebSocket(scheme + "//" + location.host + "/topic/" + encodeURIComponent(room))
    socket.binaryType = "arraybuffer"
    socket.addEventListener("open", () => {
      status.textContent = "in room " + room
      for (const input of say.elements) input.disabled = false
      say.elements.text.focus()
    })
    socket.addEventListener("message", (event) =>
      show(typeof event.data === "string" ? event.data : "[" + event.data.byteLength + " bytes]", false))
    socket.addEventListener("close", (event) => {
      status.textContent = "closed (" + event.code + ")"
      for (const input of say.elements) input.disabled = true
    })
    say.onsubmit = (event) => {
      event.preventDefault()
      const text = say.elements.text.value
      if (text === "" || socket.readyState !== WebSocket.OPEN) return
      const line = name + ": " + text
      socket.send(line)
      show(line, true)
      say.elements.text.value = ""
    }
  })
</script>
</html>
`

/** `/topic/NAME`: subscribe, then publish what arrives to the others. */
const room = Server.route({
  handler: (ws) =>
    Effect.gen(function*() {
      const topic = ws.request.params.name!
      yield* ws.subscribe(topic)
      yield* ws.messages.pipe(Stream.runForEach((message) => ws.publish(topic, message)))
    }),
  headers: () => [["X-Websock-Worker", String(process.pid)]]
})

const http = (context: Context.Context<never>) => (req: Http.IncomingMessage, res: Http.ServerResponse) => {
  if (req.method === "GET" && req.url === "/") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(page)
  } else if (req.method === "GET" && req.url === "/health") {
    res.writeHead(200, { "content-type": "text/plain", "x-websock-worker": String(process.pid) }).end("ok")
  } else if (req.method === "GET" && req.url === "/metrics") {
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(PrometheusMetrics.formatUnsafe(context))
  } else {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found")
  }
}

const listen = (handler: Http.RequestListener) =>
  Effect.acquireRelease(
    Effect.callback<Http.Server, Error>((resume) => {
      const server = Http.createServer(handler)
      server.once("error", (error) => resume(Effect.fail(error)))
      // With workers on a reusePort platform each listens on its own socket; under cluster the primary shares one.
      server.listen({ port, reusePort: workers > 1 && reusePort }, () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
  )

/** One process of the chat: HTTP and the rooms on one port. */
export const PubSub = Effect.gen(function*() {
  const server = yield* listen(http(yield* Effect.context<never>()))
  yield* Upgrade.attach(server, { maxMessageSize: 1024 * 1024, routes: { "/topic/:name": room } })
  const bound = (server.address() as { readonly port: number }).port
  yield* Effect.logInfo(
    `worker ${process.pid} listening on http://127.0.0.1:${bound} (/, /health, /metrics, WebSocket /topic/NAME${redisUrl === undefined ? "" : ", topics on Redis"})`
  )
  return yield* Effect.never
}).pipe(
  Effect.scoped,
  Effect.provide(
    redisUrl === undefined ? Topics.layer : RedisTopics.layer().pipe(Layer.provide(NodeRedis.layer({ url: redisUrl })))
  )
)

/** The primary of `WORKERS=N`: starts the workers, starts a dead one again, passes SIGINT/SIGTERM on. */
const primary = (): void => {
  let stopping = false
  const children = new Set<ChildProcess | Worker>()
  const start = (index: number): void => {
    const env = { ...process.env, WORKERS: String(workers), WORKER_INDEX: String(index) }
    const child = reusePort ? fork(import.meta.filename, [], { env }) : cluster.fork(env)
    children.add(child)
    child.on("exit", (code: number | null, signal: string | null) => {
      children.delete(child)
      if (stopping) {
        if (children.size === 0) process.exit(0)
        return
      }
      console.error(`worker ${index} exited (${signal ?? code}); starting it again`)
      setTimeout(() => {
        if (!stopping) start(index)
      }, 500)
    })
  }
  for (let i = 0; i < workers; i++) start(i)
  const stop = (signal: NodeJS.Signals) => {
    stopping = true
    for (const child of children) child.kill(signal)
    if (children.size === 0) process.exit(0)
  }
  process.on("SIGINT", stop)
  process.on("SIGTERM", stop)
}

if (import.meta.main || (cluster.isWorker && process.env.WORKER_INDEX !== undefined)) {
  if (workers > 1 && process.env.WORKER_INDEX === undefined && cluster.isPrimary) primary()
  else NodeRuntime.runMain(PubSub)
}
