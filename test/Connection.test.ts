import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as CloseReason from "../src/CloseReason.ts"
import * as Connection from "../src/Connection.ts"
import * as Frame from "../src/Frame.ts"

// ---------------------------------------------------------------------------
// Helpers: client frames in, server frames out
// ---------------------------------------------------------------------------

const MASK = Uint8Array.of(0x37, 0xfa, 0x21, 0x3d)
const { Opcode, CloseCode } = Frame

const utf8 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, "utf8"))
const hex = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex")

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}

/** A masked client frame. */
const frame = (
  opcode: Frame.Opcode,
  payload: Uint8Array | string,
  options: { readonly fin?: boolean; readonly rsv1?: boolean } = {}
): Uint8Array =>
  concat(Frame.encode(opcode, typeof payload === "string" ? utf8(payload) : payload, { ...options, mask: MASK }))

const closeFrame = (code: number, reason = ""): Uint8Array => frame(Opcode.Close, Frame.encodeClose(code, reason))

/** An unmasked client frame (a violation from a client), built by hand. */
const unmasked = (opcode: number, payload: Uint8Array): Uint8Array => concat([Uint8Array.of(0x80 | opcode, payload.length), payload])

const EMPTY_BYTES = new Uint8Array(0)

const OPTIONS: Connection.Options = { maxMessageSize: 1 << 20, compression: false }

interface Run {
  readonly state: Connection.State
  readonly actions: ReadonlyArray<Connection.Action>
  /** actions produced by each input */
  readonly perInput: ReadonlyArray<ReadonlyArray<Connection.Action>>
}

/**
 * Steps through the inputs; `Uint8Array`s are fed as `Bytes` (as fresh
 * copies: the machine owns them). The handler is taken to be idle: a delayed
 * Close (`AwaitHandler`) is released at once with `HandlerIdle`, whose
 * actions take its place (see "the delayed Close" below for the wait itself).
 */
const run = (
  inputs: ReadonlyArray<Connection.Input | Uint8Array>,
  options: Connection.Options = OPTIONS,
  start: Connection.State = Connection.initial(options)
): Run => {
  let state = start
  const actions: Array<Connection.Action> = []
  const perInput: Array<ReadonlyArray<Connection.Action>> = []
  for (const input of inputs) {
    let result = Connection.step(state, input instanceof Uint8Array ? { _tag: "Bytes", chunk: Buffer.isBuffer(input) ? Buffer.from(input) : input.slice() } : input)
    let produced = result.actions
    if (produced.some((a) => a._tag === "AwaitHandler")) {
      result = Connection.step(result.state, { _tag: "HandlerIdle" })
      produced = [...produced.filter((a) => a._tag !== "AwaitHandler"), ...result.actions]
    }
    state = result.state
    actions.push(...produced)
    perInput.push(produced)
  }
  return { state, actions, perInput }
}

/** The frames the server wrote, decoded as a client would. */
interface Written {
  readonly opcode: number
  readonly payload: Uint8Array
  readonly rsv1: boolean
}
const writtenFrames = (actions: ReadonlyArray<Connection.Action>): Array<Written> => {
  const bytes = concat(actions.flatMap((a) => (a._tag === "Write" ? a.chunks : [])))
  const result = Frame.decode(Frame.initialDecoder({ role: "client", maxPayload: 1 << 30, allowRsv1: true }), bytes)
  expect(result._tag).toBe("Ok")
  if (result._tag === "Ok") expect(Frame.partial(result.state)).toBeUndefined()
  return result.frames.map((f) => ({ opcode: f.opcode, payload: f.payload.slice(), rsv1: f.rsv1 }))
}

const closesWritten = (actions: ReadonlyArray<Connection.Action>): Array<Frame.ClosePayload> =>
  writtenFrames(actions).filter((f) => f.opcode === Opcode.Close).map((f) => Frame.parseClose(f.payload))

const delivered = (actions: ReadonlyArray<Connection.Action>): Array<string | Uint8Array> =>
  actions.flatMap((a) => (a._tag === "Deliver" ? [a.data] : []))

const tags = (actions: ReadonlyArray<Connection.Action>): Array<string> => actions.map((a) => a._tag)

/** A violation: one Close with `code` written, then CloseTransport, then the outcome; nothing else after. */
const expectFailedWith = (actions: ReadonlyArray<Connection.Action>, code: number): void => {
  const closes = closesWritten(actions)
  expect(closes).toHaveLength(1)
  expect(closes[0]).toMatchObject({ _tag: "Code", code })
  expect(tags(actions.slice(-3))).toEqual(["Write", "CloseTransport", "Closed"])
  expect(actions.at(-1)).toMatchObject({ _tag: "Closed", outcome: { code, clean: false, initiator: "local" } })
}

/** Action sequences modulo Write chunk boundaries: consecutive writes merged into one byte string. */
type Normal =
  | { readonly _tag: "Write"; readonly bytes: string }
  | { readonly _tag: "Deliver"; readonly text: boolean; readonly data: string }
  | Exclude<Connection.Action, { readonly _tag: "Write" } | { readonly _tag: "Deliver" }>
const normalize = (actions: ReadonlyArray<Connection.Action>): Array<Normal> => {
  const out: Array<Normal> = []
  for (const action of actions) {
    switch (action._tag) {
      case "Write": {
        const bytes = action.chunks.map(hex).join("")
        const last = out.at(-1)
        if (last?._tag === "Write") out[out.length - 1] = { _tag: "Write", bytes: last.bytes + bytes }
        else out.push({ _tag: "Write", bytes })
        break
      }
      case "Deliver":
        out.push({ _tag: "Deliver", text: typeof action.data === "string", data: typeof action.data === "string" ? action.data : hex(action.data) })
        break
      case "DeliverCompressed":
        out.push({ ...action, data: new Uint8Array(action.data) })
        break
      case "Pong":
        out.push({ _tag: "Pong", payload: new Uint8Array(action.payload) })
        break
      default:
        out.push(action)
    }
  }
  return out
}

