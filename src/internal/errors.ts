/**
 * The errors one connection fails its callers with, built from what the
 * connection knows: its id, its outcome once it has one, its limits. Pure
 * functions; the error classes themselves are `Errors`'s.
 *
 * @internal
 */
import { Buffer } from "node:buffer"
import * as CloseReason from "../CloseReason.ts"
import { BufferOverflow, ConnectionClosed, InvalidClose, ProtocolViolation, WebSocketError } from "../Errors.ts"
import * as Frame from "../Frame.ts"
import type * as WebSocket from "../WebSocket.ts"

/**
 * An operation that needs an open connection, on one that is closing or
 * closed: the outcome's code and reason once known, 1005 and "closing" while
 * the closing handshake is under way.
 */
export const closedError = (connection: number, outcome: WebSocket.CloseOutcome | undefined): WebSocketError =>
  new WebSocketError({
    reason: new ConnectionClosed({
      connection,
      code: outcome?.code ?? Frame.CloseCode.NoStatusReceived,
      reason: outcome?.reason ?? "closing"
    })
  })

/** What `receive` fails with at the end: the violation that ended the connection, or its close. */
export const receiveError = (connection: number, outcome: WebSocket.CloseOutcome | undefined): WebSocketError => {
  const detail = outcome?.detail
  if (detail !== undefined && CloseReason.isViolation(detail)) {
    return new WebSocketError({ reason: new ProtocolViolation({ connection, code: detail.code, reason: detail.reason }) })
  }
  return closedError(connection, outcome)
}

/** A send under the "close" policy found `buffered` bytes waiting, more than `limit`. */
export const overflowError = (connection: number, buffered: number, limit: number): WebSocketError =>
  new WebSocketError({ reason: new BufferOverflow({ connection, bufferedAmount: buffered, limit }) })

/**
 * The error of a `close(code, reason)` whose code may not be sent in a Close
 * frame, or whose reason does not fit in one (RFC 6455 §5.5, §7.4); undefined
 * when both may be sent.
 */
export const invalidClose = (connection: number, code: number, reason: string): WebSocketError | undefined => {
  if (!CloseReason.isSendable(code)) {
    return invalidCloseError(connection, code, `${code} may not be sent in a Close frame (1000-1003, 1007-1014, 3000-4999)`)
  }
  const bytes = Buffer.byteLength(reason, "utf8")
  if (bytes > CloseReason.maxReasonBytes) {
    return invalidCloseError(connection, code, `the reason is ${bytes} UTF-8 bytes, more than ${CloseReason.maxReasonBytes}`)
  }
  return undefined
}

const invalidCloseError = (connection: number, code: number, problem: string): WebSocketError =>
  new WebSocketError({ reason: new InvalidClose({ connection, code, problem }) })

/** Whether an error is this connection's own ConnectionClosed: its normal end, not a failure to log. */
export const isOwnClose = (connection: number, error: unknown): boolean =>
  error instanceof WebSocketError && error.reason._tag === "ConnectionClosed" && error.reason.connection === connection
