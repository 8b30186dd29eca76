/**
 * The server side of the WebSocket opening handshake (RFC 6455 §4.2), as pure
 * functions: no Effect runtime, no I/O, and nothing here throws.
 *
 * - `feedHead` reads the HTTP/1.1 request head incrementally (chunks in, until
 *   the blank line) and parses it strictly (RFC 9112 §2-§5).
 * - `validateUpgrade` applies the rules of RFC 6455 §4.2.1 and answers
 *   `Accept` or `Reject` with the HTTP status to send.
 * - `response101` and `responseError` produce the response bytes.
 *
 * Path routing, the user's choice of subprotocol and extension negotiation
 * (permessage-deflate) are left to the caller.
 *
 * @since 0.1.0
 */
import { Buffer } from "node:buffer"
import { hash } from "node:crypto"
import * as Syntax from "./internal/syntax.ts"

const { isFieldValue, isOws, latin1Decode, splitTarget, TCHAR, trimOws } = Syntax

/**
 * A non-empty RFC 9110 token.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isToken = Syntax.isToken

/**
 * The cookies of a `Cookie` header (RFC 6265 §5.4: `name=value` pairs
 * separated by "; "), values unquoted and percent-decoded where they decode;
 * the first of repeated names wins. Pairs without "=" are skipped.
 *
 * @since 0.2.0
 * @category head reader
 */
export const parseCookies = Syntax.parseCookies

// ---------------------------------------------------------------------------
// Incremental head reader
// ---------------------------------------------------------------------------

/** Chunks received so far, newest first (a persistent list keeps `HeadState` immutable and each feed O(chunk)). */
interface ChunkList {
  readonly chunk: Uint8Array
  readonly next: ChunkList | undefined
}

/**
 * The state of the head reader. Opaque and immutable: feeding a state never
 * changes it. It holds references to (not copies of) the chunks fed so far.
 *
 * @since 0.1.0
 * @category head reader
 */
export interface HeadState {
  readonly maxHeadSize: number
  /** chunks fed so far, newest first */
  readonly chunks: ChunkList | undefined
  /** bytes fed (and scanned) so far: each byte is scanned once, so 1-byte chops stay linear */
  readonly scanned: number
  /** offset of the request line, -1 while only leading empty lines have been seen (RFC 9112 §2.2) */
  readonly start: number
  /** the previous byte was a CR awaiting its LF */
  readonly cr: boolean
  /** bytes in the current line so far, CR excluded */
  readonly lineLength: number
}

/**
 * A fresh reader. The head (leading empty lines, request line, header lines and
 * the blank line) may be at most `maxHeadSize` bytes.
 *
 * @since 0.1.0
 * @category head reader
 */
export const initialHead = (maxHeadSize: number): HeadState => ({
  maxHeadSize: Number.isFinite(maxHeadSize) ? Math.max(0, Math.floor(maxHeadSize)) : Number.MAX_SAFE_INTEGER,
  chunks: undefined,
  scanned: 0,
  start: -1,
  cr: false,
  lineLength: 0
})

/**
 * A parsed request head.
 *
 * `query` is a `URLSearchParams` built from the raw query string (a fresh
 * object per request; treat it as read-only). `path` is the pathname exactly
 * as sent (still percent-encoded, not normalized). Header values are Latin-1
 * decoded (one char per byte) with surrounding whitespace removed.
 *
 * @since 0.1.0
 * @category models
 */
export interface Request {
  readonly method: string
  /** raw request-target */
  readonly target: string
  /** pathname of the target: origin-form, or the path of an absolute-form target ("/" when empty) */
  readonly path: string
  readonly query: URLSearchParams
  /** "1.1" for HTTP/1.1 */
  readonly httpVersion: string
  /** lower-cased names; repeated headers joined with ", " */
  readonly headers: ReadonlyMap<string, string>
}

/**
 * @since 0.1.0
 * @category head reader
 */
export type HeadResult =
  | { readonly _tag: "Incomplete"; readonly state: HeadState }
  | { readonly _tag: "TooLarge" }
  | { readonly _tag: "Complete"; readonly request: Request; readonly rest: Uint8Array }
  | { readonly _tag: "Malformed"; readonly reason: string }

const malformed = (reason: string): HeadResult => ({ _tag: "Malformed", reason })
const TOO_LARGE: HeadResult = { _tag: "TooLarge" }

