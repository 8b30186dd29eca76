/**
 * The websock client: connect to a `ws://` or `wss://` URL in a Scope and get
 * the same connection handle a server route gets (`messages`, `send`,
 * `sendAll`, `close`, `closed`, ...), run by the same pure core
 * (`Connection.step` in the client role) and the same run-time parts, so
 * that one handler runs on either side, with the same limits, timeouts,
 * keepalive and backpressure.
 *
 * ```ts
 * import { Effect, Stream } from "effect"
 * import * as Client from "websock/Client"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const ws = yield* Client.connect("wss://example.com/feed", { protocols: ["v1"] })
 *   yield* ws.send("subscribe")
 *   yield* ws.messages.pipe(Stream.take(10), Stream.runForEach(Effect.log))
 * }))
 * ```
 *
 * - Every frame we send is masked with a fresh key (RFC 6455 §5.3) from a
 *   pooled batch of `crypto.randomFillSync` bytes; the server's frames must
 *   arrive unmasked (§5.1, else 1002).
 * - The 101 is checked strictly (`ClientHandshake.validateResponse`): a
 *   wrong answer fails with `ClientError(HandshakeFailed { what })`.
 * - permessage-deflate is offered by default (`compression: false` turns it
 *   off), with the parameters of `compression` (`ClientHandshake.deflateOffer`).
 * - `connectTimeout` bounds each attempt (DNS, TCP, TLS and the handshake);
 *   `retry` (an Effect `Schedule`) retries failed attempts; redirects are
 *   followed only up to `followRedirects`.
 * - Closing the scope closes the connection (1000, or 1001 when the scope
 *   was interrupted or failed) and waits for the closing handshake, up to
 *   `closeTimeout`.
 *
 * `makeSocket` and `layerSocket` give the client as an Effect
 * `Socket.Socket` (a fresh connection per reader), so that
 * `RpcClient.layerProtocolSocket` runs, and reconnects, over it; `toSocket`
 * shows one connection as one.
 *
 * @since 0.2.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import { randomBytes } from "node:crypto"
import * as Net from "node:net"
import type { Duplex } from "node:stream"
import * as Tls from "node:tls"
import * as ClientHandshake from "./ClientHandshake.ts"
import * as CloseReason from "./CloseReason.ts"
import { ClientError, ConnectFailed, ConnectTimeout, HandshakeFailed, InvalidOption, Redirected } from "./Errors.ts"
import * as Handshake from "./Handshake.ts"
import { Driver } from "./internal/driver.ts"
import * as Masker from "./internal/masker.ts"
import * as Settings from "./internal/settings.ts"
import * as PerMessageDeflate from "./PerMessageDeflate.ts"
import type * as Server from "./Server.ts"
import * as WebsockSocket from "./Socket.ts"
import type * as WebSocket from "./WebSocket.ts"

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/**
 * The client's options. The connection settings are the server's (same
 * names, same meaning, same checks), with two defaults of the client's own:
 * `pingInterval` and `idleTimeout` are off (0) unless set.
 *
 * @since 0.2.0
 * @category options
 */
export interface Options extends Server.ConnectionOptions {
  /** Subprotocols to offer, in order of preference (`Sec-WebSocket-Protocol`). */
  readonly protocols?: ReadonlyArray<string> | undefined
  /** More request headers (Authorization, Cookie, ...); the handshake's own may not be set. */
  readonly headers?: Readonly<Record<string, string>> | ReadonlyArray<readonly [string, string]> | undefined
  /** The `Origin` header, for servers that check it. */
  readonly origin?: string | undefined
  /**
   * permessage-deflate: offered by default; `false` offers nothing. The
   * fields are `PerMessageDeflate.Options`', read from the client's side:
   * `serverNoContextTakeover` and `serverMaxWindowBits` are asked of the
   * server, `clientNoContextTakeover` and `clientMaxWindowBits` announced
   * for us; `threshold`, `level` and `memLevel` apply to what we send.
   */
  readonly compression?: Partial<PerMessageDeflate.Options> | false | undefined
  /** TLS options for `wss://` (`ca`, `cert`, `key`, `rejectUnauthorized`, `servername`, ...). */
  readonly tls?: Tls.ConnectionOptions | undefined
  /** How long one attempt (DNS, TCP, TLS, handshake) may take; default 10 seconds. */
  readonly connectTimeout?: Duration.Input | undefined
  /** Retries failed attempts (e.g. `Schedule.exponential("100 millis").pipe(Schedule.take(5))`); default none. */
  readonly retry?: Schedule.Schedule<unknown, ClientError> | undefined
  /** How many redirects (301, 302, 303, 307, 308) to follow; default 0: a redirect fails with `Redirected`. */
  readonly followRedirects?: number | undefined
  /** The largest response head, in bytes; default 16 KiB. */
  readonly maxHeadSize?: number | undefined
}

