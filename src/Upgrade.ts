/**
 * WebSockets on the port of a `node:http` or `node:https` server of your
 * own: websock answers its `upgrade` events, your server goes on serving
 * HTTP.
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import * as Http from "node:http"
 * import * as Upgrade from "websock/Upgrade"
 *
 * const server = Http.createServer((req, res) => res.end("ok"))
 * server.listen(8080)
 * const program = Upgrade.attach(server, {
 *   routes: { "/ws": (ws) => ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch))) }
 * })
 * Effect.runFork(Effect.scoped(Effect.andThen(program, Effect.never)))
 * ```
 *
 * The request has been parsed by Node (its `maxHeaderSize` and
 * `headersTimeout` apply); websock then holds it to the rules of
 * `Handshake` (400, 405, 426, ...), finds the route (for another path: 404
 * when websock's is the only `upgrade` listener, otherwise nothing, the
 * request is left to your other listeners), runs the route's upgrade decision under
 * `handshakeTimeout`, and runs the connection over the socket Node gives,
 * TLS included. The bytes that came with the request (`head`) are the
 * connection's first.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import type { ServerError } from "./Errors.ts"
import * as Engine from "./internal/engine.ts"
import * as NodeUpgrade from "./internal/nodeUpgrade.ts"
import * as Settings from "./internal/settings.ts"
import { splitTarget } from "./internal/syntax.ts"
import type * as Server from "./Server.ts"
import type * as Topics from "./Topics.ts"
import type * as WebSocket from "./WebSocket.ts"

/**
 * The settings: those of `Server.Options` but the listener's own (`port`,
 * `host`, `maxHeadSize`: the HTTP server has its own). `handshakeTimeout`
 * bounds the routes' upgrade decisions.
 *
 * @since 0.2.0
 * @category models
 */
export type Options<Routes extends Readonly<Record<string, Server.RouteInput>>> = Omit<
  Server.Options<Routes>,
  "port" | "host" | "maxHeadSize"
>

/**
 * websock's side of an HTTP server's `upgrade` event.
 *
 * @since 0.2.0
 * @category models
 */
export interface Upgrader {
  /**
   * Handles one `upgrade` event (call it from your own listener): the
   * request, the socket and the bytes that came after the request head.
   */
  readonly handleUpgrade: (request: IncomingMessage, socket: Duplex, head: Uint8Array) => void
  /** Whether one of the routes matches the request's path. */
  readonly matches: (request: IncomingMessage) => boolean
  /** Open and opening connections. */
  readonly connections: Effect.Effect<number>
  /** Publishes to a topic's subscribers (see `Topics`); never waits. */
  readonly publish: (topic: string, message: WebSocket.Message) => Effect.Effect<Topics.PublishResult>
  /** The topics: the upgrader's own, or the `Topics` service it was built with. */
  readonly topics: Topics.TopicsService
}

/**
 * The upgrade handler, in the current scope; closing the scope sends 1001
 * to its connections and waits for their closing handshakes up to
 * `shutdownTimeout` (then ends what remains). Bad options fail with
 * `InvalidOption` naming the option.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = <const Routes extends Readonly<Record<string, Server.RouteInput>>>(
  options: Options<Routes>
): Effect.Effect<Upgrader, ServerError, Scope.Scope | Server.Requirements<Routes>> =>
  Effect.gen(function*() {
    const settings = yield* Settings.make(options as Server.Options<any>)
    const engine = yield* Engine.make(settings)
    return {
      handleUpgrade: (request, socket, head) => NodeUpgrade.handleUpgrade(engine, request, socket, head),
      matches: (request) => {
        const path = pathOf(request.url)
        return path !== undefined && settings.router.match(path) !== undefined
      },
      connections: Effect.sync(() => engine.state.active),
      publish: (topic, message) => engine.topics.publish(topic, message),
      topics: engine.topics
    }
  })

/**
 * Serves the routes on `server`'s port, in the current scope: an `upgrade`
 * listener is added, and closing the scope removes it, sends 1001 to
 * websock's connections and waits for their closing handshakes (up to
 * `shutdownTimeout`), leaving your server open. A request whose path no
 * route matches is answered 404 when websock's is the server's only
 * `upgrade` listener, and is otherwise left to the other listeners (always,
 * with `unmatched: "ignore"`). A socket is answered once: calling
 * `handleUpgrade` again for it does nothing.
 *
 * @since 0.2.0
 * @category constructors
 */
export const attach = <const Routes extends Readonly<Record<string, Server.RouteInput>>>(
  server: UpgradeEmitter,
  options: Options<Routes> & { readonly unmatched?: "reject" | "ignore" | undefined }
): Effect.Effect<Upgrader, ServerError, Scope.Scope | Server.Requirements<Routes>> =>
  Effect.gen(function*() {
    const { unmatched: option, ...rest } = options
    const unmatched = yield* NodeUpgrade.unmatchedOption(option)
    const upgrader = yield* make(rest as Options<Routes>)
    const listener = (request: IncomingMessage, socket: Duplex, head: Uint8Array) => {
      // Node gives every upgrade to every listener: a 404 is ours to send
      // only when no other listener may answer the request.
      if ((unmatched === "ignore" || server.listenerCount("upgrade") > 1) && !upgrader.matches(request)) return
      upgrader.handleUpgrade(request, socket, head)
    }
    // Added after the engine: removed first, before its connections are closed.
    yield* Effect.acquireRelease(
      Effect.sync(() => server.on("upgrade", listener)),
      () => Effect.sync(() => server.off("upgrade", listener))
    )
    return upgrader
  })

/**
 * What `attach` needs of a server: its `upgrade` event (`node:http` and
 * `node:https` servers have it).
 *
 * @since 0.2.0
 * @category models
 */
export interface UpgradeEmitter {
  on(event: "upgrade", listener: (request: IncomingMessage, socket: Duplex, head: Uint8Array) => void): unknown
  off(event: "upgrade", listener: (request: IncomingMessage, socket: Duplex, head: Uint8Array) => void): unknown
  listenerCount(event: "upgrade"): number
}

const pathOf = (url: string | undefined): string | undefined => (url === undefined ? undefined : splitTarget(url)?.path)
