/**
 * Running a real server in tests: `start` runs `Server.make` in a scope of
 * its own on 127.0.0.1 with an ephemeral port and short timers, and `close`
 * shuts it down (gracefully: the scope's finalizer); `withServer` wraps a
 * test body between the two.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { readFileSync } from "node:fs"
import * as NodeHttp2 from "node:http2"
import * as Http2 from "../../src/Http2.ts"
import * as Server from "../../src/Server.ts"
import type * as WebSocket from "../../src/WebSocket.ts"

/**
 * Test defaults: no keepalive pings or idle timeout (they would add frames to
 * what a test expects), short close and shutdown timers.
 *
 * @since 0.1.0
 */
export const testDefaults = {
  host: "127.0.0.1",
  port: 0,
  pingInterval: 0,
  idleTimeout: 0,
  closeTimeout: 500,
  shutdownTimeout: 1_000,
  handshakeTimeout: 2_000
} as const

/**
 * @since 0.1.0
 */
export type TestOptions = Partial<Server.Options> & {
  /** Minimum level of the server's logs. Default "Error" (violations are logged as warnings). */
  readonly logLevel?: "All" | "Debug" | "Info" | "Warn" | "Error" | "None"
}

/**
 * The echo handler: every message back, in batches.
 *
 * @since 0.1.0
 */
export const echo = (ws: WebSocket.WebSocket) => ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch)))

/**
 * @since 0.1.0
 */
export interface StartedServer {
  readonly port: number
  readonly server: Server.RunningServer
  /** Shuts the server down (closes its scope) and waits for the shutdown. */
  readonly close: () => Promise<void>
}

/**
 * Starts a server (default route: `/ws` echo) in a scope of its own.
 *
 * @since 0.1.0
 */
export const start = async (options: TestOptions = {}): Promise<StartedServer> => {
  const { logLevel, ...rest } = options
  const scope = Scope.makeUnsafe()
  const server = await Effect.runPromise(
    Server.make({ ...testDefaults, routes: { "/ws": echo }, ...rest }).pipe(
      Scope.provide(scope),
      Effect.provideService(References.MinimumLogLevel, logLevel ?? "Error")
    )
  )
  let closing: Promise<void> | undefined = undefined
  return {
    port: server.address.port,
    server,
    close: () => (closing ??= Effect.runPromise(Scope.close(scope, Exit.void)))
  }
}

/**
 * Runs `body` against a fresh server, then shuts the server down (even when
 * `body` fails; its error is the one reported).
 *
 * @since 0.1.0
 */
export const withServer = async <A>(
  options: TestOptions,
  body: (port: number, server: Server.RunningServer) => Promise<A> | Effect.Effect<A, unknown>
): Promise<A> => {
  const started = await start(options)
  try {
    const result = body(started.port, started.server)
    return Effect.isEffect(result) ? await Effect.runPromise(result) : await result
  } finally {
    await started.close()
  }
}

const testCertificate = readFileSync(new URL("../fixtures/localhost.crt", import.meta.url))
const testKey = readFileSync(new URL("../fixtures/localhost.key", import.meta.url))

/**
 * Starts a `node:http2` secure server (the test certificate, `allowHTTP1`)
 * on 127.0.0.1 with websock attached (`Http2.attach`; default route: `/ws`
 * echo), in a scope of its own: the same routes answer HTTP/2 extended
 * CONNECT streams (RFC 8441) and HTTP/1.1 upgrades. `close` shuts websock
 * down (1001, then GOAWAY), then closes the server.
 *
 * @since 0.2.0
 */
export const startHttp2 = async (options: TestOptions = {}): Promise<StartedHttp2Server> => {
  const { logLevel, host: _host, port: _port, maxHeadSize: _maxHeadSize, ...rest } = options
  const server = NodeHttp2.createSecureServer({ cert: testCertificate, key: testKey, allowHTTP1: true }, (_req, res) => {
    res.writeHead(404).end("not found")
  })
  const own = new Set<NodeHttp2.ServerHttp2Session>()
  sessions.set(server, own)
  server.on("session", (session) => {
    own.add(session)
    session.once("close", () => own.delete(session))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const scope = Scope.makeUnsafe()
  const { host: _h, port: _p, ...defaults } = testDefaults
  const upgrader = await Effect.runPromise(
    Http2.attach(server, { ...defaults, routes: { "/ws": echo }, ...rest }).pipe(
      Scope.provide(scope),
      Effect.provideService(References.MinimumLogLevel, logLevel ?? "Error")
    )
  )
  let closing: Promise<void> | undefined = undefined
  return {
    port: (server.address() as { readonly port: number }).port,
    server,
    upgrader,
    close: () =>
      (closing ??= Effect.runPromise(Scope.close(scope, Exit.void)).then(() =>
        new Promise<void>((resolve) => {
          server.close(() => resolve())
          // Sessions that never carried a WebSocket (and so got no GOAWAY) end too.
          for (const session of sessions.get(server) ?? []) session.destroy()
        })
      ))
  }
}

/** The sessions of each test HTTP/2 server, for `close`. */
const sessions = new WeakMap<NodeHttp2.Http2SecureServer, Set<NodeHttp2.ServerHttp2Session>>()

/**
 * @since 0.2.0
 */
export interface StartedHttp2Server {
  readonly port: number
  readonly server: NodeHttp2.Http2SecureServer
  readonly upgrader: Http2.Upgrader
  /** Shuts websock down (closes its scope), then closes the server. */
  readonly close: () => Promise<void>
}
