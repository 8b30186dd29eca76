import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Frame from "../src/Frame.ts"
import * as Arb from "./arbitraries.ts"
import { hex, text } from "./support/Bytes.ts"

const bytes = (...values: ReadonlyArray<number>): Uint8Array => Uint8Array.from(values)
const same = (a: Uint8Array, b: Uint8Array): boolean =>
  Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))

const SERVER: Frame.DecoderOptions = { role: "server", maxPayload: Number.MAX_SAFE_INTEGER, allowRsv1: false }
const CLIENT: Frame.DecoderOptions = { role: "client", maxPayload: Number.MAX_SAFE_INTEGER, allowRsv1: false }

interface Outcome {
  readonly frames: ReadonlyArray<Frame.Frame>
  /** undefined when every chunk decoded without a violation */
  readonly code: number | undefined
  readonly state: Frame.DecoderState | undefined
}

/** Folds `decode` over the chunks, stopping at the first violation. */
const decodeAll = (options: Frame.DecoderOptions, chunks: ReadonlyArray<Uint8Array>): Outcome => {
  const frames: Array<Frame.Frame> = []
  let state = Frame.initialDecoder(options)
  for (const chunk of chunks) {
    const result = Frame.decode(state, chunk)
    frames.push(...result.frames)
    if (result._tag === "Violation") return { frames, code: result.failure.code, state: undefined }
    state = result.state
  }
  return { frames, code: undefined, state }
}

const sameFrames = (actual: ReadonlyArray<Frame.Frame>, expected: ReadonlyArray<Frame.Frame>): void => {
  expect(actual.length).toBe(expected.length)
  actual.forEach((frame, i) => {
    const want = expected[i]
    expect({ fin: frame.fin, rsv1: frame.rsv1, rsv2: frame.rsv2, rsv3: frame.rsv3, opcode: frame.opcode }).toEqual({
      fin: want.fin,
      rsv1: want.rsv1,
      rsv2: false,
      rsv3: false,
      opcode: want.opcode
    })
    expect(frame.payload.length).toBe(want.payload.length)
    expect(same(frame.payload, want.payload)).toBe(true)
  })
}

/** Decodes `input` whole and one byte at a time: both must agree on the code (undefined = no violation). */
const codeOf = (options: Frame.DecoderOptions, input: Uint8Array): number | undefined => {
  const whole = decodeAll(options, [input.slice()])
  const byByte = decodeAll(options, Arb.chop(input, [1]))
  expect(byByte.code).toBe(whole.code)
  return whole.code
}

describe("Frame round trip", () => {
  it("encode -> chop -> decode returns the same frames: masked, server role", () => {
    fc.assert(
      fc.property(Arb.frames({ rsv1: true }), Arb.maskKey, Arb.chopSizes, (frames, mask, sizes) => {
        const wire = Arb.encodeAll(frames, mask)
        const out = decodeAll({ ...SERVER, allowRsv1: true }, Arb.chop(wire, sizes))
        expect(out.code).toBeUndefined()
        sameFrames(out.frames, frames)
        expect(out.state && Frame.partial(out.state)).toBeUndefined()
      }),
      { numRuns: 60 }
    )
  })

  it("encode -> chop -> decode returns the same frames: unmasked, client role", () => {
    fc.assert(
      fc.property(Arb.frames(), Arb.chopSizes, (frames, sizes) => {
        const out = decodeAll(CLIENT, Arb.chop(Arb.encodeAll(frames), sizes))
        expect(out.code).toBeUndefined()
        sameFrames(out.frames, frames)
      }),
      { numRuns: 60 }
    )
  })

  it("small frames fed one byte at a time", () => {
    fc.assert(
      fc.property(Arb.frames({ maxLength: 300, maxFrames: 8 }), Arb.maskKey, (frames, mask) => {
        sameFrames(decodeAll(SERVER, Arb.chop(Arb.encodeAll(frames, mask), [1])).frames, frames)
      }),
      { numRuns: 100 }
    )
  })

  it("a frame within one chunk is a view of that chunk, unmasked in place", () => {
    const [header, masked] = Frame.encode(Frame.Opcode.Binary, text("abcdefgh"), { mask: bytes(1, 2, 3, 4) })
    const chunk = Arb.concat([header, masked])
    const result = Frame.decode(Frame.initialDecoder(SERVER), chunk)
    expect(result._tag).toBe("Ok")
    expect(result.frames[0].payload.buffer).toBe(chunk.buffer)
    expect(text(chunk.subarray(header.length))).toBe("abcdefgh")
  })

  it("a payload that arrives whole after its header is still a view, not a copy", () => {
    const [header, body] = Frame.encode(Frame.Opcode.Binary, new Uint8Array(1000).fill(7))
    const first = Frame.decode(Frame.initialDecoder(CLIENT), header.slice())
    if (first._tag !== "Ok") throw new Error("violation")
    expect(Frame.partial(first.state)?.received.length).toBe(0)
    const chunk = body.slice()
    const second = Frame.decode(first.state, chunk)
    expect(second.frames[0].payload.buffer).toBe(chunk.buffer)
  })
})

