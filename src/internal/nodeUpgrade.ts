/**
 * Feeding a `node:http` (or `node:https`) `upgrade` event to the engine:
 * the request as Node parsed it (`headersDistinct`, so that repeated
 * headers are all seen), the socket and the bytes after the head. Used by
 * `Upgrade` (websock's routes) and `NodeHttpServer` (a route of Effect's
 * router, passed as `matched`).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Tracer from "effect/Tracer"
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import { InvalidOption, ServerError } from "../Errors.ts"
import * as Handshake from "../Handshake.ts"
import * as Engine from "./engine.ts"
import type * as Router from "./router.ts"
import type * as Settings from "./settings.ts"

interface TcpSocket extends Duplex {
  setNoDelay?: (noDelay: boolean) => unknown
  setTimeout?: (timeout: number) => unknown
}

/** Sockets an engine has taken: a second call for one of them is ignored (one answer per socket). */
const taken = new WeakSet<Duplex>()

/**
 * Counts the socket in, then answers the upgrade (`Engine.upgrade`; `parent`:
 * the span the upgrade's belongs under); a socket already taken is left alone.
 */
export const handleUpgrade = (
  engine: Engine.Engine,
  request: IncomingMessage,
  socket: Duplex,
  head: Uint8Array,
  matched?: Router.Match<Settings.ResolvedRoute>,
  parent?: Tracer.AnySpan
): void => {
  if (taken.has(socket)) return
  taken.add(socket)
  if (!Engine.admit(engine, socket)) return
  const tcp = socket as TcpSocket
  // Small frames go out at once; the HTTP server's idle timeout is not ours.
  tcp.setNoDelay?.(true)
  tcp.setTimeout?.(0)
  const fields = Handshake.fromFields({
    method: request.method ?? "",
    target: request.url ?? "",
    httpVersion: request.httpVersion,
    headers: request.headersDistinct
  })
  if (typeof fields === "string") return Engine.rejectAndEnd(engine, socket, 400, fields)
  Engine.upgrade(engine, socket, fields, head, Date.now() + engine.settings.handshakeTimeout, matched, parent)
}

/** The `unmatched` option of `Upgrade.attach` and `Http2.attach`: `"reject"` (default) or `"ignore"`, anything else `InvalidOption`. */
export const unmatchedOption = (value: unknown): Effect.Effect<"reject" | "ignore", ServerError> =>
  value === undefined || value === "reject" || value === "ignore"
    ? Effect.succeed(value ?? "reject")
    : Effect.fail(new ServerError({ reason: new InvalidOption({ option: "unmatched", problem: `must be "reject" or "ignore", got ${String(value)}` }) }))
