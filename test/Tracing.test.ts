/**
 * The server's spans over real sockets (issue 14), from a test tracer
 * provided when the server is built: one `websock.upgrade` per upgrade
 * request, one `websock.connection` per connection (the upgrade's child),
 * and the handler's own spans under its connection.
 */
import { Buffer } from "node:buffer"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import { afterEach, describe, expect, it } from "vitest"
import * as Server from "../src/Server.ts"
import type * as Ws from "../src/WebSocket.ts"
import * as Logs from "./support/Logs.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"
import * as Spans from "./support/Spans.ts"
import { until } from "./support/Wait.ts"

afterEach(() => RawClient.destroyAll())

/** Runs `body` against a server built with a tracer that keeps every span. */
const withTracedServer = async (
  options: Partial<Server.Options>,
  body: (port: number, spans: ReadonlyArray<Tracer.NativeSpan>) => Promise<void>,
  around: <A, E, R>(make: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R> = (make) => make
): Promise<void> => {
  const { tracer, spans } = Spans.recording()
  const scope = Scope.makeUnsafe()
  const server = await Effect.runPromise(
    around(Server.make({ ...TestServer.testDefaults, routes: { "/ws": TestServer.echo }, ...options })).pipe(
      Scope.provide(scope),
      Effect.provideService(Tracer.Tracer, tracer),
      Effect.provideService(References.MinimumLogLevel, "None")
    )
  )
  try {
    await body(server.address.port, spans)
  } finally {
    RawClient.destroyAll()
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

const named = (spans: ReadonlyArray<Tracer.NativeSpan>, name: string) => spans.filter((s) => s.name === name)
const parentOf = (span: Tracer.NativeSpan) => Option.getOrUndefined(span.parent)?.spanId
const ended = (span: Tracer.NativeSpan | undefined) => span?.status._tag === "Ended"

describe("spans", () => {
  it("traces an upgrade, its connection and the handler's spans under it", async () => {
    const handler = (ws: Ws.WebSocket) =>
      Effect.andThen(Effect.withSpan(Effect.void, "app.greet"), TestServer.echo(ws))
    const routes = { "/ws": Server.route({ protocol: (offered) => offered[0], handler }) }
    await withTracedServer({ routes }, async (port, spans) => {
      const client = await RawClient.connect(port, { headers: { "Sec-WebSocket-Protocol": "chat" } })
      await client.sendText("hi")
      expect(await client.expectText()).toBe("hi")
      await client.sendBinary(new Uint8Array([1, 2, 3]))
      await client.expectBinary()
      await client.sendClose(1000)
      await client.expectClose(1000)
      await until("the connection's span ended", () => ended(named(spans, "websock.connection")[0]))

      const [upgrade] = named(spans, "websock.upgrade")
      const [connection] = named(spans, "websock.connection")
      const [greet] = named(spans, "app.greet")
      expect(named(spans, "websock.upgrade")).toHaveLength(1)
      expect(upgrade!.kind).toBe("server")
      expect(ended(upgrade)).toBe(true)
      expect(Object.fromEntries(upgrade!.attributes)).toMatchObject({
        "http.request.method": "GET",
        "url.path": "/ws",
        "http.response.status_code": 101,
        "websocket.subprotocol": "chat"
      })
      expect(upgrade!.status._tag === "Ended" && Exit.isSuccess(upgrade!.status.exit)).toBe(true)

      expect(parentOf(connection!)).toBe(upgrade!.spanId)
      expect(connection!.traceId).toBe(upgrade!.traceId)
      expect(Object.fromEntries(connection!.attributes)).toMatchObject({
        "url.path": "/ws",
        "websocket.subprotocol": "chat",
        "websocket.close.code": 1000,
        "websocket.close.initiator": "remote",
        "websocket.close.clean": true,
        "websocket.messages.received": 2,
        "websocket.messages.sent": 2,
        "websocket.bytes.received": 5,
        "websocket.bytes.sent": 5
      })

      expect(parentOf(greet!)).toBe(connection!.spanId)
      expect(ended(greet)).toBe(true)
    })
  })

  it("a server made inside a span: the upgrade's span is its child; Server.events' Effects are children of the connection's", async () => {
    const routes = { "/ws": Server.events({ message: (ws, m) => Effect.withSpan(ws.send(m), "app.echo") }) }
    await withTracedServer({ routes }, async (port, spans) => {
      const client = await RawClient.connect(port)
      await client.sendText("hi")
      expect(await client.expectText()).toBe("hi")
      await client.sendClose(1000)
      await client.expectClose(1000)
      await until("the connection's span ended", () => ended(named(spans, "websock.connection")[0]))
      const [main] = named(spans, "app.main")
      const [upgrade] = named(spans, "websock.upgrade")
      const [connection] = named(spans, "websock.connection")
      const [echo] = named(spans, "app.echo")
      expect(parentOf(upgrade!)).toBe(main!.spanId)
      expect(upgrade!.kind).toBe("server")
      expect(parentOf(connection!)).toBe(upgrade!.spanId)
      expect(parentOf(echo!)).toBe(connection!.spanId)
      expect(connection!.attributes.get("websocket.close.code")).toBe(1000)
    }, (make) => Effect.withSpan(make, "app.main"))
  })

  it("with tracing disabled (TracerEnabled false), no span reaches the tracer", async () => {
    await withTracedServer({}, async (port, spans) => {
      const client = await RawClient.connect(port)
      await client.sendText("hi")
      expect(await client.expectText()).toBe("hi")
      await client.sendClose(1000)
      await client.expectClose(1000)
      expect(spans.filter((s) => s.name.startsWith("websock."))).toEqual([])
    }, (make) => Effect.provideService(make, References.TracerEnabled, false))
  })

  it("continues the trace a client's traceparent header names", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
    const parentId = "00f067aa0ba902b7"
    await withTracedServer({}, async (port, spans) => {
      const client = await RawClient.connect(port, { headers: { traceparent: `00-${traceId}-${parentId}-01` } })
      await client.sendClose(1000)
      await client.expectClose(1000)
      await until("the connection's span ended", () => ended(named(spans, "websock.connection")[0]))
      const [upgrade] = named(spans, "websock.upgrade")
      expect(upgrade!.traceId).toBe(traceId)
      expect(parentOf(upgrade!)).toBe(parentId)
      expect(named(spans, "websock.connection")[0]!.traceId).toBe(traceId)
    })
  })

  it("traces a refused upgrade with its status, and negotiated extensions", async () => {
    await withTracedServer({ compression: {} }, async (port, spans) => {
      const refused = await RawClient.request(port, { path: "/nowhere" })
      expect(refused.response.status).toBe(404)
      refused.destroy()
      const client = await RawClient.connect(port, { headers: { "Sec-WebSocket-Extensions": "permessage-deflate" }, allowRsv1: true })
      await client.sendClose(1000)
      await client.expectClose(1000)
      await until("the connection's span ended", () => ended(named(spans, "websock.connection")[0]))
      const upgrades = named(spans, "websock.upgrade")
      expect(upgrades.map((s) => s.attributes.get("http.response.status_code"))).toEqual([404, 101])
      expect(upgrades[0]!.attributes.get("url.path")).toBe("/nowhere")
      expect(upgrades[1]!.attributes.get("websocket.extensions")).toBe("permessage-deflate; server_no_context_takeover")
      expect(named(spans, "websock.connection")).toHaveLength(1)
    })
  })

  it("fails the connection's span when the handler fails", async () => {
    const handler = () => Effect.fail("boom")
    await withTracedServer({ routes: { "/ws": handler } }, async (port, spans) => {
      const client = await RawClient.connect(port)
      await client.expectClose(1011)
      await client.sendClose(1011)
      await until("the connection's span ended", () => ended(named(spans, "websock.connection")[0]))
      const [connection] = named(spans, "websock.connection")
      expect(connection!.status._tag === "Ended" && Exit.isFailure(connection!.status.exit)).toBe(true)
      expect(connection!.attributes.get("websocket.close.code")).toBe(1011)
      expect(connection!.attributes.get("websocket.close.initiator")).toBe("local")
    })
  })

  it("logs a violation with the connection's annotations and none of its payload, the spans neither", async () => {
    const logs = Logs.capture()
    const { tracer, spans } = Spans.recording()
    const scope = Scope.makeUnsafe()
    const server = await Effect.runPromise(
      Server.make({ ...TestServer.testDefaults, routes: { "/ws": TestServer.echo } }).pipe(
        Scope.provide(scope),
        Effect.provideService(Tracer.Tracer, tracer),
        logs.provide
      )
    )
    try {
      const client = await RawClient.connect(server.address.port, { path: "/ws?room=1" })
      const secret = "SECRET-PAYLOAD"
      await client.sendText(secret)
      expect(await client.expectText()).toBe(secret)
      // The secret again, then a byte that is not UTF-8: 1007.
      await client.sendFrame(0x1, new Uint8Array([...Buffer.from(secret), 0xff]))
      await client.expectClose(1007)
      await until("the violation logged", () => logs.entries.some((e) => e.message.includes("1007")))
      const line = logs.entries.find((e) => e.message.includes("1007"))!
      expect(line.level).toBe("Warn")
      expect(line.annotations).toMatchObject({ path: "/ws", remote: expect.stringMatching(/^127\.0\.0\.1:\d+$/) })
      expect(typeof line.annotations.connection).toBe("number")
      for (const entry of logs.entries) expect(entry.text).not.toContain(secret)
      await until("the connection's span ended", () => ended(named(spans, "websock.connection")[0]))
      for (const span of spans) expect(JSON.stringify([...span.attributes])).not.toContain(secret)
      expect(named(spans, "websock.connection")[0]!.attributes.get("websock.connection.id")).toBe(line.annotations.connection)
    } finally {
      RawClient.destroyAll()
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })
})
