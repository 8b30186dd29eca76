/**
 * The server over real TCP, seen from a raw client: the answers to an
 * upgrade request (101 and its headers: accept key, subprotocol, route
 * headers, extensions; 400, 404, 405, 426), the bytes that come with the
 * request, the close outcomes the handler sees, server-side closes (1000,
 * closeTimeout), and permessage-deflate on the wire.
 *
 * The limits have their own files: 408 (handshakeTimeout), 431
 * (maxHeadSize), 503 (maxConnections, shutdown), the timers and graceful
 * shutdown in Limits.Timers, a failing handler's 1011 in Limits.Isolation.
 */
import { Buffer } from "node:buffer"
import { createHash } from "node:crypto"
import { constants as zlib, deflateRawSync, inflateRawSync } from "node:zlib"
import * as Effect from "effect/Effect"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import * as Frame from "../src/Frame.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { text } from "./support/Bytes.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"
import { until } from "./support/Wait.ts"

/** RFC 6455 §1.3, computed here rather than taken from the server. */
const accept = (key: string): string =>
  createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64")

/** Sends what the handler saw of the request and the connection as one JSON text message, then echoes. */
const inspect = (ws: WebSocket.WebSocket) =>
  Effect.andThen(
    ws.send(JSON.stringify({
      path: ws.request.path,
      target: ws.request.target,
      query: Object.fromEntries(ws.request.query),
      method: ws.request.method,
      origin: ws.request.headers.get("origin") ?? null,
      protocol: ws.protocol ?? null,
      remoteAddress: ws.request.remoteAddress ?? null
    })),
    TestServer.echo(ws)
  )

let server: TestServer.StartedServer

beforeAll(async () => {
  server = await TestServer.start({
    routes: {
      "/ws": TestServer.echo,
      "/inspect": inspect,
      "/chat": {
        handler: inspect,
        // prefers "v2.chat" when offered, else the client's first choice
        protocol: (offered) => offered.includes("v2.chat") ? "v2.chat" : offered[0],
        headers: (request) => [["Set-Cookie", `session=abc; Path=${request.path}`], ["X-Test", "yes"]]
      },
      "/liar": {
        handler: inspect,
        protocol: () => "not-offered"
      }
    }
  })
})
afterEach(() => RawClient.destroyAll())
afterAll(() => server.close())

/** The request's answer when it is an HTTP error: status, headers, body; the server must then end the connection. */
const reject = async (options: Parameters<typeof RawClient.request>[1]) => {
  const c = await RawClient.request(server.port, options)
  const body = text(await c.expectEnd())
  expect(c.response.headers.get("connection")?.toLowerCase()).toContain("close")
  return { status: c.response.status, headers: c.response.headers, body }
}

const closeNormally = async (c: RawClient): Promise<void> => {
  await c.sendClose(1000)
  await c.expectClose(1000)
}

