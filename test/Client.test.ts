/**
 * websock's client over real sockets: against our own server and against
 * `ws`'s (text, binary, fragments, permessage-deflate both ways, the closing
 * handshake from both sides, masking with a fresh key per frame,
 * backpressure), over TLS, as an Effect `Socket.Socket` under
 * `RpcClient.layerProtocolSocket`, and against fake servers whose every
 * malformed 101 fails with its typed error. Options are checked at
 * construction; connect timeouts, retries and redirects behave as told.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Rpc from "effect/rpc/Rpc"
import * as RpcClient from "effect/rpc/RpcClient"
import * as RpcGroup from "effect/rpc/RpcGroup"
import * as RpcSerialization from "effect/rpc/RpcSerialization"
import * as RpcServer from "effect/rpc/RpcServer"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as SocketServer from "effect/socket/SocketServer"
import * as Stream from "effect/Stream"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { WebSocketServer } from "ws"
import * as Client from "../src/Client.ts"
import type { ClientError } from "../src/Errors.ts"
import * as Handshake from "../src/Handshake.ts"
import * as WebsockSocket from "../src/Socket.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import * as TestServer from "./support/TestServer.ts"
import * as Wait from "./support/Wait.ts"

const fixtures = Path.join(import.meta.dirname, "fixtures")

const deferred = () => {
  let resolve!: () => void
  const promise = new Promise<void>((r) => (resolve = r))
  return { promise, resolve }
}

/** Everything a test opened, closed after it. */
const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const echoServer = async (options: TestServer.TestOptions = {}) => {
  const server = await TestServer.start(options)
  cleanups.push(server.close)
  return `ws://127.0.0.1:${server.port}/ws`
}

/** A `ws` server, its connections echoing unless `onConnection` says otherwise. */
const wsServer = async (options: ConstructorParameters<typeof WebSocketServer>[0] = {}, onConnection?: (socket: import("ws").WebSocket) => void) => {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, ...options })
  await new Promise<void>((resolve) => wss.once("listening", () => resolve()))
  wss.on("connection", onConnection ?? ((socket) => socket.on("message", (data, isBinary) => socket.send(data, { binary: isBinary }))))
  cleanups.push(() => new Promise<void>((resolve) => {
    for (const client of wss.clients) client.terminate()
    wss.close(() => resolve())
  }))
  return `ws://127.0.0.1:${(wss.address() as Net.AddressInfo).port}`
}

/** A fake server: `answer` gets each request head (as our server reads it) and its socket. */
const fakeServer = async (answer: (request: Handshake.Request, socket: Net.Socket, n: number) => void) => {
  let n = 0
  const sockets = new Set<Net.Socket>()
  const server = Net.createServer((socket) => {
    sockets.add(socket)
    socket.on("error", () => {})
    const count = ++n
    let state = Handshake.initialHead(16 * 1024)
    const onData = (chunk: Uint8Array) => {
      const result = Handshake.feedHead(state, chunk)
      if (result._tag === "Incomplete") {
        state = result.state
        return
      }
      socket.off("data", onData)
      if (result._tag === "Complete") answer(result.request, socket, count)
    }
    socket.on("data", onData)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanups.push(() => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy()
    server.close(() => resolve())
  }))
  return { url: `ws://127.0.0.1:${(server.address() as Net.AddressInfo).port}/ws`, connections: () => n }
}

const accept = (request: Handshake.Request) => Handshake.acceptKey(request.headers.get("sec-websocket-key")!)
const head = (lines: ReadonlyArray<string>) => `${lines.join("\r\n")}\r\n\r\n`

const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Effect.scoped(effect))
const failure = <A>(effect: Effect.Effect<A, ClientError, Scope.Scope>) =>
  Effect.runPromise(Effect.scoped(Effect.flip(effect)))

