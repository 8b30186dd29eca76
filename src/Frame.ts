/**
 * Bytes to frames and back (RFC 6455 §5).
 *
 * This module owns the wire format: opcodes and close codes, an incremental
 * frame decoder, the frame encoder, masking, and Close payloads (§5.5.1, §7.4).
 * It knows the peer's role (which decides masking) and a size limit, and
 * nothing of the connection: fragmentation rules across frames, UTF-8 of text
 * messages and the closing handshake belong to `Connection`.
 *
 * Pure: no Effect runtime, no I/O, and no input makes it throw. A protocol
 * violation is a returned value carrying its close code.
 *
 * Ownership: `decode` takes ownership of the chunks it is given. A frame that
 * lies within one chunk is returned as a view (`subarray`) of that chunk,
 * unmasked in place; only a frame whose payload spans chunks is copied, once,
 * into a buffer of its declared length.
 *
 * @since 0.1.0
 */
import { Buffer, isUtf8 } from "node:buffer"
import * as CloseReason from "./CloseReason.ts"
import { Simd, SIMD_THRESHOLD } from "./internal/xor.ts"

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/**
 * The opcodes of RFC 6455 §5.2 (3-7 and 0xB-0xF are reserved).
 *
 * @since 0.1.0
 * @category constants
 */
export const Opcode = { Continuation: 0x0, Text: 0x1, Binary: 0x2, Close: 0x8, Ping: 0x9, Pong: 0xa } as const

/**
 * @since 0.1.0
 * @category models
 */
export type Opcode = (typeof Opcode)[keyof typeof Opcode]

/**
 * Close codes of RFC 6455 §7.4.1 and the IANA "WebSocket Close Code Number"
 * registry. 1005, 1006 and 1015 are for reporting only, never on the wire.
 *
 * @since 0.1.0
 * @category constants
 */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  UnsupportedData: 1003,
  NoStatusReceived: 1005,
  Abnormal: 1006,
  InvalidPayload: 1007,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  MandatoryExtension: 1010,
  InternalError: 1011,
  ServiceRestart: 1012,
  TryAgainLater: 1013,
  BadGateway: 1014,
  TlsHandshake: 1015
} as const

/**
 * Whether `code` may be sent or received in a Close frame (RFC 6455 §7.4.1,
 * §7.4.2 and the IANA registry): 1000-1003, 1007-1014 and 3000-4999.
 * 1004 is reserved, 1005/1006/1015 must not be sent, 1016-2999 are reserved
 * for future RFCs, 3000-3999 are registered and 4000-4999 private use.
 *
 * @since 0.1.0
 * @category close
 */
export const isValidCloseCode: (code: number) => boolean = CloseReason.isSendable

// ---------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------

/**
 * A decoded (or to-be-encoded) frame.
 *
 * @since 0.1.0
 * @category models
 */
export interface Frame {
  readonly fin: boolean
  readonly rsv1: boolean
  readonly rsv2: boolean
  readonly rsv3: boolean
  readonly opcode: Opcode
  /** Unmasked; a view into the chunk when the frame lay in one chunk. */
  readonly payload: Uint8Array
}

/**
 * @since 0.1.0
 * @category decoding
 */
export interface DecoderOptions {
  /** "server": frames from the peer MUST be masked (else 1002); "client": MUST NOT be (else 1002). §5.1 */
  readonly role: "server" | "client"
  /** A frame whose declared length exceeds it: 1009, detected from the header before any payload is buffered. */
  readonly maxPayload: number
  /** True iff permessage-deflate was negotiated: RSV1 allowed on the first frame of a data message only. */
  readonly allowRsv1: boolean
}

/** The frame whose header is complete and whose payload is not (yet). */
interface Pending {
  readonly fin: boolean
  readonly rsv1: boolean
  readonly opcode: Opcode
  /** The declared payload length. */
  readonly length: number
  /** The masking key (4 bytes), undefined for an unmasked frame. */
  readonly mask: Uint8Array | undefined
  /** Allocated at the declared length when the first payload bytes arrive; the received prefix is unmasked. */
  readonly buffer: Uint8Array | undefined
  /** Payload bytes received so far (and unmasked into `buffer`). */
  readonly received: number
}