describe("partial", () => {
  it("exposes the unmasked prefix of the frame in progress", () => {
    fc.assert(
      fc.property(Arb.frame({ maxLength: 70000 }), Arb.maskKey, Arb.chopSizes, (frame, mask, sizes) => {
        const [header] = Frame.encode(frame.opcode, frame.payload, { fin: frame.fin, mask })
        const chunks = Arb.chop(Arb.encodeAll([frame], mask), sizes)
        let state = Frame.initialDecoder(SERVER) // decoder after the chunks so far
        let fed = 0 // bytes fed so far
        let checked = 0 // received bytes already compared (each byte is compared once: linear)
        for (const chunk of chunks) {
          const result = Frame.decode(state, chunk)
          if (result._tag !== "Ok") throw new Error(result.failure.reason)
          state = result.state
          fed += chunk.length
          const progress = Frame.partial(state)
          if (result.frames.length === 1 || fed < header.length) {
            if (progress !== undefined) throw new Error(`partial frame after ${fed} bytes`)
            continue
          }
          if (progress === undefined) throw new Error(`no partial frame after ${fed} bytes`)
          const received = progress.received
          // Every payload byte received so far, unmasked.
          const ok = progress.opcode === frame.opcode &&
            progress.fin === frame.fin &&
            progress.length === frame.payload.length &&
            received.length === fed - header.length &&
            same(received.subarray(checked), frame.payload.subarray(checked, received.length))
          if (!ok) throw new Error(`wrong partial frame after ${fed} bytes`)
          checked = received.length
        }
      }),
      { numRuns: 60 }
    )
  })

  it("shows each masked byte as it arrives", () => {
    // RFC 6455 §5.7: masked "Hello", one byte at a time.
    const wire = bytes(0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58)
    let state = Frame.initialDecoder(SERVER) // decoder after the bytes so far
    const seen: Array<string> = []
    for (const chunk of Arb.chop(wire, [1])) {
      const result = Frame.decode(state, chunk)
      if (result._tag !== "Ok") throw new Error(result.failure.reason)
      state = result.state
      const progress = Frame.partial(state)
      if (progress !== undefined) seen.push(text(progress.received))
    }
    // After the header: nothing; then "H"... "Hell" (a view of the copy); the last byte completes the frame.
    expect(seen).toEqual(["", "H", "He", "Hel", "Hell"])
  })
})

