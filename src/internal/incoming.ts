/**
 * From received payloads to the messages `Connection` delivers: the pieces of
 * a fragmented message and their one concatenation (`append`, `complete`),
 * and the decoding of text already validated as UTF-8 (`decodeText`, and
 * `shortText`, which decodes the short ASCII messages of one read together).
 *
 * Pure and rule-free: which frames belong to a message, what is valid UTF-8
 * and how large a message may be are `Connection`'s decisions, made before
 * these helpers are called; they only move and decode bytes, as cheaply as
 * they can. A `Reassembly` is filled in place (see `Connection`'s note on
 * single use).
 *
 * @internal
 */
import { Buffer } from "node:buffer"
import type * as Connection from "../Connection.ts"
import type * as Frame from "../Frame.ts"
import * as Utf8 from "../Utf8.ts"

// ---------------------------------------------------------------------------
// Fragmented messages
// ---------------------------------------------------------------------------

/** Fragments shorter than this are copied byte by byte (a native `set` costs more). */
const SMALL_COPY = 16
/** Fragments at least this long are kept as views (the view object then costs under 10%); shorter ones are copied. */
const VIEW_MIN = 1024
/** Capacity of the buffers small fragments are copied into: doubling from the first to the last. */
const TAIL_FIRST = 256
const TAIL_LAST = 65536

/** Adds a non-final fragment to the message. */
export const append = (message: Connection.Reassembly, payload: Uint8Array): void => {
  const length = payload.length
  if (length === 0) return
  if (length >= VIEW_MIN) {
    seal(message)
    message.fragments = { bytes: payload, previous: message.fragments }
    return
  }
  let tail = message.tail // the buffer being filled
  if (tail === undefined || tail.length - message.tailUsed < length) {
    const capacity = tail === undefined ? TAIL_FIRST : Math.min(2 * tail.length, TAIL_LAST)
    seal(message)
    tail = new Uint8Array(capacity < length ? length : capacity)
    message.tail = tail
  }
  const at = message.tailUsed
  if (length < SMALL_COPY) {
    for (let j = 0; j < length; j++) tail[at + j] = payload[j]
  } else {
    tail.set(payload, at)
  }
  message.tailUsed = at + length
}

/**
 * The whole message, `size` bytes: its pieces followed by `last`, the payload
 * of its final frame. The message is not used afterwards.
 */
export const complete = (message: Connection.Reassembly, last: Uint8Array, size: number): Uint8Array => {
  seal(message)
  return concat(message.fragments, last, size)
}

/** Moves the filled part of `tail` to the pieces. */
const seal = (message: Connection.Reassembly): void => {
  if (message.tail === undefined) return
  if (message.tailUsed > 0) message.fragments = { bytes: message.tail.subarray(0, message.tailUsed), previous: message.fragments }
  message.tail = undefined
  message.tailUsed = 0
}

/** The whole message: the fragments (newest first) followed by `last`; one allocation, one copy of each byte. */
const concat = (fragments: Connection.Fragments | undefined, last: Uint8Array, size: number): Uint8Array => {
  if (fragments === undefined) return last
  if (last.length === 0 && fragments.previous === undefined) return fragments.bytes
  const message = new Uint8Array(size)
  let offset = size - last.length // where the fragment being copied starts
  message.set(last, offset)
  for (let fragment: Connection.Fragments | undefined = fragments; fragment !== undefined; fragment = fragment.previous) {
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

// ---------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------

/** Text payloads up to this long that are ASCII take the batched latin1 path (`shortText`). */
export const SHORT_TEXT = 256
/** ... and, alone in their read, up to this long are built in JS (cheaper than a native call). */
const SHORT_ASCII = 24

/**
 * What `shortText` reads and remembers within one step: the step's frames,
 * the one being handled, and the latin1 decode it made, if any. Mutable for
 * the duration of the step only.
 */
export interface TextBatch {
  /** The frames of this step and the index of the one being handled. */
  readonly frames: ReadonlyArray<Frame.Frame>
  index: number
  /** latin1 text of `latin1Source[latin1Start..latin1Start + latin1.length)`, made once per step, or "". */
  latin1: string
  latin1Source: ArrayBufferLike | undefined
  latin1Start: number
}

/**
 * Short ASCII text from a read that holds several frames. A native decode
 * costs ~50 ns per call whatever the length, more than everything else a
 * small message needs; so the bytes from this payload to the end of the
 * step's last frame are decoded once, as latin1 (one character per byte, and
 * ASCII is the same in latin1 and UTF-8), and each short ASCII payload within
 * them becomes a substring. The substrings may share the step's string (as
 * binary messages share the read's buffer), which is at most one read long.
 */
export const shortText = (batch: TextBatch, payload: Uint8Array): string => {
  const offset = payload.byteOffset
  if (payload.buffer === batch.latin1Source && offset >= batch.latin1Start) {
    const from = offset - batch.latin1Start
    if (from + payload.length <= batch.latin1.length) return batch.latin1.substring(from, from + payload.length)
  }
  const frames = batch.frames
  const last = frames[frames.length - 1].payload
  const end = last.byteOffset + last.length // end of the last frame's bytes in the same buffer
  if (batch.index + 1 >= frames.length || last.buffer !== payload.buffer || end <= offset + payload.length) {
    // Alone in its read: nothing to share a decode with.
    return payload.length <= SHORT_ASCII ? Utf8.asciiString(payload, 0, payload.length) : decodeText(payload)
  }
  batch.latin1 = Buffer.from(payload.buffer, offset, end - offset).toString("latin1")
  batch.latin1Source = payload.buffer
  batch.latin1Start = offset
  return batch.latin1.substring(0, payload.length)
}

/** Non-fatal (the bytes are validated first) and keeping a leading U+FEFF, which is message content. */
const textDecoder = new TextDecoder("utf-8", { ignoreBOM: true })

/**
 * Decodes text already validated as UTF-8, so a non-fatal decode is exact.
 * Views into a socket's Buffer take Buffer's native slice (the fastest for
 * short messages); other bytes the TextDecoder.
 */
export const decodeText = (bytes: Uint8Array): string =>
  bytes instanceof Buffer ? bytes.toString("utf8") : textDecoder.decode(bytes)
