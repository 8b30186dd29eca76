/**
 * The server's metrics over real sockets (issue 14): each `websock.*` series
 * moves as it should under a scripted session, read from Effect's metric
 * snapshot. Every server here reports into a registry of its own (provided
 * as `Metric.MetricRegistry` when it is built), so other tests and servers
 * cannot move the numbers; `metrics: false` records nothing.
 */
import { Buffer } from "node:buffer"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import { afterEach, describe, expect, it } from "vitest"
import WebSocket from "ws"
import * as Server from "../src/Server.ts"
import type * as Ws from "../src/WebSocket.ts"
import { RawClient } from "./support/RawClient.ts"
import * as Registry from "./support/Registry.ts"
import * as TestServer from "./support/TestServer.ts"
import { until } from "./support/Wait.ts"

afterEach(() => RawClient.destroyAll())

interface Metered {
  readonly port: number
  /** The registry's series now. */
  readonly snapshot: () => ReadonlyArray<Metric.Metric.Snapshot>
  readonly close: () => Promise<void>
}

/** Starts a server that reports into a registry of its own. */
const start = async (options: Partial<Server.Options>): Promise<Metered> => {
  const registry: Metric.MetricRegistry = new Map()
  const scope = Scope.makeUnsafe()
  const server = await Effect.runPromise(
    Server.make({ ...TestServer.testDefaults, routes: { "/ws": TestServer.echo }, ...options }).pipe(
      Scope.provide(scope),
      Effect.provideService(Metric.MetricRegistry, registry),
      Effect.provideService(References.MinimumLogLevel, "None")
    )
  )
  const context = Context.make(Metric.MetricRegistry, registry)
  return {
    port: server.address.port,
    snapshot: () => Metric.snapshotUnsafe(context),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

const withServer = async (options: Partial<Server.Options>, body: (server: Metered) => Promise<void>): Promise<void> => {
  const server = await start(options)
  try {
    await body(server)
  } finally {
    RawClient.destroyAll()
    await server.close()
  }
}

/** The series of `id` whose attributes include `attributes`. */
const series = (server: Metered, id: string, attributes: Record<string, string> = {}) => Registry.series(server.snapshot(), id, attributes)

/** A counter's or a gauge's value (summed over the matching series; 0 when none). */
const value = (server: Metered, id: string, attributes?: Record<string, string>): number => Registry.value(server.snapshot(), id, attributes)

/** A histogram's state (the one series matching). */
const histogram = (server: Metered, id: string, attributes?: Record<string, string>): Metric.HistogramState => {
  const found = series(server, id, attributes)
  expect(found).toHaveLength(1)
  return found[0]!.state as Metric.HistogramState
}

const text = { "websocket.message.type": "text" }
const binary = { "websocket.message.type": "binary" }
const receive = { "network.io.direction": "receive" }
const transmit = { "network.io.direction": "transmit" }
const closes = (code: number, initiator: "local" | "remote") => ({
  "websocket.close.code": String(code),
  "websocket.close.initiator": initiator
})

describe("metrics", () => {
  it("counts upgrades, connections, messages, bytes and closes of a scripted session", async () => {
    const bye = (ws: Ws.WebSocket) => ws.close(4001, "bye")
    await withServer({ routes: { "/ws": TestServer.echo, "/bye": bye } }, async (server) => {
      const a = await RawClient.connect(server.port)
      const b = await RawClient.connect(server.port)
      await until("two open", () => value(server, "websock.connections.open") === 2)
      expect(value(server, "websock.connections.accepted")).toBe(2)
      expect(value(server, "websock.upgrades", { "http.response.status_code": "101" })).toBe(2)

      // Wrong path: answered 404, counted as an upgrade by its status, not as a connection.
      const lost = await RawClient.request(server.port, { path: "/nowhere" })
      expect(lost.response.status).toBe(404)
      lost.destroy()

      await a.sendText("hello") // 5 bytes
      expect(await a.expectText()).toBe("hello")
      await a.sendBinary(new Uint8Array([1, 2, 3]))
      expect(Array.from(await a.expectBinary())).toEqual([1, 2, 3])
      await b.sendText("héllo wörld") // 13 bytes in UTF-8
      expect(await b.expectText()).toBe("héllo wörld")

      expect(value(server, "websock.messages.received", text)).toBe(2)
      expect(value(server, "websock.messages.received", binary)).toBe(1)
      expect(value(server, "websock.bytes.received", text)).toBe(18)
      expect(value(server, "websock.bytes.received", binary)).toBe(3)
      await until("echoes counted", () => value(server, "websock.messages.sent") === 3)
      expect(value(server, "websock.messages.sent", text)).toBe(2)
      expect(value(server, "websock.bytes.sent", text)).toBe(18)
      expect(value(server, "websock.bytes.sent", binary)).toBe(3)
      const sizes = histogram(server, "websock.message.size", receive)
      expect(sizes.count).toBe(3)
      expect(sizes.sum).toBe(21)
      expect(sizes.buckets[0]).toEqual([64, 3])
      expect(histogram(server, "websock.message.size", transmit).sum).toBe(21)

      // The client closes (1000, remote); a violation (invalid UTF-8: 1007, local).
      await a.sendClose(1000)
      await a.expectClose(1000)
      await b.sendFrame(0x1, new Uint8Array([0xff]))
      await b.expectClose(1007)
      // The handler closes (4001, local).
      const c = await RawClient.connect(server.port, { path: "/bye" })
      await c.expectClose(4001)
      await c.sendClose(4001)
      await until("all closed", () => value(server, "websock.closes") === 3 && value(server, "websock.connections.open") === 0)
      expect(value(server, "websock.closes", closes(1000, "remote"))).toBe(1)
      expect(value(server, "websock.closes", closes(1007, "local"))).toBe(1)
      expect(value(server, "websock.closes", closes(4001, "local"))).toBe(1)
      expect(value(server, "websock.connections.accepted")).toBe(3)
      expect(value(server, "websock.upgrades", { "http.response.status_code": "404" })).toBe(1)
      expect(value(server, "websock.upgrades")).toBe(4)
      expect(histogram(server, "websock.handshake.duration").count).toBe(3)
      expect(value(server, "websock.messages.dropped")).toBe(0)
      expect(value(server, "websock.socket.pauses")).toBe(0)
      // Units as OpenTelemetry writes them, in the `unit` attribute (not a Prometheus label).
      expect(series(server, "websock.bytes.sent", text)[0]!.attributes).toMatchObject({ unit: "By" })
      expect(series(server, "websock.handshake.duration")[0]!.attributes).toMatchObject({ unit: "s" })
      expect(series(server, "websock.closes", closes(1000, "remote"))[0]!.attributes).toMatchObject({ unit: "{connection}" })
    })
  })

  it("counts a connection dropped without a Close as 1006", async () => {
    await withServer({}, async (server) => {
      const a = await RawClient.connect(server.port)
      await until("open", () => value(server, "websock.connections.open") === 1)
      a.destroy()
      await until("closed", () => value(server, "websock.connections.open") === 0)
      expect(value(server, "websock.closes", closes(1006, "remote"))).toBe(1)
    })
  })

  it("counts the messages the drop policy discards", async () => {
    const statuses: Array<Ws.SendStatus> = []
    const big = new Uint8Array(64 * 1024)
    const flood = (ws: Ws.WebSocket) =>
      Effect.gen(function*() {
        // One after another in one turn: the first is queued, the buffer is then above maxBufferedAmount.
        for (let i = 0; i < 3; i++) statuses.push(yield* ws.trySend(big))
        yield* ws.close()
      })
    await withServer({ routes: { "/ws": flood }, maxBufferedAmount: 1024 }, async (server) => {
      const a = await RawClient.connect(server.port)
      await until("sent", () => statuses.length === 3)
      expect(statuses.filter((s) => s === "dropped")).toHaveLength(2)
      expect(value(server, "websock.messages.dropped")).toBe(2)
      expect(await a.expectBinary()).toHaveLength(big.length)
      expect(value(server, "websock.messages.sent", binary)).toBe(1)
      expect(value(server, "websock.bytes.sent", binary)).toBe(big.length)
    })
  })

  it("times a send that waits for the outbound buffer to drain", async () => {
    let sent = false
    // More than the kernel's buffers on both sides hold, so that the socket's own buffer fills.
    const big = new Uint8Array(32 * 1024 * 1024)
    const sender = (ws: Ws.WebSocket) =>
      Effect.gen(function*() {
        yield* ws.send(big)
        sent = true
        yield* ws.closed
      })
    await withServer({ routes: { "/ws": sender }, highWaterMark: 1024 }, async (server) => {
      const a = await RawClient.connect(server.port)
      a.socket.pause() // the kernel's buffers fill: the send waits
      await new Promise((resolve) => setTimeout(resolve, 100))
      expect(sent).toBe(false)
      expect(histogram(server, "websock.send.wait.duration").count).toBe(0)
      a.socket.resume()
      await until("sent", () => sent)
      const waits = histogram(server, "websock.send.wait.duration")
      expect(waits.count).toBe(1)
      expect(waits.sum).toBeGreaterThanOrEqual(0.09)
    })
  })

  it("counts a socket paused because its handler does not take its messages", async () => {
    await withServer({ routes: { "/ws": () => Effect.never }, inboxHighWaterMark: 2 }, async (server) => {
      const a = await RawClient.connect(server.port)
      await a.write(Buffer.concat([1, 2, 3, 4, 5].map((i) => a.frame(0x1, `m${i}`))))
      await until("received", () => value(server, "websock.messages.received", text) === 5)
      expect(value(server, "websock.socket.pauses")).toBe(1)
    })
  })

  it("counts compressed and original bytes where permessage-deflate runs", async () => {
    const message = "websock ".repeat(250) // 2000 bytes, compresses well
    await withServer({ compression: { threshold: 0 } }, async (server) => {
      const client = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, { perMessageDeflate: { threshold: 0 } })
      try {
        const echoed = await new Promise<string>((resolve, reject) => {
          client.once("open", () => client.send(message))
          client.once("message", (data) => resolve(String(data)))
          client.once("error", reject)
        })
        expect(echoed).toBe(message)
        await until("sent", () => value(server, "websock.messages.sent", text) === 1)
        expect(value(server, "websock.bytes.received", text)).toBe(2000)
        expect(value(server, "websock.bytes.sent", text)).toBe(2000)
        expect(value(server, "websock.compression.original", receive)).toBe(2000)
        expect(value(server, "websock.compression.original", transmit)).toBe(2000)
        for (const direction of [receive, transmit]) {
          const compressed = value(server, "websock.compression.compressed", direction)
          expect(compressed).toBeGreaterThan(0)
          expect(compressed).toBeLessThan(200)
        }
      } finally {
        client.terminate()
      }
    })
  })

  it("records nothing with metrics: false", async () => {
    await withServer({ metrics: false }, async (server) => {
      const a = await RawClient.connect(server.port)
      await a.sendText("hello")
      expect(await a.expectText()).toBe("hello")
      await a.sendClose(1000)
      await a.expectClose(1000)
      expect(server.snapshot()).toEqual([])
    })
  })

  it("adds up the servers of one registry", async () => {
    const registry: Metric.MetricRegistry = new Map()
    const scope = Scope.makeUnsafe()
    const make = Server.make({ ...TestServer.testDefaults, routes: { "/ws": TestServer.echo } }).pipe(
      Scope.provide(scope),
      Effect.provideService(Metric.MetricRegistry, registry)
    )
    try {
      const one = await Effect.runPromise(make)
      const two = await Effect.runPromise(make)
      await RawClient.connect(one.address.port)
      await RawClient.connect(two.address.port)
      const context = Context.make(Metric.MetricRegistry, registry)
      const accepted = () =>
        Metric.snapshotUnsafe(context).filter((s) => s.id === "websock.connections.accepted").map((s) => (s.state as Metric.CounterState<number>).count)
      await until("both counted", () => accepted()[0] === 2)
      expect(accepted()).toEqual([2])
    } finally {
      RawClient.destroyAll()
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })

  it("keeps servers with their own metric attributes apart in one registry", async () => {
    const registry: Metric.MetricRegistry = new Map()
    const scope = Scope.makeUnsafe()
    const make = (name: string) =>
      Server.make({ ...TestServer.testDefaults, routes: { "/ws": TestServer.echo } }).pipe(
        Scope.provide(scope),
        Effect.provideService(Metric.MetricRegistry, registry),
        Effect.provideService(Metric.CurrentMetricAttributes, { server: name })
      )
    try {
      const one = await Effect.runPromise(make("one"))
      const two = await Effect.runPromise(make("two"))
      await RawClient.connect(one.address.port)
      await RawClient.connect(one.address.port)
      await RawClient.connect(two.address.port)
      const context = Context.make(Metric.MetricRegistry, registry)
      const accepted = () =>
        Object.fromEntries(
          Metric.snapshotUnsafe(context)
            .filter((s) => s.id === "websock.connections.accepted")
            .map((s) => [(s.attributes as Record<string, string>).server, (s.state as Metric.CounterState<number>).count])
        )
      await until("all counted", () => accepted().one === 2 && accepted().two === 1)
      expect(accepted()).toEqual({ one: 2, two: 1 })
    } finally {
      RawClient.destroyAll()
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })

  it("rejects a metrics option that is not a boolean", async () => {
    const exit = await Effect.runPromiseExit(
      Server.make({ ...TestServer.testDefaults, routes: { "/ws": TestServer.echo }, metrics: "yes" as unknown as boolean }).pipe(Effect.scoped)
    )
    expect(Exit.isFailure(exit) && String(exit.cause)).toContain("metrics")
  })
})