/** Splits `bytes` at the given cut points (taken modulo its length). */
const chop = (bytes: Uint8Array, rawCuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const cuts = [...new Set(rawCuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  const chunks: Array<Uint8Array> = []
  let from = 0
  for (const cut of [...cuts, bytes.length]) {
    chunks.push(bytes.subarray(from, cut))
    from = cut
  }
  return chunks
}
const bytewise = (bytes: Uint8Array): Array<Uint8Array> => Array.from(bytes, (b) => Uint8Array.of(b))

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/** Mostly valid UTF-8, sometimes damaged. */
const textBytes = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: "binary", maxLength: 24 }).map(utf8) },
  { weight: 4, arbitrary: fc.string({ maxLength: 30 }).map(utf8) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 8 }) },
  { weight: 1, arbitrary: fc.constantFrom(Uint8Array.of(0xed, 0xa0, 0x80), Uint8Array.of(0xf4, 0x90), Uint8Array.of(0xce), Uint8Array.of(0xc0, 0xaf)) }
)

/** Splits a payload into 1-4 fragments. */
const fragmented = (opcode: Frame.Opcode, payload: Uint8Array, cuts: ReadonlyArray<number>, rsv1: boolean): Array<Uint8Array> => {
  const parts = chop(payload, cuts)
  return parts.map((part, i) =>
    frame(i === 0 ? opcode : Opcode.Continuation, part, { fin: i === parts.length - 1, rsv1: rsv1 && i === 0 })
  )
}

const cutsArb = fc.array(fc.nat(), { maxLength: 3 })

/** One client-side event as bytes: messages (maybe fragmented, with pings between), control frames, mistakes. */
const eventArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 6, arbitrary: textBytes.map((p) => frame(Opcode.Text, p)) },
  { weight: 6, arbitrary: fc.tuple(textBytes, cutsArb).map(([p, cuts]) => concat(fragmented(Opcode.Text, p, cuts, false))) },
  { weight: 3, arbitrary: fc.tuple(fc.uint8Array({ maxLength: 40 }), cutsArb).map(([p, cuts]) => concat(fragmented(Opcode.Binary, p, cuts, false))) },
  {
    weight: 2,
    arbitrary: fc.tuple(textBytes, fc.uint8Array({ maxLength: 10 })).map(([p, ping]) =>
      concat([frame(Opcode.Text, p.subarray(0, p.length >> 1), { fin: false }), frame(Opcode.Ping, ping), frame(Opcode.Continuation, p.subarray(p.length >> 1))])
    )
  },
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 20 }).map((p) => frame(Opcode.Ping, p)) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 20 }).map((p) => frame(Opcode.Pong, p)) },
  { weight: 1, arbitrary: fc.tuple(fc.uint8Array({ maxLength: 6 }), fc.boolean()).map(([p, fin]) => frame(Opcode.Continuation, p, { fin })) },
  { weight: 1, arbitrary: textBytes.map((p) => frame(Opcode.Text, p, { fin: false })) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 30 }).map((p) => frame(Opcode.Binary, p, { rsv1: true })) },
  { weight: 1, arbitrary: fc.constantFrom(1000, 1001, 3000, 4999, 999, 1005, 1016).map((code) => closeFrame(code, "bye")) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 5 }).map((p) => frame(Opcode.Close, p)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 6 }) }
)

const streamArb = fc.array(eventArb, { maxLength: 8 }).map(concat)

const appInputArb: fc.Arbitrary<Connection.Input> = fc.oneof(
  fc.record({ _tag: fc.constant("Ping" as const), payload: fc.uint8Array({ maxLength: 8 }) }),
  fc.record({
    _tag: fc.constant("Close" as const),
    reason: fc.tuple(fc.constantFrom(1000, 1001, 1011, 4000), fc.string({ maxLength: 5 })).map(([c, r]) => CloseReason.application(c, r))
  }),
  fc.constant({ _tag: "Fail" as const, reason: CloseReason.internalError("compression failed") }),
  fc.record({ _tag: fc.constant("Inflated" as const), text: fc.boolean(), data: fc.uint8Array({ maxLength: 8 }) }),
  fc.constant({ _tag: "InflateFailed" as const, reason: CloseReason.invalidPayload("bad deflate data") }),
  fc.constant({ _tag: "HandlerIdle" as const }),
  fc.constant({ _tag: "Abort" as const }),
  fc.constant({ _tag: "CloseTimeout" as const }),
  fc.constant({ _tag: "EndOfStream" as const })
)

const SMALL: Connection.Options = { maxMessageSize: 48, compression: false }

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

