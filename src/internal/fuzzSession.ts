/**
 * The fuzzer's sessions, without I/O: what a session is (frames as a client
 * writes them, any bit and any length, and where its bytes are cut into TCP
 * writes), the fast-check generators of valid and hostile sessions, their
 * encoding, the oracle that says what RFC 6455 requires of a server that
 * receives one, and how a session is printed. The runner is `fuzz.ts`.
 *
 * The oracle is written from the RFC, on its own (it shares nothing with
 * `Connection`), so that websock's own server is held to it like any other.
 *
 * @internal
 */
import * as fc from "fast-check"
import { Buffer, isUtf8 } from "node:buffer"
import * as CloseReason from "../CloseReason.ts"

/**
 * A frame as the fuzzer writes it. `rsv` holds RSV1-3 as bits 4, 2, 1;
 * `mask` undefined sends it unmasked (a violation from a client, RFC 6455
 * §5.1); `length` makes the header lie: `"msb"` a 64-bit length with its
 * most significant bit set (§5.2), `"huge"` 2^50 bytes (no server holds
 * that: 1009); the payload is then not sent.
 */
export interface WireFrame {
  readonly fin: boolean
  readonly rsv: number
  readonly opcode: number
  readonly payload: Uint8Array
  readonly mask: Uint8Array | undefined
  readonly length?: "msb" | "huge" | undefined
  /** What the generator meant by it, for the printout. */
  readonly note: string
}

