/**
 * `websock/Socket` over real sockets: the Effect `Socket.Socket` contract of
 * `toSocket` (close codes both ways, a waiting pull when its scope closes,
 * write backpressure, writes after the close), the `SocketServer` on
 * websock (connections before `run`, `run`'s services, close codes by the
 * handler's end, typed errors), and Effect RPC end to end over it with each
 * of Effect's serializations and two WebSocket clients.
 */
import * as NodeWS from "@effect/platform-node/NodeWS"
import { assert, describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Equal from "effect/Equal"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as NetAddress from "effect/net/NetAddress"
import * as References from "effect/References"
import * as Rpc from "effect/rpc/Rpc"
import * as RpcClient from "effect/rpc/RpcClient"
import type { RpcClientError } from "effect/rpc/RpcClientError"
import * as RpcGroup from "effect/rpc/RpcGroup"
import * as RpcSerialization from "effect/rpc/RpcSerialization"
import * as RpcServer from "effect/rpc/RpcServer"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import * as SocketServer from "effect/socket/SocketServer"
import * as Stream from "effect/Stream"
import { Buffer } from "node:buffer"
import * as Net from "node:net"
import { afterEach } from "vitest"
import { ServerError } from "../src/Errors.ts"
import * as WebsockSocket from "../src/Socket.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { buffered, numbered, numberOf } from "./Limits.helpers.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"
import { until, within } from "./support/Wait.ts"

afterEach(() => RawClient.destroyAll())

const KiB = 1024

/** The reason of a failure that is a `SocketError`, or undefined. */
const socketErrorOf = (exit: Exit.Exit<unknown, unknown>): Socket.SocketError["reason"] | undefined => {
  if (Exit.isSuccess(exit)) return undefined
  const error = Cause.findErrorOption(exit.cause)
  return error._tag === "Some" && Socket.isSocketError(error.value) ? error.value.reason : undefined
}

/**
 * Runs a server whose `/ws` route hands its connection, as an Effect Socket,
 * to `body` (in a scope that closes when `body` ends), and `test` against
 * it; `test` gets the body's exit as a promise.
 */
const withSocket = <A, E>(
  body: (socket: Socket.Socket, ws: WebSocket.WebSocketConnection) => Effect.Effect<A, E, Scope.Scope>,
  test: (port: number, result: Promise<Exit.Exit<A, E>>) => Promise<void>,
  options: TestServer.TestOptions = {}
): Promise<void> => {
  let report: (exit: Exit.Exit<A, E>) => void = () => {}
  const result = new Promise<Exit.Exit<A, E>>((resolve) => (report = resolve))
  const route = (ws: WebSocket.WebSocketConnection) =>
    Effect.scoped(body(WebsockSocket.toSocket(ws), ws)).pipe(Effect.exit, Effect.map(report))
  return TestServer.withServer({ ...options, routes: { "/ws": route } }, async (port) => {
    try {
      await test(port, within(result, 3_000, "the socket body's end"))
    } finally {
      RawClient.destroyAll()
    }
  })
}

/** Pulls until the reader fails; returns the messages and the failure. */
const readAll = (socket: Socket.Socket) =>
  Effect.gen(function*() {
    const { pull } = yield* socket.reader
    const messages: Array<WebSocket.Message> = []
    const exit = yield* Effect.exit(Effect.forever(Effect.map(pull, (batch) => messages.push(...batch))))
    return { messages, exit }
  })

// -----------------------------------------------------------------------------
// toSocket: the Socket contract
// -----------------------------------------------------------------------------

describe("toSocket: reading and the peer's close", () => {
  it.each([[4001, "bye"], [1000, ""]])(
    "gives the messages in order, then fails with SocketCloseError carrying the peer's code %i and reason %j",
    (code, reason) =>
      withSocket((socket) => readAll(socket), async (port, result) => {
        const c = await RawClient.connect(port)
        await c.sendText("one")
        await c.sendBinary(Uint8Array.of(1, 2, 3))
        await c.sendText("three")
        await c.sendClose(code, reason)
        await c.expectClose(code)
        const exit = await result
        assert(Exit.isSuccess(exit))
        expect(exit.value.messages).toEqual(["one", Uint8Array.of(1, 2, 3), "three"])
        expect(socketErrorOf(exit.value.exit)).toMatchObject({ _tag: "SocketCloseError", code, closeReason: reason })
      })
  )
})

describe("toSocket: read backpressure", () => {
  it("a reader that does not pull: the server stops reading at inboxHighWaterMark; pulls then get batches of what waited, in order, none lost", () => {
    const inboxHighWaterMark = 8
    const M = 16 * KiB
    const total = 256 // 4 MiB: more than the kernel buffers hold
    const gate = Deferred.makeUnsafe<void>()
    const batches: Array<number> = []
    const received: Array<number> = []
    return withSocket(
      (socket, ws) =>
        Effect.gen(function*() {
          const { pull } = yield* socket.reader
          const writer = yield* socket.writer
          if (ws.request.query.has("echo")) return yield* Effect.forever(Effect.flatMap(pull, (batch) => writer.writeAll(batch)))
          yield* Deferred.await(gate)
          while (received.length < total) {
            const batch = yield* pull
            batches.push(batch.length)
            for (const m of batch) received.push(numberOf(m))
          }
        }),
      async (port) => {
        const c = await RawClient.connect(port)
        const head = c.serverBytesRead() ?? 0 // the upgrade request
        const frames = Array.from({ length: total }, (_, i) => c.frame(2, numbered(i, M)))
        void c.write(Buffer.concat(frames))
        const full = head + inboxHighWaterMark * frames[0]!.length
        await until("the inbox to fill", () => (c.serverBytesRead() ?? 0) >= full)
        // The server goes on serving another connection, many turns of its
        // event loop; the first connection is not read meanwhile (a reader
        // that takes messages it was not asked for would let it be).
        const other = await RawClient.connect(port, { path: "/ws?echo" })
        for (let i = 0; i < 20; i++) {
          await other.sendText(`ping ${i}`)
          expect(await other.expectText()).toBe(`ping ${i}`)
        }
        expect(c.serverBytesRead()).toBeLessThanOrEqual(full + 64 * KiB)
        expect(received).toEqual([])
        Deferred.doneUnsafe(gate, Effect.void)
        await until("every message to be pulled", () => received.length === total, 5_000, () => `${received.length} of ${total}`)
        expect(received).toEqual(Array.from({ length: total }, (_, i) => i))
        // batches, never more than the inbox held plus one read (64 KiB)
        expect(Math.max(...batches)).toBeGreaterThan(1)
        expect(Math.max(...batches)).toBeLessThanOrEqual(inboxHighWaterMark + 64 * KiB / M + 1)
        await c.expectClose(1000)
        await other.sendClose(1000)
        await other.expectClose(1000)
      },
      { inboxHighWaterMark }
    )
  })
})

describe("toSocket: writing", () => {
  it("a CloseEvent closes with its code and reason; writes after it succeed and send nothing", () =>
    withSocket(
      (socket) =>
        Effect.gen(function*() {
          const writer = yield* socket.writer
          yield* writer.write("before")
          yield* writer.write(new Socket.CloseEvent(4002, "x"))
          const after = yield* Effect.exit(Effect.all([writer.write("after"), writer.writeAll(["a", Uint8Array.of(1)])]))
          const read = yield* readAll(socket)
          return { after, read }
        }),
      async (port, result) => {
        const c = await RawClient.connect(port)
        expect(await c.expectText()).toBe("before")
        // expectClose also fails on any frame after the Close
        expect(await c.expectClose(4002)).toEqual({ code: 4002, reason: "x" })
        const exit = await result
        assert(Exit.isSuccess(exit))
        expect(exit.value.after._tag).toBe("Success")
        // the read side ends with the code of the peer's reply
        expect(socketErrorOf(exit.value.read.exit)).toMatchObject({ _tag: "SocketCloseError", code: 4002 })
      }
    ))

  it("a CloseEvent's reason too long for a Close frame is cut on a character boundary; a code that may not be sent fails with SocketWriteError", () =>
    withSocket(
      (socket) =>
        Effect.gen(function*() {
          const writer = yield* socket.writer
          const refused = yield* Effect.exit(writer.write(new Socket.CloseEvent(1005)))
          yield* writer.write(new Socket.CloseEvent(1009, "é".repeat(100))) // 200 UTF-8 bytes
          return refused
        }),
      async (port, result) => {
        const c = await RawClient.connect(port)
        // 61 "é" are 122 bytes: the most whole characters within 123
        expect(await c.expectClose(1009)).toEqual({ code: 1009, reason: "é".repeat(61) })
        const exit = await result
        assert(Exit.isSuccess(exit))
        expect(socketErrorOf(exit.value)).toMatchObject({ _tag: "SocketWriteError" })
      }
    ))

  it("a write after the peer's close succeeds and sends nothing (RpcServer dies on a failed write)", () =>
    withSocket(
      (socket, ws) =>
        Effect.gen(function*() {
          const writer = yield* socket.writer
          const read = yield* readAll(socket)
          yield* ws.closed
          const late = yield* Effect.exit(Effect.all([writer.write("late"), writer.writeAll(["later"])]))
          return { read, late }
        }),
      async (port, result) => {
        const c = await RawClient.connect(port)
        await c.sendClose(1000)
        await c.expectClose(1000)
        const exit = await result
        assert(Exit.isSuccess(exit))
        expect(socketErrorOf(exit.value.read.exit)).toMatchObject({ _tag: "SocketCloseError", code: 1000 })
        expect(exit.value.late._tag).toBe("Success")
      }
    ))
})

describe("toSocket: the reader's scope", () => {
  it.each([
    ["succeeds", 1000, Exit.void],
    ["is interrupted", 1001, Exit.interrupt()],
    ["fails", 1011, Exit.fail("boom")]
  ] as const)(
    "when it %s, a pull waiting in another fiber fails with SocketCloseError and the connection closes with %i",
    (_, code, end) =>
      withSocket(
        (socket) =>
          Effect.gen(function*() {
            const scope = yield* Scope.make()
            const { pull } = yield* Scope.provide(socket.reader, scope)
            // started at once: it is waiting (nothing was sent) when the scope closes
            const waiting = yield* Effect.forkChild(pull, { startImmediately: true })
            expect(waiting.pollUnsafe()).toBeUndefined()
            yield* Scope.close(scope, end)
            return yield* Fiber.await(waiting)
          }),
        async (port, result) => {
          const c = await RawClient.connect(port)
          await c.expectClose(code)
          const pulled = await result
          assert(Exit.isSuccess(pulled))
          expect(socketErrorOf(pulled.value)).toMatchObject({ _tag: "SocketCloseError", code: 1006 })
        }
      )
  )
})

describe("toSocket: write backpressure", () => {
  const highWaterMark = 64 * KiB
  const M = 64 * KiB // the size of each message
  const HEADERS = 64 // slack for frame headers

  it.each(["write", "writeAll"] as const)(
    "%s suspends while the server's outbound buffer is above highWaterMark and the peer does not read; the late reader gets everything in order",
    (method) => {
      const probe = {
        ws: undefined as WebSocket.WebSocketConnection | undefined,
        started: 0, // writes begun
        completed: 0, // writes that returned
        limit: Number.MAX_SAFE_INTEGER, // the writes stop here
        received: [] as Array<WebSocket.Message>
      }
      return withSocket(
        (socket, ws) =>
          Effect.gen(function*() {
            probe.ws = ws
            const writer = yield* socket.writer
            const { pull } = yield* socket.reader
            yield* Effect.forkChild(Effect.forever(Effect.map(pull, (batch) => probe.received.push(...batch))))
            while (probe.started < probe.limit) {
              const message = numbered(probe.started++, M)
              yield* method === "write" ? writer.write(message) : writer.writeAll([message])
              probe.completed++
            }
          }),
        async (port, result) => {
          const c = await RawClient.connect(port)
          c.socket.pause() // the kernel buffers fill, then the server's
          await until(
            "a write suspended with the server's buffer above highWaterMark",
            () => buffered(probe.ws) > highWaterMark && probe.started === probe.completed + 1,
            6_000,
            () => `buffered ${buffered(probe.ws)}, ${probe.started} writes begun, ${probe.completed} returned`
          )
          const stalled = probe.completed
          // The server keeps reading while its write waits: once it has the
          // client's message, the write is still suspended and the buffer
          // no higher (a writer that does not wait would have gone on).
          await c.sendText("are you there?")
          await until("the server to read the client's message", () => probe.received.length === 1)
          expect(probe.completed).toBe(stalled)
          expect(probe.started).toBe(stalled + 1)
          expect(buffered(probe.ws)).toBeLessThanOrEqual(highWaterMark + M + HEADERS)
          // the reader starts: every message, in order, then the close of the body's end
          probe.limit = stalled + 10
          c.socket.resume()
          for (let i = 0; i < probe.limit; i++) expect(numberOf(await c.expectBinary())).toBe(i)
          await c.expectClose(1000)
          expect((await result)._tag).toBe("Success")
        },
        { highWaterMark, maxBufferedAmount: 64 * 1024 * KiB, overflow: "wait" }
      )
    }
  )
})

// -----------------------------------------------------------------------------
// SocketServer
// -----------------------------------------------------------------------------

class Greeting extends Context.Service<Greeting, string>()("test/Greeting") {}

/** Captured log lines of what runs inside it. */
const captureLogs = () => {
  const lines: Array<string> = []
  const logger = Logger.make((log) => {
    lines.push(`${log.logLevel} ${Array.isArray(log.message) ? log.message.join(" ") : String(log.message)}`)
  })
  return {
    lines,
    provide: <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      effect.pipe(
        Effect.provideService(References.CurrentLoggers, new Set([logger])),
        Effect.provideService(References.MinimumLogLevel, "All")
      )
  }
}

/** A SocketServer on 127.0.0.1 with the tests' short timers. */
const makeServer = (options: WebsockSocket.SocketServerOptions = {}) =>
  WebsockSocket.makeSocketServer({ ...TestServer.testDefaults, ...options })

const portOf = (address: SocketServer.SocketServer["Service"]["address"]): number =>
  address._tag === "UnixPathAddress" ? Number.NaN : address.port

describe("makeSocketServer", () => {
  it.live("serves connections made before run; the handler runs with run's services and its CurrentConnection", () =>
    Effect.gen(function*() {
      const server = yield* makeServer({ path: "/ws" })
      const port = portOf(server.address)
      expect(Equal.equals(server.address, NetAddress.inetAddressFromIpStringUnsafe("127.0.0.1", port))).toBe(true)
      // before run: the upgrade succeeds, the message waits
      const early = yield* Effect.promise(() => RawClient.connect(port, { path: "/ws?who=early" }))
      yield* Effect.promise(() => early.sendText("hello"))
      yield* Effect.promise(() => early.untilServerRead())
      const handler = (socket: Socket.Socket) =>
        Effect.scoped(Effect.gen(function*() {
          const greeting = yield* Greeting
          const ws = (yield* WebsockSocket.CurrentConnection)!
          const writer = yield* socket.writer
          const { pull } = yield* socket.reader
          for (;;) {
            for (const message of yield* pull) yield* writer.write(`${greeting} ${ws.request.query.get("who")}: ${String(message)}`)
          }
        }))
      yield* Effect.forkChild(server.run(handler).pipe(Effect.provideService(Greeting, "hi")))
      expect(yield* Effect.promise(() => early.expectText())).toBe("hi early: hello")
      const late = yield* Effect.promise(() => RawClient.connect(port, { path: "/ws?who=late" }))
      yield* Effect.promise(() => late.sendText("there"))
      expect(yield* Effect.promise(() => late.expectText())).toBe("hi late: there")
      // any other path: 404
      const other = yield* Effect.promise(() => RawClient.request(port, { path: "/other" }))
      expect(other.response.status).toBe(404)
      other.destroy()
      // the peer's close ends the handler (its SocketCloseError); the reply carries the peer's code
      for (const c of [early, late]) yield* Effect.promise(() => c.sendClose(4000).then(() => c.expectClose(4000)))
    }).pipe(Effect.scoped))

  it.live("a handler's return closes with 1000, a failure with 1011 (logged), a SocketCloseError with 1000 (not logged); run's interruption with 1001", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const server = yield* makeServer()
      const port = portOf(server.address)
      const handler = (_: Socket.Socket) =>
        Effect.gen(function*() {
          const ws = (yield* WebsockSocket.CurrentConnection)!
          switch (ws.request.query.get("then")) {
            case "return":
              return
            case "fail":
              return yield* Effect.fail("boom")
            case "close-error":
              return yield* new Socket.SocketError({ reason: new Socket.SocketCloseError({ code: 1000 }) })
            default:
              return yield* Effect.never
          }
        })
      const running = yield* Effect.forkChild(server.run(handler))
      const connect = (then: string) => Effect.promise(() => RawClient.connect(port, { path: `/?then=${then}` }))
      const expectClose = (c: RawClient, code: number) => Effect.promise(() => c.expectClose(code))
      yield* expectClose(yield* connect("return"), 1000)
      yield* expectClose(yield* connect("fail"), 1011)
      yield* expectClose(yield* connect("close-error"), 1000)
      const waiting = [yield* connect("wait"), yield* connect("wait")]
      yield* Fiber.interrupt(running)
      for (const c of waiting) yield* expectClose(c, 1001)
    }).pipe(
      Effect.scoped,
      logs.provide,
      Effect.andThen(Effect.sync(() => {
        // the server's own logs are forked: they are written by the end of its scope
        const failures = logs.lines.filter((line) => line.startsWith("Error"))
        expect(failures, logs.lines.join("\n")).toHaveLength(1)
        expect(failures[0]).toContain("handler failed")
      }))
    )
  })

  it.live("bad options fail with SocketServerError whose cause names the option; so does a port in use", () =>
    Effect.gen(function*() {
      const reasonOf = (options: WebsockSocket.SocketServerOptions) =>
        Effect.flip(Effect.scoped(makeServer(options))).pipe(
          Effect.map((error) => {
            expect(error).toBeInstanceOf(SocketServer.SocketServerError)
            expect(error.reason._tag).toBe("SocketServerOpenError")
            expect(error.reason.cause).toBeInstanceOf(ServerError)
            return (error.reason.cause as ServerError).reason
          })
        )
      expect(yield* reasonOf({ maxMessageSize: -1 })).toMatchObject({ _tag: "InvalidOption", option: "maxMessageSize" })
      expect(yield* reasonOf({ path: "no-slash" })).toMatchObject({ _tag: "InvalidOption", option: "path" })
      const taken = yield* Effect.acquireRelease(
        Effect.callback<Net.Server>((resume) => {
          const s = Net.createServer()
          s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
        }),
        (s) => Effect.callback<void>((resume) => void s.close(() => resume(Effect.void)))
      )
      const inUse = yield* reasonOf({ port: (taken.address() as Net.AddressInfo).port })
      expect(inUse).toMatchObject({ _tag: "ListenFailed" })
      expect(String((inUse as { cause: unknown }).cause)).toContain("EADDRINUSE")
    }).pipe(Effect.scoped))
})

