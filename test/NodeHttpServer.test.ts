/**
 * websock as the WebSocket engine of Effect's HTTP server
 * (`websock/NodeHttpServer`), over real sockets: the `ws` client, Node's
 * built-in `WebSocket`, Effect's `HttpClient` and RPC clients, and raw TCP
 * where bytes matter. Routes are Effect `HttpRouter` routes written with
 * Effect's Socket API; what proves websock is underneath is what ws would
 * not do (1009 at websock's `maxMessageSize`, websock's keepalive Pings,
 * writes that wait for the peer, per-route subprotocols and 101 headers,
 * a prompt 1001 at shutdown). The last block pins what websock relies on of
 * @effect/platform-node, so that an upgrade of it that changes those
 * internals fails here.
 */
import * as PlatformNodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as NodeWS from "@effect/platform-node/NodeWS"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServer from "effect/http/HttpServer"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Rpc from "effect/rpc/Rpc"
import * as RpcClient from "effect/rpc/RpcClient"
import * as RpcSerialization from "effect/rpc/RpcSerialization"
import * as RpcServer from "effect/rpc/RpcServer"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import type * as Http from "node:http"
import { createServer } from "node:http"
import * as Net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { WebSocket as WsClient } from "ws"
import { EchoRpcs, Routes } from "../examples/EffectHttpApp.ts"
import { InvalidOption, ServerError } from "../src/Errors.ts"
import * as EffectUpgrade from "../src/internal/effectUpgrade.ts"
import * as Engine from "../src/internal/engine.ts"
import * as Settings from "../src/internal/settings.ts"
import * as NodeHttpServer from "../src/NodeHttpServer.ts"
import * as Logs from "./support/Logs.ts"
import * as Spans from "./support/Spans.ts"
import { RawClient } from "./support/RawClient.ts"
import { until, within } from "./support/Wait.ts"

/** `within` with this file's bound, what first. */
const bounded = <A>(what: string, promise: Promise<A>, timeout = 3_000): Promise<A> => within(promise, timeout, what)

/** No keepalive or idle timeout (they would add frames to what a test expects), short close and shutdown timers. */
const testWebsock: NodeHttpServer.WebsockOptions = { pingInterval: 0, idleTimeout: 0, closeTimeout: 500, shutdownTimeout: 1_000 }

interface Started {
  readonly port: number
  readonly url: string
  readonly logs: ReadonlyArray<Logs.Entry>
  /** The server's side of every TCP connection it accepted. */
  readonly sockets: ReadonlyArray<Net.Socket>
  readonly http: Http.Server
  /** Closes the layer's scope (websock's shutdown, then Effect's). */
  readonly close: () => Promise<void>
}

const portOf = (server: HttpServer.HttpServer["Service"]): number => (server.address as { readonly port: number }).port

const opened: Array<() => Promise<void>> = []
const clients: Array<WsClient | WebSocket> = []
afterEach(async () => {
  RawClient.destroyAll()
  for (const client of clients.splice(0)) client instanceof WsClient ? client.terminate() : client.close()
  for (const close of opened.splice(0).reverse()) await close()
})

/** Serves `routes` with `HttpRouter.serve` on websock's `NodeHttpServer.layer`, on 127.0.0.1 and a free port. */
const start = async (
  routes: Layer.Layer<never, any, any>,
  options: Partial<NodeHttpServer.Options> & { readonly logger?: boolean } = {}
): Promise<Started> => {
  const { logger = false, websock, ...rest } = options
  const logs = Logs.capture()
  const scope = Scope.makeUnsafe()
  const sockets: Array<Net.Socket> = []
  let http: Http.Server | undefined = undefined
  const evaluate = () => {
    http = createServer()
    http.on("connection", (socket) => sockets.push(socket))
    return http
  }
  const app = HttpRouter.serve(routes, { disableListenLog: true, disableLogger: !logger }).pipe(
    Layer.provideMerge(NodeHttpServer.layer(evaluate, { port: 0, host: "127.0.0.1", ...rest, websock: { ...testWebsock, ...websock } }))
  )
  const context = await Effect.runPromise(Layer.buildWithScope(app, scope).pipe(logs.provide) as Effect.Effect<Context.Context<HttpServer.HttpServer>, unknown>)
  const port = portOf(Context.get(context, HttpServer.HttpServer))
  let closing: Promise<void> | undefined = undefined
  const close = () => (closing ??= Effect.runPromise(Scope.close(scope, Exit.void)))
  opened.push(close)
  return { port, url: `ws://127.0.0.1:${port}`, logs: logs.entries, sockets, http: http!, close }
}