describe("against our server", () => {
  it("text and binary, both ways, with permessage-deflate negotiated and used for large messages", async () => {
    const url = await echoServer({ compression: { threshold: 16 } })
    const result = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url)
      const big = "websock ".repeat(10_000)
      yield* ws.sendAll(["hello", Uint8Array.of(0, 1, 2, 255), big, new Uint8Array(70_000).fill(7)])
      const got = [yield* ws.receive, yield* ws.receive, yield* ws.receive, yield* ws.receive]
      return { extensions: ws.extensions, got, big }
    }))
    // our server compresses without takeover by default, on its own initiative
    expect(result.extensions).toBe("permessage-deflate; server_no_context_takeover")
    expect(result.got[0]).toBe("hello")
    expect([...(result.got[1] as Uint8Array)]).toEqual([0, 1, 2, 255])
    expect(result.got[2]).toBe(result.big)
    expect((result.got[3] as Uint8Array).length).toBe(70_000)
    expect((result.got[3] as Uint8Array).every((b) => b === 7)).toBe(true)
  })

  it("one handler runs on either side: the server's route and the client both echo, through each other", async () => {
    const echo = (ws: WebSocket.WebSocketConnection) => ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch)))
    const received: Array<WebSocket.Message> = []
    const done = deferred()
    const url = await echoServer({
      routes: {
        "/ws": (ws) =>
          Effect.gen(function*() {
            yield* ws.sendAll(["one", "two", "three"])
            for (let i = 0; i < 3; i++) received.push(yield* ws.receive)
            done.resolve()
            yield* ws.close(4000, "done")
          })
      }
    })
    const outcome = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url)
      yield* echo(ws)
      return yield* ws.closed
    }))
    await done.promise
    expect(received).toEqual(["one", "two", "three"])
    expect(outcome).toMatchObject({ code: 4000, reason: "done", clean: true, initiator: "remote" })
  })

  it("closes both ways: our close is answered, the scope's end closes with 1000, the server's close is echoed", async () => {
    const outcomes: Array<WebSocket.CloseOutcome> = []
    const url = await echoServer({
      routes: {
        "/ws": (ws) => Effect.andThen(ws.closed, (o) => Effect.sync(() => outcomes.push(o))),
        "/bye": (ws) => ws.close(4001, "bye")
      }
    })
    const ours = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url)
      return yield* ws.close(4002, "ours")
    }))
    expect(ours).toMatchObject({ code: 4002, reason: "", clean: true, initiator: "local" })
    // The scope ends with the connection open: 1000.
    await run(Effect.asVoid(Client.connect(url)))
    await Wait.until("the server saw both closes", () => outcomes.length === 2)
    expect(outcomes.map((o) => [o.code, o.clean, o.initiator])).toEqual([[4002, true, "remote"], [1000, true, "remote"]])
    const theirs = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url.replace("/ws", "/bye"))
      return yield* ws.closed
    }))
    expect(theirs).toMatchObject({ code: 4001, reason: "bye", clean: true, initiator: "remote" })
  })

  it("fails a server that masks its frames with 1002 (RFC 6455 §5.1)", async () => {
    const { url } = await fakeServer((request, socket) => {
      socket.write(head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept(request)}`]))
      socket.write(Uint8Array.of(0x81, 0x82, 1, 2, 3, 4, 0x69 ^ 1, 0x69 ^ 2))
      socket.on("data", () => {})
    })
    const outcome = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url, { compression: false })
      return yield* ws.closed
    }))
    expect(outcome).toMatchObject({ code: 1002, clean: false, initiator: "local", detail: { reason: "masked frame from a server" } })
  })
})

describe("against ws's server", () => {
  it("echoes text and binary with permessage-deflate both ways, and reassembles the server's fragments", async () => {
    let negotiated: string | undefined
    const url = await wsServer({ perMessageDeflate: { threshold: 0 } }, (socket) => {
      negotiated = Object.keys((socket as unknown as { _extensions: Record<string, unknown> })._extensions).join(",")
      socket.on("message", (data, isBinary) => {
        if (String(data) === "fragments") {
          socket.send("frag", { fin: false })
          socket.send("men", { fin: false })
          socket.send("ts", { fin: true })
        } else {
          socket.send(data, { binary: isBinary })
        }
      })
    })
    const got = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url, { compression: { threshold: 0 } })
      yield* ws.sendAll(["héllo 🌍", new Uint8Array(100_000).fill(1), "fragments"])
      return { extensions: ws.extensions, messages: [yield* ws.receive, yield* ws.receive, yield* ws.receive] }
    }))
    expect(negotiated).toBe("permessage-deflate")
    expect(got.extensions).toContain("permessage-deflate")
    expect(got.messages[0]).toBe("héllo 🌍")
    expect((got.messages[1] as Uint8Array).length).toBe(100_000)
    expect(got.messages[2]).toBe("fragments")
  })

  it("closes both ways with ws (codes and reasons as sent, clean)", async () => {
    const seen: Array<[number, string]> = []
    const url = await wsServer({}, (socket) => {
      socket.on("close", (code, reason) => seen.push([code, String(reason)]))
      socket.on("message", (data) => {
        if (String(data) === "close me") socket.close(4005, "as asked")
      })
    })
    const ours = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url)
      return yield* ws.close(4003, "client done")
    }))
    expect(ours).toMatchObject({ code: 4003, clean: true, initiator: "local" })
    const theirs = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url)
      yield* ws.send("close me")
      return yield* ws.closed
    }))
    expect(theirs).toMatchObject({ code: 4005, reason: "as asked", clean: true, initiator: "remote" })
    await Wait.until("ws saw both closes", () => seen.length === 2)
    // What ws received: our Close, then our echo of its code (RFC 6455 §5.5.1).
    expect(seen).toEqual([[4003, "client done"], [4005, ""]])
  })
})

describe("masking (RFC 6455 §5.3)", () => {
  it("every frame is masked, each with its own key, and unmasks to what was sent", async () => {
    const frames: Array<{ masked: boolean; key: string; payload: string }> = []
    const got = deferred()
    const { url } = await fakeServer((request, socket) => {
      socket.write(head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept(request)}`]))
      let buffered = Buffer.alloc(0)
      socket.on("data", (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk])
        // Small frames only (7-bit lengths): header, key, payload.
        while (buffered.length >= 6 && buffered.length >= 6 + (buffered[1]! & 0x7f)) {
          const length = buffered[1]! & 0x7f
          const key = buffered.subarray(2, 6)
          const payload = Buffer.from(buffered.subarray(6, 6 + length).map((b, i) => b ^ key[i & 3]!))
          frames.push({ masked: (buffered[1]! & 0x80) !== 0, key: key.toString("hex"), payload: payload.toString("latin1") })
          buffered = buffered.subarray(6 + length)
          if (frames.length === 201) got.resolve()
        }
      })
    })
    await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url, { compression: false, closeTimeout: 100 })
      for (let i = 0; i < 100; i++) yield* ws.send(`m${i}`)
      yield* ws.sendAll(Array.from({ length: 100 }, (_, i) => `b${i}`))
      yield* ws.ping(Uint8Array.of(0x70)).pipe(Effect.forkChild)
      yield* Effect.promise(() => got.promise)
    }))
    expect(frames.every((f) => f.masked)).toBe(true)
    expect(frames.length).toBeGreaterThanOrEqual(201)
    expect(new Set(frames.map((f) => f.key)).size).toBe(frames.length)
    expect(frames.slice(0, 3).map((f) => f.payload)).toEqual(["m0", "m1", "m2"])
    expect(frames[199]!.payload).toBe("b99")
    expect(frames[200]!.payload).toBe("p")
  })
})