/** The options, checked and resolved once per `connect`. */
interface Resolved {
  readonly url: URL
  readonly connection: Settings.Connection
  readonly protocols: ReadonlyArray<string>
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly tls: Tls.ConnectionOptions | undefined
  readonly connectTimeout: number
  readonly retry: Schedule.Schedule<unknown, ClientError> | undefined
  readonly followRedirects: number
  readonly maxHeadSize: number
}

const invalid = (option: string, problem: string): InvalidOption => new InvalidOption({ option, problem })

/** A `ws:`/`wss:` URL (http/https are read as ws/wss), without a fragment (RFC 6455 §3). */
const parseUrl = (value: string | URL, option: string): URL => {
  let url: URL
  try {
    url = new URL(String(value))
  } catch {
    throw invalid(option, `${JSON.stringify(String(value))} is not a URL`)
  }
  if (url.protocol === "http:") url.protocol = "ws:"
  else if (url.protocol === "https:") url.protocol = "wss:"
  if (url.protocol !== "ws:" && url.protocol !== "wss:") throw invalid(option, `must be a ws:// or wss:// URL, got ${url.protocol}`)
  if (url.hash !== "") throw invalid(option, "must not have a fragment (RFC 6455 §3)")
  return url
}

const resolve = (url: string | URL, options: Options): Resolved => {
  if (typeof options !== "object" || options === null) throw invalid("options", "must be an object")
  // A client asks nothing of the server's compressor unless told to: the
  // server's default, answering server_no_context_takeover on its own, is
  // the server's choice to make (RFC 7692 §7.1.1.1).
  const compression = options.compression === undefined
    ? { serverNoContextTakeover: false }
    : typeof options.compression === "object" && options.compression !== null
    ? { serverNoContextTakeover: false, ...options.compression }
    : options.compression
  const connection = Settings.connection({
    maxMessageSize: options.maxMessageSize,
    closeTimeout: options.closeTimeout,
    pingInterval: options.pingInterval ?? 0,
    idleTimeout: options.idleTimeout ?? 0,
    maxLifetime: options.maxLifetime,
    highWaterMark: options.highWaterMark,
    maxBufferedAmount: options.maxBufferedAmount,
    overflow: options.overflow,
    inboxHighWaterMark: options.inboxHighWaterMark,
    compression
  })
  const protocols = options.protocols ?? []
  if (!Array.isArray(protocols)) throw invalid("protocols", "must be an array of tokens")
  const seen = new Set<string>()
  for (const protocol of protocols) {
    // RFC 6455 §4.1 item 10: tokens, each unique.
    if (typeof protocol !== "string" || !Handshake.isToken(protocol)) throw invalid("protocols", `${JSON.stringify(protocol)} is not a token`)
    if (seen.has(protocol)) throw invalid("protocols", `${JSON.stringify(protocol)} is offered twice`)
    seen.add(protocol)
  }
  const given = options.headers === undefined ? [] : Array.isArray(options.headers) ? options.headers : Object.entries(options.headers)
  const headers: Array<readonly [string, string]> = []
  for (const entry of given as ReadonlyArray<readonly [string, string]>) {
    const [name, value] = entry
    if (typeof name !== "string" || typeof value !== "string" || !Handshake.isValidHeader(name, value)) {
      throw invalid("headers", `${JSON.stringify(name)} is not a valid header (a token name, a value without CR, LF or NUL)`)
    }
    if (ClientHandshake.isReservedRequestHeader(name)) throw invalid("headers", `${name} is set by the handshake itself`)
    headers.push([name, value])
  }
  if (options.origin !== undefined) {
    if (typeof options.origin !== "string" || !Handshake.isValidHeader("Origin", options.origin)) {
      throw invalid("origin", `must be an origin such as "https://example.com", got ${String(options.origin)}`)
    }
    headers.push(["Origin", options.origin])
  }
  if (options.tls !== undefined && (typeof options.tls !== "object" || options.tls === null)) throw invalid("tls", "must be an object of TLS options")
  const followRedirects = options.followRedirects ?? 0
  if (!Number.isInteger(followRedirects) || followRedirects < 0) throw invalid("followRedirects", `must be an integer >= 0, got ${String(followRedirects)}`)
  const maxHeadSize = options.maxHeadSize ?? 16 * 1024
  if (!Number.isInteger(maxHeadSize) || maxHeadSize < 256) throw invalid("maxHeadSize", `must be an integer >= 256, got ${String(maxHeadSize)}`)
  return {
    url: parseUrl(url, "url"),
    connection,
    protocols,
    headers,
    tls: options.tls,
    connectTimeout: millis("connectTimeout", options.connectTimeout, 10_000),
    retry: options.retry,
    followRedirects,
    maxHeadSize
  }
}

