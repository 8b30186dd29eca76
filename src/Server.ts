/**
 * websock's own server: a `node:net` listener, the request head read under
 * `maxHeadSize` and `handshakeTimeout`, then the engine (internal/engine.ts:
 * the upgrade, one scope and fiber per connection, graceful shutdown), which
 * `Upgrade` also feeds from a `node:http` server's `upgrade` event. The
 * protocol's decisions come from `Connection.step` (through the internal
 * `Driver`) and the handshake's from `Handshake`.
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import * as Server from "websock/Server"
 *
 * const EchoServer = Server.serve({
 *   port: 8888,
 *   routes: {
 *     "/ws": (ws) => ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch)))
 *   }
 * })
 * Effect.runFork(EchoServer)
 * ```
 *
 * Lifecycle of a connection: the socket is accepted paused; its request head
 * is read; the request, the route, its Origin allow-list and upgrade decision
 * and the extensions are checked (an HTTP error answers anything wrong); the
 * 101 is written; then a `Driver` runs the socket and the route's handler
 * runs in a fiber of the connection's own scope. The connection ends when
 * the closing handshake is over, the socket is closed, and the handler has
 * returned.
 *
 * @since 0.1.0
 */
import type * as Config from "effect/Config"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Net from "node:net"
import { ListenFailed, ServerError, UpgradeRejected } from "./Errors.ts"
import * as Handshake from "./Handshake.ts"
import * as Engine from "./internal/engine.ts"
import * as Events from "./internal/events.ts"
import * as Settings from "./internal/settings.ts"
import type * as PerMessageDeflate from "./PerMessageDeflate.ts"
import type * as Topics from "./Topics.ts"
import type * as WebSocket from "./WebSocket.ts"

/**
 * A route: the handler of its connections and, optionally, how the upgrade
 * is decided and answered. `A` is what the upgrade decision accepts with
 * (e.g. the authenticated user): the handler, `protocol` and `headers`
 * receive it. Write a route with `route` to have `A` inferred.
 *
 * @since 0.1.0
 * @category models
 */
export interface Route<R = never, A = undefined> {
  /**
   * Decides the upgrade before the 101, with the request's headers, cookies,
   * query, params and remote address: succeed with the value the handler
   * receives, or fail with `UpgradeRejected` (see `reject`) to answer with
   * its status, headers and body. It runs in a fiber with a scope of its
   * own, within `handshakeTimeout` (503 beyond it); a defect answers 500 and
   * is logged once; a client that goes away interrupts it. Messages the
   * client sends meanwhile wait for the connection.
   */
  readonly upgrade?: ((request: WebSocket.Request) => Effect.Effect<A, UpgradeRejected, R>) | undefined
  /**
   * Runs for the lifetime of one connection, in a fiber and a scope of its
   * own. When it returns (or fails with its own connection's
   * `ConnectionClosed`), the connection is closed with 1000; when it fails or
   * dies otherwise, with 1011 (and the cause is logged once); when it is
   * interrupted, with 1001. Once the connection is over and every message
   * was delivered, it is interrupted and its scope closed.
   */
  readonly handler: (socket: WebSocket.WebSocketConnection, accepted: A) => Effect.Effect<unknown, unknown, R>
  /**
   * Chooses a subprotocol among the ones the client offered (in its order of
   * preference). Returning anything not offered is ignored.
   */
  readonly protocol?: ((offered: ReadonlyArray<string>, request: WebSocket.Request, accepted: A) => string | undefined) | undefined
  /** Extra headers for the 101 response, e.g. `Set-Cookie`. */
  readonly headers?: ((request: WebSocket.Request, accepted: A) => ReadonlyArray<readonly [string, string]>) | undefined
  /** This route's `Origin` allow-list, in place of the server's `origins`. */
  readonly origins?: ReadonlyArray<string> | undefined
}

/**
 * A route as the `routes` option takes it: a handler, or a `Route`.
 *
 * @since 0.2.0
 * @category models
 */
export type RouteInput<R = any> = Route<R, any> | ((socket: WebSocket.WebSocketConnection) => Effect.Effect<unknown, unknown, R>)

