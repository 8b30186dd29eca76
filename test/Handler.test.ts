/**
 * The handler API over real TCP (the handler-traps issue): one `describe` per
 * trap, numbered as in the issue. Each test states the new behaviour; on the
 * code before the issue each one fails (the wrong behaviour it shows is in the
 * commit message). Type-level checks of the same API are in
 * `test/Handler.types.ts`.
 *
 * No sleeps as barriers: tests wait for frames on the wire, for observable
 * states (`server.connections`, flags set by handlers) with bounded polls,
 * and for Deferreds resolved by handlers.
 */
import { Buffer } from "node:buffer"
import * as Zlib from "node:zlib"
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { afterEach, describe, expect, it } from "vitest"
import { ServerError, WebSocketError } from "../src/Errors.ts"
import * as Frame from "../src/Frame.ts"
import * as Server from "../src/Server.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { answerClose, numbered, numberOf, readToClose } from "./Limits.helpers.ts"
import { until } from "./support/Wait.ts"
import * as Logs from "./support/Logs.ts"
import { bytes, RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"

afterEach(() => RawClient.destroyAll())

// -----------------------------------------------------------------------------
// helpers
// -----------------------------------------------------------------------------

const KiB = 1024

type Connection = WebSocket.WebSocketConnection

/** `TestServer.withServer`, destroying every client before the shutdown (a failed test does not wait for its handshakes). */
const withServer = (
  options: TestServer.TestOptions,
  body: (port: number, server: Server.RunningServer) => Promise<void>
): Promise<void> =>
  TestServer.withServer(options, async (port, server) => {
    try {
      await body(port, server)
    } finally {
      RawClient.destroyAll()
    }
  })

/** The same with the server's logs captured; `body` may close the server early to read every log line. */
const withLogs = async (options: Partial<Server.Options>, body: (server: Logs.LoggedServer) => Promise<void>): Promise<void> => {
  const server = await Logs.start(options)
  try {
    await body(server)
  } finally {
    RawClient.destroyAll()
    await server.close()
  }
}

const connections = (server: Server.RunningServer): number => Effect.runSync(server.connections)

const untilNoConnections = (server: Server.RunningServer, also: () => boolean = () => true, detail = () => ""): Promise<void> =>
  until("the connection to end", () => connections(server) === 0 && also(), 2_000, () => `${connections(server)} connections open${detail()}`)

/** Runs an effect from the test body, outside any handler; fails after `ms`. */
const run = <A, E>(effect: Effect.Effect<A, E>, ms = 2_000): Promise<A> => Effect.runPromise(Effect.timeout(effect, ms))

/** Starts an effect from the test body; `settled()` is its exit once it has one. */
const observe = <A, E>(effect: Effect.Effect<A, E>): { readonly settled: () => Exit.Exit<A, E> | undefined } => {
  let exit: Exit.Exit<A, E> | undefined = undefined
  void Effect.runPromiseExit(effect).then((e) => {
    exit = e
  })
  return { settled: () => exit }
}

/** The typed error of a failed exit. */
const errorOf = (exit: Exit.Exit<unknown, unknown> | undefined): unknown =>
  exit !== undefined && Exit.isFailure(exit) ? Option.getOrUndefined(Cause.findErrorOption(exit.cause)) : undefined

/** Text messages as masked frames in ONE write, so that they reach the server in one read (one batch). */
const burst = (c: RawClient, texts: ReadonlyArray<string>): Promise<void> =>
  c.write(Buffer.concat(texts.map((text) => c.frame(Frame.Opcode.Text, text))))

/** Connection handles by the `name` query parameter of their request. */
const registry = () => {
  const handles = new Map<string, Connection>()
  return {
    handles,
    register: (ws: Connection) => Effect.sync(() => void handles.set(ws.request.query.get("name") ?? "?", ws)),
    get: async (name: string): Promise<Connection> => {
      await until(`connection "${name}" to register`, () => handles.has(name))
      return handles.get(name)!
    }
  }
}

const isProblem = (e: Logs.Entry): boolean => e.level === "Warn" || e.level === "Error" || e.level === "Fatal"

// -----------------------------------------------------------------------------

describe("1. a handler that never reads its messages ends with its connection", () => {
  /** Push-only: a welcome, then nothing; its finalizer counts its runs. */
  const pushOnly = (finalized: { count: number }) => (ws: Connection) =>
    Effect.gen(function*() {
      yield* Effect.addFinalizer(() => Effect.sync(() => void finalized.count++))
      yield* ws.send("welcome")
      return yield* Effect.never
    })

  it.each([
    ["closes cleanly", async (c: RawClient) => {
      await c.sendClose(1000)
      await c.expectClose(1000)
    }],
    ["destroys its TCP socket", async (c: RawClient) => c.destroy()]
  ] as const)("its client %s: the handler is interrupted, its finalizer runs once, connections drops to 0", async (_, end) => {
    const finalized = { count: 0 }
    await withServer({ routes: { "/ws": pushOnly(finalized) } }, async (port, server) => {
      const c = await RawClient.connect(port)
      expect(await c.expectText()).toBe("welcome")
      expect(connections(server)).toBe(1)
      expect(finalized.count).toBe(0)
      await end(c)
      await untilNoConnections(server, () => finalized.count > 0, () => `, finalizer ran ${finalized.count} times`)
    })
    // and not once more at shutdown
    expect(finalized.count).toBe(1)
  })
})

describe("2. reading the first message apart from the rest loses nothing", () => {
  it("Stream.runHead(messages), then Stream.runForEach(messages): the messages of the same batch are echoed, in order", async () => {
    const handler = (ws: Connection) =>
      Effect.gen(function*() {
        const token = yield* Stream.runHead(ws.messages)
        yield* ws.send(`token ${Option.getOrElse(token, () => "none")}`)
        yield* Stream.runForEach(ws.messages, (m) => ws.send(m))
      })
    await withServer({ routes: { "/ws": handler } }, async (port) => {
      const c = await RawClient.connect(port)
      await burst(c, ["secret", "m1", "m2"])
      expect(await c.expectText()).toBe("token secret")
      expect(await c.expectText()).toBe("m1")
      expect(await c.expectText()).toBe("m2")
      await c.sendText("m3")
      expect(await c.expectText()).toBe("m3")
      await c.sendClose(1000)
      await c.expectClose(1000)
    })
  })

  it("ws.receive takes exactly one message, the stream gets the rest; after the end, receive fails with ConnectionClosed", async () => {
    const peers = registry()
    const handler = (ws: Connection) =>
      Effect.gen(function*() {
        yield* peers.register(ws)
        const first = yield* ws.receive
        yield* ws.send(`first ${String(first)}`)
        yield* Stream.runForEach(ws.messages, (m) => ws.send(m))
      })
    await withServer({ routes: { "/ws": handler } }, async (port) => {
      const c = await RawClient.connect(port, { path: "/ws?name=r" })
      await burst(c, ["secret", "m1", "m2"])
      expect(await c.expectText()).toBe("first secret")
      expect(await c.expectText()).toBe("m1")
      expect(await c.expectText()).toBe("m2")
      await c.sendClose(1000)
      await c.expectClose(1000)
      // called after the end (from outside the handler, which may be gone): a typed failure, not a hang
      const ws = await peers.get("r")
      const error = await run(Effect.flip(ws.receive))
      expect(error).toBeInstanceOf(WebSocketError)
      expect(error.reason).toMatchObject({ _tag: "ConnectionClosed", code: 1000, connection: ws.id })
    })
  })

  it("a second concurrent consumer of messages dies at once with \"already being consumed\"; the first keeps its messages", async () => {
    let second: Option.Option<Exit.Exit<void, never>> | undefined = undefined
    const handler = (ws: Connection) =>
      Effect.gen(function*() {
        const gotFirst = Deferred.makeUnsafe<void>()
        const first = yield* Effect.forkChild(Stream.runForEach(ws.messages, (m) =>
          Effect.andThen(ws.send(`first consumer: ${String(m)}`), Deferred.succeed(gotFirst, undefined))))
        // the first consumer is running: it has taken a message and come back for more
        yield* Deferred.await(gotFirst)
        second = yield* Stream.runDrain(ws.messages).pipe(Effect.exit, Effect.timeoutOption(1_000))
        yield* Fiber.join(first)
      })
    await withServer({ routes: { "/ws": handler } }, async (port) => {
      const c = await RawClient.connect(port)
      await c.sendText("one")
      expect(await c.expectText()).toBe("first consumer: one")
      await until("the second consumer to end", () => second !== undefined)
      expect(Option.isSome(second!), "the second consumer hung").toBe(true)
      const exit = Option.getOrThrow(second!)
      expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause), String(exit)).toBe(true)
      const defect = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      expect(defect instanceof Error ? defect.message : String(defect)).toContain("already being consumed")
      await c.sendText("two")
      expect(await c.expectText()).toBe("first consumer: two")
      await c.sendClose(1000)
      await c.expectClose(1000)
    })
  })
})