/**
 * Feeds a chunk to the head reader. Every byte is scanned once. Line endings
 * are strict CRLF: a bare LF or a bare CR is `Malformed` as soon as it is seen
 * (RFC 9112 §2.2 allows either rejecting or tolerating a bare LF; rejecting
 * leaves no room for parsers that disagree on where a line ends, and a
 * LF-only client would otherwise just wait for a CRLFCRLF that never comes).
 * Empty lines before the request line are skipped (RFC 9112 §2.2) but count
 * towards the size limit. The result does not depend on how the bytes are
 * chopped.
 *
 * Does not copy or modify `chunk`; on `Complete`, `rest` is a view into the
 * last chunk (the bytes after the blank line, e.g. a first frame), so the
 * caller must hand over ownership of the chunks it feeds.
 *
 * @since 0.1.0
 * @category head reader
 */
export const feedHead = (state: HeadState, chunk: Uint8Array): HeadResult => {
  const base = state.scanned // absolute offset of chunk[0]
  let start = state.start // offset of the request line, -1 while in leading empty lines
  let cr = state.cr // previous byte was CR
  let lineLength = state.lineLength // bytes in the current line, CR excluded
  for (let i = 0; i < chunk.length; i++) {
    // RFC 9112 §2.3: the whole head, terminator included, must fit in maxHeadSize
    if (base + i >= state.maxHeadSize) return TOO_LARGE
    const b = chunk[i]!
    if (b === 0x0d) {
      if (cr) return malformed("bare CR in request head")
      cr = true
    } else if (b === 0x0a) {
      if (!cr) return malformed("bare LF in request head")
      cr = false
      if (lineLength === 0 && start >= 0) {
        const chunks: ChunkList = { chunk: chunk.subarray(0, i + 1), next: state.chunks }
        return complete(chunks, base + i + 1, start, chunk.subarray(i + 1))
      }
      lineLength = 0
    } else {
      if (cr) return malformed("bare CR in request head")
      if (start < 0) start = base + i
      lineLength++
    }
  }
  if (chunk.length === 0) return { _tag: "Incomplete", state }
  return {
    _tag: "Incomplete",
    state: {
      maxHeadSize: state.maxHeadSize,
      chunks: { chunk, next: state.chunks },
      scanned: base + chunk.length,
      start,
      cr,
      lineLength
    }
  }
}

const complete = (chunks: ChunkList, end: number, start: number, rest: Uint8Array): HeadResult => {
  // Concatenate once, at the end: the head is at most maxHeadSize bytes.
  const head = new Uint8Array(end)
  let at = end // fill from the back, newest chunk first
  for (let node: ChunkList | undefined = chunks; node !== undefined; node = node.next) {
    at -= node.chunk.length
    head.set(node.chunk, at)
  }
  // Drop the final CRLF CRLF; no bare CR or LF remain, so "\r\n" splits lines exactly.
  const text = latin1Decode(head.subarray(start, end - 4))
  const parsed = parseHead(text.split("\r\n"))
  if (typeof parsed === "string") return malformed(parsed)
  Object.defineProperty(parsed, Syntax.HEAD_TEXT, { value: text })
  return { _tag: "Complete", request: parsed, rest }
}

const VERSION = /^HTTP\/([0-9])\.([0-9])$/

/** Request-line and header syntax (RFC 9112 §3, §5). Returns the request or a short reason. */
const parseHead = (lines: ReadonlyArray<string>): Request | string => {
  // RFC 9112 §3: method SP request-target SP HTTP-version, single spaces
  const parts = lines[0]!.split(" ")
  if (parts.length !== 3) return "invalid request line"
  const [method, target, version] = parts as [string, string, string]
  if (!isToken(method)) return "invalid method"
  const v = VERSION.exec(version)
  if (v === null) return "invalid HTTP version"
  const split = splitTarget(target)
  if (split === undefined) return "invalid request target"

  const headers = new Map<string, string>()
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!
    // RFC 9112 §5.2: obs-fold is rejected with 400
    if (line.length > 0 && isOws(line.charCodeAt(0))) return "obsolete line folding"
    const colon = line.indexOf(":")
    if (colon < 0) return "header line without colon"
    const name = line.slice(0, colon)
    // RFC 9112 §5.1: no whitespace between field name and colon, MUST be rejected with 400
    if (name.length > 0 && isOws(name.charCodeAt(name.length - 1))) return "whitespace before colon"
    if (!isToken(name)) return "invalid header name"
    const value = trimOws(line.slice(colon + 1))
    if (!isFieldValue(value)) return "invalid character in header value"
    const key = name.toLowerCase()
    const previous = headers.get(key)
    if (previous === undefined) {
      headers.set(key, value)
    } else {
      // RFC 9112 §3.2: more than one Host field line is a 400
      if (key === "host") return "duplicate Host header"
      headers.set(key, `${previous}, ${value}`)
    }
  }
  return {
    method,
    target,
    path: split.path,
    query: new URLSearchParams(split.query),
    httpVersion: `${v[1]}.${v[2]}`,
    headers
  }
}