/**
 * A route, with the value of its upgrade decision inferred for the handler:
 *
 * ```ts
 * Server.route({
 *   upgrade: (request) => request.headers.get("authorization") === "Bearer demo-token"
 *     ? Effect.succeed({ user: "demo" })
 *     : Server.reject(401, { headers: [["WWW-Authenticate", "Bearer"]] }),
 *   handler: (ws, { user }) => ws.send(`hello ${user}`)
 * })
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const route = <A = undefined, R1 = never, R2 = never>(route: {
  readonly upgrade?: ((request: WebSocket.Request) => Effect.Effect<A, UpgradeRejected, R1>) | undefined
  readonly handler: (socket: WebSocket.WebSocketConnection, accepted: A) => Effect.Effect<unknown, unknown, R2>
  readonly protocol?: ((offered: ReadonlyArray<string>, request: WebSocket.Request, accepted: A) => string | undefined) | undefined
  readonly headers?: ((request: WebSocket.Request, accepted: A) => ReadonlyArray<readonly [string, string]>) | undefined
  readonly origins?: ReadonlyArray<string> | undefined
}): Route<R1 | R2, A> => route

/**
 * `R` itself, written so that TypeScript does not infer `R` from where the
 * result goes: an Effect that is absent (no `open`, no `close`) needs
 * nothing, whatever the `routes` option would accept.
 */
type Needs<R> = [R] extends [infer X] ? X : never

/**
 * A route of per-event Effects, for servers that hold many idle connections:
 * between events nothing runs for a connection (no fiber, no Stream, no
 * scope), where a `handler` parks a fiber for its whole life.
 *
 * - `open(ws, accepted)` runs once, before any message is handed over;
 * - `message(ws, message, accepted)` runs for each message, in order, one at
 *   a time: the next message waits until the previous Effect is done (and
 *   past `inboxHighWaterMark` waiting messages the socket is no longer read,
 *   as with a slow handler);
 * - `close(ws, outcome, accepted)` runs once after the connection is over
 *   (its closing handshake done, the socket closed, every message handled),
 *   with its `CloseOutcome`.
 *
 * Each event runs in a fiber and a scope of its own, with the route's
 * services, under the connection's span. A failure or defect of `open` or
 * `message` closes the connection with 1011 and is logged once (later
 * messages are dropped; `close` still runs); an Effect still running
 * `closeTimeout` after the connection is over is interrupted. A shutdown
 * past `shutdownTimeout` interrupts what runs and `close` may not run.
 *
 * ```ts
 * Server.serve({
 *   port: 8080,
 *   routes: {
 *     "/ws": Server.events({
 *       open: (ws) => ws.send("hello"),
 *       message: (ws, message) => ws.send(message),
 *       close: (ws, outcome) => Effect.logInfo(`closed with ${outcome.code}`)
 *     })
 *   }
 * })
 * ```
 *
 * The result is a `Route`, usable wherever one is (`routes` of
 * `Server.make`, `Upgrade`, `Http2`, `NodeHttpServer`); its `handler` runs
 * the same events in one fiber, for code that calls it directly.
 *
 * @since 0.2.0
 * @category constructors
 */
export const events = <A = undefined, R1 = never, R2 = never, R3 = never, R4 = never>(options: {
  readonly upgrade?: ((request: WebSocket.Request) => Effect.Effect<A, UpgradeRejected, R1>) | undefined
  readonly open?: ((socket: WebSocket.WebSocketConnection, accepted: A) => Effect.Effect<unknown, unknown, R2>) | undefined
  readonly message: (socket: WebSocket.WebSocketConnection, message: WebSocket.Message, accepted: A) => Effect.Effect<unknown, unknown, R3>
  readonly close?:
    | ((socket: WebSocket.WebSocketConnection, outcome: WebSocket.CloseOutcome, accepted: A) => Effect.Effect<unknown, unknown, R4>)
    | undefined
  readonly protocol?: ((offered: ReadonlyArray<string>, request: WebSocket.Request, accepted: A) => string | undefined) | undefined
  readonly headers?: ((request: WebSocket.Request, accepted: A) => ReadonlyArray<readonly [string, string]>) | undefined
  readonly origins?: ReadonlyArray<string> | undefined
}): Route<Needs<R1 | R2 | R3 | R4>, A> => {
  const { close, message, open } = options
  const handlers: Events.Handlers = { open, message, close }
  const route: Route<R1 | R2 | R3 | R4, A> = {
    upgrade: options.upgrade,
    protocol: options.protocol,
    headers: options.headers,
    origins: options.origins,
    // The same events in one fiber (the engine runs `handlers` without it).
    handler: (ws, accepted) =>
      Effect.gen(function*() {
        if (open !== undefined) yield* open(ws, accepted)
        yield* ws.messages.pipe(Stream.runForEach((m) => message(ws, m, accepted)))
        if (close !== undefined) yield* close(ws, yield* ws.closed, accepted)
      }),
    ...{ [Events.EventsId]: handlers }
  }
  return route as Route<Needs<R1 | R2 | R3 | R4>, A>
}

