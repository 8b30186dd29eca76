/**
 * The client side of the WebSocket opening handshake (RFC 6455 §4.1) and of
 * permessage-deflate's negotiation (RFC 7692 §5-§7), as pure functions: no
 * Effect runtime, no I/O, no randomness (the caller brings the key), and
 * nothing here throws.
 *
 * - `request` builds the request bytes; `makeKey` encodes 16 random bytes as
 *   a `Sec-WebSocket-Key`.
 * - `initialResponse` / `feedResponse` read the server's response head
 *   incrementally (chunks in, until the blank line), strictly (RFC 9112).
 * - `validateResponse` checks the answer against what was asked, strictly:
 *   status 101, `Upgrade: websocket`, `Connection: Upgrade`, the
 *   `Sec-WebSocket-Accept` of our key, only a subprotocol we offered, only
 *   the extension we offered, with parameters RFC 7692 allows in a
 *   response. A redirect is reported as such (following it is the caller's
 *   choice); anything else is `Failed` with what was wrong.
 * - `deflateOffer` / `acceptDeflate`: the permessage-deflate offer made from
 *   a `PerMessageDeflate.Options` policy, and the check of the server's
 *   answer into the negotiated parameters; `clientCodecParams` turns them
 *   into the codec's (our compressor is the client's window, our
 *   decompressor the server's).
 *
 * @since 0.2.0
 */
import { Buffer } from "node:buffer"
import * as Handshake from "./Handshake.ts"
import * as Syntax from "./internal/syntax.ts"
import type * as PerMessageDeflate from "./PerMessageDeflate.ts"

const { isFieldValue, isOws, isToken, latin1Decode, latin1Encode, trimOws } = Syntax

// ---------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------

/**
 * A `Sec-WebSocket-Key` (RFC 6455 §4.1 item 7): the base64 of 16 bytes,
 * which the caller draws from a random source.
 *
 * @since 0.2.0
 * @category request
 */
export const makeKey = (random: Uint8Array): string => {
  const bytes = new Uint8Array(16)
  bytes.set(random.subarray(0, 16))
  return Buffer.from(bytes).toString("base64")
}

/** Headers the handshake sets itself: a caller's header with one of these names is refused. */
const RESERVED_REQUEST = new Set([
  "host",
  "upgrade",
  "connection",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-protocol",
  "sec-websocket-extensions",
  "content-length",
  "transfer-encoding"
])

/**
 * Whether the handshake sets this request header itself (Host, Upgrade,
 * Connection, Sec-WebSocket-Key, -Version, -Protocol, -Extensions) or a GET
 * upgrade may not carry it (Content-Length, Transfer-Encoding).
 *
 * @since 0.2.0
 * @category request
 */
export const isReservedRequestHeader = (name: string): boolean => RESERVED_REQUEST.has(name.toLowerCase())

/**
 * @since 0.2.0
 * @category request
 */
export interface RequestOptions {
  /** The Host header value (RFC 9112 §3.2): host, and port when not the scheme's default. */
  readonly host: string
  /** The request target: path and query ("/chat?room=1"). */
  readonly target: string
  /** From `makeKey`. */
  readonly key: string
  /** Offered subprotocols, in order of preference (tokens). */
  readonly protocols?: ReadonlyArray<string> | undefined
  /** The Sec-WebSocket-Extensions offer (e.g. from `deflateOffer`). */
  readonly extensions?: string | undefined
  /** More headers (Origin, Authorization, Cookie, ...); invalid or reserved ones are dropped. */
  readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
}

/**
 * The request bytes (RFC 6455 §4.1): `GET target HTTP/1.1` with Host,
 * `Upgrade: websocket`, `Connection: Upgrade`, the key, version 13, the
 * offered subprotocols and extensions, then the caller's headers (those that
 * fail `Handshake.isValidHeader` or are reserved are dropped, so the request
 * cannot be split).
 *
 * @since 0.2.0
 * @category request
 */
export const request = (options: RequestOptions): Uint8Array => {
  const lines = [
    `GET ${options.target} HTTP/1.1`,
    `Host: ${options.host}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${options.key}`,
    "Sec-WebSocket-Version: 13"
  ]
  const protocols = (options.protocols ?? []).filter(isToken)
  if (protocols.length > 0) lines.push(`Sec-WebSocket-Protocol: ${protocols.join(", ")}`)
  if (options.extensions !== undefined && options.extensions.length > 0 && isFieldValue(options.extensions)) {
    lines.push(`Sec-WebSocket-Extensions: ${options.extensions}`)
  }
  for (const [name, value] of options.headers ?? []) {
    if (Handshake.isValidHeader(name, value) && !isReservedRequestHeader(name)) lines.push(`${name}: ${value}`)
  }
  const text = `${lines.join("\r\n")}\r\n\r\n`
  const out = new Uint8Array(text.length)
  latin1Encode(text, out, 0)
  return out
}