describe("Frame decoding never throws", () => {
  it("on random bytes, chopped, and the outcome does not depend on the chop", () => {
    const garbage = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      // Valid frames followed by random bytes, to reach deeper states.
      fc.tuple(Arb.frames({ maxLength: 300 }), Arb.maskKey, fc.uint8Array({ maxLength: 40 })).map(
        ([frames, mask, tail]) => Arb.concat([Arb.encodeAll(frames, mask), tail])
      )
    )
    fc.assert(
      fc.property(
        garbage,
        Arb.chopSizes,
        fc.constantFrom(SERVER, CLIENT, { ...SERVER, allowRsv1: true, maxPayload: 100 }),
        (input, sizes, options) => {
          const whole = decodeAll(options, [input.slice()])
          const chopped = decodeAll(options, Arb.chop(input, sizes))
          expect(chopped.code).toBe(whole.code)
          sameFrames(chopped.frames, whole.frames)
        }
      ),
      { numRuns: 300 }
    )
  })

  it("on empty chunks", () => {
    const result = Frame.decode(Frame.initialDecoder(SERVER), new Uint8Array(0))
    expect(result._tag).toBe("Ok")
    expect(result.frames).toEqual([])
  })
})

describe("violations", () => {
  const M = [0x01, 0x02, 0x03, 0x04] // a masking key
  const masked = (b0: number, length7: number, ...rest: ReadonlyArray<number>) =>
    bytes(b0, 0x80 | length7, ...rest, ...M)

  it.each([
    ["unmasked frame from a client (server role)", 1002, SERVER, bytes(0x81, 0x00)],
    ["masked frame from a server (client role)", 1002, CLIENT, masked(0x81, 0)],
    ["RSV1 without an extension", 1002, SERVER, masked(0xc1, 0)],
    ["RSV2", 1002, SERVER, masked(0xa1, 0)],
    ["RSV3", 1002, SERVER, masked(0x91, 0)],
    ["RSV2 even with permessage-deflate", 1002, { ...SERVER, allowRsv1: true }, masked(0xa1, 0)],
    ["RSV1 on a continuation frame", 1002, { ...SERVER, allowRsv1: true }, masked(0xc0, 0)],
    ["RSV1 on a ping", 1002, { ...SERVER, allowRsv1: true }, masked(0xc9, 0)],
    ["fragmented ping", 1002, SERVER, masked(0x09, 0)],
    ["fragmented close", 1002, SERVER, masked(0x08, 0)],
    ["control frame of 126 bytes", 1002, SERVER, masked(0x89, 126, 0x00, 0x7e)],
    ["16-bit length below 126 (non-minimal)", 1002, SERVER, masked(0x82, 126, 0x00, 0x7d)],
    ["64-bit length below 65536 (non-minimal)", 1002, SERVER, masked(0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff)],
    ["64-bit length with the MSB set", 1002, SERVER, masked(0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0)],
    ["64-bit length above 2^53-1", 1009, SERVER, masked(0x82, 127, 0x00, 0x20, 0, 0, 0, 0, 0, 0)],
    ["7-bit length above maxPayload", 1009, { ...SERVER, maxPayload: 10 }, masked(0x82, 11)],
    ["16-bit length above maxPayload", 1009, { ...SERVER, maxPayload: 1000 }, masked(0x82, 126, 0x03, 0xe9)],
    ["64-bit length above maxPayload", 1009, { ...SERVER, maxPayload: 1 << 20 }, masked(0x82, 127, 0, 0, 0, 0, 0, 0x10, 0, 1)],
  ] as const)("%s: %d from the header alone", (_, code, options, header) => {
    // No payload follows: the violation must be found before any is buffered.
    expect(codeOf(options, header)).toBe(code)
  })

  it.each([3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf])("reserved opcode %i: 1002", (opcode) => {
    expect(codeOf(SERVER, masked(0x80 | opcode, 0))).toBe(1002)
  })

  it("accepts RSV1 on a text or binary frame when permessage-deflate was negotiated", () => {
    const options = { ...SERVER, allowRsv1: true }
    expect(codeOf(options, masked(0xc1, 0))).toBeUndefined()
    expect(codeOf(options, masked(0x42, 0))).toBeUndefined()
  })

  it("accepts lengths exactly at maxPayload", () => {
    expect(codeOf({ ...CLIENT, maxPayload: 3 }, bytes(0x82, 0x03, 1, 2, 3))).toBeUndefined()
  })

  it("a declared length that cannot be allocated is 1009, not an exception", () => {
    // 2^50 bytes: within maxPayload (2^53-1), beyond any memory.
    const header = bytes(0x82, 127, 0, 0x04, 0, 0, 0, 0, 0, 0)
    const first = Frame.decode(Frame.initialDecoder(CLIENT), header)
    expect(first._tag).toBe("Ok")
    if (first._tag !== "Ok") return
    expect(Frame.partial(first.state)?.length).toBe(2 ** 50)
    const second = Frame.decode(first.state, bytes(1, 2, 3))
    expect(second._tag === "Violation" && second.failure.code).toBe(1009)
  })

  it("returns the frames completed before the violation", () => {
    const ping = Arb.encodeAll([{ fin: true, rsv1: false, rsv2: false, rsv3: false, opcode: 0x9, payload: text("x") }], bytes(...M))
    const result = Frame.decode(Frame.initialDecoder(SERVER), Arb.concat([ping, bytes(0x83, 0x80)]))
    expect(result._tag).toBe("Violation")
    expect(result.frames.map((f) => f.opcode)).toEqual([Frame.Opcode.Ping])
  })
})

