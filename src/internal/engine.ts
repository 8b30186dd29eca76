/**
 * What a server does once it has a request head, whoever read it: answers
 * the upgrade (the handshake's rules, the route, the Origin allow-list,
 * permessage-deflate, the route's own upgrade decision), runs the connection
 * (a `Driver` for the socket, the handler in a fiber with a scope of its
 * own), keeps the count and the timer sweep, reports the upgrades and the
 * connections (metrics, one span per upgrade and one per connection, the
 * handler inside the latter), and shuts the connections down.
 * `Server.make` feeds it from a `node:net` server of its own (its own head
 * reader); `Upgrade` from the `upgrade` event of the user's `node:http` or
 * `node:https` server (Node's parser); `Http2` from the extended CONNECT
 * streams of the user's `node:http2` server (RFC 8441: the stream is
 * answered with headers, `:status 200` or an error, instead of bytes). The
 * socket is any `Duplex`.
 *
 * No fiber exists for a connection until it is upgraded, except the route's
 * upgrade decision when it has one: a connection's fiber is its handler's.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Headers from "effect/http/Headers"
import * as HttpTraceContext from "effect/http/HttpTraceContext"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import { Buffer } from "node:buffer"
import type { Duplex } from "node:stream"
import { inspect } from "node:util"
import * as CloseReason from "../CloseReason.ts"
import { UpgradeRejected } from "../Errors.ts"
import * as Handshake from "../Handshake.ts"
import * as PerMessageDeflate from "../PerMessageDeflate.ts"
import type * as WebSocket from "../WebSocket.ts"
import { type Clock, Driver, type DriverOwner } from "./driver.ts"
import { Events, type EventsHost } from "./events.ts"
import type { Inbox } from "./inbox.ts"
import * as Http2Stream from "./http2Stream.ts"
import * as Metrics from "./metrics.ts"
import * as Topics from "../Topics.ts"
import type * as Router from "./router.ts"
import type * as Settings from "./settings.ts"
import * as Syntax from "./syntax.ts"
import * as Tracing from "./tracing.ts"

type ResolvedRoute = Settings.ResolvedRoute

/** The engine of one server. */
export interface Engine {
  readonly settings: Settings.Settings
  readonly state: State
  readonly runFork: <A, E>(effect: Effect.Effect<A, E, any>) => Fiber.Fiber<A, E>
  readonly runPromiseExit: <A, E>(effect: Effect.Effect<A, E, any>) => Promise<Exit.Exit<A, E>>
  readonly clock: Clock
  /** The metrics, unless turned off (`metrics: false`). */
  readonly instruments: Metrics.Instruments | undefined
  readonly tracing: Tracing.Tracing
  /** The topics: the `Topics` service of the context, or the server's own. */
  readonly topics: Topics.TopicsService
}

/** The sockets of one server. */
export interface State {
  shuttingDown: boolean
  /**
   * Sockets before their 101 that a shutdown must answer (reading their
   * request head, or waiting for the route's upgrade decision), by the
   * function that abandons the wait.
   */
  readonly handshaking: Map<() => void, Duplex>
  readonly drivers: Set<Driver>
  /** Counted sockets answered with an HTTP error, until they close. */
  readonly answering: Set<Duplex>
  /** Sockets counted in and not yet ended (handshaking or upgraded). */
  active: number
  idleWaiters: Array<() => void>
}

/**
 * Makes the engine in the current scope: the connections' fibers belong to
 * it, and closing the scope shuts them down (1001 to each, their closing
 * handshakes awaited up to `shutdownTimeout`, then what remains is ended).
 */
export const make = (settings: Settings.Settings): Effect.Effect<Engine, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runFork = yield* FiberSet.makeRuntime<any>()
    const context = yield* Effect.context<any>()
    const state: State = { shuttingDown: false, handshaking: new Map(), drivers: new Set(), answering: new Set(), active: 0, idleWaiters: [] }
    const clock: Clock = { now: Date.now() }
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
    const instruments = settings.metrics ? Metrics.instruments(context) : undefined
    const provided = Context.getOption(context, Topics.Topics)
    const topics = Option.isSome(provided) ? provided.value : yield* Topics.makeWith({ metrics: settings.metrics })
    const engine: Engine = {
      settings,
      state,
      runFork,
      runPromiseExit: Effect.runPromiseExitWith(context),
      clock,
      instruments,
      tracing: Tracing.make(context),
      topics
    }
    // Added after the FiberSet, so it runs before the FiberSet interrupts the
    // connections (finalizers run in reverse order).
    yield* Effect.addFinalizer(() => shutdown(engine))
    return engine
  })