/** A session: its frames in order, written in pieces cut at `cuts`, then TCP ended (`end: "fin"`) or left to the Close exchange. */
export interface Session {
  readonly frames: ReadonlyArray<WireFrame>
  /** Offsets (modulo the session's length) where its bytes are cut into separate writes. */
  readonly cuts: ReadonlyArray<number>
  /** "close": the last frame is our Close and we wait for the server's; "fin": we end TCP without one. */
  readonly end: "close" | "fin"
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/** One frame's bytes (its header as given: lengths and bits are not checked). */
export const encodeFrame = (frame: WireFrame): Uint8Array => {
  const payload = frame.payload
  const lying = frame.length !== undefined
  const n = payload.length
  const size = lying ? 10 : n < 126 ? 2 : n < 65536 ? 4 : 10
  const mask = frame.mask
  const out = new Uint8Array(size + (mask === undefined ? 0 : 4) + (lying ? 0 : n))
  out[0] = (frame.fin ? 0x80 : 0) | ((frame.rsv & 7) << 4) | (frame.opcode & 0x0f)
  const view = new DataView(out.buffer)
  if (lying) {
    out[1] = 127
    if (frame.length === "msb") view.setUint32(2, 0x80000000)
    else view.setUint32(2, 0x40000) // 2^50
  } else if (size === 2) {
    out[1] = n
  } else if (size === 4) {
    out[1] = 126
    view.setUint16(2, n)
  } else {
    out[1] = 127
    view.setUint32(6, n)
  }
  if (mask !== undefined) {
    out[1]! |= 0x80
    out.set(mask, size)
    if (!lying) for (let i = 0; i < n; i++) out[size + 4 + i] = payload[i]! ^ mask[i & 3]!
  } else if (!lying) {
    out.set(payload, size)
  }
  return out
}

/** The session's bytes, and the pieces they are written in. */
export const encodeSession = (session: Session): { readonly bytes: Uint8Array; readonly pieces: ReadonlyArray<Uint8Array> } => {
  const bytes = Buffer.concat(session.frames.map(encodeFrame))
  const points = [...new Set(session.cuts.map((c) => (bytes.length === 0 ? 0 : c % bytes.length)))].filter((c) => c > 0).sort((a, b) => a - b)
  const pieces: Array<Uint8Array> = []
  let from = 0 // start of the next piece
  for (const point of points) {
    pieces.push(bytes.subarray(from, point))
    from = point
  }
  if (from < bytes.length) pieces.push(bytes.subarray(from))
  return { bytes, pieces }
}

// ---------------------------------------------------------------------------
// The oracle (RFC 6455 §5, §7, §8.1)
// ---------------------------------------------------------------------------

/** What a server owes for a session. */
export interface Expectation {
  /** Close codes a violation in it may be answered with (empty: no violation to answer). */
  readonly violationCodes: ReadonlySet<number>
  /** Whether a clean end is acceptable: our Close answered with a Close (or, for "fin", nothing). */
  readonly cleanAllowed: boolean
  /** Ping payloads sent before the session's end (our Close, or the first violation). */
  readonly pings: ReadonlyArray<Uint8Array>
  /** What the violation was, for the printout. */
  readonly violation: string | undefined
}

/** The verdict of a length with its most significant bit set: 1002 or 1009. */
const MSB = -1

interface Verdict {
  /** The code RFC 6455 requires (MSB: 1002 or 1009), undefined when the session has no violation. */
  readonly code: number | undefined
  readonly why: string | undefined
  readonly pings: ReadonlyArray<Uint8Array>
}

/**
 * Walks the frames as the RFC reads them. `failFast`: invalid UTF-8 is a
 * violation at the frame where the text so far can no longer be UTF-8
 * (§8.1 allows it, Autobahn's strict grade asks it); otherwise at the end of
 * the message. Stops at the first violation or at our Close.
 */
const judge = (frames: ReadonlyArray<WireFrame>, failFast: boolean): Verdict => {
  const pings: Array<Uint8Array> = []
  let message: { text: boolean; bytes: Array<Uint8Array> } | undefined = undefined // the fragmented message in progress
  const fail = (code: number, why: string): Verdict => ({ code, why, pings })
  for (const frame of frames) {
    if (frame.rsv !== 0) return fail(1002, "RSV bits set with no extension negotiated (§5.2)")
    const op = frame.opcode
    if ((op > 2 && op < 8) || op > 10) return fail(1002, `reserved opcode 0x${op.toString(16)} (§5.2)`)
    if (frame.mask === undefined) return fail(1002, "unmasked frame from the client (§5.1)")
    // §5.2 makes it malformed (1002); such a length is also past any limit (1009, as ws answers): either code.
    if (frame.length === "msb") return fail(MSB, "64-bit length with its most significant bit set (§5.2)")
    if (op >= 8) {
      if (!frame.fin) return fail(1002, "fragmented control frame (§5.5)")
      if (frame.length === "huge" || frame.payload.length > 125) return fail(1002, "control frame longer than 125 bytes (§5.5)")
      if (op === 9) pings.push(frame.payload)
      if (op === 8) {
        const p = frame.payload
        if (p.length === 1) return fail(1002, "1-byte Close payload (§5.5.1)")
        if (p.length >= 2) {
          const code = (p[0]! << 8) | p[1]!
          if (!CloseReason.isSendable(code)) return fail(1002, `invalid close code ${code} (§7.4)`)
          if (!isUtf8(p.subarray(2))) return fail(1007, "Close reason not UTF-8 (§5.5.1, §8.1)")
        }
        return { code: undefined, why: undefined, pings }
      }
      continue
    }
    if (frame.length === "huge") return fail(1009, "a 2^50-byte frame (§7.4.1: too big to process)")
    if (op === 0) {
      if (message === undefined) return fail(1002, "continuation frame with no message to continue (§5.4)")
    } else {
      if (message !== undefined) return fail(1002, "new data frame inside a fragmented message (§5.4)")
      message = { text: op === 1, bytes: [] }
    }
    message.bytes.push(frame.payload)
    if (message.text) {
      const text = Buffer.concat(message.bytes)
      if (frame.fin ? !isUtf8(text) : failFast && !utf8Prefix(text)) return fail(1007, "text that is not UTF-8 (§8.1)")
    }
    if (frame.fin) message = undefined
  }
  return { code: undefined, why: undefined, pings }
}

/** Whether `bytes` can still begin a UTF-8 text (some continuation makes it valid). */
const utf8Prefix = (bytes: Uint8Array): boolean => {
  for (let cut = 0; cut <= 3 && cut <= bytes.length; cut++) {
    const head = bytes.subarray(0, bytes.length - cut)
    if (!isUtf8(head)) continue
    const tail = bytes.subarray(bytes.length - cut)
    if (cut === 0 || completes(tail)) return true
  }
  return false
}

/** Whether an incomplete sequence of 1-3 bytes can be completed into one UTF-8 character. */
const completes = (tail: Uint8Array): boolean => {
  for (const filler of [[0x80, 0x80, 0x80], [0x90, 0x80, 0x80], [0xa0, 0x80, 0x80], [0xbf, 0x80, 0x80]]) {
    const lead = tail[0]!
    const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1
    if (tail.length >= need) return false
    const candidate = Uint8Array.from([...tail, ...filler.slice(0, need - tail.length)])
    if (isUtf8(candidate)) return true
  }
  return false
}

/** What a server owes for the session: either reading of §8.1 (fail fast or at the message's end) is accepted. */
export const expect = (session: Session): Expectation => {
  const fast = judge(session.frames, true)
  const lazy = judge(session.frames, false)
  const codes = new Set<number>()
  for (const code of [fast.code, lazy.code]) {
    if (code === MSB) codes.add(1002).add(1009)
    else if (code !== undefined) codes.add(code)
  }
  return {
    violationCodes: codes,
    cleanAllowed: fast.code === undefined || lazy.code === undefined,
    pings: fast.code === undefined ? fast.pings : lazy.code === undefined ? lazy.pings : fast.pings,
    violation: fast.why ?? lazy.why
  }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

const key = fc.uint8Array({ minLength: 4, maxLength: 4 })
const bytes = (max: number) => fc.uint8Array({ maxLength: max })
const NO_MASK_NOTE = ""

const frameOf = (fin: boolean, opcode: number, payload: Uint8Array, mask: Uint8Array | undefined, note: string, rsv = 0): WireFrame => ({
  fin,
  rsv,
  opcode,
  payload,
  mask,
  note
})

/** Splits `payload` at `points` (fractions of its length) into the fragments of one message (§5.4). */
const fragment = (opcode: number, payload: Uint8Array, points: ReadonlyArray<number>, keys: ReadonlyArray<Uint8Array>, note: string): Array<WireFrame> => {
  const cuts = [...new Set(points.map((p) => Math.floor(p * payload.length)))].filter((c) => c > 0 && c < payload.length).sort((a, b) => a - b)
  const pieces: Array<Uint8Array> = []
  let from = 0 // start of the next fragment
  for (const cut of cuts) {
    pieces.push(payload.subarray(from, cut))
    from = cut
  }
  pieces.push(payload.subarray(from))
  return pieces.map((piece, i) => frameOf(i === pieces.length - 1, i === 0 ? opcode : 0, piece, keys[i % keys.length]!, i === 0 ? note : `${note} (fragment ${i + 1})`))
}

const fractions = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 4 })

