/**
 * WebSockets over HTTP/2 (RFC 8441), against examples/Http2App.ts and test
 * servers of `Http2.attach`, from `node:http2` clients over real TLS: the
 * extended CONNECT handshake and its refusals, frames both ways, closes both
 * ways, stream resets and sessions that go away (1006), permessage-deflate,
 * shutdown (1001 on every stream, then GOAWAY), HTTP/1.1 upgrades on the
 * same port, and 50 WebSockets on one session, one of which never reads.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { Buffer } from "node:buffer"
import * as NodeHttp2 from "node:http2"
import * as Zlib from "node:zlib"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import WebSocketClient from "ws"
import * as App from "../examples/Http2App.ts"
import * as Frame from "../src/Frame.ts"
import * as Http2 from "../src/Http2.ts"
import * as Server from "../src/Server.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { flood } from "./Limits.helpers.ts"
import { connectSession, testCertificate } from "./support/Http2Session.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"
import { until } from "./support/Wait.ts"

const { Text, Binary, Continuation, Ping } = Frame.Opcode
const KiB = 1024

const certificate = testCertificate
const key = (await import("node:fs")).readFileSync(new URL("fixtures/localhost.key", import.meta.url))

let app: App.Running
let appScope: Scope.Closeable

beforeAll(async () => {
  appScope = Scope.makeUnsafe()
  app = await Effect.runPromise(Scope.provide(App.make({ port: 0, host: "127.0.0.1", cert: certificate, key }), appScope))
})
afterEach(() => RawClient.destroyAll())
afterAll(async () => {
  await Effect.runPromise(Scope.close(appScope, Exit.void))
})

const h2 = (options: Parameters<typeof RawClient.connect>[1] = {}) => RawClient.connect(app.port, { transport: "h2", ...options })

const closeNormally = async (c: RawClient): Promise<void> => {
  await c.sendClose(1000)
  expect((await c.expectClose(1000)).code).toBe(1000)
}

describe("the extended CONNECT handshake (RFC 8441 §4-5)", () => {
  it("the server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL", async () => {
    const session = await connectSession(app.port)
    expect(session.remoteSettings.enableConnectProtocol).toBe(true)
    session.close()
  })

  it("is answered :status 200, without Sec-WebSocket-Accept, Upgrade or Connection", async () => {
    const c = await h2()
    expect(c.response.status).toBe(200)
    expect(c.response.headers.has("sec-websocket-accept")).toBe(false)
    expect(c.response.headers.has("upgrade")).toBe(false)
    expect(c.response.headers.has("connection")).toBe(false)
    await closeNormally(c)
  })

  it("the route sees the request as HTTP/2 (httpVersion \"2\", :authority as Host, :path as target)", async () => {
    const seen: Array<WebSocket.Request> = []
    const server = await TestServer.startHttp2({
      routes: { "/rooms/:id": (ws) => Effect.sync(() => void seen.push(ws.request)) }
    })
    try {
      const c = await RawClient.connect(server.port, { transport: "h2", path: "/rooms/42?name=ada", headers: { cookie: "a=1" } })
      await c.expectClose(1000)
      expect(seen).toHaveLength(1)
      const request = seen[0]!
      expect(request.httpVersion).toBe("2")
      expect(request.method).toBe("CONNECT")
      expect(request.target).toBe("/rooms/42?name=ada")
      expect(request.params).toEqual({ id: "42" })
      expect(request.query.get("name")).toBe("ada")
      expect(request.headers.get("host")).toBe(`localhost:${server.port}`)
      expect(request.cookies.get("a")).toBe("1")
      expect(request.remoteAddress).toBe("127.0.0.1")
      expect(request.headers.has(":protocol")).toBe(false)
    } finally {
      await server.close()
    }
  })

  it("negotiates a subprotocol as over HTTP/1.1", async () => {
    const server = await TestServer.startHttp2({
      routes: { "/ws": Server.route({ protocol: (offered) => offered.find((p) => p === "two"), handler: TestServer.echo }) }
    })
    try {
      const c = await RawClient.connect(server.port, { transport: "h2", headers: { "sec-websocket-protocol": "one, two" } })
      expect(c.response.headers.get("sec-websocket-protocol")).toBe("two")
      await closeNormally(c)
    } finally {
      await server.close()
    }
  })

  it.each([
    ["an unknown path", { path: "/nowhere" }, 404],
    ["a missing Sec-WebSocket-Version", { headers: { "sec-websocket-version": undefined } }, 400],
    ["a bad Sec-WebSocket-Extensions", { headers: { "sec-websocket-extensions": "permessage-deflate; x=\"" } }, 400],
    ["a bad Sec-WebSocket-Protocol", { headers: { "sec-websocket-protocol": "a b" } }, 400]
  ] as const)("refuses %s with its status on the stream", async (_what, options, status) => {
    const c = await RawClient.request(app.port, { transport: "h2", ...options })
    expect(c.response.status).toBe(status)
    expect(c.upgraded).toBe(false)
    await c.expectEnd()
  })

  it("refuses another Sec-WebSocket-Version with 426 naming 13, and no Upgrade header (RFC 9113 §8.2.2)", async () => {
    const c = await RawClient.request(app.port, { transport: "h2", headers: { "sec-websocket-version": "8" } })
    expect(c.response.status).toBe(426)
    expect(c.response.headers.get("sec-websocket-version")).toBe("13")
    expect(c.response.headers.has("upgrade")).toBe(false)
    expect(Buffer.from(await c.expectEnd()).toString()).toBe("unsupported Sec-WebSocket-Version\n")
  })

  it("a plain CONNECT (no :protocol) is not websock's: Node's 405 stands", async () => {
    const session = await connectSession(app.port)
    const stream = session.request({ ":method": "CONNECT", ":authority": `localhost:${app.port}` })
    const headers = await new Promise<NodeHttp2.IncomingHttpHeaders>((resolve) => stream.once("response", resolve))
    expect(headers[":status"]).toBe(405)
    stream.close()
    session.close()
  })

  it("answers the route's own refusal, and 403 for an Origin not allowed", async () => {
    const server = await TestServer.startHttp2({
      routes: {
        "/private": Server.route({
          upgrade: (request) =>
            request.headers.get("authorization") === "Bearer ok"
              ? Effect.succeed("ok")
              : Server.reject(401, { headers: [["WWW-Authenticate", "Bearer"]], body: "token required" }),
          handler: (ws) => TestServer.echo(ws)
        }),
        "/ws": Server.route({ origins: ["https://good.example"], handler: (ws) => TestServer.echo(ws) })
      }
    })
    try {
      const c = await RawClient.request(server.port, { transport: "h2", path: "/private" })
      expect(c.response.status).toBe(401)
      expect(c.response.headers.get("www-authenticate")).toBe("Bearer")
      expect(Buffer.from(await c.expectEnd()).toString()).toBe("token required\n")
      const d = await RawClient.request(server.port, { transport: "h2", headers: { origin: "https://evil.example" } })
      expect(d.response.status).toBe(403)
      const e = await RawClient.connect(server.port, { transport: "h2", headers: { origin: "https://good.example" } })
      await closeNormally(e)
    } finally {
      await server.close()
    }
  })
})

describe("the route over a stream", () => {
  it("its response headers go on the 200 (repeats kept, connection-specific ones dropped: RFC 9113 §8.2.2)", async () => {
    const server = await TestServer.startHttp2({
      routes: {
        "/ws": Server.route({
          headers: () => [["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"], ["Connection", "close"], ["X-Bad", "a\r\nb"], ["X-Ok", "yes"]],
          handler: (ws) => TestServer.echo(ws)
        })
      }
    })
    try {
      const c = await RawClient.connect(server.port, { transport: "h2" })
      expect(c.response.headers.get("set-cookie")).toBe("a=1, b=2")
      expect(c.response.headers.get("x-ok")).toBe("yes")
      expect(c.response.headers.has("connection")).toBe(false)
      expect(c.response.headers.has("x-bad")).toBe(false)
      await closeNormally(c)
    } finally {
      await server.close()
    }
  })

  it("an upgrade decision runs first; frames sent before the 200 are held for the connection", async () => {
    const server = await TestServer.startHttp2({
      routes: {
        "/ws": Server.route({
          upgrade: (request) => Effect.andThen(Effect.yieldNow, Effect.succeed(request.query.get("user") ?? "anonymous")),
          handler: (ws, user) => Effect.andThen(ws.send(`hello ${user}`), TestServer.echo(ws))
        })
      }
    })
    try {
      const [header, payload] = Frame.encode(Text, Buffer.from("sent with the CONNECT"), { mask: Uint8Array.of(1, 2, 3, 4) })
      const first = Buffer.concat([header, payload])
      const c = await RawClient.connect(server.port, { transport: "h2", path: "/ws?user=ada", extra: first })
      expect(await c.expectText()).toBe("hello ada")
      expect(await c.expectText()).toBe("sent with the CONNECT")
      await closeNormally(c)
    } finally {
      await server.close()
    }
  })

  it("beyond maxConnections a stream is answered 503, and its session goes on", async () => {
    const server = await TestServer.startHttp2({ maxConnections: 1 })
    try {
      const session = await connectSession(server.port)
      const a = await RawClient.connect(server.port, { transport: "h2", session })
      const b = await RawClient.request(server.port, { transport: "h2", session })
      expect(b.response.status).toBe(503)
      await a.sendText("still one")
      expect(await a.expectText()).toBe("still one")
      await closeNormally(a)
      session.close()
    } finally {
      await server.close()
    }
  })
})

describe("frames over the stream", () => {
  it("echoes text, binary and fragmented messages, answers Pings", async () => {
    const c = await h2()
    await c.sendText("Hello, κόσμε")
    expect(await c.expectText()).toBe("Hello, κόσμε")
    const data = Uint8Array.from({ length: 70_000 }, (_, i) => i & 0xff)
    await c.sendBinary(data)
    expect(await c.expectBinary()).toEqual(data)
    await c.write(Buffer.concat([c.frame(Text, "frag", { fin: false }), c.frame(Continuation, "ment", { fin: false }), c.frame(Continuation, "ed")]))
    expect(await c.expectText()).toBe("fragmented")
    await c.sendFrame(Ping, "are you there")
    expect(Buffer.from(await c.expectPong()).toString()).toBe("are you there")
    await closeNormally(c)
  })

  it("a protocol violation is 1002, and the stream ends cleanly", async () => {
    const c = await h2()
    await c.sendFrame(Binary, "x", { rsv2: true })
    await c.expectClose(1002)
  })

  it("negotiates permessage-deflate and echoes compressed messages (RFC 7692)", async () => {
    const c = await h2({ allowRsv1: true, headers: { "sec-websocket-extensions": "permessage-deflate; client_no_context_takeover" } })
    expect(c.response.headers.get("sec-websocket-extensions")).toMatch(/^permessage-deflate/)
    const message = "websock over HTTP/2 ".repeat(500)
    const deflated = Zlib.deflateRawSync(Buffer.from(message), { finishFlush: Zlib.constants.Z_SYNC_FLUSH })
    // RFC 7692 §7.2.1: the trailing 0x00 0x00 0xff 0xff is removed.
    expect([...deflated.subarray(-4)]).toEqual([0, 0, 0xff, 0xff])
    await c.sendFrame(Text, deflated.subarray(0, deflated.length - 4), { rsv1: true })
    const frame = await c.nextFrame()
    expect(frame.rsv1).toBe(true)
    expect(frame.opcode).toBe(Text)
    expect(frame.payload.length).toBeLessThan(message.length / 10)
    const inflated = Zlib.inflateRawSync(Buffer.concat([frame.payload, Uint8Array.of(0, 0, 0xff, 0xff)]), {
      finishFlush: Zlib.constants.Z_SYNC_FLUSH
    })
    expect(inflated.toString()).toBe(message)
    await closeNormally(c)
  })
})

describe("the stream's end", () => {
  /** A server whose route records how each connection ended. */
  const recording = async () => {
    const outcomes: Array<WebSocket.CloseOutcome> = []
    const server = await TestServer.startHttp2({
      routes: {
        "/ws": (ws) =>
          TestServer.echo(ws).pipe(
            Effect.ensuring(Effect.andThen(ws.closed, (outcome) => Effect.sync(() => void outcomes.push(outcome))))
          )
      }
    })
    return { server, outcomes }
  }

  it("a client that resets its stream is a 1006; its siblings on the session go on", async () => {
    const { server, outcomes } = await recording()
    try {
      const session = await connectSession(server.port)
      const a = await RawClient.connect(server.port, { transport: "h2", session })
      const b = await RawClient.connect(server.port, { transport: "h2", session })
      await a.sendText("one")
      expect(await a.expectText()).toBe("one")
      a.stream.close(NodeHttp2.constants.NGHTTP2_CANCEL)
      await until("the server to see the reset", () => outcomes.length === 1)
      expect(outcomes[0]!.code).toBe(1006)
      expect(outcomes[0]!.clean).toBe(false)
      await b.sendText("still here")
      expect(await b.expectText()).toBe("still here")
      await closeNormally(b)
      await until("the second outcome", () => outcomes.length === 2)
      expect(outcomes[1]!.code).toBe(1000)
      session.close()
    } finally {
      await server.close()
    }
  })

  it("a session that goes away is a 1006 on each of its streams", async () => {
    const { server, outcomes } = await recording()
    try {
      const session = await connectSession(server.port)
      const clients = await Promise.all([0, 1, 2].map(() => RawClient.connect(server.port, { transport: "h2", session })))
      await clients[0]!.sendText("x")
      expect(await clients[0]!.expectText()).toBe("x")
      session.destroy()
      await until("three outcomes", () => outcomes.length === 3)
      expect(outcomes.map((o) => o.code)).toEqual([1006, 1006, 1006])
      await until("the server to count them out", () => Effect.runSync(server.upgrader.connections) === 0)
    } finally {
      await server.close()
    }
  })

  it("a shutdown answers a stream still waiting for its upgrade decision with 503", async () => {
    const server = await TestServer.startHttp2({
      routes: { "/ws": Server.route({ upgrade: (): Effect.Effect<string> => Effect.never, handler: (ws) => TestServer.echo(ws) }) }
    })
    const pending = RawClient.request(server.port, { transport: "h2" })
    await until("the stream to be counted in", () => Effect.runSync(server.upgrader.connections) === 1)
    const closing = server.close()
    const c = await pending
    expect(c.response.status).toBe(503)
    expect(Buffer.from(await c.expectEnd()).toString()).toBe("server shutting down\n")
    await closing
  })

  it("a shutdown sends 1001 on every stream, then GOAWAY on the session", async () => {
    const server = NodeHttp2.createSecureServer({ cert: certificate, key })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const port = (server.address() as { readonly port: number }).port
    const scope = Scope.makeUnsafe()
    await Effect.runPromise(Scope.provide(Http2.attach(server, { closeTimeout: 1000, routes: { "/ws": TestServer.echo } }), scope))
    const session = await connectSession(port)
    const events: Array<string> = []
    session.on("goaway", (code) => events.push(`goaway ${code}`))
    const clients = await Promise.all([0, 1, 2].map(() => RawClient.connect(port, { transport: "h2", session })))
    const closing = Effect.runPromise(Scope.close(scope, Exit.void))
    for (const c of clients) {
      expect((await c.expectClose(1001)).code).toBe(1001)
      events.push("closed")
    }
    await closing
    await until("the GOAWAY", () => events.length === 4)
    expect(events).toEqual(["closed", "closed", "closed", `goaway ${NodeHttp2.constants.NGHTTP2_NO_ERROR}`])
    // The session, idle now, closes (GOAWAY is graceful) and the server with it.
    await until("the session to close", () => session.closed || session.destroyed)
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
})