describe("3. errors of one connection are not another's normal end", () => {
  it("A relays to B, which has closed: A's handler fails with B's ConnectionClosed (connection = B's id); A is closed with 1011 and it is logged", async () => {
    const peers = registry()
    let relayError: unknown = undefined
    const relay = (ws: Connection) =>
      Effect.andThen(
        peers.register(ws),
        Stream.runForEach(ws.messages, (m) => peers.handles.get("B")!.send(m).pipe(Effect.tapError((e) => Effect.sync(() => void (relayError = e)))))
      )
    const peer = (ws: Connection) => Effect.andThen(peers.register(ws), Stream.runDrain(ws.messages))
    await withLogs({ routes: { "/peer": peer, "/relay": relay } }, async (server) => {
      const b = await RawClient.connect(server.port, { path: "/peer?name=B" })
      const B = await peers.get("B")
      await b.sendClose(1000)
      await b.expectClose(1000)
      expect(await run(B.closed)).toMatchObject({ code: 1000, clean: true, initiator: "remote" })
      const a = await RawClient.connect(server.port, { path: "/relay?name=A" })
      const A = await peers.get("A")
      await a.sendText("hello")
      await a.expectClose(1011)
      expect(relayError).toBeInstanceOf(WebSocketError)
      expect((relayError as WebSocketError).reason).toMatchObject({ _tag: "ConnectionClosed", connection: B.id })
      expect(B.id).not.toBe(A.id)
      await server.close()
      const logged = server.of(A.id).filter(isProblem)
      expect(logged.map((e) => e.level), server.dump()).toEqual(["Error"])
      expect(server.of(B.id).filter(isProblem), server.dump()).toEqual([])
    })
  })

  it("a fan-out with trySend over [B (closed), C]: \"closed\" for B, \"sent\" for C, C gets the message, A stays open", async () => {
    const peers = registry()
    const peer = (ws: Connection) => Effect.andThen(peers.register(ws), Stream.runDrain(ws.messages))
    const fanOut = (ws: Connection) =>
      Stream.runForEach(ws.messages, (m) =>
        Effect.gen(function*() {
          const results: Array<string> = []
          for (const name of ["B", "C"]) results.push(yield* peers.handles.get(name)!.trySend(m))
          yield* ws.send(JSON.stringify(results))
        }))
    await withServer({ routes: { "/peer": peer, "/fan": fanOut } }, async (port) => {
      const b = await RawClient.connect(port, { path: "/peer?name=B" })
      await peers.get("B")
      await b.sendClose(1000)
      await b.expectClose(1000)
      const c = await RawClient.connect(port, { path: "/peer?name=C" })
      await peers.get("C")
      const a = await RawClient.connect(port, { path: "/fan" })
      for (const text of ["hello", "again"]) {
        await a.sendText(text)
        expect(JSON.parse(await a.expectText())).toEqual(["closed", "sent"])
        expect(await c.expectText()).toBe(text)
      }
      await a.sendClose(1000)
      await a.expectClose(1000)
      await c.sendClose(1000)
      await c.expectClose(1000)
    })
  })
})