/**
 * Counts a new socket in; answers 503 instead when shutting down or at
 * `maxConnections`. The socket must then reach `ended` exactly once (every
 * path below does).
 */
export const admit = (engine: Engine, socket: Duplex): boolean => {
  const { settings, state } = engine
  socket.on("error", ignore)
  // Gone already (e.g. while the caller's own listener awaited something):
  // nothing to answer, and its close has been and will not come again.
  if (socket.destroyed) return false
  if (state.shuttingDown || state.active >= settings.maxConnections) {
    engine.instruments?.upgraded(503)
    reject(socket, 503, state.shuttingDown ? "server shutting down" : "too many connections", settings.closeTimeout)
    return false
  }
  state.active++
  return true
}

/** Where a socket comes from, for `WebSocket.Request`. */
interface Remote {
  readonly remoteAddress?: string | undefined
  readonly remotePort?: number | undefined
}

/**
 * Answers an upgrade request read from `socket` (counted in by `admit`),
 * then runs the connection. `rest` holds the bytes that came after the head;
 * `deadline` (a `Date.now()` time) bounds the route's upgrade decision.
 * `matched` is the route when the caller chose it itself (the router's
 * otherwise); `parent` the span the upgrade's span belongs under (an HTTP
 * server's request span; otherwise the one the request's trace headers
 * name, or the engine's context's current span).
 */
export const upgrade = (
  engine: Engine,
  socket: Duplex,
  request: Handshake.Request,
  rest: Uint8Array,
  deadline: number,
  matched?: Router.Match<ResolvedRoute>,
  parent?: Tracer.AnySpan
): void => {
  const { settings, state } = engine
  const started = engine.instruments !== undefined ? performance.now() : 0
  // An HTTP/2 stream (RFC 8441) is answered with headers on the stream, not bytes.
  const stream = Http2Stream.isStream(socket) ? socket : undefined
  const remote: Remote = stream !== undefined ? Http2Stream.remoteOf(stream) : socket as Remote
  const span = engine.tracing.start("websock.upgrade", {
    // Under an HTTP server's request span, that span is the server's.
    kind: parent === undefined ? "server" : "internal",
    parent: parent ?? traceParent(request.headers),
    attributes: upgradeAttributes(request, remote)
  })
  /** Answers with an error; the upgrade's span ends with its status. */
  const refuse: Refuse = (status, reason, headers) => {
    endUpgrade(engine, span, status)
    rejectAndEnd(engine, socket, status, reason, headers)
  }
  if (state.shuttingDown) return refuse(503, "server shutting down")
  const overHttp1 = stream === undefined ? Handshake.validateUpgrade(request) : undefined
  const decision = overHttp1 ?? Http2Stream.validateConnect(request)
  if (decision._tag === "Reject") return refuse(decision.status, decision.reason, decision.headers)
  // RFC 6455 §4.2.2 (HTTP/1.1 only: RFC 8441 §5 has no Sec-WebSocket-Key).
  const key = overHttp1?._tag === "Accept" ? overHttp1.key : ""
  // The status of a success: 101 (RFC 6455 §4.2.2), 200 on a stream (RFC 8441 §5).
  const acceptedStatus = stream !== undefined ? 200 : 101
  const match = matched ?? settings.router.match(request.path)
  if (match === undefined) return refuse(404, "no route for this path")
  const route = match.value
  const origins = route.origins
  const origin = request.headers.get("origin")
  // Browsers always send Origin and do not apply CORS to WebSockets: the
  // allow-list is what stops another site's page from connecting. A client
  // without Origin is not a browser (and could send any Origin).
  if (origins !== undefined && origin !== undefined && !origins.has(origin.toLowerCase())) {
    return refuse(403, "origin not allowed")
  }
  const req: WebSocket.Request = new ConnectionRequest(request, match.params, remote)
  let negotiated: PerMessageDeflate.Negotiated | undefined = undefined
  let extensions: string | undefined = undefined
  const { compression } = route.connection ?? settings
  if (compression !== undefined && decision.extensions.length > 0) {
    const negotiation = PerMessageDeflate.negotiate(decision.extensions, compression)
    if (negotiation._tag === "Rejected") return refuse(400, negotiation.reason)
    if (negotiation._tag === "Accepted") {
      negotiated = negotiation.params
      extensions = negotiation.header
    }
  }
  const accept = (accepted: unknown, rest: Uint8Array) => {
    if (socket.destroyed) {
      engine.tracing.end(span, Exit.void)
      return ended(state)
    }
    let chosen: string | undefined = undefined
    let extra: ReadonlyArray<readonly [string, string]> = []
    try {
      chosen = route.protocol?.(decision.protocols, req, accepted)
      extra = route.headers?.(req, accepted) ?? []
    } catch (cause) {
      // The route's own code failed: this upgrade gets a 500, the server goes on.
      logUpgradeFailure(engine, "the route's protocol or headers function threw; answered 500", cause, req)
      return refuse(500, "internal error")
    }
    const protocol = chosen !== undefined && decision.protocols.includes(chosen) ? chosen : undefined
    const headers = extra.filter(([name, value]) => Handshake.isValidHeader(name, value))
    if (headers.length !== extra.length) {
      engine.runFork(Effect.logWarning("websock: dropped invalid response headers from the route").pipe(
        Effect.annotateLogs({ path: req.path })
      ))
    }
    if (stream !== undefined) Http2Stream.accept(stream, { protocol, extensions, headers })
    else socket.write(Handshake.response101({ accept: Handshake.acceptKey(key), protocol, extensions, headers }))
    const instruments = engine.instruments
    if (instruments !== undefined) {
      instruments.upgraded(acceptedStatus)
      instruments.accepted++
      instruments.handshake.observe((performance.now() - started) / 1000)
    }
    if (protocol !== undefined) span.attribute("websocket.subprotocol", protocol)
    if (extensions !== undefined) span.attribute("websocket.extensions", extensions)
    endUpgrade(engine, span, acceptedStatus)
    run(engine, socket, { route, req, accepted, protocol, extensions, negotiated, span }, rest)
  }
  if (route.upgrade === undefined) return accept(undefined, rest)
  decide(engine, socket, route, req, rest, deadline, span, refuse, accept)
}

