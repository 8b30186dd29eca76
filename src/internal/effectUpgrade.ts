/**
 * websock's engine on the two seams of Effect's Node HTTP server, for
 * `websock/NodeHttpServer`:
 *
 * - `wss`: what `NodeHttpServer.makeUpgradeHandler` takes for ws's
 *   `WebSocketServer` (it calls `handleUpgrade` and nothing else): the
 *   handshake is websock's, a refused one is answered with its status and
 *   never calls back (Effect fails the route's reader when the socket
 *   closes), an accepted one calls back with the connection as a ws-like
 *   object (`EffectSocket.WebSocketLike`).
 * - `request`: the request the app's routes see, whose WebSocket
 *   `upgrade`/`upgradeWith` reads the route's settings (the
 *   `CurrentRouteOptions` reference) and 101 headers, runs Effect's own
 *   upgrade (which marks the response as the 101 and closes the socket with
 *   the route's exit), and returns a `Socket.Socket` on websock's handle
 *   (`websock/Socket`'s `toSocket`: writes that wait for the peer).
 *
 * Without that request (nothing in @effect/platform-node 4.1 reaches the
 * original one), Effect's own `Socket.fromWebSocket` runs over the ws-like
 * object, with the server's settings.
 *
 * @internal
 */
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Headers from "effect/http/Headers"
import { HttpServerError, InternalError } from "effect/http/HttpServerError"
import type * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import type * as Http from "node:http"
import type { Duplex } from "node:stream"
import { InvalidOption } from "../Errors.ts"
import * as Handshake from "../Handshake.ts"
import type { RouteOptions, WebsockOptions } from "../NodeHttpServer.ts"
import type * as WebSocket from "../WebSocket.ts"
import * as EffectSocket from "./effectSocket.ts"
import type * as Engine from "./engine.ts"
import * as NodeUpgrade from "./nodeUpgrade.ts"
import * as Settings from "./settings.ts"

/** The engine as Effect's server takes ws's, and the routes' request. */
export interface Upgrades {
  readonly wss: {
    readonly handleUpgrade: (
      request: Http.IncomingMessage,
      socket: Duplex,
      head: Buffer,
      callback: (ws: EffectSocket.WebSocketLike) => void
    ) => void
  }
  readonly request: (request: HttpServerRequest.HttpServerRequest) => HttpServerRequest.HttpServerRequest
}

/** One upgrade, from the route's `upgrade` to the engine's `handleUpgrade`. */
interface Pending {
  readonly route: RouteParts
  /** The 101's headers, from `upgradeWith`. */
  readonly headers: ReadonlyArray<readonly [string, string]> | undefined
  /** The route's span (Effect's HTTP request span): websock's upgrade span goes under it. */
  readonly parent: Tracer.AnySpan | undefined
  /** Set once upgraded. */
  connection: WebSocket.WebSocketConnection | undefined
}

/** What a route sets of its connections. */
interface RouteParts {
  readonly protocol: ((offered: ReadonlyArray<string>) => string | undefined) | undefined
  readonly origins: ReadonlySet<string> | undefined
  readonly connection: Settings.Connection | undefined
}