const millis = (option: string, value: Duration.Input | undefined, fallback: number): number => {
  if (value === undefined) return fallback
  const decoded = typeof value === "number" ? value : Duration.fromInput(value)
  const ms = typeof decoded === "number" ? decoded : decoded._tag === "Some" ? Duration.toMillis(decoded.value) : Number.NaN
  if (!(ms >= 1 && ms <= 2 ** 31 - 1)) throw invalid(option, `must be a duration of 1 ms to ${2 ** 31 - 1} ms, got ${String(value)}`)
  return Math.ceil(ms)
}

// ---------------------------------------------------------------------------
// The handshake
// ---------------------------------------------------------------------------

/** A socket past its 101. */
interface Upgraded {
  readonly url: URL
  readonly socket: Net.Socket
  readonly rest: Uint8Array
  readonly request: WebSocket.Request
  readonly protocol: string | undefined
  readonly extensions: string | undefined
  readonly deflate: PerMessageDeflate.Negotiated | undefined
}

type Attempt =
  | { readonly _tag: "Upgraded"; readonly upgraded: Upgraded }
  | { readonly _tag: "Redirect"; readonly status: number; readonly location: string | undefined }

const ignore = (): void => {}

const failWith = (reason: ClientError["reason"]) => Effect.fail(new ClientError({ reason }))

