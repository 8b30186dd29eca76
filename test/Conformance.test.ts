/**
 * Our own conformance suite, over real TCP against the echo server, mirroring
 * the Autobahn TestSuite categories 1-7 and 10: framing, ping/pong, reserved
 * bits, opcodes, fragmentation, UTF-8, close handling, limits. Every case
 * asserts the exact bytes echoed, the exact close code, and a clean closing
 * handshake (the server sends Close, then ends TCP first, without a reset):
 * see `RawClient.expectClose`. Cases "in its own write", "octet-wise" or
 * "chopped" make the server read each piece on its own: a chopped write
 * waits for the server to have read a piece before the next one (see
 * `RawClient.write`), and a test that writes in steps waits with
 * `untilServerRead` or for an answer.
 */
import { Buffer } from "node:buffer"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import * as Frame from "../src/Frame.ts"
import { hex, text } from "./support/Bytes.ts"
import { RawClient, type Transport } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"

const { Text, Binary, Continuation, Close, Ping } = Frame.Opcode

/** The limit of the small server of category 10. */
const SMALL_LIMIT = 1024

interface Started {
  readonly port: number
  readonly close: () => Promise<void>
}

/**
 * The transports the suite runs over: TCP with an HTTP/1.1 upgrade, and an
 * HTTP/2 extended CONNECT stream (RFC 8441) over TLS, where the frames are
 * the stream's DATA and the FIN its END_STREAM.
 */
const TRANSPORTS: ReadonlyArray<{ readonly transport: Transport; readonly start: (options: TestServer.TestOptions) => Promise<Started> }> = [
  { transport: "tcp", start: TestServer.start },
  { transport: "h2", start: TestServer.startHttp2 }
]

afterEach(() => RawClient.destroyAll())

/** The client closes with 1000; the server echoes 1000 and ends TCP. */
const closeNormally = async (c: RawClient): Promise<void> => {
  await c.sendClose(1000)
  expect((await c.expectClose(1000)).code).toBe(1000)
}

const fill = (n: number, byte: number): Uint8Array => new Uint8Array(n).fill(byte)

const LENGTHS = [0, 125, 126, 127, 128, 65535, 65536]