// -----------------------------------------------------------------------------
// Effect RPC end to end
// -----------------------------------------------------------------------------

const EchoRpcs = RpcGroup.make(
  Rpc.make("Echo", { payload: { text: Schema.String }, success: Schema.String }),
  Rpc.make("Count", { payload: { n: Schema.Number }, success: Schema.Number, stream: true })
)

/** What the server's Count handler did. */
interface CountProbe {
  emitted: number
  readonly interrupted: Deferred.Deferred<void>
}

const handlers = (probe: CountProbe) =>
  EchoRpcs.toLayer({
    Echo: ({ text }) => Effect.succeed(text),
    // one number a chunk: each waits for the client's acknowledgement of the last
    Count: ({ n }) =>
      Stream.range(1, n, 1).pipe(
        Stream.tap(() => Effect.sync(() => probe.emitted++)),
        Stream.onExit((exit) => Exit.hasInterrupts(exit) ? Deferred.succeed(probe.interrupted, undefined) : Effect.void)
      )
  })

/** The WebSocket clients under Effect's `Socket.layerWebSocket`: Node's global one, and the `ws` package's (which pauses). */
const constructors = [
  ["the global WebSocket", Socket.layerWebSocketConstructorGlobal],
  ["ws", NodeWS.layerWebSocketConstructor]
] as const