describe("HTTP/1.1 on the same port (allowHTTP1)", () => {
  it("an HTTP/1.1 upgrade over TLS reaches the same route, seen as httpVersion 1.1", async () => {
    const before = app.opened["1.1"] ?? 0
    const ws = new WebSocketClient(`wss://localhost:${app.port}/ws`, { ca: certificate })
    const echoed = await new Promise<string>((resolve, reject) => {
      ws.once("error", reject)
      ws.once("open", () => ws.send("over HTTP/1.1"))
      ws.once("message", (data) => resolve(String(data)))
    })
    expect(echoed).toBe("over HTTP/1.1")
    expect(app.opened["1.1"]).toBe(before + 1)
    const code = await new Promise<number>((resolve) => {
      ws.once("close", resolve)
      ws.close(1000)
    })
    expect(code).toBe(1000)
  })

  it("the page and /stats are served over HTTP/2 by the user's handler", async () => {
    const session = await connectSession(app.port)
    const get = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve) => {
        const stream = session.request({ ":path": path })
        let body = ""
        let status = 0
        stream.on("response", (headers) => void (status = Number(headers[":status"])))
        stream.setEncoding("utf8")
        stream.on("data", (chunk: string) => void (body += chunk))
        stream.on("end", () => resolve({ status, body }))
      })
    const page = await get("/")
    expect(page.status).toBe(200)
    expect(page.body).toContain("new WebSocket(\"wss://\" + location.host + \"/ws\")")
    const stats = await get("/stats")
    expect(JSON.parse(stats.body)).toHaveProperty("2")
    session.close()
  })
})

