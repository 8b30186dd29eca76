/**
 * Incremental UTF-8 validation.
 *
 * A Björn Höhrmann-style DFA whose whole state is one small integer, so it can
 * be carried across the fragments of a message and across the chops of a frame
 * that arrives in several reads: `validate(state, bytes, start, end)` returns
 * the state after `bytes[start..end)`.
 *
 * - `ACCEPT`: every byte so far forms complete, well-formed UTF-8.
 * - `REJECT`: no continuation can make the bytes valid (sticky). It is reached
 *   at the very byte that makes the sequence impossible (fail-fast): overlongs,
 *   surrogates U+D800-U+DFFF and code points above U+10FFFF are refused at
 *   their second byte, exactly as in Unicode's table of well-formed byte
 *   sequences (Unicode 15, table 3-7).
 * - anything else: well-formed so far but in the middle of a sequence; at the
 *   end of a message this means truncated input (invalid).
 *
 * Pure, never throws.
 *
 * @since 0.1.0
 */
import { Buffer, isUtf8 } from "node:buffer"

/**
 * The state at the start of a message, and after complete well-formed input.
 *
 * @since 0.1.0
 * @category states
 */
export const ACCEPT = 0

/**
 * The sticky state after input that can never become valid UTF-8.
 *
 * @since 0.1.0
 * @category states
 */
export const REJECT = 12

// States are premultiplied by the number of byte classes (12), so a transition
// is one addition and one table load: TABLE[256 + state + TABLE[byte]].
const NEED_1 = 24 // one continuation byte 80-BF left
const NEED_2 = 36 // two continuation bytes 80-BF left
const NEED_3 = 48 // three continuation bytes 80-BF left
const AFTER_E0 = 60 // next byte must be A0-BF (no overlong 3-byte forms)
const AFTER_ED = 72 // next byte must be 80-9F (no surrogates D800-DFFF)
const AFTER_F0 = 84 // next byte must be 90-BF (no overlong 4-byte forms)
const AFTER_F4 = 96 // next byte must be 80-8F (nothing above U+10FFFF)
const STATES = 9

// Byte classes: the byte ranges that the rows of table 3-7 distinguish.
const C_ASCII = 0 // 00-7F
const C_80_8F = 1 // continuation
const C_90_9F = 2 // continuation
const C_A0_BF = 3 // continuation
const C_NEVER = 4 // C0, C1, F5-FF: never appear in UTF-8
const C_LEAD2 = 5 // C2-DF
const C_E0 = 6
const C_LEAD3 = 7 // E1-EC, EE-EF
const C_ED = 8
const C_F0 = 9
const C_LEAD4 = 10 // F1-F3
const C_F4 = 11
const CLASSES = 12

const classOf = (byte: number): number => {
  if (byte < 0x80) return C_ASCII
  if (byte < 0x90) return C_80_8F
  if (byte < 0xa0) return C_90_9F
  if (byte < 0xc0) return C_A0_BF
  if (byte < 0xc2) return C_NEVER
  if (byte < 0xe0) return C_LEAD2
  if (byte === 0xe0) return C_E0
  if (byte === 0xed) return C_ED
  if (byte < 0xf0) return C_LEAD3
  if (byte === 0xf0) return C_F0
  if (byte < 0xf4) return C_LEAD4
  if (byte === 0xf4) return C_F4
  return C_NEVER
}

const next = (state: number, cls: number): number => {
  const continuation = cls === C_80_8F || cls === C_90_9F || cls === C_A0_BF
  switch (state) {
    case ACCEPT:
      switch (cls) {
        case C_ASCII:
          return ACCEPT
        case C_LEAD2:
          return NEED_1
        case C_E0:
          return AFTER_E0
        case C_LEAD3:
          return NEED_2
        case C_ED:
          return AFTER_ED
        case C_F0:
          return AFTER_F0
        case C_LEAD4:
          return NEED_3
        case C_F4:
          return AFTER_F4
        default:
          return REJECT
      }
    case NEED_1:
      return continuation ? ACCEPT : REJECT
    case NEED_2:
      return continuation ? NEED_1 : REJECT
    case NEED_3:
      return continuation ? NEED_2 : REJECT
    case AFTER_E0:
      return cls === C_A0_BF ? NEED_1 : REJECT
    case AFTER_ED:
      return cls === C_80_8F || cls === C_90_9F ? NEED_1 : REJECT
    case AFTER_F0:
      return cls === C_90_9F || cls === C_A0_BF ? NEED_2 : REJECT
    case AFTER_F4:
      return cls === C_80_8F ? NEED_2 : REJECT
    default:
      return REJECT
  }
}

/** Bytes 0-255: byte class; from 256: transitions indexed by state + class. */
const TABLE: Uint8Array = (() => {
  const table = new Uint8Array(256 + STATES * CLASSES)
  for (let byte = 0; byte < 256; byte++) table[byte] = classOf(byte)
  for (let state = 0; state < STATES * CLASSES; state += CLASSES) {
    for (let cls = 0; cls < CLASSES; cls++) table[256 + state + cls] = next(state, cls)
  }
  return table
})()

