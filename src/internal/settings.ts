/**
 * The server's options, checked and resolved once, when the server is made:
 * every default filled in, every time setting read as a `Duration.Input`
 * (numbers are milliseconds), every number checked for range and integrity,
 * the routes compiled. A bad option fails with `InvalidOption` naming it.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { InvalidOption, ServerError, type UpgradeRejected } from "../Errors.ts"
import * as PerMessageDeflate from "../PerMessageDeflate.ts"
import type { Options } from "../Server.ts"
import type * as WebSocket from "../WebSocket.ts"
import type { Limits } from "./driver.ts"
import * as Events from "./events.ts"
import * as Router from "./router.ts"

/** A route as the engine runs it: every field read and checked once. */
export interface ResolvedRoute {
  readonly handler: (socket: WebSocket.WebSocketConnection, accepted: any) => Effect.Effect<unknown, unknown, any>
  readonly upgrade: ((request: WebSocket.Request) => Effect.Effect<unknown, UpgradeRejected, any>) | undefined
  readonly protocol: ((offered: ReadonlyArray<string>, request: WebSocket.Request, accepted: any) => string | undefined) | undefined
  readonly headers: ((request: WebSocket.Request, accepted: any) => ReadonlyArray<readonly [string, string]>) | undefined
  /** The allowed `Origin`s, lower-cased (the route's, else the server's); `undefined`: any. */
  readonly origins: ReadonlySet<string> | undefined
  /** This route's limits and permessage-deflate policy, in place of the server's (`undefined`: the server's). */
  readonly connection?: Connection | undefined
  /** The route's per-event Effects (`Server.events`), run instead of `handler`. */
  readonly events?: Events.Handlers | undefined
}

/** What each connection runs under: its limits and timers, and the permessage-deflate policy. */
export interface Connection {
  readonly limits: Limits
  readonly compression: PerMessageDeflate.Options | undefined
}

/** What `resolve` reads: the server's options. */
export type Input = Options<any>

/** The resolved settings. */
export interface Settings extends Connection {
  readonly port: number
  readonly host: string | undefined
  /** Listen with SO_REUSEPORT (Linux, the BSDs), so that several processes share the port. */
  readonly reusePort: boolean
  readonly router: Router.Router<ResolvedRoute>
  readonly maxHeadSize: number
  readonly handshakeTimeout: number
  readonly closeTimeout: number
  readonly maxConnections: number
  readonly shutdownTimeout: number
  /** Whether the server reports its metrics (`effect/Metric`). */
  readonly metrics: boolean
}

/** The defaults of every setting (times in milliseconds). */
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
  shutdownTimeout: 10_000,
  metrics: true
} as const

/** Timers are set with `setTimeout`, whose longest delay is 2^31-1 ms (about 24.8 days). */
const MAX_TIMER = 2 ** 31 - 1

const invalid = (option: string, problem: string): InvalidOption => new InvalidOption({ option, problem })

const integer = (option: string, value: unknown, min: number, max: number = Number.MAX_SAFE_INTEGER): number => {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(option, `must be an integer in ${min}..${max}, got ${String(value)}`)
  }
  return value
}

/** A time setting: a `Duration.Input` (numbers are milliseconds), `min` ms at least (0 turns the timer off where allowed). */
const millis = (option: string, value: Duration.Input | undefined, fallback: number, min: number): number => {
  if (value === undefined) return fallback
  const duration = typeof value === "number" ? (Number.isFinite(value) ? value : Number.NaN) : decode(value)
  if (!(duration >= min && duration <= MAX_TIMER)) {
    throw invalid(option, `must be a duration of ${min} ms to ${MAX_TIMER} ms (a number of milliseconds or e.g. "10 seconds"), got ${String(value)}`)
  }
  return Math.ceil(duration)
}

const decode = (value: Duration.Input): number => {
  const duration = Duration.fromInput(value)
  return duration._tag === "Some" ? Duration.toMillis(duration.value) : Number.NaN
}

/**
 * Checks and resolves the options; throws `InvalidOption` (caught by the
 * server's constructors and turned into a typed failure).
 */
export const resolve = (options: Input): Settings => {
  if (typeof options !== "object" || options === null) throw invalid("options", "must be an object")
  const routes = options.routes
  if (typeof routes !== "object" || routes === null) throw invalid("routes", "must be an object of route keys to handlers")
  const serverOrigins = origins("origins", options.origins)
  const entries: Array<readonly [string, ResolvedRoute]> = []
  for (const [key, value] of Object.entries(routes)) {
    entries.push([key, route(key, value, serverOrigins)])
  }
  const router = Router.make(entries)
  if ("problem" in router) throw invalid("routes", router.problem)
  if (options.host !== undefined && typeof options.host !== "string") throw invalid("host", `must be a string, got ${String(options.host)}`)
  const { limits, compression } = connection(options)
  const metrics = options.metrics ?? defaults.metrics
  if (typeof metrics !== "boolean") throw invalid("metrics", `must be true or false, got ${String(metrics)}`)
  const reusePort = options.reusePort ?? false
  if (typeof reusePort !== "boolean") throw invalid("reusePort", `must be true or false, got ${String(reusePort)}`)
  return {
    port: integer("port", options.port ?? defaults.port, 0, 65535),
    host: options.host,
    reusePort,
    router,
    maxHeadSize: integer("maxHeadSize", options.maxHeadSize ?? defaults.maxHeadSize, 256),
    handshakeTimeout: millis("handshakeTimeout", options.handshakeTimeout, defaults.handshakeTimeout, 1),
    closeTimeout: limits.closeTimeout,
    maxConnections: integer("maxConnections", options.maxConnections ?? defaults.maxConnections, 1),
    shutdownTimeout: millis("shutdownTimeout", options.shutdownTimeout, defaults.shutdownTimeout, 0),
    metrics,
    compression,
    limits
  }
}

