/**
 * Faults over real TCP (issue 6): a handler that fails or dies closes only
 * its own connection with 1011; nothing is lost around a clean close (both
 * directions); errors are typed, a handler failure is logged exactly once
 * with the connection's id, and no log line ever carries payload bytes
 * (captured with a custom Effect Logger).
 */
import { Buffer } from "node:buffer"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { WebSocketError } from "../src/Errors.ts"
import * as Frame from "../src/Frame.ts"
import * as Server from "../src/Server.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { numbered, numberOf } from "./Limits.helpers.ts"
import { hex } from "./support/Bytes.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"
import { until } from "./support/Wait.ts"

afterEach(() => RawClient.destroyAll())

/** Waits for the first message, then runs `then`. */
const afterFirstMessage = (ws: WebSocket.WebSocket, then: Effect.Effect<unknown, unknown>) =>
  Effect.andThen(ws.messages.pipe(Stream.take(1), Stream.runDrain), then)

const echoes = async (c: RawClient, text: string): Promise<void> => {
  await c.sendText(text)
  expect(await c.expectText()).toBe(text)
}

describe("crash isolation", () => {
  let server: TestServer.StartedServer
  /** The close outcome each crashing route's connection reported, by path. */
  const outcomes = new Map<string, WebSocket.CloseOutcome>()
  /** `handler`, with its connection's close outcome recorded under `path`. */
  const recorded = (path: string, handler: (ws: WebSocket.WebSocket) => Effect.Effect<unknown, unknown>) => (ws: WebSocket.WebSocket) =>
    Effect.andThen(
      Effect.forkDetach(Effect.andThen(ws.closed, (outcome) => Effect.sync(() => outcomes.set(path, outcome)))),
      handler(ws)
    )
  beforeAll(async () => {
    server = await TestServer.start({
      logLevel: "None",
      closeTimeout: 300,
      routes: {
        "/ws": TestServer.echo,
        "/fail": recorded("/fail", (ws) => afterFirstMessage(ws, Effect.fail(new Error("handler gave up")))),
        "/die": recorded("/die", (ws) => afterFirstMessage(ws, Effect.die(new Error("defect")))),
        "/throw": recorded("/throw", (ws) =>
          afterFirstMessage(
            ws,
            Effect.sync(() => {
              throw new Error("thrown inside an Effect")
            })
          )),
        // a bug in the handler function itself, before it returns an Effect
        "/throw-early": () => {
          throw new Error("thrown before returning an Effect")
        }
      }
    })
  })
  afterAll(() => server.close())

  it.each(["/fail", "/die", "/throw", "/throw-early"])(
    "%s: closes its own connection with 1011; another connection keeps echoing; the server keeps accepting",
    async (path) => {
      const other = await RawClient.connect(server.port)
      await echoes(other, "before")
      const crashing = await RawClient.connect(server.port, { path })
      await crashing.sendText("go")
      await crashing.expectClose(1011)
      if (path !== "/throw-early") {
        // the handler's own view: a clean close it initiated, with 1011
        await until("the crashed connection's close outcome", () => outcomes.has(path))
        expect(outcomes.get(path)).toMatchObject({ code: 1011, clean: true, initiator: "local" })
      }
      await echoes(other, "after")
      const fresh = await RawClient.connect(server.port)
      await echoes(fresh, "new")
      for (const c of [other, fresh]) {
        await c.sendClose(1000)
        await c.expectClose(1000)
      }
    }
  )
})