describe("RFC 6455 §5.7 examples", () => {
  const single = (options: Frame.DecoderOptions, wire: Uint8Array): ReadonlyArray<Frame.Frame> => {
    const out = decodeAll(options, [wire.slice()])
    const byByte = decodeAll(options, Arb.chop(wire, [1]))
    expect(out.code).toBeUndefined()
    sameFrames(byByte.frames, out.frames)
    return out.frames
  }
  const hello = text("Hello")

  it("a single-frame unmasked text message", () => {
    const wire = bytes(0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f)
    sameFrames(single(CLIENT, wire), [{ fin: true, rsv1: false, rsv2: false, rsv3: false, opcode: 1, payload: hello }])
    expect(hex(Arb.concat(Frame.encode(Frame.Opcode.Text, hello)))).toBe(hex(wire))
  })

  it("a single-frame masked text message", () => {
    const wire = bytes(0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58)
    sameFrames(single(SERVER, wire), [{ fin: true, rsv1: false, rsv2: false, rsv3: false, opcode: 1, payload: hello }])
    const mask = bytes(0x37, 0xfa, 0x21, 0x3d)
    expect(hex(Arb.concat(Frame.encode(Frame.Opcode.Text, hello, { mask })))).toBe(hex(wire))
  })

  it("a fragmented unmasked text message", () => {
    const wire = bytes(0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f)
    sameFrames(single(CLIENT, wire), [
      { fin: false, rsv1: false, rsv2: false, rsv3: false, opcode: 1, payload: text("Hel") },
      { fin: true, rsv1: false, rsv2: false, rsv3: false, opcode: 0, payload: text("lo") }
    ])
  })

  it("an unmasked ping and a masked pong", () => {
    sameFrames(single(CLIENT, bytes(0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f)), [
      { fin: true, rsv1: false, rsv2: false, rsv3: false, opcode: 9, payload: hello }
    ])
    sameFrames(single(SERVER, bytes(0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58)), [
      { fin: true, rsv1: false, rsv2: false, rsv3: false, opcode: 10, payload: hello }
    ])
  })

  it("256 bytes and 64 KiB binary messages in one unmasked frame", () => {
    const b256 = Uint8Array.from({ length: 256 }, (_, i) => i)
    const [h256] = Frame.encode(Frame.Opcode.Binary, b256)
    expect(hex(h256)).toBe("827e0100")
    sameFrames(single(CLIENT, Arb.concat([h256, b256])), [
      { fin: true, rsv1: false, rsv2: false, rsv3: false, opcode: 2, payload: b256 }
    ])
    const b64k = Uint8Array.from({ length: 65536 }, (_, i) => i * 7)
    const [h64k] = Frame.encode(Frame.Opcode.Binary, b64k)
    expect(hex(h64k)).toBe("827f0000000000010000")
    const out = decodeAll(CLIENT, Arb.chop(Arb.concat([h64k, b64k]), [3, 1000, 1, 7]))
    sameFrames(out.frames, [{ fin: true, rsv1: false, rsv2: false, rsv3: false, opcode: 2, payload: b64k }])
  })
})