/**
 * The request as handlers see it (`WebSocket.Request`): the head's fields,
 * its cookies parsed on first access (most connections never ask), and,
 * for a head our own reader read, its headers and query dropped once the
 * connection runs unless asked for already (`compact`): they are parsed
 * again from the head's text on first access. An idle connection then holds
 * one string for its request instead of a Map, its values and a
 * URLSearchParams.
 */
class ConnectionRequest implements WebSocket.Request {
  readonly method: string
  readonly target: string
  readonly path: string
  readonly params: Readonly<Record<string, string>>
  readonly httpVersion: string
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
  private parsedHeaders: ReadonlyMap<string, string> | undefined
  private parsedQuery: URLSearchParams | undefined
  private parsedCookies: ReadonlyMap<string, string> | undefined = undefined
  /** The head's text (our own head reader's requests), from which the headers and query can be parsed again. */
  private readonly head: string | undefined
  /** The headers or the query were asked for: they are kept. */
  private asked = false

  constructor(request: Handshake.Request, params: Readonly<Record<string, string>>, remote: Remote) {
    // The common values as constants, not a string of their own per connection.
    this.method = request.method === "GET" ? "GET" : request.method
    this.httpVersion = request.httpVersion === "1.1" ? "1.1" : request.httpVersion
    this.target = request.target
    this.path = request.path
    this.parsedQuery = request.query
    this.params = params
    this.parsedHeaders = request.headers
    this.remoteAddress = remote.remoteAddress
    this.remotePort = remote.remotePort
    this.head = (request as { readonly [Syntax.HEAD_TEXT]?: string })[Syntax.HEAD_TEXT]
  }

  get headers(): ReadonlyMap<string, string> {
    this.asked = true
    return this.parsedHeaders ?? this.parseAgain().headers
  }

  get query(): URLSearchParams {
    this.asked = true
    return this.parsedQuery ?? this.parseAgain().query
  }

  get cookies(): ReadonlyMap<string, string> {
    return this.parsedCookies ??= Handshake.parseCookies(this.headers.get("cookie"))
  }

  /** The connection runs: what nobody asked for so far is dropped, if it can be parsed again. */
  compact(): void {
    if (this.head === undefined || this.asked) return
    this.parsedHeaders = undefined
    this.parsedQuery = undefined
  }