const encoder = new TextEncoder()

/** A valid text or binary message, perhaps fragmented, with Pings and Pongs perhaps between its fragments. */
const validMessage: fc.Arbitrary<Array<WireFrame>> = fc
  .tuple(
    fc.oneof(fc.string({ maxLength: 64, unit: "grapheme" }).map((s) => ({ text: true, payload: encoder.encode(s) })), bytes(300).map((b) => ({ text: false, payload: b }))),
    fractions,
    fc.array(key, { minLength: 1, maxLength: 3 }),
    fc.array(fc.tuple(fc.boolean(), bytes(20), key), { maxLength: 2 })
  )
  .map(([message, points, keys, controls]) => {
    const frames = fragment(message.text ? 1 : 2, message.payload, points, keys, message.text ? "valid text" : "valid binary")
    // Control frames may be injected between fragments (§5.4).
    controls.forEach(([ping, payload, k], i) => {
      const at = 1 + (i % Math.max(1, frames.length))
      frames.splice(Math.min(at, frames.length), 0, frameOf(true, ping ? 9 : 10, payload, k, ping ? "ping" : "unsolicited pong"))
    })
    return frames
  })

const ping = fc.tuple(bytes(125), key).map(([payload, k]) => [frameOf(true, 9, payload, k, "ping")])

