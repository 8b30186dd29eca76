/**
 * The running server: listening, the HTTP upgrade, one scope and fiber per
 * connection, graceful shutdown. It is the only module that makes decisions
 * about resources and time; the protocol's decisions come from
 * `Connection.step` (through the internal `Driver`) and the handshake's from
 * `Handshake`.
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
 * is read under `maxHeadSize` and `handshakeTimeout`; the route, the request
 * and the extensions are validated (an HTTP error answers anything wrong);
 * the 101 is written; then a `Driver` (internal/driver.ts) runs the socket and the
 * route's handler runs in a fiber of the connection's own scope. The
 * connection ends when the closing handshake is over, the socket is closed,
 * and the handler has returned.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Net from "node:net"
import { inspect } from "node:util"
import * as CloseReason from "./CloseReason.ts"
import { InvalidOption, ListenFailed, ServerError } from "./Errors.ts"
import * as Handshake from "./Handshake.ts"
import { Driver, type Clock } from "./internal/driver.ts"
import * as Settings from "./internal/settings.ts"
import * as PerMessageDeflate from "./PerMessageDeflate.ts"
import type * as WebSocket from "./WebSocket.ts"

/**
 * A route: the handler of its connections and, optionally, how the upgrade
 * is answered.
 *
 * @since 0.1.0
 * @category models
 */
export interface Route<R = never> {
  /**
   * Runs for the lifetime of one connection, in a fiber and a scope of its
   * own. When it returns (or fails with its own connection's
   * `ConnectionClosed`), the connection is closed with 1000; when it fails or
   * dies otherwise, with 1011 (and the cause is logged once); when it is
   * interrupted, with 1001. Once the connection is over and every message
   * was delivered, it is interrupted and its scope closed.
   */
  readonly handler: (socket: WebSocket.WebSocketConnection) => Effect.Effect<unknown, unknown, R>
  /**
   * Chooses a subprotocol among the ones the client offered (in its order of
   * preference). Returning anything not offered is ignored.
   */
  readonly protocol?: ((offered: ReadonlyArray<string>, request: WebSocket.Request) => string | undefined) | undefined
  /** Extra headers for the 101 response, e.g. `Set-Cookie`. */
  readonly headers?: ((request: WebSocket.Request) => ReadonlyArray<readonly [string, string]>) | undefined
}

/**
 * A route as the `routes` option takes it: a handler, or a `Route`.
 *
 * @since 0.2.0
 * @category models
 */
export type RouteInput<R = any> = Route<R> | ((socket: WebSocket.WebSocketConnection) => Effect.Effect<unknown, unknown, R>)

/**
 * The services the routes' handlers need, less `Scope` (each connection has
 * a scope of its own).
 *
 * @since 0.2.0
 * @category models
 */
export type Requirements<Routes> = Exclude<
  { [K in keyof Routes]: Routes[K] extends { readonly handler: infer H } ? HandlerRequirements<H> : HandlerRequirements<Routes[K]> }[
    keyof Routes
  ],
  Scope.Scope
>

/** The services one handler needs (none for a handler that only throws). */
type HandlerRequirements<H> = H extends (socket: any) => infer Out
  ? [Out] extends [never] ? never : Out extends Effect.Effect<any, any, infer R> ? R : never
  : never