describe("Connection properties", () => {
  it("outputs do not depend on how the bytes are chopped (1-byte chops included)", () => {
    fc.assert(
      fc.property(streamArb, fc.array(fc.nat(), { maxLength: 12 }), fc.boolean(), (stream, cuts, compression) => {
        const options = { ...SMALL, compression }
        const whole = normalize(run([stream, { _tag: "EndOfStream" }], options).actions)
        expect(normalize(run([...chop(stream, cuts), { _tag: "EndOfStream" }], options).actions)).toEqual(whole)
        expect(normalize(run([...bytewise(stream), { _tag: "EndOfStream" }], options).actions)).toEqual(whole)
        expect(normalize(run([Buffer.from(stream), { _tag: "EndOfStream" }], options).actions)).toEqual(whole)
      }),
      { numRuns: 150 }
    )
  })

  it("never throws, emits Closed at most once and nothing after it, writes nothing after our Close", () => {
    const inputs = fc.array(
      fc.oneof({ weight: 3, arbitrary: eventArb.map((chunk): Connection.Input => ({ _tag: "Bytes", chunk })) }, { weight: 1, arbitrary: appInputArb }),
      { maxLength: 12 }
    )
    fc.assert(
      fc.property(inputs, fc.boolean(), (sequence, compression) => {
        const { actions } = run(sequence, { ...SMALL, compression })
        let closeWritten = false // a Close frame went out
        let closed = false // the outcome was emitted
        for (const action of actions) {
          expect(closed).toBe(false)
          if (action._tag === "Closed") closed = true
          if (action._tag === "Write") {
            expect(closeWritten).toBe(false)
            // server frames are unmasked; the opcode is in the first byte of the header
            if ((action.chunks[0][0] & 0x0f) === Opcode.Close) closeWritten = true
          }
        }
        expect(actions.filter((a) => a._tag === "CloseTransport").length).toBe(closed ? 1 : 0)
      }),
      { numRuns: 200 }
    )
  })

  it("random bytes never throw and end in at most one Close", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 6 }), fc.boolean(), (chunks, compression) => {
        const { actions } = run(chunks, { ...SMALL, compression })
        expect(closesWritten(actions).length).toBeLessThanOrEqual(1)
      }),
      { numRuns: 200 }
    )
  })

  /** Valid traffic: nothing in it ends the connection. */
  const validEventArb = fc.oneof(
    fc.tuple(fc.string({ unit: "binary", maxLength: 12 }).map(utf8), cutsArb).map(([p, cuts]) => concat(fragmented(Opcode.Text, p, cuts, false))),
    fc.tuple(fc.uint8Array({ maxLength: 20 }), cutsArb).map(([p, cuts]) => concat(fragmented(Opcode.Binary, p, cuts, false))),
    fc.uint8Array({ maxLength: 20 }).map((p) => frame(Opcode.Ping, p)),
    fc.uint8Array({ maxLength: 20 }).map((p) => frame(Opcode.Pong, p))
  )
  const violationArb: fc.Arbitrary<readonly [Uint8Array, number]> = fc.constantFrom<readonly [Uint8Array, number]>(
    [frame(Opcode.Continuation, "x"), CloseCode.ProtocolError],
    [concat([frame(Opcode.Text, "a", { fin: false }), frame(Opcode.Binary, "b")]), CloseCode.ProtocolError],
    [frame(Opcode.Text, Uint8Array.of(0x61, 0xed, 0xa0, 0x80)), CloseCode.InvalidPayload],
    [concat([frame(Opcode.Text, Uint8Array.of(0x61, 0xe2), { fin: false }), frame(Opcode.Continuation, Uint8Array.of(0x82, 0x41))]), CloseCode.InvalidPayload],
    [frame(Opcode.Text, Uint8Array.of(0x61, 0xe2, 0x82)), CloseCode.InvalidPayload],
    [concat([frame(Opcode.Binary, new Uint8Array(30), { fin: false }), frame(Opcode.Continuation, new Uint8Array(30))]), CloseCode.MessageTooBig],
    [frame(Opcode.Binary, new Uint8Array(49)), CloseCode.MessageTooBig],
    [unmasked(Opcode.Text, utf8("hi")), CloseCode.ProtocolError],
    [frame(Opcode.Binary, "z", { rsv1: true }), CloseCode.ProtocolError],
    [frame(Opcode.Close, Uint8Array.of(0x03)), CloseCode.ProtocolError],
    [closeFrame(1005), CloseCode.ProtocolError],
    [frame(Opcode.Close, Uint8Array.of(0x03, 0xe8, 0xff)), CloseCode.InvalidPayload]
  )

  it("every violation yields exactly one Close with its code, then CloseTransport", () => {
    fc.assert(
      fc.property(
        fc.array(validEventArb, { maxLength: 4 }),
        violationArb,
        fc.array(eventArb, { maxLength: 3 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (before, [violation, code], after, cuts) => {
          const stream = concat([...before, violation, ...after])
          const { actions, state } = run(chop(stream, cuts), SMALL)
          expectFailedWith(actions, code)
          expect(state).toMatchObject({ _tag: "Closed", outcome: { code, clean: false } })
        }
      ),
      { numRuns: 200 }
    )
  })
})

// ---------------------------------------------------------------------------
// Fixed cases, one per rule
// ---------------------------------------------------------------------------