describe.each(TRANSPORTS)("over $transport", ({ transport, start }) => {
  let echo: Started
  let small: Started

  beforeAll(async () => {
    echo = await start({ maxMessageSize: 4 * 1024 * 1024 })
    small = await start({ maxMessageSize: SMALL_LIMIT })
  })
  afterAll(async () => {
    await Promise.all([echo?.close(), small?.close()])
  })

  const connect = (): Promise<RawClient> => RawClient.connect(echo.port, { transport })

  describe("1 framing", () => {
    it.each(LENGTHS)("1.1 text message of %i bytes is echoed", async (n) => {
      const c = await connect()
      const text = "*".repeat(n)
      await c.sendText(text)
      expect(await c.expectText()).toBe(text)
      await closeNormally(c)
    })

    it.each(LENGTHS)("1.2 binary message of %i bytes is echoed", async (n) => {
      const c = await connect()
      const data = Uint8Array.from({ length: n }, (_, i) => (i * 31 + 0xfe) & 0xff)
      await c.sendBinary(data)
      expect(await c.expectBinary()).toEqual(data)
      await closeNormally(c)
    })

    it("1.1.8 text of 65535 bytes chopped into 997-byte reads", async () => {
      const c = await connect()
      const text = "*".repeat(65535)
      await c.sendText(text, { chop: { size: 997 } })
      expect(await c.expectText()).toBe(text)
      await closeNormally(c)
    })

    it("1.2.8 binary of 65536 bytes chopped into 997-byte reads", async () => {
      const c = await connect()
      const data = fill(65536, 0xfe)
      await c.sendBinary(data, { chop: { size: 997 } })
      expect(await c.expectBinary()).toEqual(data)
      await closeNormally(c)
    })

    it("a 16-bit-length frame written one byte at a time (header included) is echoed", async () => {
      const c = await connect()
      const data = Uint8Array.from({ length: 130 }, (_, i) => i)
      await c.sendBinary(data, { chop: { size: 1 } })
      expect(await c.expectBinary()).toEqual(data)
      await closeNormally(c)
    })

    it("several messages in one write are echoed in order", async () => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Text, "one"), c.frame(Binary, Uint8Array.of(2)), c.frame(Text, "three")]))
      expect(await c.expectText()).toBe("one")
      expect(await c.expectBinary()).toEqual(Uint8Array.of(2))
      expect(await c.expectText()).toBe("three")
      await closeNormally(c)
    })

    it("a length in a longer encoding than needed is a protocol error (1002, RFC 6455 §5.2)", async () => {
      const c = await connect()
      // "Hello" (5 bytes) with a 16-bit length, zero mask
      await c.write(Uint8Array.of(0x81, 0xfe, 0x00, 0x05, 0, 0, 0, 0, ...text("Hello")))
      await c.expectClose(1002)
    })

    it("an unmasked client frame is a protocol error (1002)", async () => {
      const c = await connect()
      const [header, payload] = Frame.encode(Text, text("Hello"))
      await c.write(Buffer.concat([header, payload]))
      await c.expectClose(1002)
    })
  })

  describe("2 ping/pong", () => {
    it.each([
      ["2.1 empty", new Uint8Array(0)],
      ["2.2 text", text("Hello, world!")],
      ["2.3 binary", hex("00 ff fe fd fc fb 00 ff")],
      ["2.4 125 bytes", fill(125, 0xfe)]
    ])("%s ping payload is ponged back", async (_, payload) => {
      const c = await connect()
      await c.ping(payload)
      expect(await c.expectPong()).toEqual(payload)
      await closeNormally(c)
    })

    it("2.5 a ping of 126 bytes is a protocol error (1002), no pong", async () => {
      const c = await connect()
      await c.ping(fill(126, 0xfe))
      await c.expectClose(1002)
    })

    it("2.6 a ping of 125 bytes written one byte at a time is ponged", async () => {
      const c = await connect()
      const payload = fill(125, 0xfe)
      await c.ping(payload, { chop: { size: 1 } })
      expect(await c.expectPong()).toEqual(payload)
      await closeNormally(c)
    })

    it("2.7 an unsolicited empty pong is ignored", async () => {
      const c = await connect()
      await c.pong()
      await closeNormally(c)
    })

    it("2.8 an unsolicited pong with payload is ignored", async () => {
      const c = await connect()
      await c.pong("unsolicited pong payload")
      await closeNormally(c)
    })

    it("2.9 pong then ping: only the ping is answered", async () => {
      const c = await connect()
      await c.pong("unsolicited pong payload")
      await c.ping("ping payload")
      expect(text(await c.expectPong())).toBe("ping payload")
      await closeNormally(c)
    })

    it("2.10 ten pings are answered in order", async () => {
      const c = await connect()
      for (let i = 0; i < 10; i++) await c.ping(`payload-${i}`)
      for (let i = 0; i < 10; i++) expect(text(await c.expectPong())).toBe(`payload-${i}`)
      await closeNormally(c)
    })

    it("2.11 ten pings written one byte at a time are answered in order", async () => {
      const c = await connect()
      const all = Buffer.concat(Array.from({ length: 10 }, (_, i) => c.frame(Ping, `payload-${i}`)))
      await c.write(all, { size: 1 })
      for (let i = 0; i < 10; i++) expect(text(await c.expectPong())).toBe(`payload-${i}`)
      await closeNormally(c)
    })

    it("a ping between two messages is answered; the messages are echoed in order", async () => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Text, "a"), c.frame(Ping, "p"), c.frame(Text, "b")]))
      // The Pong is automatic and the echo comes from the handler: their order is free.
      const frames = [await c.nextFrame(), await c.nextFrame(), await c.nextFrame()]
      const seen = frames.map((f) => `${f.opcode}:${text(f.payload)}`)
      expect(seen.filter((s) => s !== `${Frame.Opcode.Pong}:p`)).toEqual([`${Text}:a`, `${Text}:b`])
      expect(seen).toContain(`${Frame.Opcode.Pong}:p`)
      await closeNormally(c)
    })
  })

  describe("3 reserved bits", () => {
    const bits = [
      { rsv3: true },
      { rsv2: true },
      { rsv2: true, rsv3: true },
      { rsv1: true },
      { rsv1: true, rsv3: true },
      { rsv1: true, rsv2: true },
      { rsv1: true, rsv2: true, rsv3: true }
    ]
    it.each(bits)("3.1 a text frame with %o (no extension) is a protocol error (1002)", async (rsv) => {
      const c = await connect()
      await c.sendText("Hello", rsv)
      await c.expectClose(1002)
    })

    it.each(bits)("3.2 echo of a valid message, then %o fails with 1002 and the following ping is not answered", async (rsv) => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Text, "Hello"), c.frame(Text, "Hello", rsv), c.frame(Ping, "")]))
      expect(await c.expectText()).toBe("Hello")
      await c.expectClose(1002)
    })

    it("3.3 the same, each frame in its own read", async () => {
      const c = await connect()
      await c.sendText("Hello")
      // the echo: the server has read the first frame
      expect(await c.expectText()).toBe("Hello")
      await c.sendText("Hello", { rsv2: true, rsv3: true })
      await c.untilServerRead()
      // read on its own, after the violation: not answered (expectClose fails on a Pong before or after the Close)
      await c.ping()
      await c.expectClose(1002)
    })

    it.each([
      ["binary", Binary, { rsv1: true, rsv2: true }],
      ["ping", Ping, { rsv1: true, rsv3: true }],
      ["ping (rsv1)", Ping, { rsv1: true }],
      ["close", Close, { rsv1: true, rsv2: true, rsv3: true }]
    ] as const)("3.5-3.7 a %s frame with reserved bits is a protocol error (1002)", async (_, opcode, rsv) => {
      const c = await connect()
      await c.sendFrame(opcode, opcode === Close ? Frame.encodeClose(1000, "") : fill(8, 0xff), rsv)
      await c.expectClose(1002)
    })
  })

  describe("4 opcodes", () => {
    it.each([3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf])("4.x reserved opcode %i is a protocol error (1002)", async (opcode) => {
      const c = await connect()
      await c.sendFrame(opcode, "")
      await c.expectClose(1002)
    })

    it.each([3, 7, 0xb, 0xf])("4.x echo, then reserved opcode %i with payload fails with 1002 and the ping is not answered", async (opcode) => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Text, "Hello"), c.frame(opcode, "reserved opcode payload"), c.frame(Ping, "")]))
      expect(await c.expectText()).toBe("Hello")
      await c.expectClose(1002)
    })
  })

  describe("5 fragmentation", () => {
    it("5.1 a fragmented ping is a protocol error (1002)", async () => {
      const c = await connect()
      await c.ping("fragment1", { fin: false })
      await c.sendFrame(Continuation, "fragment2")
      await c.expectClose(1002)
    })

    it("5.2 a fragmented pong is a protocol error (1002)", async () => {
      const c = await connect()
      await c.pong("fragment1", { fin: false })
      await c.sendFrame(Continuation, "fragment2")
      await c.expectClose(1002)
    })

    it("5.3 a text message in two fragments is echoed", async () => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Text, "fragment1", { fin: false }), c.frame(Continuation, "fragment2")]))
      expect(await c.expectText()).toBe("fragment1fragment2")
      await closeNormally(c)
    })

    it("5.4 the same, each frame in its own read", async () => {
      const c = await connect()
      await c.sendText("fragment1", { fin: false })
      await c.untilServerRead()
      await c.sendFrame(Continuation, "fragment2")
      expect(await c.expectText()).toBe("fragment1fragment2")
      await closeNormally(c)
    })

    it("5.5 the same, octet-wise: one read per octet", async () => {
      const c = await connect()
      const all = Buffer.concat([c.frame(Text, "fragment1", { fin: false }), c.frame(Continuation, "fragment2")])
      await c.write(all, { size: 1 })
      expect(await c.expectText()).toBe("fragment1fragment2")
      await closeNormally(c)
    })

    const withPing = (c: RawClient) =>
      Buffer.concat([c.frame(Text, "fragment1", { fin: false }), c.frame(Ping, "pongme!"), c.frame(Continuation, "fragment2")])

    it("5.6 a ping between two fragments is answered, then the message echoed", async () => {
      const c = await connect()
      await c.write(withPing(c))
      expect(text(await c.expectPong())).toBe("pongme!")
      expect(await c.expectText()).toBe("fragment1fragment2")
      await closeNormally(c)
    })

    it("5.7 the same, each frame in its own read", async () => {
      const c = await connect()
      await c.sendText("fragment1", { fin: false })
      await c.untilServerRead()
      await c.ping("pongme!")
      await c.untilServerRead()
      await c.sendFrame(Continuation, "fragment2")
      expect(text(await c.expectPong())).toBe("pongme!")
      expect(await c.expectText()).toBe("fragment1fragment2")
      await closeNormally(c)
    })

    it("5.8 the same, octet-wise: one read per octet", async () => {
      const c = await connect()
      await c.write(withPing(c), { size: 1 })
      expect(text(await c.expectPong())).toBe("pongme!")
      expect(await c.expectText()).toBe("fragment1fragment2")
      await closeNormally(c)
    })

    it.each([
      ["5.9 a final continuation without a start", true, "one write"],
      ["5.10 the same, each frame in its own read", true, "per frame"],
      ["5.11 the same, octet-wise", true, "per octet"],
      ["5.12 a non-final continuation without a start", false, "one write"],
      ["5.13 the same, each frame in its own read", false, "per frame"],
      ["5.14 the same, octet-wise", false, "per octet"]
    ] as const)("%s is a protocol error (1002), nothing echoed", async (_, fin, chopping) => {
      const c = await connect()
      const first = c.frame(Continuation, "non-continuation payload", { fin })
      const second = c.frame(Text, "Hello, world!")
      const chop = chopping === "one write" ? undefined : { size: chopping === "per frame" ? [first.length, second.length] : 1 }
      await c.write(Buffer.concat([first, second]), chop)
      await c.expectClose(1002)
    })

    it("5.15 a continuation after a complete message: the message is echoed, then 1002", async () => {
      const c = await connect()
      await c.write(Buffer.concat([
        c.frame(Text, "fragment1", { fin: false }),
        c.frame(Continuation, "fragment2"),
        c.frame(Continuation, "fragment3", { fin: false }),
        c.frame(Text, "fragment4")
      ]))
      expect(await c.expectText()).toBe("fragment1fragment2")
      await c.expectClose(1002)
    })

    it.each([
      ["5.16 a continuation start then text frames", [[Continuation, false], [Text, false], [Continuation, true]]],
      ["5.18 a text frame inside a fragmented text message", [[Text, false], [Text, true]]],
      ["5.19 a binary frame inside a fragmented text message", [[Text, false], [Binary, true]]]
    ] as const)("%s is a protocol error (1002)", async (_, frames) => {
      const c = await connect()
      await c.write(Buffer.concat(frames.map(([opcode, fin], i) => c.frame(opcode, `fragment${i + 1}`, { fin }))))
      await c.expectClose(1002)
    })

    it("5.19/5.20 five fragments with two pings in between, each group written after the Pong to the one before", async () => {
      const c = await connect()
      await c.sendText("fragment1", { fin: false })
      await c.sendFrame(Continuation, "fragment2", { fin: false })
      await c.ping("pongme 1!")
      expect(text(await c.expectPong())).toBe("pongme 1!")
      await c.sendFrame(Continuation, "fragment3", { fin: false })
      await c.sendFrame(Continuation, "fragment4", { fin: false })
      await c.ping("pongme 2!")
      expect(text(await c.expectPong())).toBe("pongme 2!")
      await c.sendFrame(Continuation, "fragment5")
      expect(await c.expectText()).toBe("fragment1fragment2fragment3fragment4fragment5")
      await closeNormally(c)
    })

    it("a binary message in 200 fragments of 64 bytes is echoed", async () => {
      const c = await connect()
      const data = Uint8Array.from({ length: 200 * 64 }, (_, i) => i & 0xff)
      await c.write(c.fragments(Binary, data, 64), { size: 1500 })
      expect(await c.expectBinary()).toEqual(data)
      await closeNormally(c)
    })

    it("9.x shape: 1 MiB of text in 64-byte fragments is echoed (linear reassembly)", async () => {
      const c = await connect()
      const data = text("0123456789abcdef".repeat(65536))
      await c.write(c.fragments(Text, data, 64), { size: 65536 })
      expect((await c.expectMessage(5_000)).data).toEqual(data)
      await closeNormally(c)
    })

    it("empty fragments make an empty text message", async () => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Text, "", { fin: false }), c.frame(Continuation, "", { fin: false }), c.frame(Continuation, "")]))
      expect(await c.expectText()).toBe("")
      await closeNormally(c)
    })
  })

  describe("6 UTF-8", () => {
    const valid: ReadonlyArray<readonly [string, string]> = [
      ["6.2 Hello-µ@ßöäüàá-UTF-8!!", "Hello-µ@ßöäüàá-UTF-8!!"],
      ["6.5 κόσμε", "κόσμε"],
      ["6.5 4-byte 𝄞 and 😀", "𝄞😀"],
      ["6.6 first 2-, 3-, 4-byte sequences", "\u0080\u0800\u{10000}"],
      ["6.7 last 1-, 2-, 3-, 4-byte sequences", "\u007f\u07ff\uffff\u{10ffff}"],
      ["6.8 boundaries around the surrogates", "\ud7ff\ue000\ufffd"]
    ]

    it.each(valid)("%s is echoed", async (_, text) => {
      const c = await connect()
      await c.sendText(text)
      expect(await c.expectText()).toBe(text)
      await closeNormally(c)
    })

    it.each(valid)("6.2/6.4 %s in one-byte fragments (code points split across frames) is echoed", async (_, text) => {
      const c = await connect()
      await c.write(c.fragments(Text, text, 1))
      expect(await c.expectText()).toBe(text)
      await closeNormally(c)
    })

    it.each(valid)("%s written one byte at a time is echoed", async (_, text) => {
      const c = await connect()
      await c.sendText(text, { chop: { size: 1 } })
      expect(await c.expectText()).toBe(text)
      await closeNormally(c)
    })

    const invalid: ReadonlyArray<readonly [string, string]> = [
      ["6.3 κόσμε with a surrogate", "cebae1bdb9cf83cebcceb5eda080656469746564"],
      ["6.8 lone continuation 0x80", "80"],
      ["6.8 lone continuation 0xbf", "41bf42"],
      ["6.9 overlong 2-byte C0 80", "c080"],
      ["6.9 overlong 2-byte C1 BF", "c1bf"],
      ["6.9 overlong 3-byte E0 80 80", "e08080"],
      ["6.9 overlong 4-byte F0 80 80 80", "f0808080"],
      ["6.10 high surrogate ED A0 80", "eda080"],
      ["6.10 low surrogate ED BF BF", "edbfbf"],
      ["6.11 above U+10FFFF F4 90 80 80", "f4908080"],
      ["6.12 F5", "f5808080"],
      ["6.12 FE", "fe"],
      ["6.12 FF", "ff"],
      ["6.13 a 2-byte start followed by ASCII", "c241"],
      ["6.14 truncated at the end: κόσμε + CE", "cebae1bdb9cf83cebcceb5ce"],
      ["6.14 truncated 4-byte at the end", "f09d84"],
      ["6.15 truncated 3-byte at the end", "e282"]
    ]

    it.each(invalid)("%s is 1007", async (_, payload) => {
      const c = await connect()
      await c.sendText(hex(payload))
      await c.expectClose(1007)
    })

    it.each(invalid)("%s, one byte per fragment, is 1007", async (_, payload) => {
      const c = await connect()
      await c.write(c.fragments(Text, hex(payload), 1))
      await c.expectClose(1007)
    })

    it("a valid message is echoed before a following invalid one fails with 1007", async () => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Text, "κόσμε"), c.frame(Text, hex("ceba eda080"))]))
      expect(await c.expectText()).toBe("κόσμε")
      await c.expectClose(1007)
    })

    it("a text message truncated in its last fragment (empty final continuation) is 1007", async () => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Text, hex("cebae1bdb9f0"), { fin: false }), c.frame(Continuation, "")]))
      await c.expectClose(1007)
    })

    it("binary messages are not checked for UTF-8", async () => {
      const c = await connect()
      await c.sendBinary(hex("eda080ff"))
      expect(await c.expectBinary()).toEqual(hex("eda080ff"))
      await closeNormally(c)
    })

    describe("fail-fast", () => {
      // One text frame: "Hello-κ" valid, then ED A0 (a surrogate: invalid as soon
      // as A0 arrives), then more. Sent in 3 chops, each read by the server on
      // its own; the 1007 must come after the 2nd chop, while the frame is still
      // incomplete.
      const payload = Buffer.concat([text("Hello-κ"), hex("eda080"), text("world and more")])

      it("6.4.1 invalid bytes in the 2nd of 3 chops of one frame close with 1007 before the 3rd", async () => {
        const c = await connect()
        const frame = c.frame(Text, payload)
        const header = 2 + 4
        const cut1 = header + text("Hello-κ").length
        const cut2 = cut1 + 2 // ED A0
        await c.write(frame.subarray(0, cut1))
        await c.untilServerRead()
        await c.write(frame.subarray(cut1, cut2))
        await c.expectClose(1007, { timeout: 1000 })
        await c.write(frame.subarray(cut2)) // the 3rd chop, too late: ignored
      })

      it("6.4.2 an invalid first byte in the 2nd chop (F5) closes with 1007 before the rest", async () => {
        const c = await connect()
        const frame = c.frame(Text, Buffer.concat([text("κόσμε"), hex("f5"), text("rest of the frame")]))
        const cut1 = 6 + text("κόσμε").length
        await c.write(frame.subarray(0, cut1))
        await c.untilServerRead()
        await c.write(frame.subarray(cut1, cut1 + 1))
        await c.expectClose(1007, { timeout: 1000 })
      })

      it("6.4.3 invalid bytes in the 2nd of 3 fragments close with 1007 before the 3rd fragment", async () => {
        const c = await connect()
        await c.sendText("κόσμε", { fin: false })
        await c.untilServerRead()
        await c.sendFrame(Continuation, hex("eda080"), { fin: false })
        await c.expectClose(1007, { timeout: 1000 })
        await c.sendFrame(Continuation, "never sent in time")
      })

      it("6.4.4 invalid bytes in the first, non-final fragment close with 1007 at once", async () => {
        const c = await connect()
        await c.sendText(hex("cebae1bdb9cf83cebcceb5f4908080"), { fin: false })
        await c.expectClose(1007, { timeout: 1000 })
      })

      it("6.4.2 a sequence made invalid by the first byte of the 2nd fragment (F4 | 90) closes with 1007 before the 3rd", async () => {
        const c = await connect()
        await c.sendText(hex("cebae1bdb9cf83cebcceb5f4"), { fin: false })
        // F4 at the end of a fragment is a valid start: a Ping after it is
        // answered, so the fragment was read and did not fail the connection
        await c.ping("still open")
        expect(text(await c.expectPong())).toBe("still open")
        await c.sendFrame(Continuation, hex("90"), { fin: false })
        await c.expectClose(1007, { timeout: 1000 })
        await c.sendFrame(Continuation, hex("8080656469746564"))
      })

      it.each([
        ["8f bf bf", "U+10FFFF completes it: the message is echoed"],
        ["90", "90 cannot follow it: 1007 before chop 3"]
      ])("6.4.4 the same within one frame: chop 1 ends with F4, chop 2 is %s (%s)", async (second) => {
        const c = await connect()
        const valid = second !== "90"
        const message = hex(`cebae1bdb9cf83cebcceb5f4 ${second} 656469746564`)
        const frame = c.frame(Text, message)
        const cut1 = 6 + 12
        const cut2 = cut1 + hex(second).length
        await c.write(frame.subarray(0, cut1))
        await c.untilServerRead()
        await c.write(frame.subarray(cut1, cut2))
        if (valid) {
          // the same chop 1, read on its own, then completed: no failure at F4
          await c.untilServerRead()
          await c.write(frame.subarray(cut2))
          expect(await c.expectText()).toBe(text(message))
          await closeNormally(c)
        } else {
          await c.expectClose(1007, { timeout: 1000 })
          await c.write(frame.subarray(cut2))
        }
      })

      it("a code point split between chops of one frame is not an error", async () => {
        const c = await connect()
        const frame = c.frame(Text, "a𝄞b")
        // three chops, each read on its own: the header, "a" and 2 bytes of 𝄞 (F0 9D); its 3rd byte; its last byte and "b"
        await c.write(frame, { size: [6 + 3, 1, 2] })
        expect(await c.expectText()).toBe("a𝄞b")
        await closeNormally(c)
      })
    })
  })

  describe("7 close handling", () => {
    it("7.1.1 a message, then Close 1000: echo, then Close 1000", async () => {
      const c = await connect()
      await c.sendText("Hello World!")
      expect(await c.expectText()).toBe("Hello World!")
      await c.sendClose(1000, "bye")
      expect(await c.expectClose(1000)).toMatchObject({ code: 1000 })
    })

    it("7.1.1 a message and a Close in one write: the message is echoed before the Close answer", async () => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Text, "Hello World!"), c.frame(Close, Frame.encodeClose(1000, ""))]))
      expect(await c.expectText()).toBe("Hello World!")
      await c.expectClose(1000)
    })

    it("7.1.1 ten messages and a Close in one write: all echoed, in order, before the Close answer", async () => {
      const c = await connect()
      const messages = Array.from({ length: 10 }, (_, i) => c.frame(i % 2 === 0 ? Text : Binary, `m${i}`))
      await c.write(Buffer.concat([...messages, c.frame(Close, Frame.encodeClose(1000, ""))]))
      for (let i = 0; i < 10; i++) expect(text((await c.expectMessage()).data)).toBe(`m${i}`)
      await c.expectClose(1000)
    })

    it("7.1.2 two Close frames: one answer", async () => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Close, Frame.encodeClose(1000, "")), c.frame(Close, Frame.encodeClose(1000, ""))]))
      await c.expectClose(1000)
    })

    it("7.1.3 a ping after Close is not answered", async () => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Close, Frame.encodeClose(1000, "")), c.frame(Ping, "Hello World!")]))
      await c.expectClose(1000)
    })

    it("7.1.4 a message after Close is not echoed", async () => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Close, Frame.encodeClose(1000, "")), c.frame(Text, "Hello World!")]))
      await c.expectClose(1000)
    })

    it("7.1.5 Close inside a fragmented message: the message is dropped", async () => {
      const c = await connect()
      await c.write(Buffer.concat([
        c.frame(Text, "fragment1", { fin: false }),
        c.frame(Close, Frame.encodeClose(1000, "")),
        c.frame(Continuation, "fragment2")
      ]))
      await c.expectClose(1000)
    })

    it("7.1.6 garbage after Close is ignored", async () => {
      const c = await connect()
      await c.write(Buffer.concat([c.frame(Close, Frame.encodeClose(1000, "")), hex("ffffffffffffffff")]))
      await c.expectClose(1000)
    })

    it("7.3.1 an empty Close is answered with 1000", async () => {
      const c = await connect()
      await c.sendClose()
      await c.expectClose(1000)
    })

    it("7.3.2 a Close with a 1-byte payload is a protocol error (1002)", async () => {
      const c = await connect()
      await c.sendClose(Uint8Array.of(0x03))
      await c.expectClose(1002)
    })

    it("7.3.3 Close 1000 without a reason", async () => {
      const c = await connect()
      await c.sendClose(1000)
      await c.expectClose(1000)
    })

    it("7.3.4 Close 1000 with a reason: 1000 echoed", async () => {
      const c = await connect()
      await c.sendClose(1000, "Hello World!")
      expect((await c.expectClose(1000)).code).toBe(1000)
    })

    it("7.3.5 Close 1000 with a 123-byte reason", async () => {
      const c = await connect()
      await c.sendClose(1000, "*".repeat(123))
      await c.expectClose(1000)
    })

    it("7.3.6 Close with a 124-byte reason (126-byte payload) is a protocol error (1002)", async () => {
      const c = await connect()
      await c.sendClose(1000, "*".repeat(124))
      await c.expectClose(1002)
    })

    it("7.3.x Close 1000 with a 4-byte UTF-8 reason", async () => {
      const c = await connect()
      await c.sendClose(1000, "𝄞 κόσμε")
      await c.expectClose(1000)
    })

    it("7.5.1 a Close reason that is not UTF-8 is 1007", async () => {
      const c = await connect()
      await c.sendClose(Buffer.concat([Uint8Array.of(0x03, 0xe8), hex("cebae1bdb9cf83cebcceb5eda080656469746564")]))
      await c.expectClose(1007)
    })

    it.each([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999])(
      "7.7 valid close code %i is echoed",
      async (code) => {
        const c = await connect()
        await c.sendClose(code, "")
        await c.expectClose(code)
      }
    )

    it.each([0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])(
      "7.9 invalid close code %i is a protocol error (1002)",
      async (code) => {
        const c = await connect()
        await c.sendClose(code, "")
        await c.expectClose(1002)
      }
    )

    it("the server closes TCP first after the closing handshake (client waits, never ends first)", async () => {
      const c = await connect()
      await c.sendClose(1000)
      await c.expectClose(1000)
      expect(c.serverEnded).toBe(true)
    })

    it("a client that drops TCP without Close does not disturb the server", async () => {
      const c = await connect()
      await c.sendText("Hello")
      expect(await c.expectText()).toBe("Hello")
      c.destroy()
      const d = await connect()
      await d.sendText("still here")
      expect(await d.expectText()).toBe("still here")
      await closeNormally(d)
    })
  })

  describe("10 limits", () => {
    const connectSmall = () => RawClient.connect(small.port, { transport })

    it("a message of exactly maxMessageSize is echoed", async () => {
      const c = await connectSmall()
      const data = fill(SMALL_LIMIT, 0x2a)
      await c.sendBinary(data)
      expect(await c.expectBinary()).toEqual(data)
      await closeNormally(c)
    })

    it("10.1 a message above maxMessageSize is 1009", async () => {
      const c = await connectSmall()
      await c.sendText("*".repeat(SMALL_LIMIT + 1))
      await c.expectClose(1009)
    })

    it("a fragmented message whose total exceeds maxMessageSize is 1009", async () => {
      const c = await connectSmall()
      const half = fill(SMALL_LIMIT / 2 + 1, 0x2a)
      await c.write(Buffer.concat([c.frame(Binary, half, { fin: false }), c.frame(Continuation, half)]))
      await c.expectClose(1009)
    })

    it("1009 comes from the header alone, before the payload is sent", async () => {
      const c = await connectSmall()
      const frame = c.frame(Binary, fill(SMALL_LIMIT * 4, 0))
      await c.write(frame.subarray(0, 2 + 2 + 4)) // 16-bit length + mask
      await c.expectClose(1009, { timeout: 1000 })
    })

    it("a 64-bit length above 2^53-1 is 1009, one with its top bit set is 1002", async () => {
      const c = await connectSmall()
      await c.write(Uint8Array.of(0x82, 0xff, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4))
      await c.expectClose(1009)
      const d = await connectSmall()
      await d.write(Uint8Array.of(0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4))
      await d.expectClose(1002)
    })

    it("the limit applies per message: many messages below it are fine", async () => {
      const c = await connectSmall()
      const data = fill(SMALL_LIMIT - 1, 0x2a)
      for (let i = 0; i < 5; i++) await c.sendBinary(data)
      for (let i = 0; i < 5; i++) expect(await c.expectBinary()).toEqual(data)
      await closeNormally(c)
    })
  })
})