  private parseAgain(): Handshake.Request {
    // The same bytes the head reader accepted: the same request.
    const result = Handshake.feedHead(Handshake.initialHead(Infinity), Buffer.from(`${this.head}\r\n\r\n`, "latin1"))
    if (result._tag !== "Complete") throw new Error("websock: a request head accepted once was refused when parsed again")
    this.parsedHeaders = result.request.headers
    this.parsedQuery = result.request.query
    return result.request
  }
}

/** Bytes held for the connection while its upgrade is decided, beyond which the socket is no longer read. */
const HOLD_LIMIT = 64 * 1024

/**
 * Runs the route's upgrade decision in a fiber of the server's, under the
 * handshake's deadline. The socket is read meanwhile, so that a client that
 * goes away is seen at once (it interrupts the decision); what it sends is
 * held for the connection (up to 64 KiB, then the socket is paused). A
 * rejection is answered as the route said; a defect with 500 (logged once);
 * the deadline with 503.
 */
const decide = (
  engine: Engine,
  socket: Duplex,
  route: ResolvedRoute,
  req: WebSocket.Request,
  rest: Uint8Array,
  deadline: number,
  span: Tracer.Span,
  refuse: Refuse,
  accept: (accepted: unknown, rest: Uint8Array) => void
): void => {
  const { state } = engine
  const held: Array<Uint8Array> = [rest]
  let heldBytes = rest.length
  let settled = false
  const settle = (): boolean => {
    if (settled) return false
    settled = true
    clearTimeout(timer)
    state.handshaking.delete(cancel)
    socket.pause()
    socket.off("data", onData)
    socket.off("end", onGone)
    socket.off("close", onGone)
    return true
  }
  // Abandons the decision; the caller (a shutdown) answers the socket.
  const cancel = () => {
    if (!settle()) return
    fiber.interruptUnsafe()
    endUpgrade(engine, span, 503)
  }
  const onData = (chunk: Uint8Array) => {
    held.push(chunk)
    heldBytes += chunk.length
    if (heldBytes >= HOLD_LIMIT) socket.pause()
  }
  const onGone = () => {
    if (!settle()) return
    fiber.interruptUnsafe()
    engine.tracing.end(span, Exit.void)
    socket.destroy()
    ended(state)
  }
  const timer = setTimeout(() => {
    if (!settle()) return
    fiber.interruptUnsafe()
    engine.runFork(Effect.logWarning("websock: the route's upgrade decision did not finish within handshakeTimeout; answered 503").pipe(
      Effect.annotateLogs({ path: req.path })
    ))
    refuse(503, "upgrade decision timed out")
  }, Math.max(0, deadline - Date.now()))
  state.handshaking.set(cancel, socket)
  socket.on("data", onData)
  socket.once("end", onGone)
  socket.once("close", onGone)
  socket.resume()
  const fiber = engine.runFork(Effect.scoped(Effect.suspend(() => route.upgrade!(req))).pipe(Effect.withParentSpan(span)))
  fiber.addObserver((exit) => {
    if (!settle()) return
    if (Exit.isSuccess(exit)) return accept(exit.value, held.length === 1 ? held[0]! : Buffer.concat(held, heldBytes))
    const error = Cause.findErrorOption(exit.cause)
    if (error._tag === "Some" && error.value instanceof UpgradeRejected) {
      const { status, headers, body } = error.value
      if (Number.isInteger(status) && status >= 400 && status <= 599) {
        return refuse(status, body ?? Handshake.statusText(status), headers)
      }
      logUpgradeFailure(engine, `the route's upgrade decision rejected with status ${status} (400-599 only); answered 500`, undefined, req)
    } else {
      logUpgradeFailure(engine, "the route's upgrade decision failed; answered 500", exit.cause, req)
    }
    refuse(500, "internal error")
  })
}

/** Answers an upgrade with an HTTP error. */
type Refuse = (status: number, reason: string, headers?: ReadonlyArray<readonly [string, string]>) => void

/** The span a client's trace headers name (W3C `traceparent`, B3), as Effect's HTTP server reads them. */
const traceParent = (headers: ReadonlyMap<string, string>): Tracer.AnySpan | undefined =>
  headers.has("traceparent") || headers.has("b3") || headers.has("x-b3-traceid")
    ? Option.getOrUndefined(HttpTraceContext.fromHeaders(Headers.fromInput(Object.fromEntries(headers))))
    : undefined