describe("Connection messages", () => {
  it("delivers a single-frame text message as a string and binary as bytes", () => {
    const { actions } = run([concat([frame(Opcode.Text, "héllo €"), frame(Opcode.Binary, Uint8Array.of(1, 2, 3))])])
    expect(delivered(actions)).toEqual(["héllo €", Uint8Array.of(1, 2, 3)])
  })

  it("delivers many text frames of one read exactly (short ASCII, non-ASCII, long, binary mixed)", () => {
    const texts = ["a", "hello world 1234", "", "héllo", "x".repeat(300), "0123456789abcdefghij", "€", "z"]
    const chunk = concat([...texts.map((t) => frame(Opcode.Text, t)), frame(Opcode.Binary, Uint8Array.of(7)), frame(Opcode.Text, "last")])
    expect(delivered(run([chunk]).actions)).toEqual([...texts, Uint8Array.of(7), "last"])
    // the same as a Buffer (socket data), and with a frame completing from the previous read first
    const split = 3
    const result = run([Buffer.from(chunk.subarray(0, split)), Buffer.from(chunk.subarray(split))])
    expect(delivered(result.actions)).toEqual([...texts, Uint8Array.of(7), "last"])
  })

  it("keeps a leading U+FEFF (byte order mark) in text", () => {
    const { actions } = run([concat([frame(Opcode.Text, "\ufeffa"), frame(Opcode.Text, "\ufeff", { fin: false }), frame(Opcode.Continuation, "b")])])
    expect(delivered(actions)).toEqual(["\ufeffa", "\ufeffb"])
    // ... also when the chunk is a Buffer (socket data)
    const result = Connection.step(Connection.initial(OPTIONS), { _tag: "Bytes", chunk: Buffer.from(frame(Opcode.Text, "\ufeffc")) })
    expect(delivered(result.actions)).toEqual(["\ufeffc"])
  })

  it("reassembles fragments into one message", () => {
    const { actions, perInput } = run([
      frame(Opcode.Text, "Hel", { fin: false }),
      frame(Opcode.Continuation, "lo, ", { fin: false }),
      frame(Opcode.Continuation, "", { fin: false }),
      frame(Opcode.Continuation, "world"),
      concat([frame(Opcode.Binary, Uint8Array.of(1), { fin: false }), frame(Opcode.Continuation, Uint8Array.of(2, 3))])
    ])
    expect(perInput.slice(0, 3)).toEqual([[], [], []])
    expect(delivered(actions)).toEqual(["Hello, world", Uint8Array.of(1, 2, 3)])
  })

  it("answers a ping interleaved in a fragmented message and still reassembles it", () => {
    const { actions } = run([
      concat([frame(Opcode.Text, "ab", { fin: false }), frame(Opcode.Ping, "p1"), frame(Opcode.Continuation, "cd")])
    ])
    expect(tags(actions)).toEqual(["Write", "Deliver"])
    expect(writtenFrames(actions)).toEqual([{ opcode: Opcode.Pong, payload: utf8("p1"), rsv1: false }])
    expect(delivered(actions)).toEqual(["abcd"])
  })

  it("a continuation without a message to continue: 1002", () => {
    expectFailedWith(run([frame(Opcode.Continuation, "x")]).actions, CloseCode.ProtocolError)
  })

  it("a new data frame while a fragmented message is open: 1002", () => {
    const { actions } = run([frame(Opcode.Text, "a", { fin: false }), frame(Opcode.Text, "b")])
    expect(delivered(actions)).toEqual([])
    expectFailedWith(actions, CloseCode.ProtocolError)
  })

  it("fragmentation errors are caught at the frame's header, before its payload arrives", () => {
    const stray = frame(Opcode.Continuation, "payload")
    expectFailedWith(run([stray.subarray(0, stray.length - 7)]).actions, CloseCode.ProtocolError)
    const interleaved = frame(Opcode.Text, Uint8Array.of(0xff, 0xff))
    const { perInput } = run([frame(Opcode.Binary, "a", { fin: false }), interleaved.subarray(0, interleaved.length - 2)])
    expect(perInput[0]).toEqual([])
    expectFailedWith(perInput[1], CloseCode.ProtocolError)
  })

  it("invalid UTF-8 split across fragments: 1007 at the fragment that makes it impossible", () => {
    // U+D800 encoded (ED A0 80), split after ED
    const { perInput } = run([
      frame(Opcode.Text, Uint8Array.of(0x61, 0xed), { fin: false }),
      frame(Opcode.Continuation, Uint8Array.of(0xa0, 0x80), { fin: false }),
      frame(Opcode.Continuation, "z")
    ])
    expect(perInput[0]).toEqual([])
    expectFailedWith(perInput[1], CloseCode.InvalidPayload)
    expect(perInput[2]).toEqual([])
  })

  it("reassembles a mix of small (copied) and large (viewed) fragments in order", () => {
    const sizes = [3, 2000, 5, 1, 1500, 0, 300, 300, 7, 1024, 1023]
    const total = sizes.reduce((a, b) => a + b, 0)
    const message = Uint8Array.from({ length: total }, (_, i) => (i * 7 + 3) & 0xff)
    const frames: Array<Uint8Array> = []
    let at = 0
    sizes.forEach((size, i) => {
      frames.push(frame(i === 0 ? Opcode.Binary : Opcode.Continuation, message.subarray(at, at + size), { fin: i === sizes.length - 1 }))
      at += size
    })
    expect(delivered(run(frames).actions)).toEqual([message])
    const text = "é€😀abc".repeat(200)
    const bytes = utf8(text)
    const cuts = [1, 2, 1030, 1031, 2100, 3200]
    const textFrames = chop(bytes, cuts).map((piece, i, all) => frame(i === 0 ? Opcode.Text : Opcode.Continuation, piece, { fin: i === all.length - 1 }))
    expect(delivered(run([concat(textFrames)]).actions)).toEqual([text])
  })

  it("a multi-byte character split across fragments is valid", () => {
    const euro = utf8("€") // E2 82 AC
    const { actions } = run([
      frame(Opcode.Text, euro.subarray(0, 1), { fin: false }),
      frame(Opcode.Continuation, euro.subarray(1, 2), { fin: false }),
      frame(Opcode.Continuation, euro.subarray(2))
    ])
    expect(delivered(actions)).toEqual(["€"])
  })

  it("text truncated at the end of the message: 1007", () => {
    expectFailedWith(
      run([frame(Opcode.Text, Uint8Array.of(0x61, 0xe2), { fin: false }), frame(Opcode.Continuation, Uint8Array.of(0x82))]).actions,
      CloseCode.InvalidPayload
    )
  })

  it("fails fast inside one frame arriving in 3 chops (Autobahn 6.4.3): Close right after the chop with the bad byte", () => {
    const payload = concat([utf8("κόσμε"), Uint8Array.of(0xf4, 0x90, 0x80, 0x80), utf8("edited")])
    const bytes = frame(Opcode.Text, payload)
    const header = bytes.length - payload.length
    const first = header + utf8("κόσμε").length
    const { perInput, state } = run([bytes.subarray(0, first), bytes.subarray(first, first + 4), bytes.subarray(first + 4)])
    expect(perInput[0]).toEqual([])
    expectFailedWith(perInput[1], CloseCode.InvalidPayload)
    expect(perInput[2]).toEqual([])
    expect(state._tag).toBe("Closed")
  })

  it("fails fast on the very byte (Autobahn 6.4.4): ED then A0 in separate chops", () => {
    const payload = concat([utf8("ab"), Uint8Array.of(0xed, 0xa0, 0x80), utf8("cd")])
    const bytes = frame(Opcode.Text, payload)
    const at = bytes.length - payload.length + 2
    const { perInput } = run([bytes.subarray(0, at + 1), bytes.subarray(at + 1, at + 2), bytes.subarray(at + 2)])
    expect(perInput[0]).toEqual([]) // ED alone could still be valid
    expectFailedWith(perInput[1], CloseCode.InvalidPayload)
  })

  it("text in a frame arriving in chops is delivered once it completes", () => {
    const bytes = frame(Opcode.Text, "a€b€c")
    const { actions } = run(bytewise(bytes))
    expect(delivered(actions)).toEqual(["a€b€c"])
  })

  it("message size across fragments: 1009 at the header of the fragment that exceeds it", () => {
    const options = { maxMessageSize: 100, compression: false }
    const second = frame(Opcode.Continuation, new Uint8Array(60))
    const { perInput } = run([frame(Opcode.Binary, new Uint8Array(60), { fin: false }), second.subarray(0, second.length - 60)], options)
    expect(perInput[0]).toEqual([])
    expectFailedWith(perInput[1], CloseCode.MessageTooBig)
  })

  it("a message exactly at the size limit is delivered", () => {
    const options = { maxMessageSize: 100, compression: false }
    const { actions } = run([frame(Opcode.Binary, new Uint8Array(40), { fin: false }), frame(Opcode.Continuation, new Uint8Array(60))], options)
    expect(delivered(actions)).toEqual([new Uint8Array(100)])
  })

  it("a message in 100k fragments is reassembled in linear time", () => {
    const count = 100_000
    const fragment = 4
    // masked client frames with an all-zero mask, built by hand: [opcode, 0x80 | len, 0 0 0 0, payload]
    const stream = new Uint8Array(count * (6 + fragment))
    for (let i = 0; i < count; i++) {
      const at = i * (6 + fragment)
      stream[at] = (i === 0 ? Opcode.Binary : Opcode.Continuation) | (i === count - 1 ? 0x80 : 0)
      stream[at + 1] = 0x80 | fragment
      for (let j = 0; j < fragment; j++) stream[at + 6 + j] = (i + j) & 0xff
    }
    const lastFrame = stream.length - (6 + fragment)
    const partway = run([stream.subarray(0, stream.length >> 1), stream.subarray(stream.length >> 1, lastFrame)])
    const { actions } = run([stream.subarray(lastFrame)], OPTIONS, partway.state)
    // Memory stays proportional to the bytes: small fragments are copied into
    // a few buffers rather than each kept as a view (~100 bytes of object per fragment).
    expect(partway.state._tag).toBe("Open")
    let pieces = 0
    if (partway.state._tag === "Open") {
      for (let piece = partway.state.message?.fragments; piece !== undefined; piece = piece.previous) pieces++
    }
    expect(pieces).toBeLessThan(20)
    const [message] = delivered(actions)
    expect(message).toBeInstanceOf(Uint8Array)
    expect((message as Uint8Array).length).toBe(count * fragment)
    expect((message as Uint8Array)[(count - 1) * fragment]).toBe((count - 1) & 0xff)
    // Quadratic concatenation would copy ~2e10 bytes here (the suite's time
    // would show it; a bound on elapsed time is not asserted: speed is the
    // benchmark's business).
  })
})

