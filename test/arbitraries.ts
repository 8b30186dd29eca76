/**
 * Shared generators for websock's tests: the public ones of `src/testing.ts`
 * (`websock/testing`) plus a few that only the tests need.
 */
import * as fc from "fast-check"
import type * as Frame from "../src/Frame.ts"

export * from "../src/testing.ts"

/** Decoder options with either role, a limit that never trips on generated frames, RSV1 as given. */
export const decoderOptions = (allowRsv1: boolean): fc.Arbitrary<Frame.DecoderOptions> =>
  fc.record({
    role: fc.constantFrom("server" as const, "client" as const),
    maxPayload: fc.constant(Number.MAX_SAFE_INTEGER),
    allowRsv1: fc.constant(allowRsv1)
  })

/** An unaligned view: `length` bytes starting `offset` bytes into a fresh buffer. */
export const unalignedBytes: fc.Arbitrary<Uint8Array> = fc
  .tuple(fc.integer({ min: 0, max: 7 }), fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 7 }))
  .map(([offset, bytes, slack]) => {
    const buffer = new Uint8Array(offset + bytes.length + slack)
    buffer.set(bytes, offset)
    return buffer.subarray(offset, offset + bytes.length)
  })