/**
 * The decoder between two chunks. Opaque: build it with `initialDecoder`,
 * advance it with `decode`, inspect it with `partial`.
 *
 * A state is meant to be used once: the buffer of a frame in progress is
 * shared with the state `decode` returns, so decoding other bytes from an
 * older state may overwrite payload bytes the newer state already holds.
 *
 * @since 0.1.0
 * @category decoding
 */
export interface DecoderState {
  readonly options: DecoderOptions
  /** Header bytes of the next frame received so far, when its header spans chunks. */
  readonly header: Uint8Array | undefined
  /** The frame in progress (header complete, payload incomplete). */
  readonly pending: Pending | undefined
}

/**
 * @since 0.1.0
 * @category decoding
 */
export const initialDecoder = (options: DecoderOptions): DecoderState => ({
  options,
  header: undefined,
  pending: undefined
})

/**
 * @since 0.1.0
 * @category decoding
 */
export type DecodeResult =
  | { readonly _tag: "Ok"; readonly frames: ReadonlyArray<Frame>; readonly state: DecoderState }
  | {
    readonly _tag: "Violation"
    /** Frames completed before the violation, in order. */
    readonly frames: ReadonlyArray<Frame>
    /** The fault, with its close code (1002 or 1009). */
    readonly failure: CloseReason.ProtocolError | CloseReason.MessageTooBig
  }

/**
 * The frame currently being received.
 *
 * @since 0.1.0
 * @category decoding
 */
export interface PartialFrame {
  readonly fin: boolean
  readonly rsv1: boolean
  readonly opcode: Opcode
  /** The declared payload length. */
  readonly length: number
  /** The payload bytes received so far, already unmasked (a view, length <= `length`). */
  readonly received: Uint8Array
}

// ---------------------------------------------------------------------------
// Violations: one place that maps each fault to its close code
// ---------------------------------------------------------------------------

type Fault = CloseReason.ProtocolError | CloseReason.MessageTooBig

const RSV23 = CloseReason.protocolError("RSV2/RSV3 set but no extension negotiated them") // §5.2
const RSV1_CONTROL = CloseReason.protocolError("RSV1 set on a control or continuation frame") // RFC 7692 §6
const RSV1 = CloseReason.protocolError("RSV1 set but no extension negotiated it") // §5.2
const RESERVED_OPCODE = CloseReason.protocolError("reserved opcode") // §5.2
const FRAGMENTED_CONTROL = CloseReason.protocolError("fragmented control frame") // §5.5
const UNMASKED = CloseReason.protocolError("unmasked frame from a client") // §5.1
const MASKED = CloseReason.protocolError("masked frame from a server") // §5.1
const CONTROL_TOO_LONG = CloseReason.protocolError("control frame payload longer than 125 bytes") // §5.5
const NON_MINIMAL = CloseReason.protocolError("payload length not minimally encoded") // §5.2
const LENGTH_MSB = CloseReason.protocolError("64-bit payload length with the most significant bit set") // §5.2
const TOO_BIG = CloseReason.messageTooBig("frame payload too big")
const TOO_BIG_TO_BUFFER = CloseReason.messageTooBig("frame payload too big to buffer")

/** Checks the first header byte (§5.2): RSV bits, opcode, fragmented control frame. */
const checkByte0 = (b0: number, allowRsv1: boolean): Fault | undefined => {
  if ((b0 & 0x30) !== 0) return RSV23
  const opcode = b0 & 0x0f
  if (opcode > 0xa || (opcode > 0x2 && opcode < 0x8)) return RESERVED_OPCODE
  if ((b0 & 0x40) !== 0) {
    // RFC 7692 §6: permessage-deflate sets RSV1 on the first frame of a data message only.
    if (opcode === 0 || opcode >= 0x8) return RSV1_CONTROL
    if (!allowRsv1) return RSV1
  }
  if (opcode >= 0x8 && (b0 & 0x80) === 0) return FRAGMENTED_CONTROL // §5.5
  return undefined
}

/** Checks the second header byte: masking per role (§5.1), control frame length (§5.5), 7-bit length limit. */
const checkByte1 = (b0: number, b1: number, options: DecoderOptions): Fault | undefined => {
  const masked = (b1 & 0x80) !== 0
  if (options.role === "server" ? !masked : masked) return masked ? MASKED : UNMASKED
  const length7 = b1 & 0x7f
  if ((b0 & 0x08) !== 0) {
    // §5.5: a control payload is at most 125 bytes, whatever the message limit.
    return length7 > 125 ? CONTROL_TOO_LONG : undefined
  }
  if (length7 < 126 && length7 > options.maxPayload) return TOO_BIG
  return undefined
}

