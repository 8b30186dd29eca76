/**
 * The client's side of the opening handshake, pure (RFC 6455 §4.1, RFC 7692
 * §5-§7): the request our server's own reader accepts, the response reader
 * that does not depend on chopping, the strict check of each part of a 101,
 * and permessage-deflate: whatever our server's negotiation answers to our
 * offer, the client accepts, with the same parameters.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as ClientHandshake from "../src/ClientHandshake.ts"
import * as Handshake from "../src/Handshake.ts"
import * as PerMessageDeflate from "../src/PerMessageDeflate.ts"
import * as Testing from "../src/testing.ts"

/** A client's defaults (it asks nothing of the server's compressor: see Client.resolve). */
const clientDefaults: PerMessageDeflate.Options = { ...PerMessageDeflate.defaults, serverNoContextTakeover: false }

const key = ClientHandshake.makeKey(new Uint8Array(16).fill(7))
const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("latin1")
const bytes = (s: string) => Uint8Array.from(Buffer.from(s, "latin1"))

const parseRequest = (request: Uint8Array): Handshake.Request => {
  const result = Handshake.feedHead(Handshake.initialHead(16 * 1024), request)
  if (result._tag !== "Complete") throw new Error(`request not complete: ${result._tag}`)
  return result.request
}

const parseResponse = (head: string): ClientHandshake.Response => {
  const result = ClientHandshake.feedResponse(ClientHandshake.initialResponse(16 * 1024), bytes(head))
  if (result._tag !== "Complete") throw new Error(`response not complete: ${result._tag}`)
  return result.response
}

const good = (extra: ReadonlyArray<string> = [], status = "HTTP/1.1 101 Switching Protocols"): string =>
  [status, "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${Handshake.acceptKey(key)}`, ...extra, "", ""].join("\r\n")

const expected = (deflate = true, protocols: ReadonlyArray<string> = ["chat", "v2"]): ClientHandshake.Expectation => ({
  key,
  protocols,
  deflate: deflate ? clientDefaults : undefined
})

const validate = (head: string, expectation = expected()) => ClientHandshake.validateResponse(parseResponse(head), expectation)

describe("request (RFC 6455 §4.1)", () => {
  it("is a request our server's reader and validateUpgrade accept, with the key, the subprotocols and the offer", () => {
    const offer = ClientHandshake.deflateOffer(clientDefaults)
    const request = parseRequest(ClientHandshake.request({
      host: "example.com:8080",
      target: "/chat?room=1",
      key,
      protocols: ["chat", "v2"],
      extensions: offer,
      headers: [["Authorization", "Bearer x"], ["Bad\r\nHeader", "x"], ["Upgrade", "h2c"], ["X-Split", "a\r\nb"]]
    }))
    expect(request.target).toBe("/chat?room=1")
    expect(request.headers.get("host")).toBe("example.com:8080")
    expect(request.headers.get("authorization")).toBe("Bearer x")
    // Invalid and reserved headers were dropped: the request cannot be split, the handshake's own stay.
    expect(request.headers.get("upgrade")).toBe("websocket")
    expect(request.headers.has("x-split")).toBe(false)
    const upgrade = Handshake.validateUpgrade(request)
    expect(upgrade).toEqual({
      _tag: "Accept",
      key,
      protocols: ["chat", "v2"],
      extensions: [{ name: "permessage-deflate", params: [["client_max_window_bits", undefined]] }]
    })
  })

  it("makeKey gives a key validateUpgrade accepts for any 16 bytes", () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (random) => {
      const k = ClientHandshake.makeKey(random)
      const request = parseRequest(ClientHandshake.request({ host: "h", target: "/", key: k }))
      expect(Handshake.validateUpgrade(request)).toMatchObject({ _tag: "Accept", key: k })
    }))
  })
})