/** One TCP (or TLS) connection and its opening handshake (RFC 6455 §4.1). */
const attempt = (settings: Resolved, url: URL): Effect.Effect<Attempt, ClientError> =>
  Effect.callback<Attempt, ClientError>((resume) => {
    const href = url.href
    const secure = url.protocol === "wss:"
    const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname
    const port = url.port === "" ? (secure ? 443 : 80) : Number(url.port)
    const key = ClientHandshake.makeKey(randomBytes(16))
    const deflate = settings.connection.compression
    const extensions = deflate === undefined ? undefined : ClientHandshake.deflateOffer(deflate)
    const target = `${url.pathname === "" ? "/" : url.pathname}${url.search}`
    let socket: Net.Socket
    try {
      socket = secure
        ? Tls.connect({ host, port, servername: Net.isIP(host) === 0 ? host : undefined, ALPNProtocols: ["http/1.1"], ...settings.tls })
        : Net.connect({ host, port })
    } catch (cause) {
      // A TLS option Node refuses at once (a malformed ca, cert or key).
      resume(failWith(new ConnectFailed({ url: href, cause })))
      return
    }
    socket.setNoDelay(true)
    // Kept for good: an error between the handshake and the driver's listeners is not thrown.
    socket.on("error", ignore)
    let state = ClientHandshake.initialResponse(settings.maxHeadSize) // the response head so far
    let done = false // resumed (or abandoned)
    const settle = (effect: Effect.Effect<Attempt, ClientError>, keep: boolean) => {
      if (done) return
      done = true
      socket.off(secure ? "secureConnect" : "connect", onConnect)
      socket.off("data", onData)
      socket.off("error", onError)
      socket.off("close", onClose)
      if (!keep) socket.destroy()
      resume(effect)
    }
    const handshakeFailed = (what: string, status?: number) =>
      settle(failWith(new HandshakeFailed({ url: href, what, status })), false)
    const onConnect = () => {
      socket.write(ClientHandshake.request({ host: url.host, target, key, protocols: settings.protocols, extensions, headers: settings.headers }))
    }
    const onData = (chunk: Uint8Array) => {
      const result = ClientHandshake.feedResponse(state, chunk)
      switch (result._tag) {
        case "Incomplete":
          state = result.state
          return
        case "TooLarge":
          return handshakeFailed(`response head larger than ${settings.maxHeadSize} bytes`)
        case "Malformed":
          return handshakeFailed(`malformed response: ${result.reason}`)
        case "Complete": {
          const validation = ClientHandshake.validateResponse(result.response, { key, protocols: settings.protocols, deflate })
          switch (validation._tag) {
            case "Failed":
              return handshakeFailed(validation.what, validation.status)
            case "Redirect":
              return settle(Effect.succeed({ _tag: "Redirect", status: validation.status, location: validation.location }), false)
            case "Accepted": {
              socket.pause()
              const request = requestOf(url, target, settings, key, extensions, socket)
              return settle(Effect.succeed({
                _tag: "Upgraded",
                upgraded: {
                  url,
                  socket,
                  rest: result.rest,
                  request,
                  protocol: validation.protocol,
                  extensions: validation.extensions,
                  deflate: validation.deflate
                }
              }), true)
            }
          }
        }
      }
    }
    const onError = (cause: Error) => settle(failWith(new ConnectFailed({ url: href, cause })), false)
    const onClose = () =>
      settle(failWith(new ConnectFailed({ url: href, cause: new Error("connection closed before the handshake's answer") })), false)
    socket.once(secure ? "secureConnect" : "connect", onConnect)
    socket.on("data", onData)
    socket.once("error", onError)
    socket.once("close", onClose)
    // Interrupted (the timeout, the caller): the socket goes.
    return Effect.sync(() => {
      if (done) return
      done = true
      socket.destroy()
    })
  })

/** The request we sent, as the handle's `request` shows it. */
const requestOf = (
  url: URL,
  target: string,
  settings: Resolved,
  key: string,
  extensions: string | undefined,
  socket: Net.Socket
): WebSocket.Request => {
  const headers = new Map<string, string>([
    ["host", url.host],
    ["upgrade", "websocket"],
    ["connection", "Upgrade"],
    ["sec-websocket-key", key],
    ["sec-websocket-version", "13"]
  ])
  if (settings.protocols.length > 0) headers.set("sec-websocket-protocol", settings.protocols.join(", "))
  if (extensions !== undefined) headers.set("sec-websocket-extensions", extensions)
  for (const [name, value] of settings.headers) {
    const lower = name.toLowerCase()
    const previous = headers.get(lower)
    headers.set(lower, previous === undefined ? value : `${previous}, ${value}`)
  }
  return {
    method: "GET",
    target,
    path: url.pathname === "" ? "/" : url.pathname,
    query: new URLSearchParams(url.search),
    params: {},
    // RFC 6455 §4.1: the opening handshake is an HTTP/1.1 upgrade.
    httpVersion: "1.1",
    headers,
    cookies: new Map(),
    remoteAddress: socket.remoteAddress,
    remotePort: socket.remotePort
  }
}