describe("101 Switching Protocols", () => {
  it("answers with the accept key of RFC 6455 §1.3 and the upgrade headers", async () => {
    const key = "dGhlIHNhbXBsZSBub25jZQ=="
    const c = await RawClient.connect(server.port, { key })
    expect(c.response.status).toBe(101)
    expect(accept(key)).toBe("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    expect(c.response.headers.get("sec-websocket-accept")).toBe("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    expect(c.response.headers.get("upgrade")?.toLowerCase()).toBe("websocket")
    expect(c.response.headers.get("connection")?.toLowerCase()).toBe("upgrade")
    expect(c.response.headers.has("sec-websocket-protocol")).toBe(false)
    expect(c.response.headers.has("sec-websocket-extensions")).toBe(false)
    await closeNormally(c)
  })

  it("answers a random key correctly, and the connection works", async () => {
    const c = await RawClient.connect(server.port)
    expect(c.response.headers.get("sec-websocket-accept")).toBe(accept(c.key))
    await c.sendText("hi")
    expect(await c.expectText()).toBe("hi")
    await closeNormally(c)
  })

  it("accepts header names and tokens in any case and Connection lists", async () => {
    const c = await RawClient.connect(server.port, {
      headers: { Upgrade: undefined, Connection: undefined, "upgrade": "WebSocket", "CONNECTION": "keep-alive, Upgrade" }
    })
    expect(c.response.status).toBe(101)
    await closeNormally(c)
  })

  it("reads a request head delivered one byte per read", async () => {
    const key = "dGhlIHNhbXBsZSBub25jZQ=="
    const c = await RawClient.connect(server.port, { key, chop: { size: 1 } })
    expect(c.response.headers.get("sec-websocket-accept")).toBe(accept(key))
    await c.sendText("slow")
    expect(await c.expectText()).toBe("slow")
    await closeNormally(c)
  })

  it("ignores a permessage-deflate offer when compression is off", async () => {
    const c = await RawClient.connect(server.port, { headers: { "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits" } })
    expect(c.response.headers.has("sec-websocket-extensions")).toBe(false)
    await c.sendText("plain")
    expect(await c.expectText()).toBe("plain")
    await closeNormally(c)
  })

  it("accepts permessage-deflate when compression is on", async () => {
    await TestServer.withServer({ compression: {} }, async (port) => {
      const c = await RawClient.connect(port, { allowRsv1: true, headers: { "Sec-WebSocket-Extensions": "permessage-deflate" } })
      expect(c.response.headers.get("sec-websocket-extensions")).toMatch(/^permessage-deflate/)
      await c.sendText("small, below the threshold")
      expect(await c.expectText()).toBe("small, below the threshold")
      await closeNormally(c)
    })
  })

  it("gives the handler the request: path, target, query, headers, remote address", async () => {
    const c = await RawClient.connect(server.port, { path: "/inspect?room=1&x=%20y", headers: { Origin: "http://example.com" } })
    expect(JSON.parse(await c.expectText())).toEqual({
      path: "/inspect",
      target: "/inspect?room=1&x=%20y",
      query: { room: "1", x: " y" },
      method: "GET",
      origin: "http://example.com",
      protocol: null,
      remoteAddress: "127.0.0.1"
    })
    await closeNormally(c)
  })

  it("processes a first frame that arrives in the same packet as the request", async () => {
    const mask = Uint8Array.of(1, 2, 3, 4)
    const [header, payload] = Frame.encode(Frame.Opcode.Text, text("early bird"), { mask })
    const c = await RawClient.connect(server.port, { extra: Buffer.concat([header, payload]) })
    expect(await c.expectText()).toBe("early bird")
    await closeNormally(c)
  })

  it("processes several frames, a Close included, that arrive with the request", async () => {
    const mask = Uint8Array.of(9, 8, 7, 6)
    const frames = [
      Frame.encode(Frame.Opcode.Text, text("one"), { mask }),
      Frame.encode(Frame.Opcode.Ping, text("p"), { mask }),
      Frame.encode(Frame.Opcode.Close, Frame.encodeClose(1000, ""), { mask })
    ]
    const c = await RawClient.connect(server.port, { extra: Buffer.concat(frames.flat()) })
    const first = await c.nextFrame()
    const second = await c.nextFrame()
    const kinds = [first, second].map((f) => f.opcode).sort()
    expect(kinds).toEqual([Frame.Opcode.Text, Frame.Opcode.Pong])
    await c.expectClose(1000)
  })
})

describe("subprotocols and route headers", () => {
  it("answers with the protocol the route chose among the offered ones", async () => {
    const c = await RawClient.connect(server.port, { path: "/chat", headers: { "Sec-WebSocket-Protocol": "v1.chat, v2.chat" } })
    expect(c.response.headers.get("sec-websocket-protocol")).toBe("v2.chat")
    expect(JSON.parse(await c.expectText()).protocol).toBe("v2.chat")
    await closeNormally(c)
  })

  it("joins repeated Sec-WebSocket-Protocol headers", async () => {
    const request = `GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n` +
      `Sec-WebSocket-Protocol: v1.chat\r\nSec-WebSocket-Protocol: v2.chat\r\n\r\n`
    const c = await RawClient.request(server.port, { request })
    expect(c.response.status).toBe(101)
    expect(c.response.headers.get("sec-websocket-protocol")).toBe("v2.chat")
    expect(JSON.parse(await c.expectText()).protocol).toBe("v2.chat")
    await closeNormally(c)
  })

  it("sends no Sec-WebSocket-Protocol when none is offered", async () => {
    const c = await RawClient.connect(server.port, { path: "/chat" })
    expect(c.response.headers.has("sec-websocket-protocol")).toBe(false)
    expect(JSON.parse(await c.expectText()).protocol).toBe(null)
    await closeNormally(c)
  })

  it("ignores a route's choice that the client did not offer", async () => {
    const c = await RawClient.connect(server.port, { path: "/liar", headers: { "Sec-WebSocket-Protocol": "a, b" } })
    expect(c.response.headers.has("sec-websocket-protocol")).toBe(false)
    expect(JSON.parse(await c.expectText()).protocol).toBe(null)
    await closeNormally(c)
  })

  it("adds the route's headers (Set-Cookie) to the 101", async () => {
    const c = await RawClient.connect(server.port, { path: "/chat" })
    expect(c.response.headers.get("set-cookie")).toBe("session=abc; Path=/chat")
    expect(c.response.headers.get("x-test")).toBe("yes")
    expect(JSON.parse(await c.expectText()).path).toBe("/chat")
    await closeNormally(c)
  })
})

describe("HTTP errors", () => {
  it("400 for a malformed request line", async () => {
    expect((await reject({ request: "HELLO THERE\r\n\r\n" })).status).toBe(400)
  })

  it("400 for a malformed header line", async () => {
    expect((await reject({ request: "GET /ws HTTP/1.1\r\nHost localhost\r\n\r\n" })).status).toBe(400)
  })

  it.each([
    ["not base64", "not a valid key!"],
    ["15 bytes", Buffer.alloc(15, 1).toString("base64")],
    ["17 bytes", Buffer.alloc(17, 1).toString("base64")],
    ["empty", ""]
  ])("400 for a bad Sec-WebSocket-Key (%s)", async (_, key) => {
    expect((await reject({ key })).status).toBe(400)
  })

  it("400 for a missing Sec-WebSocket-Key", async () => {
    expect((await reject({ headers: { "Sec-WebSocket-Key": undefined } })).status).toBe(400)
  })

  it("400 for a missing Host", async () => {
    const answer = await reject({ headers: { Host: undefined } })
    expect(answer.status).toBe(400)
  })

  it("400 for a missing Upgrade or Connection", async () => {
    expect((await reject({ headers: { Upgrade: undefined } })).status).toBe(400)
    expect((await reject({ headers: { Connection: "keep-alive" } })).status).toBe(400)
  })

  it("400 for HTTP/1.0", async () => {
    const key = "dGhlIHNhbXBsZSBub25jZQ=="
    const request = `GET /ws HTTP/1.0\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`
    expect((await reject({ request })).status).toBe(400)
  })

  it("400 for a request with a body", async () => {
    expect((await reject({ headers: { "Content-Length": "5" } })).status).toBe(400)
  })

  it("426 with Sec-WebSocket-Version: 13 for version 8", async () => {
    const answer = await reject({ headers: { "Sec-WebSocket-Version": "8" } })
    expect(answer.status).toBe(426)
    expect(answer.headers.get("sec-websocket-version")).toBe("13")
  })

  it("405 for POST", async () => {
    const answer = await reject({ method: "POST" })
    expect(answer.status).toBe(405)
    expect(answer.headers.get("allow")).toBe("GET")
  })

  it("404 for a path no route serves", async () => {
    expect((await reject({ path: "/nowhere" })).status).toBe(404)
    expect((await reject({ path: "/ws/" })).status).toBe(404)
  })

  it("an error answer has a body with its reason and a matching Content-Length", async () => {
    const answer = await reject({ path: "/nowhere" })
    expect(Number(answer.headers.get("content-length"))).toBe(Buffer.byteLength(answer.body))
    expect(answer.body.length).toBeGreaterThan(0)
  })
})

describe("connection lifecycle", () => {
  /**
   * Runs `body` against a server whose handlers report their close outcome
   * (`nextOutcome`), then shuts the server down, even when `body` fails.
   */
  const withLifecycle = async (body: (port: number, nextOutcome: () => Promise<WebSocket.CloseOutcome>) => Promise<void>) => {
    const outcomes: Array<WebSocket.CloseOutcome> = []
    const record = (ws: WebSocket.WebSocket) =>
      Effect.andThen(ws.closed, (outcome) => Effect.sync(() => outcomes.push(outcome)))
    const nextOutcome = async (): Promise<WebSocket.CloseOutcome> => {
      await until("a close outcome", () => outcomes.length > 0)
      return outcomes.shift()!
    }
    await TestServer.withServer({
      logLevel: "None",
      routes: {
        "/echo": (ws) => Effect.andThen(Effect.forkDetach(record(ws)), TestServer.echo(ws)),
        "/return": (ws) => Effect.andThen(Effect.forkDetach(record(ws)), ws.send("bye")),
        // closes with the code and reason given in the query, right after the upgrade
        "/close": (ws) =>
          Effect.andThen(
            Effect.forkDetach(record(ws)),
            ws.close(Number(ws.request.query.get("code")), ws.request.query.get("reason") ?? "")
          )
      }
    }, (port) => body(port, nextOutcome))
  }

  it("a peer Close: the handler's outcome is clean, remote, with the peer's code and reason", () =>
    withLifecycle(async (port, nextOutcome) => {
      const c = await RawClient.connect(port, { path: "/echo" })
      await c.sendClose(4001, "see you")
      await c.expectClose(4001)
      expect(await nextOutcome()).toEqual({ code: 4001, reason: "see you", clean: true, initiator: "remote" })
    }))

  it("a protocol violation: the outcome is the violation's code, not clean, local", () =>
    withLifecycle(async (port, nextOutcome) => {
      const c = await RawClient.connect(port, { path: "/echo" })
      await c.sendFrame(3, "")
      await c.expectClose(1002)
      expect(await nextOutcome()).toMatchObject({ code: 1002, clean: false, initiator: "local" })
    }))

  it("a peer that drops TCP: the outcome is 1006, not clean", () =>
    withLifecycle(async (port, nextOutcome) => {
      const c = await RawClient.connect(port, { path: "/echo" })
      c.end()
      expect(await nextOutcome()).toMatchObject({ code: 1006, clean: false })
    }))

  it("a handler that returns closes the connection with 1000", () =>
    withLifecycle(async (port, nextOutcome) => {
      const c = await RawClient.connect(port, { path: "/return" })
      expect(await c.expectText()).toBe("bye")
      await c.expectClose(1000)
      expect(await nextOutcome()).toMatchObject({ code: 1000, clean: true, initiator: "local" })
    }))

  it("a server Close: data, pings and a second Close from the peer before its answer are ignored; clean", () =>
    withLifecycle(async (port, nextOutcome) => {
      const c = await RawClient.connect(port, { path: "/close?code=4000&reason=bye" })
      const close = await c.expectClose(4000, {
        beforeReply: async () => {
          await c.sendText("ignored")
          await c.ping("not answered after our Close")
        }
      })
      expect(close).toEqual({ code: 4000, reason: "bye" })
      // the outcome reports the peer's answering Close (our client echoes the code, no reason)
      expect(await nextOutcome()).toMatchObject({ code: 4000, reason: "", clean: true, initiator: "local", detail: { _tag: "Application", code: 4000, reason: "bye" } })
    }))

  it("a server Close crossing the peer's Close (simultaneous close) ends cleanly", () =>
    withLifecycle(async (port, nextOutcome) => {
      const c = await RawClient.connect(port, { path: "/close?code=1000" })
      await c.sendClose(1000)
      await c.expectClose(1000)
      expect(await nextOutcome()).toMatchObject({ code: 1000, clean: true })
    }))

  it("a server Close the peer never answers: TCP ends after closeTimeout, outcome not clean", () =>
    withLifecycle(async (port, nextOutcome) => {
      const c = await RawClient.connect(port, { path: "/close?code=1000" })
      // closeTimeout is 500 ms (TestServer.testDefaults); the server ends TCP first, with a FIN
      await c.expectClose(1000, { reply: false, timeout: 1500 })
      // no Close received: 1006 (CloseOutcome.code)
      expect(await nextOutcome()).toMatchObject({ code: 1006, clean: false, initiator: "local" })
    }))

  // Codes an endpoint may not send and reasons above 123 bytes are refused
  // with InvalidClose, nothing sent: test/Handler.test.ts (trap 5).

  it("a handler that never reads its messages still answers the peer's Close at once (RFC 6455 §5.5.1 'as soon as practical')", async () => {
    // e.g. a broadcast-only handler waiting on `closed`; closeTimeout far
    // beyond expectClose's wait, so that the answer cannot come from a timer
    await TestServer.withServer({ closeTimeout: 20_000, routes: { "/ws": (ws) => ws.closed } }, async (port) => {
      const c = await RawClient.connect(port)
      await c.sendText("never read")
      // read by the server, waiting in the inbox when the Close comes
      await c.untilServerRead()
      await c.sendClose(1000)
      await c.expectClose(1000)
    })
  })
})

describe("permessage-deflate over TCP", () => {
  const TAIL = Uint8Array.of(0x00, 0x00, 0xff, 0xff)
  /** RFC 7692 §7.2.1: deflate with a sync flush, drop the 4-byte tail. */
  const deflate = (data: string | Uint8Array): Uint8Array => {
    const out = deflateRawSync(typeof data === "string" ? text(data) : data, { finishFlush: zlib.Z_SYNC_FLUSH })
    return out.subarray(0, out.length - 4)
  }
  const inflate = (data: Uint8Array): string =>
    text(inflateRawSync(Buffer.concat([data, TAIL]), { finishFlush: zlib.Z_SYNC_FLUSH }))
  const offer = {
    allowRsv1: true,
    headers: { "Sec-WebSocket-Extensions": "permessage-deflate; client_no_context_takeover; server_no_context_takeover" }
  }
  const withDeflate = (body: (c: RawClient) => Promise<void>) =>
    TestServer.withServer({ compression: { threshold: 0 } }, async (port) => body(await RawClient.connect(port, offer)))

  it("inflates compressed messages (one frame and fragmented) and compresses the echo", () =>
    withDeflate(async (c) => {
      expect(c.response.headers.get("sec-websocket-extensions")).toContain("permessage-deflate")
      await c.sendText(deflate("hello hello hello"), { rsv1: true })
      const echo = await c.nextFrame()
      expect([echo.opcode, echo.rsv1, echo.fin]).toEqual([Frame.Opcode.Text, true, true])
      expect(inflate(echo.payload)).toBe("hello hello hello")
      const d = deflate("fragmented compressed")
      await c.sendText(d.subarray(0, 5), { rsv1: true, fin: false })
      await c.sendFrame(Frame.Opcode.Continuation, d.subarray(5))
      expect(inflate((await c.expectFrame(Frame.Opcode.Text)).payload)).toBe("fragmented compressed")
      await c.sendClose(1000)
      await c.expectClose(1000)
    }))

  it.each([[1000, "a Close"], [1002, "a violation"]])(
    "compressed messages then a Close or a violation (%i) in one write: all answered before the Close",
    (code) =>
      withDeflate(async (c) => {
        const messages = [0, 1, 2].map((i) => c.frame(Frame.Opcode.Text, deflate(`message ${i} `.repeat(20)), { rsv1: true }))
        const last = code === 1000 ? c.frame(Frame.Opcode.Close, Frame.encodeClose(1000, "")) : c.frame(3, "")
        await c.write(Buffer.concat([...messages, last]))
        for (let i = 0; i < 3; i++) expect(inflate((await c.expectFrame(Frame.Opcode.Text)).payload)).toBe(`message ${i} `.repeat(20))
        await c.expectClose(code)
      })
  )

  it.each([
    ["RSV1 on a continuation frame: 1002", 1002, async (c: RawClient) => {
      await c.sendText(deflate("ab"), { rsv1: true, fin: false })
      await c.sendFrame(Frame.Opcode.Continuation, deflate("cd"), { rsv1: true })
    }],
    ["RSV1 on a ping: 1002", 1002, (c: RawClient) => c.ping("x", { rsv1: true })],
    ["data that does not inflate: 1007", 1007, (c: RawClient) => c.sendText(Uint8Array.of(0xff, 0xff, 0xff, 0xff), { rsv1: true })],
    ["a text message that inflates to invalid UTF-8: 1007", 1007, (c: RawClient) => c.sendText(deflate(Uint8Array.of(0xed, 0xa0, 0x80)), { rsv1: true })],
    ["a message that inflates beyond maxMessageSize: 1009", 1009, (c: RawClient) => c.sendBinary(deflate(new Uint8Array(2_000_000)), { rsv1: true })]
  ] as const)("%s", (_, code, act) =>
    withDeflate(async (c) => {
      await act(c)
      await c.expectClose(code)
    }))

  it.each([
    ["alone", false],
    ["then a Close 1000 in the same write (our Close waits for the inflate)", true]
  ] as const)("a message, then data that does not inflate, %s: the message is echoed, then 1007; the handler sees 1007", async (_, thenClose) => {
    let handle: WebSocket.WebSocket | undefined = undefined
    const handler = (ws: WebSocket.WebSocket) => Effect.andThen(Effect.sync(() => void (handle = ws)), TestServer.echo(ws))
    await TestServer.withServer({ compression: { threshold: 0 }, routes: { "/ws": handler } }, async (port) => {
      const c = await RawClient.connect(port, offer)
      const frames = [
        c.frame(Frame.Opcode.Text, deflate("before the bad one"), { rsv1: true }),
        c.frame(Frame.Opcode.Text, Uint8Array.of(0xff, 0xff, 0xff, 0xff), { rsv1: true })
      ]
      if (thenClose) frames.push(c.frame(Frame.Opcode.Close, Frame.encodeClose(1000, "")))
      await c.write(Buffer.concat(frames))
      expect(inflate((await c.expectFrame(Frame.Opcode.Text)).payload)).toBe("before the bad one")
      await c.expectClose(1007)
      const ws = handle!
      expect(await Effect.runPromise(ws.closed)).toMatchObject({ code: 1007, clean: false, initiator: "local" })
      const received = await Effect.runPromise(Effect.flip(ws.receive))
      expect(received.reason).toMatchObject({ _tag: "ProtocolViolation", code: 1007, connection: ws.id })
    })
  })
})