/**
 * Refuses an upgrade from a route's `upgrade` decision: the client gets
 * `status` (400-599; anything else answers 500 and is logged), the
 * `headers` (`WWW-Authenticate` with a 401, `Retry-After` with a 429 or
 * 503...) and `body` as text (default: the status text).
 *
 * @since 0.2.0
 * @category constructors
 */
export const reject = (
  status: number,
  options?: { readonly headers?: ReadonlyArray<readonly [string, string]> | undefined; readonly body?: string | undefined }
): Effect.Effect<never, UpgradeRejected> => Effect.fail(new UpgradeRejected({ status, headers: options?.headers, body: options?.body }))

/**
 * The services the routes need (their upgrade decisions and handlers), less
 * `Scope` (each connection, and each decision, has a scope of its own).
 *
 * @since 0.2.0
 * @category models
 */
export type Requirements<Routes> = Exclude<{ [K in keyof Routes]: RouteRequirements<Routes[K]> }[keyof Routes], Scope.Scope>

type RouteRequirements<T> = T extends { readonly handler: infer H } ? EffectRequirements<H> | EffectRequirements<UpgradeOf<T>>
  : EffectRequirements<T>

type UpgradeOf<T> = T extends { readonly upgrade?: infer U } ? Exclude<U, undefined> : never

/** The services a function's Effect needs (none for a function that only throws). */
type EffectRequirements<F> = F extends (...args: any) => infer Out
  ? [Out] extends [never] ? never : Out extends Effect.Effect<any, any, infer R> ? R : never
  : never

/**
 * The settings of one connection, the same on a server and on a client
 * (`websock/Client`, whose `pingInterval` and `idleTimeout` default to 0).
 *
 * @since 0.2.0
 * @category models
 */
export interface ConnectionOptions {
  /** Largest message, across all its fragments and after inflating (1009 beyond). Default 1 MiB. */
  readonly maxMessageSize?: number | undefined
  /** Time to wait for the peer's Close after ours, then for its TCP close. Default 5 s. */
  readonly closeTimeout?: Duration.Input | undefined
  /** Interval of automatic Pings; 0 disables them. Default 30 s. */
  readonly pingInterval?: Duration.Input | undefined
  /** A peer that sends nothing (no Pong, no data) for this long is closed with 1001; 0 disables. Default 120 s. */
  readonly idleTimeout?: Duration.Input | undefined
  /** Maximum lifetime of a connection (closed with 1001 after it); 0 disables. Default 0. */
  readonly maxLifetime?: Duration.Input | undefined
  /** `send` suspends while more than this many bytes wait to be written. Default 1 MiB. */
  readonly highWaterMark?: number | undefined
  /** The ceiling for the `"drop"` and `"close"` overflow policies, and for automatic Pongs. Default 16 MiB. */
  readonly maxBufferedAmount?: number | undefined
  /** What `send` does above the ceiling. Default `"wait"`. */
  readonly overflow?: WebSocket.OverflowPolicy | undefined
  /** Messages not yet taken by the handler above which the socket is no longer read. Default 256. */
  readonly inboxHighWaterMark?: number | undefined
}

