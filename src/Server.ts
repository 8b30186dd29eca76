/**
 * The running server: listening, the HTTP upgrade, one scope and fiber per
 * connection, graceful shutdown. It is the only module that makes decisions
 * about resources and time; the protocol's decisions come from
 * `Connection.step` (through `WebSocket.Driver`) and the handshake's from
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
 * the 101 is written; then a `WebSocket.Driver` runs the socket and the
 * route's handler runs in a fiber of the connection's own scope. The
 * connection ends when the closing handshake is over, the socket is closed,
 * and the handler has returned.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Net from "node:net"
import { ServerError, WebSocketError } from "./Errors.ts"
import * as Frame from "./Frame.ts"
import * as Handshake from "./Handshake.ts"
import * as PerMessageDeflate from "./PerMessageDeflate.ts"
import * as WebSocket from "./WebSocket.ts"

/**
 * A route: the handler of its connections and, optionally, how the upgrade
 * is answered.
 *
 * @since 0.1.0
 * @category models
 */
export interface Route<R = never> {
  /**
   * Runs for the lifetime of one connection. When it returns, the connection
   * is closed with 1000; when it fails or dies, with 1011 (and the cause is
   * logged once). Failing with `ConnectionClosed` after the peer went away is
   * not an error.
   */
  readonly handler: (socket: WebSocket.WebSocket) => Effect.Effect<unknown, unknown, R>
  /**
   * Chooses a subprotocol among the ones the client offered (in its order of
   * preference). Returning anything not offered is ignored.
   */
  readonly protocol?: ((offered: ReadonlyArray<string>, request: WebSocket.Request) => string | undefined) | undefined
  /** Extra headers for the 101 response, e.g. `Set-Cookie`. */
  readonly headers?: ((request: WebSocket.Request) => ReadonlyArray<readonly [string, string]>) | undefined
}

/**
 * The server's settings. Every one has a safe default (see `defaults`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<R = never> {
  /** TCP port; 0 picks a free one. Default 0. */
  readonly port?: number | undefined
  /** Address to listen on. Default: all interfaces. */
  readonly host?: string | undefined
  /** Handlers by request path; any other path is answered 404. */
  readonly routes: Readonly<Record<string, Route<R> | Route<R>["handler"]>>
  /** Largest message, across all its fragments and after inflating (1009 beyond). Default 1 MiB. */
  readonly maxMessageSize?: number | undefined
  /** Largest HTTP request head (431 beyond). Default 16 KiB. */
  readonly maxHeadSize?: number | undefined
  /** Time to complete the upgrade request (slowloris). Default 10 s. */
  readonly handshakeTimeout?: number | undefined
  /** Time to wait for the peer's Close after ours, then for its TCP close. Default 5 s. */
  readonly closeTimeout?: number | undefined
  /** Interval of automatic Pings; 0 disables them. Default 30 s. */
  readonly pingInterval?: number | undefined
  /** A peer that sends nothing (no Pong, no data) for this long is closed with 1001; 0 disables. Default 120 s. */
  readonly idleTimeout?: number | undefined
  /** Maximum lifetime of a connection (closed with 1001 after it); 0 disables. Default 0. */
  readonly maxLifetime?: number | undefined
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
  readonly shutdownTimeout?: number | undefined
  /** permessage-deflate policy; `false` or absent: never negotiated. */
  readonly compression?: Partial<PerMessageDeflate.Options> | false | undefined
}