describe("Connection control frames", () => {
  it("answers a Ping with a Pong carrying the same payload", () => {
    const { actions } = run([frame(Opcode.Ping, "are you there?"), frame(Opcode.Ping, "")])
    expect(writtenFrames(actions)).toEqual([
      { opcode: Opcode.Pong, payload: utf8("are you there?"), rsv1: false },
      { opcode: Opcode.Pong, payload: new Uint8Array(0), rsv1: false }
    ])
  })

  it("an unsolicited Pong is only reported (no answer, nothing else)", () => {
    const { actions, state } = run([frame(Opcode.Pong, "hi"), frame(Opcode.Text, "after")])
    expect(tags(actions)).toEqual(["Pong", "Deliver"])
    expect(state._tag).toBe("Open")
  })

  it("sendHeader: FIN, RSV1 only where compression was negotiated, the opcode; -1 after our Close", () => {
    const open = Connection.initial(OPTIONS)
    expect(Connection.sendHeader(open, true, false)).toBe(0x81)
    expect(Connection.sendHeader(open, false, false)).toBe(0x82)
    expect(Connection.sendHeader(open, false, true)).toBe(-1) // no RSV1 without permessage-deflate (RFC 7692 §6)
    const deflating = Connection.initial({ ...OPTIONS, compression: true })
    expect(Connection.sendHeader(deflating, true, true)).toBe(0xc1)
    expect(Connection.sendHeader(deflating, false, false)).toBe(0x82)
    const closing = Connection.step(open, { _tag: "Close", reason: CloseReason.normal() }).state
    expect(Connection.canSend(closing)).toBe(false)
    expect(Connection.sendHeader(closing, true, false)).toBe(-1)
    const closed = Connection.step(open, { _tag: "EndOfStream" }).state
    expect(Connection.sendHeader(closed, false, false)).toBe(-1)
  })

  it("Ping input (keepalive or the application's) writes a Ping while open only; a Pong received is reported", () => {
    const { actions } = run([{ _tag: "Ping", payload: Uint8Array.of(1, 2) }, frame(Opcode.Pong, Uint8Array.of(1, 2))])
    expect(writtenFrames(actions)).toEqual([{ opcode: Opcode.Ping, payload: Uint8Array.of(1, 2), rsv1: false }])
    expect(actions.at(-1)).toEqual({ _tag: "Pong", payload: Uint8Array.of(1, 2) })
    const closing = run([{ _tag: "Close", reason: CloseReason.normal() }, { _tag: "Ping", payload: EMPTY_BYTES }])
    expect(writtenFrames(closing.actions).map((f) => f.opcode)).toEqual([Opcode.Close])
  })

  it("inflated messages: binary delivered, text validated as UTF-8 (1007 otherwise, after the handler caught up)", () => {
    const deflating = { ...OPTIONS, compression: true }
    const ok = run([{ _tag: "Inflated", text: true, data: utf8("\ufeffhé") }, { _tag: "Inflated", text: false, data: Uint8Array.of(7) }], deflating)
    expect(delivered(ok.actions)).toEqual(["\ufeffhé", Uint8Array.of(7)])
    expectFailedWith(run([{ _tag: "Inflated", text: true, data: Uint8Array.of(0x61, 0xff) }], deflating).actions, CloseCode.InvalidPayload)
    expectFailedWith(run([{ _tag: "InflateFailed", reason: CloseReason.messageTooBig("inflated past the limit") }], deflating).actions, CloseCode.MessageTooBig)
  })
})

