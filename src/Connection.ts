/**
 * The rules of RFC 6455 for one connection, as a pure state machine.
 *
 * `step(state, input) -> { state, actions }`: bytes, end of stream, the
 * application's sends and closes and the close timer come in; writes,
 * delivered messages, timer and transport commands and the final outcome go
 * out. No clock, no I/O, no randomness, never throws.
 *
 * This module owns fragmentation and reassembly (§5.4), incremental fail-fast
 * UTF-8 validation of text across fragments and across the reads of one frame
 * (§8.1), automatic Pong (§5.5.2), the closing handshake from both sides
 * (§5.5.1, §7), the message size limit, and the mapping of every failure to
 * one Close frame with its code. Frame syntax is `Frame`'s.
 *
 * Ownership: a `Bytes` chunk belongs to the machine once stepped (the decoder
 * unmasks it in place and delivered messages may be views into it). A state
 * is meant to be stepped once, like `Frame`'s decoder state inside it: the
 * buffers of a message in progress are filled in place.
 *
 * @since 0.1.0
 */
import { Buffer } from "node:buffer"
import * as Frame from "./Frame.ts"
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
 * Both directions open.
 *
 * @since 0.1.0
 * @category states
 */
export interface Open {
  readonly _tag: "Open"
  readonly options: Options
  readonly decoder: Frame.DecoderState
  /** Opcode of the fragmented message being reassembled; undefined when none is open. */
  readonly message: DataOpcode | undefined
  /** The message's first frame had RSV1 (permessage-deflate): no UTF-8 check here. */
  readonly compressed: boolean
  /** Its pieces so far, newest first (not counting `tail`). */
  readonly fragments: Fragments | undefined
  /** Where small fragments are being copied (`tail[0..tailUsed)` follows `fragments`). */
  readonly tail: Uint8Array | undefined
  readonly tailUsed: number
  /** Bytes of the message so far, in `fragments` and `tail`. */
  readonly size: number
  /** UTF-8 DFA state after every validated byte of the message (ACCEPT when none). */
  readonly utf8: number
  /** Bytes of the frame in progress (Frame.partial) already validated into `utf8`. */
  readonly validated: number
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
  /** The code and reason we sent. */
  readonly code: number
  readonly reason: string
}

/**
 * The final outcome (also emitted once as the `Closed` action):
 *
 * - the peer closed, or answered our Close: its code and reason (1005 when its
 *   Close had none, §7.1.5), clean;
 * - a violation, or `Fail`: the code and reason we closed with, unclean, local;
 * - the transport ended, or the close timer fired, without the peer's Close:
 *   1006, unclean.
 *
 * @since 0.1.0
 * @category states
 */
export interface Closed {
  readonly _tag: "Closed"
  readonly code: number
  readonly reason: string
  readonly clean: boolean
  readonly initiator: "local" | "remote"
}

/**
 * @since 0.1.0
 * @category states
 */
export type State = Open | Closing | Closed

/**
 * @since 0.1.0
 * @category constructors
 */
