/**
 * The rules of RFC 6455 for one connection, as a pure state machine: the only
 * place that decides anything the RFC rules on.
 *
 * `step(state, input) -> { state, actions }`: bytes, end of stream, inflated
 * messages, the application's closes and pings, the handler catching up and
 * the close timer come in; writes, delivered messages, timer and transport
 * commands and the final outcome go out. No clock, no I/O, no randomness,
 * never throws. Sending a data message takes the allocation-free path
 * `sendHeader` (what to put in the frame's first byte, or a refusal).
 *
 * This module owns fragmentation and reassembly (§5.4), incremental fail-fast
 * UTF-8 validation of text across fragments and across the reads of one frame
 * (§8.1), and of inflated text (RFC 7692), automatic Pong (§5.5.2), keepalive
 * Pings, the closing handshake from both sides (§5.5.1, §7) including the
 * delay of our Close until the handler has taken what arrived before it, the
 * message size limit, and the mapping of every failure to one Close frame
 * with its code (the codes themselves are `CloseReason`'s). Frame syntax is
 * `Frame`'s; moving a message's bytes into one piece and decoding its text,
 * once this module has ruled on them, are `internal/incoming.ts`'s.
 *
 * Single use: a `Bytes` chunk belongs to the machine once stepped (the decoder
 * unmasks it in place and delivered messages may be views into it), and a
 * state must be stepped at most once: the buffers of a message in progress
 * are filled in place, so stepping an older state again would see (and
 * overwrite) bytes that belong to its successor. Keep only the latest state.
 *
 * @since 0.1.0
 */
import { Buffer, isUtf8 } from "node:buffer"
import * as CloseReason from "./CloseReason.ts"
import * as Frame from "./Frame.ts"
import * as Incoming from "./internal/incoming.ts"
import * as Utf8 from "./Utf8.ts"

/**
 * @since 0.1.0
 * @category options
 */
export interface Options {
  /** Largest message, in bytes across all its fragments (1009 beyond). Also the decoder's `maxPayload`. */
  readonly maxMessageSize: number
  /** permessage-deflate was negotiated: RSV1 on the first frame of a data message marks it compressed. */
  readonly compression: boolean
  /**
   * Our side of the connection (default "server"): it decides which frames
   * the peer must mask (RFC 6455 §5.1: a server's frames arrive unmasked, a
   * client's masked). Masking what we send is the I/O layer's (a fresh key
   * per frame needs randomness, which this machine has none of).
   */
  readonly role?: "server" | "client" | undefined
}

// ---------------------------------------------------------------------------
// The outcome
// ---------------------------------------------------------------------------

/**
 * How a connection ended; the same value in the `Closed` state, the `Closed`
 * action and the handle's `closed`:
 *
 * - the peer closed, or answered our Close: its code and reason (1005 when its
 *   Close had none, §7.1.5), clean;
 * - a violation, or a failure on our side: the code and reason we closed
 *   with, unclean, local;
 * - the transport ended, or the close timer fired, without the peer's Close:
 *   1006, unclean.
 *
 * @since 0.1.0
 * @category models
 */
export interface CloseOutcome {
  /** The close code (1006 when no Close frame was received). */
  readonly code: number
  readonly reason: string
  /** True when the closing handshake completed both ways. */
  readonly clean: boolean
  /** Who sent the first Close frame (or dropped the connection). */
  readonly initiator: "local" | "remote"
  /** When we closed (or failed) the connection: why, with the code we sent. */
  readonly detail: CloseReason.CloseReason | undefined
}

// ---------------------------------------------------------------------------
// States
// ---------------------------------------------------------------------------

type DataOpcode = typeof Frame.Opcode.Text | typeof Frame.Opcode.Binary

/**
 * The pieces of the message being reassembled, newest first: views of large
 * fragments, and buffers into which runs of small fragments were copied. The
 * message is concatenated once, when its last frame arrives, so reassembly is
 * linear in its size whatever the number of fragments, and memory stays
 * proportional to the bytes (a view per 1-byte fragment would cost ~100x).
 *
 * @since 0.1.0
 * @category states
 */
export interface Fragments {
  readonly bytes: Uint8Array
  readonly previous: Fragments | undefined
}

/**
 * A fragmented message being reassembled (§5.4): it exists from its first
 * frame (FIN clear) to its last, and only then. Filled in place by the step
 * that receives its fragments (see the module's note on single use).
 *
 * @since 0.2.0
 * @category states
 */
