/**
 * WebSockets over HTTP/2 (RFC 8441) on a `node:http2` server of your own:
 * websock answers the extended CONNECT streams (`:method CONNECT`,
 * `:protocol websocket`) and, on a server created with `allowHTTP1`, the
 * HTTP/1.1 `upgrade` events on the same port, with the same routes and the
 * same engine; your server goes on serving HTTP.
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import * as NodeHttp2 from "node:http2"
 * import * as Http2 from "websock/Http2"
 *
 * const server = NodeHttp2.createSecureServer({ cert, key, allowHTTP1: true }, (req, res) => res.end("ok"))
 * server.listen(8443)
 * const program = Http2.attach(server, {
 *   routes: { "/ws": (ws) => ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch))) }
 * })
 * Effect.runFork(Effect.scoped(Effect.andThen(program, Effect.never)))
 * ```
 *
 * `attach` turns on `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441 §3) for the
 * server's new sessions: browsers open a WebSocket as a stream of the
 * page's own HTTP/2 connection only when that connection advertises it.
 * A stream's request is held to RFC 8441 §4-5 (`:scheme`, `:path`,
 * `:authority`, `Sec-WebSocket-Version: 13`; subprotocols and
 * permessage-deflate negotiated as over HTTP/1.1; no Sec-WebSocket-Key),
 * then to the same route, Origin allow-list and upgrade decision as an
 * HTTP/1.1 upgrade. Success is `:status 200`; a refusal an HTTP status on
 * the stream (400, 403, 404, 426, 503, the route's own).
 *
 * The connection then runs on the stream: its DATA frames carry the
 * WebSocket's bytes, and HTTP/2's per-stream flow control is the
 * backpressure, so a peer that does not read one WebSocket never stalls
 * the others on its connection. The closing handshake ends the stream
 * (END_STREAM both ways); a stream reset, or a session that goes away, is
 * a 1006. Closing the scope sends 1001 on every stream, waits for the
 * closing handshakes (up to `shutdownTimeout`), then sends GOAWAY on the
 * sessions that carried them.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { IncomingMessage } from "node:http"
import type * as NodeHttp2 from "node:http2"
import type { Duplex } from "node:stream"
import type { ServerError } from "./Errors.ts"
import type * as Handshake from "./Handshake.ts"
import * as Engine from "./internal/engine.ts"
import * as Http2Stream from "./internal/http2Stream.ts"
import * as NodeUpgrade from "./internal/nodeUpgrade.ts"
import * as Settings from "./internal/settings.ts"
import { splitTarget } from "./internal/syntax.ts"
import type * as Server from "./Server.ts"
import type * as Upgrade from "./Upgrade.ts"

/**
 * The settings: those of `Upgrade.Options` (`Server.Options` but the
 * listener's own). `handshakeTimeout` bounds the routes' upgrade decisions.
 *
 * @since 0.2.0
 * @category models
 */
export type Options<Routes extends Readonly<Record<string, Server.RouteInput>>> = Upgrade.Options<Routes>

/**
 * websock's side of an HTTP/2 server: its streams, and the HTTP/1.1
 * upgrades of a server with `allowHTTP1`.
 *
 * @since 0.2.0
 * @category models
 */
export interface Upgrader extends Upgrade.Upgrader {
  /**
   * Handles one stream (call it from your own `stream` listener) whose
   * headers `isWebSocketConnect` accepts; a stream already handled is left
   * alone.
   */
  readonly handleStream: (stream: NodeHttp2.ServerHttp2Stream, headers: NodeHttp2.IncomingHttpHeaders) => void
  /** Whether the stream is a WebSocket's extended CONNECT for one of the routes. */
  readonly matchesStream: (headers: NodeHttp2.IncomingHttpHeaders) => boolean
}

/**
 * Whether a stream's headers are an extended CONNECT for a WebSocket
 * (RFC 8441 §4: `:method CONNECT`, `:protocol websocket`).
 *
 * @since 0.2.0
 * @category handshake
 */
export const isWebSocketConnect: (headers: NodeHttp2.IncomingHttpHeaders) => boolean = Http2Stream.isWebSocketConnect

/**
 * An extended CONNECT's request (RFC 8441 §4: `:path` is the target,
 * `:authority` the Host, `httpVersion` "2"), or the reason for a 400.
 *
 * @since 0.2.0
 * @category handshake
 */
export const fromHeaders: (headers: NodeHttp2.IncomingHttpHeaders) => Handshake.Request | string = Http2Stream.fromHeaders

/**
 * What `validateConnect` decides: `Accept` with the offered subprotocols and
 * extensions (no key: RFC 8441 §5), or `Reject` with the status to answer.
 *
 * @since 0.2.0
 * @category handshake
 */
export type Connect = Http2Stream.Connect

/**
 * Checks an extended CONNECT's request as RFC 8441 §5 says: the RFC 6455
 * §4.2.1 rules for Sec-WebSocket-Version (400 missing, 426 another),
 * -Protocol and -Extensions (400 malformed); no Upgrade, Connection or
 * Sec-WebSocket-Key.
 *
 * @since 0.2.0
 * @category handshake
 */
export const validateConnect: (request: Handshake.Request) => Connect = Http2Stream.validateConnect

/** Streams an engine has taken: a second call for one of them is ignored. */
const taken = new WeakSet<Duplex>()

const EMPTY = new Uint8Array(0)