/** A `ws` client, open, with what it receives recorded. */
interface WsOpen {
  readonly ws: WsClient
  readonly response: Http.IncomingMessage
  readonly messages: Array<string>
  readonly pings: { count: number }
  readonly closed: Promise<{ readonly code: number; readonly reason: string }>
}

const connectWs = (url: string, protocols: Array<string> = []): Promise<WsOpen> =>
  bounded(
    `the ws client's handshake with ${url}`,
    new Promise<WsOpen>((resolve, reject) => {
      const ws = new WsClient(url, protocols)
      clients.push(ws)
      const messages: Array<string> = []
      const pings = { count: 0 }
      ws.on("message", (data) => messages.push(String(data)))
      ws.on("ping", () => pings.count++)
      const closed = new Promise<{ code: number; reason: string }>((done) =>
        ws.once("close", (code, reason) => done({ code, reason: String(reason) }))
      )
      ws.once("upgrade", (response) => ws.once("open", () => resolve({ ws, response, messages, pings, closed })))
      ws.once("unexpected-response", (_, response) => reject(new Error(`unexpected ${response.statusCode}`)))
      ws.once("error", reject)
    })
  )

/** The status a `ws` client's handshake was refused with. */
const refusedWith = (url: string, protocols: Array<string> = []): Promise<number> =>
  bounded(
    `the refusal of ${url}`,
    new Promise<number>((resolve, reject) => {
      const ws = new WsClient(url, protocols)
      clients.push(ws)
      ws.once("unexpected-response", (_, response) => {
        resolve(response.statusCode ?? 0)
        response.resume()
        ws.terminate()
      })
      ws.once("open", () => reject(new Error("the handshake was accepted")))
      ws.once("error", () => {})
    })
  )

const nextMessage = (client: WsOpen, count: number): Promise<ReadonlyArray<string>> =>
  until(`${count} messages`, () => client.messages.length >= count).then(() => client.messages.slice(0, count))

/** Sends `limit` characters, which come back, then `limit + 1`, which closes the connection with 1009. */
const expectMaxMessageSize = async (client: WsOpen, limit: number): Promise<void> => {
  client.ws.send("x".repeat(limit))
  expect(await nextMessage(client, 1)).toEqual(["x".repeat(limit)])
  client.ws.send("x".repeat(limit + 1))
  expect((await bounded("the close", client.closed)).code).toBe(1009)
}

// -----------------------------------------------------------------------------
// Routes written with Effect's Socket API
// -----------------------------------------------------------------------------

/**
 * A GET route that upgrades (with `options.headers` in the 101, under
 * `options.route`) and hands the socket to `use`; the response is empty.
 * Its failures, the upgrade's included, are pushed to `options.failures`.
 */
const socketRoute = <E>(
  path: `/${string}`,
  use: (socket: Socket.Socket) => Effect.Effect<unknown, E, Scope.Scope>,
  options: {
    readonly headers?: Record<string, string>
    readonly route?: NodeHttpServer.RouteOptions
    readonly failures?: Array<unknown>
  } = {}
) =>
  HttpRouter.add(
    "GET",
    path,
    Effect.gen(function*() {
      const socket = yield* (yield* HttpServerRequest.HttpServerRequest).upgradeWith({ headers: options.headers })
      yield* use(socket)
      return HttpServerResponse.empty()
    }).pipe(
      NodeHttpServer.withRouteOptions(options.route ?? {}),
      Effect.tapError((error) => Effect.sync(() => options.failures?.push(error)))
    )
  )

/** Every message back until the peer closes (the example's echo). */
const echo = (socket: Socket.Socket) =>
  Effect.gen(function*() {
    const { pull } = yield* socket.reader
    const { writeAll } = yield* socket.writer
    while (true) yield* writeAll(yield* pull)
  }).pipe(Effect.catchReason("SocketError", "SocketCloseError", () => Effect.void))

const echoOn = (path: `/${string}`) => socketRoute(path, echo)

/** Takes one message, then ends as `end` says (the socket closes with the scope's exit). */
const oneMessageThen = (path: `/${string}`, end: Effect.Effect<void, string>) =>
  socketRoute(path, (socket) => Effect.andThen(Effect.flatMap(socket.reader, ({ pull }) => pull), end))