export interface Reassembly {
  readonly opcode: DataOpcode
  /** Its first frame had RSV1 (permessage-deflate): no UTF-8 check until inflated. */
  readonly compressed: boolean
  /** Its pieces so far, newest first (not counting `tail`). */
  fragments: Fragments | undefined
  /** Where small fragments are being copied (`tail[0..tailUsed)` follows `fragments`). */
  tail: Uint8Array | undefined
  tailUsed: number
  /** Bytes of the message so far, in `fragments` and `tail`. */
  size: number
}

/**
 * Both directions open.
 *
 * @since 0.1.0
 * @category states
 */
export interface Open {
  readonly _tag: "Open"
  readonly options: Options
  readonly decoder: Frame.DecoderState
  /** The fragmented message being reassembled, if any. */
  readonly message: Reassembly | undefined
  /** UTF-8 DFA state after every validated byte of the text in progress (ACCEPT when none). */
  readonly utf8: number
  /** Bytes of the frame in progress (Frame.partial) already validated into `utf8`. */
  readonly validated: number
}

/**
 * The peer closed, or broke the protocol, and our Close waits until the
 * handler has taken the messages that arrived before (`HandlerIdle`): RFC 6455
 * §5.5.1 lets an endpoint delay its Close until its current message is sent,
 * so the handler's answers to those messages still go out. Nothing more is
 * read; messages still being inflated are delivered.
 *
 * @since 0.2.0
 * @category states
 */
export interface Draining {
  readonly _tag: "Draining"
  readonly options: Options
  /** The Close we will send (the echo of the peer's code, or our violation's). */
  readonly reply: { readonly code: number; readonly reason: string }
  /** The outcome once our Close is out. */
  readonly outcome: CloseOutcome
}

/**
 * We sent a Close and wait for the peer's (the close timer is armed). Nothing
 * more is written; incoming data is discarded.
 *
 * @since 0.1.0
 * @category states
 */
export interface Closing {
  readonly _tag: "Closing"
  readonly decoder: Frame.DecoderState
  /** Why we closed; its code and reason are the ones we sent. */
  readonly detail: CloseReason.CloseReason
}

/**
 * The end (the outcome is also emitted once as the `Closed` action).
 *
 * @since 0.1.0
 * @category states
 */
export interface Closed {
  readonly _tag: "Closed"
  readonly outcome: CloseOutcome
}

/**
 * @since 0.1.0
 * @category states
 */
export type State = Open | Draining | Closing | Closed

/**
 * @since 0.1.0
 * @category constructors
 */
export const initial = (options: Options): State => ({
  _tag: "Open",
  options,
  decoder: Frame.initialDecoder({ role: options.role ?? "server", maxPayload: options.maxMessageSize, allowRsv1: options.compression }),
  message: undefined,
  utf8: Utf8.ACCEPT,
  validated: 0
})

// ---------------------------------------------------------------------------
// Inputs and actions
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export type Input =
  /** Bytes received; the chunk's ownership passes to the machine. */
  | { readonly _tag: "Bytes"; readonly chunk: Uint8Array }
  /** The peer closed TCP, or reading failed. */
  | { readonly _tag: "EndOfStream" }
  /** A compressed message (from `DeliverCompressed`), inflated within the size limit: validated here. */
  | { readonly _tag: "Inflated"; readonly text: boolean; readonly data: Uint8Array }
  /** A compressed message did not inflate (1007) or inflated past the size limit (1009). */
  | { readonly _tag: "InflateFailed"; readonly reason: CloseReason.InvalidPayload | CloseReason.MessageTooBig }
  /** We close, for this reason: send Close, arm the timer, wait for the peer's Close. */
  | { readonly _tag: "Close"; readonly reason: CloseReason.CloseReason }
  /** A fault on our side (e.g. compressing failed): send Close, close the transport, without waiting for anything. */
  | { readonly _tag: "Fail"; readonly reason: CloseReason.CloseReason }
  /** Send a Ping (keepalive, or the application's); its payload is at most 125 bytes. */
  | { readonly _tag: "Ping"; readonly payload: Uint8Array }
  /** The handler has taken every message delivered (or will take no more): a delayed Close may go out. */
  | { readonly _tag: "HandlerIdle" }
  /** The close timer fired. */
  | { readonly _tag: "CloseTimeout" }
  /** We drop the transport without a closing handshake (terminate, or a shutdown past its timeout). */
  | { readonly _tag: "Abort" }