/** Byte sequences that are never UTF-8 (§8.1): stray continuation, overlong, surrogate, above U+10FFFF, truncated. */
const BAD_UTF8 = [[0x80], [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xff], [0xce, 0x41], [0xf0, 0x9f, 0x98]]

/** Text whose bytes are not UTF-8, fragmented at arbitrary points (inside characters too). */
const badUtf8: fc.Arbitrary<Array<WireFrame>> = fc
  .tuple(fc.string({ maxLength: 20 }), fc.constantFrom(...BAD_UTF8), fc.string({ maxLength: 20 }), fractions, fc.array(key, { minLength: 1, maxLength: 3 }))
  .map(([before, bad, after, points, keys]) => {
    const payload = Buffer.concat([encoder.encode(before), Uint8Array.from(bad), encoder.encode(after)])
    return fragment(1, payload, points, keys, "text with invalid UTF-8")
  })

const closePayload = (code: number, reason: Uint8Array): Uint8Array => Buffer.concat([Uint8Array.of(code >> 8, code & 0xff), reason])

/** Close codes that may not be sent (§7.4): below 1000, 1004-1006, 1015, 1016-2999, 5000 and up. */
const badCloseCode = fc.oneof(fc.integer({ min: 0, max: 999 }), fc.constantFrom(1004, 1005, 1006, 1015), fc.integer({ min: 1016, max: 2999 }), fc.integer({ min: 5000, max: 65535 }))

/** One hostile element: each breaks exactly one rule. */
const hostile: fc.Arbitrary<Array<WireFrame>> = fc.oneof(
  fc.tuple(fc.integer({ min: 1, max: 7 }), bytes(20), key).map(([rsv, p, k]) => [frameOf(true, 2, p, k, `RSV bits ${rsv.toString(2).padStart(3, "0")}`, rsv)]),
  fc.tuple(fc.constantFrom(3, 4, 5, 6, 7, 11, 12, 13, 14, 15), bytes(20), key).map(([op, p, k]) => [frameOf(true, op, p, k, `reserved opcode 0x${op.toString(16)}`)]),
  badUtf8,
  fc.tuple(fc.constantFrom(8, 9, 10), fc.integer({ min: 126, max: 300 }), key).map(([op, n, k]) => [frameOf(true, op, new Uint8Array(n).fill(0x61), k, `control frame of ${n} bytes`)]),
  fc.tuple(bytes(20), key).map(([p, k]) => [frameOf(false, 9, p, k, "fragmented ping")]),
  fc.tuple(bytes(20), key).map(([p, k]) => [frameOf(true, 0, p, k, "continuation with no message")]),
  fc.tuple(bytes(10), bytes(10), key).map(([a, b, k]) => [frameOf(false, 1, encoder.encode("ab"), k, "text, first fragment"), frameOf(true, 2, b.length > 0 ? b : a, k, "binary inside it")]),
  fc.tuple(badCloseCode, key).map(([code, k]) => [frameOf(true, 8, closePayload(code, new Uint8Array(0)), k, `Close with code ${code}`)]),
  key.map((k) => [frameOf(true, 8, Uint8Array.of(0x03), k, "Close with a 1-byte payload")]),
  fc.tuple(fc.constantFrom(...BAD_UTF8), key).map(([bad, k]) => [frameOf(true, 8, closePayload(1000, Uint8Array.from(bad)), k, "Close with a reason that is not UTF-8")]),
  bytes(20).map((p) => [frameOf(true, 2, p, undefined, "unmasked binary")]),
  fc.tuple(fc.constantFrom<"msb" | "huge">("msb", "huge"), key).map(([length, k]) => [{ ...frameOf(true, 2, new Uint8Array(0), k, length === "msb" ? "64-bit length, MSB set" : "2^50-byte binary"), length }])
)