/**
 * Checks an extended payload length (§5.2) once all its bytes are in
 * `src[at..]` (`at` = index of the first header byte).
 *
 * Non-minimal encodings are refused (1002): §5.2 says "the minimal number of
 * bytes MUST be used to encode the length", so a 16-bit length below 126 or a
 * 64-bit length below 65536 is a malformed frame. Accepting them would also
 * let a peer smuggle an ambiguous encoding past intermediaries, and
 * Autobahn-grade peers never send them.
 */
const checkExtended = (src: Uint8Array, at: number, options: DecoderOptions): Fault | undefined => {
  const length7 = src[at + 1] & 0x7f
  if (length7 === 126) {
    const length = (src[at + 2] << 8) | src[at + 3]
    if (length < 126) return NON_MINIMAL
    return length > options.maxPayload ? TOO_BIG : undefined
  }
  if (length7 === 127) {
    const high = ((src[at + 2] << 24) | (src[at + 3] << 16) | (src[at + 4] << 8) | src[at + 5]) >>> 0
    if (high >= 0x80000000) return LENGTH_MSB
    // Above 2^53-1 a length is not a safe integer (no such payload can exist in memory anyway).
    if (high > 0x1fffff) return TOO_BIG
    const length = high * 0x100000000 + readUint32(src, at + 6)
    if (length < 65536) return NON_MINIMAL
    return length > options.maxPayload ? TOO_BIG : undefined
  }
  return undefined
}

/**
 * Checks the `n` header bytes available at `src[at..]`, in byte order, so the
 * fault found for a stream does not depend on how it was chopped.
 */
const checkHeader = (src: Uint8Array, at: number, n: number, options: DecoderOptions): Fault | undefined => {
  const b0 = src[at]
  const f0 = checkByte0(b0, options.allowRsv1)
  if (f0 !== undefined || n < 2) return f0
  const b1 = src[at + 1]
  const f1 = checkByte1(b0, b1, options)
  if (f1 !== undefined || n < headerLength(b1)) return f1
  return checkExtended(src, at, options)
}

const readUint32 = (src: Uint8Array, at: number): number =>
  ((src[at] << 24) | (src[at + 1] << 16) | (src[at + 2] << 8) | src[at + 3]) >>> 0

/** The whole header length (2-14 bytes) given its second byte. */
const headerLength = (b1: number): number => {
  const length7 = b1 & 0x7f
  return (length7 < 126 ? 2 : length7 === 126 ? 4 : 10) + ((b1 & 0x80) === 0 ? 0 : 4)
}