/**
 * @since 0.1.0
 * @category models
 */
export type Action =
  /** Write these chunks, in order (a frame's header and payload are separate chunks). */
  | { readonly _tag: "Write"; readonly chunks: ReadonlyArray<Uint8Array> }
  /** A complete message: text as a string, binary as bytes; `size` is its payload's length in bytes (for text, before decoding). */
  | { readonly _tag: "Deliver"; readonly data: string | Uint8Array; readonly size: number }
  /** A complete message whose first frame had RSV1: inflate it, then step `Inflated` (or `Fail`), in order. */
  | { readonly _tag: "DeliverCompressed"; readonly text: boolean; readonly data: Uint8Array }
  /** A Pong arrived (the answer to a Ping of ours, or unsolicited). */
  | { readonly _tag: "Pong"; readonly payload: Uint8Array }
  /** Our Close waits: step `HandlerIdle` once the handler has caught up (or a grace period passed). */
  | { readonly _tag: "AwaitHandler" }
  | { readonly _tag: "ArmCloseTimer" }
  | { readonly _tag: "CancelCloseTimer" }
  /** End the TCP connection (after flushing the writes before it). */
  | { readonly _tag: "CloseTransport" }
  /** The final outcome, emitted exactly once. */
  | Closed

/**
 * @since 0.1.0
 * @category models
 */
export interface StepResult {
  readonly state: State
  readonly actions: ReadonlyArray<Action>
}

const NO_ACTIONS: ReadonlyArray<Action> = Object.freeze([])
const AWAIT_HANDLER: Action = { _tag: "AwaitHandler" }
const ARM_CLOSE_TIMER: Action = { _tag: "ArmCloseTimer" }
const CANCEL_CLOSE_TIMER: Action = { _tag: "CancelCloseTimer" }
const CLOSE_TRANSPORT: Action = { _tag: "CloseTransport" }

// ---------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------

/**
 * Whether the application may send a data message in this state: while open,
 * and while our Close waits for the handler (its answers to the last messages
 * go out first); never after our Close (RFC 6455 §5.5.1).
 *
 * @since 0.1.0
 * @category sending
 */
export const canSend = (state: State): boolean => state._tag === "Open" || state._tag === "Draining"

/**
 * The first header byte of an unfragmented data message the application sends
 * (FIN, RSV1 when compressed, the opcode), or -1 when the state refuses it
 * (see `canSend`; RSV1 only where permessage-deflate was negotiated, RFC 7692
 * §6). The I/O layer encodes the frame with it: this is the whole of sending,
 * with no allocation per message.
 *
 * @since 0.2.0
 * @category sending
 */
export const sendHeader = (state: State, text: boolean, compressed: boolean): number => {
  if (state._tag !== "Open" && state._tag !== "Draining") return -1
  if (compressed && !state.options.compression) return -1
  return 0x80 | (compressed ? 0x40 : 0) | (text ? Frame.Opcode.Text : Frame.Opcode.Binary)
}

// ---------------------------------------------------------------------------
// step
// ---------------------------------------------------------------------------

/**
 * Feeds one input; returns the next state and what to do, in order.
 *
 * @since 0.1.0
 * @category transitions
 */
export const step = (state: State, input: Input): StepResult => {
  switch (state._tag) {
    case "Open":
      return stepOpen(state, input)
    case "Draining":
      return stepDraining(state, input)
    case "Closing":
      return stepClosing(state, input)
    case "Closed":
      // The outcome was emitted; nothing else happens.
      return { state, actions: NO_ACTIONS }
    default:
      return absurd(state)
  }
}