/**
 * From a character boundary, a rest at least this long goes to node's native
 * (SIMD) `isUtf8` at once: beyond it the native call's fixed cost (~60 ns with
 * its view) is less than scanning even ASCII in JS.
 */
const NATIVE_LARGE = 128

/**
 * Shorter rests are scanned for ASCII in JS first; at the first non-ASCII
 * byte, a rest at least this long goes native (the JS DFA costs ~4 ns per
 * non-ASCII byte), a shorter one through the DFA.
 */
const NATIVE_MIN = 32

/**
 * Runs the DFA from `state` over `bytes[start..end)` and returns the new
 * state. Returns `REJECT` as soon as a byte makes the input impossible.
 *
 * Fast paths: runs of ASCII are skipped 4 bytes at a time, and from a
 * character boundary a long rest of the range (or a rest of a few dozen bytes
 * that is not all ASCII) is checked natively up to its last character
 * boundary (only the at most 4 trailing bytes go through the DFA), which gives
 * the same result as the DFA byte by byte.
 *
 * @since 0.1.0
 * @category validation
 */
export const validate = (state: number, bytes: Uint8Array, start: number, end: number): number => {
  let s = state // DFA state after bytes[start..i)
  let i = start // next byte to read
  while (i < end) {
    if (s === ACCEPT) {
      if (end - i < NATIVE_LARGE) {
        // ASCII fast path: 4 bytes per test while no high bit is set.
        while (i + 4 <= end && ((bytes[i] | bytes[i + 1] | bytes[i + 2] | bytes[i + 3]) & 0x80) === 0) i += 4
        while (i < end && bytes[i] < 0x80) i++
        if (i === end) break
      }
      if (end - i >= NATIVE_MIN) {
        // At a character boundary with a long range left: check natively up
        // to the start of the last (possibly incomplete) sequence, found by
        // backing over at most 3 continuation bytes to a lead byte. If the last
        // byte is ASCII, or 4 continuation bytes end the range (never valid),
        // the whole rest is checked natively.
        let cut = end // bytes[i..cut) is checked natively
        for (let k = end - 1; k >= end - 4; k--) {
          const byte = bytes[k]
          if (byte < 0x80) break
          if (byte >= 0xc0) {
            cut = k
            break
          }
        }
        // Before a lead byte (or the end) the bytes must be complete and
        // well-formed: an incomplete sequence followed by a lead byte is invalid.
        if (!isUtf8(i === 0 && cut === bytes.length ? bytes : bytes.subarray(i, cut))) return REJECT
        i = cut
        if (i === end) break
      }
    }
    s = TABLE[256 + s + TABLE[bytes[i]]]
    if (s === REJECT) return REJECT
    i++
  }
  return s
}

/**
 * Whether `bytes` is complete, well-formed UTF-8.
 *
 * @since 0.1.0
 * @category validation
 */
export const isValid = (bytes: Uint8Array): boolean => validate(ACCEPT, bytes, 0, bytes.length) === ACCEPT

/**
 * Whether `bytes[start..end)` is all ASCII (bytes below 0x80), hence valid
 * UTF-8 whose characters are its bytes one for one (so it decodes exactly as
 * latin1). Tests 4 bytes at a time.
 *
 * @since 0.1.0
 * @category validation
 */
export const isAscii = (bytes: Uint8Array, start: number, end: number): boolean => {
  let bits = 0 // OR of every byte seen
  let i = start // next byte to read
  for (; i + 4 <= end; i += 4) bits |= bytes[i] | bytes[i + 1] | bytes[i + 2] | bytes[i + 3]
  for (; i < end; i++) bits |= bytes[i]
  return bits < 0x80
}

const fromCharCode = String.fromCharCode

/** Reusable argument lists for `asciiString`, one per length (calls are synchronous, so sharing is safe). */
const CODES: ReadonlyArray<Array<number>> = Array.from({ length: 65 }, (_, n) => new Array<number>(n).fill(0))

/**
 * `bytes[start..end)`, known to be ASCII, as a string built in JS with one
 * `String.fromCharCode` call (a flat string). For a few dozen bytes this is
 * cheaper than a native decode, whose call alone costs ~50 ns; above 64 bytes
 * it falls back to a native latin1 decode (ASCII is the same in latin1).
 *
 * @since 0.1.0
 * @category decoding
 */
export const asciiString = (bytes: Uint8Array, start: number, end: number): string => {
  const length = end - start
  if (length >= CODES.length) return Buffer.from(bytes.buffer, bytes.byteOffset + start, length).toString("latin1")
  const codes = CODES[length]
  for (let i = 0; i < length; i++) codes[i] = bytes[start + i]
  return fromCharCode.apply(null, codes)
}