describe("encode", () => {
  it("uses the minimal length encoding; server payloads are not copied, client payloads are masked copies", () => {
    fc.assert(
      fc.property(Arb.payload(Arb.payloadLength({ max: 70000 })), Arb.maskKey, (payload, mask) => {
        const n = payload.length
        const expected = n < 126 ? 2 : n < 65536 ? 4 : 10
        const [header, body] = Frame.encode(Frame.Opcode.Binary, payload)
        expect(header.length).toBe(expected)
        expect(body).toBe(payload)
        const original = payload.slice()
        const [maskedHeader, maskedBody] = Frame.encode(Frame.Opcode.Binary, payload, { mask })
        expect(maskedHeader.length).toBe(expected + 4)
        expect(hex(maskedHeader.subarray(expected))).toBe(hex(mask))
        expect(same(payload, original)).toBe(true)
        const unmasked = maskedBody.slice()
        Frame.unmask(unmasked, mask)
        expect(same(unmasked, original)).toBe(true)
      }),
      { numRuns: 60 }
    )
  })

  it("sets FIN, RSV1 and the opcode", () => {
    const [header] = Frame.encode(Frame.Opcode.Continuation, new Uint8Array(0), { fin: false, rsv1: true })
    expect(hex(header)).toBe("4000")
  })
})

describe("writeHeader", () => {
  it("writes the same header as encode, in place, at the minimal length encoding", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.constantFrom(0, 125, 126, 127, 65535, 65536, 70000), fc.nat({ max: 200_000 })),
        fc.constantFrom(0x81, 0x82, 0xc1, 0x02, 0x80),
        fc.nat({ max: 7 }),
        (length, first, offset) => {
          const payload = new Uint8Array(length)
          const [expected] = Frame.encode((first & 0x0f) as Frame.Opcode, payload, {
            fin: (first & 0x80) !== 0,
            rsv1: (first & 0x40) !== 0
          })
          const buffer = new Uint8Array(offset + 10).fill(0xee)
          const end = Frame.writeHeader(buffer, offset, first, length)
          expect(end - offset).toBe(Frame.headerSize(length))
          expect(buffer.subarray(offset, end)).toEqual(expected)
          // Nothing written before the offset or past the header.
          expect(buffer.subarray(0, offset).every((b) => b === 0xee)).toBe(true)
          expect(buffer.subarray(end).every((b) => b === 0xee)).toBe(true)
        }
      )
    )
  })
})