describe("Connection: the delayed Close", () => {
  it("the peer's Close: our echo waits in Draining for HandlerIdle; sends are allowed meanwhile; then the outcome", () => {
    const start = Connection.initial(OPTIONS)
    const received = Connection.step(start, { _tag: "Bytes", chunk: concat([frame(Opcode.Text, "last"), closeFrame(4001, "bye")]) })
    expect(tags(received.actions)).toEqual(["Deliver", "AwaitHandler"])
    expect(received.state._tag).toBe("Draining")
    // the handler answers the last message before our Close goes out
    expect(Connection.sendHeader(received.state, true, false)).toBe(0x81)
    // what the peer sends now is ignored, and so are Pings of ours
    expect(Connection.step(received.state, { _tag: "Bytes", chunk: frame(Opcode.Text, "late") }).actions).toEqual([])
    const released = Connection.step(received.state, { _tag: "HandlerIdle" })
    expect(tags(released.actions)).toEqual(["Write", "CloseTransport", "Closed"])
    expect(closesWritten(released.actions)).toEqual([{ _tag: "Code", code: 4001, reason: "" }])
    expect(released.actions[2]).toEqual({
      _tag: "Closed",
      outcome: { code: 4001, reason: "bye", clean: true, initiator: "remote", detail: undefined }
    })
  })

  it("a violation waits the same way, with its code; a timeout, a Close or a Fail release it too; EndOfStream writes nothing", () => {
    const start = Connection.initial(OPTIONS)
    const violated = Connection.step(start, { _tag: "Bytes", chunk: concat([frame(Opcode.Text, "ok"), frame(Opcode.Continuation, "x")]) })
    expect(tags(violated.actions)).toEqual(["Deliver", "AwaitHandler"])
    for (const input of [{ _tag: "CloseTimeout" }, { _tag: "Close", reason: CloseReason.normal() }, { _tag: "Fail", reason: CloseReason.internalError("x") }] as const) {
      const released = Connection.step(violated.state, input)
      expect(closesWritten(released.actions)).toMatchObject([{ _tag: "Code", code: CloseCode.ProtocolError }])
      expect(released.actions.at(-1)).toMatchObject({ outcome: { code: 1002, clean: false, initiator: "local", detail: { _tag: "ProtocolError" } } })
    }
    const gone = Connection.step(violated.state, { _tag: "EndOfStream" })
    expect(tags(gone.actions)).toEqual(["CloseTransport", "Closed"])
  })

  it("messages still inflating when the peer closed are delivered while draining", () => {
    const deflating = { ...OPTIONS, compression: true }
    const start = Connection.initial(deflating)
    const received = Connection.step(start, { _tag: "Bytes", chunk: concat([frame(Opcode.Text, Uint8Array.of(0x00), { rsv1: true }), closeFrame(1000)]) })
    expect(tags(received.actions)).toEqual(["DeliverCompressed", "AwaitHandler"])
    const inflated = Connection.step(received.state, { _tag: "Inflated", text: true, data: utf8("late but delivered") })
    expect(delivered(inflated.actions)).toEqual(["late but delivered"])
    expect(inflated.state._tag).toBe("Draining")
  })

  it("states are single use: stepping an older state again may see the successor's bytes (filled in place)", () => {
    // A fragmented message's small fragments are copied into a buffer the
    // successor state shares: stepping the same state twice writes into it twice.
    const start = Connection.initial(OPTIONS)
    const first = Connection.step(start, { _tag: "Bytes", chunk: frame(Opcode.Binary, "ab", { fin: false }) }).state
    const a = Connection.step(first, { _tag: "Bytes", chunk: frame(Opcode.Continuation, "cd", { fin: false }) }).state
    // Stepping `first` again (wrong) appends into the same reassembly as `a`
    Connection.step(first, { _tag: "Bytes", chunk: frame(Opcode.Continuation, "XY", { fin: false }) })
    const end = Connection.step(a, { _tag: "Bytes", chunk: frame(Opcode.Continuation, "", { fin: true }) })
    // `a` now holds "abcdXY": the reuse corrupted it. Keep only the latest state.
    expect(Buffer.from(delivered(end.actions)[0] as Uint8Array).toString()).toBe("abcdXY")
  })
})

