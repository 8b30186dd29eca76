/**
 * Why we close a connection: the one vocabulary of every close websock
 * decides, each reason with the close code it goes out with and a short human
 * message (the Close frame's reason). Faults are created where they are found
 * (`Frame` for framing, `Connection` for fragmentation and UTF-8,
 * `PerMessageDeflate` for compressed data), carried as values, and written to
 * the wire in one place (`Connection`'s Close frame); the final
 * `CloseOutcome.detail` holds the same value.
 *
 * Like wsproto's `ParseFailed` and ws's `WS_ERR_*` codes: a reason is data,
 * never an exception, and never carries payload bytes.
 *
 * @since 0.2.0
 */

/**
 * The tags, with the code each one is sent with.
 *
 * - `Normal` (1000): the handler returned, or the application closed normally.
 * - `Application` (any code an endpoint may send, chosen by the application).
 * - `GoingAway` (1001): idle timeout, maximum lifetime, shutdown, the handler
 *   was interrupted.
 * - `ProtocolError` (1002): a framing or fragmentation rule was broken.
 * - `InvalidPayload` (1007): text that is not UTF-8, or compressed data that
 *   does not inflate.
 * - `PolicyViolation` (1008): the outbound buffer overflowed under the
 *   `"close"` policy.
 * - `MessageTooBig` (1009): a message above `maxMessageSize` (also after
 *   inflating).
 * - `InternalError` (1011): the handler failed, or compression failed on our
 *   side.
 *
 * @since 0.2.0
 * @category models
 */
export type CloseReason =
  | Normal
  | Application
  | GoingAway
  | ProtocolError
  | InvalidPayload
  | PolicyViolation
  | MessageTooBig
  | InternalError

/**
 * @since 0.2.0
 * @category models
 */
export interface Normal {
  readonly _tag: "Normal"
  readonly code: 1000
  readonly reason: string
}

/**
 * @since 0.2.0
 * @category models
 */
export interface Application {
  readonly _tag: "Application"
  readonly code: number
  readonly reason: string
}

/**
 * @since 0.2.0
 * @category models
 */
export interface GoingAway {
  readonly _tag: "GoingAway"
  readonly code: 1001
  readonly reason: "idle timeout" | "maximum lifetime reached" | "server shutting down" | "handler interrupted"
}

/**
 * @since 0.2.0
 * @category models
 */
export interface ProtocolError {
  readonly _tag: "ProtocolError"
  readonly code: 1002
  readonly reason: string
}

/**
 * @since 0.2.0
 * @category models
 */
export interface InvalidPayload {
  readonly _tag: "InvalidPayload"
  readonly code: 1007
  readonly reason: string
}

/**
 * @since 0.2.0
 * @category models
 */
export interface PolicyViolation {
  readonly _tag: "PolicyViolation"
  readonly code: 1008
  readonly reason: string
}

/**
 * @since 0.2.0
 * @category models
 */
export interface MessageTooBig {
  readonly _tag: "MessageTooBig"
  readonly code: 1009
  readonly reason: string
}

/**
 * @since 0.2.0
 * @category models
 */
export interface InternalError {
  readonly _tag: "InternalError"
  readonly code: 1011
  readonly reason: string
}

/**
 * @since 0.2.0
 * @category constructors
 */
export const normal = (reason = ""): Normal => ({ _tag: "Normal", code: 1000, reason })

/**
 * A close the application asked for, with a code it may send (check it with
 * `isSendable`).
 *
 * @since 0.2.0
 * @category constructors
 */
export const application = (code: number, reason: string): Normal | Application =>
  code === 1000 ? normal(reason) : { _tag: "Application", code, reason }

/**
 * @since 0.2.0
 * @category constructors
 */
export const goingAway = (reason: GoingAway["reason"]): GoingAway => ({ _tag: "GoingAway", code: 1001, reason })

/**
 * @since 0.2.0
 * @category constructors
 */
export const protocolError = (reason: string): ProtocolError => ({ _tag: "ProtocolError", code: 1002, reason })

/**
 * @since 0.2.0
 * @category constructors
 */
export const invalidPayload = (reason: string): InvalidPayload => ({ _tag: "InvalidPayload", code: 1007, reason })

/**
 * @since 0.2.0
 * @category constructors
 */
export const policyViolation = (reason: string): PolicyViolation => ({ _tag: "PolicyViolation", code: 1008, reason })

/**
 * @since 0.2.0
 * @category constructors
 */
export const messageTooBig = (reason: string): MessageTooBig => ({ _tag: "MessageTooBig", code: 1009, reason })

/**
 * @since 0.2.0
 * @category constructors
 */
export const internalError = (reason: string): InternalError => ({ _tag: "InternalError", code: 1011, reason })

/**
 * Whether a reason is the peer's fault (a violation of the protocol or of our
 * limits), as opposed to a decision of ours.
 *
 * @since 0.2.0
 * @category predicates
 */
export const isViolation = (reason: CloseReason): boolean =>
  reason._tag === "ProtocolError" || reason._tag === "InvalidPayload" || reason._tag === "MessageTooBig"

/**
 * Whether an endpoint may send `code` in a Close frame (RFC 6455 §7.4.1,
 * §7.4.2 and the IANA registry): 1000-1003, 1007-1014 and 3000-4999. 1004 is
 * reserved, 1005/1006/1015 are for reporting only, 1016-2999 are reserved for
 * future RFCs.
 *
 * @since 0.2.0
 * @category predicates
 */
export const isSendable = (code: number): boolean =>
  Number.isInteger(code) &&
  ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999))

/**
 * The largest Close reason, in UTF-8 bytes: a control frame carries at most
 * 125 bytes (RFC 6455 §5.5), two of them the code.
 *
 * @since 0.2.0
 * @category constants
 */
export const maxReasonBytes = 123
