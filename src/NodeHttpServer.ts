/**
 * Effect's Node HTTP server with websock as its WebSocket engine: a drop-in
 * for `@effect/platform-node`'s `NodeHttpServer` (`make`, `layerServer`,
 * `layer`, `layerConfig`, `layerTest`, with the same options plus
 * `websock`). Everything HTTP stays Effect's (listening, requests,
 * 100-continue, HTTP/2, graceful shutdown); every WebSocket upgrade in any
 * `HttpRouter` route (`HttpServerRequest.upgrade`, `upgradeWith`,
 * `upgradeChannel`, and so `RpcServer.layerProtocolWebsocket`) is answered
 * and run by websock: its handshake rules, limits, keepalive, compression,
 * Origin allow-list and shutdown, and a `Socket.Socket` whose `write` waits
 * while the peer does not read.
 *
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Effect, Layer } from "effect"
 * import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
 * import * as Http from "node:http"
 * import * as NodeHttpServer from "websock/NodeHttpServer" // was "@effect/platform-node/NodeHttpServer"
 *
 * const Echo = HttpRouter.add("GET", "/ws", Effect.gen(function*() {
 *   const socket = yield* (yield* HttpServerRequest.HttpServerRequest).upgrade
 *   const { pull } = yield* socket.reader
 *   const { writeAll } = yield* socket.writer
 *   while (true) yield* writeAll(yield* pull)
 * }).pipe(Effect.catchReason("SocketError", "SocketCloseError", () => Effect.succeed(HttpServerResponse.empty()))))
 *
 * HttpRouter.serve(Echo).pipe(
 *   Layer.provide(NodeHttpServer.layer(Http.createServer, { port: 8081, websock: { maxMessageSize: 16 * 1024 * 1024 } })),
 *   Layer.launch,
 *   NodeRuntime.runMain
 * )
 * ```
 *
 * How: `make` runs Effect's own `make`, then in `serve` swaps the one
 * `upgrade` listener Effect's `serve` adds for Effect's own
 * `makeUpgradeHandler` over websock's engine (in place of ws's
 * `WebSocketServer`), and gives the app's routes a request whose `upgrade`
 * is websock's. On shutdown websock sends 1001 to its connections first
 * and waits for their closing handshakes (up to `shutdownTimeout`), so that
 * Effect's own shutdown does not wait `gracefulShutdownTimeout` for them.
 *
 * Settings of one route (the subprotocol, limits, compression, origins)
 * are the `CurrentRouteOptions` reference, provided around its `upgrade`
 * (`withRouteOptions`); 101 headers are Effect's own `upgradeWith({ headers })`.
 *
 * @since 0.2.0
 */
import * as PlatformNodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type * as NodeWS from "@effect/platform-node/NodeWS"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as FileSystem from "effect/FileSystem"
import { dual } from "effect/Function"
import type * as Etag from "effect/http/Etag"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import type { HttpClient } from "effect/http/HttpClient"
import type * as HttpMiddleware from "effect/http/HttpMiddleware"
import type * as HttpPlatform from "effect/http/HttpPlatform"
import * as HttpServer from "effect/http/HttpServer"
import type { ServeError } from "effect/http/HttpServerError"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import type { HttpServerResponse } from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import type * as Path from "effect/Path"
import * as Scope from "effect/Scope"
import * as Http from "node:http"
import type { Duplex } from "node:stream"
import { InvalidOption, ServerError } from "./Errors.ts"
import * as EffectUpgrade from "./internal/effectUpgrade.ts"
import * as Engine from "./internal/engine.ts"
import * as Settings from "./internal/settings.ts"
import type * as Server from "./Server.ts"

/**
 * websock's settings for the server's WebSocket connections: those of
 * `Server.Options` but the routes (Effect's router has them) and what
 * belongs to the listener or to websock's own routes (`port`, `host`,
 * `maxHeadSize`, `handshakeTimeout`: the HTTP server has its own).
 *
 * @since 0.2.0
 * @category models
 */
export type WebsockOptions = Omit<Server.Options<{}>, "routes" | "port" | "host" | "maxHeadSize" | "handshakeTimeout">

/**
 * `@effect/platform-node`'s options, plus `websock`. Its `websocket` (the
 * `ws` server's options) has no place here: their equivalents are in
 * `websock` (`maxMessageSize` for `maxPayload`, `compression` for
 * `perMessageDeflate`), and giving it fails with `InvalidOption`.
 *
 * @since 0.2.0
 * @category models
 */
export interface Options extends Omit<PlatformNodeHttpServer.Options, "websocket"> {
  readonly websock?: WebsockOptions | undefined
}