// ---------------------------------------------------------------------------
// The response head
// ---------------------------------------------------------------------------

/**
 * A parsed response head. Header names lower-cased, repeated headers joined
 * with ", ", values Latin-1 decoded and trimmed.
 *
 * @since 0.2.0
 * @category response
 */
export interface Response {
  /** "1.1" for HTTP/1.1 */
  readonly httpVersion: string
  readonly status: number
  readonly statusText: string
  readonly headers: ReadonlyMap<string, string>
}

/**
 * The response reader between chunks: the bytes so far (a head is small:
 * at most `maxHeadSize`). Immutable.
 *
 * @since 0.2.0
 * @category response
 */
export interface ResponseState {
  readonly maxHeadSize: number
  readonly received: Uint8Array
}

/**
 * @since 0.2.0
 * @category response
 */
export type ResponseResult =
  | { readonly _tag: "Incomplete"; readonly state: ResponseState }
  | { readonly _tag: "TooLarge" }
  | { readonly _tag: "Malformed"; readonly reason: string }
  /** `rest`: the bytes after the head (the server's first frames), a view. */
  | { readonly _tag: "Complete"; readonly response: Response; readonly rest: Uint8Array }

/**
 * @since 0.2.0
 * @category response
 */
export const initialResponse = (maxHeadSize: number): ResponseState => ({ maxHeadSize, received: new Uint8Array(0) })

/**
 * Feeds a chunk of the server's answer; the result does not depend on how
 * the bytes are chopped. Line endings are strict CRLF (a bare CR or LF is
 * `Malformed`), as `Handshake.feedHead` reads requests.
 *
 * @since 0.2.0
 * @category response
 */
export const feedResponse = (state: ResponseState, chunk: Uint8Array): ResponseResult => {
  const before = state.received.length
  const all = new Uint8Array(before + chunk.length)
  all.set(state.received)
  all.set(chunk, before)
  // Resume the search for CRLF CRLF just before the new bytes.
  for (let i = Math.max(0, before - 3); i + 3 < all.length; i++) {
    if (all[i] === 0x0d && all[i + 1] === 0x0a && all[i + 2] === 0x0d && all[i + 3] === 0x0a) {
      if (i + 4 > state.maxHeadSize) return { _tag: "TooLarge" }
      const parsed = parseResponse(latin1Decode(all.subarray(0, i)))
      if (typeof parsed === "string") return { _tag: "Malformed", reason: parsed }
      return { _tag: "Complete", response: parsed, rest: chunk.subarray(i + 4 - before) }
    }
  }
  if (all.length >= state.maxHeadSize) return { _tag: "TooLarge" }
  return { _tag: "Incomplete", state: { maxHeadSize: state.maxHeadSize, received: all } }
}

const STATUS_LINE = /^HTTP\/([0-9])\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?$/

/** Status line and header syntax (RFC 9112 §4, §5). Returns the response or a short reason. */
const parseResponse = (head: string): Response | string => {
  const lines = head.split("\r\n")
  for (const line of lines) if (line.includes("\r") || line.includes("\n")) return "bare CR or LF in response head"
  const status = STATUS_LINE.exec(lines[0]!)
  if (status === null) return "invalid status line"
  const headers = new Map<string, string>()
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!
    if (line.length > 0 && isOws(line.charCodeAt(0))) return "obsolete line folding"
    const colon = line.indexOf(":")
    if (colon < 0) return "header line without colon"
    const name = line.slice(0, colon)
    if (!isToken(name)) return "invalid header name"
    const value = trimOws(line.slice(colon + 1))
    if (!isFieldValue(value)) return "invalid character in header value"
    const key = name.toLowerCase()
    const previous = headers.get(key)
    headers.set(key, previous === undefined ? value : `${previous}, ${value}`)
  }
  return { httpVersion: `${status[1]}.${status[2]}`, status: Number(status[3]), statusText: status[4] ?? "", headers }
}

// ---------------------------------------------------------------------------
// permessage-deflate, the client's side (RFC 7692 §5-§7)
// ---------------------------------------------------------------------------

/**
 * The permessage-deflate offer (RFC 7692 §7.1) for a policy, in the
 * client's terms: `serverNoContextTakeover` asks the server not to use
 * context takeover (§7.1.1.1), `clientNoContextTakeover` announces that we
 * will not (§7.1.1.2), `serverMaxWindowBits` below 15 asks for a smaller
 * server window (§7.1.2.1), and `client_max_window_bits` is always offered
 * (§7.1.2.2: we can compress with any window the server asks for), with
 * `clientMaxWindowBits` as its value when below 15.
 *
 * @since 0.2.0
 * @category permessage-deflate
 */