describe("unmask", () => {
  /** The reference: one byte at a time. */
  const naive = (buf: Uint8Array, mask: Uint8Array, phase: number): void => {
    for (let i = 0; i < buf.length; i++) buf[i] ^= mask[(phase + i) & 3]
  }

  it("word-wise equals byte-wise on any offset, length and phase", () => {
    fc.assert(
      fc.property(Arb.unalignedBytes, Arb.maskKey, fc.integer({ min: 0, max: 7 }), (view, mask, phase) => {
        const expected = view.slice()
        naive(expected, mask, phase)
        const before = view.buffer.slice(0) // the bytes around the view must not change
        Frame.unmask(view, mask, phase)
        expect(hex(view)).toBe(hex(expected))
        const after = new Uint8Array(view.buffer)
        const start = view.byteOffset
        const end = start + view.length
        expect(hex(after.subarray(0, start))).toBe(hex(new Uint8Array(before, 0, start)))
        expect(hex(after.subarray(end))).toBe(hex(new Uint8Array(before, end)))
      }),
      { numRuns: 300 }
    )
  })

  it("equals byte-wise across the SIMD threshold and its 64 KiB blocks, at any offset and phase", () => {
    // Lengths around 512 (where the WebAssembly SIMD path starts), 16-byte
    // tails, and pieces longer than the module's 64 KiB memory.
    const length = fc.oneof(
      fc.integer({ min: 0, max: 2048 }),
      fc.integer({ min: 65536 - 40, max: 65536 + 40 }),
      fc.integer({ min: 2 * 65536 - 20, max: 2 * 65536 + 20 })
    )
    fc.assert(
      fc.property(length, fc.integer({ min: 0, max: 15 }), Arb.maskKey, fc.integer({ min: 0, max: 7 }), fc.integer(), (n, offset, mask, phase, seed) => {
        const buffer = new Uint8Array(offset + n + 16)
        let x = seed | 1
        for (let i = 0; i < buffer.length; i++) {
          x ^= x << 13
          x ^= x >>> 17
          x ^= x << 5
          buffer[i] = x & 0xff
        }
        const before = buffer.slice()
        const view = buffer.subarray(offset, offset + n)
        const expected = view.slice()
        naive(expected, mask, phase)
        Frame.unmask(view, mask, phase)
        expect(same(view, expected)).toBe(true)
        // Nothing around the view changes.
        expect(same(buffer.subarray(0, offset), before.subarray(0, offset))).toBe(true)
        expect(same(buffer.subarray(offset + n), before.subarray(offset + n))).toBe(true)
      }),
      { numRuns: 200 }
    )
  })

  it("a masked payload that spans reads is unmasked at every phase, for every piece size", () => {
    // Pieces of any size and phase are copied and unmasked together (one
    // pass, SIMD from 512 bytes): the decoded payload equals the original.
    fc.assert(
      fc.property(fc.integer({ min: 500, max: 140_000 }), Arb.maskKey, fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 8 }), (n, mask, sizes) => {
        const original = Arb.encodeAll([{ fin: true, rsv1: false, rsv2: false, rsv3: false, opcode: Frame.Opcode.Binary, payload: new Uint8Array(n).map((_, i) => (i * 31 + (i >> 8)) & 0xff) }], mask)
        const chunks = Arb.chop(original.slice(), sizes)
        const out = decodeAll(SERVER, chunks)
        expect(out.code).toBeUndefined()
        expect(out.frames.length).toBe(1)
        const payload = out.frames[0]!.payload
        expect(payload.length).toBe(n)
        let ok = true
        for (let i = 0; i < n; i++) if (payload[i] !== ((i * 31 + (i >> 8)) & 0xff)) ok = false
        expect(ok).toBe(true)
      }),
      { numRuns: 60 }
    )
  })

  it("is its own inverse on a 16 MiB payload", () => {
    const big = new Uint8Array(16 * 1024 * 1024 + 3)
    for (let i = 0; i < big.length; i += 4093) big[i] = i & 0xff
    const view = big.subarray(1)
    const original = view.slice()
    const mask = bytes(0xde, 0xad, 0xbe, 0xef)
    Frame.unmask(view, mask, 2)
    expect(view[0]).toBe(original[0] ^ 0xbe)
    expect(view[4]).toBe(original[4] ^ 0xbe)
    expect(view[view.length - 1]).toBe(original[view.length - 1] ^ mask[(2 + view.length - 1) & 3])
    Frame.unmask(view, mask, 2)
    expect(same(view, original)).toBe(true)
  })
})