describe("published messages (Topics) go out masked too", () => {
  it("a client's publish to a topic it subscribes to reaches the server as a masked frame (it echoes it back)", async () => {
    const url = await echoServer()
    const echoed = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url, { compression: false })
      yield* ws.subscribe("news")
      const result = yield* ws.publish("news", "extra", { self: true })
      return { result, echoed: yield* ws.receive }
    }))
    expect(echoed.result.subscribers).toBe(1)
    expect(echoed.echoed).toBe("extra")
  })
})

describe("backpressure", () => {
  it("a send under \"wait\" suspends while the server does not read, and resumes when it does", async () => {
    let server: Net.Socket | undefined
    const { url } = await fakeServer((request, socket) => {
      socket.write(head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept(request)}`]))
      socket.pause()
      server = socket
    })
    await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url, { compression: false, highWaterMark: 64 * 1024, maxBufferedAmount: 128 * 1024, closeTimeout: 100 })
      const chunk = new Uint8Array(1024 * 1024)
      const sending = yield* Effect.forkChild(Effect.forEach(Array.from({ length: 32 }), () => ws.send(chunk), { discard: true }))
      yield* Effect.promise(() => Wait.until("the client's buffer to fill", () => Effect.runSync(ws.bufferedAmount) > 128 * 1024))
      expect(sending.pollUnsafe()).toBeUndefined()
      server!.on("data", () => {})
      server!.resume()
      yield* Fiber.join(sending)
      expect(yield* ws.droppedMessages).toBe(0)
    }))
  })

  it("under \"drop\", messages past maxBufferedAmount are dropped and counted", async () => {
    const { url } = await fakeServer((request, socket) => {
      socket.write(head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept(request)}`]))
      socket.pause()
    })
    const dropped = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url, { compression: false, overflow: "drop", highWaterMark: 16 * 1024, maxBufferedAmount: 64 * 1024, closeTimeout: 100 })
      const chunk = new Uint8Array(256 * 1024)
      for (let i = 0; i < 64; i++) yield* ws.send(chunk)
      return yield* ws.droppedMessages
    }))
    expect(dropped).toBeGreaterThan(0)
  })
})