/**
 * The server's settings. Every one has a safe default (see `defaults`). Time
 * settings take a `Duration.Input` ("10 seconds", or a number of
 * milliseconds).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<Routes extends Readonly<Record<string, RouteInput>> = Readonly<Record<string, RouteInput<Scope.Scope>>>> {
  /** TCP port; 0 picks a free one. Default 0. */
  readonly port?: number | undefined
  /** Address to listen on. Default: all interfaces. */
  readonly host?: string | undefined
  /**
   * Handlers by request path: plain paths (`/chat`) or paths with `:name`
   * segments (`/rooms/:id`, read from `request.params`); the query does not
   * take part. Any other path is answered 404. A key of another form fails
   * `make` with `InvalidOption`.
   */
  readonly routes: Routes
  /** Largest message, across all its fragments and after inflating (1009 beyond). Default 1 MiB. */
  readonly maxMessageSize?: number | undefined
  /** Largest HTTP request head (431 beyond). Default 16 KiB. */
  readonly maxHeadSize?: number | undefined
  /** Time to complete the upgrade request (slowloris). Default 10 s. */
  readonly handshakeTimeout?: Duration.Input | undefined
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
  /** Open and opening connections beyond which an upgrade is answered 503. Default 10,000. */
  readonly maxConnections?: number | undefined
  /** On shutdown, time for open connections to finish their closing handshake. Default 10 s. */
  readonly shutdownTimeout?: Duration.Input | undefined
  /** permessage-deflate policy; `false` or absent: never negotiated. */
  readonly compression?: Partial<PerMessageDeflate.Options> | false | undefined
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
    const settings = yield* resolve(options)
    const runFork = yield* FiberSet.makeRuntime<any>()
    const context = yield* Effect.context<any>()
    const runPromiseExit = Effect.runPromiseExitWith(context)
    const state: ServerState = {
      shuttingDown: false,
      handshaking: new Map(),
      drivers: new Set(),
      active: 0,
      idleWaiters: []
    }
    const clock: Clock = { now: Date.now() }
    const runtime: Runtime = { settings, state, runFork, runPromiseExit, clock }
    // One timer for every connection's keepalive, idle timeout and lifetime.
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        const timer = setInterval(() => {
          const now = (clock.now = Date.now())
          for (const driver of state.drivers) driver.tick(now)
        }, sweepPeriod(settings.limits))
        timer.unref()
        return timer
      }),
      (timer) => Effect.sync(() => clearInterval(timer))
    )
    const server = Net.createServer({ pauseOnConnect: true, noDelay: true })
    server.on("connection", (socket) => accept(socket, runtime))
    yield* Effect.callback<void, ServerError>((resume) => {
      const onError = (cause: unknown) => resume(Effect.fail(new ServerError({ reason: new ListenFailed({ cause }) })))
      server.once("error", onError)
      server.listen({ port: settings.port, host: settings.host }, () => {
        server.off("error", onError)
        resume(Effect.void)
      })
    })
    // Added after the FiberSet, so it runs before the FiberSet interrupts the
    // connections (finalizers run in reverse order).
    yield* Effect.addFinalizer(() => shutdown(server, state, settings))
    const bound = server.address()
    const address = typeof bound === "object" && bound !== null
      ? { host: bound.address, port: bound.port }
      : { host: String(bound), port: settings.port }
    yield* Effect.logDebug(`websock listening on ${address.host}:${address.port}`)
    return {
      address,
      connections: Effect.sync(() => state.active)
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
    Effect.flatMap(Config.unwrap(options), (settings) => make({ ...(settings as object), routes } as Options<Routes>))
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

type ResolvedRoute = Route<any>

interface ServerState {
  shuttingDown: boolean
  /** Sockets reading their request head, by the function that abandons the read. */
  readonly handshaking: Map<() => void, Net.Socket>
  readonly drivers: Set<Driver>
  /** Accepted sockets not yet ended (handshaking or upgraded). */
  active: number
  idleWaiters: Array<() => void>
}

const resolve = (options: Options<any>): Effect.Effect<Settings.Settings<ResolvedRoute>, ServerError> =>
  Effect.try({
    try: () => Settings.resolve<ResolvedRoute>(options),
    catch: (error) =>
      new ServerError({
        reason: error instanceof InvalidOption ? error : new InvalidOption({ option: "options", problem: String(error) })
      })
  })

const ignore = (): void => {}

/**
 * Answers with an HTTP error and ends the socket after the answer, reading
 * and discarding what the client still sends so that the answer is not lost
 * to a reset; destroys it if the client does not close in time.
 */
const reject = (socket: Net.Socket, status: number, reason: string, linger: number, headers?: ReadonlyArray<readonly [string, string]>) => {
  if (socket.destroyed) return
  socket.on("data", ignore)
  socket.resume()
  socket.end(Handshake.responseError(status, reason, headers))
  const timer = setTimeout(() => socket.destroy(), linger)
  timer.unref?.()
  socket.once("close", () => clearTimeout(timer))
}

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

/** What the server needs to run connections. */
interface Runtime {
  readonly settings: Settings.Settings<ResolvedRoute>
  readonly state: ServerState
  readonly runFork: <A, E>(effect: Effect.Effect<A, E, any>) => Fiber.Fiber<A, E>
  readonly runPromiseExit: <A, E>(effect: Effect.Effect<A, E, any>) => Promise<Exit.Exit<A, E>>
  readonly clock: Clock
}

/**
 * How often the timer sweep runs: a fifth of the shortest timer, between
 * 5 ms and 1 s, so that a timer fires at most 20% (or 1 s) late.
 */
const sweepPeriod = (limits: { readonly pingInterval: number; readonly idleTimeout: number; readonly maxLifetime: number }): number => {
  const timers = [limits.pingInterval, limits.idleTimeout, limits.maxLifetime].filter((t) => t > 0)
  return timers.length === 0 ? 1000 : Math.min(1000, Math.max(5, Math.floor(Math.min(...timers) / 5)))
}

/**
 * Takes an accepted socket through the handshake. No fiber exists until the
 * upgrade succeeds: a connection's fiber is its handler's.
 */
const accept = (socket: Net.Socket, runtime: Runtime): void => {
  const { settings, state } = runtime
  socket.on("error", ignore)
  if (state.shuttingDown || state.active >= settings.maxConnections) {
    reject(socket, 503, state.shuttingDown ? "server shutting down" : "too many connections", settings.closeTimeout)
    return
  }
  state.active++
  const cancel = readHead(socket, settings.maxHeadSize, settings.handshakeTimeout, (head) => {
    state.handshaking.delete(cancel)
    const linger = settings.closeTimeout
    switch (head._tag) {
      case "Gone":
        socket.destroy()
        return ended(state)
      case "Timeout":
        return rejectAndEnd(socket, 408, "request head not received in time", linger, state)
      case "TooLarge":
        return rejectAndEnd(socket, 431, "request head too large", linger, state)
      case "Malformed":
        return rejectAndEnd(socket, 400, head.reason, linger, state)
      case "Complete":
        return upgrade(socket, head.request, head.rest, runtime)
    }
  })
  state.handshaking.set(cancel, socket)
}

const rejectAndEnd = (
  socket: Net.Socket,
  status: number,
  reason: string,
  linger: number,
  state: ServerState,
  headers?: ReadonlyArray<readonly [string, string]>
): void => {
  socket.once("close", () => ended(state))
  reject(socket, status, reason, linger, headers)
}

/** One accepted socket has ended (answered and closed, or upgraded and finished). */
const ended = (state: ServerState): void => {
  state.active--
  if (state.active === 0 && state.idleWaiters.length > 0) {
    const waiters = state.idleWaiters
    state.idleWaiters = []
    for (const w of waiters) w()
  }
}

/** Answers the upgrade request, then runs the connection. */
const upgrade = (socket: Net.Socket, request: Handshake.Request, rest: Uint8Array, runtime: Runtime): void => {
  const { settings, state } = runtime
  const linger = settings.closeTimeout
  if (state.shuttingDown) return rejectAndEnd(socket, 503, "server shutting down", linger, state)
  const decision = Handshake.validateUpgrade(request)
  if (decision._tag === "Reject") return rejectAndEnd(socket, decision.status, decision.reason, linger, state, decision.headers)
  const match = settings.router.match(request.path)
  if (match === undefined) return rejectAndEnd(socket, 404, "no route for this path", linger, state)
  const route = match.value
  const req: WebSocket.Request = {
    method: request.method,
    target: request.target,
    path: request.path,
    query: request.query,
    params: match.params,
    headers: request.headers,
    remoteAddress: socket.remoteAddress,
    remotePort: socket.remotePort
  }
  let negotiated: PerMessageDeflate.Negotiated | undefined = undefined
  let extensions: string | undefined = undefined
  if (settings.compression !== undefined && decision.extensions.length > 0) {
    const negotiation = PerMessageDeflate.negotiate(decision.extensions, settings.compression)
    if (negotiation._tag === "Rejected") return rejectAndEnd(socket, 400, negotiation.reason, linger, state)
    if (negotiation._tag === "Accepted") {
      negotiated = negotiation.params
      extensions = negotiation.header
    }
  }
  let chosen: string | undefined = undefined
  let extra: ReadonlyArray<readonly [string, string]> = []
  try {
    chosen = route.protocol?.(decision.protocols, req)
    extra = route.headers?.(req) ?? []
  } catch (cause) {
    // The route's own code failed: this upgrade gets a 500, the server goes on.
    runtime.runFork(Effect.logError("websock: the route's protocol or headers function threw; answered 500", describe(cause)).pipe(
      Effect.annotateLogs({ path: request.path })
    ))
    return rejectAndEnd(socket, 500, "internal error", linger, state)
  }
  const protocol = chosen !== undefined && decision.protocols.includes(chosen) ? chosen : undefined
  const headers = extra.filter(([name, value]) => Handshake.isValidHeader(name, value))
  if (headers.length !== extra.length) {
    runtime.runFork(Effect.logWarning("websock: dropped invalid response headers from the route").pipe(
      Effect.annotateLogs({ path: request.path })
    ))
  }
  socket.write(Handshake.response101({ accept: Handshake.acceptKey(decision.key), protocol, extensions, headers }))
  run(socket, route, req, protocol, extensions, negotiated, rest, runtime)
}

/**
 * Runs an upgraded connection: a `Driver` for the socket, and the handler in
 * a fiber with a scope of its own. The handler is interrupted once the
 * connection is over and its messages were delivered (its scope closes
 * then); the connection has ended when both the socket has closed and the
 * handler's fiber is done.
 */
const run = (
  socket: Net.Socket,
  route: ResolvedRoute,
  req: WebSocket.Request,
  protocol: string | undefined,
  extensions: string | undefined,
  negotiated: PerMessageDeflate.Negotiated | undefined,
  rest: Uint8Array,
  runtime: Runtime
): void => {
  const { settings, state } = runtime
  // zlib contexts live in a scope of the connection's, closed when it ends.
  const codecScope = negotiated !== undefined ? Scope.makeUnsafe() : undefined
  const codec = negotiated !== undefined && codecScope !== undefined && settings.compression !== undefined
    ? Effect.runSync(Scope.provide(PerMessageDeflate.make(negotiated, settings.compression), codecScope))
    : undefined
  let pending = 2 // the socket's close and the handler's end
  const done = () => {
    if (--pending > 0) return
    if (codecScope !== undefined) Effect.runFork(Scope.close(codecScope, Exit.void))
    ended(state)
  }
  let fiber: Fiber.Fiber<unknown, unknown> | undefined = undefined
  /** Set when the server interrupts the handler because its connection is over. */
  let over = false
  const driver = new Driver({
    socket,
    limits: settings.limits,
    request: req,
    protocol,
    extensions,
    codec,
    deflateThreshold: settings.compression?.threshold ?? 0,
    run: runtime.runPromiseExit,
    clock: runtime.clock,
    onEnd: (d, outcome) => {
      state.drivers.delete(d)
      const detail = outcome.detail
      if (detail !== undefined && CloseReason.isViolation(detail)) {
        runtime.runFork(Effect.logWarning(`websock: connection failed with ${detail.code}: ${detail.reason}`).pipe(
          Effect.annotateLogs(annotations(d))
        ))
      }
      done()
    },
    onOver: () => {
      over = true
      fiber?.interruptUnsafe()
    }
  })
  state.drivers.add(driver)
  // Suspended, so that a handler that throws before returning its Effect is
  // a defect of its own connection (1011), like one that dies inside it.
  fiber = runtime.runFork(Effect.scoped(Effect.suspend(() => route.handler(driver.handle))))
  fiber.addObserver((exit) => {
    if (Exit.isSuccess(exit) || isOwnClose(driver, exit.cause)) {
      // Returned, or ended by its own connection's close: close normally
      // (nothing happens if the connection is already closing).
      driver.closeWith(CloseReason.normal())
    } else if (!Cause.hasInterruptsOnly(exit.cause)) {
      driver.closeWith(CloseReason.internalError("internal error"))
      const code = driver.sentCode()
      runtime.runFork(
        Effect.logError(`websock: handler failed; connection closed with ${code ?? "its earlier close"}`, describe(exit.cause)).pipe(
          Effect.annotateLogs(annotations(driver))
        )
      )
    } else if (state.shuttingDown) {
      // Interrupted by a shutdown past its timeout: the connection goes too.
      driver.abort()
    } else if (!over) {
      driver.closeWith(CloseReason.goingAway("handler interrupted"))
    }
    done()
  })
  driver.start(rest)
}

const isOwnClose = (driver: Driver, cause: Cause.Cause<unknown>): boolean => {
  const error = Cause.findErrorOption(cause)
  return error._tag === "Some" && driver.isOwnClose(error.value)
}

/**
 * A failure as a log line shows it: each error with its fields (a tagged
 * error's data, not only its stack), never payload bytes (our errors carry
 * none).
 */
const describe = (cause: unknown): string => {
  if (Cause.isCause(cause)) {
    return cause.reasons.map((reason) =>
      reason._tag === "Fail"
        ? inspect(reason.error, { depth: 3, breakLength: Infinity })
        : reason._tag === "Die"
        ? inspect(reason.defect, { depth: 3, breakLength: Infinity })
        : "interrupted"
    ).join("\n")
  }
  return inspect(cause, { depth: 3, breakLength: Infinity })
}

const annotations = (driver: Driver) => ({
  connection: driver.id,
  remote: `${driver.request.remoteAddress}:${driver.request.remotePort}`,
  path: driver.request.path
})

const shutdown = (server: Net.Server, state: ServerState, settings: Settings.Settings<ResolvedRoute>): Effect.Effect<void> =>
  Effect.gen(function*() {
    state.shuttingDown = true
    server.close()
    for (const [cancel, socket] of state.handshaking) {
      state.handshaking.delete(cancel)
      cancel()
      rejectAndEnd(socket, 503, "server shutting down", settings.closeTimeout, state)
    }
    for (const driver of state.drivers) driver.closeWith(CloseReason.goingAway("server shutting down"))
    const allEnded = Effect.callback<void>((resume) => {
      if (state.active === 0) return resume(Effect.void)
      const waiter = () => resume(Effect.void)
      state.idleWaiters.push(waiter)
      return Effect.sync(() => {
        const i = state.idleWaiters.indexOf(waiter)
        if (i >= 0) state.idleWaiters.splice(i, 1)
      })
    })
    yield* allEnded.pipe(Effect.timeoutOrElse({ duration: settings.shutdownTimeout, orElse: () => Effect.void }))
    // What remains is interrupted by the FiberSet's own finalizer, which
    // aborts each connection (and destroys its socket).
  })