/**
 * The upgrade handler, in the current scope; closing the scope sends 1001
 * to its connections, waits for their closing handshakes up to
 * `shutdownTimeout` (then ends what remains), and sends GOAWAY on the
 * HTTP/2 sessions its streams came on. Bad options fail with
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
    /** The sessions that carried a WebSocket, for the GOAWAY at the end. */
    const sessions = new Set<NodeHttp2.Http2Session>()
    // Added before the engine: runs after its shutdown (1001 first, then GOAWAY).
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const session of sessions) if (!session.closed && !session.destroyed) session.close()
        sessions.clear()
      })
    )
    const engine = yield* Engine.make(settings)
    const matchesPath = (target: string | undefined): boolean => {
      const path = target === undefined ? undefined : splitTarget(target)?.path
      return path !== undefined && settings.router.match(path) !== undefined
    }
    return {
      handleUpgrade: (request, socket, head) => NodeUpgrade.handleUpgrade(engine, request, socket, head),
      matches: (request) => matchesPath(request.url),
      handleStream: (stream, headers) => {
        if (taken.has(stream)) return
        taken.add(stream)
        const session = stream.session
        if (session !== undefined && !sessions.has(session)) {
          sessions.add(session)
          session.once("close", () => sessions.delete(session))
        }
        if (!Engine.admit(engine, stream)) return
        const request = Http2Stream.fromHeaders(headers)
        if (typeof request === "string") return Engine.rejectAndEnd(engine, stream, 400, request)
        Engine.upgrade(engine, stream, request, EMPTY, Date.now() + settings.handshakeTimeout)
      },
      matchesStream: (headers) => Http2Stream.isWebSocketConnect(headers) && matchesPath(headers[":path"]),
      connections: Effect.sync(() => engine.state.active),
      publish: (topic, message) => engine.topics.publish(topic, message),
      topics: engine.topics
    }
  })

/**
 * What `attach` needs of a server: a `node:http2` server (`createSecureServer`,
 * with `allowHTTP1` for HTTP/1.1 clients on the same port, or `createServer`).
 *
 * @since 0.2.0
 * @category models
 */
export type Http2Server = NodeHttp2.Http2SecureServer | NodeHttp2.Http2Server

/** Node's answer to a CONNECT nobody handles (RFC 9110 §15.5.6). */
const METHOD_NOT_ALLOWED = 405

/**
 * Serves the routes on `server`'s port, in the current scope: turns on
 * `enableConnectProtocol` in the server's settings (for sessions from now
 * on: attach before `listen`), answers every extended CONNECT for a
 * WebSocket (404 when no route matches its `:path`; left to your own
 * `stream` listener with `unmatched: "ignore"`), and the HTTP/1.1
 * `upgrade` events as `Upgrade.attach` does. Closing the scope removes the
 * listeners, sends 1001 to websock's connections, waits for their closing
 * handshakes (up to `shutdownTimeout`), then sends GOAWAY on the sessions
 * that carried them, leaving your server open.
 *
 * With a request handler (Node's compatibility API), Node hands every
 * CONNECT stream to the server's `connect` event (405 when nobody listens):
 * websock listens to it too, leaves its own streams to its `stream`
 * listener, and answers the others 405 as Node would when it is the only
 * `connect` listener (for an HTTP/1.1 CONNECT, it ends the socket).
 *
 * @since 0.2.0
 * @category constructors
 */
export const attach = <const Routes extends Readonly<Record<string, Server.RouteInput>>>(
  server: Http2Server,
  options: Options<Routes> & { readonly unmatched?: "reject" | "ignore" | undefined }
): Effect.Effect<Upgrader, ServerError, Scope.Scope | Server.Requirements<Routes>> =>
  Effect.gen(function*() {
    const { unmatched: option, ...rest } = options
    const unmatched = yield* NodeUpgrade.unmatchedOption(option)
    const upgrader = yield* make(rest as Options<Routes>)
    const onStream = (stream: NodeHttp2.ServerHttp2Stream, headers: NodeHttp2.IncomingHttpHeaders) => {
      if (!Http2Stream.isWebSocketConnect(headers)) return
      if (unmatched === "ignore" && !upgrader.matchesStream(headers)) return
      upgrader.handleStream(stream, headers)
    }
    const onConnect = (request: IncomingMessage | NodeHttp2.Http2ServerRequest, second: unknown) => {
      if (server.listenerCount("connect") > 1) return
      if ("stream" in request) {
        if (taken.has(request.stream)) return
        const response = second as NodeHttp2.Http2ServerResponse
        response.statusCode = METHOD_NOT_ALLOWED
        response.end()
      } else {
        ;(second as Duplex).destroy()
      }
    }
    const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Uint8Array) => {
      if ((unmatched === "ignore" || server.listenerCount("upgrade") > 1) && !upgrader.matches(request)) return
      upgrader.handleUpgrade(request, socket, head)
    }
    // Added after the engine: removed first, before its connections are closed.
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        // RFC 8441 §3: clients may send extended CONNECT once this is advertised.
        server.updateSettings({ enableConnectProtocol: true })
        // Ahead of Node's own compatibility listener, which would wrap the stream first.
        server.prependListener("stream", onStream)
        server.on("connect", onConnect)
        server.on("upgrade", onUpgrade)
      }),
      () =>
        Effect.sync(() => {
          server.off("stream", onStream)
          server.off("connect", onConnect)
          server.off("upgrade", onUpgrade)
        })
    )
    return upgrader
  })