describe("close payloads", () => {
  it("knows which codes are valid on the wire", () => {
    const valid = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
    const invalid = [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535, -1, 1000.5, NaN]
    for (const code of valid) expect(Frame.isValidCloseCode(code), `${code}`).toBe(true)
    for (const code of invalid) expect(Frame.isValidCloseCode(code), `${code}`).toBe(false)
  })

  it("parses empty, 1-byte, bad-code and bad-UTF-8 payloads", () => {
    expect(Frame.parseClose(bytes())).toEqual({ _tag: "Empty" })
    expect(Frame.parseClose(bytes(0x03))).toMatchObject({ _tag: "Invalid", failure: { code: 1002 } })
    expect(Frame.parseClose(bytes(0x03, 0xed))).toMatchObject({ _tag: "Invalid", failure: { code: 1002 } }) // 1005
    expect(Frame.parseClose(bytes(0x03, 0xe8, 0xff))).toMatchObject({ _tag: "Invalid", failure: { code: 1007 } })
    expect(Frame.parseClose(bytes(0x03, 0xe8, 0xce, 0xba))).toEqual({ _tag: "Code", code: 1000, reason: "κ" })
    expect(Frame.parseClose(bytes(0x0f, 0xa0))).toEqual({ _tag: "Code", code: 4000, reason: "" })
    // A leading U+FEFF is part of the reason (not a BOM to strip), as in messages.
    expect(Frame.parseClose(bytes(0x03, 0xe8, 0xef, 0xbb, 0xbf, 0x61))).toEqual({ _tag: "Code", code: 1000, reason: "\ufeffa" })
  })

  it("control frames are not subject to maxPayload: a 125-byte Ping with a 10-byte limit decodes (RFC 6455 §5.5)", () => {
    const ping = Buffer.concat([...Frame.encode(Frame.Opcode.Ping, new Uint8Array(125), { mask: Uint8Array.of(1, 2, 3, 4) })])
    const result = Frame.decode(Frame.initialDecoder({ role: "server", maxPayload: 10, allowRsv1: false }), ping)
    expect(result._tag).toBe("Ok")
    expect(result.frames[0]?.payload.length).toBe(125)
    const binary = Buffer.concat([...Frame.encode(Frame.Opcode.Binary, new Uint8Array(11), { mask: Uint8Array.of(1, 2, 3, 4) })])
    const big = Frame.decode(Frame.initialDecoder({ role: "server", maxPayload: 10, allowRsv1: false }), binary)
    expect(big._tag === "Violation" && big.failure.code).toBe(1009)
  })

  it("parseClose reads back what closeFrame and encodeClose write", () => {
    fc.assert(
      fc.property(Arb.closeFrame, (frame) => {
        const parsed = Frame.parseClose(frame.payload)
        if (frame.payload.length === 0) expect(parsed._tag).toBe("Empty")
        else expect(parsed).toEqual({ _tag: "Code", code: (frame.payload[0] << 8) | frame.payload[1], reason: text(frame.payload.subarray(2)) })
      }),
      { numRuns: 100 }
    )
  })

  it("encodeClose fits a control frame, truncating the reason on a UTF-8 boundary", () => {
    fc.assert(
      fc.property(fc.integer({ min: 3000, max: 4999 }), Arb.textMessage, (code, reason) => {
        const payload = Frame.encodeClose(code, reason)
        expect(payload.length).toBeLessThanOrEqual(125)
        const parsed = Frame.parseClose(payload)
        expect(parsed._tag).toBe("Code")
        if (parsed._tag !== "Code") return
        expect(parsed.code).toBe(code)
        expect(reason.startsWith(parsed.reason)).toBe(true)
        if (text(reason).length <= 123) expect(parsed.reason).toBe(reason)
        else expect(payload.length).toBeGreaterThan(121) // cut at most a 4-byte character short
      }),
      { numRuns: 200 }
    )
    expect(Frame.encodeClose(1000, "€".repeat(60)).length).toBe(2 + 41 * 3)
  })
})
