/**
 * The errors websock reports, as one tagged error class per layer with a
 * `reason` union (the Effect 4 convention): `WebSocketError` for what happens
 * on one connection, `ServerError` for the server itself (bad options, the
 * listener). Each reason is a class that owns its `message`; the wrapper
 * forwards it.
 *
 * Every connection error names its connection (`connection`, the handle's
 * `id`), so that a handler relaying to another connection can tell that
 * connection's end from its own. None ever carries payload bytes, so logging
 * an error never leaks a message's content.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"

/**
 * The peer broke the protocol (or our limits) and the connection was failed
 * with `code` (1002, 1007, 1009): what `receive` fails with after such an end.
 *
 * @since 0.1.0
 * @category errors
 */
export class ProtocolViolation extends Data.TaggedError("ProtocolViolation")<{
  readonly connection: number
  readonly code: number
  readonly reason: string
}> {
  override get message(): string {
    return `connection ${this.connection}: protocol violation, closed with ${this.code}: ${this.reason}`
  }
}

/**
 * An operation needed an open connection, and the closing handshake had
 * already begun or ended. `code` and `reason` are the connection's close code
 * and reason once known (1005 and "closing" while the handshake is under way).
 *
 * @since 0.1.0
 * @category errors
 */
export class ConnectionClosed extends Data.TaggedError("ConnectionClosed")<{
  readonly connection: number
  readonly code: number
  readonly reason: string
}> {
  override get message(): string {
    return `connection ${this.connection} closed (${this.code}${this.reason === "" ? "" : `: ${this.reason}`})`
  }
}

/**
 * The outbound buffer passed its ceiling under the `"close"` policy: the
 * connection is closed with 1008.
 *
 * @since 0.1.0
 * @category errors
 */
export class BufferOverflow extends Data.TaggedError("BufferOverflow")<{
  readonly connection: number
  readonly bufferedAmount: number
  readonly limit: number
}> {
  override get message(): string {
    return `connection ${this.connection}: outbound buffer overflow (${this.bufferedAmount} bytes buffered, limit ${this.limit}); closed with 1008`
  }
}

/**
 * `close` was given a code an endpoint may not send (only 1000-1003,
 * 1007-1014 and 3000-4999 may be), or a reason longer than 123 UTF-8 bytes.
 * Nothing was sent.
 *
 * @since 0.2.0
 * @category errors
 */
export class InvalidClose extends Data.TaggedError("InvalidClose")<{
  readonly connection: number
  readonly code: number
  readonly problem: string
}> {
  override get message(): string {
    return `connection ${this.connection}: invalid close: ${this.problem}`
  }
}

/**
 * What can go wrong on one connection.
 *
 * @since 0.1.0
 * @category errors
 */
export type WebSocketErrorReason = ProtocolViolation | ConnectionClosed | BufferOverflow | InvalidClose

/**
 * The error of a connection, with its `reason`.
 *
 * @since 0.1.0
 * @category errors
 */
export class WebSocketError extends Data.TaggedError("WebSocketError")<{
  readonly reason: WebSocketErrorReason
}> {
  override get message(): string {
    return this.reason.message
  }
}

/**
 * The server could not listen (address in use, permission denied, ...).
 *
 * @since 0.2.0
 * @category errors
 */
export class ListenFailed extends Data.TaggedError("ListenFailed")<{
  readonly cause: unknown
}> {
  override get message(): string {
    return `websock server failed to listen: ${String(this.cause)}`
  }
}

/**
 * An option is invalid; `option` names it (e.g. `"maxMessageSize"`,
 * `"compression.serverMaxWindowBits"`, `"routes"`).
 *
 * @since 0.2.0
 * @category errors
 */
export class InvalidOption extends Data.TaggedError("InvalidOption")<{
  readonly option: string
  readonly problem: string
}> {
  override get message(): string {
    return `websock: invalid option ${this.option}: ${this.problem}`
  }
}

/**
 * What can go wrong with the server itself.
 *
 * @since 0.2.0
 * @category errors
 */
export type ServerErrorReason = ListenFailed | InvalidOption

/**
 * The error of the server, with its `reason`.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServerError extends Data.TaggedError("ServerError")<{
  readonly reason: ServerErrorReason
}> {
  override get message(): string {
    return this.reason.message
  }
}

/**
 * A route's upgrade decision refused the connection: the client is answered
 * with `status` (400-599), the `headers` (e.g. `WWW-Authenticate`,
 * `Retry-After`) and `body` as text (default: the status text), and the
 * socket is closed. Made with `Server.reject`.
 *
 * @since 0.2.0
 * @category errors
 */
export class UpgradeRejected extends Data.TaggedError("UpgradeRejected")<{
  readonly status: number
  readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
  readonly body?: string | undefined
}> {
  override get message(): string {
    return `upgrade rejected with ${this.status}${this.body === undefined ? "" : `: ${this.body}`}`
  }
}

/**
 * The client could not reach the server: DNS, TCP or TLS failed, or the
 * connection was lost before the handshake's answer.
 *
 * @since 0.2.0
 * @category errors
 */
export class ConnectFailed extends Data.TaggedError("ConnectFailed")<{
  readonly url: string
  readonly cause: unknown
}> {
  override get message(): string {
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `websock client: could not connect to ${this.url}: ${cause}`
  }
}

/**
 * The opening handshake did not finish within the client's `connectTimeout`.
 *
 * @since 0.2.0
 * @category errors
 */
export class ConnectTimeout extends Data.TaggedError("ConnectTimeout")<{
  readonly url: string
  readonly timeout: number
}> {
  override get message(): string {
    return `websock client: no handshake with ${this.url} within ${this.timeout} ms`
  }
}

/**
 * The server's answer was not a valid 101 for our request (RFC 6455 §4.1,
 * RFC 7692 §5-§7): `what` says what was wrong, e.g. "status 403 Forbidden",
 * "missing Upgrade: websocket", "wrong Sec-WebSocket-Accept",
 * "subprotocol \"x\" was not offered", "extension \"x\" was not offered",
 * "invalid permessage-deflate parameter server_max_window_bits=16".
 * `status` is the response's status, when it had one.
 *
 * @since 0.2.0
 * @category errors
 */
export class HandshakeFailed extends Data.TaggedError("HandshakeFailed")<{
  readonly url: string
  readonly what: string
  readonly status?: number | undefined
}> {
  override get message(): string {
    return `websock client: handshake with ${this.url} failed: ${this.what}`
  }
}

/**
 * The server answered with a redirect (3xx) and the client was not asked to
 * follow it (`followRedirects`), or followed as many as it may.
 *
 * @since 0.2.0
 * @category errors
 */
export class Redirected extends Data.TaggedError("Redirected")<{
  readonly url: string
  readonly status: number
  readonly location: string | undefined
}> {
  override get message(): string {
    return `websock client: ${this.url} redirected (${this.status}) to ${this.location ?? "nowhere"}; redirects are not followed`
  }
}

/**
 * What can go wrong when a client connects (bad options: `InvalidOption`).
 *
 * @since 0.2.0
 * @category errors
 */
export type ClientErrorReason = ConnectFailed | ConnectTimeout | HandshakeFailed | Redirected | InvalidOption

/**
 * The error of `Client.connect`, with its `reason`.
 *
 * @since 0.2.0
 * @category errors
 */
export class ClientError extends Data.TaggedError("ClientError")<{
  readonly reason: ClientErrorReason
}> {
  override get message(): string {
    return this.reason.message
  }
}