describe("Effect's HttpServer on websock", () => {
  it("serves the example's routes on one port: GET /health through Effect's HttpClient (layerTest), the /ws echo to the ws client and Node's WebSocket, and EchoRpcs at /rpc", async () => {
    const client = await Effect.runPromise(
      Effect.gen(function*() {
        const response = yield* HttpClient.get("/health")
        const body = yield* response.text
        const server = yield* HttpServer.HttpServer
        return { status: response.status, body, port: portOf(server) }
      }).pipe(
        Effect.flatMap(({ body, port, status }) =>
          Effect.promise(async () => {
            const ws = await connectWs(`ws://127.0.0.1:${port}/ws`)
            ws.ws.send("hello")
            ws.ws.send(new Uint8Array([1, 2, 3]))
            const echoed = await nextMessage(ws, 2)
            const global = new WebSocket(`ws://127.0.0.1:${port}/ws`)
            clients.push(global)
            global.binaryType = "arraybuffer"
            const received: Array<unknown> = []
            global.onmessage = (event) => received.push(event.data)
            await bounded("Node's WebSocket to open", new Promise((resolve) => (global.onopen = resolve)))
            global.send("from Node's client")
            await until("the echo to Node's WebSocket", () => received.length === 1)
            return { status, body, echoed, global: received[0], port }
          })
        ),
        Effect.flatMap((result) =>
          Effect.gen(function*() {
            const rpc = yield* RpcClient.make(EchoRpcs)
            const echo = yield* rpc.Echo({ text: "over RPC" })
            const count = yield* Stream.runCollect(rpc.Count({ n: 3 }))
            return { ...result, rpc: { echo, count } }
          }).pipe(
            Effect.provide(RpcClient.layerProtocolSocket().pipe(
              Layer.provide(NodeSocket.layerWebSocket(`ws://127.0.0.1:${result.port}/rpc`)),
              Layer.provide(RpcSerialization.layerJson)
            ))
          )
        ),
        Effect.provide(HttpRouter.serve(Routes, { disableListenLog: true, disableLogger: true }).pipe(Layer.provideMerge(NodeHttpServer.layerTest))),
        Effect.scoped
      )
    )
    expect(client.status).toBe(200)
    expect(client.body).toBe("ok")
    expect(client.echoed).toEqual(["hello", "\u0001\u0002\u0003"])
    expect(client.global).toBe("from Node's client")
    expect(client.rpc).toEqual({ echo: "over RPC", count: [1, 2, 3] })
  })

  it("serves the example's GET /metrics in the Prometheus text format, websock's counters moving with a session", async () => {
    const registry: Metric.MetricRegistry = new Map()
    const scrape = Effect.flatMap(HttpClient.get("/metrics"), (response) =>
      Effect.map(response.text, (body) => ({ body, type: response.headers["content-type"] })))
    const result = await Effect.runPromise(
      Effect.gen(function*() {
        const before = yield* scrape
        const server = yield* HttpServer.HttpServer
        yield* Effect.promise(async () => {
          const ws = await connectWs(`ws://127.0.0.1:${portOf(server)}/ws`)
          ws.ws.send("hello")
          ws.ws.send("world!")
          await nextMessage(ws, 2)
        })
        return { before, after: yield* scrape }
      }).pipe(
        Effect.provide(HttpRouter.serve(Routes, { disableListenLog: true, disableLogger: true }).pipe(Layer.provideMerge(NodeHttpServer.layerTest))),
        Effect.scoped,
        Effect.provideService(Metric.MetricRegistry, registry)
      )
    )
    expect(result.after.type).toContain("text/plain")
    expect(result.before.body).toMatch(/^# TYPE websock_connections_accepted counter$/m)
    expect(result.before.body).toMatch(/^websock_connections_accepted 0$/m)
    expect(result.after.body).toMatch(/^websock_connections_accepted 1$/m)
    expect(result.after.body).toMatch(/^websock_connections_open 1$/m)
    expect(result.after.body).toMatch(/^websock_upgrades\{http_response_status_code="101"\} 1$/m)
    expect(result.after.body).toMatch(/^websock_messages_received\{websocket_message_type="text"\} 2$/m)
    expect(result.after.body).toMatch(/^websock_bytes_received\{websocket_message_type="text"\} 11$/m)
    expect(result.after.body).toMatch(/^websock_message_size_count\{network_io_direction="receive"\} 2$/m)
  })

  it("puts websock's upgrade span under Effect's request span, and the connection's under it", async () => {
    const { tracer, spans } = Spans.recording()
    await Effect.runPromise(
      Effect.gen(function*() {
        const server = yield* HttpServer.HttpServer
        yield* Effect.promise(async () => {
          const ws = await connectWs(`ws://127.0.0.1:${portOf(server)}/ws`)
          ws.ws.send("traced")
          await nextMessage(ws, 1)
          ws.ws.close(1000)
          await until("the connection's span ended", () =>
            spans.some((s) => s.name === "websock.connection" && s.status._tag === "Ended"))
        })
      }).pipe(
        Effect.provide(HttpRouter.serve(Routes, { disableListenLog: true, disableLogger: true }).pipe(Layer.provideMerge(NodeHttpServer.layerTest))),
        Effect.scoped,
        Effect.provideService(Tracer.Tracer, tracer)
      )
    )
    const upgrade = spans.find((s) => s.name === "websock.upgrade")!
    const connection = spans.find((s) => s.name === "websock.connection")!
    const request = spans.find((s) => s.spanId === Option.getOrUndefined(upgrade.parent)?.spanId)
    expect(request?.kind, spans.map((s) => s.name).join(", ")).toBe("server")
    expect(request!.name.startsWith("websock.")).toBe(false)
    expect(upgrade.kind).toBe("internal")
    expect(upgrade.attributes.get("http.response.status_code")).toBe(101)
    expect(Option.getOrUndefined(connection.parent)?.spanId).toBe(upgrade.spanId)
    expect(connection.traceId).toBe(request!.traceId)
    expect(connection.attributes.get("websocket.messages.received")).toBe(1)
  })

  it("is websock underneath: its keepalive Pings arrive, and a message over its maxMessageSize closes with 1009", async () => {
    const server = await start(echoOn("/ws"), { websock: { maxMessageSize: 1024, pingInterval: 50 } })
    const client = await connectWs(`${server.url}/ws`)
    // ws has neither: no Pings of its own, and 100 MiB as its default maxPayload.
    await until("two of websock's keepalive Pings", () => client.pings.count >= 2)
    await expectMaxMessageSize(client, 1024)
  })

  it("closes with 1000, 1011 and 1001 when the route succeeds, fails and is interrupted", async () => {
    const server = await start(Layer.mergeAll(
      oneMessageThen("/success", Effect.void),
      oneMessageThen("/failure", Effect.fail("the route failed")),
      oneMessageThen("/interrupt", Effect.interrupt)
    ))
    const codes: Record<string, number> = {}
    for (const path of ["/success", "/failure", "/interrupt"]) {
      const client = await connectWs(`${server.url}${path}`)
      client.ws.send("go")
      codes[path] = (await bounded(`the close of ${path}`, client.closed)).code
    }
    expect(codes).toEqual({ "/success": 1000, "/failure": 1011, "/interrupt": 1001 })
  })

  it("shuts down with 1001 to every connection at once, well before Effect's gracefulShutdownTimeout, then closes the HTTP server", async () => {
    const server = await start(echoOn("/ws"), { gracefulShutdownTimeout: "20 seconds", websock: { shutdownTimeout: "20 seconds" } })
    const a = await connectWs(`${server.url}/ws`)
    const b = await connectWs(`${server.url}/ws`)
    const closes: Array<number> = []
    void a.closed.then(({ code }) => closes.push(code))
    void b.closed.then(({ code }) => closes.push(code))
    const started = performance.now()
    await bounded("the shutdown", server.close(), 25_000)
    const elapsed = performance.now() - started
    // Both clients had their Close (and the TCP close) when the shutdown returned.
    expect(closes).toEqual([1001, 1001])
    expect(server.http.listening).toBe(false)
    expect(elapsed).toBeLessThan(5_000)
  }, 30_000)
})

describe("a route's own WebSocket settings", () => {
  it("chooses the subprotocol with the route's protocol, and sends upgradeWith's headers in the 101 (ws would take the first offered, and refuse the headers)", async () => {
    const server = await start(Layer.mergeAll(
      socketRoute("/chat", echo, {
        route: { protocol: (offered) => offered.includes("chat.v2") ? "chat.v2" : undefined },
        headers: { "set-cookie": "session=abc; HttpOnly", "x-route": "chat" }
      }),
      echoOn("/plain")
    ))
    const chat = await connectWs(`${server.url}/chat`, ["chat.v1", "chat.v2"])
    expect(chat.ws.protocol).toBe("chat.v2")
    expect(chat.response.headers["set-cookie"]).toEqual(["session=abc; HttpOnly"])
    expect(chat.response.headers["x-route"]).toBe("chat")
    chat.ws.send("over chat.v2")
    expect(await nextMessage(chat, 1)).toEqual(["over chat.v2"])
    // Without a protocol of its own, a route chooses none of the offered ones.
    const plain = await RawClient.connect(server.port, { path: "/plain", headers: { "Sec-WebSocket-Protocol": "chat.v1, chat.v2" } })
    expect(plain.response.headers.has("sec-websocket-protocol")).toBe(false)
  })

  it("serves a route under a prefix (a request the router modifies) with websock's upgrade too: upgradeWith's headers reach the client", async () => {
    const server = await start(HttpRouter.addAll([
      HttpRouter.route(
        "GET",
        "/chat",
        Effect.gen(function*() {
          const socket = yield* (yield* HttpServerRequest.HttpServerRequest).upgradeWith({ headers: { "x-route": "mounted" } })
          const { pull } = yield* socket.reader
          const { writeAll } = yield* socket.writer
          yield* writeAll(["mounted"])
          yield* pull
          return HttpServerResponse.empty()
        })
      )
    ], { prefix: "/api" }))
    const client = await connectWs(`${server.url}/api/chat`)
    expect(client.response.headers["x-route"]).toBe("mounted")
    expect(await nextMessage(client, 1)).toEqual(["mounted"])
  })

  it("applies the route's limits in place of the server's: 1009 beyond its maxMessageSize, while another route takes the message", async () => {
    const server = await start(Layer.mergeAll(socketRoute("/small", echo, { route: { maxMessageSize: 16 } }), echoOn("/ws")))
    const big = await connectWs(`${server.url}/ws`)
    big.ws.send("x".repeat(17))
    expect(await nextMessage(big, 1)).toEqual(["x".repeat(17)])
    await expectMaxMessageSize(await connectWs(`${server.url}/small`), 16)
  })

  it("applies the route's origins and compression in place of the server's", async () => {
    const server = await start(Layer.mergeAll(
      echoOn("/ws"),
      socketRoute("/private", echo, { route: { origins: ["https://app.example"], compression: false } })
    ), { websock: { compression: {} } })
    const open = (path: string, origin: string) =>
      bounded(
        `${path} from ${origin}`,
        new Promise<{ readonly status: number; readonly extensions: string }>((resolve) => {
          const ws = new WsClient(`${server.url}${path}`, { origin, perMessageDeflate: true })
          clients.push(ws)
          ws.once("open", () => resolve({ status: 101, extensions: ws.extensions }))
          ws.once("unexpected-response", (_, response) => {
            response.resume()
            resolve({ status: response.statusCode ?? 0, extensions: "" })
          })
          ws.once("error", () => {})
        })
      )
    expect(await open("/ws", "https://other.example")).toEqual({ status: 101, extensions: "permessage-deflate" })
    expect(await open("/private", "https://other.example")).toEqual({ status: 403, extensions: "" })
    expect(await open("/private", "https://app.example")).toEqual({ status: 101, extensions: "" })
  })

  it("fails the upgrade with an HttpServerError, before any 101, for a header the handshake owns and for an invalid route setting", async () => {
    const failures: Array<unknown> = []
    const server = await start(Layer.mergeAll(
      socketRoute("/reserved", (socket) => socket.reader, { headers: { "sec-websocket-protocol": "x" }, failures }),
      socketRoute("/invalid", (socket) => socket.reader, { route: { maxMessageSize: 0 }, failures })
    ))
    expect(await refusedWith(`${server.url}/reserved`)).toBe(500)
    expect(await refusedWith(`${server.url}/invalid`)).toBe(500)
    expect(failures).toHaveLength(2)
    const [reserved, invalid] = failures as Array<{ readonly _tag: string; readonly reason: { readonly _tag: string; readonly description: string; readonly cause: unknown } }>
    expect(reserved!._tag).toBe("HttpServerError")
    expect(reserved!.reason._tag).toBe("InternalError")
    expect(reserved!.reason.description).toContain("sec-websocket-protocol")
    expect(invalid!.reason._tag).toBe("InternalError")
    expect(invalid!.reason.cause).toBeInstanceOf(InvalidOption)
    expect((invalid!.reason.cause as InvalidOption).option).toBe("maxMessageSize")
  })
})

describe("the handshake and Effect's HTTP side", () => {
  it("answers a handshake websock refuses (version 12) with exactly one 426, and the route's reader fails", async () => {
    const failures: Array<unknown> = []
    const server = await start(socketRoute("/ws", (socket) => socket.reader, { failures }))
    const client = await RawClient.request(server.port, { path: "/ws", headers: { "Sec-WebSocket-Version": "12" } })
    expect(client.response.status).toBe(426)
    expect(client.response.headers.get("sec-websocket-version")).toBe("13")
    const rest = Buffer.from(await client.expectEnd()).toString("latin1")
    expect(rest).not.toContain("HTTP/1.1")
    client.end()
    await until("the route's reader to fail", () => failures.length === 1)
    expect(Socket.isSocketError(failures[0]) && failures[0].reason._tag).toBe("SocketOpenError")
  })

  it("a reader acquired again dies in the route and writes nothing more on the connection (as ws throws)", async () => {
    const exits: Array<Exit.Exit<unknown, unknown>> = []
    const server = await start(socketRoute("/twice", (socket) =>
      Effect.gen(function*() {
        const { pull } = yield* Effect.scoped(Effect.tap(socket.reader, ({ pull }) => pull))
        exits.push(yield* Effect.exit(Effect.scoped(socket.reader)))
        return pull
      })))
    const client = await RawClient.connect(server.port, { path: "/twice" })
    await client.sendText("first")
    await client.expectClose(1000)
    await until("the second acquisition's exit", () => exits.length === 1)
    expect(Exit.isFailure(exits[0]!) && exits[0].cause.reasons.some((r) => r._tag === "Die")).toBe(true)
  })

  it("reports the upgrade as a 101 to Effect's HTTP logger", async () => {
    const server = await start(echoOn("/ws"), { logger: true })
    const client = await connectWs(`${server.url}/ws`)
    client.ws.close(1000)
    await bounded("the close", client.closed)
    await until("the request's log line", () => server.logs.some((e) => e.annotations["http.url"] === "/ws"))
    const line = server.logs.find((e) => e.annotations["http.url"] === "/ws")!
    expect(line.annotations["http.status"]).toBe(101)
  })

  it("serves upgradeChannel: the route's stream out, the client's messages in, then 1000", async () => {
    const received: Array<string> = []
    const server = await start(HttpRouter.add(
      "GET",
      "/channel",
      Stream.make("hello from the channel").pipe(
        Stream.pipeThroughChannel(HttpServerRequest.upgradeChannel()),
        Stream.decodeText(),
        Stream.take(1),
        Stream.runForEach((text) => Effect.sync(() => received.push(text))),
        Effect.as(HttpServerResponse.empty())
      )
    ))
    const client = await connectWs(`${server.url}/channel`)
    expect(await nextMessage(client, 1)).toEqual(["hello from the channel"])
    client.ws.send("hi")
    expect((await bounded("the close", client.closed)).code).toBe(1000)
    expect(received).toEqual(["hi"])
  })

  it("leaves another Upgrade protocol to Effect's raw upgrade, with upgradeWith's headers", async () => {
    const server = await start(socketRoute("/raw", (socket) =>
      Effect.gen(function*() {
        const { pull } = yield* socket.reader
        const { write } = yield* socket.writer
        for (const chunk of yield* pull) yield* write(chunk)
      }), { headers: { "x-raw": "yes" } }))
    const socket = Net.connect({ port: server.port, host: "127.0.0.1" })
    opened.push(async () => void socket.destroy())
    let received = ""
    socket.on("data", (chunk) => (received += chunk.toString("latin1")))
    socket.write("GET /raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
    await until("the 101", () => received.includes("\r\n\r\n"))
    expect(received).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/)
    expect(received.toLowerCase()).toContain("x-raw: yes")
    expect(received.toLowerCase()).toContain("upgrade: echo")
    const head = received.length
    socket.write("raw bytes")
    await until("the raw echo", () => received.length >= head + "raw bytes".length)
    expect(received.slice(head)).toBe("raw bytes")
  })

  it("lets a route's writes wait while the peer does not read (memory stays near highWaterMark), and go on once it reads", async () => {
    const chunk = new Uint8Array(64 * 1024)
    const total = 256 // 16 MiB
    let started = 0
    let done = 0
    const server = await start(
      socketRoute("/flood", (socket) =>
        Effect.gen(function*() {
          yield* socket.reader
          const { write } = yield* socket.writer
          for (let i = 0; i < total; i++) {
            started++
            yield* write(chunk)
            done++
          }
        }), { route: { highWaterMark: 64 * 1024 } })
    )
    const client = await RawClient.connect(server.port, { path: "/flood" })
    client.socket.pause()
    const serverSide = server.sockets.at(-1)!
    // Either the writes wait for the peer (one pending, the socket's buffer
    // full), or, without backpressure, they all complete at once.
    await until(
      "the route's writes to wait, or to finish",
      () => done === total || (started > done && serverSide.writableLength > 0),
      5_000,
      () => `${done} written, ${serverSide.writableLength} bytes in the socket's buffer`
    )
    expect(done).toBeLessThan(total)
    expect(serverSide.writableLength).toBeLessThanOrEqual(2 * chunk.length + 64)
    client.socket.resume()
    for (let i = 0; i < total; i++) expect((await client.expectBinary(5_000)).length).toBe(chunk.length)
    expect(done).toBe(total)
  }, 20_000)
})

describe("settings", () => {
  it("fails with ServerError (InvalidOption naming the setting) before listening: a bad websock setting, and ws's `websocket` options", async () => {
    let evaluated = 0
    const evaluate = () => {
      evaluated++
      return createServer()
    }
    const failure = async (options: NodeHttpServer.Options) => {
      const exit = await Effect.runPromiseExit(Layer.build(NodeHttpServer.layer(evaluate, options)).pipe(Effect.scoped))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail")?.error : undefined
      expect(error).toBeInstanceOf(ServerError)
      return (error as ServerError).reason as InvalidOption
    }
    expect((await failure({ port: 0, websock: { maxMessageSize: -1 } })).option).toBe("maxMessageSize")
    expect((await failure({ port: 0, websock: { overflow: "never" as never } })).option).toBe("overflow")
    expect((await failure({ port: 0, websocket: { perMessageDeflate: true } } as NodeHttpServer.Options)).option).toBe("websocket")
    expect(evaluated).toBe(0)
  })

  it("layerConfig reads websock's settings from Effect Config: maxMessageSize from config closes a larger message with 1009", async () => {
    const scope = Scope.makeUnsafe()
    opened.push(() => Effect.runPromise(Scope.close(scope, Exit.void)))
    const context = await Effect.runPromise(
      Layer.buildWithScope(
        HttpRouter.serve(echoOn("/ws"), { disableListenLog: true, disableLogger: true }).pipe(
          Layer.provideMerge(NodeHttpServer.layerConfig(createServer, {
            port: Config.Int("PORT"),
            host: Config.succeed("127.0.0.1"),
            websock: { maxMessageSize: Config.Int("MAX_MESSAGE_SIZE"), pingInterval: Config.succeed(0) }
          })),
          Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ PORT: "0", MAX_MESSAGE_SIZE: "16" })))
        ),
        scope
      ).pipe(Logs.capture().provide)
    )
    await expectMaxMessageSize(await connectWs(`ws://127.0.0.1:${portOf(Context.get(context, HttpServer.HttpServer))}/ws`), 16)
  })
})

