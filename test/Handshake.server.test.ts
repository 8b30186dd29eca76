/**
 * The server over real TCP, seen from a raw client: every answer to an
 * upgrade request (101 and its headers: accept key, subprotocol, route
 * headers, extensions; 400, 404, 405, 408, 426, 431, 503), the bytes that
 * come with the request, the close outcomes the handler sees, server-side
 * closes and failures (1000, 1011), permessage-deflate on the wire, the
 * timers (keepalive, idle, lifetime), and graceful shutdown (Close 1001).
 */
import { Buffer } from "node:buffer"
import { createHash } from "node:crypto"
import { constants as zlib, deflateRawSync, inflateRawSync } from "node:zlib"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import * as Frame from "../src/Frame.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"

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
    maxHeadSize: 4096,
    handshakeTimeout: 300,
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
  const body = Buffer.from(await c.expectEnd()).toString()
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

  it("reads a request head delivered one byte at a time", async () => {
    const key = "dGhlIHNhbXBsZSBub25jZQ=="
    const c = await RawClient.connect(server.port, { key, chop: { size: 1, delay: 1 } })
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
    const [header, payload] = Frame.encode(Frame.Opcode.Text, new TextEncoder().encode("early bird"), { mask })
    const c = await RawClient.connect(server.port, { extra: Buffer.concat([header, payload]) })
    expect(await c.expectText()).toBe("early bird")
    await closeNormally(c)
  })

  it("processes several frames, a Close included, that arrive with the request", async () => {
    const mask = Uint8Array.of(9, 8, 7, 6)
    const frames = [
      Frame.encode(Frame.Opcode.Text, new TextEncoder().encode("one"), { mask }),
      Frame.encode(Frame.Opcode.Ping, new TextEncoder().encode("p"), { mask }),
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

  it("431 for a request head above maxHeadSize", async () => {
    const answer = await reject({ headers: { "X-Padding": "x".repeat(5000) } })
    expect(answer.status).toBe(431)
  })

  it("431 for a request head above maxHeadSize that never ends", async () => {
    // no blank line: the limit, not the end of the head, decides
    const answer = await reject({ request: `GET /ws HTTP/1.1\r\nX-Padding: ${"x".repeat(5000)}` })
    expect(answer.status).toBe(431)
  })

  it("408 for a request head not complete within handshakeTimeout", async () => {
    const answer = await reject({ request: "GET /ws HTTP/1.1\r\nHost: localhost\r\n", timeout: 2000 })
    expect(answer.status).toBe(408)
  })

  it("an error answer has a body with its reason and a matching Content-Length", async () => {
    const answer = await reject({ path: "/nowhere" })
    expect(Number(answer.headers.get("content-length"))).toBe(Buffer.byteLength(answer.body))
    expect(answer.body.length).toBeGreaterThan(0)
  })
})

describe("connection lifecycle", () => {
  /** A server whose handlers report their close outcome to `outcomes`. */
  const lifecycle = async () => {
    const outcomes: Array<WebSocket.CloseOutcome> = []
    let waiters: Array<() => void> = []
    const record = (ws: WebSocket.WebSocket) =>
      Effect.andThen(ws.closed, (outcome) =>
        Effect.sync(() => {
          outcomes.push(outcome)
          for (const w of waiters) w()
          waiters = []
        }))
    const started = await TestServer.start({
      logLevel: "None",
      routes: {
        "/echo": (ws) => Effect.andThen(Effect.forkDetach(record(ws)), TestServer.echo(ws)),
        "/return": (ws) => Effect.andThen(Effect.forkDetach(record(ws)), ws.send("bye")),
        "/fail": (ws) => Effect.andThen(Effect.forkDetach(record(ws)), Effect.fail("boom")),
        "/die": (ws) => Effect.andThen(Effect.forkDetach(record(ws)), Effect.die(new Error("defect"))),
        // closes with the code and reason given in the query, right after the upgrade
        "/close": (ws) =>
          Effect.andThen(
            Effect.forkDetach(record(ws)),
            ws.close(Number(ws.request.query.get("code")), ws.request.query.get("reason") ?? "")
          )
      }
    })
    const nextOutcome = async (): Promise<WebSocket.CloseOutcome> => {
      const deadline = Date.now() + 2000
      while (outcomes.length === 0) {
        if (Date.now() > deadline) throw new Error("no close outcome")
        await new Promise<void>((resolve) => {
          waiters.push(resolve)
          setTimeout(resolve, 50)
        })
      }
      return outcomes.shift()!
    }
    return { ...started, nextOutcome }
  }

  it("a peer Close: the handler's outcome is clean, remote, with the peer's code and reason", async () => {
    const own = await lifecycle()
    const c = await RawClient.connect(own.port, { path: "/echo" })
    await c.sendClose(4001, "see you")
    await c.expectClose(4001)
    expect(await own.nextOutcome()).toEqual({ code: 4001, reason: "see you", clean: true, initiator: "remote" })
    await own.close()
  })

  it("a protocol violation: the outcome is the violation's code, not clean, local", async () => {
    const own = await lifecycle()
    const c = await RawClient.connect(own.port, { path: "/echo" })
    await c.sendFrame(3, "")
    await c.expectClose(1002)
    expect(await own.nextOutcome()).toMatchObject({ code: 1002, clean: false, initiator: "local" })
    await own.close()
  })

  it("a peer that drops TCP: the outcome is 1006, not clean", async () => {
    const own = await lifecycle()
    const c = await RawClient.connect(own.port, { path: "/echo" })
    c.end()
    expect(await own.nextOutcome()).toMatchObject({ code: 1006, clean: false })
    await own.close()
  })

  it("a handler that returns closes the connection with 1000", async () => {
    const own = await lifecycle()
    const c = await RawClient.connect(own.port, { path: "/return" })
    expect(await c.expectText()).toBe("bye")
    await c.expectClose(1000)
    expect(await own.nextOutcome()).toMatchObject({ code: 1000, clean: true, initiator: "local" })
    await own.close()
  })

  it("a server Close: data, pings and a second Close from the peer before its answer are ignored; clean", async () => {
    const own = await lifecycle()
    const c = await RawClient.connect(own.port, { path: "/close?code=4000&reason=bye" })
    const close = await c.expectClose(4000, {
      beforeReply: async () => {
        await c.sendText("ignored")
        await c.ping("not answered after our Close")
      }
    })
    expect(close).toEqual({ code: 4000, reason: "bye" })
    // the outcome reports the peer's answering Close (our client echoes the code, no reason)
    expect(await own.nextOutcome()).toEqual({ code: 4000, reason: "", clean: true, initiator: "local" })
    await own.close()
  })

  it("a server Close crossing the peer's Close (simultaneous close) ends cleanly", async () => {
    const own = await lifecycle()
    const c = await RawClient.connect(own.port, { path: "/close?code=1000" })
    await c.sendClose(1000)
    await c.expectClose(1000)
    expect(await own.nextOutcome()).toMatchObject({ code: 1000, clean: true })
    await own.close()
  })

  it("a server Close the peer never answers: TCP ends after closeTimeout, outcome not clean", async () => {
    const own = await lifecycle()
    const c = await RawClient.connect(own.port, { path: "/close?code=1000" })
    const started = Date.now()
    await c.expectClose(1000, { reply: false, timeout: 1500 })
    const elapsed = Date.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(400) // closeTimeout 500
    // no Close received: 1006 (CloseOutcome.code)
    expect(await own.nextOutcome()).toMatchObject({ code: 1006, clean: false, initiator: "local" })
    await own.close()
  })

  it("a reason above 123 bytes is cut at a character boundary to fit the Close frame", async () => {
    const own = await lifecycle()
    const reason = "é".repeat(100) // 200 bytes
    const c = await RawClient.connect(own.port, { path: `/close?code=4000&reason=${encodeURIComponent(reason)}` })
    const close = await c.expectClose(4000)
    expect(Buffer.byteLength(close.reason)).toBeLessThanOrEqual(123)
    expect(reason.startsWith(close.reason)).toBe(true)
    expect(close.reason.length).toBe(61)
    await own.close()
  })

  it.each([1005, 1006, 1015, 999, 5000])("an application close with the unsendable code %i goes out as an empty Close", async (code) => {
    const own = await lifecycle()
    const c = await RawClient.connect(own.port, { path: `/close?code=${code}` })
    expect((await c.expectClose()).code).toBe(1005) // 1005: no status code in the frame
    await own.close()
  })

  it("a handler that never reads its messages still answers the peer's Close at once (RFC 6455 §5.5.1 'as soon as practical')", async () => {
    // e.g. a broadcast-only handler waiting on `closed`; closeTimeout long so that a wait for it shows
    await TestServer.withServer({ closeTimeout: 1500, routes: { "/ws": (ws) => ws.closed } }, async (port) => {
      const c = await RawClient.connect(port)
      await c.sendText("never read")
      const started = Date.now()
      await c.sendClose(1000)
      await c.expectClose(1000, { timeout: 3000 })
      expect(Date.now() - started).toBeLessThan(500)
    })
  })

  it.each(["/fail", "/die"])("a handler that %s closes its connection with 1011 and touches no other", async (path) => {
    const own = await lifecycle()
    const other = await RawClient.connect(own.port, { path: "/echo" })
    const c = await RawClient.connect(own.port, { path })
    await c.expectClose(1011)
    expect(await own.nextOutcome()).toMatchObject({ code: 1011, clean: true, initiator: "local" })
    await other.sendText("still fine")
    expect(await other.expectText()).toBe("still fine")
    await other.sendClose(1000)
    await other.expectClose(1000)
    await own.close()
  })
})

describe("permessage-deflate over TCP", () => {
  const TAIL = Uint8Array.of(0x00, 0x00, 0xff, 0xff)
  /** RFC 7692 §7.2.1: deflate with a sync flush, drop the 4-byte tail. */
  const deflate = (data: string | Uint8Array): Uint8Array => {
    const out = deflateRawSync(typeof data === "string" ? Buffer.from(data) : data, { finishFlush: zlib.Z_SYNC_FLUSH })
    return out.subarray(0, out.length - 4)
  }
  const inflate = (data: Uint8Array): string =>
    inflateRawSync(Buffer.concat([data, TAIL]), { finishFlush: zlib.Z_SYNC_FLUSH }).toString()
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
})

describe("timers", () => {
  it("pings every pingInterval; a peer that answers stays open", async () => {
    await TestServer.withServer({ pingInterval: 100, idleTimeout: 0 }, async (port) => {
      const c = await RawClient.connect(port)
      for (let i = 0; i < 3; i++) {
        const ping = await c.expectFrame(Frame.Opcode.Ping, 1000)
        await c.pong(ping.payload)
      }
      await c.sendText("alive")
      expect(await c.expectText()).toBe("alive")
      await c.sendClose(1000)
      await c.expectClose(1000)
    })
  })

  it("a peer silent for idleTimeout is closed with 1001", async () => {
    await TestServer.withServer({ pingInterval: 0, idleTimeout: 200 }, async (port) => {
      const c = await RawClient.connect(port)
      const started = Date.now()
      await c.expectClose(1001, { timeout: 1500 })
      expect(Date.now() - started).toBeGreaterThanOrEqual(150)
    })
  })

  it("a connection is closed with 1001 after maxLifetime even when active", async () => {
    await TestServer.withServer({ maxLifetime: 200 }, async (port) => {
      const c = await RawClient.connect(port)
      await c.sendText("busy")
      expect(await c.expectText()).toBe("busy")
      await c.expectClose(1001, { timeout: 1500 })
    })
  })
})

describe("graceful shutdown", () => {
  it("closing the server sends Close 1001 to an open connection; the handler sees the outcome", async () => {
    const outcome = Deferred.makeUnsafe<WebSocket.CloseOutcome>()
    const own = await TestServer.start({
      routes: {
        "/ws": (ws) =>
          Effect.gen(function*() {
            yield* ws.send("ready")
            const result = yield* ws.closed
            Deferred.doneUnsafe(outcome, Effect.succeed(result))
          })
      }
    })
    const c = await RawClient.connect(own.port)
    expect(await c.expectText()).toBe("ready")
    const closing = own.close()
    const close = await c.expectClose(1001)
    expect(close.code).toBe(1001)
    await closing
    const seen = await Effect.runPromise(Deferred.await(outcome).pipe(Effect.timeout(1000)))
    expect(seen).toMatchObject({ code: 1001, clean: true, initiator: "local" })
  })

  it("a peer that does not answer the 1001 is dropped after closeTimeout and the shutdown ends", async () => {
    const own = await TestServer.start({ closeTimeout: 200, shutdownTimeout: 2000 })
    const c = await RawClient.connect(own.port)
    const started = Date.now()
    const closing = own.close()
    const close = await c.expectClose(1001, { reply: false })
    expect(close.code).toBe(1001)
    await closing
    expect(Date.now() - started).toBeLessThan(1500)
  })

  it("a connection still sending its request head when the server shuts down is answered 503", async () => {
    const own = await TestServer.start()
    const pending = RawClient.request(own.port, { request: "GET /ws HTTP/1.1\r\nHost: localhost\r\n" })
    await new Promise((resolve) => setTimeout(resolve, 50))
    const closing = own.close()
    const c = await pending
    expect(c.response.status).toBe(503)
    await c.expectEnd()
    await closing
  })

  it("503 beyond maxConnections", async () => {
    await TestServer.withServer({ maxConnections: 1 }, async (port) => {
      const first = await RawClient.connect(port)
      const second = await RawClient.request(port)
      expect(second.response.status).toBe(503)
      await second.expectEnd()
      await first.sendClose(1000)
      await first.expectClose(1000)
    })
  })

  it("after shutdown the port refuses connections", async () => {
    const own = await TestServer.start()
    await own.close()
    await expect(RawClient.connect(own.port, { timeout: 500 })).rejects.toThrow()
  })
})