/**
 * The server's settings. Every one has a safe default (see `defaults`). Time
 * settings take a `Duration.Input` ("10 seconds", or a number of
 * milliseconds).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<Routes extends Readonly<Record<string, RouteInput>> = Readonly<Record<string, RouteInput<Scope.Scope>>>>
  extends ConnectionOptions
{
  /** TCP port; 0 picks a free one. Default 0. */
  readonly port?: number | undefined
  /** Address to listen on. Default: all interfaces. */
  readonly host?: string | undefined
  /**
   * Listen with `SO_REUSEPORT` (Node's `reusePort`: Linux 3.9+, FreeBSD 12+,
   * DragonFly, Solaris), so that several processes listen on one port and
   * the kernel spreads the connections among them (see the README's "All
   * cores"). Elsewhere listening fails with `ListenFailed`. Default false.
   */
  readonly reusePort?: boolean | undefined
  /**
   * Handlers by request path: plain paths (`/chat`) or paths with `:name`
   * segments (`/rooms/:id`, read from `request.params`); the query does not
   * take part. Any other path is answered 404. A key of another form fails
   * `make` with `InvalidOption`.
   */
  readonly routes: Routes
  /** Largest HTTP request head (431 beyond). Default 16 KiB. */
  readonly maxHeadSize?: number | undefined
  /** Time to complete the upgrade request (slowloris). Default 10 s. */
  readonly handshakeTimeout?: Duration.Input | undefined
  /** Open and opening connections beyond which an upgrade is answered 503. Default 10,000. */
  readonly maxConnections?: number | undefined
  /** On shutdown, time for open connections to finish their closing handshake. Default 10 s. */
  readonly shutdownTimeout?: Duration.Input | undefined
  /**
   * The `Origin`s allowed to connect (`"https://example.com"`: scheme, host
   * and port), for every route without its own; another Origin is answered
   * 403. Browsers always send Origin and do not apply CORS to WebSockets, so
   * this is what stops another site's pages from connecting with your
   * users' cookies; a request without Origin (not a browser) is let through.
   * Default: any origin.
   */
  readonly origins?: ReadonlyArray<string> | undefined
  /** permessage-deflate policy; `false` or absent: never negotiated. */
  readonly compression?: Partial<PerMessageDeflate.Options> | false | undefined
  /**
   * Whether the server reports its metrics (`websock.*`, see the README)
   * through `effect/Metric`, into the `Metric.MetricRegistry` of the context
   * it is built in. `false`: nothing is counted. Default `true`.
   */
  readonly metrics?: boolean | undefined
}

/**
 * The defaults of every setting (times in milliseconds).
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = Settings.defaults

/**
 * A running server.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunningServer {
  /** The bound address and port (useful with `port: 0`). */
  readonly address: { readonly host: string; readonly port: number }
  /** Open and opening connections. */
  readonly connections: Effect.Effect<number>
  /** Publishes to a topic's subscribers (see `Topics`); never waits. */
  readonly publish: (topic: string, message: WebSocket.Message) => Effect.Effect<Topics.PublishResult>
  /** The server's topics: its own, or the `Topics` service it was built with. */
  readonly topics: Topics.TopicsService
}

/**
 * The running server as a service, provided by `layer`.
 *
 * @since 0.1.0
 * @category services
 */
export class WebSocketServer extends Context.Service<WebSocketServer, RunningServer>()("websock/Server") {}