describe("feedResponse", () => {
  it("reads the same response and the same rest however the bytes are chopped (1-byte chops included)", () => {
    const head = good(["Sec-WebSocket-Protocol: chat", "X-Many: a", "X-Many: b"])
    const whole = Buffer.concat([bytes(head), Uint8Array.of(0x81, 0x02, 0x68, 0x69)])
    fc.assert(fc.property(Testing.chopSizes, (sizes) => {
      let state = ClientHandshake.initialResponse(16 * 1024)
      const chunks = Testing.chop(whole, sizes)
      for (let i = 0; i < chunks.length; i++) {
        const result = ClientHandshake.feedResponse(state, chunks[i]!)
        if (result._tag === "Incomplete") {
          state = result.state
          continue
        }
        expect(result._tag).toBe("Complete")
        if (result._tag !== "Complete") return
        const rest = Buffer.concat([result.rest, ...chunks.slice(i + 1)])
        expect([...rest]).toEqual([0x81, 0x02, 0x68, 0x69])
        expect(result.response.status).toBe(101)
        expect(result.response.headers.get("x-many")).toBe("a, b")
        return
      }
      throw new Error("never complete")
    }))
  })

  it("refuses a head larger than maxHeadSize, bare LFs, folded lines and a bad status line", () => {
    const feed = (s: string, max = 16 * 1024) => ClientHandshake.feedResponse(ClientHandshake.initialResponse(max), bytes(s))._tag
    expect(feed(good([`X-Big: ${"a".repeat(400)}`]), 256)).toBe("TooLarge")
    expect(feed("x".repeat(300), 256)).toBe("TooLarge")
    expect(feed("HTTP/1.1 101 OK\nUpgrade: websocket\r\n\r\n")).toBe("Malformed")
    expect(feed("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n folded\r\n\r\n")).toBe("Malformed")
    expect(feed("HTTP/1.1 1010 OK\r\n\r\n")).toBe("Malformed")
    expect(feed("HTTP/1.1 101 OK\r\nBad Name: x\r\n\r\n")).toBe("Malformed")
  })
})

describe("validateResponse: each part of the 101 is checked (RFC 6455 §4.1)", () => {
  it("accepts a correct 101, with the chosen subprotocol and permessage-deflate's parameters", () => {
    expect(validate(good(["Sec-WebSocket-Protocol: v2", "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits=10"]))).toEqual({
      _tag: "Accepted",
      protocol: "v2",
      extensions: "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
      deflate: { serverNoContextTakeover: true, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 10 }
    })
    // Case-insensitive Upgrade and Connection, Connection as a list (RFC 9110 §7.6.1).
    const relaxed = [`HTTP/1.1 101 Switching Protocols`, "Upgrade: WebSocket", "Connection: keep-alive, UPGRADE", `Sec-WebSocket-Accept: ${Handshake.acceptKey(key)}`, "", ""].join("\r\n")
    expect(validate(relaxed)).toMatchObject({ _tag: "Accepted", protocol: undefined, deflate: undefined })
  })

  const failures: ReadonlyArray<readonly [string, string, string, ClientHandshake.Expectation?]> = [
    ["a 403", good([], "HTTP/1.1 403 Forbidden"), "status 403 Forbidden, not 101"],
    ["a 200", good([], "HTTP/1.1 200 OK"), "status 200 OK, not 101"],
    ["HTTP/1.0", good([], "HTTP/1.0 101 Switching Protocols"), "HTTP/1.0 response, not HTTP/1.1"],
    ["no Upgrade", good().replace("Upgrade: websocket\r\n", ""), "missing Upgrade header"],
    ["Upgrade: h2c", good().replace("Upgrade: websocket", "Upgrade: h2c"), "Upgrade is \"h2c\", not websocket"],
    ["no Connection", good().replace("Connection: Upgrade\r\n", ""), "missing Connection header"],
    ["Connection: close", good().replace("Connection: Upgrade", "Connection: close"), "Connection is \"close\", not Upgrade"],
    ["no Accept", good().replace(/Sec-WebSocket-Accept: .*\r\n/, ""), "missing Sec-WebSocket-Accept"],
    ["a wrong Accept", good().replace(/Sec-WebSocket-Accept: .*\r\n/, `Sec-WebSocket-Accept: ${Handshake.acceptKey("x")}\r\n`), "wrong Sec-WebSocket-Accept"],
    ["two Accepts", good([`Sec-WebSocket-Accept: ${Handshake.acceptKey(key)}`]), "wrong Sec-WebSocket-Accept"],
    ["a subprotocol not offered", good(["Sec-WebSocket-Protocol: other"]), "subprotocol \"other\" was not offered"],
    ["a subprotocol when none was offered", good(["Sec-WebSocket-Protocol: chat"]), "subprotocol \"chat\" was not offered", expected(true, [])],
    ["two subprotocols", good(["Sec-WebSocket-Protocol: chat, v2"]), "invalid Sec-WebSocket-Protocol \"chat, v2\""],
    ["an extension not offered", good(["Sec-WebSocket-Extensions: x-webkit-deflate-frame"]), "extension \"x-webkit-deflate-frame\" was not offered"],
    ["permessage-deflate when not offered", good(["Sec-WebSocket-Extensions: permessage-deflate"]), "extension \"permessage-deflate\" was not offered", expected(false)],
    ["permessage-deflate twice", good(["Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate"]), "permessage-deflate accepted twice"],
    ["a malformed extension header", good(["Sec-WebSocket-Extensions: permessage-deflate;;"]), "invalid Sec-WebSocket-Extensions \"permessage-deflate;;\""],
    ["an unknown deflate parameter", good(["Sec-WebSocket-Extensions: permessage-deflate; x=1"]), "unknown permessage-deflate parameter x=1"],
    ["a repeated deflate parameter", good(["Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_no_context_takeover"]), "permessage-deflate parameter server_no_context_takeover repeated"],
    ["server_max_window_bits=16", good(["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16"]), "invalid permessage-deflate parameter server_max_window_bits=16"],
    ["server_max_window_bits without a value", good(["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits"]), "invalid permessage-deflate parameter server_max_window_bits"],
    ["client_max_window_bits without a value", good(["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"]), "invalid permessage-deflate parameter client_max_window_bits"],
    ["client_max_window_bits=08", good(["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=08"]), "invalid permessage-deflate parameter client_max_window_bits=08"],
    ["a value on a no-value parameter", good(["Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover=1"]), "invalid permessage-deflate parameter client_no_context_takeover=1"]
  ]
  for (const [name, head, what, expectation] of failures) {
    it(`fails ${name}: ${what}`, () => {
      expect(validate(head, expectation)).toMatchObject({ _tag: "Failed", what })
    })
  }

  it("reports a redirect with its Location, for the caller to follow or not", () => {
    expect(validate("HTTP/1.1 307 Temporary Redirect\r\nLocation: ws://other/ws\r\n\r\n")).toEqual({ _tag: "Redirect", status: 307, location: "ws://other/ws" })
  })

  it("fails windows above the ones offered (RFC 7692 §7.1.2)", () => {
    const options = { ...clientDefaults, serverMaxWindowBits: 10, clientMaxWindowBits: 12 }
    const offer = { key, protocols: [], deflate: options }
    expect(validate(good(["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=11"]), offer)).toMatchObject({
      what: "permessage-deflate server_max_window_bits=11 is above the server_max_window_bits=10 offered"
    })
    expect(validate(good(["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9; client_max_window_bits=13"]), offer)).toMatchObject({
      what: "permessage-deflate client_max_window_bits=13 is above the client_max_window_bits=12 offered"
    })
    expect(validate(good(["Sec-WebSocket-Extensions: permessage-deflate"]), offer)).toMatchObject({
      what: "server_max_window_bits=10 was offered and not answered"
    })
  })
})