const upgradeAttributes = (request: Handshake.Request, remote: Remote): Record<string, unknown> => {
  const attributes: Record<string, unknown> = { "http.request.method": request.method, "url.path": request.path }
  if (remote.remoteAddress !== undefined) attributes["client.address"] = remote.remoteAddress
  if (remote.remotePort !== undefined) attributes["client.port"] = remote.remotePort
  return attributes
}

/** The upgrade was answered with `status`: its span ends (failed for a 5xx, the server's fault). */
const endUpgrade = (engine: Engine, span: Tracer.Span, status: number): void => {
  span.attribute("http.response.status_code", status)
  engine.tracing.end(span, status >= 500 ? Exit.fail(`answered ${status}`) : Exit.void)
}

const logUpgradeFailure = (engine: Engine, message: string, cause: unknown, req: WebSocket.Request): void => {
  engine.runFork(
    (cause === undefined ? Effect.logError(`websock: ${message}`) : Effect.logError(`websock: ${message}`, describe(cause))).pipe(
      Effect.annotateLogs({ path: req.path, remote: `${req.remoteAddress}:${req.remotePort}` })
    )
  )
}

/** An upgraded connection, as the handshake left it. */
interface Upgraded {
  readonly route: ResolvedRoute
  readonly req: WebSocket.Request
  /** The value of the route's upgrade decision (`undefined` without one). */
  readonly accepted: unknown
  readonly protocol: string | undefined
  readonly extensions: string | undefined
  readonly negotiated: PerMessageDeflate.Negotiated | undefined
  /** The upgrade's span (ended): the connection's span is its child. */
  readonly span: Tracer.Span
}

/**
 * Runs an upgraded connection: a `Driver` for the socket, and the handler in
 * a fiber with a scope of its own (or, for a route of `Server.events`, its
 * per-event Effects, with no fiber between events). The handler is
 * interrupted once the connection is over and its messages were delivered
 * (its scope closes then); the connection has ended when both the socket has
 * closed and the handler's fiber is done (or the `close` event ran).
 */
const run = (engine: Engine, socket: Duplex, upgraded: Upgraded, rest: Uint8Array): void => {
  const { settings } = engine
  const { route, negotiated } = upgraded
  const { limits, compression } = route.connection ?? settings
  // zlib contexts live in a scope of the connection's, closed when it ends.
  const codecScope = negotiated !== undefined ? Scope.makeUnsafe() : undefined
  const codec = negotiated !== undefined && codecScope !== undefined && compression !== undefined
    ? Effect.runSync(Scope.provide(PerMessageDeflate.make(negotiated, compression), codecScope))
    : undefined
  // Its parent by id, so that the upgrade's span (ended) is not held for the
  // connection's life; its attributes are set when it ends (`endAttributes`).
  const upgradeSpan = upgraded.span
  const span = engine.tracing.start("websock.connection", {
    parent: Tracer.externalSpan({ spanId: upgradeSpan.spanId, traceId: upgradeSpan.traceId, sampled: upgradeSpan.sampled })
  })
  if (upgraded.req instanceof ConnectionRequest) upgraded.req.compact()
  const running = new Running(engine, span, codecScope)
  const driver = new Driver({
    socket,
    limits,
    request: upgraded.req,
    protocol: upgraded.protocol,
    extensions: upgraded.extensions,
    codec,
    deflateThreshold: compression?.threshold ?? 0,
    instruments: engine.instruments,
    hub: engine.topics.hub,
    run: engine.runPromiseExit,
    clock: engine.clock,
    owner: running
  })
  running.driver = driver
  engine.state.drivers.add(driver)
  if (engine.instruments !== undefined) engine.instruments.open++
  const handlers = route.events
  if (handlers !== undefined) {
    const events = new Events(handlers, upgraded.accepted, running)
    running.events = events
    events.start()
  } else {
    // Suspended, so that a handler that throws before returning its Effect is
    // a defect of its own connection (1011), like one that dies inside it.
    const { handler } = route
    const { accepted } = upgraded
    const fiber = engine.runFork(inScopeUnder(Effect.suspend(() => handler(driver.handle, accepted)), span))
    running.fiber = fiber
    fiber.addObserver((exit) => {
      running.stopped(exit)
      running.done()
    })
  }
  driver.start(rest)
}