const stepOpen = (open: Open, input: Input): StepResult => {
  switch (input._tag) {
    case "Bytes":
      return receive(open, input.chunk)
    case "Inflated": {
      const actions: Array<Action> = []
      const failed = inflated(actions, input.text, input.data)
      return { state: failed === undefined ? open : drain(open.options, actions, failed), actions }
    }
    case "InflateFailed": {
      const actions: Array<Action> = []
      return { state: drain(open.options, actions, input.reason), actions }
    }
    case "Close": {
      // §5.5.1, §7.1.2: send Close, then wait for the peer's Close (the timer bounds the wait).
      const closing: Closing = { _tag: "Closing", decoder: open.decoder, detail: input.reason }
      return { state: closing, actions: [writeClose(input.reason.code, input.reason.reason), ARM_CLOSE_TIMER] }
    }
    case "Fail": {
      const actions: Array<Action> = []
      return { state: fail(actions, input.reason), actions }
    }
    case "Ping":
      return { state: open, actions: [{ _tag: "Write", chunks: Frame.encode(Frame.Opcode.Ping, input.payload) }] }
    case "EndOfStream": {
      // §7.1.5: no Close frame received -> 1006.
      const closed = closedState(Frame.CloseCode.Abnormal, "", false, "remote", undefined)
      return { state: closed, actions: [CLOSE_TRANSPORT, closed] }
    }
    case "Abort":
      return abort(undefined)
    case "HandlerIdle":
    case "CloseTimeout":
      // Nothing waits for them while open.
      return { state: open, actions: NO_ACTIONS }
    default:
      return absurd(input)
  }
}

const stepDraining = (draining: Draining, input: Input): StepResult => {
  switch (input._tag) {
    case "Inflated": {
      // Received before the peer's Close (or the violation): still delivered.
      const actions: Array<Action> = []
      const failed = inflated(actions, input.text, input.data)
      if (failed === undefined) return { state: draining, actions }
      // Our Close has not gone out yet: it becomes this failure's.
      return { state: drain(draining.options, actions, failed), actions }
    }
    case "InflateFailed": {
      const actions: Array<Action> = []
      return { state: drain(draining.options, actions, input.reason), actions }
    }
    case "HandlerIdle":
    case "Close":
    case "Fail":
    case "CloseTimeout":
      // The handler caught up, or we stop waiting for it: our Close goes out
      // now, as decided when the peer closed (or broke the protocol).
      return release(draining, true)
    case "EndOfStream":
      // The transport is gone: nothing can be written any more.
      return release(draining, false)
    case "Abort":
      return abort(undefined)
    case "Bytes":
    case "Ping":
      // Bytes past the peer's Close (or a violation) are ignored; so are Pings.
      return { state: draining, actions: NO_ACTIONS }
    default:
      return absurd(input)
  }
}

const stepClosing = (closing: Closing, input: Input): StepResult => {
  switch (input._tag) {
    case "Bytes":
      return receiveClosing(closing, input.chunk)
    case "Close":
    case "Ping":
    case "Inflated":
    case "InflateFailed":
    case "HandlerIdle":
      // After our Close nothing more is written (§5.5.1) or delivered (§7.1.7).
      return { state: closing, actions: NO_ACTIONS }
    case "Fail":
      return finish(input.reason.code, input.reason.reason, false, input.reason)
    case "EndOfStream":
      return finish(Frame.CloseCode.Abnormal, "", false, closing.detail)
    case "Abort":
      return abort(closing.detail)
    case "CloseTimeout": {
      // §7.1.1: the peer never answered; give up on the handshake.
      const closed = closedState(Frame.CloseCode.Abnormal, "closing handshake timed out", false, "local", closing.detail)
      return { state: closed, actions: [CLOSE_TRANSPORT, closed] }
    }
    default:
      return absurd(input)
  }
}

const absurd = (value: never): never => {
  throw new Error(`unreachable: ${String(value)}`)
}

// ---------------------------------------------------------------------------
// Closing helpers
// ---------------------------------------------------------------------------

const closedState = (
  code: number,
  reason: string,
  clean: boolean,
  initiator: "local" | "remote",
  detail: CloseReason.CloseReason | undefined
): Closed => ({ _tag: "Closed", outcome: { code, reason, clean, initiator, detail } })

/**
 * The Close frame we send: the one place a close code goes on the wire. A
 * code that may not appear in a Close frame (1005, 1006, 1015, out of range:
 * §7.4.1) is sent as an empty Close (it cannot come from `CloseReason`'s
 * constructors, nor through the handle, which refuses it). `Frame.encodeClose`
 * cuts a long reason at a character boundary to fit the 125-byte control
 * frame limit (§5.5).
 */
const writeClose = (code: number, reason: string): Action => ({
  _tag: "Write",
  chunks: Frame.encode(Frame.Opcode.Close, CloseReason.isSendable(code) ? Frame.encodeClose(code, reason) : EMPTY)
})

