/**
 * WebSockets on the port of the user's own `node:http` / `node:https`
 * server (`Upgrade.attach`), and the routes' upgrade decisions (typed
 * acceptance, rejections with status, headers and body, the deadline, a
 * defect, the Origin allow-list), over real sockets: the `ws` client, Node's
 * built-in `WebSocket`, and raw TCP where bytes matter.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as ChildProcess from "node:child_process"
import { once } from "node:events"
import { readFileSync } from "node:fs"
import * as Http from "node:http"
import * as Https from "node:https"
import type { AddressInfo } from "node:net"
import type { Duplex } from "node:stream"
import { afterEach, describe, expect, it } from "vitest"
import { WebSocket as WsClient } from "ws"
import { ServerError } from "../src/Errors.ts"
import * as Frame from "../src/Frame.ts"
import * as Server from "../src/Server.ts"
import * as Upgrade from "../src/Upgrade.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { text } from "./support/Bytes.ts"
import * as Logs from "./support/Logs.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"
import { until, within } from "./support/Wait.ts"

/** `within` with this file's bound, what first. */
const bounded = <A>(what: string, promise: Promise<A>): Promise<A> => within(promise, 3_000, what)

const { host: _host, port: _port, ...settings } = TestServer.testDefaults
const tls = {
  key: readFileSync(new URL("fixtures/localhost.key", import.meta.url)),
  cert: readFileSync(new URL("fixtures/localhost.crt", import.meta.url))
}

interface Started {
  readonly port: number
  readonly http: Http.Server | Https.Server
  readonly upgrader: Upgrade.Upgrader
  readonly logs: ReadonlyArray<Logs.Entry>
  /** Closes websock's scope (detach, 1001, wait); the HTTP server stays open. */
  readonly detach: () => Promise<void>
}

const opened: Array<() => Promise<void>> = []
const clients: Array<WsClient> = []
afterEach(async () => {
  // Clients first: the HTTP server's close waits for every socket it accepted, upgraded ones included.
  RawClient.destroyAll()
  for (const client of clients.splice(0)) client.terminate()
  for (const close of opened.splice(0).reverse()) await close()
})

/** A user's HTTP(S) server with `GET /health`, and websock attached to it. */
const start = async <const Routes extends Readonly<Record<string, Server.RouteInput>>>(
  options: Upgrade.Options<Routes> & { readonly unmatched?: "reject" | "ignore" },
  secure = false
): Promise<Started> => {
  const handler = (req: Http.IncomingMessage, res: Http.ServerResponse) => {
    res.statusCode = req.url === "/health" ? 200 : 404
    res.end(req.url === "/health" ? "ok" : "not found")
  }
  const http = secure ? Https.createServer(tls, handler) : Http.createServer(handler)
  http.listen(0, "127.0.0.1")
  await once(http, "listening")
  opened.push(async () => {
    http.closeAllConnections()
    await new Promise<void>((resolve) => http.close(() => resolve()))
  })
  const logs = Logs.capture()
  const scope = Scope.makeUnsafe()
  const upgrader = await Effect.runPromise(
    Upgrade.attach(http, { ...settings, ...options } as typeof options).pipe(Scope.provide(scope), logs.provide) as Effect.Effect<
      Upgrade.Upgrader,
      ServerError
    >
  )
  let closing: Promise<void> | undefined = undefined
  const detach = () => (closing ??= Effect.runPromise(Scope.close(scope, Exit.void)))
  opened.push(detach)
  return { port: (http.address() as AddressInfo).port, http, upgrader, logs: logs.entries, detach }
}

const echo = TestServer.echo

const health = async (port: number, secure = false, path = "/health"): Promise<{ status: number; body: string }> => {
  const response = await new Promise<Http.IncomingMessage>((resolve, reject) => {
    const request = (secure ? Https : Http).get({ host: "127.0.0.1", port, path, ca: tls.cert, agent: false }, resolve)
    request.on("error", reject)
  })
  let body = ""
  for await (const chunk of response) body += String(chunk)
  return { status: response.statusCode ?? 0, body }
}

