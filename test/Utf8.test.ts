import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Utf8 from "../src/Utf8.ts"
import { hex, text as utf8 } from "./support/Bytes.ts"

const bytes = (...values: ReadonlyArray<number>): Uint8Array => Uint8Array.from(values)

/** The reference: a fatal WHATWG decoder (streaming, so truncation is not an error). */
type Verdict = "valid" | "incomplete" | "invalid"
const reference = (input: Uint8Array): Verdict => {
  const decoder = new TextDecoder("utf-8", { fatal: true })
  try {
    decoder.decode(input, { stream: true })
  } catch {
    return "invalid"
  }
  try {
    decoder.decode()
    return "valid"
  } catch {
    return "incomplete"
  }
}

const verdict = (state: number): Verdict =>
  state === Utf8.ACCEPT ? "valid" : state === Utf8.REJECT ? "invalid" : "incomplete"

/** Byte by byte: never takes the native fast path nor the ASCII skip across bytes. */
const byteByByte = (input: Uint8Array): number => {
  let state = Utf8.ACCEPT
  for (let i = 0; i < input.length; i++) state = Utf8.validate(state, input, i, i + 1)
  return state
}

/** Mostly-UTF-8 bytes with random damage: valid text, truncations, stray bytes. */
const utf8ish = fc
  .array(
    fc.oneof(
      fc.string({ unit: "binary", maxLength: 20 }).map((s) => Array.from(utf8(s))),
      fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 4 }),
      fc.constantFrom([0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xf0, 0x8f])
    ),
    { maxLength: 30 }
  )
  .map((parts) => Uint8Array.from(parts.flat()))