const EMPTY = new Uint8Array(0)

/** A violation (or Fail) while open, with nothing to wait for: exactly one Close with its code, then close the transport. */
const fail = (actions: Array<Action>, reason: CloseReason.CloseReason): Closed => {
  const closed = closedState(reason.code, reason.reason, false, "local", reason)
  actions.push(writeClose(reason.code, reason.reason), CLOSE_TRANSPORT, closed)
  return closed
}

/**
 * A violation found in received data: its Close waits until the handler has
 * taken the messages that arrived before it (those still inflating included).
 */
const drain = (options: Options, actions: Array<Action>, reason: CloseReason.CloseReason): Draining => {
  actions.push(AWAIT_HANDLER)
  return {
    _tag: "Draining",
    options,
    reply: { code: reason.code, reason: reason.reason },
    outcome: { code: reason.code, reason: reason.reason, clean: false, initiator: "local", detail: reason }
  }
}

/** Our delayed Close goes out (when the transport can still carry it), then the transport ends. */
const release = (draining: Draining, write: boolean): StepResult => {
  const closed: Closed = { _tag: "Closed", outcome: draining.outcome }
  const actions: Array<Action> = write
    ? [writeClose(draining.reply.code, draining.reply.reason), CLOSE_TRANSPORT, closed]
    : [CLOSE_TRANSPORT, closed]
  return { state: closed, actions }
}

/** We drop the transport: 1006, unclean, ours. */
const abort = (detail: CloseReason.CloseReason | undefined): StepResult => {
  const closed = closedState(Frame.CloseCode.Abnormal, "", false, "local", detail)
  return { state: closed, actions: [CANCEL_CLOSE_TIMER, CLOSE_TRANSPORT, closed] }
}

/** Ends a Closing state (its timer armed) without writing anything. */
const finish = (code: number, reason: string, clean: boolean, detail: CloseReason.CloseReason): StepResult => {
  const closed = closedState(code, reason, clean, "local", detail)
  return { state: closed, actions: [CANCEL_CLOSE_TIMER, CLOSE_TRANSPORT, closed] }
}

/** An inflated message: delivered, after UTF-8 validation for text (§8.1). Returns the failure, if any. */
const inflated = (actions: Array<Action>, text: boolean, data: Uint8Array): CloseReason.CloseReason | undefined => {
  if (!text) {
    actions.push({ _tag: "Deliver", data, size: data.length })
    return undefined
  }
  if (!isUtf8(data)) return INVALID_UTF8
  actions.push({ _tag: "Deliver", data: Buffer.from(data.buffer, data.byteOffset, data.length).toString("utf8"), size: data.length })
  return undefined
}

// ---------------------------------------------------------------------------
// Receiving while open
// ---------------------------------------------------------------------------

/**
 * The Open fields one `Bytes` step updates, and what the text decoding of
 * the step shares (`Incoming.TextBatch`), mutable for the duration of the
 * step only.
 */
interface Progress extends Incoming.TextBatch {
  readonly options: Options
  message: Reassembly | undefined
  utf8: number
  validated: number
  readonly max: number
  readonly actions: Array<Action>
}

const receive = (open: Open, chunk: Uint8Array): StepResult => {
  const result = Frame.decode(open.decoder, chunk)
  const frames = result.frames
  const progress: Progress = {
    options: open.options,
    message: open.message,
    utf8: open.utf8,
    validated: open.validated,
    max: open.options.maxMessageSize,
    actions: [],
    frames,
    index: 0,
    latin1: "",
    latin1Source: undefined,
    latin1Start: 0
  }
  const actions = progress.actions
  const options = open.options
  for (let i = 0; i < frames.length; i++) {
    const frame = frames[i]
    progress.index = i
    const ended = frame.opcode >= Frame.Opcode.Close ? control(progress, frame, options) : data(progress, frame)
    // A Close (theirs) or a violation ends the step: bytes after it are ignored.
    if (ended !== undefined) return { state: ended, actions }
  }
  if (result._tag === "Violation") return { state: drain(options, actions, result.failure), actions }
  const failure = inProgress(progress, result.state)
  if (failure !== undefined) return { state: drain(options, actions, failure), actions }
  const next: Open = {
    _tag: "Open",
    options,
    decoder: result.state,
    message: progress.message,
    utf8: progress.utf8,
    validated: progress.validated
  }
  return { state: next, actions: actions.length === 0 ? NO_ACTIONS : actions }
}