describe("wss://", () => {
  it("connects over TLS with the test CA, and refuses an unknown certificate with ConnectFailed", async () => {
    const cert = Fs.readFileSync(Path.join(fixtures, "localhost.crt"))
    const key = Fs.readFileSync(Path.join(fixtures, "localhost.key"))
    const https = await import("node:https")
    const server = https.createServer({ cert, key })
    const wss = new WebSocketServer({ server })
    wss.on("connection", (socket) => socket.on("message", (data, isBinary) => socket.send(data, { binary: isBinary })))
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanups.push(() => new Promise<void>((resolve) => {
      for (const c of wss.clients) c.terminate()
      wss.close()
      server.close(() => resolve())
    }))
    const port = (server.address() as Net.AddressInfo).port
    const echoed = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(`wss://localhost:${port}/`, { tls: { ca: cert } })
      yield* ws.send("over tls")
      return yield* ws.receive
    }))
    expect(echoed).toBe("over tls")
    const error = await failure(Client.connect(`wss://localhost:${port}/`))
    expect(error.reason._tag).toBe("ConnectFailed")
    expect(error.message).toMatch(/self.signed|unable to verify/i)
  })
})

describe("the outbox's shared scratch buffer", () => {
  it("a client's 65,000-byte message right after a TLS server's small flush in the same process goes out whole (the rest of the buffer the TLS socket holds is too short for it)", async () => {
    const cert = Fs.readFileSync(Path.join(fixtures, "localhost.crt"))
    const key = Fs.readFileSync(Path.join(fixtures, "localhost.key"))
    const https = await import("node:https")
    const Upgrade = await import("../src/Upgrade.ts")
    const server = https.createServer({ cert, key })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const scope = Scope.makeUnsafe()
    cleanups.push(async () => {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      await new Promise<void>((resolve) => server.close(() => resolve()))
    })
    await Effect.runPromise(Scope.provide(Upgrade.attach(server, { ...TestServer.testDefaults, routes: { "/ws": TestServer.echo } }), scope))
    const tlsPort = (server.address() as Net.AddressInfo).port
    const plain = await echoServer()
    const big = new Uint8Array(65_000).map((_, i) => i % 251)
    const echoed = await run(Effect.gen(function*() {
      const overTls = yield* Client.connect(`wss://localhost:${tlsPort}/ws`, { tls: { ca: cert }, compression: false })
      const other = yield* Client.connect(plain, { compression: false })
      // The TLS server's echo of 1,000 bytes: its socket holds the start of the scratch buffer.
      yield* overTls.send(new Uint8Array(1000))
      expect(((yield* overTls.receive) as Uint8Array).length).toBe(1000)
      yield* other.send(big)
      return yield* other.receive
    }))
    expect(Buffer.from(echoed as Uint8Array).equals(Buffer.from(big))).toBe(true)
  })
})

describe("Effect's Socket (toSocket, layerSocket)", () => {
  class Echo extends Rpc.make("Echo", { payload: { text: Schema.String }, success: Schema.String }) {}
  class Count extends Rpc.make("Count", { payload: { n: Schema.Number }, success: Schema.Number, stream: true }) {}
  const Rpcs = RpcGroup.make(Echo, Count)

  it("RpcClient.layerProtocolSocket runs over Client.layerSocket against a websock RPC server", async () => {
    const handlers = Rpcs.toLayer({
      Echo: ({ text }) => Effect.succeed(`echo: ${text}`),
      Count: ({ n }) => Stream.range(1, n)
    })
    const scope = Scope.makeUnsafe()
    cleanups.push(() => Effect.runPromise(Scope.close(scope, Exit.void)))
    const socketServer = await Effect.runPromise(Scope.provide(WebsockSocket.makeSocketServer({ ...TestServer.testDefaults, path: "/rpc" }), scope))
    const address = socketServer.address
    const port = "port" in address ? address.port : 0
    const layer = RpcServer.layer(Rpcs).pipe(
      Layer.provide(handlers),
      Layer.provide(RpcServer.layerProtocolSocketServer),
      Layer.provide(Layer.succeed(SocketServer.SocketServer, socketServer)),
      Layer.provide(RpcSerialization.layerJson)
    )
    await Effect.runPromise(Scope.provide(Layer.build(layer), scope))
    const result = await Effect.runPromise(Effect.gen(function*() {
      const client = yield* RpcClient.make(Rpcs)
      const echoed = yield* client.Echo({ text: "héllo" })
      const counted = yield* Stream.runCollect(client.Count({ n: 4 }))
      return { echoed, counted }
    }).pipe(
      Effect.scoped,
      Effect.provide(RpcClient.layerProtocolSocket().pipe(Layer.provide(Client.layerSocket(`ws://127.0.0.1:${port}/rpc`)), Layer.provide(RpcSerialization.layerJson))),
      Effect.timeout("5 seconds")
    ))
    expect(result).toEqual({ echoed: "echo: héllo", counted: [1, 2, 3, 4] })
  })
})