describe("4. a peer that never reads does not stall a broadcaster using trySend", () => {
  it("200 messages of 64 KiB to a silent and a healthy peer with trySend (drop): the healthy one gets all 200, the silent one's are dropped past maxBufferedAmount, the broadcaster finishes", async () => {
    const N = 200
    const size = 64 * KiB
    const maxBufferedAmount = 256 * KiB
    const peers = registry()
    const silentResults: Array<string> = []
    const healthyResults: Array<string> = []
    const finished = Deferred.makeUnsafe<void>()
    // The healthy peer paces the broadcast: one message per "next" it sends,
    // so that its own buffer never holds more than one message.
    const broadcaster = (ws: Connection) =>
      Effect.gen(function*() {
        const silent = peers.handles.get("silent")!
        let i = 0 // the number of the next message
        yield* ws.messages.pipe(
          Stream.take(N),
          Stream.runForEach(() =>
            Effect.gen(function*() {
              const message = numbered(i++, size)
              silentResults.push(yield* silent.trySend(message, { overflow: "drop" }))
              healthyResults.push(yield* ws.trySend(message, { overflow: "drop" }))
            })
          )
        )
        yield* Deferred.succeed(finished, undefined)
        yield* Stream.runDrain(ws.messages)
      })
    const options = {
      // a healthy peer holds at most one message (64 KiB and its header), well below the mark
      highWaterMark: 192 * KiB,
      maxBufferedAmount,
      routes: { "/silent": (ws: Connection) => Effect.andThen(peers.register(ws), Effect.never), "/healthy": broadcaster }
    }
    await withServer(options, async (port) => {
      const s = await RawClient.connect(port, { path: "/silent?name=silent" })
      s.socket.pause()
      const silent = await peers.get("silent")
      const h = await RawClient.connect(port, { path: "/healthy" })
      for (let i = 0; i < N; i++) {
        await h.sendText("next")
        const message = await h.expectBinary()
        expect(numberOf(message)).toBe(i)
        expect(message.length).toBe(size)
      }
      await run(Deferred.await(finished))
      expect(healthyResults).toEqual(Array.from({ length: N }, () => "sent"))
      expect(silentResults.length).toBe(N)
      expect(silentResults[0]).toBe("sent")
      expect(silentResults.filter((r) => r === "dropped").length).toBeGreaterThan(0)
      expect(silentResults.filter((r) => r !== "sent" && r !== "queued" && r !== "dropped")).toEqual([])
      // the silent peer's buffer stays near the ceiling (one message and a header above it at most)
      expect(Effect.runSync(silent.bufferedAmount)).toBeLessThanOrEqual(maxBufferedAmount + size + 16)
      await h.sendClose(1000)
      await h.expectClose(1000)
      s.destroy()
    })
  })
})

