import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Handshake from "../src/Handshake.ts"
import { chop, chopSizes } from "./arbitraries.ts"
import { text } from "./support/Bytes.ts"

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/**
 * Feeds the chunks in order, as the server does: stops at the first
 * non-Incomplete result. `after` = `rest` plus the chunks never fed (what the
 * server goes on to read as frames).
 */
const feedRest = (chunks: ReadonlyArray<Uint8Array>, max = 8192) => {
  let state = Handshake.initialHead(max)
  let result: Handshake.HeadResult = { _tag: "Incomplete", state }
  for (let i = 0; i < chunks.length; i++) {
    result = Handshake.feedHead(state, chunks[i]!)
    if (result._tag === "Complete") {
      return { result, after: [...result.rest, ...chunks.slice(i + 1).flatMap((c) => [...c])] }
    }
    if (result._tag !== "Incomplete") break
    state = result.state
  }
  return { result, after: [] }
}

const feedAll = (chunks: ReadonlyArray<Uint8Array>, max = 8192): Handshake.HeadResult => feedRest(chunks, max).result

const singleBytes = (all: Uint8Array): Array<Uint8Array> => chop(all, [1])

/** A comparable plain view of a result (Map and URLSearchParams flattened; state dropped; rest + unfed chunks). */
const plain = ({ after, result: r }: ReturnType<typeof feedRest>) => {
  switch (r._tag) {
    case "Incomplete":
      return { _tag: r._tag }
    case "TooLarge":
      return r
    case "Malformed":
      return r
    case "Complete":
      return {
        _tag: r._tag,
        after,
        request: { ...r.request, query: r.request.query.toString(), headers: [...r.request.headers] }
      }
  }
}

const KEY = "dGhlIHNhbXBsZSBub25jZQ=="

const upgradeHead = (overrides: Record<string, string | undefined> = {}, requestLine = "GET /chat?room=1&x=%20y HTTP/1.1") => {
  const headers: Record<string, string | undefined> = {
    Host: "server.example.com",
    Upgrade: "websocket",
    Connection: "Upgrade",
    "Sec-WebSocket-Key": KEY,
    "Sec-WebSocket-Version": "13",
    ...overrides
  }
  let head = `${requestLine}\r\n`
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) head += `${name}: ${value}\r\n`
  return `${head}\r\n`
}

const request = (head: string): Handshake.Request => {
  const r = feedAll([text(head)])
  if (r._tag !== "Complete") throw new Error(`expected Complete, got ${JSON.stringify(r)}`)
  return r.request
}

const validate = (overrides: Record<string, string | undefined> = {}, requestLine?: string) =>
  Handshake.validateUpgrade(request(upgradeHead(overrides, requestLine)))

const expectReject = (u: Handshake.Upgrade, status: number) => {
  expect(u._tag).toBe("Reject")
  if (u._tag === "Reject") expect(u.status).toBe(status)
  return u
}

// ---------------------------------------------------------------------------
// head reader
// ---------------------------------------------------------------------------

