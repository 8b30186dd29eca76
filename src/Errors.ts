/**
 * The errors websock reports, as one tagged error class per layer with a
 * `reason` union (the Effect 4 convention): `WebSocketError` for what happens
 * on one connection, `ServerError` for the listener itself.
 *
 * Every reason carries the close code or the HTTP status it was answered with,
 * and a short human reason. None ever carries payload bytes, so logging an
 * error never leaks a message's content.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"

/**
 * The upgrade request was refused with an HTTP status (400, 404, 405, 426,
 * 431, 503, ...).
 *
 * @since 0.1.0
 * @category errors
 */
export class HandshakeRejected extends Data.TaggedError("HandshakeRejected")<{
  readonly status: number
  readonly reason: string
}> {}

/**
 * The peer broke the protocol; the connection was failed with `code`
 * (1002, 1007, 1009, ...).
 *
 * @since 0.1.0
 * @category errors
 */
export class ProtocolViolation extends Data.TaggedError("ProtocolViolation")<{
  readonly code: number
  readonly reason: string
}> {}

/**
 * An operation needed an open connection, and the closing handshake had
 * already begun or ended.
 *
 * @since 0.1.0
 * @category errors
 */
export class ConnectionClosed extends Data.TaggedError("ConnectionClosed")<{
  readonly code: number
  readonly reason: string
}> {}

/**
 * The outbound buffer passed its ceiling and the policy was `"close"` (the
 * connection is closed with 1008) or `"fail"`.
 *
 * @since 0.1.0
 * @category errors
 */
export class BufferOverflow extends Data.TaggedError("BufferOverflow")<{
  readonly bufferedAmount: number
  readonly limit: number
}> {}

/**
 * The transport failed (reset, write after the peer went away).
 *
 * @since 0.1.0
 * @category errors
 */
export class TransportError extends Data.TaggedError("TransportError")<{
  readonly reason: string
}> {}

/**
 * What can go wrong on one connection.
 *
 * @since 0.1.0
 * @category errors
 */
export type WebSocketErrorReason = HandshakeRejected | ProtocolViolation | ConnectionClosed | BufferOverflow | TransportError

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
    const r = this.reason
    switch (r._tag) {
      case "HandshakeRejected":
        return `handshake rejected with ${r.status}: ${r.reason}`
      case "ProtocolViolation":
        return `protocol violation, closed with ${r.code}: ${r.reason}`
      case "ConnectionClosed":
        return `connection closed (${r.code}${r.reason === "" ? "" : `: ${r.reason}`})`
      case "BufferOverflow":
        return `outbound buffer overflow: ${r.bufferedAmount} bytes buffered, limit ${r.limit}`
      case "TransportError":
        return `transport error: ${r.reason}`
    }
  }
}

/**
 * The server could not listen (address in use, permission denied, ...).
 *
 * @since 0.1.0
 * @category errors
 */
export class ServerError extends Data.TaggedError("ServerError")<{
  readonly reason: "ListenFailed"
  readonly cause: unknown
}> {
  override get message(): string {
    return `websock server failed to listen: ${String(this.cause)}`
  }
}