describe("5. close validates its code and reason", () => {
  /** Echoes, except `close {"code":..,"reason":..}`: calls close and reports a refusal with its reason's tag. */
  const handler = (ws: Connection) =>
    Stream.runForEach(ws.messages, (m) => {
      if (typeof m !== "string" || !m.startsWith("close ")) return ws.send(m)
      const { code, reason } = JSON.parse(m.slice("close ".length)) as { code: number; reason: string }
      return Effect.exit(ws.close(code, reason)).pipe(Effect.flatMap((exit) => {
        if (Exit.isSuccess(exit)) return Effect.void
        const error = errorOf(exit)
        return ws.send(`refused ${error instanceof WebSocketError ? error.reason._tag : String(error)}`)
      }))
    })
  const command = (code: number, reason = "") => `close ${JSON.stringify({ code, reason })}`

  /** Refused, nothing sent, still open; then a valid close arrives exactly. */
  const refusedThenClose = async (c: RawClient, refused: string, code: number, reason: string) => {
    await c.sendText(refused)
    expect(await c.expectText()).toBe("refused InvalidClose")
    await c.sendText("still open")
    expect(await c.expectText()).toBe("still open")
    await c.sendText(command(code, reason))
    expect(await c.expectClose(code)).toEqual({ code, reason })
  }

  it.each([
    [1005, 1000],
    [999, 1003],
    [1006, 1007],
    [1015, 1014],
    [1004, 3000],
    [2000, 4999],
    [2999, 1001],
    [5000, 4001]
  ])("close(%i) fails with InvalidClose and sends nothing; close(%i, \"bye\") then arrives exactly", async (invalid, valid) => {
    await withServer({ routes: { "/ws": handler } }, async (port) => {
      const c = await RawClient.connect(port)
      await refusedThenClose(c, command(invalid), valid, "bye")
    })
  })

  it("a reason of 124 UTF-8 bytes (62 characters) is refused with InvalidClose; one of 123 bytes arrives exactly", async () => {
    const tooLong = "é".repeat(62)
    const longest = "é".repeat(61) + "a"
    expect([bytes(tooLong).length, bytes(longest).length]).toEqual([124, 123])
    await withServer({ routes: { "/ws": handler } }, async (port) => {
      const c = await RawClient.connect(port)
      await refusedThenClose(c, command(4001, tooLong), 4001, longest)
    })
  })
})