describe("Connection closing handshake", () => {
  it("echoes the peer's Close code, closes the transport, ends clean", () => {
    const { actions, state } = run([closeFrame(4001, "done")])
    expect(closesWritten(actions)).toEqual([{ _tag: "Code", code: 4001, reason: "" }])
    expect(tags(actions)).toEqual(["Write", "CloseTransport", "Closed"])
    expect(actions[2]).toEqual({ _tag: "Closed", outcome: { code: 4001, reason: "done", clean: true, initiator: "remote", detail: undefined } })
    expect(state._tag).toBe("Closed")
  })

  it("answers an empty Close with 1000 (outcome: 1005, no status received)", () => {
    const { actions } = run([frame(Opcode.Close, new Uint8Array(0))])
    expect(closesWritten(actions)).toEqual([{ _tag: "Code", code: 1000, reason: "" }])
    expect(actions.at(-1)).toEqual({ _tag: "Closed", outcome: { code: 1005, reason: "", clean: true, initiator: "remote", detail: undefined } })
  })

  it("a Close payload of 1 byte: 1002", () => {
    expectFailedWith(run([frame(Opcode.Close, Uint8Array.of(0x03))]).actions, CloseCode.ProtocolError)
  })

  it("a Close with a code that may not be sent (1005, 999, 2000): 1002", () => {
    for (const code of [1005, 1006, 999, 2000]) {
      expectFailedWith(run([frame(Opcode.Close, Uint8Array.of(code >> 8, code & 0xff))]).actions, CloseCode.ProtocolError)
    }
  })

  it("a Close reason that is not UTF-8: 1007", () => {
    expectFailedWith(run([frame(Opcode.Close, Uint8Array.of(0x03, 0xe8, 0xce, 0xba, 0xed, 0xa0, 0x80))]).actions, CloseCode.InvalidPayload)
  })

  it("ignores everything after the peer's Close", () => {
    const { actions, perInput } = run([
      concat([closeFrame(1000), frame(Opcode.Text, "late"), frame(Opcode.Ping, "late")]),
      frame(Opcode.Ping, "later"),
      { _tag: "Ping", payload: utf8("x") },
      { _tag: "EndOfStream" }
    ])
    expect(delivered(actions)).toEqual([])
    expect(writtenFrames(actions).map((f) => f.opcode)).toEqual([Opcode.Close])
    expect(perInput.slice(1)).toEqual([[], [], []])
  })

  it("local Close: writes Close, arms the timer, and completes on the peer's Close", () => {
    const closing = run([{ _tag: "Close", reason: CloseReason.goingAway("idle timeout") }])
    expect(tags(closing.actions)).toEqual(["Write", "ArmCloseTimer"])
    expect(closesWritten(closing.actions)).toEqual([{ _tag: "Code", code: 1001, reason: "idle timeout" }])
    expect(closing.state._tag).toBe("Closing")
    const done = run([frame(Opcode.Text, "in flight"), frame(Opcode.Ping, "x"), closeFrame(1001)], OPTIONS, closing.state)
    expect(done.actions).toEqual([
      { _tag: "CancelCloseTimer" },
      { _tag: "CloseTransport" },
      { _tag: "Closed", outcome: { code: 1001, reason: "", clean: true, initiator: "local", detail: CloseReason.goingAway("idle timeout") } }
    ])
  })

  it("while closing: an empty Close completes cleanly (1005); a violation or bad Close ends it unclean, writing nothing", () => {
    const closing = run([{ _tag: "Close", reason: CloseReason.normal() }]).state
    const cases: ReadonlyArray<readonly [Uint8Array, number, boolean]> = [
      [frame(Opcode.Close, new Uint8Array(0)), 1005, true],
      [unmasked(Opcode.Text, utf8("x")), CloseCode.ProtocolError, false],
      [frame(Opcode.Close, Uint8Array.of(3)), CloseCode.ProtocolError, false],
      [frame(Opcode.Close, Uint8Array.of(0x03, 0xe8, 0xff)), CloseCode.InvalidPayload, false]
    ]
    for (const [bytes, code, clean] of cases) {
      const { actions } = run([bytes], OPTIONS, closing)
      expect(tags(actions)).toEqual(["CancelCloseTimer", "CloseTransport", "Closed"])
      expect(actions[2]).toMatchObject({ outcome: { code, clean, initiator: "local" } })
    }
  })

  it("close timeout: closes the transport, unclean", () => {
    const { actions, state } = run([{ _tag: "Close", reason: CloseReason.normal() }, { _tag: "CloseTimeout" }, { _tag: "CloseTimeout" }])
    expect(tags(actions)).toEqual(["Write", "ArmCloseTimer", "CloseTransport", "Closed"])
    expect(actions.at(-1)).toMatchObject({ _tag: "Closed", outcome: { clean: false, initiator: "local" } })
    expect(state._tag).toBe("Closed")
  })

  it("nothing is written after our Close: sends and pings are ignored", () => {
    const { actions } = run([
      { _tag: "Close", reason: CloseReason.normal() },
      { _tag: "Ping", payload: utf8("late") },
      frame(Opcode.Ping, "ping"),
      { _tag: "Close", reason: CloseReason.internalError("again") }
    ])
    expect(writtenFrames(actions)).toHaveLength(1)
    expect(tags(actions)).toEqual(["Write", "ArmCloseTimer"])
  })

  it("a stale CloseTimeout while open changes nothing", () => {
    const start = Connection.initial(OPTIONS)
    expect(Connection.step(start, { _tag: "CloseTimeout" })).toEqual({ state: start, actions: [] })
  })

  it("EndOfStream while open: 1006, unclean", () => {
    const { actions } = run([frame(Opcode.Text, "a", { fin: false }), { _tag: "EndOfStream" }])
    expect(actions).toEqual([{ _tag: "CloseTransport" }, { _tag: "Closed", outcome: { code: 1006, reason: "", clean: false, initiator: "remote", detail: undefined } }])
  })

  it("EndOfStream while closing: cancels the timer, unclean", () => {
    const { actions } = run([{ _tag: "Close", reason: CloseReason.normal() }, { _tag: "EndOfStream" }])
    expect(tags(actions)).toEqual(["Write", "ArmCloseTimer", "CancelCloseTimer", "CloseTransport", "Closed"])
    expect(actions.at(-1)).toMatchObject({ outcome: { code: 1006, clean: false } })
  })

  it("Fail from the I/O layer: one Close with its code, then CloseTransport", () => {
    const { actions } = run([{ _tag: "Fail", reason: CloseReason.internalError("compression failed") }, { _tag: "Fail", reason: CloseReason.internalError("again") }])
    expectFailedWith(actions, 1011)
  })

  it("a Close we send with a code not allowed on the wire goes out empty; a long reason is cut to fit", () => {
    expect(closesWritten(run([{ _tag: "Close", reason: { _tag: "Application", code: 1006, reason: "x" } }]).actions)).toEqual([{ _tag: "Empty" }])
    const reason = "é".repeat(100) // 200 bytes
    const [close] = closesWritten(run([{ _tag: "Close", reason: CloseReason.normal(reason) }]).actions)
    expect(close._tag).toBe("Code")
    if (close._tag === "Code") expect(close.reason).toBe("é".repeat(61))
  })
})