/** One attempt under `connectTimeout`, following redirects up to `followRedirects`. */
const handshake = (initial: Resolved): Effect.Effect<Upgraded, ClientError> =>
  Effect.gen(function*() {
    let settings = initial // the request's settings for this hop (headers dropped for another host)
    let url = settings.url // where this hop goes
    for (let hop = 0; ; hop++) {
      const href = url.href
      const result = yield* attempt(settings, url).pipe(
        Effect.timeoutOrElse({
          duration: settings.connectTimeout,
          orElse: () => failWith(new ConnectTimeout({ url: href, timeout: settings.connectTimeout }))
        })
      )
      if (result._tag === "Upgraded") return result.upgraded
      if (hop >= settings.followRedirects || result.location === undefined) {
        return yield* failWith(new Redirected({ url: href, status: result.status, location: result.location }))
      }
      const next = Effect.try({
        try: () => parseUrl(new URL(result.location!, url.href.replace(/^ws/, "http")), "location"),
        catch: () => new ClientError({ reason: new HandshakeFailed({ url: href, what: `redirect to an invalid URL ${JSON.stringify(result.location)}`, status: result.status }) })
      })
      const to = yield* next
      // RFC 6455 §4.1 leaves redirects to the client: never from wss: to ws:,
      // and the request's own headers (credentials) only to the same origin.
      if (url.protocol === "wss:" && to.protocol !== "wss:") {
        return yield* failWith(new HandshakeFailed({ url: href, what: `redirect from wss: to ${to.protocol} refused`, status: result.status }))
      }
      if (to.host !== url.host) settings = { ...settings, headers: [], tls: settings.tls === undefined ? undefined : { ...settings.tls, servername: undefined } }
      url = to
    }
  })

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

/** How often the keepalive sweep runs: a fifth of the shortest timer, 5 ms to 1 s (as the server's). */
const sweepPeriod = (limits: Settings.Connection["limits"]): number => {
  const timers = [limits.pingInterval, limits.idleTimeout, limits.maxLifetime].filter((t) => t > 0)
  return timers.length === 0 ? 0 : Math.min(1000, Math.max(5, Math.floor(Math.min(...timers) / 5)))
}

/** Waits until the socket has closed (at most `timeout` ms, then destroys it). */
const socketClosed = (socket: Duplex, timeout: number): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (socket.destroyed) return resume(Effect.void)
    const timer = setTimeout(() => socket.destroy(), timeout)
    socket.once("close", () => {
      clearTimeout(timer)
      resume(Effect.void)
    })
    return Effect.sync(() => clearTimeout(timer))
  })

/** Runs the connection past its 101 in the current scope: the driver, the codec, the keepalive sweep. */
const run = (settings: Resolved, upgraded: Upgraded): Effect.Effect<WebSocket.WebSocketConnection, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { limits, compression } = settings.connection
    const codec = upgraded.deflate !== undefined && compression !== undefined
      ? yield* PerMessageDeflate.make(ClientHandshake.clientCodecParams(upgraded.deflate), compression)
      : undefined
    const context = yield* Effect.context<never>()
    const clock = { now: Date.now() }
    const period = sweepPeriod(limits)
    const driver = yield* Effect.acquireRelease(
      Effect.sync(() => {
        let timer: ReturnType<typeof setInterval> | undefined = undefined // the keepalive sweep
        const driver = new Driver({
          socket: upgraded.socket,
          limits,
          request: upgraded.request,
          protocol: upgraded.protocol,
          extensions: upgraded.extensions,
          codec,
          deflateThreshold: compression?.threshold ?? 0,
          run: Effect.runPromiseExitWith(context),
          clock,
          owner: { onEnd: () => clearInterval(timer), onOver: ignore },
          masker: Masker.shared
        })
        if (period > 0) {
          timer = setInterval(() => driver.tick(clock.now = Date.now()), period)
          timer.unref()
        }
        driver.start(upgraded.rest)
        return driver
      }),
      (driver, exit) =>
        Effect.gen(function*() {
          // The scope ends: close (1000, or 1001 for an interruption or a failure) and wait for the handshake.
          driver.closeWith(Exit.isSuccess(exit) ? CloseReason.normal() : CloseReason.goingAway("handler interrupted"))
          yield* driver.awaitOutcome().pipe(
            Effect.timeoutOrElse({ duration: limits.closeTimeout * 2, orElse: () => Effect.sync(() => driver.terminate()) })
          )
          yield* socketClosed(upgraded.socket, limits.closeTimeout)
        })
    )
    return driver.handle
  })