/** The messages each `ws` client received, from its first (which may come with the 101). */
const received = new WeakMap<WsClient, Array<string>>()

/** Opens a `ws` client; resolves on open or with the unexpected response. */
const connectWs = (url: string, protocols: Array<string> = [], options: ConstructorParameters<typeof WsClient>[2] = {}) =>
  bounded(
    `the ws client's handshake with ${url}`,
    new Promise<{ ws: WsClient; response: Http.IncomingMessage }>((resolve, reject) => {
      const ws = new WsClient(url, protocols, options)
      clients.push(ws)
      const inbox: Array<string> = []
      received.set(ws, inbox)
      ws.on("message", (data) => inbox.push(String(data)))
      ws.once("upgrade", (response) => ws.once("open", () => resolve({ ws, response })))
      ws.once("unexpected-response", (_, response) => reject(new Error(`unexpected ${response.statusCode}`)))
      ws.once("error", reject)
    })
  )

const nextMessage = async (ws: WsClient): Promise<string> => {
  const inbox = received.get(ws)!
  await until("a message", () => inbox.length > 0)
  return inbox.shift()!
}

const closeWs = async (ws: WsClient): Promise<{ code: number; reason: string }> => {
  const closed = once(ws, "close")
  ws.close(1000, "done")
  const [code, reason] = await bounded("the close", closed)
  return { code: code as number, reason: String(reason) }
}