export const initial = (options: Options): State => ({
  _tag: "Open",
  options,
  decoder: Frame.initialDecoder({ role: "server", maxPayload: options.maxMessageSize, allowRsv1: options.compression }),
  message: undefined,
  compressed: false,
  fragments: undefined,
  tail: undefined,
  tailUsed: 0,
  size: 0,
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
  /** The application sends a message (already deflated when `compressed`, which sets RSV1). */
  | { readonly _tag: "Send"; readonly payload: Uint8Array; readonly text: boolean; readonly compressed: boolean }
  /** The application closes: send Close, arm the timer, wait for the peer's Close. */
  | { readonly _tag: "Close"; readonly code: number; readonly reason: string }
  /** The I/O layer found a violation (inflate error, invalid UTF-8 after inflate, ...): send Close(code), close the transport. */
  | { readonly _tag: "Fail"; readonly code: number; readonly reason: string }
  /** The close timer fired. */
  | { readonly _tag: "CloseTimeout" }

/**
 * @since 0.1.0
 * @category models
 */
export type Action =
  /** Write these chunks, in order (a frame's header and payload are separate chunks). */
  | { readonly _tag: "Write"; readonly chunks: ReadonlyArray<Uint8Array> }
  /** A complete uncompressed message: text as a string, binary as bytes. */
  | { readonly _tag: "Deliver"; readonly data: string | Uint8Array }
  /** A complete message whose first frame had RSV1: still deflated, UTF-8 not validated. */
  | { readonly _tag: "DeliverCompressed"; readonly text: boolean; readonly data: Uint8Array }
  | { readonly _tag: "ArmCloseTimer" }
  | { readonly _tag: "CancelCloseTimer" }
  /** End the TCP connection (after flushing the writes before it). */
  | { readonly _tag: "CloseTransport" }
  /** The final outcome, emitted exactly once. */
  | {
    readonly _tag: "Closed"
    readonly code: number
    readonly reason: string
    readonly clean: boolean
    readonly initiator: "local" | "remote"
  }

/**
 * @since 0.1.0
 * @category models
 */
export interface StepResult {
  readonly state: State
  readonly actions: ReadonlyArray<Action>
}

const NO_ACTIONS: ReadonlyArray<Action> = Object.freeze([])
const ARM_CLOSE_TIMER: Action = { _tag: "ArmCloseTimer" }
const CANCEL_CLOSE_TIMER: Action = { _tag: "CancelCloseTimer" }
const CLOSE_TRANSPORT: Action = { _tag: "CloseTransport" }
const RSV1: Frame.EncodeOptions = { rsv1: true }

// ---------------------------------------------------------------------------
// step
// ---------------------------------------------------------------------------

/**
 * Whether the application may send a data message in this state: only while
 * open, since nothing is written after our Close (RFC 6455 §5.5.1). The I/O
 * layer uses it to encode the application's messages straight into its
 * output, which is what `step` does with a `Send` input.
 *
 * @since 0.1.0
 * @category predicates
 */
export const canSend = (state: State): boolean => state._tag === "Open"

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
    case "Send":
      return {
        state: open,
        actions: [{
          _tag: "Write",
          chunks: Frame.encode(input.text ? Frame.Opcode.Text : Frame.Opcode.Binary, input.payload, input.compressed ? RSV1 : undefined)
        }]
      }
    case "Close": {
      // §5.5.1, §7.1.2: send Close, then wait for the peer's Close (the timer bounds the wait).
      const closing: Closing = { _tag: "Closing", decoder: open.decoder, code: input.code, reason: input.reason }
      return { state: closing, actions: [writeClose(input.code, input.reason), ARM_CLOSE_TIMER] }
    }
    case "Fail": {
      const actions: Array<Action> = []
      return { state: fail(actions, input.code, input.reason), actions }
    }
    case "EndOfStream": {
      // §7.1.5: no Close frame received -> 1006.
      const closed = closedState(Frame.CloseCode.Abnormal, "", false, "remote")
      return { state: closed, actions: [CLOSE_TRANSPORT, closed] }
    }
    case "CloseTimeout":
      // A stale timer: none is armed while open.
      return { state: open, actions: NO_ACTIONS }
    default:
      return absurd(input)
  }
}