describe("50 WebSockets multiplexed on one session", () => {
  it("one that never reads stalls only itself (per-stream flow control), with the server's buffers bounded", async () => {
    const maxBufferedAmount = 256 * KiB
    const serverStreams = new Map<number, NodeHttp2.ServerHttp2Stream>()
    const server = await TestServer.startHttp2({
      maxMessageSize: 1024 * KiB,
      maxBufferedAmount,
      highWaterMark: 64 * KiB,
      routes: { "/ws": (ws: WebSocket.WebSocketConnection) => ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch))) }
    })
    server.server.on("stream", (stream) => serverStreams.set(stream.id ?? -1, stream))
    try {
      const session = await connectSession(server.port)
      const stalled = await RawClient.connect(server.port, { transport: "h2", session })
      const others = await Promise.all(Array.from({ length: 49 }, () => RawClient.connect(server.port, { transport: "h2", session })))
      // The stalled client reads nothing: its stream's window closes, and the server stops sending on it.
      stalled.stream.pause()
      const ours = serverStreams.get(stalled.stream.id ?? -1)!
      let peak = 0 // the most the server held for the stalled stream, in and out
      const sample = () => void (peak = Math.max(peak, ours.writableLength + ours.readableLength))
      const chunk = stalled.frame(Binary, new Uint8Array(64 * KiB).fill(0x5a))
      const written = await flood(stalled.stream, () => chunk, { backlog: 2 * 1024 * KiB, sample })
      // Its siblings go on echoing.
      await Promise.all(others.map(async (c, i) => {
        for (let m = 0; m < 10; m++) await c.sendText(`stream ${i} message ${m}`)
        for (let m = 0; m < 10; m++) expect(await c.expectText()).toBe(`stream ${i} message ${m}`)
      }))
      sample()
      expect(written).toBeGreaterThan(4 * maxBufferedAmount)
      // What the server holds for it is its outbound limit plus what one read and the stream's buffers can hold.
      expect(peak).toBeLessThan(maxBufferedAmount + 1024 * KiB)
      await Promise.all(others.map(closeNormally))
      session.destroy()
    } finally {
      await server.close()
    }
  })
})