/** The options of one connection, which `connection` reads (a server's, or a route's own). */
export type ConnectionOption =
  | "maxMessageSize"
  | "closeTimeout"
  | "pingInterval"
  | "idleTimeout"
  | "maxLifetime"
  | "highWaterMark"
  | "maxBufferedAmount"
  | "overflow"
  | "inboxHighWaterMark"
  | "compression"

export type ConnectionInput = Pick<Input, ConnectionOption>

/**
 * Checks and resolves the settings of one connection (a server's, or a
 * route's own); throws `InvalidOption` like `resolve`.
 */
export const connection = (options: ConnectionInput): Connection => {
  const overflow = options.overflow ?? defaults.overflow
  if (overflow !== "wait" && overflow !== "drop" && overflow !== "close") {
    throw invalid("overflow", `must be "wait", "drop" or "close", got ${String(overflow)}`)
  }
  return {
    compression: compression(options.compression),
    limits: {
      maxMessageSize: integer("maxMessageSize", options.maxMessageSize ?? defaults.maxMessageSize, 1),
      closeTimeout: millis("closeTimeout", options.closeTimeout, defaults.closeTimeout, 1),
      pingInterval: millis("pingInterval", options.pingInterval, defaults.pingInterval, 0),
      idleTimeout: millis("idleTimeout", options.idleTimeout, defaults.idleTimeout, 0),
      maxLifetime: millis("maxLifetime", options.maxLifetime, defaults.maxLifetime, 0),
      highWaterMark: integer("highWaterMark", options.highWaterMark ?? defaults.highWaterMark, 0),
      maxBufferedAmount: integer("maxBufferedAmount", options.maxBufferedAmount ?? defaults.maxBufferedAmount, 0),
      overflow,
      inboxHighWaterMark: integer("inboxHighWaterMark", options.inboxHighWaterMark ?? defaults.inboxHighWaterMark, 1)
    }
  }
}

/** `resolve` as an Effect: a bad option fails with `ServerError` (`InvalidOption`). */
export const make = (options: Input): Effect.Effect<Settings, ServerError> =>
  Effect.try({
    try: () => resolve(options),
    catch: (error) =>
      new ServerError({
        reason: error instanceof InvalidOption ? error : new InvalidOption({ option: "options", problem: String(error) })
      })
  })

/** A route as given (a handler, or a `Route`), checked field by field. */
const route = (key: string, value: unknown, serverOrigins: ReadonlySet<string> | undefined): ResolvedRoute => {
  const given = typeof value === "function" ? { handler: value } : value
  const name = `routes[${JSON.stringify(key)}]`
  if (typeof given !== "object" || given === null || typeof (given as { handler?: unknown }).handler !== "function") {
    throw invalid("routes", `route ${JSON.stringify(key)} must be a handler or an object with a handler`)
  }
  const fields = given as Record<string, unknown>
  for (const field of ["upgrade", "protocol", "headers"] as const) {
    if (fields[field] !== undefined && typeof fields[field] !== "function") throw invalid(`${name}.${field}`, "must be a function")
  }
  return {
    handler: fields.handler as ResolvedRoute["handler"],
    upgrade: fields.upgrade as ResolvedRoute["upgrade"],
    protocol: fields.protocol as ResolvedRoute["protocol"],
    headers: fields.headers as ResolvedRoute["headers"],
    events: (given as { readonly [Events.EventsId]?: Events.Handlers })[Events.EventsId],
    origins: fields.origins === undefined ? serverOrigins : origins(`${name}.origins`, fields.origins)
  }
}

/**
 * An Origin allow-list: serialized origins (`https://example.com`,
 * `http://localhost:3000`: scheme, host and port, no path), or "null".
 */
export const origins = (option: string, value: unknown): ReadonlySet<string> | undefined => {
  if (value === undefined) return undefined
  if (!Array.isArray(value)) throw invalid(option, "must be an array of origins such as \"https://example.com\"")
  const allowed = new Set<string>()
  for (const origin of value) {
    if (typeof origin !== "string") throw invalid(option, `must hold strings, got ${String(origin)}`)
    const lower = origin.toLowerCase()
    if (lower !== "null" && serialized(lower) !== lower) {
      throw invalid(option, `${JSON.stringify(origin)} is not an origin (scheme://host[:port], no path or trailing "/")`)
    }
    allowed.add(lower)
  }
  return allowed
}

const serialized = (origin: string): string | undefined => {
  try {
    return new URL(origin).origin
  } catch {
    return undefined
  }
}

const compression = (option: Partial<PerMessageDeflate.Options> | false | undefined): PerMessageDeflate.Options | undefined => {
  if (option === undefined || option === false) return undefined
  if (typeof option !== "object" || option === null) throw invalid("compression", "must be an object of permessage-deflate settings, or false")
  for (const key of Object.keys(option)) {
    if (!(key in PerMessageDeflate.defaults)) throw invalid(`compression.${key}`, "is not a permessage-deflate setting")
  }
  const resolved = { ...PerMessageDeflate.defaults, ...option }
  const problems = PerMessageDeflate.validate(resolved)
  if (problems.length > 0) throw invalid(`compression.${problems[0]!.option}`, problems[0]!.problem)
  return resolved.enabled ? resolved : undefined
}