describe("6. routes with path parameters; invalid options fail make", () => {
  const describeRoute = (route: string) => (ws: Connection) =>
    ws.send(JSON.stringify({ route, params: ws.request.params, x: ws.request.query.get("x") }))
  const routes = {
    "/rooms/:id": describeRoute("/rooms/:id"),
    "/rooms/new": describeRoute("/rooms/new"),
    "/u/:user/p/:post": describeRoute("/u/:user/p/:post")
  }
  const answer = async (port: number, path: string): Promise<unknown> => {
    const c = await RawClient.connect(port, { path })
    const text = await c.expectText()
    await c.expectClose(1000)
    return JSON.parse(text)
  }
  const status = async (port: number, path: string): Promise<number> => {
    const c = await RawClient.request(port, { path })
    const result = c.response.status
    c.destroy()
    return result
  }

  it.each([
    ["/rooms/42", { route: "/rooms/:id", params: { id: "42" }, x: null }],
    ["/rooms/42?x=1", { route: "/rooms/:id", params: { id: "42" }, x: "1" }],
    ["/rooms/a%20b", { route: "/rooms/:id", params: { id: "a b" }, x: null }],
    ["/rooms/%E2%82%AC", { route: "/rooms/:id", params: { id: "€" }, x: null }],
    ["/rooms/old", { route: "/rooms/:id", params: { id: "old" }, x: null }],
    ["/rooms/new", { route: "/rooms/new", params: {}, x: null }],
    ["/u/ann/p/7", { route: "/u/:user/p/:post", params: { user: "ann", post: "7" }, x: null }]
  ])("%s is served with %j", async (path, expected) => {
    await withServer({ routes }, async (port) => {
      expect(await answer(port, path)).toEqual(expected)
    })
  })

  it("a parameter is one whole segment: /rooms/42 matches; /rooms/42/, /rooms/, /rooms and /rooms/42/x are 404", async () => {
    await withServer({ routes }, async (port) => {
      expect(await answer(port, "/rooms/42")).toEqual({ route: "/rooms/:id", params: { id: "42" }, x: null })
      for (const path of ["/rooms/42/", "/rooms/", "/rooms", "/rooms/42/x"]) expect(await status(port, path), path).toBe(404)
    })
  })

  const makeFails = async (options: Server.Options, option: string) => {
    const exit = await Effect.runPromise(Effect.scoped(Effect.exit(Server.make({ ...TestServer.testDefaults, ...options }))))
    expect(Exit.isFailure(exit), "make succeeded").toBe(true)
    const error = errorOf(exit)
    expect(error).toBeInstanceOf(ServerError)
    expect((error as ServerError).reason).toMatchObject({ _tag: "InvalidOption", option })
  }

  it.each(["rooms", "/a/*", "/a//b", "/a/:"])("the route key %j fails make with InvalidOption (routes)", async (key) => {
    await makeFails({ routes: { "/ok": TestServer.echo, [key]: TestServer.echo } }, "routes")
  })

  it.each([
    ["maxMessageSize", { maxMessageSize: -1 }],
    ["pingInterval", { pingInterval: Number.NaN }],
    ["compression.serverMaxWindowBits", { compression: { serverMaxWindowBits: 7 } }],
    // zlib would throw on the first compressed message (RFC 7692 allows 8-15)
    ["compression.clientMaxWindowBits", { compression: { clientMaxWindowBits: 16 } }],
    ["compression.syncLimit", { compression: { syncLimit: -1 } }]
  ] as const)("a bad %s fails make with InvalidOption naming it", async (option, bad) => {
    await makeFails({ routes: { "/ws": TestServer.echo }, ...bad }, option)
  })
})

// 7. (the server's requirements inferred from its handlers) and 10. (the
// handle's name, WebSocketConnection) are type-level: test/Handler.types.ts.