describe("Http2.attach", () => {
  it("fails on a bad `unmatched` option, naming it", async () => {
    const server = NodeHttp2.createSecureServer({ cert: certificate, key })
    const exit = await Effect.runPromiseExit(Effect.scoped(Http2.attach(server, { routes: {}, unmatched: "drop" as "ignore" })))
    expect(Exit.isFailure(exit)).toBe(true)
    expect(String(exit)).toContain("unmatched")
  })

  it("with unmatched: \"ignore\", a WebSocket CONNECT for another path is left to the server's own stream listener", async () => {
    const server = NodeHttp2.createSecureServer({ cert: certificate, key })
    server.on("stream", (stream, headers) => {
      if (headers[":path"] === "/elsewhere") stream.respond({ ":status": 418 }, { endStream: true })
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const port = (server.address() as { readonly port: number }).port
    const scope = Scope.makeUnsafe()
    try {
      await Effect.runPromise(Scope.provide(Http2.attach(server, { unmatched: "ignore", routes: { "/ws": TestServer.echo } }), scope))
      const elsewhere = await RawClient.request(port, { transport: "h2", path: "/elsewhere" })
      expect(elsewhere.response.status).toBe(418)
      const ours = await RawClient.connect(port, { transport: "h2" })
      await closeNormally(ours)
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })

  it("counts a stream's upgrade under the status it got: 200 (RFC 8441 §5), or the error", async () => {
    const server = NodeHttp2.createSecureServer({ cert: certificate, key })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const port = (server.address() as { readonly port: number }).port
    const registry: Metric.MetricRegistry = new Map()
    const scope = Scope.makeUnsafe()
    try {
      await Effect.runPromise(Http2.attach(server, { routes: { "/ws": TestServer.echo } }).pipe(
        Scope.provide(scope),
        Effect.provideService(Metric.MetricRegistry, registry),
        Effect.provideService(References.MinimumLogLevel, "None")
      ))
      const c = await RawClient.connect(port, { transport: "h2" })
      const d = await RawClient.request(port, { transport: "h2", path: "/nowhere" })
      expect(d.response.status).toBe(404)
      const upgrades = (status: string) =>
        Metric.snapshotUnsafe(Context.make(Metric.MetricRegistry, registry))
          .filter((m) => m.id === "websock.upgrades" && (m.attributes as Record<string, string> | undefined)?.["http.response.status_code"] === status)
          .reduce((sum, m) => sum + Number((m.state as { count?: number }).count ?? 0), 0)
      expect([upgrades("200"), upgrades("404"), upgrades("101")]).toEqual([1, 1, 0])
      await closeNormally(c)
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })

  it("the pure checks: fromHeaders and validateConnect", () => {
    const request = Http2.fromHeaders({ ":method": "CONNECT", ":protocol": "websocket", ":scheme": "https", ":path": "/ws", ":authority": "a:1", "sec-websocket-version": "13" })
    expect(typeof request).toBe("object")
    if (typeof request === "string") return
    expect(request.headers.get("host")).toBe("a:1")
    expect(Http2.validateConnect(request)._tag).toBe("Accept")
    expect(Http2.fromHeaders({ ":method": "CONNECT", ":protocol": "websocket", ":path": "/ws", ":authority": "a" })).toBe("missing :scheme")
    expect(Http2.fromHeaders({ ":method": "CONNECT", ":protocol": "websocket", ":scheme": "https", ":authority": "a" })).toBe("missing :path")
    expect(Http2.fromHeaders({ ":method": "CONNECT", ":protocol": "websocket", ":scheme": "https", ":path": "/" })).toBe("missing :authority")
    expect(Http2.isWebSocketConnect({ ":method": "CONNECT", ":protocol": "websocket" })).toBe(true)
    expect(Http2.isWebSocketConnect({ ":method": "CONNECT" })).toBe(false)
  })
})