describe("Connection RSV1 (permessage-deflate)", () => {
  const compression = { maxMessageSize: 1 << 20, compression: true }

  it("without compression, RSV1 is a protocol error", () => {
    expectFailedWith(run([frame(Opcode.Text, "x", { rsv1: true })]).actions, CloseCode.ProtocolError)
  })

  it("with compression, RSV1 on the first frame delivers the message still compressed, unvalidated", () => {
    const raw = Uint8Array.of(0xf2, 0x48, 0xcd, 0xc9)
    const { actions } = run([frame(Opcode.Text, raw, { rsv1: true })], compression)
    expect(actions).toEqual([{ _tag: "DeliverCompressed", text: true, data: raw }])
  })

  it("with compression, a fragmented compressed message is reassembled and not validated", () => {
    const { actions } = run(
      [concat([frame(Opcode.Text, Uint8Array.of(0xff, 0xfe), { rsv1: true, fin: false }), frame(Opcode.Ping, ""), frame(Opcode.Continuation, Uint8Array.of(0xed, 0xa0))])],
      compression
    )
    expect(tags(actions)).toEqual(["Write", "DeliverCompressed"])
    expect(actions[1]).toEqual({ _tag: "DeliverCompressed", text: true, data: Uint8Array.of(0xff, 0xfe, 0xed, 0xa0) })
  })

  it("with compression, a message without RSV1 is an ordinary message (validated)", () => {
    const options = compression
    expect(delivered(run([frame(Opcode.Text, "plain")], options).actions)).toEqual(["plain"])
    expectFailedWith(run([frame(Opcode.Text, Uint8Array.of(0xff))], options).actions, CloseCode.InvalidPayload)
  })

  it("RSV1 on a continuation frame is a protocol error even with compression", () => {
    expectFailedWith(
      run([frame(Opcode.Text, "a", { fin: false, rsv1: true }), frame(Opcode.Continuation, "b", { rsv1: true })], compression).actions,
      CloseCode.ProtocolError
    )
  })
})

describe("the client role (role: \"client\", RFC 6455 §5.1)", () => {
  const client = Connection.initial({ maxMessageSize: 1 << 20, compression: false, role: "client" })
  const bytesOf = (frames: ReadonlyArray<readonly [Uint8Array, Uint8Array]>) => Buffer.concat(frames.flat())

  it("takes the server's unmasked frames, whatever their chopping, and refuses a masked one with 1002", () => {
    fc.assert(fc.property(fc.string(), fc.uint8Array({ minLength: 4, maxLength: 4 }), (text, key) => {
      const plain = Connection.step(client, { _tag: "Bytes", chunk: bytesOf([Frame.encode(Frame.Opcode.Text, new TextEncoder().encode(text))]) })
      expect(plain.actions).toContainEqual({ _tag: "Deliver", data: text, size: new TextEncoder().encode(text).length })
      const masked = Connection.step(client, { _tag: "Bytes", chunk: bytesOf([Frame.encode(Frame.Opcode.Text, new TextEncoder().encode(text), { mask: key })]) })
      expect(masked.state._tag).toBe("Draining")
      expect(masked.state._tag === "Draining" && masked.state.reply).toEqual({ code: 1002, reason: "masked frame from a server" })
    }))
  })
})