describe("one port: the user's HTTP server and websock", () => {
  it("GET /health is served by the HTTP server; /ws echoes with the ws client and Node's WebSocket", async () => {
    const { port } = await start({ routes: { "/ws": echo } })
    expect(await health(port)).toEqual({ status: 200, body: "ok" })
    const { ws } = await connectWs(`ws://127.0.0.1:${port}/ws`)
    ws.send("over ws")
    expect(await nextMessage(ws)).toBe("over ws")
    expect((await closeWs(ws)).code).toBe(1000)
    const native = new globalThis.WebSocket(`ws://127.0.0.1:${port}/ws`)
    await bounded("native open", once(native, "open"))
    native.send("over WebSocket")
    const [event] = await bounded("native message", once(native, "message"))
    expect((event as MessageEvent).data).toBe("over WebSocket")
    const closed = once(native, "close")
    native.close(1000)
    const [close] = await bounded("native close", closed)
    expect((close as CloseEvent).code).toBe(1000)
    expect((close as CloseEvent).wasClean).toBe(true)
    expect(await health(port)).toEqual({ status: 200, body: "ok" })
  })

  it("a frame sent in the same packet as the request (Node's `head`) is the connection's first message", async () => {
    const { port } = await start({ routes: { "/ws": echo } })
    const [header, payload] = Frame.encode(Frame.Opcode.Text, text("early bird"), { mask: Uint8Array.of(1, 2, 3, 4) })
    const c = await RawClient.connect(port, { extra: Buffer.concat([header, payload]) })
    expect(await c.expectText()).toBe("early bird")
    await c.sendClose(1000)
    await c.expectClose(1000)
  })

  it("an unrouted path: 404 by default; with unmatched \"ignore\", left to the user's own upgrade listener", async () => {
    const rejecting = await start({ routes: { "/ws": echo } })
    const c = await RawClient.request(rejecting.port, { path: "/elsewhere" })
    expect(c.response.status).toBe(404)
    await c.expectEnd()
    const ignoring = await start({ routes: { "/ws": echo }, unmatched: "ignore" })
    const seen: Array<string> = []
    const own = (request: Http.IncomingMessage, socket: Duplex) => {
      seen.push(request.url ?? "")
      if (request.url !== "/ws") socket.end("HTTP/1.1 418 I'm a teapot\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    }
    ignoring.http.on("upgrade", own)
    const teapot = await RawClient.request(ignoring.port, { path: "/elsewhere" })
    expect(teapot.response.status).toBe(418)
    // websock still serves its own path (the user's listener sees it too and leaves it alone).
    const { ws } = await connectWs(`ws://127.0.0.1:${ignoring.port}/ws`)
    ws.send("still here")
    expect(await nextMessage(ws)).toBe("still here")
    await closeWs(ws)
    expect(seen).toEqual(["/elsewhere", "/ws"])
  })

  it("the route's subprotocol and Set-Cookie reach the client", async () => {
    const { port } = await start({
      routes: {
        "/chat": {
          handler: echo,
          protocol: (offered) => offered.includes("chat.v2") ? "chat.v2" : undefined,
          headers: () => [["Set-Cookie", "session=abc; HttpOnly"]]
        }
      }
    })
    const { ws, response } = await connectWs(`ws://127.0.0.1:${port}/chat`, ["chat.v1", "chat.v2"])
    expect(ws.protocol).toBe("chat.v2")
    expect(response.headers["set-cookie"]).toEqual(["session=abc; HttpOnly"])
    await closeWs(ws)
  })

  it("the HTTP request is held to the handshake's rules: a POST gets 405, version 8 gets 426, a duplicate Host 400", async () => {
    const { port } = await start({ routes: { "/ws": echo } })
    const post = await RawClient.request(port, { method: "POST" })
    expect(post.response.status).toBe(405)
    const old = await RawClient.request(port, { headers: { "Sec-WebSocket-Version": "8" } })
    expect(old.response.status).toBe(426)
    expect(old.response.headers.get("sec-websocket-version")).toBe("13")
    const twoHosts = await RawClient.request(port, {
      request: `GET /ws HTTP/1.1\r\nHost: a\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`
    })
    // Node's parser may refuse it itself (400 too); either way it is not upgraded.
    expect(twoHosts.response.status).toBe(400)
  })

  it("closing websock's scope: 1001 to every connection, the listener removed, the HTTP server still serving", async () => {
    const started = await start({ routes: { "/ws": echo } })
    const listeners = started.http.listenerCount("upgrade")
    const clients = await Promise.all([RawClient.connect(started.port), RawClient.connect(started.port)])
    await until("two connections", () => Effect.runSync(started.upgrader.connections) === 2)
    const detached = started.detach()
    for (const c of clients) await c.expectClose(1001)
    await bounded("the detach", detached)
    expect(started.http.listenerCount("upgrade")).toBe(listeners - 1)
    expect(started.http.listening).toBe(true)
    expect(await health(started.port)).toEqual({ status: 200, body: "ok" })
  })
})

describe("one answer per socket, every socket counted out", () => {
  it("an unrouted path with another upgrade listener present is left to it (no 404 of ours mixed in)", async () => {
    const started = await start({ routes: { "/ws": echo } })
    started.http.on("upgrade", (request: Http.IncomingMessage, socket: Duplex) => {
      if (request.url === "/theirs") socket.end("HTTP/1.1 418 I'm a teapot\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    })
    const c = await RawClient.request(started.port, { path: "/theirs" })
    expect(c.response.status).toBe(418)
    expect(Buffer.from(await c.expectEnd()).length).toBe(0)
  })

  it("Upgrade.make from the user's own async listener: a socket gone meanwhile is not counted; a second call for one socket is ignored", async () => {
    const http = Http.createServer()
    http.listen(0, "127.0.0.1")
    await once(http, "listening")
    const scope = Scope.makeUnsafe()
    opened.push(async () => {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      http.closeAllConnections()
      await new Promise<void>((resolve) => http.close(() => resolve()))
    })
    const upgrader = await Effect.runPromise(
      Upgrade.make({ ...settings, routes: { "/ws": echo } }).pipe(Scope.provide(scope)) as Effect.Effect<Upgrade.Upgrader, ServerError>
    )
    const gone: Array<Promise<unknown>> = []
    http.on("upgrade", async (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
      if (request.url === "/ws?late") {
        // An authentication that takes a while, during which the socket is gone.
        const closed = once(socket, "close")
        socket.destroy()
        gone.push(closed.then(() => upgrader.handleUpgrade(request, socket, head)))
        return
      }
      upgrader.handleUpgrade(request, socket, head)
      upgrader.handleUpgrade(request, socket, head)
    })
    const port = (http.address() as AddressInfo).port
    expect(await RawClient.request(port, { path: "/ws?late" }).catch(() => "gone")).toBe("gone")
    await until("the late request received", () => gone.length === 1)
    await bounded("the late handleUpgrade", gone[0]!)
    expect(Effect.runSync(upgrader.connections)).toBe(0)
    const c = await RawClient.connect(port)
    await c.sendText("one answer")
    expect(await c.expectText()).toBe("one answer")
    expect(Effect.runSync(upgrader.connections)).toBe(1)
    await c.sendClose(1000)
    await c.expectClose(1000)
    await until("counted out", () => Effect.runSync(upgrader.connections) === 0)
  })

  it("a shutdown past shutdownTimeout ends a connection still closing after its handler returned", async () => {
    const started = await start({ closeTimeout: 60_000, shutdownTimeout: 100, routes: { "/ws": (ws) => ws.send("bye") } })
    const c = await RawClient.connect(started.port)
    expect(await c.expectText()).toBe("bye")
    // The handler returned: our Close 1000 is out; this client never answers it.
    expect(Frame.parseClose((await c.expectFrame(Frame.Opcode.Close)).payload)).toMatchObject({ code: 1000 })
    expect(Effect.runSync(started.upgrader.connections)).toBe(1)
    await bounded("the detach", started.detach())
    // Ended by the shutdown, not by closeTimeout (a minute).
    await until("counted out", () => Effect.runSync(started.upgrader.connections) === 0)
    await c.expectEnd()
  })
})

describe("the route's upgrade decision", () => {
  const privateRoute = Server.route({
    upgrade: (request) =>
      request.headers.get("authorization") === "Bearer demo-token"
        ? Effect.succeed({
          user: "demo",
          room: request.query.get("room") ?? "lobby",
          theme: request.cookies.get("theme") ?? "none",
          from: request.remoteAddress ?? "?"
        })
        : Server.reject(401, { headers: [["WWW-Authenticate", "Bearer realm=\"demo\""]], body: "token required" }),
    handler: (ws, accepted) => ws.send(`hello ${accepted.user} in ${accepted.room}, theme ${accepted.theme}, from ${accepted.from}`),
    protocol: (offered, _request, accepted) => offered.find((p) => p === `${accepted.user}.v1`),
    headers: (_request, accepted) => [["X-User", accepted.user]]
  })

  it("accepts with a typed value: the handler, the protocol and the 101 headers see it (headers, query, cookies, remote address)", async () => {
    const { port } = await start({ routes: { "/private": privateRoute } })
    const { ws, response } = await connectWs(`ws://127.0.0.1:${port}/private?room=42`, ["other", "demo.v1"], {
      headers: { Authorization: "Bearer demo-token", Cookie: "a=1; theme=dark" }
    })
    expect(ws.protocol).toBe("demo.v1")
    expect(response.headers["x-user"]).toBe("demo")
    expect(await nextMessage(ws)).toBe("hello demo in 42, theme dark, from 127.0.0.1")
    await bounded("the close", once(ws, "close"))
  })

  it.each([
    ["401 with WWW-Authenticate", Server.reject(401, { headers: [["WWW-Authenticate", "Bearer"]], body: "token required" }), 401, ["www-authenticate", "Bearer"], "token required"],
    ["403", Server.reject(403), 403, undefined, "Forbidden"],
    ["429 with Retry-After", Server.reject(429, { headers: [["Retry-After", "30"]], body: "slow down" }), 429, ["retry-after", "30"], "slow down"]
  ] as const)("a rejection, %s: its status, headers and body on the wire, then the socket is closed", async (_, rejection, status, header, body) => {
    let handled = 0
    const { port, upgrader } = await start({
      routes: { "/ws": { upgrade: () => rejection, handler: () => Effect.sync(() => handled++) } }
    })
    const c = await RawClient.request(port)
    expect(c.response.status).toBe(status)
    if (header !== undefined) expect(c.response.headers.get(header[0])).toBe(header[1])
    expect(Buffer.from(await c.expectEnd()).toString()).toBe(`${body}\n`)
    await until("the connection counted out", () => Effect.runSync(upgrader.connections) === 0)
    expect(handled).toBe(0)
  })

  it("a decision slower than handshakeTimeout answers 503 and is interrupted", async () => {
    let interrupted = false
    const { port, logs } = await start({
      handshakeTimeout: 200,
      routes: { "/ws": { upgrade: () => Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))), handler: echo } }
    })
    const c = await RawClient.request(port)
    expect(c.response.status).toBe(503)
    await c.expectEnd()
    await until("the decision interrupted", () => interrupted)
    expect(logs.filter((e) => e.message.includes("handshakeTimeout"))).toHaveLength(1)
  })

  it("a defect answers 500 and is logged once; a rejection with a status outside 400-599 answers 500 too", async () => {
    const { port, logs } = await start({
      routes: {
        "/dies": { upgrade: () => Effect.die(new Error("database down")), handler: echo },
        "/ok": { upgrade: () => Server.reject(200), handler: echo }
      }
    })
    const c = await RawClient.request(port, { path: "/dies" })
    expect(c.response.status).toBe(500)
    await until("the defect logged", () => logs.some((e) => e.text.includes("database down")))
    expect(logs.filter((e) => e.text.includes("database down"))).toHaveLength(1)
    const ok = await RawClient.request(port, { path: "/ok" })
    expect(ok.response.status).toBe(500)
    await until("the bad status logged", () => logs.some((e) => e.message.includes("status 200")))
  })

  it("a client that goes away during the decision interrupts it at once (well before handshakeTimeout) and is counted out", async () => {
    let started = false
    let interrupted = false
    const { port, upgrader } = await start({
      handshakeTimeout: 60_000,
      routes: {
        "/ws": {
          upgrade: () =>
            Effect.sync(() => (started = true)).pipe(
              Effect.andThen(Effect.never),
              Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
            ),
          handler: echo
        }
      }
    })
    const pending = RawClient.request(port).catch(() => undefined)
    await until("the decision running", () => started)
    RawClient.destroyAll()
    await pending
    await until("the decision interrupted", () => interrupted, 5_000)
    await until("counted out", () => Effect.runSync(upgrader.connections) === 0)
  })

  it("what the client sends while the decision runs is held and delivered in order once accepted", async () => {
    let release: (() => void) | undefined = undefined
    const { port } = await start({
      routes: {
        "/ws": {
          upgrade: () => Effect.callback<string>((resume) => void (release = () => resume(Effect.succeed("late")))),
          handler: (ws, accepted: string) => Effect.andThen(ws.send(accepted), echo(ws))
        }
      }
    })
    const mask = Uint8Array.of(5, 6, 7, 8)
    const first = Buffer.concat(Frame.encode(Frame.Opcode.Text, text("with the request"), { mask }))
    const c = RawClient.connect(port, { extra: first })
    await until("the decision running", () => release !== undefined)
    release!()
    const client = await c
    await client.sendText("after the 101")
    expect(await client.expectText()).toBe("late")
    expect(await client.expectText()).toBe("with the request")
    expect(await client.expectText()).toBe("after the 101")
    await client.sendClose(1000)
    await client.expectClose(1000)
  })

  it("a shutdown during the decision answers 503", async () => {
    let started = false
    const server = await start({ routes: { "/ws": { upgrade: () => Effect.andThen(Effect.sync(() => (started = true)), Effect.never), handler: echo } } })
    const pending = RawClient.request(server.port)
    await until("the decision running", () => started)
    const detached = server.detach()
    expect((await pending).response.status).toBe(503)
    await bounded("the detach", detached)
  })

  it("works the same on websock's own listener (Server.make)", async () => {
    await TestServer.withServer({ routes: { "/private": privateRoute } }, async (port) => {
      const refused = await RawClient.request(port, { path: "/private" })
      expect(refused.response.status).toBe(401)
      expect(refused.response.headers.get("www-authenticate")).toBe("Bearer realm=\"demo\"")
      const c = await RawClient.connect(port, { path: "/private", headers: { Authorization: "Bearer demo-token" } })
      expect(await c.expectText()).toBe("hello demo in lobby, theme none, from 127.0.0.1")
      await c.expectClose(1000)
    })
  })
})

describe("the Origin allow-list", () => {
  it("another Origin gets 403; a listed one (any case) and none (not a browser) are upgraded; a route's own list wins", async () => {
    const { port } = await start({
      origins: ["https://app.example.com"],
      routes: { "/ws": echo, "/widgets": { handler: echo, origins: ["https://widgets.example.org"] } }
    })
    const evil = await RawClient.request(port, { headers: { Origin: "https://evil.example.net" } })
    expect(evil.response.status).toBe(403)
    const listed = await RawClient.connect(port, { headers: { Origin: "https://APP.example.com" } })
    listed.destroy()
    const none = await RawClient.connect(port)
    none.destroy()
    const appOnWidgets = await RawClient.request(port, { path: "/widgets", headers: { Origin: "https://app.example.com" } })
    expect(appOnWidgets.response.status).toBe(403)
    const widgets = await RawClient.connect(port, { path: "/widgets", headers: { Origin: "https://widgets.example.org" } })
    widgets.destroy()
  })

  it.each([
    ["origins", { origins: ["https://example.com/"] }],
    ["origins", { origins: "https://example.com" }],
    ["routes[\"/ws\"].origins", { routes: { "/ws": { handler: echo, origins: ["example.com"] } } }],
    ["routes[\"/ws\"].upgrade", { routes: { "/ws": { handler: echo, upgrade: "yes" } } }],
    ["unmatched", { unmatched: "drop" }]
  ] as const)("a bad %s fails attach with InvalidOption naming it", async (option, bad) => {
    const http = Http.createServer()
    const exit = await Effect.runPromiseExit(
      Effect.scoped(Upgrade.attach(http, { routes: { "/ws": echo }, ...bad } as never)) as Effect.Effect<unknown, ServerError>
    )
    expect(Exit.isFailure(exit)).toBe(true)
    const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
    expect(error?._tag === "Fail" && error.error).toBeInstanceOf(ServerError)
    expect(error?._tag === "Fail" && (error.error as ServerError).reason).toMatchObject({ _tag: "InvalidOption", option })
    expect(http.listenerCount("upgrade")).toBe(0)
  })
})

describe("WSS on the user's HTTPS server", () => {
  it("echo with permessage-deflate over TLS, then a clean close; HTTPS keeps serving", async () => {
    const outcomes: Array<WebSocket.CloseOutcome> = []
    const { port } = await start({
      compression: { threshold: 0 },
      routes: {
        "/ws": (ws) =>
          ws.messages.pipe(
            Stream.runForEachArray((batch) => ws.sendAll(batch)),
            Effect.andThen(ws.closed),
            Effect.tap((outcome) => Effect.sync(() => outcomes.push(outcome)))
          )
      }
    }, true)
    expect(await health(port, true)).toEqual({ status: 200, body: "ok" })
    const { ws } = await connectWs(`wss://127.0.0.1:${port}/ws`, [], { ca: tls.cert, perMessageDeflate: true })
    expect(ws.extensions).toContain("permessage-deflate")
    const big = "compressible ".repeat(10_000)
    ws.send(big)
    expect(await nextMessage(ws)).toBe(big)
    expect((await closeWs(ws)).code).toBe(1000)
    await until("the server's outcome", () => outcomes.length === 1)
    expect(outcomes[0]).toMatchObject({ code: 1000, clean: true, initiator: "remote" })
  })
})

describe("examples/HttpApp.ts", () => {
  it("over HTTPS and WSS on one port: /health, /private's 401 and its greeting, /ws's echo, /metrics counting them; SIGTERM sends 1001 and ends it", async () => {
    const fixtures = new URL("fixtures/", import.meta.url)
    const child = ChildProcess.spawn(process.execPath, [new URL("../examples/HttpApp.ts", import.meta.url).pathname], {
      env: {
        ...process.env,
        PORT: "0",
        TLS_CERT: new URL("localhost.crt", fixtures).pathname,
        TLS_KEY: new URL("localhost.key", fixtures).pathname
      },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    child.stdout.on("data", (chunk) => (output += String(chunk)))
    child.stderr.on("data", (chunk) => (output += String(chunk)))
    const exited = once(child, "exit")
    try {
      await until("the example listening", () => /listening on https:\/\/127\.0\.0\.1:\d+/.test(output), 20_000, () => output)
      const port = Number(/listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(output)![1])
      expect(await health(port, true)).toEqual({ status: 200, body: "ok" })
      const before = await health(port, true, "/metrics")
      expect(before.status).toBe(200)
      expect(before.body).toMatch(/^websock_connections_accepted 0$/m)
      await expect(connectWs(`wss://127.0.0.1:${port}/private`, [], { ca: tls.cert })).rejects.toThrow("unexpected 401")
      const { ws: priv } = await connectWs(`wss://127.0.0.1:${port}/private`, [], {
        ca: tls.cert,
        headers: { Authorization: "Bearer demo-token" }
      })
      expect(await nextMessage(priv)).toBe("hello demo")
      priv.send("echoed")
      expect(await nextMessage(priv)).toBe("echoed")
      const { ws } = await connectWs(`wss://127.0.0.1:${port}/ws`, [], { ca: tls.cert })
      expect(ws.extensions).toContain("permessage-deflate")
      ws.send("x".repeat(100_000))
      expect(await nextMessage(ws)).toBe("x".repeat(100_000))
      const after = (await health(port, true, "/metrics")).body
      expect(after).toMatch(/^websock_connections_accepted 2$/m)
      expect(after).toMatch(/^websock_connections_open 2$/m)
      expect(after).toMatch(/^websock_upgrades\{http_response_status_code="401"\} 1$/m)
      expect(after).toMatch(/^websock_messages_received\{websocket_message_type="text"\} 2$/m)
      expect(after).toMatch(/^websock_messages_sent\{websocket_message_type="text"\} 3$/m)
      expect(after).toMatch(/^websock_compression_original\{network_io_direction="receive"\} 100006$/m)
      // The server deflates from 1024 bytes (its default threshold): "hello demo" and "echoed" go out as they are.
      expect(after).toMatch(/^websock_compression_original\{network_io_direction="transmit"\} 100000$/m)
      const closes = [priv, ws].map((c) => once(c, "close"))
      child.kill("SIGTERM")
      for (const closed of closes) expect((await bounded("1001 on shutdown", closed))[0]).toBe(1001)
      // NodeRuntime.runMain exits with 130 when a signal interrupted the program.
      const [code, signal] = await bounded("the example's exit", exited)
      expect({ code, signal }).toEqual({ code: 130, signal: null })
      expect(output).not.toMatch(/ERROR|WARN/)
    } finally {
      child.kill("SIGKILL")
    }
  })
})