export const deflateOffer = (options: PerMessageDeflate.Options): string => {
  const params = ["permessage-deflate"]
  if (options.serverNoContextTakeover) params.push("server_no_context_takeover")
  if (options.clientNoContextTakeover) params.push("client_no_context_takeover")
  if (options.serverMaxWindowBits < 15) params.push(`server_max_window_bits=${options.serverMaxWindowBits}`)
  params.push(options.clientMaxWindowBits < 15 ? `client_max_window_bits=${options.clientMaxWindowBits}` : "client_max_window_bits")
  return params.join("; ")
}

/** RFC 7692 §7.1.2: "a decimal integer value without leading zeroes between 8 to 15, inclusive". */
const WINDOW_BITS = /^(?:[89]|1[0-5])$/

/**
 * Checks the server's permessage-deflate response against our offer (made
 * by `deflateOffer` from `options`) and returns what was agreed, in the
 * server's terms (`PerMessageDeflate.Negotiated`), or what is wrong with it.
 * RFC 7692 §7: a response with an unknown parameter, a repeated one, a
 * parameter with a value it must not have (or without one it must have), a
 * window outside 8..15, a `server_max_window_bits` above the one we asked
 * for, or a `client_max_window_bits` we did not offer or above the one we
 * offered, fails the connection.
 *
 * @since 0.2.0
 * @category permessage-deflate
 */
export const acceptDeflate = (
  options: PerMessageDeflate.Options,
  response: Handshake.ExtensionOffer
): PerMessageDeflate.Negotiated | string => {
  let serverNoContextTakeover = false
  let clientNoContextTakeover = options.clientNoContextTakeover
  let serverMaxWindowBits = 15
  let clientMaxWindowBits = options.clientMaxWindowBits
  const seen = new Set<string>()
  for (const [name, value] of response.params) {
    const shown = value === undefined ? name : `${name}=${value}`
    if (seen.has(name)) return `permessage-deflate parameter ${name} repeated` // §7
    seen.add(name)
    switch (name) {
      case "server_no_context_takeover":
      case "client_no_context_takeover":
        // §7.1.1.1, §7.1.1.2: no value.
        if (value !== undefined) return `invalid permessage-deflate parameter ${shown}`
        if (name === "server_no_context_takeover") serverNoContextTakeover = true
        else clientNoContextTakeover = true
        break
      case "server_max_window_bits": {
        // §7.1.2.1: a value, at most the one offered.
        if (value === undefined || !WINDOW_BITS.test(value)) return `invalid permessage-deflate parameter ${shown}`
        const bits = Number(value)
        if (options.serverMaxWindowBits < 15 && bits > options.serverMaxWindowBits) {
          return `permessage-deflate ${shown} is above the server_max_window_bits=${options.serverMaxWindowBits} offered`
        }
        serverMaxWindowBits = bits
        break
      }
      case "client_max_window_bits": {
        // §7.1.2.2: a value, at most the one offered (we always offer the parameter).
        if (value === undefined || !WINDOW_BITS.test(value)) return `invalid permessage-deflate parameter ${shown}`
        const bits = Number(value)
        if (bits > options.clientMaxWindowBits) {
          return `permessage-deflate ${shown} is above the client_max_window_bits=${options.clientMaxWindowBits} offered`
        }
        clientMaxWindowBits = bits
        break
      }
      default:
        return `unknown permessage-deflate parameter ${shown}`
    }
  }
  // §7.1.2.1: a server that accepts server_max_window_bits answers with it.
  if (options.serverMaxWindowBits < 15 && !seen.has("server_max_window_bits")) {
    return `server_max_window_bits=${options.serverMaxWindowBits} was offered and not answered`
  }
  return { serverNoContextTakeover, clientNoContextTakeover, serverMaxWindowBits, clientMaxWindowBits }
}

/**
 * The codec parameters for the client's side of a negotiation
 * (`PerMessageDeflate.make` is written from the server's side: it deflates
 * with the server's window and inflates with the client's): the two
 * directions swapped.
 *
 * @since 0.2.0
 * @category permessage-deflate
 */
export const clientCodecParams = (negotiated: PerMessageDeflate.Negotiated): PerMessageDeflate.Negotiated => ({
  serverNoContextTakeover: negotiated.clientNoContextTakeover,
  clientNoContextTakeover: negotiated.serverNoContextTakeover,
  serverMaxWindowBits: negotiated.clientMaxWindowBits,
  clientMaxWindowBits: negotiated.serverMaxWindowBits
})

// ---------------------------------------------------------------------------
// Validation of the 101 (RFC 6455 §4.1)
// ---------------------------------------------------------------------------

