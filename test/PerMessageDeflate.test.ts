import { assert, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as fc from "fast-check"
import * as AsyncHooks from "node:async_hooks"
import { Buffer } from "node:buffer"
import * as Net from "node:net"
import * as Zlib from "node:zlib"
import { Compression } from "../src/internal/compression.ts"
import { Driver } from "../src/internal/driver.ts"
import * as Handshake from "../src/Handshake.ts"
import * as PerMessageDeflate from "../src/PerMessageDeflate.ts"
import { text as utf8 } from "./support/Bytes.ts"
import { RawClient } from "./support/RawClient.ts"
import { until } from "./support/Wait.ts"

// -----------------------------------------------------------------------------
// Helpers
// -----------------------------------------------------------------------------

type Param = readonly [string, string | undefined]
const offer = (...params: ReadonlyArray<Param>): PerMessageDeflate.Offer => ({ name: "permessage-deflate", params })
/**
 * The defaults with context takeover on the server's side, which the
 * negotiation cases below are written for (the default answers
 * server_no_context_takeover to every offer: see its own case).
 */
const policy = (overrides: Partial<PerMessageDeflate.Options> = {}): PerMessageDeflate.Options => ({
  ...PerMessageDeflate.defaults,
  serverNoContextTakeover: false,
  ...overrides
})

const accepted = (negotiation: PerMessageDeflate.Negotiation) => {
  assert.strictEqual(negotiation._tag, "Accepted")
  if (negotiation._tag !== "Accepted") throw new Error("unreachable")
  return negotiation
}

/** The response header back into [name, value] pairs (our own output: no quoting, no spaces in values). */
const responseParams = (header: string): ReadonlyArray<Param> => {
  const [name, ...params] = header.split("; ")
  expect(name).toBe("permessage-deflate")
  return params.map((p): Param => {
    const eq = p.indexOf("=")
    return eq < 0 ? [p, undefined] : [p.slice(0, eq), p.slice(eq + 1)]
  })
}

const TRAILER = Uint8Array.from([0x00, 0x00, 0xff, 0xff])
/** A peer's inflater (node's one-shot zlib), with the §7.2.2 trailer appended. */
const inflateRaw = (data: Uint8Array, windowBits = 15): Uint8Array =>
  new Uint8Array(
    Zlib.inflateRawSync(Buffer.concat([data, TRAILER]), { windowBits, finishFlush: Zlib.constants.Z_SYNC_FLUSH })
  )

/** The same agreement seen from the client: its deflater uses the client_ window, its inflater the server_ one. */
const mirror = (p: PerMessageDeflate.Negotiated): PerMessageDeflate.Negotiated => ({
  serverNoContextTakeover: p.clientNoContextTakeover,
  clientNoContextTakeover: p.serverNoContextTakeover,
  serverMaxWindowBits: p.clientMaxWindowBits,
  clientMaxWindowBits: p.serverMaxWindowBits
})

const negotiated = (overrides: Partial<PerMessageDeflate.Negotiated> = {}): PerMessageDeflate.Negotiated => ({
  serverNoContextTakeover: false,
  clientNoContextTakeover: false,
  serverMaxWindowBits: 15,
  clientMaxWindowBits: 15,
  ...overrides
})

/** Deterministic text-like data with repeats at every distance up to `span` bytes back. */
const sample = (length: number, seed: number, span = 32_768): Uint8Array => {
  const out = new Uint8Array(length)
  let x = seed >>> 0 // xorshift state
  const next = () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return x >>> 0
  }
  for (let i = 0; i < length; i++) {
    // half the time copy a byte from up to `span` back, else a fresh lowercase letter
    out[i] = i > 0 && next() % 2 === 0 ? out[i - 1 - (next() % Math.min(i, span))]! : 97 + (next() % 26)
  }
  return out
}

const failure = <A>(exit: Exit.Exit<A, PerMessageDeflate.InflateError>): PerMessageDeflate.InflateError => {
  const error = Exit.findErrorOption(exit)
  assert.isTrue(error._tag === "Some", `expected an InflateError, got ${String(exit)}`)
  if (error._tag !== "Some") throw new Error("unreachable")
  return error.value
}

// -----------------------------------------------------------------------------
// Negotiation
// -----------------------------------------------------------------------------

