/**
 * The RFC 8441 side of an HTTP/2 stream: reading an extended CONNECT's
 * header block into a `Handshake.Request`, checking it (RFC 8441 §4-5, the
 * RFC 6455 §4.2.1 rules that still apply), and answering on the stream
 * (`:status 200`, or an HTTP error). The engine runs the connection over
 * the stream itself, a `Duplex`: its DATA frames are the WebSocket's bytes,
 * its END_STREAM the TCP FIN's equivalent, its RST_STREAM a reset.
 *
 * The checks are pure; the answers write headers and a body on the stream.
 *
 * @internal
 */
import type * as NodeHttp2 from "node:http2"
import type { Duplex } from "node:stream"
import * as Handshake from "../Handshake.ts"
import * as Syntax from "./syntax.ts"

/**
 * An HTTP/2 stream, as much of it as websock uses (`node:http2`'s
 * `ServerHttp2Stream`).
 */
export interface Stream extends Duplex {
  readonly session: NodeHttp2.Http2Session | undefined
  readonly headersSent: boolean
  respond(headers?: NodeHttp2.OutgoingHttpHeaders, options?: NodeHttp2.ServerStreamResponseOptions): void
  close(code?: number, callback?: () => void): void
}

/** Whether the socket the engine was given is an HTTP/2 stream (it answers with `respond`, not bytes). */
export const isStream = (socket: Duplex): socket is Stream =>
  typeof (socket as Partial<Stream>).respond === "function" && "session" in socket

/** Where a stream comes from: its session's TCP (or TLS) socket. */
export const remoteOf = (stream: Stream): { remoteAddress: string | undefined; remotePort: number | undefined } => {
  const socket = stream.session?.socket
  return { remoteAddress: socket?.remoteAddress, remotePort: socket?.remotePort }
}

/**
 * Whether a stream's header block is an extended CONNECT for a WebSocket
 * (RFC 8441 §4: `:method CONNECT` with `:protocol websocket`).
 */
export const isWebSocketConnect = (headers: NodeHttp2.IncomingHttpHeaders): boolean =>
  headers[":method"] === "CONNECT" && headers[":protocol"] === "websocket"

/**
 * The request of an extended CONNECT (RFC 8441 §4), or the reason for a 400.
 * `:path` is the target (RFC 8441 §4 requires it, and `:scheme`, unlike a
 * plain CONNECT), `:authority` the Host (RFC 9113 §8.3.1); the pseudo-headers
 * are not among the request's headers. Names and values are held to the same
 * rules as over HTTP/1.1; repeated fields (Node gives them as arrays) are
 * joined with ", ". `httpVersion` is "2".
 */
export const fromHeaders = (headers: NodeHttp2.IncomingHttpHeaders): Handshake.Request | string => {
  const method = headers[":method"]
  if (method !== "CONNECT") return "not an extended CONNECT"
  if (headers[":protocol"] !== "websocket") return "missing or invalid :protocol"
  const scheme = headers[":scheme"]
  if (scheme === undefined || scheme.length === 0) return "missing :scheme"
  const target = headers[":path"]
  if (target === undefined || target.length === 0) return "missing :path"
  const split = Syntax.splitTarget(target)
  if (split === undefined) return "invalid :path"
  const authority = headers[":authority"]
  const fields = new Map<string, string>()
  for (const [name, raw] of Object.entries(headers)) {
    if (raw === undefined || name.startsWith(":")) continue
    if (!Syntax.isToken(name)) return "invalid header name"
    const values = typeof raw === "string" ? [raw] : raw
    const trimmed = values.map(Syntax.trimOws)
    if (!trimmed.every(Syntax.isFieldValue)) return "invalid character in header value"
    fields.set(name.toLowerCase(), trimmed.join(", "))
  }
  // RFC 9113 §8.3.1: :authority stands for Host (a Host, if sent, must agree).
  const host = authority ?? fields.get("host")
  if (host === undefined || host.length === 0) return "missing :authority"
  if (!Syntax.isFieldValue(host)) return "invalid :authority"
  const sent = fields.get("host")
  if (sent !== undefined && authority !== undefined && sent !== authority) return "Host differs from :authority"
  fields.set("host", host)
  return { method, target, path: split.path, query: new URLSearchParams(split.query), httpVersion: "2", headers: fields }
}

/** The result of `validateConnect`: an `Accept` has no key (RFC 8441 §5: no Sec-WebSocket-Key/Accept). */
export type Connect =
  | {
    readonly _tag: "Accept"
    readonly protocols: ReadonlyArray<string>
    readonly extensions: ReadonlyArray<Handshake.ExtensionOffer>
  }
  | Extract<Handshake.Upgrade, { readonly _tag: "Reject" }>

const refuse = (status: number, reason: string, headers: ReadonlyArray<readonly [string, string]> = []): Connect => ({
  _tag: "Reject",
  status,
  reason,
  headers
})

/**
 * Checks an extended CONNECT's request (from `fromHeaders`) as RFC 8441 §5
 * says: what RFC 6455 §4.2.1 asks of Sec-WebSocket-Version (400 when
 * missing, 426 with `Sec-WebSocket-Version: 13` for another),
 * Sec-WebSocket-Protocol and Sec-WebSocket-Extensions (400 when malformed)
 * still holds; Upgrade, Connection and Sec-WebSocket-Key are not used (the
 * first two are connection-specific, forbidden in HTTP/2: RFC 9113 §8.2.2).
 */