/**
 * The settings of one route's WebSocket connections, in place of the
 * server's: its limits and timers (`maxMessageSize`, `closeTimeout`,
 * `pingInterval`, `idleTimeout`, `maxLifetime`, `highWaterMark`,
 * `maxBufferedAmount`, `overflow`, `inboxHighWaterMark`), `compression`
 * and `origins`; and `protocol`, which chooses the subprotocol among the
 * ones the client offered, in its order of preference (one it did not
 * offer is ignored; `undefined`, and a route without `protocol`, choose
 * none).
 *
 * @since 0.2.0
 * @category models
 */
export interface RouteOptions extends Pick<WebsockOptions, Settings.ConnectionOption | "origins"> {
  readonly protocol?: ((offered: ReadonlyArray<string>) => string | undefined) | undefined
}

/**
 * The current route's WebSocket settings (default: none, the server's
 * apply), read when `upgrade` (or `upgradeWith`) runs: provide it around
 * the route's handler, or the `upgrade` itself (`withRouteOptions`). An
 * invalid setting fails the `upgrade` with an `HttpServerError` whose
 * `cause` is websock's `InvalidOption`, before any answer is sent.
 *
 * The timer sweep of the server follows the server's timers: a route's
 * timer shorter than every server's one may fire up to a second late.
 *
 * @since 0.2.0
 * @category references
 */
export const CurrentRouteOptions: Context.Reference<RouteOptions> = Context.Reference<RouteOptions>(
  "websock/NodeHttpServer/CurrentRouteOptions",
  { defaultValue: () => noRouteOptions }
)

const noRouteOptions: RouteOptions = {}

/**
 * Provides `CurrentRouteOptions` to an effect (a route's handler, or its
 * `upgrade`):
 *
 * ```ts
 * HttpRouter.add("GET", "/graphql", handler.pipe(
 *   NodeHttpServer.withRouteOptions({ protocol: (offered) => offered.find((p) => p === "graphql-transport-ws"), maxMessageSize: 64 * 1024 })
 * ))
 * ```
 *
 * @since 0.2.0
 * @category combinators
 */
export const withRouteOptions: {
  (options: RouteOptions): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, options: RouteOptions): Effect.Effect<A, E, R>
} = dual(2, <A, E, R>(self: Effect.Effect<A, E, R>, options: RouteOptions) => Effect.provideService(self, CurrentRouteOptions, options))

type Evaluate = Parameters<typeof PlatformNodeHttpServer.make>[0]

/**
 * Makes the `HttpServer` in the current scope, as `@effect/platform-node`'s
 * `make` does (it is that `make`, underneath), with websock's engine for the
 * WebSocket upgrades of every app it serves. Invalid `websock` settings fail
 * with `ServerError` (`InvalidOption`, naming the setting) before anything
 * listens.
 *
 * Shutdown (the scope of `serve` closing): websock's connections get 1001
 * at once, their closing handshakes are awaited up to `shutdownTimeout`
 * (websock's; what remains is then cut), then Effect closes the HTTP
 * server (its `gracefulShutdownTimeout` now only for HTTP requests).
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (
  evaluate: Evaluate,
  options: Options
): Effect.Effect<HttpServer.HttpServer["Service"], ServeError | ServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const { websock = {}, ...rest } = options
    if ((rest as PlatformNodeHttpServer.Options).websocket !== undefined) {
      return yield* new ServerError({
        reason: new InvalidOption({
          option: "websocket",
          problem: "holds ws's options, which websock does not use: give websock's in `websock` (maxMessageSize, compression, ...)"
        })
      })
    }
    const settings = yield* Settings.make({ ...websock, routes: {} })
    const server = evaluate()
    const inner = yield* PlatformNodeHttpServer.make(() => server, rest)
    return HttpServer.make({
      address: inner.address,
      serve: ((app: App, middleware?: Middleware) => serve(server, inner, settings, websock, app, middleware)) as Serve
    })
  })

/**
 * The server as a Layer providing `HttpServer` (`@effect/platform-node`'s
 * `layerServer`, with websock's WebSockets).
 *
 * @since 0.2.0
 * @category layers
 */
export const layerServer = (evaluate: Evaluate, options: Options): Layer.Layer<HttpServer.HttpServer, ServeError | ServerError> =>
  Layer.effect(HttpServer.HttpServer, make(evaluate, options))