/** The engine's `Upgrades`, with the server's websock settings as the routes' defaults. */
export const make = (
  engine: Engine.Engine,
  websock: WebsockOptions,
  current: Context.Reference<RouteOptions>,
  noRouteOptions: RouteOptions
): Upgrades => {
  const pending = new WeakMap<Http.IncomingMessage, Pending>()
  const handled = new WeakSet<Duplex>()
  const serverOrigins = Settings.origins("origins", websock.origins)
  const serverParts: RouteParts = { protocol: undefined, origins: serverOrigins, connection: undefined }
  const resolved = new WeakMap<RouteOptions, RouteParts | InvalidOption>()

  const routeParts = (options: RouteOptions): RouteParts | InvalidOption => {
    if (options === noRouteOptions) return serverParts
    const cached = resolved.get(options)
    if (cached !== undefined) return cached
    let parts: RouteParts | InvalidOption
    try {
      const { origins, protocol, ...connection } = options
      if (protocol !== undefined && typeof protocol !== "function") {
        throw new InvalidOption({ option: "protocol", problem: "must be a function of the offered subprotocols" })
      }
      const merged = { ...websock }
      for (const [key, value] of Object.entries(connection)) if (value !== undefined) Object.assign(merged, { [key]: value })
      parts = {
        protocol,
        origins: origins === undefined ? serverOrigins : Settings.origins("origins", origins),
        connection: Settings.connection(merged)
      }
    } catch (error) {
      parts = error instanceof InvalidOption ? error : new InvalidOption({ option: "CurrentRouteOptions", problem: String(error) })
    }
    resolved.set(options, parts)
    return parts
  }

  const handleUpgrade = (
    request: Http.IncomingMessage,
    socket: Duplex,
    head: Buffer,
    callback: (ws: EffectSocket.WebSocketLike) => void
  ): void => {
    // A reader acquired twice: ws throws here too, and a second 101 would corrupt the connection.
    if (handled.has(socket)) throw new Error("websock/NodeHttpServer: handleUpgrade called again with the same socket")
    handled.add(socket)
    const upgrade = pending.get(request)
    pending.delete(request)
    const parts = upgrade?.route ?? serverParts
    const limits = (parts.connection ?? engine.settings).limits
    const route: Settings.ResolvedRoute = {
      // The connection lives until websock's closing handshake is over; the
      // route closes it (Effect's socket closes with 1000, 1001 or 1011).
      handler: (connection) =>
        Effect.suspend(() => {
          if (upgrade !== undefined) upgrade.connection = connection
          callback(new EffectSocket.WebSocketLike(connection, engine.runFork, { pump: upgrade === undefined, overflow: limits.overflow }))
          return Effect.never
        }),
      upgrade: undefined,
      protocol: parts.protocol === undefined ? undefined : (offered) => parts.protocol!(offered),
      headers: upgrade?.headers === undefined ? undefined : () => upgrade.headers!,
      origins: parts.origins,
      connection: parts.connection
    }
    // A refused handshake is answered here and never calls back: Effect
    // fails the route's reader when the socket closes.
    NodeUpgrade.handleUpgrade(engine, request, socket, head, { value: route, params: {} }, upgrade?.parent)
  }

  /** The route's request: its WebSocket `upgrade` is websock's. */
  const upgradeRequest = (request: HttpServerRequest.HttpServerRequest): HttpServerRequest.HttpServerRequest => {
    const upgradeWith = (options: { readonly headers?: Headers.Input | undefined }) => {
      const source = request.source as Http.IncomingMessage
      const protocol = source.headers.upgrade
      // As Effect tells them apart: another protocol is Effect's raw upgrade.
      if (protocol !== undefined && protocol.toLowerCase() !== "websocket") return request.upgradeWith(options)
      return Effect.gen(function*() {
        const parts = routeParts(yield* current)
        if (parts instanceof InvalidOption) return yield* upgradeError(request, parts.message, parts)
        const headers = yield* responseHeaders(request, options.headers)
        const effectSocket = yield* request.upgradeWith({})
        const acquire = Effect.gen(function*() {
          const parent = Option.getOrUndefined(yield* Effect.option(Effect.currentParentSpan))
          const upgrade: Pending = { route: parts, headers, parent, connection: undefined }
          pending.set(source, upgrade)
          // Effect's reader runs the handshake (through `handleUpgrade`), marks
          // the response as the 101, and closes with the scope's exit.
          yield* effectSocket.reader
          if (upgrade.connection === undefined) {
            return yield* Effect.die(new Error("websock/NodeHttpServer: the upgrade did not reach websock's engine"))
          }
          return upgrade.connection
        })
        return EffectSocket.upgradedSocket(acquire)
      })
    }
    return Object.create(request, {
      upgrade: { get: () => upgradeWith({}) },
      upgradeWith: { value: upgradeWith },
      modify: { value: (options: Parameters<HttpServerRequest.HttpServerRequest["modify"]>[0]) => upgradeRequest(request.modify(options)) }
    })
  }

  return { wss: { handleUpgrade }, request: upgradeRequest }
}

const upgradeError = (request: HttpServerRequest.HttpServerRequest, description: string, cause?: unknown) =>
  Effect.fail(new HttpServerError({ reason: new InternalError({ request, description, cause }) }))

/** The 101's headers from `upgradeWith`, checked as Effect checks them for other upgrades. */
const responseHeaders = (
  request: HttpServerRequest.HttpServerRequest,
  input: Headers.Input | undefined
): Effect.Effect<ReadonlyArray<readonly [string, string]> | undefined, HttpServerError> => {
  if (input === undefined) return Effect.succeed(undefined)
  const headers = Object.entries(Headers.fromInput(input))
  for (const [name, value] of headers) {
    if (Handshake.isReserved101Header(name)) return upgradeError(request, `WebSocket upgrade responses cannot set the ${name} header`)
    if (!Handshake.isValidHeader(name, value)) return upgradeError(request, `Invalid upgrade response header: ${name}`)
  }
  return Effect.succeed(headers.length === 0 ? undefined : headers)
}
