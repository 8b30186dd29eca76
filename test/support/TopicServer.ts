/**
 * Servers with topics for tests: `start` runs `Server.make` (test defaults)
 * with the relay route `/topic/:name` (subscribe to NAME, publish every
 * message received to NAME, the sender excluded, recording each
 * `PublishResult`), in a metric registry of its own, optionally built with a
 * `Topics` layer; `join` connects raw clients to a topic and waits until the
 * server counts them; `value` reads a counter or gauge of its registry.
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Server from "../../src/Server.ts"
import type * as Topics from "../../src/Topics.ts"
import type * as WebSocket from "../../src/WebSocket.ts"
import { RawClient } from "./RawClient.ts"
import * as Registry from "./Registry.ts"
import * as TestServer from "./TestServer.ts"
import { until } from "./Wait.ts"

/** What the relay route's publishes returned, in order. */
export type Results = Array<WebSocket.PublishResult>

/** `/topic/:name`: subscribes to NAME and publishes every message it receives to NAME, itself excluded. */
export const relay = (results: Results) => (ws: WebSocket.WebSocketConnection) =>
  Effect.gen(function*() {
    const topic = ws.request.params.name!
    yield* ws.subscribe(topic)
    yield* ws.messages.pipe(Stream.runForEach((m) => Effect.map(ws.publish(topic, m), (r) => void results.push(r))))
  })

export interface Started {
  readonly port: number
  readonly server: Server.RunningServer
  readonly results: Results
  readonly snapshot: () => ReadonlyArray<Metric.Metric.Snapshot>
  readonly close: () => Promise<void>
}

export const start = async (options: Partial<Server.Options> = {}, layer?: Layer.Layer<Topics.Topics, unknown>): Promise<Started> => {
  const results: Results = []
  const registry: Metric.MetricRegistry = new Map()
  const scope = Scope.makeUnsafe()
  const make = Server.make({ ...TestServer.testDefaults, routes: { "/topic/:name": relay(results) }, ...options })
  const built = layer === undefined ? undefined : await Effect.runPromise(
    Layer.buildWithScope(layer, scope).pipe(
      Effect.provideService(Metric.MetricRegistry, registry),
      Effect.provideService(References.MinimumLogLevel, "None")
    )
  )
  const server = await Effect.runPromise(
    (built === undefined ? make : Effect.provide(make, built)).pipe(
      Scope.provide(scope),
      Effect.provideService(Metric.MetricRegistry, registry),
      Effect.provideService(References.MinimumLogLevel, "None")
    )
  )
  const context = Context.make(Metric.MetricRegistry, registry)
  return {
    port: server.address.port,
    server,
    results,
    snapshot: () => Metric.snapshotUnsafe(context),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

export const withServer = async (options: Partial<Server.Options>, body: (s: Started) => Promise<void>): Promise<void> => {
  const started = await start(options)
  try {
    await body(started)
  } finally {
    RawClient.destroyAll()
    await started.close()
  }
}

export const subscribers = (server: Server.RunningServer, topic: string): number => Effect.runSync(server.topics.subscriberCount(topic))

/** Connects `n` clients to `/topic/NAME` and waits until each is subscribed. */
export const join = async (s: Started, topic: string, n: number, options: Parameters<typeof RawClient.connect>[1] = {}): Promise<Array<RawClient>> => {
  const before = subscribers(s.server, topic)
  const clients = await Promise.all(Array.from({ length: n }, () => RawClient.connect(s.port, { path: `/topic/${topic}`, ...options })))
  await until(`${n} subscribers of ${topic}`, () => subscribers(s.server, topic) === before + n)
  return clients
}

export const value = (s: Started, id: string, attributes: Record<string, string> = {}): number => Registry.value(s.snapshot(), id, attributes)