/**
 * The RPC server on websock's SocketServer (`layerProtocolSocketServer`,
 * unchanged) at `/rpc`, and an RPC client protocol over Effect's WebSocket
 * socket with `constructor`, both with `serialization`.
 */
const rpcLayer = (
  serialization: Layer.Layer<RpcSerialization.RpcSerialization>,
  constructor: Layer.Layer<Socket.WebSocketConstructor>,
  probe: CountProbe
) => {
  const server = RpcServer.layer(EchoRpcs).pipe(
    Layer.provide(handlers(probe)),
    Layer.provide(RpcServer.layerProtocolSocketServer)
  )
  const client = RpcClient.layerProtocolSocket().pipe(
    Layer.provide(Layer.unwrap(Effect.gen(function*() {
      const { address } = yield* SocketServer.SocketServer
      return Socket.layerWebSocket(`ws://127.0.0.1:${portOf(address)}/rpc`)
    }))),
    Layer.provide(constructor)
  )
  return Layer.mergeAll(server, client).pipe(
    Layer.provide(WebsockSocket.layerSocketServer({ ...TestServer.testDefaults, path: "/rpc" })),
    Layer.provide(serialization)
  )
}

const serializations = [
  ["JSON", RpcSerialization.layerJson],
  ["NDJSON", RpcSerialization.layerNdjson],
  ["JSON-RPC", RpcSerialization.layerJsonRpc()],
  ["NDJSON-RPC", RpcSerialization.layerNdJsonRpc()],
  ["SchemaBinary", RpcSerialization.layerSchemaBinary()]
] as const