describe("8. logs say what happened", () => {
  it("overflow \"close\": 1008 on the wire, and the log says 1008 (never 1011)", async () => {
    const peers = registry()
    let overflowed = false
    const producer = (ws: Connection) =>
      Effect.andThen(
        peers.register(ws),
        Effect.gen(function*() {
          for (let i = 0;; i++) yield* ws.send(numbered(i, 16 * KiB))
        }).pipe(Effect.tapError(() => Effect.sync(() => void (overflowed = true))))
      )
    const options = { overflow: "close", highWaterMark: 64 * KiB, maxBufferedAmount: 256 * KiB, routes: { "/ws": producer } } as const
    await withLogs(options, async (server) => {
      const c = await RawClient.connect(server.port, { path: "/ws?name=o" })
      c.socket.pause()
      const ws = await peers.get("o")
      await until("send to fail with BufferOverflow", () => overflowed)
      c.socket.resume()
      expect((await readToClose(c, { skipData: true })).code).toBe(1008)
      await answerClose(c, 1008)
      await server.close()
      const logged = server.of(ws.id).filter(isProblem)
      expect(logged.length, server.dump()).toBeGreaterThan(0)
      // the code may be in the message or in an annotation; the pretty cause is searched for 1011 too
      const said = (e: Logs.Entry) => `${e.message}\n${JSON.stringify(e.annotations)}`
      expect(logged.some((e) => /\b1008\b/.test(said(e))), server.dump()).toBe(true)
      for (const e of logged) expect(`${said(e)}\n${e.cause}`).not.toMatch(/\b1011\b/)
    })
  })

  it("a handler failing with a tagged error is logged once, with the error's fields", async () => {
    class Oops extends Data.TaggedError("Oops")<{ readonly userId: string }> {}
    const peers = registry()
    const handler = (ws: Connection) =>
      Effect.andThen(peers.register(ws), Effect.andThen(Stream.runHead(ws.messages), Effect.fail(new Oops({ userId: "u-42" }))))
    await withLogs({ routes: { "/ws": handler } }, async (server) => {
      const c = await RawClient.connect(server.port, { path: "/ws?name=oops" })
      const ws = await peers.get("oops")
      await c.sendText("go")
      await c.expectClose(1011)
      await server.close()
      const logged = server.of(ws.id).filter(isProblem)
      expect(logged.map((e) => e.level), server.dump()).toEqual(["Error"])
      expect(logged[0]!.text).toContain("Oops")
      expect(logged[0]!.text).toContain("userId")
      expect(logged[0]!.text).toContain("u-42")
    })
  })
})

describe("9. ping and terminate", () => {
  it("ping resolves with the round-trip time when the matching Pong arrives; fails with ConnectionClosed when the connection closes first", async () => {
    const peers = registry()
    await withServer({ routes: { "/ws": (ws: Connection) => Effect.andThen(peers.register(ws), TestServer.echo(ws)) } }, async (port) => {
      const c = await RawClient.connect(port, { path: "/ws?name=p" })
      const ws = await peers.get("p")
      const started = performance.now()
      const first = observe(ws.ping(bytes("rtt-1")))
      expect(Buffer.from((await c.expectFrame(Frame.Opcode.Ping)).payload).toString()).toBe("rtt-1")
      // an unsolicited Pong with another payload is not the answer
      await c.pong("other")
      await c.sendText("m")
      expect(await c.expectText()).toBe("m")
      expect(first.settled()).toBeUndefined()
      await c.pong("rtt-1")
      await until("ping to resolve", () => first.settled() !== undefined)
      const elapsed = performance.now() - started
      const exit = first.settled()!
      expect(Exit.isSuccess(exit), String(exit)).toBe(true)
      const rtt = Exit.isSuccess(exit) ? exit.value : Number.NaN
      expect(rtt).toBeGreaterThanOrEqual(0)
      expect(rtt).toBeLessThanOrEqual(elapsed)
      // a Ping that is never answered: the connection closes first
      const second = observe(ws.ping(bytes("rtt-2")))
      await c.expectFrame(Frame.Opcode.Ping)
      await c.sendClose(1000)
      await c.expectClose(1000)
      await until("the unanswered ping to fail", () => second.settled() !== undefined)
      const error = errorOf(second.settled())
      expect(error).toBeInstanceOf(WebSocketError)
      expect((error as WebSocketError).reason).toMatchObject({ _tag: "ConnectionClosed", connection: ws.id })
    })
  })

  it("terminate drops the connection without a Close frame: the outcome is 1006, not clean, initiated locally", async () => {
    const peers = registry()
    await withServer({ routes: { "/ws": (ws: Connection) => Effect.andThen(peers.register(ws), TestServer.echo(ws)) } }, async (port, server) => {
      const c = await RawClient.connect(port, { path: "/ws?name=t" })
      const ws = await peers.get("t")
      await c.sendText("hi")
      expect(await c.expectText()).toBe("hi")
      await run(ws.terminate)
      await expect(c.nextFrame()).rejects.toThrow("the server closed the connection instead of sending a frame")
      expect(await run(ws.closed)).toMatchObject({ code: 1006, clean: false, initiator: "local" })
      await untilNoConnections(server)
    })
  })
})

