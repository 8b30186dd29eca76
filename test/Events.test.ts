/**
 * `Server.events` over real TCP: per-event Effects (open, message, close)
 * with no fiber parked per connection. Order and one-at-a-time handling,
 * inbound backpressure with a slow `message`, `open` before any message,
 * `close` once with the outcome, 1011 and one log line on a failure or a
 * defect, shutdown with an event in flight, the route's services, and the
 * same route on an `Upgrade` server.
 *
 * No sleeps as barriers: tests wait for frames on the wire, for Deferreds
 * resolved by the events and for observable counters with bounded polls.
 */
import { Buffer } from "node:buffer"
import * as Http from "node:http"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { afterEach, describe, expect, it } from "vitest"
import * as Client from "../src/Client.ts"
import * as Frame from "../src/Frame.ts"
import * as Server from "../src/Server.ts"
import * as Upgrade from "../src/Upgrade.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { flood, numbered, numberOf } from "./Limits.helpers.ts"
import * as Logs from "./support/Logs.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"
import { until } from "./support/Wait.ts"

afterEach(() => RawClient.destroyAll())

const KiB = 1024

const connections = (server: Server.RunningServer): number => Effect.runSync(server.connections)

const withServer = (options: TestServer.TestOptions, body: (port: number, server: Server.RunningServer) => Promise<void>) =>
  TestServer.withServer(options, async (port, server) => {
    try {
      await body(port, server)
    } finally {
      RawClient.destroyAll()
    }
  })

/** Text messages as masked frames in ONE write (one read on the server). */
const burst = (c: RawClient, texts: ReadonlyArray<string>): Promise<void> =>
  c.write(Buffer.concat(texts.map((text) => c.frame(Frame.Opcode.Text, text))))