/** Runs `body` with an RPC client of `EchoRpcs` connected to a fresh websock server. */
const withRpc = <A, E>(
  serialization: Layer.Layer<RpcSerialization.RpcSerialization>,
  constructor: Layer.Layer<Socket.WebSocketConstructor>,
  body: (client: RpcClient.FromGroup<typeof EchoRpcs, RpcClientError>, probe: CountProbe) => Effect.Effect<A, E, Scope.Scope>
) =>
  Effect.gen(function*() {
    const probe: CountProbe = { emitted: 0, interrupted: yield* Deferred.make<void>() }
    return yield* Effect.gen(function*() {
      const client = yield* RpcClient.make(EchoRpcs)
      return yield* body(client, probe)
    }).pipe(Effect.provide(rpcLayer(serialization, constructor, probe)))
  }).pipe(Effect.scoped, Effect.timeout("10 seconds"))

const clients = serializations.flatMap(([name, serialization]) =>
  constructors.map(([client, constructor]) => [name, client, serialization, constructor] as const)
)

describe.each(clients)("Effect RPC over layerSocketServer (%s, client: %s)", (_, __, serialization, constructor) => {
  it.live("unary calls, concurrent and in order", () =>
    withRpc(serialization, constructor, (client) =>
      Effect.gen(function*() {
        expect(yield* client.Echo({ text: "hello" })).toBe("hello")
        const texts = Array.from({ length: 20 }, (_, i) => `message ${i} é 𝄞`)
        expect(yield* Effect.forEach(texts, (text) => client.Echo({ text }), { concurrency: "unbounded" })).toEqual(texts)
      })))

  it.live("a stream, to its end", () =>
    withRpc(serialization, constructor, (client) =>
      Effect.gen(function*() {
        expect(yield* Stream.runCollect(client.Count({ n: 5 }))).toEqual([1, 2, 3, 4, 5])
        expect(yield* Stream.runCollect(client.Count({ n: 0 }))).toEqual([])
      })))

  it.live("a stream interrupted mid-way stops on the server; the connection goes on", () =>
    withRpc(serialization, constructor, (client, probe) =>
      Effect.gen(function*() {
        const three = yield* Deferred.make<void>()
        const received: Array<number> = []
        const consumer = yield* client.Count({ n: 1_000_000 }).pipe(
          Stream.runForEach((i) =>
            Effect.sync(() => received.push(i)).pipe(Effect.andThen(received.length === 3 ? Deferred.succeed(three, undefined) : Effect.void))
          ),
          Effect.forkChild
        )
        yield* Deferred.await(three)
        yield* Fiber.interrupt(consumer)
        // the client's interrupt reached the server's stream
        yield* Deferred.await(probe.interrupted)
        expect(received.slice(0, 3)).toEqual([1, 2, 3])
        expect(probe.emitted).toBeLessThan(1_000_000)
        expect(yield* client.Echo({ text: "still here" })).toBe("still here")
      })))
})