const stepClosing = (closing: Closing, input: Input): StepResult => {
  switch (input._tag) {
    case "Bytes":
      return receiveClosing(closing, input.chunk)
    case "Send":
    case "Close":
      // After our Close nothing more is written (§5.5.1).
      return { state: closing, actions: NO_ACTIONS }
    case "Fail":
      return finish(input.code, input.reason, false)
    case "EndOfStream":
      return finish(Frame.CloseCode.Abnormal, "", false)
    case "CloseTimeout": {
      // §7.1.1: the peer never answered; give up on the handshake.
      const closed = closedState(Frame.CloseCode.Abnormal, "closing handshake timed out", false, "local")
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

const closedState = (code: number, reason: string, clean: boolean, initiator: "local" | "remote"): Closed => ({
  _tag: "Closed",
  code,
  reason,
  clean,
  initiator
})

/** A Closed state doubles as the Closed action: same tag and fields. */
const outcome = (closed: Closed): Action => closed

/**
 * The Close frame we send. A code that may not appear in a Close frame
 * (1005, 1006, 1015, out of range: §7.4.1) is sent as an empty Close.
 * `Frame.encodeClose` cuts a long reason at a character boundary to fit the
 * 125-byte control frame limit (§5.5).
 */
const writeClose = (code: number, reason: string): Action => ({
  _tag: "Write",
  chunks: Frame.encode(Frame.Opcode.Close, Frame.isValidCloseCode(code) ? Frame.encodeClose(code, reason) : EMPTY)
})

const EMPTY = new Uint8Array(0)

/** A violation (or Fail) while open: exactly one Close with its code, then close the transport. */
const fail = (actions: Array<Action>, code: number, reason: string): Closed => {
  const closed = closedState(code, reason, false, "local")
  actions.push(writeClose(code, reason), CLOSE_TRANSPORT, outcome(closed))
  return closed
}

/** Ends a Closing state (its timer armed) without writing anything. */
const finish = (code: number, reason: string, clean: boolean): StepResult => {
  const closed = closedState(code, reason, clean, "local")
  return { state: closed, actions: [CANCEL_CLOSE_TIMER, CLOSE_TRANSPORT, closed] }
}

// ---------------------------------------------------------------------------
// Receiving while open
// ---------------------------------------------------------------------------

/** The Open fields one `Bytes` step updates, mutable for the duration of the step only. */
interface Progress {
  message: DataOpcode | undefined
  compressed: boolean
  fragments: Fragments | undefined
  tail: Uint8Array | undefined
  tailUsed: number
  size: number
  utf8: number
  validated: number
  readonly max: number
  readonly actions: Array<Action>
  /** The frames of this step and the index of the one being handled (for `shortText`). */
  readonly frames: ReadonlyArray<Frame.Frame>
  index: number
  /** latin1 text of `latin1Source[latin1Start..latin1Start + latin1.length)`, made once per step, or "". */
  latin1: string
  latin1Source: ArrayBufferLike | undefined
  latin1Start: number
}

const receive = (open: Open, chunk: Uint8Array): StepResult => {
  const result = Frame.decode(open.decoder, chunk)
  const frames = result.frames
  const progress: Progress = {
    message: open.message,
    compressed: open.compressed,
    fragments: open.fragments,
    tail: open.tail,
    tailUsed: open.tailUsed,
    size: open.size,
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
  for (let i = 0; i < frames.length; i++) {
    const frame = frames[i]
    progress.index = i
    const closed = frame.opcode >= Frame.Opcode.Close ? control(progress, frame) : data(progress, frame)
    // A Close (ours or theirs) ends the step: bytes after the peer's Close are ignored.
    if (closed !== undefined) return { state: closed, actions }
  }
  if (result._tag === "Violation") return { state: fail(actions, result.code, result.reason), actions }
  const closed = inProgress(progress, result.state)
  if (closed !== undefined) return { state: closed, actions }
  const next: Open = {
    _tag: "Open",
    options: open.options,
    decoder: result.state,
    message: progress.message,
    compressed: progress.compressed,
    fragments: progress.fragments,
    tail: progress.tail,
    tailUsed: progress.tailUsed,
    size: progress.size,
    utf8: progress.utf8,
    validated: progress.validated
  }
  return { state: next, actions: actions.length === 0 ? NO_ACTIONS : actions }
}

/** Ping, Pong, Close while open. Returns the Closed state when the connection ends. */
const control = (progress: Progress, frame: Frame.Frame): Closed | undefined => {
  switch (frame.opcode) {
    case Frame.Opcode.Ping:
      // §5.5.2: answer with a Pong carrying the same payload.
      progress.actions.push({ _tag: "Write", chunks: Frame.encode(Frame.Opcode.Pong, frame.payload) })
      return undefined
    case Frame.Opcode.Pong:
      // §5.5.3: an unsolicited Pong needs no answer.
      return undefined
    default: {
      const close = Frame.parseClose(frame.payload)
      switch (close._tag) {
        case "Invalid":
          return fail(progress.actions, close.code, close.reason)
        case "Empty":
        case "Code": {
          // §5.5.1: echo the code (1000 for an empty Close), then the server
          // closes TCP first (§7.1.1). §7.1.5: no code received -> 1005.
          const code = close._tag === "Code" ? close.code : Frame.CloseCode.NoStatusReceived
          const reason = close._tag === "Code" ? close.reason : ""
          const closed = closedState(code, reason, true, "remote")
          progress.actions.push(
            writeClose(close._tag === "Code" ? close.code : Frame.CloseCode.Normal, ""),
            CLOSE_TRANSPORT,
            outcome(closed)
          )
          return closed
        }
        default:
          return absurd(close)
      }
    }
  }
}

/** A complete Text, Binary or Continuation frame. Returns the Closed state on a violation. */
const data = (progress: Progress, frame: Frame.Frame): Closed | undefined => {
  const payload = frame.payload
  // Bytes of this frame validated while it was the frame in progress: it is
  // the first frame to complete after that read, so reset for the next one.
  const pending = progress.validated
  progress.validated = 0
  if (frame.opcode === Frame.Opcode.Continuation) {
    // §5.4: a continuation needs a fragmented message to continue.
    if (progress.message === undefined) return fail(progress.actions, Frame.CloseCode.ProtocolError, NO_MESSAGE)
  } else {
    // §5.4: no new data message before the fragmented one ends.
    if (progress.message !== undefined) return fail(progress.actions, Frame.CloseCode.ProtocolError, INTERLEAVED)
    if (frame.fin && pending === 0) {
      // Fast path: a whole message in one frame that arrived in one read. Its
      // size was checked by the decoder (maxPayload = maxMessageSize).
      if (frame.rsv1) {
        progress.actions.push({ _tag: "DeliverCompressed", text: frame.opcode === Frame.Opcode.Text, data: payload })
      } else if (frame.opcode === Frame.Opcode.Binary) {
        progress.actions.push({ _tag: "Deliver", data: payload })
      } else if (payload.length <= SHORT_TEXT && Utf8.isAscii(payload, 0, payload.length)) {
        progress.actions.push({ _tag: "Deliver", data: shortText(progress, payload) })
      } else if (Utf8.isValid(payload)) {
        progress.actions.push({ _tag: "Deliver", data: decodeText(payload) })
      } else {
        return fail(progress.actions, Frame.CloseCode.InvalidPayload, INVALID_UTF8)
      }
      return undefined
    }
    progress.message = frame.opcode === Frame.Opcode.Text ? Frame.Opcode.Text : Frame.Opcode.Binary
    progress.compressed = frame.rsv1
  }
  const size = progress.size + payload.length
  if (size > progress.max) return fail(progress.actions, Frame.CloseCode.MessageTooBig, TOO_BIG)
  if (progress.message === Frame.Opcode.Text && !progress.compressed) {
    // §8.1: validate the bytes not yet seen, failing as soon as they cannot be UTF-8.
    const utf8 = Utf8.validate(progress.utf8, payload, pending, payload.length)
    if (utf8 === Utf8.REJECT || (frame.fin && utf8 !== Utf8.ACCEPT)) {
      return fail(progress.actions, Frame.CloseCode.InvalidPayload, INVALID_UTF8)
    }
    progress.utf8 = utf8
  }
  if (!frame.fin) {
    append(progress, payload)
    progress.size = size
    return undefined
  }
  seal(progress)
  const message = concat(progress.fragments, payload, size)
  const text = progress.message === Frame.Opcode.Text
  if (progress.compressed) progress.actions.push({ _tag: "DeliverCompressed", text, data: message })
  else progress.actions.push({ _tag: "Deliver", data: text ? decodeText(message) : message })
  progress.message = undefined
  progress.compressed = false
  progress.fragments = undefined
  progress.size = 0
  // `utf8` is ACCEPT again: a text message is only delivered in ACCEPT, others leave it alone.
  return undefined
}

/**
 * The frame whose header arrived but not all its payload: check what can be
 * checked now, so a violation shows up at the read that carries it. Its
 * fragmentation and size are known from the header (an oversize message is
 * refused before its payload is buffered); its text is validated as it comes,
 * each byte once (Autobahn 6.4.x).
 */
const inProgress = (progress: Progress, decoder: Frame.DecoderState): Closed | undefined => {
  const frame = Frame.partial(decoder)
  if (frame === undefined || frame.opcode >= Frame.Opcode.Close) return undefined
  let text: boolean // validate this frame's bytes as UTF-8
  if (frame.opcode === Frame.Opcode.Continuation) {
    if (progress.message === undefined) return fail(progress.actions, Frame.CloseCode.ProtocolError, NO_MESSAGE)
    text = progress.message === Frame.Opcode.Text && !progress.compressed
  } else {
    if (progress.message !== undefined) return fail(progress.actions, Frame.CloseCode.ProtocolError, INTERLEAVED)
    text = frame.opcode === Frame.Opcode.Text && !frame.rsv1
  }
  if (progress.size + frame.length > progress.max) return fail(progress.actions, Frame.CloseCode.MessageTooBig, TOO_BIG)
  const received = frame.received
  if (text && received.length > progress.validated) {
    // A new message starts from ACCEPT: `utf8` is ACCEPT whenever none is open.
    const utf8 = Utf8.validate(progress.utf8, received, progress.validated, received.length)
    if (utf8 === Utf8.REJECT) return fail(progress.actions, Frame.CloseCode.InvalidPayload, INVALID_UTF8)
    progress.utf8 = utf8
    progress.validated = received.length
  }
  return undefined
}

const NO_MESSAGE = "continuation frame without a message to continue"
const INTERLEAVED = "new data frame before the fragmented message ended"
const TOO_BIG = "message too big"
const INVALID_UTF8 = "invalid UTF-8 in text"

/** Fragments shorter than this are copied byte by byte (a native `set` costs more). */
const SMALL_COPY = 16
/** Fragments at least this long are kept as views (the view object then costs under 10%); shorter ones are copied. */
const VIEW_MIN = 1024
/** Capacity of the buffers small fragments are copied into: doubling from the first to the last. */
const TAIL_FIRST = 256
const TAIL_LAST = 65536

/** Adds a non-final fragment to the message. */
const append = (progress: Progress, payload: Uint8Array): void => {
  const length = payload.length
  if (length === 0) return
  if (length >= VIEW_MIN) {
    seal(progress)
    progress.fragments = { bytes: payload, previous: progress.fragments }
    return
  }
  let tail = progress.tail // the buffer being filled
  if (tail === undefined || tail.length - progress.tailUsed < length) {
    const capacity = tail === undefined ? TAIL_FIRST : Math.min(2 * tail.length, TAIL_LAST)
    seal(progress)
    tail = new Uint8Array(capacity < length ? length : capacity)
    progress.tail = tail
  }
  const at = progress.tailUsed
  if (length < SMALL_COPY) {
    for (let j = 0; j < length; j++) tail[at + j] = payload[j]
  } else {
    tail.set(payload, at)
  }
  progress.tailUsed = at + length
}

/** Moves the filled part of `tail` to the pieces. */
const seal = (progress: Progress): void => {
  if (progress.tail === undefined) return
  if (progress.tailUsed > 0) progress.fragments = { bytes: progress.tail.subarray(0, progress.tailUsed), previous: progress.fragments }
  progress.tail = undefined
  progress.tailUsed = 0
}

/** The whole message: the fragments (newest first) followed by `last`; one allocation, one copy of each byte. */
const concat = (fragments: Fragments | undefined, last: Uint8Array, size: number): Uint8Array => {
  if (fragments === undefined) return last
  if (last.length === 0 && fragments.previous === undefined) return fragments.bytes
  const message = new Uint8Array(size)
  let offset = size - last.length // where the fragment being copied starts
  message.set(last, offset)
  for (let fragment: Fragments | undefined = fragments; fragment !== undefined; fragment = fragment.previous) {
    const bytes = fragment.bytes
    offset -= bytes.length
    if (bytes.length < SMALL_COPY) {
      for (let j = 0; j < bytes.length; j++) message[offset + j] = bytes[j]
    } else {
      message.set(bytes, offset)
    }
  }
  return message
}

/** Text payloads up to this long that are ASCII take the batched latin1 path. */
const SHORT_TEXT = 256
/** ... and, alone in their read, up to this long are built in JS (cheaper than a native call). */
const SHORT_ASCII = 24

/**
 * Short ASCII text from a read that holds several frames. A native decode
 * costs ~50 ns per call whatever the length, more than everything else a
 * small message needs; so the bytes from this payload to the end of the
 * step's last frame are decoded once, as latin1 (one character per byte, and
 * ASCII is the same in latin1 and UTF-8), and each short ASCII payload within
 * them becomes a substring. The substrings may share the step's string (as
 * binary messages share the read's buffer), which is at most one read long.
 */
const shortText = (progress: Progress, payload: Uint8Array): string => {
  const offset = payload.byteOffset
  if (payload.buffer === progress.latin1Source && offset >= progress.latin1Start) {
    const from = offset - progress.latin1Start
    if (from + payload.length <= progress.latin1.length) return progress.latin1.substring(from, from + payload.length)
  }
  const frames = progress.frames
  const last = frames[frames.length - 1].payload
  const end = last.byteOffset + last.length // end of the last frame's bytes in the same buffer
  if (progress.index + 1 >= frames.length || last.buffer !== payload.buffer || end <= offset + payload.length) {
    // Alone in its read: nothing to share a decode with.
    return payload.length <= SHORT_ASCII ? Utf8.asciiString(payload, 0, payload.length) : decodeText(payload)
  }
  progress.latin1 = Buffer.from(payload.buffer, offset, end - offset).toString("latin1")
  progress.latin1Source = payload.buffer
  progress.latin1Start = offset
  return progress.latin1.substring(0, payload.length)
}

/** Non-fatal (the bytes are validated first) and keeping a leading U+FEFF, which is message content. */
const textDecoder = new TextDecoder("utf-8", { ignoreBOM: true })

/**
 * Decodes text already validated as UTF-8, so a non-fatal decode is exact.
 * Views into a socket's Buffer take Buffer's native slice (the fastest for
 * short messages); other bytes the TextDecoder.
 */
const decodeText = (bytes: Uint8Array): string =>
  bytes instanceof Buffer ? bytes.toString("utf8") : textDecoder.decode(bytes)

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
        return finish(close.code, close.reason, false)
      case "Empty":
        return finish(Frame.CloseCode.NoStatusReceived, "", true)
      case "Code":
        // §7.1.5: the close code is the one in the first Close received.
        return finish(close.code, close.reason, true)
      default:
        return absurd(close)
    }
  }
  if (result._tag === "Violation") return finish(result.code, result.reason, false)
  return { state: { ...closing, decoder: result.state }, actions: NO_ACTIONS }
}