/**
 * The defaults of every numeric setting.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  port: 0,
  maxMessageSize: 1024 * 1024,
  maxHeadSize: 16 * 1024,
  handshakeTimeout: 10_000,
  closeTimeout: 5_000,
  pingInterval: 30_000,
  idleTimeout: 120_000,
  maxLifetime: 0,
  highWaterMark: 1024 * 1024,
  maxBufferedAmount: 16 * 1024 * 1024,
  overflow: "wait",
  inboxHighWaterMark: 256,
  maxConnections: 10_000,
  shutdownTimeout: 10_000
} as const

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
 * `shutdownTimeout`, then ends what remains.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <R = never>(options: Options<R>): Effect.Effect<RunningServer, ServerError, Scope.Scope | R> =>
  Effect.gen(function*() {
    const settings = resolve(options)
    const runFork = yield* FiberSet.makeRuntime<R>()
    const context = yield* Effect.context<R>()
    const runPromise = Effect.runPromiseWith(context)
    const state: ServerState = {
      shuttingDown: false,
      handshaking: new Map(),
      drivers: new Set(),
      active: 0,
      idleWaiters: []
    }
    const clock: WebSocket.Clock = { now: Date.now() }
    const runtime: Runtime<R> = { settings, state, runFork, runPromise, clock }
    // One timer for every connection's keepalive, idle timeout and lifetime.
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        const timer = setInterval(() => {
          const now = (clock.now = Date.now())
          for (const driver of state.drivers) driver.tick(now)
        }, sweepPeriod(settings.driver))
        timer.unref()
        return timer
      }),
      (timer) => Effect.sync(() => clearInterval(timer))
    )
    const server = Net.createServer({ pauseOnConnect: true, noDelay: true })
    server.on("connection", (socket) => accept(socket, runtime))
    yield* Effect.callback<void, ServerError>((resume) => {
      const onError = (cause: unknown) => resume(Effect.fail(new ServerError({ reason: "ListenFailed", cause })))
      server.once("error", onError)
      server.listen({ port: settings.port, host: options.host }, () => {
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
export const layer = <R = never>(options: Options<R>): Layer.Layer<WebSocketServer, ServerError, R> =>
  Layer.effect(WebSocketServer, make(options))

/**
 * Runs a server until interrupted (then shuts it down gracefully).
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = <R = never>(options: Options<R>): Effect.Effect<never, ServerError, R> =>
  Effect.scoped(Effect.andThen(make(options), Effect.never))

// -----------------------------------------------------------------------------
// internals
// -----------------------------------------------------------------------------

interface Settings<R> {
  readonly port: number
  readonly routes: ReadonlyMap<string, Route<R>>
  readonly maxHeadSize: number
  readonly handshakeTimeout: number
  readonly closeTimeout: number
  readonly maxConnections: number
  readonly shutdownTimeout: number
  readonly driver: WebSocket.DriverOptions
  readonly compression: PerMessageDeflate.Options | undefined
}

interface ServerState {
  shuttingDown: boolean
  /** Sockets reading their request head, by the function that abandons the read. */
  readonly handshaking: Map<() => void, Net.Socket>
  readonly drivers: Set<WebSocket.Driver>
  /** Accepted sockets not yet ended (handshaking or upgraded). */
  active: number
  idleWaiters: Array<() => void>
}

const resolve = <R>(options: Options<R>): Settings<R> => {
  const routes = new Map<string, Route<R>>()
  for (const [path, route] of Object.entries(options.routes)) {
    routes.set(path, typeof route === "function" ? { handler: route } : route)
  }
  const compression = options.compression === undefined || options.compression === false
    ? undefined
    : { ...PerMessageDeflate.defaults, ...options.compression }
  return {
    port: options.port ?? defaults.port,
    routes,
    maxHeadSize: options.maxHeadSize ?? defaults.maxHeadSize,
    handshakeTimeout: options.handshakeTimeout ?? defaults.handshakeTimeout,
    closeTimeout: options.closeTimeout ?? defaults.closeTimeout,
    maxConnections: options.maxConnections ?? defaults.maxConnections,
    shutdownTimeout: options.shutdownTimeout ?? defaults.shutdownTimeout,
    compression: compression !== undefined && compression.enabled ? compression : undefined,
    driver: {
      maxMessageSize: options.maxMessageSize ?? defaults.maxMessageSize,
      closeTimeout: options.closeTimeout ?? defaults.closeTimeout,
      pingInterval: options.pingInterval ?? defaults.pingInterval,
      idleTimeout: options.idleTimeout ?? defaults.idleTimeout,
      maxLifetime: options.maxLifetime ?? defaults.maxLifetime,
      highWaterMark: options.highWaterMark ?? defaults.highWaterMark,
      maxBufferedAmount: options.maxBufferedAmount ?? defaults.maxBufferedAmount,
      overflow: options.overflow ?? defaults.overflow,
      inboxHighWaterMark: options.inboxHighWaterMark ?? defaults.inboxHighWaterMark
    }
  }
}

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

const isConnectionClosed = (cause: Cause.Cause<unknown>): boolean => {
  const error = Cause.findErrorOption(cause)
  return error._tag === "Some" && error.value instanceof WebSocketError && error.value.reason._tag === "ConnectionClosed"
}

/** What the server needs to run connections. */
interface Runtime<R> {
  readonly settings: Settings<R>
  readonly state: ServerState
  readonly runFork: <A, E>(effect: Effect.Effect<A, E, R>) => Fiber.Fiber<A, E>
  readonly runPromise: <A, E>(effect: Effect.Effect<A, E, R>) => Promise<A>
  readonly clock: WebSocket.Clock
}

/**
 * How often the timer sweep runs: a fifth of the shortest timer, between
 * 5 ms and 1 s, so that a timer fires at most 20% (or 1 s) late.
 */