describe("compressed sends race the close like uncompressed ones", () => {
  const offer = { allowRsv1: true, headers: { "Sec-WebSocket-Extensions": "permessage-deflate" } }
  const text = "compress me ".repeat(100)

  it.each([
    ["send", (ws: Connection) => ws.send(text)],
    ["sendAll of three", (ws: Connection) => ws.sendAll([text, `${text}!`, `${text}?`])]
  ] as const)("%s started, then close in the same turn: the send fails with ConnectionClosed; only the Close goes out", async (_, send) => {
    const peers = registry()
    const routes = { "/ws": (ws: Connection) => Effect.andThen(peers.register(ws), TestServer.echo(ws)) }
    // syncLimit 0: every deflate on zlib's thread pool
    await withServer({ routes, compression: { threshold: 0, syncLimit: 0 } }, async (port) => {
      const c = await RawClient.connect(port, { path: "/ws?name=z", ...offer })
      const ws = await peers.get("z")
      // Both start at once (runPromiseExit runs them up to their first wait):
      // the deflate is on zlib's thread pool when our Close goes out.
      const sending = observe(send(ws))
      const closing = observe(ws.close(1000))
      // the next frame is the Close: no data frame went out
      await c.expectClose(1000)
      await until("the send to settle", () => sending.settled() !== undefined && closing.settled() !== undefined)
      const error = errorOf(sending.settled())
      expect(error, String(sending.settled())).toBeInstanceOf(WebSocketError)
      expect((error as WebSocketError).reason).toMatchObject({ _tag: "ConnectionClosed", connection: ws.id })
      expect(closing.settled()).toMatchObject({ _tag: "Success", value: { code: 1000, clean: true, initiator: "local" } })
    })
  })

  it("in one read, a compressed message that fails to inflate, then a Ping: the Pong goes out first, then Close 1007, nothing after it", async () => {
    await withServer({ routes: { "/ws": TestServer.echo }, compression: {} }, async (port) => {
      const c = await RawClient.connect(port, offer)
      // inflated at once (it is small), but only after the rest of the read's actions
      await c.write(Buffer.concat([c.frame(0x1, Uint8Array.of(0xff, 0xff, 0xff, 0xff), { rsv1: true }), c.frame(0x9, "p")]))
      expect(new TextDecoder().decode(await c.expectPong())).toBe("p")
      await c.expectClose(1007)
    })
  })

  it("in one read, a compressed message inflated at once, then an uncompressed one: delivered in that order", async () => {
    await withServer({ routes: { "/ws": TestServer.echo }, compression: {} }, async (port) => {
      const c = await RawClient.connect(port, offer)
      const first = "first, compressed ".repeat(10)
      const deflated = Zlib.deflateRawSync(Buffer.from(first), { finishFlush: Zlib.constants.Z_SYNC_FLUSH }).subarray(0, -4)
      await c.write(Buffer.concat([c.frame(0x1, deflated, { rsv1: true }), c.frame(0x1, "second, plain")]))
      expect(await c.expectText()).toBe(first)
      expect(await c.expectText()).toBe("second, plain")
    })
  })

  it("a send deflated at once (below syncLimit), then close in the same turn: the message goes out before the Close, like an uncompressed one", async () => {
    const peers = registry()
    const routes = { "/ws": (ws: Connection) => Effect.andThen(peers.register(ws), TestServer.echo(ws)) }
    await withServer({ routes, compression: { threshold: 0 } }, async (port) => {
      const c = await RawClient.connect(port, { path: "/ws?name=y", ...offer })
      const ws = await peers.get("y")
      const sending = observe(ws.send(text))
      const closing = observe(ws.close(1000))
      const frame = await c.nextFrame()
      expect(frame.opcode).toBe(0x1)
      expect(frame.rsv1).toBe(true)
      expect(new TextDecoder().decode(Zlib.inflateRawSync(Buffer.concat([frame.payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: Zlib.constants.Z_SYNC_FLUSH }))).toBe(text)
      await c.expectClose(1000)
      await until("both to settle", () => sending.settled() !== undefined && closing.settled() !== undefined)
      expect(sending.settled()).toMatchObject({ _tag: "Success" })
      expect(closing.settled()).toMatchObject({ _tag: "Success", value: { code: 1000, clean: true, initiator: "local" } })
    })
  })
})