/**
 * Connects to `url` (`ws://` or `wss://`) and returns the connection, open,
 * in the current scope (closing the scope closes it). Fails with
 * `ClientError`: `InvalidOption` for bad options, `ConnectFailed`,
 * `ConnectTimeout`, `HandshakeFailed { what }` for a 101 that does not
 * answer our request (RFC 6455 §4.1), `Redirected` for a redirect not
 * followed. With `retry`, failed attempts are retried on its schedule.
 *
 * @since 0.2.0
 * @category constructors
 */
export const connect = (
  url: string | URL,
  options: Options = {}
): Effect.Effect<WebSocket.WebSocketConnection, ClientError, Scope.Scope> =>
  Effect.gen(function*() {
    const settings = yield* Effect.try({
      try: () => resolve(url, options),
      catch: (error) =>
        new ClientError({ reason: error instanceof InvalidOption ? error : invalid("options", String(error)) })
    })
    const upgraded = settings.retry === undefined
      ? yield* handshake(settings)
      : yield* Effect.retry(handshake(settings), settings.retry)
    return yield* run(settings, upgraded)
  })

/**
 * Connects (as `connect`) and shows the connection as an Effect
 * `Socket.Socket` (`Socket.toSocket`), in the current scope: one
 * connection, whose end is the socket's.
 *
 * @since 0.2.0
 * @category constructors
 */
export const toSocket = (url: string | URL, options?: Options): Effect.Effect<Socket.Socket, ClientError, Scope.Scope> =>
  Effect.map(connect(url, options), WebsockSocket.toSocket)

/** A connect failure as Effect's sockets report one. */
const openError = (error: ClientError): Socket.SocketError =>
  new Socket.SocketError({
    reason: new Socket.SocketOpenError({ kind: error.reason._tag === "ConnectTimeout" ? "Timeout" : "Unknown", cause: error })
  })

/**
 * An Effect `Socket.Socket` that connects when its reader is acquired, in
 * the reader's scope, as Effect's own WebSocket sockets do: each reader is
 * a fresh connection (what `RpcClient.layerProtocolSocket` does to
 * reconnect), and the writer writes to the current one, waiting while there
 * is none. A failed connect fails the reader with `SocketError`
 * (`SocketOpenError`, kind `"Timeout"` for `ConnectTimeout`), whose `cause`
 * is the `ClientError`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const makeSocket = (url: string | URL, options?: Options): Socket.Socket => {
  let current: Socket.Writer | undefined = undefined // the writer of the connection the last reader opened
  let waiting: Array<() => void> = [] // writes waiting for a connection
  const withWriter = <A>(f: (writer: Socket.Writer) => Effect.Effect<A, Socket.SocketError>): Effect.Effect<A, Socket.SocketError> =>
    Effect.suspend(() => {
      if (current !== undefined) return f(current)
      return Effect.andThen(
        Effect.callback<void>((resume) => {
          const wake = () => resume(Effect.void)
          waiting.push(wake)
          return Effect.sync(() => {
            waiting = waiting.filter((w) => w !== wake)
          })
        }),
        withWriter(f)
      )
    })
  const reader = Effect.gen(function*() {
    const ws = yield* Effect.mapError(connect(url, options), openError)
    const socket = WebsockSocket.toSocket(ws)
    const read = yield* socket.reader
    const writer = yield* socket.writer
    current = writer
    const woken = waiting
    waiting = []
    for (const wake of woken) wake()
    // Runs first (finalizers run in reverse): no write goes to a connection that is closing.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (current === writer) current = undefined
      })
    )
    return read
  })
  return Socket.make({
    reader,
    writer: Effect.succeed({
      write: (chunk) => withWriter((writer) => writer.write(chunk)),
      writeAll: (chunks) => withWriter((writer) => writer.writeAll(chunks))
    })
  })
}

/**
 * The `Socket.Socket` service of `makeSocket`, for what runs on Effect's
 * sockets (`RpcClient.layerProtocolSocket()`, ...): each reader a fresh
 * connection, so that it reconnects as Effect's own WebSocket layers do.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerSocket = (url: string | URL, options?: Options): Layer.Layer<Socket.Socket> =>
  Layer.succeed(Socket.Socket, makeSocket(url, options))
