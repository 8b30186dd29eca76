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