describe("Server.events", () => {
  it("open runs before any message; messages run in order, one at a time; close runs once with the outcome", async () => {
    const log: Array<string> = []
    let running = 0 // message Effects running now
    let most = 0 // the most ever running at once
    const outcomes: Array<WebSocket.CloseOutcome> = []
    const route = Server.events({
      open: (ws) =>
        Effect.gen(function*() {
          yield* Effect.yieldNow // asynchronous: messages that arrive meanwhile wait
          log.push("open")
          yield* ws.send("welcome")
        }),
      message: (ws, message) =>
        Effect.gen(function*() {
          running++
          most = Math.max(most, running)
          log.push(`message ${message}`)
          // every other message suspends: the next one must still wait for it
          if (Number(message) % 2 === 0) yield* Effect.sleep(1)
          running--
          yield* ws.send(message)
        }),
      close: (_, outcome) => Effect.sync(() => void outcomes.push(outcome))
    })
    await withServer({ routes: { "/ws": route } }, async (port, server) => {
      const c = await RawClient.connect(port)
      const texts = Array.from({ length: 50 }, (_, i) => String(i))
      await burst(c, texts)
      expect(await c.expectText()).toBe("welcome")
      for (const text of texts) expect(await c.expectText()).toBe(text)
      expect(log).toEqual(["open", ...texts.map((t) => `message ${t}`)])
      expect(most).toBe(1)
      expect(outcomes).toEqual([])
      await c.sendClose(4000, "bye")
      await c.expectClose(4000)
      await until("close to run", () => outcomes.length === 1 && connections(server) === 0)
      expect(outcomes[0]).toMatchObject({ code: 4000, reason: "bye", initiator: "remote", clean: true })
    })
    expect(outcomes.length).toBe(1)
  })

  it("a slow message Effect: the server stops reading at inboxHighWaterMark, nothing is lost, order is kept", async () => {
    const inboxHighWaterMark = 8
    const M = 16 * KiB
    const gate = Deferred.makeUnsafe<void>()
    const received: Array<number> = []
    const route = Server.events({
      message: (_, message) =>
        Effect.andThen(
          Deferred.await(gate),
          Effect.sync(() => void received.push(numberOf(message)))
        )
    })
    await withServer({ inboxHighWaterMark, closeTimeout: 1_000, routes: { "/ws": route } }, async (port) => {
      const c = await RawClient.connect(port)
      let sent = 0 // messages written
      // the first message blocks on the gate; the flood stops when the server no longer reads
      await flood(c.socket, () => c.frame(Frame.Opcode.Binary, numbered(sent++, M)), { backlog: 1024 * KiB })
      expect(received.length).toBe(0)
      // the server read no more than the inbox's mark, one read's worth, and what the kernel buffers
      expect(c.serverBytesRead() ?? 0).toBeLessThan(sent * (M + 8))
      Deferred.doneUnsafe(gate, Effect.void)
      await until("every message to be handled", () => received.length === sent, 5_000, () => `${received.length} of ${sent}`)
      expect(received).toEqual(Array.from({ length: sent }, (_, i) => i))
      await c.sendClose(1000)
      await c.expectClose(1000)
    })
  })

  it.each([
    ["fails", Effect.fail("boom")],
    ["dies", Effect.die(new Error("boom"))]
  ] as const)("a message Effect that %s: 1011, logged once, later messages dropped, close still runs", async (_, failure) => {
    const handled: Array<string> = []
    const closed: Array<number> = []
    const server = await Logs.start({
      routes: {
        "/ws": Server.events({
          message: (ws, message) =>
            message === "bad" ? failure : Effect.andThen(Effect.sync(() => void handled.push(String(message))), ws.send(message)),
          close: (_, outcome) => Effect.sync(() => void closed.push(outcome.code))
        })
      }
    })
    try {
      const c = await RawClient.connect(server.port)
      await burst(c, ["a", "bad", "b", "c"])
      expect(await c.expectText()).toBe("a")
      await c.expectClose(1011)
      await until("close to run", () => closed.length === 1)
      expect(closed).toEqual([1011])
      expect(handled).toEqual(["a"])
    } finally {
      RawClient.destroyAll()
      await server.close()
    }
    const errors = server.entries.filter((e) => e.level === "Error")
    expect(errors.length, server.dump()).toBe(1)
    expect(errors[0]!.message).toContain("handler failed; connection closed with 1011")
    expect(errors[0]!.text).toContain("boom")
  })

  it("an open Effect that fails: 1011, no message is handled", async () => {
    const handled: Array<unknown> = []
    const server = await Logs.start({
      routes: {
        "/ws": Server.events({ open: () => Effect.fail("no"), message: (_, m) => Effect.sync(() => void handled.push(m)) })
      }
    })
    try {
      const c = await RawClient.connect(server.port)
      await c.sendText("x")
      await c.expectClose(1011)
      expect(handled).toEqual([])
    } finally {
      RawClient.destroyAll()
      await server.close()
    }
    expect(server.entries.filter((e) => e.level === "Error").length, server.dump()).toBe(1)
  })

  it("a client that goes away while open runs: open is interrupted, no message is handled, close runs once (1006)", async () => {
    const started = Deferred.makeUnsafe<void>()
    let interrupted = 0
    const handled: Array<unknown> = []
    const closed: Array<number> = []
    const route = Server.events({
      open: () =>
        Effect.andThen(Deferred.succeed(started, undefined), Effect.never).pipe(Effect.onInterrupt(() => Effect.sync(() => void interrupted++))),
      message: (_, m) => Effect.sync(() => void handled.push(m)),
      close: (_, outcome) => Effect.sync(() => void closed.push(outcome.code))
    })
    await withServer({ routes: { "/ws": route } }, async (port, server) => {
      const c = await RawClient.connect(port)
      await c.sendText("early")
      await Effect.runPromise(Deferred.await(started))
      c.destroy()
      await until("close to run", () => closed.length === 1 && connections(server) === 0)
      expect(interrupted).toBe(1)
      expect(handled).toEqual([])
      expect(closed).toEqual([1006])
    })
    expect(closed.length).toBe(1)
  })

  it("a shutdown with a message Effect in flight: the client gets 1001, the Effect is interrupted after closeTimeout, close runs once", async () => {
    const started = Deferred.makeUnsafe<void>()
    let interrupted = 0
    const closed: Array<number> = []
    const started2 = await TestServer.start({
      closeTimeout: 200,
      shutdownTimeout: 2_000,
      routes: {
        "/ws": Server.events({
          message: () =>
            Effect.andThen(Deferred.succeed(started, undefined), Effect.never).pipe(
              Effect.onInterrupt(() => Effect.sync(() => void interrupted++))
            ),
          close: (_, outcome) => Effect.sync(() => void closed.push(outcome.code))
        })
      }
    })
    try {
      const c = await RawClient.connect(started2.port)
      await c.sendText("hold")
      await Effect.runPromise(Deferred.await(started))
      const closing = started2.close()
      await c.expectClose(1001)
      await closing
      expect(interrupted).toBe(1)
      expect(closed).toEqual([1001])
    } finally {
      RawClient.destroyAll()
      await started2.close()
    }
  })

  it("events run with the route's services, each in a scope of its own that closes when it ends", async () => {
    class Prefix extends Context.Service<Prefix, string>()("test/Prefix") {}
    let finalized = 0
    const route = Server.events({
      message: (ws, message) =>
        Effect.gen(function*() {
          yield* Effect.addFinalizer(() => Effect.sync(() => void finalized++))
          const prefix = yield* Prefix
          yield* ws.send(`${prefix}${message}`)
        })
    })
    const scope = Scope.makeUnsafe()
    const server = await Effect.runPromise(
      Server.make({ ...TestServer.testDefaults, routes: { "/ws": route } }).pipe(
        Effect.provide(Layer.succeed(Prefix, "> ")),
        Scope.provide(scope)
      )
    )
    try {
      const c = await RawClient.connect(server.address.port)
      await c.sendText("one")
      expect(await c.expectText()).toBe("> one")
      await c.sendText("two")
      expect(await c.expectText()).toBe("> two")
      expect(finalized).toBe(2)
      await c.sendClose(1000)
      await c.expectClose(1000)
    } finally {
      RawClient.destroyAll()
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })

  it("open and close get scopes of their own: open's finalizer runs when open ends, not at the server's shutdown", async () => {
    const events: Array<string> = []
    const route = Server.events({
      open: () =>
        Effect.acquireRelease(Effect.sync(() => void events.push("open acquired")), () => Effect.sync(() => void events.push("open released"))),
      message: (ws, m) => Effect.andThen(Effect.sync(() => void events.push(`message ${m}`)), ws.send(m)),
      close: () =>
        Effect.acquireRelease(Effect.sync(() => void events.push("close acquired")), () => Effect.sync(() => void events.push("close released")))
    })
    const scope = Scope.makeUnsafe()
    const server = await Effect.runPromise(Server.make({ ...TestServer.testDefaults, routes: { "/ws": route } }).pipe(Scope.provide(scope)))
    try {
      const c = await RawClient.connect(server.address.port)
      await c.sendText("one")
      expect(await c.expectText()).toBe("one")
      await c.sendClose(1000)
      await c.expectClose(1000)
      await until("close to run", () => events.includes("close acquired") && connections(server) === 0)
      // Both released while the server still runs.
      expect(events).toEqual(["open acquired", "open released", "message one", "close acquired", "close released"])
    } finally {
      RawClient.destroyAll()
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })

  it("a client that drops TCP while a message Effect runs: close runs once that Effect ends, without waiting for closeTimeout", async () => {
    const started = Deferred.makeUnsafe<void>()
    const gate = Deferred.makeUnsafe<void>()
    const closed: Array<number> = []
    let handle: WebSocket.WebSocketConnection | undefined
    const route = Server.events({
      message: (ws) =>
        Effect.andThen(
          Effect.sync(() => void (handle = ws)),
          Effect.andThen(Deferred.succeed(started, undefined), Deferred.await(gate))
        ),
      close: (_, outcome) => Effect.sync(() => void closed.push(outcome.code))
    })
    // A closeTimeout far beyond the test's own timeout: waiting for it fails the test.
    await withServer({ closeTimeout: 600_000, routes: { "/ws": route } }, async (port, server) => {
      const c = await RawClient.connect(port)
      await c.sendText("slow")
      await Effect.runPromise(Deferred.await(started))
      c.destroy()
      // The connection is over (the server saw the socket close) while the Effect still runs.
      expect((await Effect.runPromise(handle!.closed)).code).toBe(1006)
      expect(closed).toEqual([])
      Effect.runSync(Deferred.succeed(gate, undefined))
      await until("close to run", () => closed.length === 1 && connections(server) === 0)
      expect(closed).toEqual([1006])
    })
  })

  it("the request read in a message (headers and query dropped while idle, parsed again): what the client sent", async () => {
    const seen: Array<unknown> = []
    const route = Server.events({
      message: (ws) =>
        Effect.sync(() => {
          const r = ws.request
          seen.push([r.method, r.path, r.query.get("name"), r.headers.get("x-test"), r.cookies.get("session"), r.httpVersion])
          // the same objects on a second read
          seen.push(r.headers === ws.request.headers && r.query === ws.request.query)
        })
    })
    await withServer({ routes: { "/ws": route } }, async (port) => {
      const c = await RawClient.connect(port, { path: "/ws?name=ada", headers: { "X-Test": " value ", Cookie: "a=1; session=xyz" } })
      await c.sendText("go")
      await until("the message to be handled", () => seen.length === 2)
      expect(seen).toEqual([["GET", "/ws", "ada", "value", "xyz", "1.1"], true])
      await c.sendClose(1000)
      await c.expectClose(1000)
    })
  })

  it("with permessage-deflate (messages inflated asynchronously): in order, each answered, close with the outcome", async () => {
    const closed: Array<number> = []
    const route = Server.events({
      message: (ws, message) => ws.send(message),
      close: (_, outcome) => Effect.sync(() => void closed.push(outcome.code))
    })
    await withServer({ compression: { threshold: 0 }, routes: { "/ws": route } }, async (port, server) => {
      const texts = Array.from({ length: 40 }, (_, i) => `message ${i} `.repeat(50))
      const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const ws = yield* Client.connect(`ws://127.0.0.1:${port}/ws`, { compression: { threshold: 0 } })
        yield* ws.sendAll(texts)
        const got: Array<WebSocket.Message> = []
        for (let i = 0; i < texts.length; i++) got.push(yield* ws.receive)
        yield* ws.close(1000)
        return { got, extensions: ws.extensions }
      })))
      expect(result.extensions).toContain("permessage-deflate")
      expect(result.got).toEqual(texts)
      await until("close to run", () => closed.length === 1 && connections(server) === 0)
      expect(closed).toEqual([1000])
    })
  })

  it("the same route on a node:http server (Upgrade.attach)", async () => {
    const http = Http.createServer()
    const scope = Scope.makeUnsafe()
    await Effect.runPromise(
      Upgrade.attach(http, { ...TestServer.testDefaults, routes: { "/ws": Server.events({ message: (ws, m) => ws.send(m) }) } }).pipe(
        Scope.provide(scope)
      )
    )
    await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve))
    try {
      const port = (http.address() as { port: number }).port
      const c = await RawClient.connect(port)
      await c.sendText("over http")
      expect(await c.expectText()).toBe("over http")
      await c.sendClose(1000)
      await c.expectClose(1000)
    } finally {
      RawClient.destroyAll()
      await Effect.runPromise(Scope.close(scope, Exit.void))
      await new Promise((resolve) => http.close(resolve))
    }
  })
})