describe("negotiate", () => {
  it("by default answers server_no_context_takeover to every offer it accepts (§7.1.1.1: a server MAY)", () => {
    for (const params of [[], [["client_max_window_bits", undefined]], [["server_max_window_bits", "10"]]] as const) {
      const result = accepted(PerMessageDeflate.negotiate([offer(...params)], PerMessageDeflate.defaults))
      expect(result.params.serverNoContextTakeover).toBe(true)
      expect(responseParams(result.header)).toContainEqual(["server_no_context_takeover", undefined])
    }
    // Chromium's offer: context takeover from the client, a 32 KiB window for its messages
    const chromium = accepted(PerMessageDeflate.negotiate([offer(["client_max_window_bits", undefined])], PerMessageDeflate.defaults))
    expect(chromium.header).toBe("permessage-deflate; server_no_context_takeover")
    expect(chromium.params).toEqual(negotiated({ serverNoContextTakeover: true }))
  })

  it("accepts a bare offer with context takeover allowed: no parameters in the response", () => {
    const result = accepted(PerMessageDeflate.negotiate([offer()], policy()))
    expect(result.header).toBe("permessage-deflate")
    expect(result.params).toEqual(negotiated())
  })

  it("declines when disabled, when nothing is offered, and skips other extensions", () => {
    expect(PerMessageDeflate.negotiate([offer()], policy({ enabled: false }))._tag).toBe("Declined")
    expect(PerMessageDeflate.negotiate([], policy())._tag).toBe("Declined")
    expect(PerMessageDeflate.negotiate([{ name: "x-webkit-deflate-frame", params: [] }], policy())._tag)
      .toBe("Declined")
    const result = accepted(
      PerMessageDeflate.negotiate([{ name: "x-foo", params: [["bar", "1"]] }, offer()], policy())
    )
    expect(result.header).toBe("permessage-deflate")
  })

  it.each<{
    readonly name: string
    readonly offer: ReadonlyArray<Param>
    readonly options?: Partial<PerMessageDeflate.Options>
    readonly header: string
    readonly params: Partial<PerMessageDeflate.Negotiated>
  }>([
    {
      name: "server_no_context_takeover is echoed (§7.1.1.1)",
      offer: [["server_no_context_takeover", undefined]],
      header: "permessage-deflate; server_no_context_takeover",
      params: { serverNoContextTakeover: true }
    },
    {
      name: "client_no_context_takeover is echoed, making the client's hint binding (§7.1.1.2)",
      offer: [["client_no_context_takeover", undefined]],
      header: "permessage-deflate; client_no_context_takeover",
      params: { clientNoContextTakeover: true }
    },
    {
      name: "server_max_window_bits=10 is answered with the same value (§7.1.2.1)",
      offer: [["server_max_window_bits", "10"]],
      header: "permessage-deflate; server_max_window_bits=10",
      params: { serverMaxWindowBits: 10 }
    },
    {
      name: "server_max_window_bits=15 must still be answered to be accepted",
      offer: [["server_max_window_bits", "15"]],
      header: "permessage-deflate; server_max_window_bits=15",
      params: {}
    },
    {
      name: "server_max_window_bits above the policy is answered with the policy",
      offer: [["server_max_window_bits", "12"]],
      options: { serverMaxWindowBits: 10 },
      header: "permessage-deflate; server_max_window_bits=10",
      params: { serverMaxWindowBits: 10 }
    },
    {
      name: "server_max_window_bits=8 is accepted (zlib compresses with 9, valid for 8)",
      offer: [["server_max_window_bits", "8"]],
      header: "permessage-deflate; server_max_window_bits=8",
      params: { serverMaxWindowBits: 8 }
    },
    {
      name: "a smaller server window in the policy is announced unasked",
      offer: [],
      options: { serverMaxWindowBits: 11 },
      header: "permessage-deflate; server_max_window_bits=11",
      params: { serverMaxWindowBits: 11 }
    },
    {
      name: "client_max_window_bits without a value and policy 15: nothing to say",
      offer: [["client_max_window_bits", undefined]],
      header: "permessage-deflate",
      params: {}
    },
    {
      name: "client_max_window_bits without a value and policy 10: the client is limited",
      offer: [["client_max_window_bits", undefined]],
      options: { clientMaxWindowBits: 10 },
      header: "permessage-deflate; client_max_window_bits=10",
      params: { clientMaxWindowBits: 10 }
    },
    {
      name: "client_max_window_bits=9: answered with at most the offered value",
      offer: [["client_max_window_bits", "9"]],
      options: { clientMaxWindowBits: 12 },
      header: "permessage-deflate; client_max_window_bits=9",
      params: { clientMaxWindowBits: 9 }
    },
    {
      name: "policy adds both no_context_takeover parameters",
      offer: [["client_max_window_bits", undefined]],
      options: { serverNoContextTakeover: true, clientNoContextTakeover: true },
      header: "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
      params: { serverNoContextTakeover: true, clientNoContextTakeover: true }
    },
    {
      name: "everything at once (Chrome-like offer plus the rest)",
      offer: [
        ["client_max_window_bits", "12"],
        ["server_max_window_bits", "13"],
        ["client_no_context_takeover", undefined],
        ["server_no_context_takeover", undefined]
      ],
      header:
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=13; client_max_window_bits=12",
      params: { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 13, clientMaxWindowBits: 12 }
    }
  ])("accepts: $name", ({ header, offer: params, options, params: expected }) => {
    const result = accepted(PerMessageDeflate.negotiate([offer(...params)], policy(options)))
    expect(result.header).toBe(header)
    expect(result.params).toEqual(negotiated(expected))
  })

  // RFC 7692 §7: "A server MUST decline an extension negotiation offer for this
  // extension if [it has] an extension parameter not defined for use in an offer
  // / an extension parameter with an invalid value / multiple extension
  // parameters with the same name / the server doesn't support the offered
  // configuration." Decline, not fail: the next offer is considered.
  it.each<{ readonly name: string; readonly params: ReadonlyArray<Param>; readonly options?: Partial<PerMessageDeflate.Options> }>([
    { name: "unknown parameter", params: [["foo", undefined]] },
    { name: "unknown parameter with a value", params: [["server_max_window_bits", "10"], ["mux", "1"]] },
    { name: "parameter names are case-sensitive", params: [["Server_No_Context_Takeover", undefined]] },
    { name: "duplicate flag", params: [["server_no_context_takeover", undefined], ["server_no_context_takeover", undefined]] },
    { name: "duplicate window bits", params: [["client_max_window_bits", undefined], ["client_max_window_bits", "10"]] },
    { name: "server_no_context_takeover with a value", params: [["server_no_context_takeover", "1"]] },
    { name: "client_no_context_takeover with a value", params: [["client_no_context_takeover", ""]] },
    { name: "server_max_window_bits without a value", params: [["server_max_window_bits", undefined]] },
    { name: "server_max_window_bits=7", params: [["server_max_window_bits", "7"]] },
    { name: "server_max_window_bits=16", params: [["server_max_window_bits", "16"]] },
    { name: "server_max_window_bits=010 (leading zero)", params: [["server_max_window_bits", "010"]] },
    { name: "server_max_window_bits=abc", params: [["server_max_window_bits", "abc"]] },
    { name: "server_max_window_bits=\"\"", params: [["server_max_window_bits", ""]] },
    { name: "client_max_window_bits=0", params: [["client_max_window_bits", "0"]] },
    { name: "client_max_window_bits=1e1", params: [["client_max_window_bits", "1e1"]] },
    { name: "client_max_window_bits= 9 (space)", params: [["client_max_window_bits", " 9"]] },
    {
      name: "no client_max_window_bits while the policy limits the client (unsupported configuration)",
      params: [],
      options: { clientMaxWindowBits: 12 }
    }
  ])("declines an offer with $name, and falls back to the next one", ({ options, params }) => {
    const alone = PerMessageDeflate.negotiate([offer(...params)], policy(options))
    expect(alone._tag).toBe("Declined")
    const fallback = accepted(
      PerMessageDeflate.negotiate(
        [offer(...params), offer(["client_max_window_bits", "11"], ["server_no_context_takeover", undefined])],
        policy(options)
      )
    )
    expect(fallback.params.serverNoContextTakeover).toBe(true)
    expect(fallback.params.clientMaxWindowBits).toBe(11)
    expect(fallback.header).toBe("permessage-deflate; server_no_context_takeover; client_max_window_bits=11")
  })

  it("chooses the first acceptable offer in the client's order (§5)", () => {
    const result = accepted(
      PerMessageDeflate.negotiate(
        [offer(["server_max_window_bits", "9"]), offer(["server_max_window_bits", "12"]), offer()],
        policy()
      )
    )
    expect(result.params.serverMaxWindowBits).toBe(9)
  })

  // RFC 7692 has no case in which the server must fail the handshake over an
  // offer: every invalid or unsupported one is declined (§7), and the
  // connection proceeds without compression (§5). So, for any offers at all,
  // `negotiate` never says Rejected, never throws, and whatever it accepts obeys
  // the response rules of §7.1.
  const token = fc.constantFrom(
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
    "foo"
  )
  const value = fc.option(fc.oneof(fc.integer({ min: 0, max: 20 }).map(String), fc.string({ maxLength: 3 })), {
    nil: undefined
  })
  const anyOffer = fc.record({
    name: fc.constantFrom("permessage-deflate", "permessage-deflate", "x-other", "PERMESSAGE-DEFLATE"),
    params: fc.array(fc.tuple(token, value), { maxLength: 5 })
  })
  const anyPolicy = fc.record({
    enabled: fc.boolean(),
    serverMaxWindowBits: fc.integer({ min: 8, max: 15 }),
    clientMaxWindowBits: fc.integer({ min: 8, max: 15 }),
    serverNoContextTakeover: fc.boolean(),
    clientNoContextTakeover: fc.boolean(),
    threshold: fc.constant(1024),
    level: fc.constant(1),
    memLevel: fc.constant(8),
    syncLimit: fc.constant(64 * 1024)
  })

  it("never rejects, and every acceptance obeys RFC 7692 §7.1 for the offer it chose", () => {
    fc.assert(
      fc.property(fc.array(anyOffer, { maxLength: 4 }), anyPolicy, (offers, options) => {
        const result = PerMessageDeflate.negotiate(offers, options)
        expect(result._tag).not.toBe("Rejected")
        if (result._tag !== "Accepted") return
        expect(options.enabled).toBe(true)
        // the first offer accepted alone is the one chosen (preference order)
        const chosen = offers.find((o) => PerMessageDeflate.negotiate([o], options)._tag === "Accepted")!
        expect(PerMessageDeflate.negotiate([chosen], options)).toEqual(result)
        const offered = new Map(chosen.params)
        const answered = new Map(responseParams(result.header))
        const { params } = result
        // §7.1.1.1: a requested server_no_context_takeover must be echoed
        if (offered.has("server_no_context_takeover")) expect(answered.has("server_no_context_takeover")).toBe(true)
        expect(params.serverNoContextTakeover).toBe(answered.has("server_no_context_takeover"))
        expect(params.clientNoContextTakeover).toBe(answered.has("client_no_context_takeover"))
        // §7.1.2.1: an offered server_max_window_bits must be answered with <= that value
        if (offered.has("server_max_window_bits")) {
          expect(Number(answered.get("server_max_window_bits"))).toBeLessThanOrEqual(Number(offered.get("server_max_window_bits")))
        }
        expect(params.serverMaxWindowBits).toBe(Number(answered.get("server_max_window_bits") ?? 15))
        expect(params.serverMaxWindowBits).toBeLessThanOrEqual(options.serverMaxWindowBits)
        // §7.1.2.2: client_max_window_bits only if offered, <= the offered value
        if (!offered.has("client_max_window_bits")) expect(answered.has("client_max_window_bits")).toBe(false)
        const clientOffered = offered.get("client_max_window_bits")
        if (clientOffered !== undefined) expect(params.clientMaxWindowBits).toBeLessThanOrEqual(Number(clientOffered))
        expect(params.clientMaxWindowBits).toBe(Number(answered.get("client_max_window_bits") ?? 15))
        expect(params.clientMaxWindowBits).toBeLessThanOrEqual(options.clientMaxWindowBits)
        for (const [name, v] of answered) {
          if (name.endsWith("_window_bits")) expect(v).toMatch(/^(?:[89]|1[0-5])$/)
          else expect(v).toBeUndefined()
        }
      })
    )
  })

  it("validate reports out-of-range policies", () => {
    expect(PerMessageDeflate.validate(PerMessageDeflate.defaults)).toEqual([])
    expect(PerMessageDeflate.validate(policy({ serverMaxWindowBits: 16, memLevel: 0, level: 1.5, threshold: -1 })))
      .toHaveLength(4)
  })
})