describe("Effect RPC over websock (RpcServer.layerProtocolWebsocket, RpcClient.layerProtocolSocket)", () => {
  /** The example's group, and two calls that only end when interrupted. */
  const TestRpcs = EchoRpcs.add(
    Rpc.make("Wait"),
    Rpc.make("Ticks", { success: Schema.Number, stream: true })
  )

  const serializations = {
    JSON: RpcSerialization.layerJson,
    NDJSON: RpcSerialization.layerNdjson,
    "JSON-RPC": RpcSerialization.layerJsonRpc(),
    "NDJSON-RPC": RpcSerialization.layerNdJsonRpc(),
    // effect 4.1's binary serialization (MessagePack's place in earlier versions)
    SchemaBinary: RpcSerialization.layerSchemaBinary()
  }

  const sockets = {
    "ws (NodeWS.layerWebSocketConstructor)": (url: string) => Socket.layerWebSocket(url).pipe(Layer.provide(NodeWS.layerWebSocketConstructor)),
    "Node's global WebSocket (NodeSocket.layerWebSocket)": (url: string) => NodeSocket.layerWebSocket(url)
  }

  for (const [serializationName, serialization] of Object.entries(serializations)) {
    for (const [socketName, socket] of Object.entries(sockets)) {
      it(`${serializationName}, client on ${socketName}: a unary call, a stream, an interrupted call and an interrupted stream`, async () => {
        const waitStarted = Deferred.makeUnsafe<void>()
        const waitInterrupted = Deferred.makeUnsafe<void>()
        const ticksEnded = Deferred.makeUnsafe<void>()
        const handlers = TestRpcs.toLayer({
          Echo: ({ text }) => Effect.succeed(text),
          Count: ({ n }) => Stream.range(1, n),
          Wait: () =>
            Deferred.succeed(waitStarted, undefined).pipe(
              Effect.andThen(Effect.never),
              Effect.onInterrupt(() => Deferred.succeed(waitInterrupted, undefined))
            ),
          Ticks: () => Stream.iterate(1, (n) => n + 1).pipe(Stream.ensuring(Deferred.succeed(ticksEnded, undefined)))
        })
        const server = await start(
          RpcServer.layer(TestRpcs).pipe(
            Layer.provide(handlers),
            Layer.provide(RpcServer.layerProtocolWebsocket({ path: "/rpc" })),
            Layer.provide(serialization)
          )
        )
        const result = await Effect.runPromise(
          Effect.gen(function*() {
            const client = yield* RpcClient.make(TestRpcs)
            const echoed = yield* client.Echo({ text: "héllo, websock" })
            const counted = yield* Stream.runCollect(client.Count({ n: 5 }))
            const waiting = yield* Effect.forkChild(client.Wait())
            yield* Deferred.await(waitStarted)
            yield* Fiber.interrupt(waiting)
            yield* Deferred.await(waitInterrupted)
            const ticks = yield* Stream.runCollect(Stream.take(client.Ticks(), 3))
            yield* Deferred.await(ticksEnded)
            return { echoed, counted, ticks }
          }).pipe(
            Effect.scoped,
            Effect.provide(RpcClient.layerProtocolSocket().pipe(Layer.provide(socket(`${server.url}/rpc`)), Layer.provide(serialization))),
            Effect.timeout("5 seconds")
          )
        )
        expect(result).toEqual({ echoed: "héllo, websock", counted: [1, 2, 3, 4, 5], ticks: [1, 2, 3] })
      })
    }
  }
})