describe("feedHead", () => {
  it("parses the RFC 6455 §1.2 example handshake", () => {
    const r = feedAll([text(upgradeHead({ Origin: "http://example.com", "Sec-WebSocket-Protocol": "chat, superchat" }))])
    expect(r._tag).toBe("Complete")
    if (r._tag !== "Complete") return
    expect(r.rest.length).toBe(0)
    const q = r.request
    expect(q.method).toBe("GET")
    expect(q.target).toBe("/chat?room=1&x=%20y")
    expect(q.path).toBe("/chat")
    expect(q.query.get("room")).toBe("1")
    expect(q.query.get("x")).toBe(" y")
    expect(q.httpVersion).toBe("1.1")
    expect(q.headers.get("host")).toBe("server.example.com")
    expect(q.headers.get("sec-websocket-protocol")).toBe("chat, superchat")
    expect(q.headers.has("Host")).toBe(false)
  })

  it("joins repeated headers with \", \" and trims optional whitespace", () => {
    const q = request("GET / HTTP/1.1\r\nHost: h\r\nX-A:one\r\nx-a: \t two \t\r\nEmpty:\r\n\r\n")
    expect(q.headers.get("x-a")).toBe("one, two")
    expect(q.headers.get("empty")).toBe("")
  })

  it("keeps the bytes after the blank line as rest", () => {
    const head = upgradeHead()
    const frame = [0x81, 0x85, 1, 2, 3, 4, 0x49, 0x67, 0x6f, 0x68, 0x6e]
    const r = feedAll([Uint8Array.from([...text(head), ...frame])])
    expect(r._tag === "Complete" && Array.from(r.rest)).toEqual(frame)
  })

  it("accepts absolute-form targets and takes their path", () => {
    expect(request("GET http://example.com:80/a/b?c=d HTTP/1.1\r\nHost: example.com\r\n\r\n").path).toBe("/a/b")
    const q = request("GET wss://example.com?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    expect(q.path).toBe("/")
    expect(q.query.get("x")).toBe("1")
  })

  it("skips empty lines before the request line (RFC 9112 §2.2)", () => {
    expect(request("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").method).toBe("GET")
  })

  it("reads header values as Latin-1 (obs-text)", () => {
    const r = feedAll([Uint8Array.from([...text("GET / HTTP/1.1\r\nX: "), 0xe9, 0xff, ...text("\r\n\r\n")])])
    expect(r._tag === "Complete" && r.request.headers.get("x")).toBe("\u00e9\u00ff")
  })

  it("stays Incomplete until the blank line", () => {
    const r = feedAll([text("GET / HTTP/1.1\r\nHost: h\r\n")])
    expect(r._tag).toBe("Incomplete")
    const s = Handshake.initialHead(100)
    expect(Handshake.feedHead(s, new Uint8Array(0))).toEqual({ _tag: "Incomplete", state: s })
  })

  it("answers TooLarge past maxHeadSize, and Complete at exactly maxHeadSize", () => {
    const head = text("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    expect(feedAll([head], head.length)._tag).toBe("Complete")
    expect(feedAll([head], head.length - 1)).toEqual({ _tag: "TooLarge" })
    expect(feedAll(singleBytes(head), head.length - 1)).toEqual({ _tag: "TooLarge" })
    // a head that never ends (slow drip of header bytes) is cut off at the limit
    let state = Handshake.initialHead(1024)
    let result: Handshake.HeadResult = { _tag: "Incomplete", state }
    for (let i = 0; i < 200 && result._tag === "Incomplete"; i++) {
      state = result.state
      result = Handshake.feedHead(state, text("X-Pad: aaaaaaaaaa\r\n"))
    }
    expect(result).toEqual({ _tag: "TooLarge" })
  })

  const malformed: ReadonlyArray<readonly [string, string]> = [
    ["bare LF", "GET / HTTP/1.1\nHost: h\n\n"],
    ["bare LF in a header", "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n"],
    ["bare CR", "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n"],
    ["whitespace before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n"],
    ["tab before colon", "GET / HTTP/1.1\r\nHost\t: h\r\n\r\n"],
    ["obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"],
    ["obs-fold with tab", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n"],
    ["header without colon", "GET / HTTP/1.1\r\nHost h\r\n\r\n"],
    ["empty header name", "GET / HTTP/1.1\r\n: h\r\n\r\n"],
    ["non-token header name", "GET / HTTP/1.1\r\nHo(st: h\r\n\r\n"],
    ["control character in value", "GET / HTTP/1.1\r\nHost: h\u0001\r\n\r\n"],
    ["NUL in value", "GET / HTTP/1.1\r\nHost: h\u0000x\r\n\r\n"],
    ["DEL in value", "GET / HTTP/1.1\r\nHost: h\u007f\r\n\r\n"],
    ["two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"],
    ["double space in request line", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n"],
    ["trailing space in request line", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n"],
    ["missing version", "GET /\r\nHost: h\r\n\r\n"],
    ["lower-case version", "GET / http/1.1\r\nHost: h\r\n\r\n"],
    ["long version", "GET / HTTP/1.10\r\nHost: h\r\n\r\n"],
    ["non-token method", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n"],
    ["asterisk-form target", "GET * HTTP/1.1\r\nHost: h\r\n\r\n"],
    ["authority-form target", "GET example.com:80 HTTP/1.1\r\nHost: h\r\n\r\n"],
    ["fragment in target", "GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n"],
    ["non-ASCII target", "GET /\u00e9 HTTP/1.1\r\nHost: h\r\n\r\n"],
    ["unknown scheme", "GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n"]
  ]
  for (const [name, head] of malformed) {
    it(`rejects ${name} as Malformed`, () => {
      expect(feedAll([text(head)])._tag).toBe("Malformed")
      expect(feedAll(singleBytes(text(head)))._tag).toBe("Malformed")
    })
  }

  it("detects a bare LF before the head ends (no wait for CRLFCRLF)", () => {
    expect(feedAll([text("GET / HTTP/1.1\nHost: h")])._tag).toBe("Malformed")
  })

  it("never echoes header values into reasons", () => {
    const secret = "s3cr3t"
    for (const head of [
      `GET / HTTP/1.1\r\nHost: ${secret}\r\nhost: ${secret}\r\n\r\n`,
      `GET / HTTP/1.1\r\nX: ${secret}\u0001\r\n\r\n`,
      `GET /${secret}# HTTP/1.1\r\n\r\n`
    ]) {
      const r = feedAll([text(head)])
      expect(r._tag).toBe("Malformed")
      if (r._tag === "Malformed") expect(r.reason).not.toContain(secret)
    }
  })
})

// ---------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------

describe("validateUpgrade", () => {
  it("accepts the RFC example with its protocols and extensions", () => {
    const u = validate({
      "Sec-WebSocket-Protocol": "chat, superchat",
      "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits, x-foo"
    })
    expect(u).toEqual({
      _tag: "Accept",
      key: KEY,
      protocols: ["chat", "superchat"],
      extensions: [{ name: "permessage-deflate", params: [["client_max_window_bits", undefined]] }, { name: "x-foo", params: [] }]
    })
  })

  it("accepts token lists and case-insensitive values", () => {
    const u = validate({ Upgrade: "h2c, WebSocket", Connection: "keep-alive, UPGRADE" })
    expect(u._tag).toBe("Accept")
    expect(validate({}, "GET /chat HTTP/1.2")._tag).toBe("Accept")
    expect(validate({ "Content-Length": "0" })._tag).toBe("Accept")
  })

  it("405 with Allow: GET for another method", () => {
    const u = expectReject(validate({}, "POST /chat HTTP/1.1"), 405)
    expect(u._tag === "Reject" && u.headers).toEqual([["Allow", "GET"]])
    expectReject(validate({}, "get /chat HTTP/1.1"), 405)
  })

  it("400 below HTTP/1.1, 505 above HTTP/1.x", () => {
    expectReject(validate({}, "GET /chat HTTP/1.0"), 400)
    expectReject(validate({}, "GET /chat HTTP/0.9"), 400)
    expectReject(validate({}, "GET /chat HTTP/2.0"), 505)
  })

  it("400 for a missing, empty or invalid Host", () => {
    expectReject(validate({ Host: undefined }), 400)
    expectReject(validate({ Host: "" }), 400)
    expectReject(validate({ Host: "a b" }), 400)
    expectReject(validate({ Host: "a/b" }), 400)
    expect(validate({ Host: "[::1]:8080" })._tag).toBe("Accept")
  })

  it("400 without Upgrade: websocket or Connection: upgrade", () => {
    expectReject(validate({ Upgrade: undefined }), 400)
    expectReject(validate({ Upgrade: "websockets" }), 400)
    expectReject(validate({ Upgrade: "h2c" }), 400)
    expectReject(validate({ Connection: undefined }), 400)
    expectReject(validate({ Connection: "keep-alive" }), 400)
    expectReject(validate({ Connection: "upgrades" }), 400)
  })

  it("426 with Sec-WebSocket-Version: 13 for another version; 400 for none", () => {
    for (const v of ["8", "12", "14", "013", "13, 8", "abc"]) {
      const u = expectReject(validate({ "Sec-WebSocket-Version": v }), 426)
      expect(u._tag === "Reject" && u.headers).toContainEqual(["Sec-WebSocket-Version", "13"])
    }
    const u = expectReject(validate({ "Sec-WebSocket-Version": undefined }), 400)
    expect(u._tag === "Reject" && u.headers).toContainEqual(["Sec-WebSocket-Version", "13"])
  })

  it("400 for a missing or invalid Sec-WebSocket-Key", () => {
    expectReject(validate({ "Sec-WebSocket-Key": undefined }), 400)
    for (const key of [
      "",
      "dGhlIHNhbXBsZSBub25jZQ", // no padding
      "dGhlIHNhbXBsZSBub25jZR==", // non-canonical last char
      "dGhlIHNhbXBsZSBub25jZQ==dGhl", // too long
      "dGhlIHNhbXBsZSBub25j", // 15 bytes
      "dGhlIHNhbXBsZSBub25jZQ=", // bad padding
      "dGhlIHNhbXBsZSBub25j-Q==", // URL-safe alphabet
      "AAAAAAAAAAAAAAAAAAAAAAAA" // 18 bytes
    ]) {
      expectReject(validate({ "Sec-WebSocket-Key": key }), 400)
    }
    // a repeated key joins into an invalid value
    const head = upgradeHead().replace("\r\n\r\n", `\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n`)
    expectReject(Handshake.validateUpgrade(request(head)), 400)
    expect(validate({ "Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAA==" })._tag).toBe("Accept")
  })

  it("400 for malformed Sec-WebSocket-Protocol or Sec-WebSocket-Extensions", () => {
    expectReject(validate({ "Sec-WebSocket-Protocol": "" }), 400)
    expectReject(validate({ "Sec-WebSocket-Protocol": "a b" }), 400)
    expectReject(validate({ "Sec-WebSocket-Protocol": "chat/1" }), 400)
    expectReject(validate({ "Sec-WebSocket-Extensions": "" }), 400)
    expectReject(validate({ "Sec-WebSocket-Extensions": "permessage-deflate;" }), 400)
    expectReject(validate({ "Sec-WebSocket-Extensions": "x; a=\"b c\"" }), 400)
  })

  it("400 for a request body", () => {
    expectReject(validate({ "Content-Length": "5" }), 400)
    expectReject(validate({ "Transfer-Encoding": "chunked" }), 400)
  })

  it("keeps reasons free of header values", () => {
    const u = expectReject(validate({ "Sec-WebSocket-Key": "s3cr3t" }), 400)
    expect(u._tag === "Reject" && u.reason).not.toContain("s3cr3t")
  })
})

describe("acceptKey", () => {
  it("gives the RFC 6455 §1.3 example", () => {
    // The value printed in RFC 6455 §1.2 and §1.3 (and computed by every implementation).
    expect(Handshake.acceptKey("dGhlIHNhbXBsZSBub25jZQ==")).toBe("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
  })
})

// ---------------------------------------------------------------------------
// header grammars
// ---------------------------------------------------------------------------

describe("parseProtocols", () => {
  it("parses token lists, skipping empty elements", () => {
    expect(Handshake.parseProtocols("chat")).toEqual(["chat"])
    expect(Handshake.parseProtocols(" chat ,\tsuperchat ")).toEqual(["chat", "superchat"])
    expect(Handshake.parseProtocols("a,,b,")).toEqual(["a", "b"])
  })
  it("rejects non-tokens and empty lists", () => {
    for (const h of ["", " , ", "a b", "a;b", "\"a\"", "caf\u00e9"]) expect(Handshake.parseProtocols(h)).toBeUndefined()
  })
})

describe("parseExtensions", () => {
  it("parses the RFC 7692 examples", () => {
    expect(Handshake.parseExtensions("permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate"))
      .toEqual([
        { name: "permessage-deflate", params: [["client_max_window_bits", undefined], ["server_max_window_bits", "10"]] },
        { name: "permessage-deflate", params: [] }
      ])
    expect(Handshake.parseExtensions("permessage-deflate;server_max_window_bits=\"10\"")).toEqual([
      { name: "permessage-deflate", params: [["server_max_window_bits", "10"]] }
    ])
  })
  it("accepts whitespace around separators, escapes in quoted values, empty elements", () => {
    expect(Handshake.parseExtensions(" a ; b = \"c\\d\" ;e , , f ")).toEqual([
      { name: "a", params: [["b", "cd"], ["e", undefined]] },
      { name: "f", params: [] }
    ])
  })
  it("rejects malformed headers", () => {
    for (
      const h of [
        "",
        ",",
        "a;",
        "a; =1",
        "a; b=",
        "a; b=\"\"",
        "a; b=\"c d\"",
        "a; b=\"c",
        "a; b=\"c\\",
        "a b",
        "a; b c",
        "a; b=c d",
        ";a",
        "a=1",
        "a; b==c",
        "a; b=\"c\"d"
      ]
    ) {
      expect(Handshake.parseExtensions(h), h).toBeUndefined()
    }
  })
})

// ---------------------------------------------------------------------------
// responses
// ---------------------------------------------------------------------------

describe("response101", () => {
  it("writes the RFC 6455 §1.3 response", () => {
    expect(text(Handshake.response101({ accept: Handshake.acceptKey(KEY), protocol: "chat" }))).toBe(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
    )
  })
  it("adds extensions and the caller's headers, dropping invalid or reserved ones", () => {
    const out = text(Handshake.response101({
      accept: "x",
      extensions: "permessage-deflate; server_no_context_takeover",
      headers: [
        ["Set-Cookie", "a=b; Path=/"],
        ["X-Bad", "a\r\nInjected: yes"],
        ["Bad Name", "v"],
        ["connection", "close"],
        ["Content-Length", "0"],
        ["X-Nul", "a\u0000"]
      ]
    }))
    expect(out).toBe(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n" +
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\nSet-Cookie: a=b; Path=/\r\n\r\n"
    )
    expect(text(Handshake.response101({ accept: "x", protocol: "a b\r\nX: y", extensions: "e\r\n" }))).toBe(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n"
    )
  })
})

describe("responseError", () => {
  it("writes a closing text/plain response with its Content-Length", () => {
    const out = Handshake.responseError(405, "method not allowed", [["Allow", "GET"]])
    expect(text(out)).toBe(
      "HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n" +
        "Content-Length: 19\r\nAllow: GET\r\n\r\nmethod not allowed\n"
    )
  })
  it("counts the body in UTF-8 bytes", () => {
    const out = Handshake.responseError(400, "caf\u00e9")
    const s = text(out)
    expect(s).toContain("Content-Length: 6\r\n")
    expect(out.length - (s.indexOf("\r\n\r\n") + 4)).toBe(6)
  })
  it("has the status texts, 500 for an impossible status, Upgrade option on a 426", () => {
    const cases: ReadonlyArray<readonly [number, string]> = [
      [400, "Bad Request"],
      [403, "Forbidden"],
      [404, "Not Found"],
      [405, "Method Not Allowed"],
      [426, "Upgrade Required"],
      [431, "Request Header Fields Too Large"],
      [500, "Internal Server Error"],
      [503, "Service Unavailable"],
      [505, "HTTP Version Not Supported"]
    ]
    for (const [status, phrase] of cases) {
      expect(text(Handshake.responseError(status, "r"))).toMatch(new RegExp(`^HTTP/1\\.1 ${status} ${phrase}\\r\\n`))
    }
    expect(text(Handshake.responseError(42, "r"))).toMatch(/^HTTP\/1\.1 500 /)
    expect(text(Handshake.responseError(NaN, "r"))).toMatch(/^HTTP\/1\.1 500 /)
    const u = validate({ "Sec-WebSocket-Version": "8" })
    if (u._tag !== "Reject") throw new Error("expected Reject")
    const s = text(Handshake.responseError(u.status, u.reason, u.headers))
    expect(s).toContain("Connection: Upgrade, close\r\n")
    expect(s).toContain("Sec-WebSocket-Version: 13\r\n")
    expect(s).toContain("Upgrade: websocket\r\n")
  })
})

describe("isValidHeader", () => {
  it("requires a token name and a value without CR, LF, NUL or controls", () => {
    expect(Handshake.isValidHeader("Set-Cookie", "a=b; Path=/; \u00e9")).toBe(true)
    expect(Handshake.isValidHeader("X", "")).toBe(true)
    expect(Handshake.isValidHeader("X", "a\tb")).toBe(true)
    for (const [n, v] of [["", "v"], ["A B", "v"], ["A:", "v"], ["X", "a\rb"], ["X", "a\nb"], ["X", "a\u0000"], ["X", "\u0100"]]) {
      expect(Handshake.isValidHeader(n!, v!)).toBe(false)
    }
  })
})

// ---------------------------------------------------------------------------
// properties
// ---------------------------------------------------------------------------

const TCHARS = [..."!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]
const token = fc.string({ unit: fc.constantFrom(...TCHARS), minLength: 1, maxLength: 8 })
const ows = fc.constantFrom("", " ", "\t", "  ")

/** Heads: valid upgrade requests with random extra headers, plus near-misses built from head-ish pieces. */
const headArb = fc.oneof(
  fc.record({
    path: fc.string({ unit: fc.constantFrom(..."/abc%20?=&"), maxLength: 12 }),
    extra: fc.array(fc.tuple(token, fc.string({ unit: fc.constantFrom(..."ab ,;=\"\t\u00e9"), maxLength: 10 })), {
      maxLength: 4
    })
  }).map(({ extra, path }) => {
    const overrides: Record<string, string> = {}
    for (const [n, v] of extra) overrides[n] = v
    return text(upgradeHead(overrides, `GET /${path} HTTP/1.1`))
  }),
  fc.array(fc.constantFrom("GET", " ", "/", "\r\n", "\r", "\n", "Host", ":", "h", "HTTP/1.1", "\t", "X-A", "\u0000"), {
    maxLength: 30
  }).map((parts) => text(parts.join("")))
)
const restArb = fc.uint8Array({ maxLength: 40 })

describe("properties", () => {
  it("the head reader gives the same result under any chop, 1-byte chops included", () => {
    fc.assert(
      fc.property(headArb, restArb, chopSizes, fc.integer({ min: 0, max: 400 }), (head, rest, sizes, max) => {
        const all = Uint8Array.from([...head, ...rest])
        const whole = plain(feedRest([all], max))
        expect(plain(feedRest(chop(all, sizes), max))).toEqual(whole)
        expect(plain(feedRest(singleBytes(all), max))).toEqual(whole)
      }),
      { numRuns: 150 }
    )
  })

  it("preserves the bytes after the head exactly", () => {
    fc.assert(
      fc.property(headArb, restArb, chopSizes, (head, rest, sizes) => {
        const whole = feedAll([head])
        fc.pre(whole._tag === "Complete")
        const { after, result } = feedRest(chop(Uint8Array.from([...head, ...rest]), sizes))
        expect(result._tag).toBe("Complete")
        expect(after).toEqual(Array.from(rest))
        // in one chunk, rest is exactly the bytes after the head
        const one = feedAll([Uint8Array.from([...head, ...rest])])
        expect(one._tag === "Complete" && Array.from(one.rest)).toEqual(Array.from(rest))
      }),
      { numRuns: 100 }
    )
  })

  it("valid upgrade requests are accepted whatever the unrelated extra headers", () => {
    const reserved = /^(host|upgrade|connection|sec-websocket-.*|content-length|transfer-encoding)$/i
    const extraArb = fc.array(
      fc.tuple(token, fc.string({ unit: fc.constantFrom(..."ab ,;=\"\t\u00e9"), maxLength: 10 })),
      { maxLength: 5 }
    ).map((extra) => extra.filter(([n]) => !reserved.test(n)))
    fc.assert(
      fc.property(extraArb, fc.string({ unit: fc.constantFrom(..."/az09-._~%!$&'()*+,;=:@?"), maxLength: 12 }), (extra, path) => {
        const overrides: Record<string, string> = {}
        for (const [n, v] of extra) overrides[n] = v
        const u = Handshake.validateUpgrade(request(upgradeHead(overrides, `GET /${path} HTTP/1.1`)))
        expect(u).toEqual({ _tag: "Accept", key: KEY, protocols: [], extensions: [] })
      }),
      { numRuns: 100 }
    )
  })

  it("reads a large head fed one byte at a time (linear scan)", () => {
    const pad = "X-Pad: " + "a".repeat(90) + "\r\n"
    const head = text(upgradeHead().replace("\r\n\r\n", "\r\n" + pad.repeat(600) + "\r\n"))
    const r = feedAll(singleBytes(head), 65536)
    expect(r._tag === "Complete" && r.request.headers.get("x-pad")?.length).toBe(600 * 90 + 599 * 2)
  })

  it("random bytes never throw", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), chopSizes, (all, sizes) => {
        const r = feedAll(chop(all, sizes), 200)
        if (r._tag === "Complete") Handshake.validateUpgrade(r.request)
      }),
      { numRuns: 200 }
    )
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), fc.string({ maxLength: 10 }), (s, t) => {
        Handshake.parseExtensions(s)
        Handshake.parseProtocols(s)
        Handshake.isValidHeader(t, s)
        Handshake.acceptKey(s)
        // a caller's header can never add a line to the head
        const lines = (out: Uint8Array) => text(out).split("\r\n\r\n")[0]!.split("\r\n").length
        expect(lines(Handshake.responseError(400, t, [[t, s]]))).toBeLessThanOrEqual(5)
        expect(lines(Handshake.response101({ accept: s, protocol: t, extensions: s, headers: [[t, s]] })))
          .toBeLessThanOrEqual(7)
      }),
      { numRuns: 200 }
    )
  })

  const offerArb = fc.record({
    name: token,
    params: fc.array(fc.tuple(token, fc.option(token, { nil: undefined })), { maxLength: 3 })
  })

  it("extension offers round-trip through any §9.1 spelling", () => {
    const spelled = fc.array(offerArb, { minLength: 1, maxLength: 4 }).chain((offers) =>
      fc.tuple(
        fc.constant(offers),
        fc.array(fc.tuple(ows, ows, fc.boolean(), fc.boolean()), { minLength: 40, maxLength: 40 })
      )
    )
    fc.assert(
      fc.property(spelled, ([offers, style]) => {
        let k = 0 // index into the style choices
        const pick = () => style[k++ % style.length]!
        const header = offers.map((o) => {
          const [a, b, , emptyBefore] = pick()
          let s = `${emptyBefore ? ", " : ""}${a}${o.name}${b}`
          for (const [n, v] of o.params) {
            const [c, d, quote] = pick()
            s += `;${c}${n}${d}`
            if (v !== undefined) {
              const escaped = v.replace(/./g, (ch) => (ch === "a" ? "\\a" : ch))
              s += `=${d}${quote ? `"${escaped}"` : v}${c}`
            }
          }
          return s
        }).join(",")
        const expected = offers.map((o) => ({ name: o.name, params: o.params.map(([n, v]) => [n, v]) }))
        expect(Handshake.parseExtensions(header)).toEqual(expected)
        expect(Handshake.parseExtensions(Handshake.formatExtensions(offers))).toEqual(expected)
      }),
      { numRuns: 200 }
    )
  })

  it("protocol lists round-trip", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(token, ows, ows), { minLength: 1, maxLength: 5 }), (items) => {
        const header = items.map(([t, a, b]) => `${a}${t}${b}`).join(",")
        expect(Handshake.parseProtocols(header)).toEqual(items.map(([t]) => t))
      }),
      { numRuns: 100 }
    )
  })
})