/** Ping, Pong, Close while open. Returns the next state when the connection starts to close. */
const control = (progress: Progress, frame: Frame.Frame, options: Options): Draining | undefined => {
  switch (frame.opcode) {
    case Frame.Opcode.Ping:
      // §5.5.2: answer with a Pong carrying the same payload.
      progress.actions.push({ _tag: "Write", chunks: Frame.encode(Frame.Opcode.Pong, frame.payload) })
      return undefined
    case Frame.Opcode.Pong:
      // §5.5.3: a Pong needs no answer; it may answer a Ping of ours.
      progress.actions.push({ _tag: "Pong", payload: frame.payload })
      return undefined
    default: {
      const close = Frame.parseClose(frame.payload)
      switch (close._tag) {
        case "Invalid":
          return drain(options, progress.actions, close.failure)
        case "Empty":
        case "Code": {
          // §5.5.1: echo the code (1000 for an empty Close) once the handler
          // has caught up; then the server closes TCP first (§7.1.1).
          // §7.1.5: no code received -> 1005.
          const code = close._tag === "Code" ? close.code : Frame.CloseCode.NoStatusReceived
          const reason = close._tag === "Code" ? close.reason : ""
          progress.actions.push(AWAIT_HANDLER)
          return {
            _tag: "Draining",
            options,
            reply: { code: close._tag === "Code" ? close.code : Frame.CloseCode.Normal, reason: "" },
            outcome: { code, reason, clean: true, initiator: "remote", detail: undefined }
          }
        }
        default:
          return absurd(close)
      }
    }
  }
}

/** A complete Text, Binary or Continuation frame. Returns the next state on a violation. */
const data = (progress: Progress, frame: Frame.Frame): Draining | undefined => {
  const payload = frame.payload
  // Bytes of this frame validated while it was the frame in progress: it is
  // the first frame to complete after that read, so reset for the next one.
  const pending = progress.validated
  progress.validated = 0
  let message = progress.message // the fragmented message this frame belongs to
  if (frame.opcode === Frame.Opcode.Continuation) {
    // §5.4: a continuation needs a fragmented message to continue.
    if (message === undefined) return violation(progress, NO_MESSAGE)
  } else {
    // §5.4: no new data message before the fragmented one ends.
    if (message !== undefined) return violation(progress, INTERLEAVED)
    if (frame.fin) return whole(progress, frame, pending)
    message = progress.message = {
      opcode: frame.opcode === Frame.Opcode.Text ? Frame.Opcode.Text : Frame.Opcode.Binary,
      compressed: frame.rsv1,
      fragments: undefined,
      tail: undefined,
      tailUsed: 0,
      size: 0
    }
  }
  const size = message.size + payload.length
  if (size > progress.max) return violation(progress, TOO_BIG)
  if (message.opcode === Frame.Opcode.Text && !message.compressed) {
    // §8.1: validate the bytes not yet seen, failing as soon as they cannot be UTF-8.
    const utf8 = Utf8.validate(progress.utf8, payload, pending, payload.length)
    if (utf8 === Utf8.REJECT || (frame.fin && utf8 !== Utf8.ACCEPT)) return violation(progress, INVALID_UTF8)
    progress.utf8 = utf8
  }
  if (!frame.fin) {
    Incoming.append(message, payload)
    message.size = size
    return undefined
  }
  const bytes = Incoming.complete(message, payload, size)
  const text = message.opcode === Frame.Opcode.Text
  if (message.compressed) progress.actions.push({ _tag: "DeliverCompressed", text, data: bytes })
  else progress.actions.push({ _tag: "Deliver", data: text ? Incoming.decodeText(bytes) : bytes, size: bytes.length })
  progress.message = undefined
  // `utf8` is ACCEPT again: a text message is only delivered in ACCEPT.
  return undefined
}

/**
 * An unfragmented message. Its size was checked by the decoder (maxPayload =
 * maxMessageSize); `pending` of its text bytes were validated while it
 * arrived over several reads.
 */