// -----------------------------------------------------------------------------
// Codec
// -----------------------------------------------------------------------------

describe("Codec", () => {
  const messages = [
    sample(2000, 42),
    sample(2000, 42),
    utf8(JSON.stringify({ user: "alice", items: Array.from({ length: 40 }, (_, i) => ({ i, ok: i % 2 === 0 })) })),
    new Uint8Array(0),
    sample(100_000, 7), // several zlib output chunks, two inflate writes
    utf8("Hello, permessage-deflate! ".repeat(50))
  ]

  it.effect("round trip with context takeover: later messages use the earlier ones", () =>
    Effect.gen(function*() {
      const params = negotiated()
      const server = yield* PerMessageDeflate.make(params, PerMessageDeflate.defaults)
      const client = yield* PerMessageDeflate.make(mirror(params), PerMessageDeflate.defaults)
      const sizes: Array<number> = []
      for (const message of messages) {
        const deflated = yield* server.deflate(message)
        sizes.push(deflated.length)
        expect(yield* client.inflate(deflated, 1 << 20)).toEqual(message)
        // and the other way round
        expect(yield* server.inflate(yield* client.deflate(message), 1 << 20)).toEqual(message)
      }
      // the repeated message is almost free the second time (it is all one back-reference)
      expect(sizes[1]!).toBeLessThan(sizes[0]! / 4)
      // RFC 7692 §7.2.3.6: an empty message compresses to the single octet 00
      expect(sizes[3]).toBe(1)
    }))

  it.effect("round trip without context takeover: every message stands alone, contexts dropped in between", () =>
    Effect.gen(function*() {
      const params = negotiated({ serverNoContextTakeover: true, clientNoContextTakeover: true })
      const server = yield* PerMessageDeflate.make(params, PerMessageDeflate.defaults)
      const client = yield* PerMessageDeflate.make(mirror(params), PerMessageDeflate.defaults)
      const outputs: Array<Uint8Array> = []
      for (const message of messages) {
        const deflated = yield* server.deflate(message)
        outputs.push(deflated)
        // decodable by a fresh inflater: no reference to an earlier message
        expect(inflateRaw(deflated)).toEqual(message)
        expect(yield* client.inflate(deflated, 1 << 20)).toEqual(message)
        expect(yield* server.inflate(yield* client.deflate(message), 1 << 20)).toEqual(message)
      }
      expect(outputs[1]).toEqual(outputs[0])
    }))

  it.effect("inflates a payload that is a view into a larger chunk", () =>
    Effect.gen(function*() {
      const codec = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
      const message = sample(3000, 3)
      const deflated = Zlib.deflateRawSync(message, { finishFlush: Zlib.constants.Z_SYNC_FLUSH }).subarray(0, -4)
      const chunk = new Uint8Array(deflated.length + 20).fill(0xee)
      chunk.set(deflated, 10)
      expect(yield* codec.inflate(chunk.subarray(10, 10 + deflated.length), 1 << 20)).toEqual(message)
    }))

  // The negotiated window is really the one used: data with repeats up to 32 KiB
  // back, deflated under server_max_window_bits=N, must inflate with a window of
  // exactly 2^N bytes (zlib fails "invalid distance too far back" otherwise).
  it.effect("compresses within the negotiated server_max_window_bits (8 through 15)", () =>
    Effect.gen(function*() {
      const message = sample(60_000, 11)
      for (let bits = 8; bits <= 15; bits++) {
        const codec = yield* PerMessageDeflate.make(negotiated({ serverMaxWindowBits: bits }), PerMessageDeflate.defaults)
        const deflated = yield* codec.deflate(message)
        expect(inflateRaw(deflated, bits)).toEqual(message)
      }
      // the check has teeth: 15-bit output does not inflate with an 8-bit window
      const wide = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
      const deflated = yield* wide.deflate(message)
      expect(() => inflateRaw(deflated, 8)).toThrow(/too far back/)
    }))

  it.effect("inflates with the negotiated client_max_window_bits, messages from a peer compressing with 9..15", () =>
    Effect.gen(function*() {
      for (const bits of [9, 12, 15]) {
        const params = negotiated({ clientMaxWindowBits: bits })
        const server = yield* PerMessageDeflate.make(params, PerMessageDeflate.defaults)
        const client = yield* PerMessageDeflate.make(mirror(params), PerMessageDeflate.defaults)
        for (const seed of [1, 2, 3]) {
          const message = sample(20_000, seed)
          expect(yield* server.inflate(yield* client.deflate(message), 1 << 20)).toEqual(message)
        }
      }
    }))

  it.effect("keeps messages in order when deflates and inflates are issued concurrently", () =>
    Effect.gen(function*() {
      const params = negotiated()
      const server = yield* PerMessageDeflate.make(params, PerMessageDeflate.defaults)
      const client = yield* PerMessageDeflate.make(mirror(params), PerMessageDeflate.defaults)
      const batch = Array.from({ length: 12 }, (_, i) => sample(2000 + i * 3000, i + 1, 4000))
      const deflated = yield* Effect.all(batch.map((m) => server.deflate(m)), { concurrency: "unbounded" })
      // with context takeover a message only inflates after its predecessors,
      // in the order they were deflated
      const inflated = yield* Effect.all(deflated.map((d) => client.inflate(d, 1 << 20)), { concurrency: "unbounded" })
      inflated.forEach((m, i) => expect(m).toEqual(batch[i]))
    }))

  it.effect("accepts a message that ends the DEFLATE stream (BFINAL) and starts afresh after it", () =>
    Effect.gen(function*() {
      const codec = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
      for (const text of ["first final block", "second final block", "third"]) {
        const message = utf8(text.repeat(20))
        expect(yield* codec.inflate(Zlib.deflateRawSync(message), 1 << 20)).toEqual(message)
      }
    }))

  it.effect("enforces maxSize on the inflated size, inclusively", () =>
    Effect.gen(function*() {
      const message = sample(50_000, 5)
      const deflated = Zlib.deflateRawSync(message, { finishFlush: Zlib.constants.Z_SYNC_FLUSH }).subarray(0, -4)
      const ok = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
      expect((yield* ok.inflate(deflated, message.length)).length).toBe(message.length)
      const tight = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
      const error = failure(yield* Effect.exit(tight.inflate(deflated, message.length - 1)))
      expect(error.code).toBe(1009)
    }))

  it.effect("fails with 1007 on data that is not DEFLATE, without payload bytes in the reason", () =>
    Effect.gen(function*() {
      // a message compressed with context takeover, given to a fresh context:
      // its back-references reach before the start of the stream
      const peer = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
      const message = utf8("context takeover ".repeat(30))
      yield* peer.deflate(message)
      const cases = [
        Uint8Array.from([0xff, 0xff, 0xff, 0xff]), // BFINAL 1, BTYPE 11: reserved block type
        Uint8Array.from([0x00, 0x05, 0x00, 0x00, 0x00]), // stored block whose LEN and NLEN disagree
        yield* peer.deflate(message) // invalid distance too far back
      ]
      for (const bytes of cases) {
        const codec = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
        const error = failure(yield* Effect.exit(codec.inflate(bytes, 1 << 20)))
        expect(error._tag).toBe("InflateError")
        expect(error.code).toBe(1007)
        expect(error.reason).toMatch(/^invalid compressed data/)
      }
    }))

  it.effect("operations after close are interrupted; the scope closes the codec", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const codec = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults).pipe(Scope.provide(scope))
      expect((yield* codec.deflate(utf8("before"))).length).toBeGreaterThan(0)
      yield* Scope.close(scope, Exit.void)
      const exit = yield* Effect.exit(codec.deflate(utf8("after")))
      expect(Exit.hasInterrupts(exit)).toBe(true)
    }))
})