describe("permessage-deflate between our client and our server", () => {
  const policy = fc.record({
    enabled: fc.constant(true),
    serverMaxWindowBits: fc.integer({ min: 8, max: 15 }),
    clientMaxWindowBits: fc.integer({ min: 8, max: 15 }),
    serverNoContextTakeover: fc.boolean(),
    clientNoContextTakeover: fc.boolean(),
    threshold: fc.constant(0),
    level: fc.constant(1),
    memLevel: fc.constant(8),
    syncLimit: fc.constant(64 * 1024)
  })

  it("whatever the server's negotiation answers to our offer, the client accepts it, with the server's parameters", () => {
    fc.assert(fc.property(policy, policy, (client, server) => {
      const offers = Handshake.parseExtensions(ClientHandshake.deflateOffer(client))!
      const negotiation = PerMessageDeflate.negotiate(offers, server)
      if (negotiation._tag !== "Accepted") {
        // Declined only when the client asks for a smaller server window than the server allows... never:
        // the server may always go smaller; so a decline is a bug.
        throw new Error(`declined: ${JSON.stringify({ client, server })}`)
      }
      const response = Handshake.parseExtensions(negotiation.header)!
      const agreed = ClientHandshake.acceptDeflate(client, response[0]!)
      expect(agreed).toEqual({
        ...negotiation.params,
        // The client keeps its own promise not to use context takeover even if the server did not echo it.
        clientNoContextTakeover: negotiation.params.clientNoContextTakeover || client.clientNoContextTakeover
      })
      // The client's codec compresses with the client's window and inflates with the server's.
      const codec = ClientHandshake.clientCodecParams(agreed as PerMessageDeflate.Negotiated)
      expect(codec.serverMaxWindowBits).toBe(negotiation.params.clientMaxWindowBits)
      expect(codec.clientMaxWindowBits).toBe(negotiation.params.serverMaxWindowBits)
    }))
  })

  it("the offer names every parameter of the policy (RFC 7692 §7.1)", () => {
    expect(ClientHandshake.deflateOffer(clientDefaults)).toBe("permessage-deflate; client_max_window_bits")
    expect(ClientHandshake.deflateOffer({ ...clientDefaults, serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 9, clientMaxWindowBits: 10 }))
      .toBe("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=10")
    expect(text(ClientHandshake.request({ host: "h", target: "/", key, extensions: "permessage-deflate" }))).toContain("Sec-WebSocket-Extensions: permessage-deflate\r\n")
  })
})