const sweepPeriod = (options: WebSocket.DriverOptions): number => {
  const timers = [options.pingInterval, options.idleTimeout, options.maxLifetime].filter((t) => t > 0)
  return timers.length === 0 ? 1000 : Math.min(1000, Math.max(5, Math.floor(Math.min(...timers) / 5)))
}

/**
 * Takes an accepted socket through the handshake. No fiber exists until the
 * upgrade succeeds: a connection's fiber is its handler's.
 */
const accept = <R>(socket: Net.Socket, runtime: Runtime<R>): void => {
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
const upgrade = <R>(socket: Net.Socket, request: Handshake.Request, rest: Uint8Array, runtime: Runtime<R>): void => {
  const { settings, state } = runtime
  const linger = settings.closeTimeout
  if (state.shuttingDown) return rejectAndEnd(socket, 503, "server shutting down", linger, state)
  const decision = Handshake.validateUpgrade(request)
  if (decision._tag === "Reject") return rejectAndEnd(socket, decision.status, decision.reason, linger, state, decision.headers)
  const route = settings.routes.get(request.path)
  if (route === undefined) return rejectAndEnd(socket, 404, "no route for this path", linger, state)
  const req: WebSocket.Request = {
    method: request.method,
    target: request.target,
    path: request.path,
    query: request.query,
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
    runtime.runFork(Effect.logError("websock: the route's protocol or headers function threw; answered 500", cause).pipe(
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
 * a fiber with a scope of its own (closed when the handler ends). The
 * connection has ended when both the socket has closed and the handler has
 * returned.
 */
const run = <R>(
  socket: Net.Socket,
  route: Route<R>,
  req: WebSocket.Request,
  protocol: string | undefined,
  extensions: string | undefined,
  negotiated: PerMessageDeflate.Negotiated | undefined,
  rest: Uint8Array,
  runtime: Runtime<R>
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
  const driver = new WebSocket.Driver(
    socket,
    settings.driver,
    req,
    protocol,
    extensions,
    codec,
    settings.compression?.threshold ?? 0,
    runtime.runPromise,
    (d, outcome) => {
      state.drivers.delete(d)
      if (!outcome.clean && outcome.initiator === "local" && isViolation(outcome.code)) {
        runtime.runFork(Effect.logWarning(`websock: connection failed with ${outcome.code}: ${outcome.reason}`).pipe(
          Effect.annotateLogs(annotations(d))
        ))
      }
      done()
    },
    runtime.clock
  )
  state.drivers.add(driver)
  // Suspended, so that a handler that throws before returning its Effect is
  // a defect of its own connection (1011), like one that dies inside it.
  const fiber = runtime.runFork(Effect.scoped(Effect.suspend(() => route.handler(driver.handle))))
  fiber.addObserver((exit) => {
    if (Exit.isSuccess(exit) || isConnectionClosed(exit.cause)) {
      // Returned, or failed because a connection (this one, or another it
      // relayed to) had closed: close normally (ignored if already closing).
      driver.input({ _tag: "Close", code: Frame.CloseCode.Normal, reason: "" })
    } else if (!Cause.hasInterruptsOnly(exit.cause)) {
      driver.input({ _tag: "Close", code: Frame.CloseCode.InternalError, reason: "internal error" })
      runtime.runFork(Effect.logError("websock: handler failed; connection closed with 1011", exit.cause).pipe(
        Effect.annotateLogs(annotations(driver))
      ))
    } else if (state.shuttingDown) {
      // Interrupted by a shutdown past its timeout: the connection goes too.
      driver.dispose()
    } else {
      driver.input({ _tag: "Close", code: Frame.CloseCode.GoingAway, reason: "" })
    }
    done()
  })
  driver.start(rest)
}

const annotations = (driver: WebSocket.Driver) => ({
  connection: driver.id,
  remote: `${driver.handle.request.remoteAddress}:${driver.handle.request.remotePort}`,
  path: driver.handle.request.path
})

const isViolation = (code: number): boolean =>
  code === Frame.CloseCode.ProtocolError || code === Frame.CloseCode.InvalidPayload ||
  code === Frame.CloseCode.MessageTooBig || code === Frame.CloseCode.UnsupportedData

const shutdown = (server: Net.Server, state: ServerState, settings: Settings<unknown>): Effect.Effect<void> =>
  Effect.gen(function*() {
    state.shuttingDown = true
    server.close()
    for (const [cancel, socket] of state.handshaking) {
      state.handshaking.delete(cancel)
      cancel()
      rejectAndEnd(socket, 503, "server shutting down", settings.closeTimeout, state)
    }
    for (const driver of state.drivers) {
      driver.input({ _tag: "Close", code: Frame.CloseCode.GoingAway, reason: "server shutting down" })
    }
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
    // disposes each connection (and destroys its socket).
  })