// -----------------------------------------------------------------------------
// Decompression bomb
// -----------------------------------------------------------------------------

/**
 * About `segments` KiB of DEFLATE data that inflates to `segments + 1` MiB of
 * zeros, built without ever holding the inflated bytes: a first sync-flushed
 * block of 1 MiB zeros, then copies of a sync-flushed 1 MiB-of-zeros block
 * compressed against a 32 KiB zero dictionary (its back-references only ever
 * reach zeros, so it can follow any run of >= 32 KiB zeros). Sync flushes end
 * byte-aligned, so the pieces concatenate.
 */
const bomb = (segments: number): Uint8Array => {
  const sync = { finishFlush: Zlib.constants.Z_SYNC_FLUSH, level: 9 }
  const zeros = new Uint8Array(1 << 20)
  const first = Zlib.deflateRawSync(zeros, sync)
  const segment = Zlib.deflateRawSync(zeros, { ...sync, dictionary: new Uint8Array(32_768) })
  const out = new Uint8Array(first.length + segments * segment.length)
  out.set(first, 0)
  for (let i = 0; i < segments; i++) out.set(segment, first.length + i * segment.length)
  return out
}

// -----------------------------------------------------------------------------
// The synchronous path (inflateSync / deflateSync)
// -----------------------------------------------------------------------------