const whole = (progress: Progress, frame: Frame.Frame, pending: number): Draining | undefined => {
  const payload = frame.payload
  if (frame.rsv1) {
    progress.actions.push({ _tag: "DeliverCompressed", text: frame.opcode === Frame.Opcode.Text, data: payload })
  } else if (frame.opcode === Frame.Opcode.Binary) {
    progress.actions.push({ _tag: "Deliver", data: payload, size: payload.length })
  } else if (pending > 0) {
    // The rest of a text frame validated as it came (inProgress).
    if (Utf8.validate(progress.utf8, payload, pending, payload.length) !== Utf8.ACCEPT) return violation(progress, INVALID_UTF8)
    progress.utf8 = Utf8.ACCEPT
    progress.actions.push({ _tag: "Deliver", data: Incoming.decodeText(payload), size: payload.length })
  } else if (payload.length <= Incoming.SHORT_TEXT && Utf8.isAscii(payload, 0, payload.length)) {
    // Fast path: short ASCII text in one read.
    progress.actions.push({ _tag: "Deliver", data: Incoming.shortText(progress, payload), size: payload.length })
  } else if (Utf8.isValid(payload)) {
    progress.actions.push({ _tag: "Deliver", data: Incoming.decodeText(payload), size: payload.length })
  } else {
    return violation(progress, INVALID_UTF8)
  }
  return undefined
}

/** A violation in received data: our Close with its code, once the handler has caught up. */
const violation = (progress: Progress, reason: CloseReason.CloseReason): Draining => {
  // The message in progress is abandoned: its pieces are not needed any more.
  progress.message = undefined
  return drain(progress.options, progress.actions, reason)
}

/**
 * The frame whose header arrived but not all its payload: check what can be
 * checked now, so a violation shows up at the read that carries it. Its
 * fragmentation and size are known from the header (an oversize message is
 * refused before its payload is buffered); its text is validated as it comes,
 * each byte once (Autobahn 6.4.x). Returns the violation, if any.
 */
const inProgress = (progress: Progress, decoder: Frame.DecoderState): CloseReason.CloseReason | undefined => {
  const frame = Frame.partial(decoder)
  if (frame === undefined || frame.opcode >= Frame.Opcode.Close) return undefined
  const message = progress.message
  let text: boolean // validate this frame's bytes as UTF-8
  if (frame.opcode === Frame.Opcode.Continuation) {
    if (message === undefined) return NO_MESSAGE
    text = message.opcode === Frame.Opcode.Text && !message.compressed
  } else {
    if (message !== undefined) return INTERLEAVED
    text = frame.opcode === Frame.Opcode.Text && !frame.rsv1
  }
  if ((message?.size ?? 0) + frame.length > progress.max) return TOO_BIG
  const received = frame.received
  if (text && received.length > progress.validated) {
    // A new message starts from ACCEPT: `utf8` is ACCEPT whenever none is open.
    const utf8 = Utf8.validate(progress.utf8, received, progress.validated, received.length)
    if (utf8 === Utf8.REJECT) return INVALID_UTF8
    progress.utf8 = utf8
    progress.validated = received.length
  }
  return undefined
}

const NO_MESSAGE = CloseReason.protocolError("continuation frame without a message to continue")
const INTERLEAVED = CloseReason.protocolError("new data frame before the fragmented message ended")
const TOO_BIG = CloseReason.messageTooBig("message too big")
const INVALID_UTF8 = CloseReason.invalidPayload("invalid UTF-8 in text")

// ---------------------------------------------------------------------------
// Receiving while closing
// ---------------------------------------------------------------------------

/** Waiting for the peer's Close: everything else is discarded, nothing is written. */
const receiveClosing = (closing: Closing, chunk: Uint8Array): StepResult => {
  const result = Frame.decode(closing.decoder, chunk)
  const frames = result.frames
  for (let i = 0; i < frames.length; i++) {
    const frame = frames[i]
    if (frame.opcode !== Frame.Opcode.Close) continue
    const close = Frame.parseClose(frame.payload)
    switch (close._tag) {
      case "Invalid":
        return finish(close.failure.code, close.failure.reason, false, closing.detail)
      case "Empty":
        return finish(Frame.CloseCode.NoStatusReceived, "", true, closing.detail)
      case "Code":
        // §7.1.5: the close code is the one in the first Close received.
        return finish(close.code, close.reason, true, closing.detail)
      default:
        return absurd(close)
    }
  }
  if (result._tag === "Violation") return finish(result.failure.code, result.failure.reason, false, closing.detail)
  return { state: { ...closing, decoder: result.state }, actions: NO_ACTIONS }
}