/** A valid Close from us, perhaps in the middle of the session (what follows it is to be ignored). */
const earlyClose: fc.Arbitrary<Array<WireFrame>> = fc
  .tuple(fc.constantFrom(1000, 1001, 1003, 3000, 4999), fc.string({ maxLength: 20 }), key)
  .map(([code, reason, k]) => [frameOf(true, 8, closePayload(code, encoder.encode(reason).subarray(0, 100)), k, `Close ${code}`)])

/**
 * Sessions of up to `maxSteps` elements: valid messages (fragmented, with
 * control frames between fragments), Pings, hostile frames and early
 * Closes, cut into TCP writes at arbitrary points, ending with our Close
 * (mostly) or with TCP's end.
 */
export const session = (maxSteps: number): fc.Arbitrary<Session> =>
  fc
    .record({
      steps: fc.array(fc.oneof(
          // Shrinking goes towards the first: a lone Ping is the smallest session.
          { arbitrary: ping, weight: 2 },
          { arbitrary: validMessage, weight: 4 },
          { arbitrary: hostile, weight: 3 },
          { arbitrary: earlyClose, weight: 1 }
        ), {
        minLength: 1,
        maxLength: maxSteps
      }),
      cuts: fc.array(fc.nat({ max: 1 << 20 }), { maxLength: 12 }),
      end: fc.oneof({ arbitrary: fc.constant<"close">("close"), weight: 5 }, { arbitrary: fc.constant<"fin">("fin"), weight: 1 }),
      last: key
    })
    .map(({ steps, cuts, end, last }) => {
      const frames = steps.flat()
      if (end === "close") frames.push(frameOf(true, 8, closePayload(1000, new Uint8Array(0)), last, "Close 1000 (end of session)"))
      return { frames, cuts, end }
    })

// ---------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------

const OPCODES: Record<number, string> = { 0: "Continuation", 1: "Text", 2: "Binary", 8: "Close", 9: "Ping", 10: "Pong" }

const hex = (b: Uint8Array, max = 48): string => {
  const shown = Buffer.from(b.subarray(0, max)).toString("hex").replace(/(..)/g, "$1 ").trim()
  return b.length > max ? `${shown} ... (${b.length} bytes)` : shown
}

/** The session as frames (one per line) and bytes, for a failure's report. */
export const describeSession = (session: Session): string => {
  const lines = session.frames.map((f, i) => {
    const op = OPCODES[f.opcode] ?? `opcode 0x${f.opcode.toString(16)}`
    const rsv = f.rsv === 0 ? "" : ` rsv=${f.rsv.toString(2).padStart(3, "0")}`
    const length = f.length === undefined ? `${f.payload.length} bytes` : f.length === "msb" ? "length 2^63+" : "length 2^50"
    const mask = f.mask === undefined ? " UNMASKED" : ""
    const payload = f.length === undefined && f.payload.length > 0 ? `: ${hex(f.payload, 24)}` : ""
    return `  #${i} ${op}${f.fin ? "" : " (FIN clear)"}${rsv}${mask}, ${length}${payload}   <- ${f.note || NO_MASK_NOTE}`
  })
  const { bytes, pieces } = encodeSession(session)
  return [
    `session: ${session.frames.length} frames, ${bytes.length} bytes in ${pieces.length} writes (${pieces.map((p) => p.length).join(" + ")}), then ${session.end === "close" ? "wait for the server's Close" : "TCP FIN"}`,
    ...lines,
    `bytes: ${hex(bytes, 256)}`
  ].join("\n")
}