/** A policy whose synchronous path stops at `syncLimit` bytes. */
const limited = (syncLimit: number): PerMessageDeflate.Options => ({ ...PerMessageDeflate.defaults, syncLimit })

/** The result of a synchronous call that must have been done at once, and succeeded. */
const done = <A>(value: A | PerMessageDeflate.InflateError | Error | undefined): A => {
  assert.isDefined(value)
  assert.notInstanceOf(value, Error)
  return value as A
}

describe("Codec, synchronous path", () => {
  const inflateError = (value: Uint8Array | PerMessageDeflate.InflateError | undefined): PerMessageDeflate.InflateError => {
    assert.instanceOf(value, PerMessageDeflate.InflateError)
    return value as PerMessageDeflate.InflateError
  }
  /** A message deflated on its own (no context), trailer stripped: valid for any inflater. */
  const standalone = (message: Uint8Array): Uint8Array =>
    Zlib.deflateRawSync(message, { finishFlush: Zlib.constants.Z_SYNC_FLUSH }).subarray(0, -4)

  it.effect("context takeover: small messages at once, large ones on the thread pool, on one context, in order", () =>
    Effect.gen(function*() {
      const params = negotiated()
      const server = yield* PerMessageDeflate.make(params, limited(4096))
      const client = yield* PerMessageDeflate.make(mirror(params), limited(4096))
      const small = sample(2000, 42)
      const large = sample(12_000, 7) // compresses to more than 4096 bytes; all of it within the 32 KiB window
      const sizes: Array<number> = []
      for (const message of [small, large, small, large, small]) {
        const now = server.deflateSync(message)
        // above syncLimit: declined, the Effect does it on the same context
        const deflated = message.length > 4096 ? (expect(now).toBeUndefined(), yield* server.deflate(message)) : done(now)
        sizes.push(deflated.length)
        const inflated = deflated.length > 4096 ? yield* client.inflate(deflated, 1 << 20) : done(client.inflateSync(deflated, 1 << 20))
        expect(inflated).toEqual(message)
      }
      // the repeated small message is one back-reference into the history (takeover)
      expect(sizes[2]!).toBeLessThan(sizes[0]! / 4)
      expect(sizes[4]!).toBeLessThan(sizes[0]! / 4)
      // and a peer's inflater that saw the same stream agrees
      const peer = yield* PerMessageDeflate.make(negotiated(), limited(1 << 20))
      const again = yield* PerMessageDeflate.make(mirror(negotiated()), limited(1 << 20))
      for (const message of [small, large, small]) expect(done(again.inflateSync(done(peer.deflateSync(message)), 1 << 20))).toEqual(message)
    }))

  it.effect("without context takeover, connections share one context, and every message stands alone", () =>
    Effect.gen(function*() {
      const params = negotiated({ serverNoContextTakeover: true, clientNoContextTakeover: true })
      const a = yield* PerMessageDeflate.make(params, PerMessageDeflate.defaults)
      const b = yield* PerMessageDeflate.make(params, PerMessageDeflate.defaults)
      const messages = [sample(3000, 1), sample(3000, 2), sample(3000, 1), sample(20_000, 3)]
      const outputs: Array<Uint8Array> = []
      for (const message of messages) {
        for (const codec of [a, b]) {
          const deflated = done(codec.deflateSync(message))
          outputs.push(deflated)
          // decodable by a fresh inflater: nothing from an earlier message, or the other connection's
          expect(inflateRaw(deflated)).toEqual(message)
          expect(done(codec.inflateSync(standalone(message), 1 << 20))).toEqual(message)
        }
      }
      // the same message gives the same bytes whoever sends it, whenever
      expect(outputs[1]).toEqual(outputs[0])
      expect(outputs[4]).toEqual(outputs[0])
    }))

  it.effect("inflateSync fails with 1007 on invalid data and 1009 past maxSize; the context, own or shared, works afterwards", () =>
    Effect.gen(function*() {
      for (const clientNoContextTakeover of [false, true]) {
        const codec = yield* PerMessageDeflate.make(negotiated({ clientNoContextTakeover }), PerMessageDeflate.defaults)
        const message = sample(5000, 9)
        const invalid = inflateError(codec.inflateSync(Uint8Array.of(0xff, 0xff, 0xff, 0xff), 1 << 20))
        expect(invalid.code).toBe(1007)
        expect(invalid.reason).toMatch(/^invalid compressed data \(Z_DATA_ERROR/)
        expect(done(codec.inflateSync(standalone(message), 1 << 20))).toEqual(message)
        // a bomb that fits the synchronous path: 5 MiB of zeros from a few KiB, limit 1 MiB
        const small = bomb(4)
        expect(small.length).toBeLessThan(PerMessageDeflate.defaults.syncLimit)
        const tooBig = inflateError(codec.inflateSync(small, 1 << 20))
        expect(tooBig.code).toBe(1009)
        expect(done(codec.inflateSync(standalone(message), 1 << 20))).toEqual(message)
        // inclusive limit
        expect(done(codec.inflateSync(standalone(message), message.length))).toEqual(message)
        expect(inflateError(codec.inflateSync(standalone(message), message.length - 1)).code).toBe(1009)
      }
    }))

  it.effect("a message ending the DEFLATE stream (BFINAL) inflates, and the next one starts on a fresh context", () =>
    Effect.gen(function*() {
      const codec = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
      for (const text of ["first final block", "second final block", "third"]) {
        const message = utf8(text.repeat(20))
        expect(done(codec.inflateSync(Zlib.deflateRawSync(message), 1 << 20))).toEqual(message)
      }
      expect(done(codec.inflateSync(new Uint8Array(0), 1 << 20))).toEqual(new Uint8Array(0))
      expect(done(codec.deflateSync(new Uint8Array(0)))).toEqual(Uint8Array.of(0x00))
    }))

  it.effect("declines above syncLimit, while a thread-pool inflate is queued, and after close", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const codec = yield* PerMessageDeflate.make(negotiated(), limited(100)).pipe(Scope.provide(scope))
      const message = sample(3000, 4)
      const deflated = standalone(message)
      expect(deflated.length).toBeGreaterThan(100)
      expect(codec.inflateSync(deflated, 1 << 20)).toBeUndefined()
      expect(codec.deflateSync(message)).toBeUndefined()
      // an inflate on the thread pool in flight: the small one behind it must wait its turn
      const fiber = yield* Effect.forkChild(codec.inflate(deflated, 1 << 20))
      yield* Effect.yieldNow
      expect(codec.inflateSync(standalone(utf8("tiny")), 1 << 20)).toBeUndefined()
      expect(yield* Fiber.join(fiber)).toEqual(message)
      expect(done(codec.inflateSync(standalone(utf8("tiny")), 1 << 20))).toEqual(utf8("tiny"))
      yield* Scope.close(scope, Exit.void)
      expect(codec.inflateSync(standalone(utf8("tiny")), 1 << 20)).toBeUndefined()
      expect(codec.deflateSync(utf8("tiny"))).toBeUndefined()
    }))
})