/**
 * `effect` in a scope of its own, closed when it ends, with `span` as the
 * parent of its spans: `Effect.scoped` and `Effect.withParentSpan` in one
 * change of the fiber's context, and without the stack trace that
 * `withParentSpan` captures (less held by a handler's fiber for its life).
 */
const inScopeUnder = <A, E, R>(effect: Effect.Effect<A, E, R>, span: Tracer.Span): Effect.Effect<A, E, Exclude<R, Scope.Scope>> =>
  Effect.suspend(() => {
    const scope = Scope.makeUnsafe()
    return Effect.onExit(
      Effect.updateContext(effect, (context: Context.Context<Exclude<R, Scope.Scope>>) =>
        Context.add(Context.add(context, Scope.Scope, scope), Tracer.ParentSpan, span) as Context.Context<R>),
      (exit) => Scope.close(scope, exit)
    )
  })

/**
 * One running connection, as the engine sees it: the driver's owner (its
 * end), the host of its events, and the end of both. A class, so that a
 * connection holds one object here rather than a closure per callback.
 */
class Running implements DriverOwner, EventsHost {
  driver!: Driver
  /** The handler's fiber (a handler route). */
  fiber: Fiber.Fiber<unknown, unknown> | undefined = undefined
  /** The route's per-event Effects (`Server.events`), run instead of a handler's fiber. */
  events: Events | undefined = undefined
  /** How the handler ended, for the connection's span: a failure fails it. */
  private handlerExit: Exit.Exit<unknown, unknown> = Exit.void
  /** The socket's close and the handler's end (or the `close` event's). */
  private pending = 2
  /** Set when the server interrupts the handler because its connection is over. */
  private over = false
  private readonly engine: Engine
  private readonly span: Tracer.Span
  private readonly codecScope: Scope.Closeable | undefined

  constructor(engine: Engine, span: Tracer.Span, codecScope: Scope.Closeable | undefined) {
    this.engine = engine
    this.span = span
    this.codecScope = codecScope
  }

  get handle(): WebSocket.WebSocketConnection {
    return this.driver.handle
  }

  get inbox(): Inbox {
    return this.driver.inbox
  }

  get outcome(): WebSocket.CloseOutcome | undefined {
    return this.driver.outcome
  }

  /** One of the two ends. */
  done(): void {
    if (--this.pending > 0) return
    if (this.codecScope !== undefined) Effect.runFork(Scope.close(this.codecScope, Exit.void))
    this.engine.tracing.end(this.span, this.handlerExit)
    ended(this.engine.state)
  }

  onEnd(driver: Driver, outcome: WebSocket.CloseOutcome): void {
    const engine = this.engine
    engine.state.drivers.delete(driver)
    const instruments = engine.instruments
    if (instruments !== undefined) {
      instruments.open--
      instruments.closed(outcome.code, outcome.initiator)
    }
    driver.tally.end()
    endAttributes(this.span, driver, outcome, driver.tally)
    const detail = outcome.detail
    if (detail !== undefined && CloseReason.isViolation(detail)) {
      engine.runFork(Effect.logWarning(`websock: connection failed with ${detail.code}: ${detail.reason}`).pipe(
        Effect.annotateLogs(annotations(driver))
      ))
    }
    this.done()
  }

  onOver(): void {
    this.over = true
    if (this.events !== undefined) this.events.onOver()
    else this.fiber?.interruptUnsafe()
  }

  fork(effect: Effect.Effect<unknown, unknown, any>): Fiber.Fiber<unknown, unknown> {
    return this.engine.runFork(Effect.provideService(effect, Tracer.ParentSpan, this.span))
  }

  /** How the handler ended (or an event stopped), as the connection's close and its log say it. */
  stopped(exit: Exit.Exit<unknown, unknown>): void {
    const { engine, driver } = this
    if (Exit.isSuccess(exit) || isOwnClose(driver, exit.cause)) {
      // Returned, or ended by its own connection's close: close normally
      // (nothing happens if the connection is already closing).
      driver.closeWith(CloseReason.normal())
    } else if (!Cause.hasInterruptsOnly(exit.cause)) {
      this.handlerExit = exit
      driver.closeWith(CloseReason.internalError("internal error"))
      const code = driver.sentCode()
      engine.runFork(
        Effect.logError(`websock: handler failed; connection closed with ${code ?? "its earlier close"}`, describe(exit.cause)).pipe(
          Effect.annotateLogs(annotations(driver))
        )
      )
    } else if (engine.state.shuttingDown) {
      // Interrupted by a shutdown past its timeout: the connection goes too.
      driver.abort()
    } else if (!this.over) {
      driver.closeWith(CloseReason.goingAway("handler interrupted"))
    }
  }