/**
 * `HttpServer` with Node's HTTP platform, ETag and platform services
 * (`@effect/platform-node`'s `layer`, with websock's WebSockets): the one
 * layer to swap to move an app onto websock.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (
  evaluate: Evaluate,
  options: Options
): Layer.Layer<Services, ServeError | ServerError> =>
  Layer.mergeAll(layerServer(evaluate, options), PlatformNodeHttpServer.layerHttpServices)

/**
 * `layer`, its options read from Effect `Config` (each a value or a
 * `Config`, `websock`'s settings too).
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfig = (
  evaluate: Evaluate,
  options: Config.Wrap<Options>
): Layer.Layer<Services, ServeError | ServerError | Config.ConfigError> =>
  Layer.mergeAll(
    Layer.effect(HttpServer.HttpServer, Effect.flatMap(Config.unwrap(options), (resolved) => make(evaluate, resolved))),
    PlatformNodeHttpServer.layerHttpServices
  )

/**
 * A server on an ephemeral port with a fetch `HttpClient` aimed at it, for
 * tests (`@effect/platform-node`'s `layerTest`, with websock's WebSockets).
 *
 * @since 0.2.0
 * @category testing
 */
export const layerTest: Layer.Layer<
  HttpServer.HttpServer | FileSystem.FileSystem | Path.Path | HttpPlatform.HttpPlatform | Etag.Generator | HttpClient,
  ServeError | ServerError
> = HttpServer.layerTestClient.pipe(
  Layer.provide(
    Layer.fresh(FetchHttpClient.layer).pipe(Layer.provide(Layer.succeed(FetchHttpClient.RequestInit, { keepalive: false })))
  ),
  Layer.provideMerge(layer(Http.createServer, { port: 0 }))
)

/**
 * What `layer` provides.
 *
 * @since 0.2.0
 * @category models
 */
export type Services = Layer.Success<typeof PlatformNodeHttpServer.layerHttpServices> | HttpServer.HttpServer

// -----------------------------------------------------------------------------
// internals
// -----------------------------------------------------------------------------

type App = Effect.Effect<HttpServerResponse, unknown, unknown>
type Middleware = HttpMiddleware.HttpMiddleware.Applied<any, unknown, unknown>
type Serve = HttpServer.HttpServer["Service"]["serve"]

/** What `serve` needs of the server: its `upgrade` listeners. */
interface UpgradeEmitter {
  listeners(event: "upgrade"): Array<Function>
  on(event: "upgrade", listener: UpgradeListener): unknown
  off(event: "upgrade", listener: Function): unknown
}

type UpgradeListener = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => void

/**
 * Effect's `serve`, with its `upgrade` listener swapped for one that runs
 * websock's engine. websock's part has a scope of its own, added after
 * Effect's finalizers: websock's connections get 1001 and their closing
 * handshakes are awaited, then its listener goes and the upgrade requests
 * still running are interrupted; in a sequential scope (a layer's) that is
 * all over before Effect's shutdown starts (`server.close`, then no
 * WebSocket left to wait for), in a parallel one it runs beside it, and
 * `server.close` waits only for those closing handshakes.
 */
const serve = (
  server: UpgradeEmitter,
  inner: HttpServer.HttpServer["Service"],
  settings: Settings.Settings,
  websock: WebsockOptions,
  app: App,
  middleware: Middleware | undefined
) =>
  Effect.gen(function*() {
    const serveScope = yield* Effect.scope
    const before = server.listeners("upgrade")
    yield* (middleware === undefined ? inner.serve(app) : inner.serve(app, middleware))
    const added = server.listeners("upgrade").filter((listener) => !before.includes(listener))
    if (added.length !== 1) {
      return yield* Effect.die(
        new Error(
          `websock/NodeHttpServer: @effect/platform-node's serve added ${added.length} upgrade listeners, where websock expects one to replace; this version of @effect/platform-node is not supported`
        )
      )
    }
    server.off("upgrade", added[0]!)
    const scope = Scope.forkUnsafe(serveScope, "sequential")
    // The upgrade requests' fibers: interrupted after websock's connections are closed.
    const requests = Scope.forkUnsafe(scope, "parallel")
    let listener: UpgradeListener | undefined = undefined
    yield* Scope.addFinalizer(scope, Effect.sync(() => listener !== undefined && server.off("upgrade", listener)))
    // Until its shutdown is over, websock answers new upgrades (503).
    const engine = yield* Scope.provide(Engine.make(settings), scope)
    const upgrades = EffectUpgrade.make(engine, websock, CurrentRouteOptions, noRouteOptions)
    const withRequest = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.updateService(effect, HttpServerRequest.HttpServerRequest, (request) => upgrades.request(request))
    const handler: UpgradeListener = yield* PlatformNodeHttpServer.makeUpgradeHandler(
      Effect.succeed(upgrades.wss as unknown as NodeWS.WebSocketServer),
      // Outermost, so that middleware sees websock's request too; Effect's
      // response handling keeps the request it was given (the 101 is told there).
      middleware === undefined ? withRequest(app) : app,
      { scope: requests, middleware: middleware === undefined ? undefined : (effect: App) => withRequest(middleware(effect)) as App }
    )
    listener = handler
    server.on("upgrade", handler)
  })