describe("Compression: the synchronous path keeps the order", () => {
  it.effect("a message inflated at once is delivered after the ones inflating on the thread pool before it; sends likewise", () =>
    Effect.gen(function*() {
      const params = negotiated()
      const codec = yield* PerMessageDeflate.make(params, { ...PerMessageDeflate.defaults, syncLimit: 1024 })
      const peer = yield* PerMessageDeflate.make(mirror(params), { ...PerMessageDeflate.defaults, syncLimit: 1024 })
      const large = sample(200_000, 5) // several thread-pool jobs
      const small = utf8("small ".repeat(40))
      const order: Array<string> = []
      const sent: Array<Uint8Array> = []
      const compression = new Compression(codec, 100, 1 << 20, Effect.runPromiseExit, {
        received: (message) => void order.push(`plain ${String(message)}`),
        inflated: (_text, data) => void order.push(`inflated ${data.length}`),
        inflateFailed: (reason) => void order.push(`failed ${reason.code}`),
        send: (payload, _text, compressed) => {
          sent.push(compressed ? payload : new Uint8Array(0))
          return true
        },
        deflateFailed: () => void order.push("deflate failed")
      })
      // the peer compresses with takeover: its messages only inflate in this order
      const first = yield* peer.deflate(large)
      const second = done(peer.deflateSync(small))
      compression.receiveCompressed(false, first) // on the thread pool
      compression.receiveCompressed(true, second) // could be inflated at once, but waits
      compression.receive("after both")
      expect(order).toEqual([])
      yield* Effect.promise(() => until("all three delivered", () => order.length === 3))
      expect(order).toEqual([`inflated ${large.length}`, `inflated ${small.length}`, "plain after both"])
      // sends: the large one deflates on the thread pool, the small ones behind it wait
      const results: Array<boolean> = []
      compression.send([large, small], (ok) => void results.push(ok))
      compression.send([small], (ok) => void results.push(ok))
      expect(sent.length).toBe(0)
      yield* Effect.promise(() => until("both batches sent", () => results.length === 2))
      expect(results).toEqual([true, true])
      // the peer inflates them in order on its own context (takeover): any overtaking would garble them
      expect(sent.length).toBe(3)
      expect(yield* peer.inflate(sent[0]!, 1 << 20)).toEqual(large)
      expect(done(peer.inflateSync(sent[1]!, 1 << 20))).toEqual(small)
      expect(done(peer.inflateSync(sent[2]!, 1 << 20))).toEqual(small)
      // the repeat is a back-reference: it was deflated after the first, on the same context
      expect(sent[2]!.length).toBeLessThan(sent[1]!.length)
    }))
})