describe("what websock relies on of @effect/platform-node 4.1 (an upgrade that changes it fails here)", () => {
  it("Effect's serve adds exactly one upgrade listener, the one websock replaces; websock's serve leaves exactly one", async () => {
    const http = createServer()
    const scope = Scope.makeUnsafe()
    opened.push(() => Effect.runPromise(Scope.close(scope, Exit.void)))
    const server = await Effect.runPromise(Scope.provide(PlatformNodeHttpServer.make(() => http, { port: 0, host: "127.0.0.1" }), scope))
    await Effect.runPromise(Scope.provide(server.serve(Effect.succeed(HttpServerResponse.empty())), scope))
    expect(http.listenerCount("upgrade")).toBe(1)
    const ours = await start(echoOn("/ws"))
    expect(ours.http.listenerCount("upgrade")).toBe(1)
  })

  it("makeUpgradeHandler calls nothing of the server object but handleUpgrade, and Effect's fromWebSocket reads only the ws-like members websock's has (an echo over it, paused at Effect's 64 KiB and resumed)", async () => {
    const used = { wss: new Set<string>(), ws: new Set<string>() }
    /** `target`, with every member read, tested with `in` or set recorded in `keys`. */
    const recording = <T extends object>(target: T, keys: Set<string>): T =>
      new Proxy(target, {
        get: (t, key) => {
          keys.add(String(key))
          const value = Reflect.get(t, key, t)
          return typeof value === "function" ? value.bind(t) : value
        },
        has: (t, key) => {
          keys.add(`in ${String(key)}`)
          return Reflect.has(t, key)
        },
        set: (t, key, value) => {
          keys.add(`set ${String(key)}`)
          return Reflect.set(t, key, value, t)
        }
      })
    const go = Deferred.makeUnsafe<void>()
    const paused = Deferred.makeUnsafe<void>()
    // Effect's own request, not websock's: Effect's fromWebSocket over the ws-like object.
    const app = Effect.gen(function*() {
      const socket = yield* (yield* HttpServerRequest.HttpServerRequest).upgrade
      const { pull } = yield* socket.reader
      const { writeAll } = yield* socket.writer
      yield* Deferred.await(go)
      while (true) yield* writeAll(yield* pull)
    }).pipe(Effect.catchReason("SocketError", "SocketCloseError", () => Effect.void), Effect.as(HttpServerResponse.empty()))
    const http = createServer()
    const scope = Scope.makeUnsafe()
    opened.push(() => Effect.runPromise(Scope.close(scope, Exit.void)))
    await Effect.runPromise(
      Effect.gen(function*() {
        const engine = yield* Engine.make(Settings.resolve({ ...testWebsock, routes: {} }))
        const upgrades = EffectUpgrade.make(engine, testWebsock, NodeHttpServer.CurrentRouteOptions, {})
        const wss = recording({
          handleUpgrade: (request: Http.IncomingMessage, socket: Net.Socket, head: Buffer, callback: (ws: unknown) => void) =>
            upgrades.wss.handleUpgrade(request, socket, head, (ws) => {
              const pause = ws.pause.bind(ws)
              ws.pause = () => {
                pause()
                Deferred.doneUnsafe(paused, Effect.void)
              }
              callback(recording(ws, used.ws))
            })
        }, used.wss)
        const handler = yield* PlatformNodeHttpServer.makeUpgradeHandler(Effect.succeed(wss as never), app, { scope })
        http.on("upgrade", handler)
        yield* Effect.callback<void>((resume) => void http.listen(0, "127.0.0.1", () => resume(Effect.void)))
        yield* Scope.addFinalizer(scope, Effect.sync(() => http.close()))
      }).pipe(Scope.provide(scope), Logs.capture().provide)
    )
    const client = await connectWs(`ws://127.0.0.1:${(http.address() as Net.AddressInfo).port}/ws`)
    const messages = Array.from({ length: 100 }, (_, i) => `${i}:${"x".repeat(4 * 1024)}`)
    for (const message of messages) client.ws.send(message)
    // 400 KiB unread: Effect's reader pauses the ws-like at its 64 KiB.
    await bounded("Effect to pause the ws-like", Effect.runPromise(Deferred.await(paused)))
    Deferred.doneUnsafe(go, Effect.void)
    expect(await nextMessage(client, 100)).toEqual(messages)
    client.ws.close(1000)
    expect((await bounded("the close", client.closed)).code).toBe(1000)
    expect([...used.wss]).toEqual(["handleUpgrade"])
    expect([...used.ws].sort()).toEqual([
      "addEventListener",
      "close",
      "in binaryType",
      "in isPaused",
      "in pause",
      "isPaused",
      "pause",
      "readyState",
      "removeEventListener",
      "resume",
      "send"
    ])
  })
})