export const validateConnect = (request: Handshake.Request): Connect => {
  const h = request.headers
  if (request.method !== "CONNECT") return refuse(405, "method not allowed")
  const version = h.get("sec-websocket-version")
  if (version === undefined) return refuse(400, "missing Sec-WebSocket-Version", [["Sec-WebSocket-Version", "13"]])
  // RFC 6455 §4.4; no Upgrade header here: RFC 9113 §8.2.2.
  if (version !== "13") return refuse(426, "unsupported Sec-WebSocket-Version", [["Sec-WebSocket-Version", "13"]])
  const protocolHeader = h.get("sec-websocket-protocol")
  const protocols = protocolHeader === undefined ? [] : Handshake.parseProtocols(protocolHeader)
  if (protocols === undefined) return refuse(400, "invalid Sec-WebSocket-Protocol")
  const extensionHeader = h.get("sec-websocket-extensions")
  const extensions = extensionHeader === undefined ? [] : Handshake.parseExtensions(extensionHeader)
  if (extensions === undefined) return refuse(400, "invalid Sec-WebSocket-Extensions")
  return { _tag: "Accept", protocols, extensions }
}

/**
 * Connection-specific headers (RFC 9113 §8.2.2: a message with one is
 * malformed), those the handshake sets itself, and those a 2xx to CONNECT
 * may not have (RFC 9110 §9.3.6).
 */
const RESERVED_200 = new Set([
  "connection",
  "upgrade",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "content-length",
  "sec-websocket-accept",
  "sec-websocket-protocol",
  "sec-websocket-extensions"
])
const RESERVED_ERROR = new Set([
  "connection",
  "upgrade",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "content-type",
  "content-length"
])

/** The caller's valid, unreserved headers as an `OutgoingHttpHeaders` object (lower-cased names; repeats as arrays). */
const outgoing = (
  base: NodeHttp2.OutgoingHttpHeaders,
  headers: ReadonlyArray<readonly [string, string]> | undefined,
  reserved: ReadonlySet<string>
): NodeHttp2.OutgoingHttpHeaders => {
  const out: Record<string, string | number | Array<string>> = { ...base } as Record<string, string | number | Array<string>>
  for (const [name, value] of headers ?? []) {
    const key = name.toLowerCase()
    if (!Handshake.isValidHeader(name, value) || reserved.has(key) || key.startsWith(":")) continue
    const previous = out[key]
    out[key] = previous === undefined ? value : Array.isArray(previous) ? [...previous, value] : [String(previous), value]
  }
  return out
}

/**
 * Accepts the WebSocket: `:status 200` (RFC 8441 §5: a 2xx, no
 * Sec-WebSocket-Accept), with the chosen subprotocol, the negotiated
 * extensions and the route's headers (invalid or reserved ones dropped).
 * The stream stays open: its DATA frames carry the connection.
 */
export const accept = (stream: Stream, options: {
  readonly protocol?: string | undefined
  readonly extensions?: string | undefined
  readonly headers?: ReadonlyArray<readonly [string, string]> | undefined
}): void => {
  const base: NodeHttp2.OutgoingHttpHeaders = { ":status": 200 }
  if (options.protocol !== undefined && Syntax.isToken(options.protocol)) base["sec-websocket-protocol"] = options.protocol
  if (options.extensions !== undefined && options.extensions.length > 0 && Syntax.isFieldValue(options.extensions)) {
    base["sec-websocket-extensions"] = options.extensions
  }
  if (stream.destroyed || stream.headersSent) return
  respondOrDestroy(stream, outgoing(base, options.headers, RESERVED_200))
}

/**
 * `respond`, which throws when the stream can no longer answer (its session
 * closing or gone): the stream is destroyed instead, and the connection or
 * the answer ends with its `close`, never with an exception in a listener.
 */
const respondOrDestroy = (stream: Stream, headers: NodeHttp2.OutgoingHttpHeaders): boolean => {
  try {
    stream.respond(headers)
    return true
  } catch {
    stream.destroy()
    return false
  }
}

/** RST_STREAM's NO_ERROR (RFC 9113 §7). */
const NO_ERROR = 0

/**
 * Refuses on the stream: the status, `content-type: text/plain`, and
 * `reason` plus a newline as the body; then, once the response is written,
 * RST_STREAM with NO_ERROR so that the client stops sending (RFC 9113 §8.1:
 * a complete response before the request has ended). A status outside
 * 100-599 becomes 500.
 */
export const reject = (
  stream: Stream,
  status: number,
  reason: string,
  headers?: ReadonlyArray<readonly [string, string]>
): void => {
  if (stream.destroyed) return
  if (stream.headersSent) {
    stream.close(NO_ERROR)
    return
  }
  const code = Number.isInteger(status) && status >= 200 && status <= 599 ? status : 500
  const body = new TextEncoder().encode(`${reason}\n`)
  const answered = respondOrDestroy(stream, outgoing({
    ":status": code,
    "content-type": "text/plain; charset=utf-8",
    "content-length": body.length
  }, headers, RESERVED_ERROR))
  if (!answered) return
  stream.end(body)
  // Waits for the response's last DATA frame (Node sends RST_STREAM after 'finish' for NO_ERROR).
  stream.close(NO_ERROR)
}