/**
 * Starts a server in the current scope; closing the scope shuts it down
 * gracefully: it stops accepting, answers half-open handshakes with 503,
 * closes every connection with 1001, waits for their closing handshakes up to
 * `shutdownTimeout`, then ends what remains. Bad options fail with
 * `InvalidOption` naming the option, before anything listens.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const Routes extends Readonly<Record<string, RouteInput>>>(
  options: Options<Routes>
): Effect.Effect<RunningServer, ServerError, Scope.Scope | Requirements<Routes>> =>
  Effect.gen(function*() {
    const settings = yield* Settings.make(options)
    const engine = yield* Engine.make(settings)
    const server = Net.createServer({ pauseOnConnect: true, noDelay: true })
    server.on("connection", (socket) => accept(socket, engine))
    yield* Effect.callback<void, ServerError>((resume) => {
      const onError = (cause: unknown) => resume(Effect.fail(new ServerError({ reason: new ListenFailed({ cause }) })))
      server.once("error", onError)
      server.listen({ port: settings.port, host: settings.host, reusePort: settings.reusePort }, () => {
        server.off("error", onError)
        // A failed accept is the listener's error: logged, never thrown (it would end the process).
        server.on("error", (cause) => {
          engine.runFork(Effect.logError("websock: the listener failed to accept a connection", String(cause)))
        })
        resume(Effect.void)
      })
    })
    // Runs before the engine's shutdown: nothing new is accepted meanwhile.
    yield* Effect.addFinalizer(() => Effect.sync(() => server.close()))
    const bound = server.address()
    const address = typeof bound === "object" && bound !== null
      ? { host: bound.address, port: bound.port }
      : { host: String(bound), port: settings.port }
    yield* Effect.logDebug(`websock listening on ${address.host}:${address.port}`)
    return {
      address,
      connections: Effect.sync(() => engine.state.active),
      publish: (topic, message) => engine.topics.publish(topic, message),
      topics: engine.topics
    }
  })

/**
 * The server as a Layer providing `WebSocketServer`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <const Routes extends Readonly<Record<string, RouteInput>>>(
  options: Options<Routes>
): Layer.Layer<WebSocketServer, ServerError, Requirements<Routes>> => Layer.effect(WebSocketServer, make(options))

/**
 * The server as a Layer whose settings come from Effect `Config` (as
 * `NodeHttpServer.layerConfig` does): each setting may be a plain value or a
 * `Config` (e.g. `Config.Port("PORT")`, `Config.Duration("IDLE_TIMEOUT")`),
 * read when the layer is built; the routes are code, so they are given
 * apart. Missing or malformed configuration fails with `ConfigError`; values
 * out of range with `InvalidOption`, like `layer`.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfig = <const Routes extends Readonly<Record<string, RouteInput>>>(
  routes: Routes,
  options: Config.Wrap<Omit<Options<Routes>, "routes">>
): Layer.Layer<WebSocketServer, ServerError | Config.ConfigError, Requirements<Routes>> =>
  Layer.effect(
    WebSocketServer,
    // Loaded here, not with the module: `effect/Config` brings `Schema` (about
    // 4.5 MiB of V8 heap), which a server configured in code does not need.
    Effect.promise(() => import("effect/Config")).pipe(
      Effect.flatMap((Config) => Config.unwrap(options)),
      Effect.flatMap((settings) => make({ ...(settings as object), routes } as Options<Routes>))
    )
  )

/**
 * Runs a server until interrupted (then shuts it down gracefully).
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = <const Routes extends Readonly<Record<string, RouteInput>>>(
  options: Options<Routes>
): Effect.Effect<never, ServerError, Requirements<Routes>> => Effect.scoped(Effect.andThen(make(options), Effect.never))

// -----------------------------------------------------------------------------
// internals
// -----------------------------------------------------------------------------

type HeadOutcome =
  | Exclude<Handshake.HeadResult, { readonly _tag: "Incomplete" }>
  | { readonly _tag: "Timeout" }
  | { readonly _tag: "Gone" }

/**
 * Reads the request head, then calls `done` once; leaves the socket paused,
 * holding any later bytes for the connection. Returns a function that
 * abandons the read.
 */
const readHead = (socket: Net.Socket, maxHeadSize: number, timeout: number, done: (outcome: HeadOutcome) => void): () => void => {
  let state = Handshake.initialHead(maxHeadSize) // the head read so far
  let finished = false // the read is over (`done` called, or abandoned)
  const finish = (outcome: HeadOutcome | undefined) => {
    if (finished) return
    finished = true
    socket.pause()
    socket.off("data", onData)
    socket.off("end", onGone)
    socket.off("close", onGone)
    clearTimeout(timer)
    if (outcome !== undefined) done(outcome)
  }
  const onData = (chunk: Uint8Array) => {
    const result = Handshake.feedHead(state, chunk)
    if (result._tag === "Incomplete") state = result.state
    else finish(result)
  }
  const onGone = () => finish({ _tag: "Gone" })
  const timer = setTimeout(() => finish({ _tag: "Timeout" }), timeout)
  socket.on("data", onData)
  socket.once("end", onGone)
  socket.once("close", onGone)
  socket.resume()
  // Abandons the read without calling `done` (shutdown answers the socket itself).
  return () => finish(undefined)
}

/**
 * Takes an accepted socket through its request head, then to the engine.
 * The handshake as a whole (head and the route's upgrade decision) has
 * `handshakeTimeout`.
 */
const accept = (socket: Net.Socket, engine: Engine.Engine): void => {
  if (!Engine.admit(engine, socket)) return
  const { settings, state } = engine
  const deadline = Date.now() + settings.handshakeTimeout
  const cancel = readHead(socket, settings.maxHeadSize, settings.handshakeTimeout, (head) => {
    state.handshaking.delete(cancel)
    switch (head._tag) {
      case "Gone":
        socket.destroy()
        return Engine.ended(state)
      case "Timeout":
        return Engine.rejectAndEnd(engine, socket, 408, "request head not received in time")
      case "TooLarge":
        return Engine.rejectAndEnd(engine, socket, 431, "request head too large")
      case "Malformed":
        return Engine.rejectAndEnd(engine, socket, 400, head.reason)
      case "Complete":
        return Engine.upgrade(engine, socket, head.request, head.rest, deadline)
    }
  })
  state.handshaking.set(cancel, socket)
}