/**
 * A request another HTTP parser has read (Node's `IncomingMessage` on a
 * `node:http` server's `upgrade` event): the request line's parts and every
 * header field line, duplicates kept (`headersDistinct`). Gives the same
 * `Request` as the head reader, or the reason for a 400: the target and the
 * header names and values are held to the same rules, repeated headers are
 * joined with ", " and a repeated Host is refused.
 *
 * @since 0.2.0
 * @category head reader
 */
export const fromFields = (fields: {
  readonly method: string
  readonly target: string
  readonly httpVersion: string
  readonly headers: Readonly<Record<string, ReadonlyArray<string> | undefined>>
}): Request | string => {
  if (!isToken(fields.method)) return "invalid method"
  if (!/^[0-9]\.[0-9]$/.test(fields.httpVersion)) return "invalid HTTP version"
  const split = splitTarget(fields.target)
  if (split === undefined) return "invalid request target"
  const headers = new Map<string, string>()
  for (const [name, values] of Object.entries(fields.headers)) {
    if (values === undefined || values.length === 0) continue
    if (!isToken(name)) return "invalid header name"
    const trimmed = values.map(trimOws)
    if (!trimmed.every(isFieldValue)) return "invalid character in header value"
    const key = name.toLowerCase()
    if (key === "host" && trimmed.length > 1) return "duplicate Host header"
    const previous = headers.get(key)
    const value = trimmed.join(", ")
    headers.set(key, previous === undefined ? value : `${previous}, ${value}`)
  }
  return {
    method: fields.method,
    target: fields.target,
    path: split.path,
    query: new URLSearchParams(split.query),
    httpVersion: fields.httpVersion,
    headers
  }
}


// ---------------------------------------------------------------------------
// Validation (RFC 6455 §4.2.1)
// ---------------------------------------------------------------------------

/**
 * An extension offered in Sec-WebSocket-Extensions: its name and parameters
 * in order (a parameter without "=" has value `undefined`; quoted values are
 * unquoted).
 *
 * @since 0.1.0
 * @category models
 */
export interface ExtensionOffer {
  readonly name: string
  readonly params: ReadonlyArray<readonly [name: string, value: string | undefined]>
}

/**
 * @since 0.1.0
 * @category models
 */
export type Upgrade =
  | {
    readonly _tag: "Accept"
    readonly key: string
    /** offered subprotocols, in the client's order of preference */
    readonly protocols: ReadonlyArray<string>
    /** offered extensions, in the client's order of preference */
    readonly extensions: ReadonlyArray<ExtensionOffer>
  }
  | {
    readonly _tag: "Reject"
    readonly status: number
    readonly reason: string
    readonly headers: ReadonlyArray<readonly [string, string]>
  }

const reject = (
  status: number,
  reason: string,
  headers: ReadonlyArray<readonly [string, string]> = []
): Upgrade => ({ _tag: "Reject", status, reason, headers })