describe("decompression bomb", () => {
  it.effect("the bomb is what it claims: 4 small segments inflate to 5 MiB of zeros", () =>
    Effect.gen(function*() {
      const small = bomb(4)
      expect(small.length).toBeLessThan(8 * 1024)
      const codec = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
      const inflated = yield* codec.inflate(small, 8 << 20)
      expect(inflated.length).toBe(5 << 20)
      expect(inflated.every((b) => b === 0)).toBe(true)
    }))

  /**
   * Counts zlib's thread-pool jobs as they come back to the event loop
   * (async_hooks `after` on ZLIB resources), for the test's scope. node:zlib
   * emits at most 16 KiB of output per job, so the count says how far an
   * inflate has gone, without a clock.
   */
  const zlibJobs = Effect.acquireRelease(
    Effect.sync(() => {
      const streams = new Set<number>() // async ids of zlib handles
      let jobs = 0 // their callbacks so far
      const hook = AsyncHooks.createHook({
        init: (id, type) => {
          if (type === "ZLIB") streams.add(id)
        },
        after: (id) => {
          if (streams.has(id)) jobs++
        },
        destroy: (id) => {
          streams.delete(id)
        }
      }).enable()
      return { hook, count: () => jobs }
    }),
    ({ hook }) => Effect.sync(() => hook.disable())
  )

  /** Waits until zlib has come back with a few slices of an inflate in flight: it is mid-message. */
  const midMessage = (jobs: () => number) =>
    Effect.promise(() => until("zlib to be mid-message", () => jobs() >= 4))

  it.effect("an interrupted inflate drops its context; the codec keeps working", () =>
    Effect.gen(function*() {
      const jobs = yield* zlibJobs
      const codec = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
      // 1 GiB at a 64 MiB limit: thousands of jobs, so after 4 it is still going
      const fiber = yield* Effect.forkChild(codec.inflate(bomb(1000), 64 << 20))
      yield* midMessage(jobs.count)
      yield* Fiber.interrupt(fiber)
      expect(Exit.hasInterrupts(yield* Effect.exit(Fiber.join(fiber)))).toBe(true)
      const message = sample(5000, 9)
      const deflated = Zlib.deflateRawSync(message, { finishFlush: Zlib.constants.Z_SYNC_FLUSH }).subarray(0, -4)
      expect(yield* codec.inflate(deflated, 1 << 20)).toEqual(message)
    }))

  it.effect("close interrupts an inflate in flight", () =>
    Effect.gen(function*() {
      const jobs = yield* zlibJobs
      const codec = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
      const fiber = yield* Effect.forkChild(codec.inflate(bomb(1000), 64 << 20))
      yield* midMessage(jobs.count)
      yield* codec.close
      expect(Exit.hasInterrupts(yield* Effect.exit(Fiber.join(fiber)))).toBe(true)
    }))

  it.effect("1 MiB inflating to 1 GiB fails with 1009 at a 16 MiB limit, holding a few MiB at most, inflating little beyond the limit", () =>
    Effect.gen(function*() {
      const payload = bomb(1000)
      expect(payload.length).toBeLessThanOrEqual(1 << 20)
      const jobs = yield* zlibJobs
      const codec = yield* PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults)
      const before = process.memoryUsage()
      let peakRss = before.rss // highest rss seen while inflating
      let peakBuffers = before.arrayBuffers // highest ArrayBuffer total seen while inflating
      const sampler = setInterval(() => {
        const now = process.memoryUsage()
        peakRss = Math.max(peakRss, now.rss)
        peakBuffers = Math.max(peakBuffers, now.arrayBuffers)
      }, 2)
      const exit = yield* Effect.exit(codec.inflate(payload, 16 << 20))
      clearInterval(sampler)
      const after = process.memoryUsage()
      peakRss = Math.max(peakRss, after.rss)
      peakBuffers = Math.max(peakBuffers, after.arrayBuffers)
      expect(failure(exit).code).toBe(1009)
      const MiB = 1 << 20
      // 1 GiB would be inflated without the guard; allow the 16 MiB kept plus slack
      expect(peakBuffers - before.arrayBuffers).toBeLessThan(48 * MiB)
      expect(peakRss - before.rss).toBeLessThan(160 * MiB)
      // at most 16 KiB per job: 16 MiB is ~1024 jobs, the whole 1 GiB 65536;
      // the guard stopped zlib about when the limit was passed, not before
      const perMiB = MiB / (16 * 1024)
      expect(jobs.count()).toBeGreaterThan(8 * perMiB)
      expect(jobs.count()).toBeLessThan(32 * perMiB)
    }))
})

