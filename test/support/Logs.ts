/**
 * A test server whose logs are captured: `start` is `TestServer.start` (same
 * defaults, same `/ws` echo route) with every log entry, from level `All`,
 * recorded by a custom Effect `Logger` with its level, its annotations and
 * everything it would print (logfmt, JSON and the pretty cause).
 *
 * The server's log lines are forked, so assert on them after `close()`:
 * every connection's logs are written before the shutdown ends.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as Server from "../../src/Server.ts"
import * as TestServer from "./TestServer.ts"

/**
 * One captured log entry.
 *
 * @since 0.1.0
 */
export interface Entry {
  readonly level: string
  readonly annotations: Readonly<Record<string, unknown>>
  /** The message alone (its parts joined with spaces). */
  readonly message: string
  /** The pretty-printed cause ("" when there is none). */
  readonly cause: string
  /** Everything the entry would print: logfmt, JSON, and the pretty cause. */
  readonly text: string
}

/**
 * @since 0.1.0
 */
export interface LoggedServer extends TestServer.StartedServer {
  readonly entries: ReadonlyArray<Entry>
  /** The entries annotated with this connection id. */
  readonly of: (connection: number) => ReadonlyArray<Entry>
  /** Every entry on one line each, for assertion messages. */
  readonly dump: () => string
}

/**
 * A logger that records every entry (from level `All`) in `entries`;
 * `provide` installs it, in place of the default loggers, on an effect.
 *
 * @since 0.2.0
 */
export const capture = () => {
  const entries: Array<Entry> = []
  const logger = Logger.make((log) => {
    const cause = Cause.pretty(log.cause)
    entries.push({
      level: log.logLevel,
      annotations: { ...log.fiber.getRef(References.CurrentLogAnnotations) },
      message: Array.isArray(log.message) ? log.message.map(String).join(" ") : String(log.message),
      cause,
      text: [Logger.formatLogFmt.log(log), Logger.formatJson.log(log), cause].join("\n")
    })
  })
  const provide = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    effect.pipe(
      Effect.provideService(References.MinimumLogLevel, "All"),
      Effect.provideService(References.CurrentLoggers, new Set([logger]))
    )
  return { entries: entries as ReadonlyArray<Entry>, provide }
}

/**
 * Starts a server (default route: `/ws` echo) in a scope of its own, capturing its logs.
 *
 * @since 0.1.0
 */
export const start = async (options: Partial<Server.Options> = {}): Promise<LoggedServer> => {
  const { entries, provide } = capture()
  const scope = Scope.makeUnsafe()
  const server = await Effect.runPromise(
    Server.make({ ...TestServer.testDefaults, routes: { "/ws": TestServer.echo }, ...options }).pipe(Scope.provide(scope), provide)
  )
  let closing: Promise<void> | undefined = undefined
  return {
    port: server.address.port,
    server,
    close: () => (closing ??= Effect.runPromise(Scope.close(scope, Exit.void))),
    entries,
    of: (connection) => entries.filter((e) => e.annotations.connection === connection),
    dump: () => entries.map((e) => `${e.level} ${JSON.stringify(e.annotations)} ${e.text.split("\n")[0]}`).join("\n")
  }
}