/** Host value (RFC 9110 §7.2: uri-host [":" port]), checked loosely for characters. */
const HOST = /^[A-Za-z0-9\-._~%!$&'()*+,;=:[\]]+$/

/** Canonical base64 of exactly 16 bytes: 22 chars, the last carrying 2 bits, then "==". */
const KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/

const listHas = (value: string | undefined, token: string): boolean => {
  if (value === undefined) return false
  for (const element of value.split(",")) {
    if (trimOws(element).toLowerCase() === token) return true
  }
  return false
}

/**
 * Checks a parsed request against RFC 6455 §4.2.1. Path routing is the
 * caller's job. Checks, in order:
 *
 * - method GET, else 405 with `Allow: GET`;
 * - HTTP/1.1 or a later 1.x, else 400 for HTTP/1.0 and earlier (RFC 6455 §4.1
 *   requires "at least 1.1": the server does speak HTTP/1.0, the request just
 *   cannot upgrade, so it is a bad request, not 505) and 505 for a major
 *   version above 1 (RFC 9110 §15.6.6: the major version is not supported);
 * - a non-empty, well-formed Host (RFC 9112 §3.2), else 400;
 * - `Upgrade` listing `websocket` and `Connection` listing `upgrade`
 *   (case-insensitive), else 400;
 * - `Sec-WebSocket-Version: 13`, else 426 with `Sec-WebSocket-Version: 13`
 *   (RFC 6455 §4.2.2 and §4.4: a version we do not understand). A missing
 *   version is a request that is not a WebSocket handshake at all (§4.2.1
 *   item 6), so it gets 400, still with `Sec-WebSocket-Version: 13` as a hint;
 * - `Sec-WebSocket-Key` the canonical base64 of 16 bytes (§4.2.1 item 5;
 *   a repeated key joins into an invalid value), else 400;
 * - `Sec-WebSocket-Protocol` (§4.1, 1#token) and `Sec-WebSocket-Extensions`
 *   (§9.1), when present, well-formed, else 400. For extensions the RFC does
 *   not say what a malformed header gets; it is part of a handshake that does
 *   not match §4.2.1, and §4.2.1 answers such a handshake with 400, so a
 *   malformed offer is refused rather than silently ignored;
 * - no request body: `Transfer-Encoding`, or a `Content-Length` other than 0,
 *   gets 400 (bytes after the head are WebSocket frames; a body would be
 *   read as frames).
 *
 * @since 0.1.0
 * @category validation
 */
export const validateUpgrade = (request: Request): Upgrade => {
  const h = request.headers
  if (request.method !== "GET") return reject(405, "method not allowed", [["Allow", "GET"]])
  const v = /^([0-9])\.([0-9])$/.exec(request.httpVersion)
  if (v === null) return reject(400, "invalid HTTP version")
  if (Number(v[1]) > 1) return reject(505, "HTTP version not supported")
  if (Number(v[1]) < 1 || Number(v[2]) < 1) return reject(400, "HTTP/1.1 required")
  const host = h.get("host")
  if (host === undefined || host.length === 0) return reject(400, "missing Host")
  if (!HOST.test(host)) return reject(400, "invalid Host")
  if (!listHas(h.get("upgrade"), "websocket")) return reject(400, "missing or invalid Upgrade")
  if (!listHas(h.get("connection"), "upgrade")) return reject(400, "missing or invalid Connection")
  const version = h.get("sec-websocket-version")
  if (version === undefined) return reject(400, "missing Sec-WebSocket-Version", [["Sec-WebSocket-Version", "13"]])
  if (version !== "13") {
    // RFC 9110 §15.5.22: a 426 names the protocol to upgrade to
    return reject(426, "unsupported Sec-WebSocket-Version", [["Sec-WebSocket-Version", "13"], ["Upgrade", "websocket"]])
  }
  const key = h.get("sec-websocket-key")
  if (key === undefined) return reject(400, "missing Sec-WebSocket-Key")
  if (!KEY.test(key)) return reject(400, "invalid Sec-WebSocket-Key")
  const protocolHeader = h.get("sec-websocket-protocol")
  const protocols = protocolHeader === undefined ? [] : parseProtocols(protocolHeader)
  if (protocols === undefined) return reject(400, "invalid Sec-WebSocket-Protocol")
  const extensionHeader = h.get("sec-websocket-extensions")
  const extensions = extensionHeader === undefined ? [] : parseExtensions(extensionHeader)
  if (extensions === undefined) return reject(400, "invalid Sec-WebSocket-Extensions")
  if (h.has("transfer-encoding")) return reject(400, "request body not allowed")
  const length = h.get("content-length")
  if (length !== undefined && !/^0+$/.test(length)) return reject(400, "request body not allowed")
  return { _tag: "Accept", key, protocols, extensions }
}

/**
 * The GUID of RFC 6455 §1.3.
 *
 * @since 0.1.0
 * @category constants
 */
export const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/**
 * Sec-WebSocket-Accept for a key: base64(sha1(key + GUID)) (RFC 6455 §4.2.2).
 *
 * @since 0.1.0
 * @category validation
 */
export const acceptKey = (key: string): string => hash("sha1", Buffer.from(key + GUID, "latin1"), "base64")

// ---------------------------------------------------------------------------
// Header grammars
// ---------------------------------------------------------------------------

/**
 * Sec-WebSocket-Protocol (RFC 6455 §4.1, §11.3.4): `1#token`, comma
 * separated with optional whitespace. Empty list elements are skipped
 * (RFC 9110 §5.6.1.2) but at least one token is required. `undefined` when
 * malformed.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseProtocols = (header: string): ReadonlyArray<string> | undefined => {
  const out: Array<string> = []
  for (const element of header.split(",")) {
    const token = trimOws(element)
    if (token.length === 0) continue
    if (!isToken(token)) return undefined
    out.push(token)
  }
  return out.length === 0 ? undefined : out
}

/**
 * Sec-WebSocket-Extensions (RFC 6455 §9.1):
 *
 * ```
 * extension-list = 1#extension
 * extension = extension-token *( ";" extension-param )
 * extension-param = token [ "=" (token | quoted-string) ]
 * ```
 *
 * Optional whitespace is accepted around ",", ";" and "=" (the implied LWS of
 * the RFC 2616 notation §9.1 uses). A quoted value is unquoted and must then
 * be a token, as §9.1 requires. Empty list elements are skipped. `undefined`
 * when malformed.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseExtensions = (header: string): ReadonlyArray<ExtensionOffer> | undefined => {
  const n = header.length
  let i = 0 // read position in header
  const skipOws = () => {
    while (i < n && isOws(header.charCodeAt(i))) i++
  }
  const token = (): string => {
    const from = i
    while (i < n) {
      const c = header.charCodeAt(i)
      if (c >= 128 || !TCHAR[c]) break
      i++
    }
    return header.slice(from, i)
  }
  // RFC 9110 §5.6.4 quoted-string, at header[i] === '"'; undefined when unterminated or invalid
  const quoted = (): string | undefined => {
    let out = ""
    i++
    while (i < n) {
      const c = header.charCodeAt(i)
      if (c === 0x22) {
        i++
        return out
      }
      if (c === 0x5c) {
        if (i + 1 >= n) return undefined
        const d = header.charCodeAt(i + 1)
        if ((d < 0x20 && d !== 0x09) || d === 0x7f || d > 0xff) return undefined
        out += header[i + 1]
        i += 2
        continue
      }
      if ((c < 0x20 && c !== 0x09) || c === 0x7f || c > 0xff) return undefined
      out += header[i]
      i++
    }
    return undefined
  }

  const offers: Array<ExtensionOffer> = []
  while (true) {
    skipOws()
    if (i >= n) break
    if (header.charCodeAt(i) === 0x2c) {
      i++ // an empty list element
      continue
    }
    const name = token()
    if (name.length === 0) return undefined
    const params: Array<readonly [string, string | undefined]> = []
    skipOws()
    while (i < n && header.charCodeAt(i) === 0x3b) {
      i++
      skipOws()
      const param = token()
      if (param.length === 0) return undefined
      skipOws()
      let value: string | undefined = undefined
      if (i < n && header.charCodeAt(i) === 0x3d) {
        i++
        skipOws()
        value = i < n && header.charCodeAt(i) === 0x22 ? quoted() : token()
        // RFC 6455 §9.1: the unquoted value MUST conform to the token ABNF
        if (value === undefined || !isToken(value)) return undefined
        skipOws()
      }
      params.push([param, value])
    }
    offers.push({ name, params })
    if (i >= n) break
    if (header.charCodeAt(i) !== 0x2c) return undefined
    i++
  }
  return offers.length === 0 ? undefined : offers
}

/**
 * Serializes extensions in the §9.1 syntax (`name; param; param=value, ...`),
 * e.g. for the Sec-WebSocket-Extensions header of a 101 response. Values are
 * written as tokens, which §9.1 requires them to be.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatExtensions = (extensions: ReadonlyArray<ExtensionOffer>): string =>
  extensions
    .map((e) => [e.name, ...e.params.map(([k, v]) => (v === undefined ? k : `${k}=${v}`))].join("; "))
    .join(", ")

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/**
 * Reason phrases for the statuses this server sends.
 *
 * @since 0.1.0
 * @category responses
 */
export const StatusText: Readonly<Record<number, string>> = {
  101: "Switching Protocols",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported"
}

/**
 * The reason phrase of a status ("Error" for one not in `StatusText`).
 *
 * @since 0.1.0
 * @category responses
 */
export const statusText = (status: number): string => StatusText[status] ?? "Error"

/**
 * A header the caller may put on a response: the name is a token, the value
 * holds only HTAB, SP, visible ASCII and obs-text (no CR, LF, NUL or other
 * control character, nothing above U+00FF), so it cannot split the response.
 *
 * @since 0.1.0
 * @category responses
 */
export const isValidHeader = (name: string, value: string): boolean => isToken(name) && isFieldValue(value)

/** Headers the handshake itself sets; a caller's header with one of these names is dropped. */
const RESERVED_101 = new Set([
  "upgrade",
  "connection",
  "sec-websocket-accept",
  "sec-websocket-protocol",
  "sec-websocket-extensions",
  "content-length", // RFC 9110 §8.6: not in a 1xx response
  "transfer-encoding" // RFC 9112 §6.1: not in a 1xx response
])
const RESERVED_ERROR = new Set(["connection", "content-type", "content-length", "transfer-encoding"])

/**
 * Whether the handshake sets this header of the 101 itself (`Upgrade`,
 * `Connection`, `Sec-WebSocket-Accept`, `-Protocol`, `-Extensions`) or a 1xx
 * may not have it (`Content-Length`, `Transfer-Encoding`): a caller's header
 * of that name is dropped from `response101`.
 *
 * @since 0.2.0
 * @category responses
 */
export const isReserved101Header = (name: string): boolean => RESERVED_101.has(name.toLowerCase())

const userHeaders = (
  headers: ReadonlyArray<readonly [string, string]> | undefined,
  reserved: ReadonlySet<string>
): Array<readonly [string, string]> =>
  (headers ?? []).filter(([name, value]) => isValidHeader(name, value) && !reserved.has(name.toLowerCase()))

const encodeHead = (statusLine: string, headers: ReadonlyArray<readonly [string, string]>, body?: Uint8Array): Uint8Array => {
  let text = `${statusLine}\r\n`
  for (let i = 0; i < headers.length; i++) text += `${headers[i]![0]}: ${headers[i]![1]}\r\n`
  text += "\r\n"
  // Node's latin1 encoder (values are checked to be chars <= 0xFF): no per-char loop
  const out = Buffer.allocUnsafe(text.length + (body?.length ?? 0))
  out.write(text, 0, "latin1")
  if (body !== undefined) out.set(body, text.length)
  return out
}

/**
 * The 101 response (RFC 6455 §4.2.2 item 5). `protocol` must be one the
 * client offered (the caller's choice) and `extensions` the negotiated
 * Sec-WebSocket-Extensions value. Caller headers (e.g. Set-Cookie) follow;
 * any that fail `isValidHeader`, or that name a header the handshake owns
 * (Upgrade, Connection, Sec-WebSocket-*, Content-Length, Transfer-Encoding),
 * are dropped, as are an invalid `protocol` or `extensions`: this function
 * never produces a response that can be split.
 *
 * @since 0.1.0
 * @category responses
 */
export const response101 = (options: {
  readonly accept: string
  readonly protocol?: string | undefined
  readonly extensions?: string | undefined
  readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
}): Uint8Array => {
  const headers: Array<readonly [string, string]> = [["Upgrade", "websocket"], ["Connection", "Upgrade"]]
  if (isFieldValue(options.accept)) headers.push(["Sec-WebSocket-Accept", options.accept])
  if (options.protocol !== undefined && isToken(options.protocol)) {
    headers.push(["Sec-WebSocket-Protocol", options.protocol])
  }
  if (options.extensions !== undefined && options.extensions.length > 0 && isFieldValue(options.extensions)) {
    headers.push(["Sec-WebSocket-Extensions", options.extensions])
  }
  return encodeHead("HTTP/1.1 101 Switching Protocols", [...headers, ...userHeaders(options.headers, RESERVED_101)])
}

/**
 * An error response that closes the connection: `Connection: close`,
 * `Content-Type: text/plain; charset=utf-8`, `Content-Length`, and `reason`
 * plus a newline as the body. An `Upgrade` header among `headers` (as RFC 9110
 * §15.5.22 asks of a 426) adds the `upgrade` connection option. Invalid or
 * reserved caller headers are dropped; a status outside 100-599 becomes 500.
 *
 * @since 0.1.0
 * @category responses
 */
export const responseError = (
  status: number,
  reason: string,
  headers?: ReadonlyArray<readonly [string, string]>
): Uint8Array => {
  const code = Number.isInteger(status) && status >= 100 && status <= 599 ? status : 500
  const body = new TextEncoder().encode(`${reason}\n`)
  const extra = userHeaders(headers, RESERVED_ERROR)
  const upgrade = extra.some(([name]) => name.toLowerCase() === "upgrade")
  return encodeHead(`HTTP/1.1 ${code} ${statusText(code)}`, [
    ["Connection", upgrade ? "Upgrade, close" : "close"],
    ["Content-Type", "text/plain; charset=utf-8"],
    ["Content-Length", String(body.length)],
    ...extra
  ], body)
}