// -----------------------------------------------------------------------------
// The run-time queues (internal/compression.ts) over a real codec
// -----------------------------------------------------------------------------

/**
 * No message makes zlib's deflate fail through the public API (options are
 * validated when the server is made, and a connection's codec is only closed
 * after the connection ended); an internal fault is provoked here the way it
 * would happen, with a real codec closed under a deflate in flight: at the
 * Compression part, then through a connection's Driver over TCP (upgraded by
 * hand, since the server never closes a live connection's codec).
 */
describe("Compression: a failing deflate", () => {
  it.effect("is reported to the connection once; the sender in flight and the one queued behind it are told it failed; nothing goes out after it", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      // syncLimit 0: every deflate on the thread pool, so that one is in flight when the codec goes
      const codec = yield* PerMessageDeflate.make(negotiated(), { ...PerMessageDeflate.defaults, syncLimit: 0 }).pipe(Scope.provide(scope))
      const sent: Array<{ readonly text: boolean; readonly compressed: boolean }> = []
      let deflateFailed = 0
      const compression = new Compression(codec, 16, 1 << 20, Effect.runPromiseExit, {
        received: () => {},
        inflated: () => {},
        inflateFailed: () => {},
        send: (_payload, text, compressed) => {
          sent.push({ text, compressed })
          return true
        },
        deflateFailed: () => void deflateFailed++
      })
      const done: Array<boolean | undefined> = [undefined, undefined]
      // below the threshold: out at once, uncompressed; then one to deflate, in flight
      compression.send(["short", "long enough to be deflated ".repeat(20)], (ok) => void (done[0] = ok))
      compression.send(["queued behind it ".repeat(20)], (ok) => void (done[1] = ok))
      expect(sent).toEqual([{ text: true, compressed: false }])
      // the codec goes away under the deflate in flight
      yield* Scope.close(scope, Exit.void)
      yield* Effect.promise(() => until("both senders to be told", () => done.every((d) => d !== undefined)))
      expect(done).toEqual([false, false])
      expect(deflateFailed).toBe(1)
      expect(sent).toEqual([{ text: true, compressed: false }])
    }))

  it("through a connection over TCP: Close 1011 on the wire; the send fails with ConnectionClosed; closed says 1011", async () => {
    const scope = Scope.makeUnsafe()
    const codec = Effect.runSync(PerMessageDeflate.make(negotiated(), PerMessageDeflate.defaults).pipe(Scope.provide(scope)))
    const started: { driver?: Driver } = {}
    const limits = {
      maxMessageSize: 1 << 20,
      closeTimeout: 500,
      pingInterval: 0,
      idleTimeout: 0,
      maxLifetime: 0,
      highWaterMark: 1 << 16,
      maxBufferedAmount: 1 << 20,
      overflow: "wait",
      inboxHighWaterMark: 64
    } as const
    // the upgrade, by hand: the request head, a 101 with permessage-deflate, then the Driver
    const server = Net.createServer((socket) => {
      let head = Buffer.alloc(0)
      const onHead = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk])
        const end = head.indexOf("\r\n\r\n")
        if (end < 0) return
        socket.off("data", onHead)
        socket.pause()
        const key = /^sec-websocket-key: *(\S+)\r$/im.exec(head.toString("latin1"))![1]!
        socket.write(Handshake.response101({ accept: Handshake.acceptKey(key), extensions: "permessage-deflate" }))
        const request = {
          method: "GET",
          target: "/ws",
          path: "/ws",
          query: new URLSearchParams(),
          params: {},
          headers: new Map<string, string>(),
          httpVersion: "1.1",
          cookies: new Map<string, string>(),
          remoteAddress: socket.remoteAddress,
          remotePort: socket.remotePort
        }
        started.driver = new Driver({
          socket,
          limits,
          request,
          protocol: undefined,
          extensions: "permessage-deflate",
          codec,
          deflateThreshold: 0,
          run: Effect.runPromiseExit,
          clock: { now: Date.now() },
          owner: { onEnd: () => {}, onOver: () => {} }
        })
        started.driver.start(head.subarray(end + 4))
      }
      socket.on("data", onHead)
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    try {
      const port = (server.address() as Net.AddressInfo).port
      const c = await RawClient.connect(port, { allowRsv1: true, headers: { "Sec-WebSocket-Extensions": "permessage-deflate" } })
      await until("the connection to start", () => started.driver !== undefined)
      const ws = started.driver!.handle
      // the codec goes away under the open connection: its next deflate fails
      await Effect.runPromise(Scope.close(scope, Exit.void))
      const sent = Effect.runPromiseExit(ws.send("compress me ".repeat(20)))
      await c.expectClose(1011)
      const exit = await sent
      const error = Exit.findErrorOption(exit)
      assert.isTrue(error._tag === "Some", `expected a failure, got ${String(exit)}`)
      // (its code is 1005, "closing": the sender is told before the connection has its outcome)
      expect(error._tag === "Some" ? error.value.reason : undefined).toMatchObject({ _tag: "ConnectionClosed", connection: ws.id })
      expect(await Effect.runPromise(ws.closed)).toMatchObject({ code: 1011, clean: false, initiator: "local" })
    } finally {
      RawClient.destroyAll()
      started.driver?.dispose()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })
})