describe("nothing lost around a clean close", () => {
  const N = 300
  /** Mostly small messages, every tenth one 64 KiB so that the buffers fill. */
  const sizeOf = (i: number): number => (i % 10 === 0 ? 64 * 1024 : 100)

  it.each([
    ["sends N messages then calls close", (ws: WebSocket.WebSocket) =>
      Effect.gen(function*() {
        for (let i = 0; i < N; i++) yield* ws.send(numbered(i, sizeOf(i)))
        yield* ws.close(1000, "done")
      })],
    ["sends N messages in one sendAll then returns", (ws: WebSocket.WebSocket) =>
      ws.sendAll(Array.from({ length: N }, (_, i) => numbered(i, sizeOf(i))))]
  ] as const)("a handler that %s: every message reaches the peer before the Close", async (_, handler) => {
    await TestServer.withServer({ highWaterMark: 64 * 1024, closeTimeout: 1_000, routes: { "/ws": handler } }, async (port) => {
      const c = await RawClient.connect(port)
      for (let i = 0; i < N; i++) {
        const message = await c.expectBinary()
        expect(numberOf(message)).toBe(i)
        expect(message.length).toBe(sizeOf(i))
      }
      await c.expectClose(1000)
    })
  })

  it("messages before the peer's Close (all in one write) all reach a slow handler, in order", async () => {
    const received: Array<number> = []
    let outcome: WebSocket.CloseOutcome | undefined = undefined
    let client: RawClient | undefined = undefined
    const read = () => client?.serverBytesRead() ?? 0
    let behind = 0 // batches taken while the server had not yet read the whole write (the Close included)
    await TestServer.withServer(
      {
        inboxHighWaterMark: 4,
        closeTimeout: 2_000,
        routes: {
          "/ws": (ws) =>
            Effect.gen(function*() {
              // A slow handler, by construction: it holds each batch until the
              // server has read on (taking the batch let it resume) or has read
              // everything. So the last messages and the Close are read while
              // a batch is held, and wait in the inbox together.
              yield* ws.messages.pipe(Stream.runForEachArray((batch) =>
                Effect.gen(function*() {
                  const taken = read()
                  // The stream's first pull takes one message (the rest stays
                  // for the next consumer), so the inbox is still full: the
                  // server reads on only once a whole batch is taken.
                  if (received.length > 0) {
                    if (taken < client!.bytesSent) behind++
                    yield* Effect.promise(() => until("the server to read on while a batch is held", () => read() > taken || read() === client!.bytesSent))
                  }
                  for (const m of batch) received.push(numberOf(m))
                })
              ))
              outcome = yield* ws.closed
            })
        }
      },
      async (port) => {
        const c = client = await RawClient.connect(port)
        const frames = Array.from({ length: N }, (_, i) => c.frame(Frame.Opcode.Binary, numbered(i, 1024)))
        await c.write(Buffer.concat([...frames, c.frame(Frame.Opcode.Close, Uint8Array.of(0x03, 0xe8))]))
        await until("the handler to receive every message", () => received.length >= N, 3_000, () => `${received.length} of ${N}`)
        expect(received).toEqual(Array.from({ length: N }, (_, i) => i))
        // the handler was behind: batches were taken while the rest still waited
        expect(behind).toBeGreaterThanOrEqual(2)
        await c.expectClose(1000, { reply: false })
        await until("the handler to see the outcome", () => outcome !== undefined)
        expect(outcome).toMatchObject({ code: 1000, clean: true, initiator: "remote" })
      }
    )
  })
})