  /** The `close` event is done (or there is none). */
  finished(exit: Exit.Exit<unknown, unknown>): void {
    if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) {
      this.handlerExit = exit
      this.engine.runFork(
        Effect.logError("websock: the route's close event failed", describe(exit.cause)).pipe(Effect.annotateLogs(annotations(this.driver)))
      )
    }
    this.done()
  }
}

/** How the connection ended, and what went through it, on its span. */
const endAttributes = (span: Tracer.Span, driver: Driver, outcome: WebSocket.CloseOutcome, tally: Metrics.Tally): void => {
  span.attribute("url.path", driver.request.path)
  if (driver.protocol !== undefined) span.attribute("websocket.subprotocol", driver.protocol)
  if (driver.extensions !== undefined) span.attribute("websocket.extensions", driver.extensions)
  span.attribute("websock.connection.id", driver.id)
  span.attribute("websocket.close.code", outcome.code)
  span.attribute("websocket.close.initiator", outcome.initiator)
  span.attribute("websocket.close.clean", outcome.clean)
  span.attribute("websocket.messages.received", tally.messagesReceived)
  span.attribute("websocket.messages.sent", tally.messagesSent)
  span.attribute("websocket.bytes.received", tally.bytesReceived)
  span.attribute("websocket.bytes.sent", tally.bytesSent)
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

const ignore = (): void => {}

/**
 * Answers with an HTTP error and ends the socket after the answer, reading
 * and discarding what the client still sends so that the answer is not lost
 * to a reset; destroys it if the client does not close in time.
 */
export const reject = (
  socket: Duplex,
  status: number,
  reason: string,
  linger: number,
  headers?: ReadonlyArray<readonly [string, string]>
): void => {
  if (socket.destroyed) return
  socket.on("data", ignore)
  socket.resume()
  if (Http2Stream.isStream(socket)) return Http2Stream.reject(socket, status, reason, headers)
  socket.end(Handshake.responseError(status, reason, headers))
  const timer = setTimeout(() => socket.destroy(), linger)
  timer.unref?.()
  socket.once("close", () => clearTimeout(timer))
}

/** `reject` for a socket counted in by `admit`: it ends when the socket closes. */
export const rejectAndEnd = (
  engine: Engine,
  socket: Duplex,
  status: number,
  reason: string,
  headers?: ReadonlyArray<readonly [string, string]>
): void => {
  const { state } = engine
  if (socket.destroyed) return ended(state)
  engine.instruments?.upgraded(status)
  state.answering.add(socket)
  socket.once("close", () => {
    state.answering.delete(socket)
    ended(state)
  })
  reject(socket, status, reason, engine.settings.closeTimeout, headers)
}

/** One counted socket has ended (answered and closed, or upgraded and finished). */
export const ended = (state: State): void => {
  state.active--
  if (state.active === 0 && state.idleWaiters.length > 0) {
    const waiters = state.idleWaiters
    state.idleWaiters = []
    for (const w of waiters) w()
  }
}

/**
 * How often the timer sweep runs: a fifth of the shortest timer, between
 * 5 ms and 1 s, so that a timer fires at most 20% (or 1 s) late.
 */
const sweepPeriod = (limits: { readonly pingInterval: number; readonly idleTimeout: number; readonly maxLifetime: number }): number => {
  const timers = [limits.pingInterval, limits.idleTimeout, limits.maxLifetime].filter((t) => t > 0)
  return timers.length === 0 ? 1000 : Math.min(1000, Math.max(5, Math.floor(Math.min(...timers) / 5)))
}

const shutdown = (engine: Engine): Effect.Effect<void> =>
  Effect.gen(function*() {
    const { settings, state } = engine
    state.shuttingDown = true
    for (const [cancel, socket] of state.handshaking) {
      state.handshaking.delete(cancel)
      cancel()
      rejectAndEnd(engine, socket, 503, "server shutting down")
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
    // What remains is ended: connections still closing (their handlers may
    // have returned), sockets still reading out an HTTP error. Handlers
    // still running are interrupted by the FiberSet's own finalizer.
    for (const driver of state.drivers) driver.abort()
    for (const socket of state.answering) socket.destroy()
  })