/** The payload length of a checked, complete header at `src[at..]`. */
const payloadLength = (src: Uint8Array, at: number): number => {
  const length7 = src[at + 1] & 0x7f
  if (length7 < 126) return length7
  if (length7 === 126) return (src[at + 2] << 8) | src[at + 3]
  return readUint32(src, at + 2) * 0x100000000 + readUint32(src, at + 6)
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

const NO_FRAMES: ReadonlyArray<Frame> = Object.freeze([])
const MAX_HEADER = 14

const frame = (b0: number, payload: Uint8Array): Frame => ({
  fin: (b0 & 0x80) !== 0,
  rsv1: (b0 & 0x40) !== 0,
  rsv2: false, // refused by checkByte0
  rsv3: false,
  opcode: (b0 & 0x0f) as Opcode,
  payload
})

const violation = (frames: Array<Frame> | undefined, f: Fault): DecodeResult => ({
  _tag: "Violation",
  frames: frames ?? NO_FRAMES,
  failure: f
})

/**
 * Feeds one chunk to the decoder: the frames it completes, and the next state,
 * or the violation it contains (with the frames completed before it).
 *
 * Takes ownership of `chunk`: payloads of frames that lie within it are views
 * of it, unmasked in place; the caller must neither reuse nor modify it.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode = (state: DecoderState, chunk: Uint8Array): DecodeResult => {
  const options = state.options
  const end = chunk.length
  // Read once: `.buffer` of a Node Buffer is a call into the runtime.
  const bytes = chunk.buffer
  const base = chunk.byteOffset
  let frames: Array<Frame> | undefined // frames completed in this chunk, allocated on the first
  let pending = state.pending // the frame whose payload is being received, if any
  let pos = 0 // next unread byte of `chunk`
  if (state.header !== undefined) {
    // A header spans chunks: complete it in a small buffer of its own.
    const header = new Uint8Array(MAX_HEADER)
    header.set(state.header)
    let n = state.header.length // header bytes held in `header`
    let need = n < 2 ? 2 : headerLength(header[1]) // header bytes needed (known after byte 1)
    while (n < need && pos < end) {
      header[n++] = chunk[pos++]
      if (n === 2) need = headerLength(header[1])
    }
    const f = checkHeader(header, 0, n, options)
    if (f !== undefined) return violation(undefined, f)
    if (n < need) return { _tag: "Ok", frames: NO_FRAMES, state: { options, header: header.subarray(0, n), pending } }
    const length = payloadLength(header, 0)
    if (length <= end - pos) {
      // The whole payload is in this chunk: a view.
      const payload = new Uint8Array(bytes, base + pos, length)
      if ((header[1] & 0x80) !== 0) unmaskRange(payload, 0, length, header, need - 4, 0)
      frames = [frame(header[0], payload)]
      pos += length
    } else {
      pending = begin(header, 0, length, (header[1] & 0x80) !== 0 ? header.slice(need - 4, need) : undefined)
    }
  }
  // The parser's phases: payload of a pending frame, else a header; stops when the bytes run out.
  while (pos < end) {
    if (pending !== undefined) {
      // Payload of a frame that spans chunks.
      const want = pending.length - pending.received // payload bytes still missing
      const avail = end - pos
      if (pending.buffer === undefined && want <= avail) {
        // Nothing received yet and the whole payload is here: a view, no copy.
        const payload = new Uint8Array(bytes, base + pos, want)
        if (pending.mask !== undefined) unmaskRange(payload, 0, want, pending.mask, 0, 0)
        frames ??= []
        frames.push(pendingFrame(pending, payload))
        pos += want
        pending = undefined
        continue
      }
      // Copy (and unmask, at its mask phase) the piece that arrived; allocate the declared length once.
      const buffer = pending.buffer ?? allocate(pending.length)
      if (buffer === undefined) return violation(frames, TOO_BIG_TO_BUFFER)
      const take = want < avail ? want : avail
      const at = pending.received
      if (pending.mask !== undefined) copyUnmasked(buffer, at, chunk, pos, take, pending.mask, at & 3)
      else buffer.set(take === avail && pos === 0 ? chunk : new Uint8Array(bytes, base + pos, take), at)
      pos += take
      if (take === want) {
        frames ??= []
        frames.push(pendingFrame(pending, buffer))
        pending = undefined
      } else {
        pending = { ...pending, buffer, received: at + take }
      }
      continue
    }
    // Header phase.
    const avail = end - pos
    const f = checkHeader(chunk, pos, avail, options)
    if (f !== undefined) return violation(frames, f)
    const b1 = avail < 2 ? 0 : chunk[pos + 1]
    const need = headerLength(b1)
    if (avail < 2 || avail < need) {
      // The header spans chunks: keep its bytes (at most 13).
      return { _tag: "Ok", frames: frames ?? NO_FRAMES, state: { options, header: chunk.slice(pos, end), pending } }
    }
    const length = payloadLength(chunk, pos)
    const start = pos + need // first payload byte
    if (length <= end - start) {
      // Header and payload within this chunk: a view, unmasked in place.
      const payload = new Uint8Array(bytes, base + start, length)
      if ((b1 & 0x80) !== 0) unmaskRange(chunk, start, start + length, chunk, start - 4, 0)
      frames ??= []
      frames.push(frame(chunk[pos], payload))
      pos = start + length
    } else {
      pending = begin(chunk, pos, length, (b1 & 0x80) !== 0 ? chunk.slice(start - 4, start) : undefined)
      pos = start
    }
  }
  return { _tag: "Ok", frames: frames ?? NO_FRAMES, state: { options, header: undefined, pending } }
}

/**
 * `length` bytes of `chunk` from `start`, as a plain Uint8Array view (cheaper
 * than `subarray`, which goes through the species constructor, e.g. Buffer).
 */
const view = (chunk: Uint8Array, start: number, length: number): Uint8Array =>
  new Uint8Array(chunk.buffer, chunk.byteOffset + start, length)

/**
 * A buffer for a payload that spans chunks, or undefined when the runtime
 * cannot allocate it (a declared length within a huge `maxPayload` but beyond
 * memory): the one place where the engine could throw, turned into 1009.
 */
const allocate = (length: number): Uint8Array | undefined => {
  try {
    // Not zero-filled: every byte is overwritten by the payload before the
    // frame is emitted, and `partial` exposes only the bytes received.
    return Buffer.allocUnsafeSlow(length)
  } catch {
    return undefined
  }
}

const begin = (src: Uint8Array, at: number, length: number, mask: Uint8Array | undefined): Pending => {
  const b0 = src[at]
  return {
    fin: (b0 & 0x80) !== 0,
    rsv1: (b0 & 0x40) !== 0,
    opcode: (b0 & 0x0f) as Opcode,
    length,
    mask,
    buffer: undefined,
    received: 0
  }
}

const pendingFrame = (pending: Pending, payload: Uint8Array): Frame => ({
  fin: pending.fin,
  rsv1: pending.rsv1,
  rsv2: false,
  rsv3: false,
  opcode: pending.opcode,
  payload
})

const EMPTY = new Uint8Array(0)

/**
 * The frame currently being received (header complete, payload incomplete),
 * with the payload bytes received so far, already unmasked (a view). undefined
 * between frames and while a header is incomplete.
 *
 * @since 0.1.0
 * @category decoding
 */
export const partial = (state: DecoderState): PartialFrame | undefined => {
  const pending = state.pending
  if (pending === undefined) return undefined
  return {
    fin: pending.fin,
    rsv1: pending.rsv1,
    opcode: pending.opcode,
    length: pending.length,
    received: pending.buffer === undefined ? EMPTY : pending.buffer.subarray(0, pending.received)
  }
}

// ---------------------------------------------------------------------------
// Masking (§5.3)
// ---------------------------------------------------------------------------

// The 32-bit mask word is built from the mask bytes in memory order, so it
// matches the platform's byte order whatever it is.
const MASK_BYTES = new Uint8Array(4)
const MASK_WORD = new Int32Array(MASK_BYTES.buffer)
/** Below this many bytes the word-wise path costs more than it saves (a typed-array view per call). */
const WORD_THRESHOLD = 64

/** Key byte `j` (mod 4) of the key `m0..m3`. */
const keyByte = (m0: number, m1: number, m2: number, m3: number, j: number): number => {
  const k = j & 3
  return k === 0 ? m0 : k === 1 ? m1 : k === 2 ? m2 : m3
}

/** The key as a 32-bit word in memory order, rotated so that its byte 0 is key byte `k`. */
const rotatedWord = (m0: number, m1: number, m2: number, m3: number, k: number): number => {
  MASK_BYTES[0] = keyByte(m0, m1, m2, m3, k)
  MASK_BYTES[1] = keyByte(m0, m1, m2, m3, k + 1)
  MASK_BYTES[2] = keyByte(m0, m1, m2, m3, k + 2)
  MASK_BYTES[3] = keyByte(m0, m1, m2, m3, k + 3)
  return MASK_WORD[0]!
}

/**
 * Copies `src[from..from+length)` into `dst` at `at`, unmasked with the
 * 4-byte key `mask` at phase `phase` (the key index of its first byte): one
 * pass for the copy and the unmasking (a piece of a payload that spans
 * reads), `src` untouched.
 */
const copyUnmasked = (
  dst: Uint8Array,
  at: number,
  src: Uint8Array,
  from: number,
  length: number,
  mask: Uint8Array,
  phase: number
): void => {
  if (Simd === undefined || length < SIMD_THRESHOLD) {
    dst.set(view(src, from, length), at)
    return unmaskRange(dst, at, at + length, mask, 0, phase)
  }
  const n = length & ~15
  Simd.copy(dst, at, src, from, n, rotatedWord(mask[0]!, mask[1]!, mask[2]!, mask[3]!, phase & 3))
  // The tail, fewer than 16 bytes (the phase is unchanged after whole blocks).
  for (let i = n; i < length; i++) dst[at + i] = src[from + i]! ^ mask[(phase + i) & 3]!
}

/**
 * XORs `buf[start..end)` in place with the 4-byte key at `mask[maskAt..]`;
 * `phase` is the key index that applies to `buf[start]`.
 */
const unmaskRange = (
  buf: Uint8Array,
  start: number,
  end: number,
  mask: Uint8Array,
  maskAt: number,
  phase: number
): void => {
  const m0 = mask[maskAt]
  const m1 = mask[maskAt + 1]
  const m2 = mask[maskAt + 2]
  const m3 = mask[maskAt + 3]
  let i = start // next byte to unmask
  let k = phase & 3 // key index for byte i
  if (Simd !== undefined && end - start >= SIMD_THRESHOLD) {
    // 16 bytes at a time (WebAssembly SIMD), with the key rotated to phase k;
    // a whole number of 16-byte blocks leaves the phase unchanged.
    const n = (end - start) & ~15
    Simd.inPlace(buf, start, n, rotatedWord(m0, m1, m2, m3, k))
    i += n
  } else if (end - start >= WORD_THRESHOLD) {
    // Unaligned head, byte by byte, up to a 4-byte aligned address.
    const head = start + ((4 - ((buf.byteOffset + start) & 3)) & 3)
    for (; i < head; i++) {
      buf[i] ^= keyByte(m0, m1, m2, m3, k)
      k = (k + 1) & 3
    }
    // Aligned middle, a 32-bit word at a time, with the key rotated to phase k.
    const word = rotatedWord(m0, m1, m2, m3, k)
    const count = (end - i) >>> 2
    const words = new Int32Array(buf.buffer, buf.byteOffset + i, count)
    const unrolled = count & ~3
    let w = 0 // next word to unmask
    for (; w < unrolled; w += 4) {
      words[w] ^= word
      words[w + 1] ^= word
      words[w + 2] ^= word
      words[w + 3] ^= word
    }
    for (; w < count; w++) words[w] ^= word
    i += count << 2
    // A whole number of words leaves the phase unchanged.
  }
  if (end - i >= 4) {
    // Four bytes a turn with the key at phase k, no per-byte key choice.
    const a = keyByte(m0, m1, m2, m3, k)
    const b = keyByte(m0, m1, m2, m3, k + 1)
    const c = keyByte(m0, m1, m2, m3, k + 2)
    const d = keyByte(m0, m1, m2, m3, k + 3)
    for (const last = end - 4; i <= last; i += 4) {
      buf[i] ^= a
      buf[i + 1] ^= b
      buf[i + 2] ^= c
      buf[i + 3] ^= d
    }
  }
  // Tail (or a short range), byte by byte.
  for (; i < end; i++) {
    buf[i] ^= keyByte(m0, m1, m2, m3, k)
    k = (k + 1) & 3
  }
}

/**
 * Masks or unmasks `bytes` in place (§5.3): byte i is XORed with
 * `mask[(offset + i) % 4]`. `offset` is the mask phase of `bytes[0]` (for a
 * piece that starts `offset` bytes into a payload). From 512 bytes 16 at a
 * time in WebAssembly SIMD where the runtime has it, otherwise word-wise on
 * the aligned middle. Missing key bytes (a key shorter than 4) count as 0.
 *
 * @since 0.1.0
 * @category masking
 */
export const unmask = (bytes: Uint8Array, mask: Uint8Array, offset: number = 0): void => {
  unmaskRange(bytes, 0, bytes.length, mask.length >= 4 ? mask : padKey(mask), 0, offset | 0)
}

const padKey = (mask: Uint8Array): Uint8Array => {
  const key = new Uint8Array(4)
  key.set(mask)
  return key
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category encoding
 */
export interface EncodeOptions {
  /** Default true. */
  readonly fin?: boolean
  /** Default false. */
  readonly rsv1?: boolean
  /** A 4-byte masking key: the frame is masked (client role), its payload copied. */
  readonly mask?: Uint8Array
}

/**
 * Bytes of the header of an unmasked frame whose payload has `length` bytes
 * (the minimal length encoding, §5.2).
 *
 * @since 0.1.0
 * @category encoding
 */
export const headerSize = (length: number): number => (length < 126 ? 2 : length < 65536 ? 4 : 10)

/**
 * Writes the header of an unmasked frame into `buffer` at `offset`: `first`
 * is its first byte (FIN, RSV1-3, opcode), `length` its payload length.
 * Returns the offset after the header (`offset + headerSize(length)`), so
 * that a batch of frames is encoded into one buffer with no allocation.
 *
 * @since 0.1.0
 * @category encoding
 */
export const writeHeader = (buffer: Uint8Array, offset: number, first: number, length: number): number => {
  buffer[offset] = first
  if (length < 126) {
    buffer[offset + 1] = length
    return offset + 2
  }
  if (length < 65536) {
    buffer[offset + 1] = 126
    buffer[offset + 2] = length >>> 8
    buffer[offset + 3] = length & 0xff
    return offset + 4
  }
  buffer[offset + 1] = 127
  const high = Math.floor(length / 0x100000000)
  buffer[offset + 2] = high >>> 24
  buffer[offset + 3] = (high >>> 16) & 0xff
  buffer[offset + 4] = (high >>> 8) & 0xff
  buffer[offset + 5] = high & 0xff
  buffer[offset + 6] = length >>> 24
  buffer[offset + 7] = (length >>> 16) & 0xff
  buffer[offset + 8] = (length >>> 8) & 0xff
  buffer[offset + 9] = length & 0xff
  return offset + 10
}

/**
 * Encodes one frame as its header and its payload, to be written one after
 * the other. The length uses the minimal encoding (§5.2). Unmasked (server
 * role): the payload is returned as is, never copied. With `mask` (client
 * role): the payload is copied into a new, masked buffer.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encode = (
  opcode: Opcode,
  payload: Uint8Array,
  options?: EncodeOptions
): readonly [header: Uint8Array, payload: Uint8Array] => {
  const fin = options?.fin ?? true
  const rsv1 = options?.rsv1 ?? false
  const mask = options?.mask
  const length = payload.length
  const at = headerSize(length)
  const header = new Uint8Array(at + (mask === undefined ? 0 : 4))
  writeHeader(header, 0, (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0f), length)
  if (mask === undefined) return [header, payload]
  header[1] |= 0x80
  for (let i = 0; i < 4; i++) header[at + i] = i < mask.length ? mask[i] : 0
  const masked = payload.slice()
  unmaskRange(masked, 0, length, header, at, 0)
  return [header, masked]
}

// ---------------------------------------------------------------------------
// Close payloads (§5.5.1, §7.4)
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category close
 */
export type ClosePayload =
  | { readonly _tag: "Empty" }
  | { readonly _tag: "Code"; readonly code: number; readonly reason: string }
  | { readonly _tag: "Invalid"; readonly failure: CloseReason.ProtocolError | CloseReason.InvalidPayload }

const textEncoder = new TextEncoder()
/** Keeps a leading U+FEFF: it is part of the reason, as it is part of a message. */
const textDecoder = new TextDecoder("utf-8", { ignoreBOM: true })
const CLOSE_EMPTY: ClosePayload = { _tag: "Empty" }

/**
 * A Close frame payload: the 2-byte code then the UTF-8 reason, truncated on
 * a character boundary so the payload fits a control frame (125 bytes, §5.5).
 * The code is written as given (check it with `isValidCloseCode`).
 *
 * @since 0.1.0
 * @category close
 */
export const encodeClose = (code: number, reason: string): Uint8Array => {
  const payload = new Uint8Array(125)
  payload[0] = (code >>> 8) & 0xff
  payload[1] = code & 0xff
  // encodeInto writes whole characters only: truncation lands on a UTF-8 boundary.
  const { written } = textEncoder.encodeInto(reason, payload.subarray(2))
  return payload.subarray(0, 2 + written)
}

/**
 * Parses a Close frame payload (§5.5.1): empty, or a code and a UTF-8 reason.
 * A 1-byte payload or a code that is not valid on the wire: Invalid 1002;
 * a reason that is not UTF-8: Invalid 1007 (§8.1).
 *
 * @since 0.1.0
 * @category close
 */
export const parseClose = (payload: Uint8Array): ClosePayload => {
  if (payload.length === 0) return CLOSE_EMPTY
  if (payload.length === 1) {
    return { _tag: "Invalid", failure: CloseReason.protocolError("1-byte close payload") }
  }
  const code = (payload[0] << 8) | payload[1]
  if (!isValidCloseCode(code)) {
    return { _tag: "Invalid", failure: CloseReason.protocolError(`invalid close code ${code}`) }
  }
  const reason = payload.subarray(2)
  if (!isUtf8(reason)) {
    return { _tag: "Invalid", failure: CloseReason.invalidPayload("close reason is not UTF-8") }
  }
  return { _tag: "Code", code, reason: textDecoder.decode(reason) }
}