describe("Utf8.validate", () => {
  it("accepts well-formed text at the edges of each encoding length", () => {
    for (const text of ["", "a", "\u007f", "\u0080", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff", "\u{10000}", "\u{10ffff}", "κόσμε", "Hello-µ@ßöäüàá-UTF-8!!"]) {
      const encoded = utf8(text)
      expect(Utf8.validate(Utf8.ACCEPT, encoded, 0, encoded.length), text).toBe(Utf8.ACCEPT)
    }
  })

  it("rejects at the first byte that makes the sequence impossible (fail-fast)", () => {
    // [input, number of bytes after which the state is REJECT]
    const cases: ReadonlyArray<readonly [Uint8Array, number]> = [
      [bytes(0x80), 1], // lone continuation
      [bytes(0xc0, 0x80), 1], // C0 never appears (overlong NUL)
      [bytes(0xc1, 0xbf), 1],
      [bytes(0xe0, 0x80, 0x80), 2], // overlong 3-byte
      [bytes(0xe0, 0x9f, 0xbf), 2],
      [bytes(0xed, 0xa0, 0x80), 2], // surrogate U+D800
      [bytes(0xed, 0xbf, 0xbf), 2], // surrogate U+DFFF
      [bytes(0xf0, 0x8f, 0xbf, 0xbf), 2], // overlong 4-byte
      [bytes(0xf4, 0x90, 0x80, 0x80), 2], // U+110000
      [bytes(0xf5, 0x80, 0x80, 0x80), 1],
      [bytes(0xff), 1],
      [bytes(0xc3, 0x41), 2], // lead byte followed by ASCII
      [bytes(0xe2, 0x82, 0xe2), 3],
      [bytes(0x41, 0x42, 0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80), 15]
    ]
    for (const [input, at] of cases) {
      let state = Utf8.ACCEPT
      for (let i = 0; i < input.length; i++) {
        state = Utf8.validate(state, input, i, i + 1)
        expect(state === Utf8.REJECT, `${hex(input)} after ${i + 1} bytes`).toBe(i + 1 >= at)
      }
      expect(Utf8.validate(Utf8.ACCEPT, input, 0, input.length)).toBe(Utf8.REJECT)
    }
  })

  it("leaves a truncated sequence neither accepted nor rejected", () => {
    for (const input of [bytes(0xc3), bytes(0xe2, 0x82), bytes(0xf0, 0x9f, 0x98), bytes(0xf4, 0x8f, 0xbf), bytes(0xed, 0x9f)]) {
      const state = Utf8.validate(Utf8.ACCEPT, input, 0, input.length)
      expect(state).not.toBe(Utf8.ACCEPT)
      expect(state).not.toBe(Utf8.REJECT)
    }
  })

  it("REJECT is sticky", () => {
    expect(Utf8.validate(Utf8.REJECT, bytes(0x41, 0x42), 0, 2)).toBe(Utf8.REJECT)
    expect(Utf8.validate(Utf8.REJECT, new Uint8Array(0), 0, 0)).toBe(Utf8.REJECT)
  })

  it("validates only bytes[start..end)", () => {
    const input = bytes(0xff, 0x41, 0xc3, 0xa9, 0xff)
    expect(Utf8.validate(Utf8.ACCEPT, input, 1, 4)).toBe(Utf8.ACCEPT)
    expect(Utf8.validate(Utf8.ACCEPT, input, 1, 3)).not.toBe(Utf8.ACCEPT)
    const long = new Uint8Array(300).fill(0x61)
    long[0] = 0xff
    long[299] = 0xff
    expect(Utf8.validate(Utf8.ACCEPT, long, 1, 299)).toBe(Utf8.ACCEPT)
    expect(Utf8.validate(Utf8.ACCEPT, long, 1, 300)).toBe(Utf8.REJECT)
  })

  it("agrees with a fatal decoder on every 1- and 2-byte input", () => {
    const input = new Uint8Array(2)
    for (let a = 0; a < 256; a++) {
      input[0] = a
      expect(verdict(Utf8.validate(Utf8.ACCEPT, input, 0, 1))).toBe(reference(input.subarray(0, 1)))
      for (let b = 0; b < 256; b++) {
        input[1] = b
        const got = verdict(Utf8.validate(Utf8.ACCEPT, input, 0, 2))
        if (got !== reference(input)) expect(got, `${a.toString(16)} ${b.toString(16)}`).toBe(reference(input))
      }
    }
  })

  it("agrees with a fatal decoder on 3- and 4-byte inputs around every boundary", () => {
    const edges = [0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff]
    const input = new Uint8Array(4)
    for (const a of edges) for (const b of edges) for (const c of edges) {
      input[0] = a
      input[1] = b
      input[2] = c
      const three = input.subarray(0, 3)
      const got3 = verdict(Utf8.validate(Utf8.ACCEPT, three, 0, 3))
      if (got3 !== reference(three)) expect(got3, hex(three)).toBe(reference(three))
      if (a < 0xf0) continue // only 4-byte leads can make a 4-byte input differ from its 3-byte prefix
      for (const d of edges) {
        input[3] = d
        const got4 = verdict(Utf8.validate(Utf8.ACCEPT, input, 0, 4))
        if (got4 !== reference(input)) expect(got4, hex(input)).toBe(reference(input))
      }
    }
  })

  it("agrees with a fatal decoder on random, mostly-UTF-8 input", () => {
    fc.assert(
      fc.property(utf8ish, (input) => {
        expect(verdict(Utf8.validate(Utf8.ACCEPT, input, 0, input.length))).toBe(reference(input))
      }),
      { numRuns: 500 }
    )
  })

  it("gives the same state however the input is split (incremental)", () => {
    fc.assert(
      fc.property(utf8ish, fc.array(fc.nat(), { maxLength: 6 }), (input, rawCuts) => {
        const cuts = [...new Set(rawCuts.map((c) => c % (input.length + 1)))].sort((x, y) => x - y)
        let state = Utf8.ACCEPT
        let from = 0
        for (const cut of [...cuts, input.length]) {
          state = Utf8.validate(state, input, from, cut)
          from = cut
        }
        expect(state).toBe(Utf8.validate(Utf8.ACCEPT, input, 0, input.length))
        expect(state).toBe(byteByByte(input))
      }),
      { numRuns: 500 }
    )
  })

  it("the native fast path on long ranges agrees with the DFA byte by byte", () => {
    const long = fc
      .tuple(fc.string({ unit: "binary", minLength: 130, maxLength: 300 }), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean(), fc.nat({ max: 4 }))
      .map(([text, position, byte, damage, truncate]) => {
        const encoded = utf8(text)
        if (damage) encoded[position % encoded.length] = byte
        return encoded.subarray(0, encoded.length - truncate)
      })
    fc.assert(
      fc.property(long, fc.nat(), (input, rawSplit) => {
        const state = Utf8.validate(Utf8.ACCEPT, input, 0, input.length)
        expect(state).toBe(byteByByte(input))
        expect(verdict(state)).toBe(reference(input))
        // resumed mid-character: the native path is taken once a boundary is reached
        const split = rawSplit % (input.length + 1)
        expect(Utf8.validate(Utf8.validate(Utf8.ACCEPT, input, 0, split), input, split, input.length)).toBe(state)
      }),
      { numRuns: 300 }
    )
  })

  it("isValid is validate from ACCEPT ending in ACCEPT", () => {
    expect(Utf8.isValid(utf8("héllo wörld €𝄞"))).toBe(true)
    expect(Utf8.isValid(bytes(0xe2, 0x82))).toBe(false)
    expect(Utf8.isValid(bytes(0xed, 0xa0, 0x80))).toBe(false)
  })

  it("isAscii is true exactly when no byte has its high bit set", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), fc.nat(), (input, rawStart) => {
        const start = rawStart % (input.length + 1)
        expect(Utf8.isAscii(input, start, input.length)).toBe(input.subarray(start).every((b) => b < 0x80))
      }),
      { numRuns: 300 }
    )
  })

  it("asciiString decodes ASCII of any length exactly", () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)), maxLength: 100 }), fc.nat({ max: 5 }), (text, pad) => {
        const bytes = new Uint8Array(pad + text.length + pad)
        bytes.set(utf8(text), pad) // ASCII: one byte a character
        expect(Utf8.asciiString(bytes, pad, pad + text.length)).toBe(text)
        expect(Utf8.asciiString(bytes.subarray(pad), 0, text.length)).toBe(text)
      }),
      { numRuns: 200 }
    )
  })
})