describe("Client.makeSocket: a reader is a fresh connection", () => {
  it("each reader connects anew, the writer writes to the current one (waiting for it), a failed connect is SocketOpenError", async () => {
    let connections = 0
    const url = await echoServer({
      routes: {
        "/ws": (ws) => Effect.andThen(Effect.sync(() => connections++), TestServer.echo(ws))
      }
    })
    const socket = Client.makeSocket(url)
    const writer = await Effect.runPromise(Effect.scoped(socket.writer))
    const round = (text: string) =>
      Effect.scoped(Effect.gen(function*() {
        // Written before the reader connects: it waits for the connection.
        const written = yield* Effect.forkChild(writer.write(text))
        const { pull } = yield* socket.reader
        yield* Fiber.join(written)
        return yield* pull
      }))
    expect(await Effect.runPromise(round("first"))).toEqual(["first"])
    expect(await Effect.runPromise(round("second"))).toEqual(["second"])
    expect(connections).toBe(2)
    const refused = await Effect.runPromise(Effect.scoped(Effect.flip(Client.makeSocket("ws://127.0.0.1:1/", { connectTimeout: 1000 }).reader)))
    expect(refused.reason._tag).toBe("SocketOpenError")
  })
})

describe("a malformed 101 fails with its typed error (HandshakeFailed { what })", () => {
  const answers: ReadonlyArray<readonly [string, (request: Handshake.Request) => string, string]> = [
    ["a 403", () => head(["HTTP/1.1 403 Forbidden", "Content-Length: 0"]), "status 403 Forbidden, not 101"],
    ["no Upgrade", (r) => head(["HTTP/1.1 101 Switching Protocols", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept(r)}`]), "missing Upgrade header"],
    ["Upgrade: h2c", (r) => head(["HTTP/1.1 101 Switching Protocols", "Upgrade: h2c", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept(r)}`]), "Upgrade is \"h2c\", not websocket"],
    ["no Connection", (r) => head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", `Sec-WebSocket-Accept: ${accept(r)}`]), "missing Connection header"],
    ["a wrong Accept", () => head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${Handshake.acceptKey("nope")}`]), "wrong Sec-WebSocket-Accept"],
    ["no Accept", () => head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade"]), "missing Sec-WebSocket-Accept"],
    ["an unoffered subprotocol", (r) => head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept(r)}`, "Sec-WebSocket-Protocol: mqtt"]), "subprotocol \"mqtt\" was not offered"],
    ["an unoffered extension", (r) => head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept(r)}`, "Sec-WebSocket-Extensions: x-custom"]), "extension \"x-custom\" was not offered"],
    ["bad deflate parameters", (r) => head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept(r)}`, "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=7"]), "invalid permessage-deflate parameter server_max_window_bits=7"],
    ["garbage", () => "SSH-2.0-OpenSSH_9.6\r\n\r\n", "malformed response: invalid status line"]
  ]
  for (const [name, answer, what] of answers) {
    it(`${name}: ${what}`, async () => {
      const { url } = await fakeServer((request, socket) => socket.end(answer(request)))
      const error = await failure(Client.connect(url, { protocols: ["chat"] }))
      expect(error.reason).toMatchObject({ _tag: "HandshakeFailed", what })
      expect(error.message).toContain(what)
    })
  }

  it("the default offer asks nothing of the server's compressor; compression's serverNoContextTakeover asks it", async () => {
    const offers: Array<string | undefined> = []
    const { url } = await fakeServer((request, socket) => {
      offers.push(request.headers.get("sec-websocket-extensions"))
      socket.end(head(["HTTP/1.1 403 Forbidden", "Content-Length: 0"]))
    })
    await failure(Client.connect(url))
    await failure(Client.connect(url, { compression: { threshold: 0 } }))
    await failure(Client.connect(url, { compression: { serverNoContextTakeover: true } }))
    expect(offers).toEqual([
      "permessage-deflate; client_max_window_bits",
      "permessage-deflate; client_max_window_bits",
      "permessage-deflate; server_no_context_takeover; client_max_window_bits"
    ])
  })

  it("a redirect is not followed unless asked (Redirected), and followed when it is", async () => {
    const target = await echoServer()
    const { url } = await fakeServer((_, socket) => socket.end(head(["HTTP/1.1 302 Found", `Location: ${target}`, "Content-Length: 0"])))
    const error = await failure(Client.connect(url))
    expect(error.reason).toMatchObject({ _tag: "Redirected", status: 302, location: target })
    const echoed = await run(Effect.gen(function*() {
      const ws = yield* Client.connect(url, { followRedirects: 1 })
      yield* ws.send("followed")
      return yield* ws.receive
    }))
    expect(echoed).toBe("followed")
  })

  it("connect timeout (ConnectTimeout), refused connection (ConnectFailed), and retry on a Schedule", async () => {
    const silent = await fakeServer(() => {})
    const timedOut = await failure(Client.connect(silent.url, { connectTimeout: 200 }))
    expect(timedOut.reason).toMatchObject({ _tag: "ConnectTimeout", timeout: 200 })
    const closed = Net.createServer()
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve))
    const port = (closed.address() as Net.AddressInfo).port
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const refused = await failure(Client.connect(`ws://127.0.0.1:${port}/`))
    expect(refused.reason._tag).toBe("ConnectFailed")
    // Two 503s, then a 101: retried twice.
    const flaky = await fakeServer((request, socket, n) => {
      if (n <= 2) return socket.end(head(["HTTP/1.1 503 Service Unavailable", "Content-Length: 0"]))
      socket.write(head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept(request)}`]))
      socket.on("data", () => {})
    })
    const protocol = await run(Effect.map(Client.connect(flaky.url, { compression: false, retry: Schedule.recurs(3), closeTimeout: 100 }), (ws) => ws.protocol))
    expect(protocol).toBeUndefined()
    expect(flaky.connections()).toBe(3)
    const exhausted = await fakeServer((_, socket) => socket.end(head(["HTTP/1.1 503 Service Unavailable", "Content-Length: 0"])))
    const gaveUp = await failure(Client.connect(exhausted.url, { retry: Schedule.recurs(2) }))
    expect(gaveUp.reason).toMatchObject({ _tag: "HandshakeFailed", status: 503 })
    expect(exhausted.connections()).toBe(3)
  })
})

describe("options are checked at construction (InvalidOption naming them)", () => {
  const cases: ReadonlyArray<readonly [string, string, Client.Options]> = [
    ["ftp://x/", "url", {}],
    ["ws://x/#frag", "url", {}],
    ["ws://x/", "protocols", { protocols: ["a b"] }],
    ["ws://x/", "protocols", { protocols: ["a", "a"] }],
    ["ws://x/", "headers", { headers: { "Sec-WebSocket-Key": "x" } }],
    ["ws://x/", "headers", { headers: [["X-Bad", "a\r\nb"]] }],
    ["ws://x/", "maxMessageSize", { maxMessageSize: 0 }],
    ["ws://x/", "compression.clientMaxWindowBits", { compression: { clientMaxWindowBits: 16 } }],
    ["ws://x/", "connectTimeout", { connectTimeout: -1 }],
    ["ws://x/", "followRedirects", { followRedirects: 1.5 }],
    ["ws://x/", "overflow", { overflow: "explode" as "drop" }]
  ]
  for (const [url, option, options] of cases) {
    it(`${option}: ${JSON.stringify(options)} at ${url}`, async () => {
      const error = await failure(Client.connect(url, options))
      expect(error.reason).toMatchObject({ _tag: "InvalidOption", option })
    })
  }

  it("closing the scope of a connection whose server never answers the Close ends it at closeTimeout, unclean", async () => {
    const { url } = await fakeServer((request, socket) => {
      socket.write(head(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept(request)}`]))
      socket.on("data", () => {})
    })
    const exit = await Effect.runPromise(Effect.exit(Effect.scoped(Effect.gen(function*() {
      const ws = yield* Client.connect(url, { compression: false, closeTimeout: 100 })
      return yield* ws.close()
    }))))
    expect(Exit.isSuccess(exit) && exit.value).toMatchObject({ code: 1006, clean: false, initiator: "local" })
  })
})