/**
 * What the request asked for, to check the answer against.
 *
 * @since 0.2.0
 * @category validation
 */
export interface Expectation {
  readonly key: string
  readonly protocols: ReadonlyArray<string>
  /** The permessage-deflate policy the offer was made from, when one was. */
  readonly deflate: PerMessageDeflate.Options | undefined
}

/**
 * @since 0.2.0
 * @category validation
 */
export type Validation =
  | {
    readonly _tag: "Accepted"
    /** The subprotocol the server chose (one we offered), if any. */
    readonly protocol: string | undefined
    /** The Sec-WebSocket-Extensions of the response, if any. */
    readonly extensions: string | undefined
    /** What permessage-deflate negotiated, in the server's terms, when the server accepted it. */
    readonly deflate: PerMessageDeflate.Negotiated | undefined
  }
  | { readonly _tag: "Redirect"; readonly status: number; readonly location: string | undefined }
  | { readonly _tag: "Failed"; readonly what: string; readonly status: number }

/** Statuses a client may follow to another URL (RFC 9110 §15.4). */
const REDIRECTS = new Set([301, 302, 303, 307, 308])

const listHas = (value: string | undefined, token: string): boolean =>
  value !== undefined && value.split(",").some((element) => trimOws(element).toLowerCase() === token)

/**
 * Checks the server's answer (RFC 6455 §4.1, "the client MUST validate the
 * server's response as follows"), in order: status 101 (a 3xx is a
 * `Redirect`; anything else fails with its status), HTTP/1.1 or a later 1.x,
 * `Upgrade` exactly `websocket` and `Connection` listing `upgrade`
 * (case-insensitive), `Sec-WebSocket-Accept` the accept value of our key,
 * extensions only those offered (each once, with valid parameters), and a
 * subprotocol, when there is one, that we offered.
 *
 * @since 0.2.0
 * @category validation
 */
export const validateResponse = (response: Response, expected: Expectation): Validation => {
  const status = response.status
  const failed = (what: string): Validation => ({ _tag: "Failed", what, status })
  const h = response.headers
  if (status !== 101) {
    if (REDIRECTS.has(status)) return { _tag: "Redirect", status, location: h.get("location") }
    return failed(`status ${status}${response.statusText === "" ? "" : ` ${response.statusText}`}, not 101`)
  }
  const v = /^1\.([1-9])$/.exec(response.httpVersion)
  if (v === null) return failed(`HTTP/${response.httpVersion} response, not HTTP/1.1`)
  // §4.1 items 2-3 of the response checks.
  const upgrade = h.get("upgrade")
  if (upgrade === undefined) return failed("missing Upgrade header")
  if (upgrade.toLowerCase() !== "websocket") return failed(`Upgrade is ${JSON.stringify(upgrade)}, not websocket`)
  const connection = h.get("connection")
  if (connection === undefined) return failed("missing Connection header")
  if (!listHas(connection, "upgrade")) return failed(`Connection is ${JSON.stringify(connection)}, not Upgrade`)
  // §4.1 item 4.
  const accept = h.get("sec-websocket-accept")
  if (accept === undefined) return failed("missing Sec-WebSocket-Accept")
  if (accept !== Handshake.acceptKey(expected.key)) return failed("wrong Sec-WebSocket-Accept")
  // §4.1 item 5: only extensions we offered (RFC 7692 §5-§7 for their parameters).
  const extensionHeader = h.get("sec-websocket-extensions")
  let deflate: PerMessageDeflate.Negotiated | undefined = undefined
  if (extensionHeader !== undefined) {
    const extensions = Handshake.parseExtensions(extensionHeader)
    if (extensions === undefined) return failed(`invalid Sec-WebSocket-Extensions ${JSON.stringify(extensionHeader)}`)
    for (const extension of extensions) {
      if (extension.name !== "permessage-deflate" || expected.deflate === undefined) {
        return failed(`extension ${JSON.stringify(extension.name)} was not offered`)
      }
      if (deflate !== undefined) return failed("permessage-deflate accepted twice")
      const agreed = acceptDeflate(expected.deflate, extension)
      if (typeof agreed === "string") return failed(agreed)
      deflate = agreed
    }
  }
  // §4.1 item 6: only a subprotocol we offered, and only one.
  const protocol = h.get("sec-websocket-protocol")
  if (protocol !== undefined) {
    if (!isToken(protocol)) return failed(`invalid Sec-WebSocket-Protocol ${JSON.stringify(protocol)}`)
    if (!expected.protocols.includes(protocol)) return failed(`subprotocol ${JSON.stringify(protocol)} was not offered`)
  }
  return { _tag: "Accepted", protocol, extensions: extensionHeader, deflate }
}