describe("errors are typed and logged once, without payload bytes", () => {
  interface Entry {
    readonly level: string
    readonly annotations: Readonly<Record<string, unknown>>
    /** Everything the entry would print: logfmt, JSON, and the pretty cause. */
    readonly text: string
  }
  const SECRET = "SECRET-PAYLOAD-7f3a9c"
  const secretBytes = Buffer.from(SECRET)
  /** Ways a payload could be rendered in a log line. */
  const renderings = [
    SECRET,
    hex(secretBytes),
    secretBytes.toString("base64"),
    Array.from(secretBytes.subarray(0, 8)).join(","),
    Array.from(secretBytes.subarray(0, 8)).join(", ")
  ]
  const entries: Array<Entry> = []
  /** Connection ids by name. */
  const ids: Record<string, number> = {}
  let lateError: unknown = undefined

  // One server, one connection per case, all with the payload on the wire;
  // the server is shut down before the assertions, so that every log is in.
  beforeAll(async () => {
    const capture = Logger.make((options) => {
      entries.push({
        level: options.logLevel,
        annotations: { ...options.fiber.getRef(References.CurrentLogAnnotations) },
        text: [Logger.formatLogFmt.log(options), Logger.formatJson.log(options), Cause.pretty(options.cause)].join("\n")
      })
    })
    const named = (ws: WebSocket.WebSocket, name: string) => Effect.sync(() => ids[name] = ws.id)
    const scope = Scope.makeUnsafe()
    const server = await Effect.runPromise(
      Server.make({
        ...TestServer.testDefaults,
        maxMessageSize: 1024,
        closeTimeout: 300,
        routes: {
          "/ws": (ws) => Effect.andThen(named(ws, ws.request.query.get("name") ?? "?"), TestServer.echo(ws)),
          "/fail": (ws) => Effect.andThen(named(ws, "fail"), afterFirstMessage(ws, Effect.fail(new Error("handler gave up")))),
          "/die": (ws) => Effect.andThen(named(ws, "die"), afterFirstMessage(ws, Effect.die(new Error("defect")))),
          "/throw-early": (ws) => {
            ids.early = ws.id
            throw new Error("thrown before returning an Effect")
          },
          // sends after the peer closed: fails with ConnectionClosed, which is not an error to log
          "/late": (ws) =>
            Effect.gen(function*() {
              ids.late = ws.id
              yield* ws.closed
              lateError = yield* Effect.flip(ws.send("too late"))
              return yield* Effect.fail(lateError)
            })
        }
      }).pipe(
        Scope.provide(scope),
        Effect.provideService(References.MinimumLogLevel, "All"),
        Effect.provideService(References.CurrentLoggers, new Set([capture]))
      )
    )
    const port = server.address.port
    try {
      const fail = await RawClient.connect(port, { path: "/fail" })
      await fail.sendText(SECRET)
      await fail.expectClose(1011)
      const die = await RawClient.connect(port, { path: "/die" })
      await die.sendBinary(secretBytes)
      await die.expectClose(1011)
      const early = await RawClient.connect(port, { path: "/throw-early" })
      await early.sendText(SECRET)
      await early.expectEnd()
      // violations whose frames carry the payload: invalid UTF-8 (1007), too big (1009), bad close code (1002)
      const utf8 = await RawClient.connect(port, { path: "/ws?name=utf8" })
      await utf8.sendText(Buffer.concat([secretBytes, Uint8Array.of(0xff)]))
      await utf8.expectClose(1007)
      const big = await RawClient.connect(port, { path: "/ws?name=big" })
      await big.sendText(SECRET.repeat(100))
      await big.expectClose(1009)
      const code = await RawClient.connect(port, { path: "/ws?name=code" })
      await code.sendClose(999, SECRET)
      await code.expectClose(1002)
      // a clean close with the payload as its reason
      const clean = await RawClient.connect(port, { path: "/ws?name=clean" })
      await clean.sendText(SECRET)
      expect(await clean.expectText()).toBe(SECRET)
      await clean.sendClose(4000, SECRET)
      await clean.expectClose(4000)
      const late = await RawClient.connect(port, { path: "/late" })
      await late.sendClose(1000)
      await late.expectClose(1000)
    } finally {
      // every connection's logs are written before the shutdown ends
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })

  const of = (name: string) => entries.filter((e) => e.annotations.connection === ids[name])
  const all = () => entries.map((e) => `${e.level} ${JSON.stringify(e.annotations)} ${e.text.split("\n")[0]}`).join("\n")

  it.each([
    ["a failure (Effect.fail)", "fail", "handler gave up"],
    ["a defect (Effect.die)", "die", "defect"],
    ["a throw before the handler returns an Effect", "early", "thrown before returning"]
  ] as const)("%s is logged exactly once, as an error, with the connection's id", (_, name, text) => {
    expect(ids[name], "the handler ran").toBeTypeOf("number")
    const logged = of(name)
    expect(logged.length, all()).toBe(1)
    expect(logged[0]!.level).toBe("Error")
    expect(logged[0]!.text).toContain(text)
  })

  it("each protocol violation is logged once, with its code and the connection's id", () => {
    for (const [name, code] of [["utf8", 1007], ["big", 1009], ["code", 1002]] as const) {
      const logged = of(name)
      expect(logged.length, `${name}:\n${all()}`).toBe(1)
      expect(logged[0]!.text).toContain(String(code))
    }
  })

  it("a close, and a send that fails because of it, are not logged as problems; the error is typed", () => {
    expect(lateError).toBeInstanceOf(WebSocketError)
    expect((lateError as WebSocketError).reason).toMatchObject({ _tag: "ConnectionClosed", code: 1000 })
    for (const name of ["clean", "late"]) {
      expect(ids[name], name).toBeTypeOf("number")
      expect(of(name).filter((e) => e.level === "Error" || e.level === "Fatal" || e.level === "Warn"), all()).toEqual([])
    }
  })

  it("no log line carries the payload's bytes", () => {
    expect(entries.length).toBeGreaterThan(0)
    for (const entry of entries) {
      for (const rendering of renderings) expect(entry.text).not.toContain(rendering)
    }
  })
})
