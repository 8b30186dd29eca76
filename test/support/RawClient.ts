/**
 * A raw WebSocket test client over `node:net`, for testing the server the way
 * Autobahn's fuzzing client does: it writes exactly the bytes a test asks for
 * (masked frames built with `Frame.encode`, or anything else), chopped into
 * pieces of any size, and reads the server's frames with `Frame`'s decoder in
 * the client role (so a masked or malformed server frame is caught).
 *
 * Chopped pieces reach the server as separate reads, by construction: the
 * client sees the server's side of every connection accepted in this process
 * (Node's `net.server.socket` diagnostics channel) and writes the next piece
 * only once that socket's `bytesRead` covers everything sent so far
 * (`untilServerRead`). No sleep stands in for that.
 *
 * Every wait has a timeout, so a test never hangs. `expectClose` checks the
 * whole closing handshake: the Close frame and its code, our reply, nothing
 * after the Close, and the server closing TCP first (RFC 6455 §7.1.1) with a
 * FIN, not a reset.
 *
 * With `transport: "h2"` the same client runs over an HTTP/2 extended
 * CONNECT stream (RFC 8441) of a `node:http2` session (TLS, the test
 * certificate): the handshake is the stream's headers and `:status`, the
 * frames its DATA, the FIN its END_STREAM, a reset its RST_STREAM; the
 * server's reads are counted on its side of the stream (Node's
 * `http2.server.stream.created` diagnostics channel).
 *
 * @since 0.1.0
 */
import { Buffer } from "node:buffer"
import { randomBytes } from "node:crypto"
import * as DiagnosticsChannel from "node:diagnostics_channel"
import type * as NodeHttp2 from "node:http2"
import * as Net from "node:net"
import type { Duplex } from "node:stream"
import * as Frame from "../../src/Frame.ts"
import { chop as chopBytes, concat } from "../../src/testing.ts"
import { text } from "./Bytes.ts"
import * as Http2Session from "./Http2Session.ts"

/**
 * How long any single wait lasts before failing the test.
 *
 * @since 0.1.0
 */
export const defaultTimeout = 2_000

/**
 * The server's HTTP response to the upgrade request.
 *
 * @since 0.1.0
 */
export interface HttpResponse {
  readonly status: number
  readonly statusText: string
  /** Lower-cased names; repeated headers joined with ", ". */
  readonly headers: ReadonlyMap<string, string>
  /** The header lines in order, as sent. */
  readonly rawHeaders: ReadonlyArray<readonly [string, string]>
  /** The head as text (status line and headers). */
  readonly head: string
}

/**
 * @since 0.1.0
 */
export interface ConnectOptions {
  /** Request target. Default `/ws`. */
  readonly path?: string
  /** Request method. Default `GET`. */
  readonly method?: string
  /** Sec-WebSocket-Key. Default: 16 random bytes in base64. */
  readonly key?: string
  /**
   * Headers replacing a default of the same name (case-insensitive) or added
   * after them; `undefined` removes a default (e.g. `{ Host: undefined }`).
   */
  readonly headers?: Readonly<Record<string, string | undefined>>
  /** The whole request, sent as is (every other request option is ignored). */
  readonly request?: string | Uint8Array
  /** Bytes sent in the same write as the request (e.g. a first frame). */
  readonly extra?: Uint8Array
  /** How the request (with `extra`) is chopped. Default: one write. */
  readonly chop?: Chop
  /** Accept RSV1 on data frames from the server (permessage-deflate). */
  readonly allowRsv1?: boolean
  /** Timeout of the handshake. Default `defaultTimeout`. */
  readonly timeout?: number
  /**
   * `"h2"`: an extended CONNECT stream (RFC 8441) over TLS instead of an
   * HTTP/1.1 upgrade over TCP. `method` is then `:method` (default
   * CONNECT) and `headers` may replace the pseudo-headers (`:protocol`,
   * `:scheme`, `:authority`); `key`, `request` and `chop` do not apply.
   */
  readonly transport?: Transport
  /** With `"h2"`: the session to open the stream on (default: a new one, closed with the client). */
  readonly session?: NodeHttp2.ClientHttp2Session
}

/**
 * What a client runs over: TCP with an HTTP/1.1 upgrade, or an HTTP/2 stream.
 *
 * @since 0.2.0
 */
export type Transport = "tcp" | "h2"

/**
 * How a write is cut into pieces: `size` bytes a piece, or a list of sizes
 * cycled as `chop` does. Each piece is written once the server has read the
 * previous one, so that the server reads every piece on its own (see
 * `untilServerRead`); the write resolves once the server has read the last.
 * `delay` adds a pause of that many milliseconds after each piece, for
 * scenarios about time itself (a head trickled against `handshakeTimeout`),
 * never to separate reads.
 *
 * @since 0.1.0
 */
export interface Chop {
  readonly size: number | ReadonlyArray<number>
  readonly delay?: number
}

/**
 * @since 0.1.0
 */
export interface FrameOptions {
  readonly fin?: boolean
  readonly rsv1?: boolean
  readonly rsv2?: boolean
  readonly rsv3?: boolean
  /** The 4-byte mask. Default: random. */
  readonly mask?: Uint8Array
  readonly chop?: Chop
}

/**
 * A complete message as received: the frames' payloads joined.
 *
 * @since 0.1.0
 */
export interface ReceivedMessage {
  readonly text: boolean
  readonly data: Uint8Array
  readonly frames: number
}

/**
 * The server's Close frame, parsed (`code` 1005 for an empty payload).
 *
 * @since 0.1.0
 */
export interface ReceivedClose {
  readonly code: number
  readonly reason: string
}

/**
 * @since 0.1.0
 */
export interface ExpectCloseOptions {
  readonly timeout?: number
  /** Answer the server's Close when we have not sent one. Default true. */
  readonly reply?: boolean
  /** Runs after the server's Close has arrived, before our reply (e.g. to send data the server must ignore). */
  readonly beforeReply?: () => Promise<void>
}

/** Bytes of a string (UTF-8) or the bytes themselves. */
export const bytes = (data: string | Uint8Array): Uint8Array => typeof data === "string" ? text(data) : data

/** A pause that is part of a scenario (`Chop.delay`), never a barrier. */
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * The server's side of every TCP connection accepted in this process, by
 * "server port:client port", from Node's `net.server.socket` diagnostics
 * channel (published before the server's own `connection` listener runs).
 * Only its counters are ever looked at (see `serverBytesRead`); nothing is
 * added to it but a `close` listener that drops it from here.
 */
const accepted = new Map<string, Net.Socket>()
DiagnosticsChannel.subscribe("net.server.socket", (message) => {
  const socket = (message as { readonly socket: Net.Socket }).socket
  const key = `${socket.localPort}:${socket.remotePort}`
  accepted.set(key, socket)
  socket.once("close", () => {
    if (accepted.get(key) === socket) accepted.delete(key)
  })
})

const opcodeName = (opcode: number): string => {
  switch (opcode) {
    case 0x0:
      return "Continuation"
    case 0x1:
      return "Text"
    case 0x2:
      return "Binary"
    case 0x8:
      return "Close"
    case 0x9:
      return "Ping"
    case 0xa:
      return "Pong"
    default:
      return `opcode ${opcode}`
  }
}

const describe = (frame: Frame.Frame): string => {
  const p = frame.payload
  // lenient UTF-8 (not `text`): describing a malformed Close must not throw
  const preview = frame.opcode === Frame.Opcode.Close && p.length >= 2
    ? `code ${(p[0]! << 8) | p[1]!} "${Buffer.from(p.subarray(2)).toString("utf8")}"`
    : `${p.length} bytes`
  return `${opcodeName(frame.opcode)}${frame.fin ? "" : " (fin=0)"} ${preview}`
}

/** Parses a Close payload as a client would (throws on a malformed one). */
const parseClose = (payload: Uint8Array): ReceivedClose => {
  if (payload.length === 0) return { code: 1005, reason: "" }
  if (payload.length === 1) throw new Error("the server sent a Close frame with a 1-byte payload")
  const code = (payload[0]! << 8) | payload[1]!
  let reason: string
  try {
    reason = text(payload.subarray(2))
  } catch {
    throw new Error(`the server sent a Close (${code}) whose reason is not UTF-8`)
  }
  return { code, reason }
}

const parseHead = (head: string): HttpResponse => {
  const lines = head.split("\r\n")
  const statusLine = lines[0] ?? ""
  const match = /^HTTP\/1\.1 (\d{3}) ?(.*)$/.exec(statusLine)
  if (match === null) throw new Error(`malformed status line: ${JSON.stringify(statusLine)}`)
  const headers = new Map<string, string>()
  const rawHeaders: Array<readonly [string, string]> = []
  for (const line of lines.slice(1)) {
    if (line === "") continue
    const colon = line.indexOf(":")
    if (colon <= 0) throw new Error(`malformed header line: ${JSON.stringify(line)}`)
    const name = line.slice(0, colon)
    const value = line.slice(colon + 1).trim()
    rawHeaders.push([name, value])
    const key = name.toLowerCase()
    const previous = headers.get(key)
    headers.set(key, previous === undefined ? value : `${previous}, ${value}`)
  }
  return { status: Number(match[1]), statusText: match[2] ?? "", headers, rawHeaders, head }
}

const isClientStream = (io: Duplex): io is NodeHttp2.ClientHttp2Stream => "session" in io && "rstCode" in io

/** Every client not yet closed, so that a test's `afterEach` can clean up. */
const open = new Set<RawClient>()

/**
 * A raw connection to the server.
 *
 * @since 0.1.0
 */
export class RawClient {
  /**
   * Connects, sends the upgrade request and reads the response head; fails
   * unless it is a 101.
   */
  static async connect(port: number, options: ConnectOptions = {}): Promise<RawClient> {
    const client = await RawClient.request(port, options)
    if (!client.upgraded) {
      client.destroy()
      throw new Error(`expected 101, got ${client.response.status}:\n${client.response.head}\n${Buffer.from(client.body).toString("latin1")}`)
    }
    return client
  }

  /** Connects, sends the upgrade request, and resolves with the response head read (any status). */
  static request(port: number, options: ConnectOptions = {}): Promise<RawClient> {
    if (options.transport === "h2") return RawClient.requestH2(port, options)
    const key = options.key ?? randomBytes(16).toString("base64")
    let request: Uint8Array
    if (options.request !== undefined) {
      request = bytes(options.request)
    } else {
      const defaults: Array<[string, string]> = [
        ["Host", `127.0.0.1:${port}`],
        ["Upgrade", "websocket"],
        ["Connection", "Upgrade"],
        ["Sec-WebSocket-Key", key],
        ["Sec-WebSocket-Version", "13"]
      ]
      const custom = options.headers ?? {}
      const lowered = new Set(Object.keys(custom).map((k) => k.toLowerCase()))
      const lines = defaults.filter(([name]) => !lowered.has(name.toLowerCase()))
      for (const [name, value] of Object.entries(custom)) if (value !== undefined) lines.push([name, value])
      const head = `${options.method ?? "GET"} ${options.path ?? "/ws"} HTTP/1.1\r\n` +
        lines.map(([n, v]) => `${n}: ${v}\r\n`).join("") + "\r\n"
      request = bytes(head)
    }
    const first = options.extra === undefined ? request : concat([request, options.extra])
    // Half-open allowed: after the server's FIN we can still answer its Close, then end.
    const socket = Net.connect({ port, host: "127.0.0.1", noDelay: true, allowHalfOpen: true })
    const client = new RawClient(socket, key, options.allowRsv1 ?? false)
    // A chopped request that the server stops reading fails below, by the timeout.
    client.write(first, options.chop).catch((error: unknown) => client.log.push(`chopped request: ${String(error)}`))
    const ready = () => client.responseHead !== undefined || client.errorSeen !== undefined || client.closed || client.violation !== undefined
    return client.waitFor(ready, options.timeout ?? defaultTimeout, "the HTTP response").then(() => {
      if (client.responseHead !== undefined) return client
      client.destroy()
      throw client.failure(client.violation ?? `no HTTP response: ${client.errorSeen?.message ?? "connection closed"}`)
    })
  }

  /** `request` over an HTTP/2 extended CONNECT stream (RFC 8441 §4). */
  private static async requestH2(port: number, options: ConnectOptions): Promise<RawClient> {
    const own = options.session === undefined
    const session = options.session ?? await Http2Session.connectSession(port, options.timeout)
    const stream = session.request(Http2Session.connectHeaders(port, options), { endStream: false })
    const client = new RawClient(stream, "", options.allowRsv1 ?? false)
    if (own) {
      client.ownSession = session
      stream.once("close", () => session.close())
    }
    stream.once("response", (response) => {
      client.responseHead = Http2Session.responseOf(response)
      client.log.push(`response ${client.responseHead.status}`)
      client.notify()
    })
    if (options.extra !== undefined) client.rawWrite(options.extra)
    const ready = () => client.responseHead !== undefined || client.errorSeen !== undefined || client.closed
    await client.waitFor(ready, options.timeout ?? defaultTimeout, "the HTTP/2 response")
    if (client.responseHead !== undefined) return client
    client.destroy()
    throw client.failure(`no HTTP/2 response: ${client.errorSeen?.message ?? `stream closed (RST_STREAM ${stream.rstCode})`}`)
  }

  /** Destroys every client still open (for `afterEach`). */
  static destroyAll(): void {
    for (const client of open) client.destroy()
  }

  /** The TCP socket, or the HTTP/2 stream (`transport: "h2"`). */
  private readonly io: Duplex

  /** The TCP socket (not with `transport: "h2"`: see `stream`). */
  get socket(): Net.Socket {
    if (!(this.io instanceof Net.Socket)) throw new Error("this client runs over an HTTP/2 stream, not a TCP socket")
    return this.io
  }

  /** The HTTP/2 stream (with `transport: "h2"`). */
  get stream(): NodeHttp2.ClientHttp2Stream {
    const stream = this.h2
    if (stream === undefined) throw new Error("this client runs over TCP, not an HTTP/2 stream")
    return stream
  }
  /** With `transport: "h2"`: the session opened for this client alone. */
  private ownSession: NodeHttp2.ClientHttp2Session | undefined = undefined
  /** The Sec-WebSocket-Key sent (with the default request). */
  readonly key: string
  /** What happened, in order, for failure messages. */
  readonly log: Array<string> = []

  private responseHead: HttpResponse | undefined = undefined
  private headBytes: Uint8Array = new Uint8Array(0)
  private bodyParts: Array<Uint8Array> = []
  private decoder: Frame.DecoderState
  private frames: Array<Frame.Frame> = []
  private violation: string | undefined = undefined
  private errorSeen: Error | undefined = undefined
  private closeReceived = false
  private framesAfterClose = 0
  private sentClose = false
  private ended = false
  private closed = false
  private weEnded = false
  /** True when the server's FIN arrived while our side was still open. */
  private serverClosedFirst = false
  private wake: Array<() => void> = []
  /** Bytes handed to the socket. */
  private sent = 0
  /** The server's side of this connection, once seen. */
  private peer: Net.Socket | undefined = undefined
  /** The server's side of this HTTP/2 stream, once seen. */
  private peerStream: { readonly stream: NodeHttp2.Http2Stream; readonly pushed: number } | undefined = undefined

  private constructor(socket: Duplex, key: string, allowRsv1: boolean) {
    this.io = socket
    this.key = key
    this.decoder = Frame.initialDecoder({ role: "client", maxPayload: 2 ** 32, allowRsv1 })
    open.add(this)
    socket.on("data", (chunk: Buffer) => this.onData(chunk))
    socket.on("end", () => {
      this.log.push("server FIN")
      this.ended = true
      if (!this.weEnded) this.serverClosedFirst = true
      this.notify()
    })
    socket.on("error", (error) => {
      this.log.push(`socket error: ${error.message}`)
      this.errorSeen ??= error
      this.notify()
    })
    socket.on("close", () => {
      this.log.push("socket closed")
      this.closed = true
      open.delete(this)
      this.notify()
    })
  }

  /** The response head (after `request`/`connect`). */
  get response(): HttpResponse {
    if (this.responseHead === undefined) throw new Error("no response yet")
    return this.responseHead
  }

  /** Whether the server accepted the WebSocket (101 over HTTP/1.1, 200 on an HTTP/2 stream, RFC 8441 §5). */
  get upgraded(): boolean {
    return this.responseHead?.status === (this.h2 !== undefined ? 200 : 101)
  }

  /** Whether this client runs over an HTTP/2 stream. */
  private get h2(): NodeHttp2.ClientHttp2Stream | undefined {
    return isClientStream(this.io) ? this.io : undefined
  }

  /** The bytes after the head of a non-101 response received so far. */
  get body(): Uint8Array {
    return concat(this.bodyParts)
  }

  /** True once the server's FIN has arrived. */
  get serverEnded(): boolean {
    return this.ended
  }

  /** Bytes handed to the socket so far (the request included). */
  get bytesSent(): number {
    return this.sent
  }

  /**
   * Bytes of this connection the server's code has read so far: what its
   * socket took from the kernel (`bytesRead`) less what waits in the
   * socket's own buffer (`readableLength`: a paused socket goes on filling
   * it up to its high-water mark without handing anything over). Undefined
   * until the server has accepted the connection.
   */
  serverBytesRead(): number | undefined {
    const h2 = this.h2
    if (h2 !== undefined) {
      if (this.peerStream === undefined) {
        const localPort = h2.session?.socket?.localPort
        if (localPort === undefined) return undefined
        this.peerStream = Http2Session.serverStream(localPort, h2.id)
        if (this.peerStream === undefined) return undefined
      }
      return this.peerStream.pushed - this.peerStream.stream.readableLength
    }
    if (this.peer === undefined) {
      const socket = this.io as Net.Socket
      const { localPort, remotePort } = socket
      if (localPort === undefined || remotePort === undefined) return undefined
      this.peer = accepted.get(`${remotePort}:${localPort}`)
      if (this.peer === undefined) return undefined
    }
    return this.peer.bytesRead - this.peer.readableLength
  }

  /**
   * Resolves once the server has read every byte sent so far, or has given up
   * on the connection (its Close or FIN arrived, or the socket closed). Bytes
   * written after this resolves are in a later read than those before.
   */
  async untilServerRead(timeout = defaultTimeout): Promise<void> {
    const target = this.sent
    await this.waitFor(
      () => (this.serverBytesRead() ?? -1) >= target || this.closeReceived || this.ended || this.closed || this.errorSeen !== undefined,
      timeout,
      () => `the server to read the ${target} bytes sent (it has read ${this.serverBytesRead() ?? "nothing"})`,
      true
    )
  }

  private notify(): void {
    const wake = this.wake
    this.wake = []
    for (const w of wake) w()
  }

  private onData(chunk: Uint8Array): void {
    if (this.h2 !== undefined) {
      if (this.upgraded) this.onFrames(chunk)
      else this.bodyParts.push(chunk)
      this.notify()
      return
    }
    if (this.responseHead === undefined) {
      const all = concat([this.headBytes, chunk])
      const end = Buffer.from(all.buffer, all.byteOffset, all.length).indexOf("\r\n\r\n")
      if (end < 0) {
        this.headBytes = all
        return
      }
      const head = Buffer.from(all.subarray(0, end)).toString("latin1")
      try {
        this.responseHead = parseHead(head)
      } catch (error) {
        this.violation = String(error)
        this.notify()
        return
      }
      this.log.push(`response ${this.responseHead.status}`)
      this.headBytes = new Uint8Array(0)
      const rest = all.subarray(end + 4)
      if (this.responseHead.status !== 101) {
        if (rest.length > 0) this.bodyParts.push(rest)
      } else if (rest.length > 0) {
        this.onFrames(Uint8Array.from(rest))
      }
      this.notify()
      return
    }
    if (this.responseHead.status !== 101) {
      this.bodyParts.push(chunk)
    } else {
      this.onFrames(chunk)
    }
    this.notify()
  }

  private onFrames(chunk: Uint8Array): void {
    if (this.violation !== undefined) return
    const result = Frame.decode(this.decoder, chunk)
    for (const frame of result.frames) {
      this.log.push(`received ${describe(frame)}`)
      if (this.closeReceived) this.framesAfterClose++
      if (frame.opcode === Frame.Opcode.Close) this.closeReceived = true
      this.frames.push(frame)
    }
    if (result._tag === "Violation") {
      this.violation = `the server sent an invalid frame (${result.failure.code}: ${result.failure.reason})`
      this.log.push(this.violation)
    } else {
      this.decoder = result.state
    }
  }

  /**
   * Resolves when `ready()` holds, checked at every event of this client, and
   * with `poll` also at every turn of the event loop (for state outside it,
   * such as the server's `bytesRead`); rejects after `timeout` ms with the log.
   */
  private waitFor(ready: () => boolean, timeout: number, what: string | (() => string), poll = false): Promise<void> {
    return new Promise((resolve, reject) => {
      let immediate: NodeJS.Immediate | undefined = undefined // the next poll
      const check = (): boolean => {
        if (ready()) {
          clearTimeout(timer)
          if (immediate !== undefined) clearImmediate(immediate)
          this.wake = this.wake.filter((w) => w !== listener)
          resolve()
          return true
        }
        return false
      }
      const timer = setTimeout(() => {
        this.wake = this.wake.filter((w) => w !== listener)
        if (immediate !== undefined) clearImmediate(immediate)
        reject(new Error(`timed out after ${timeout} ms waiting for ${typeof what === "string" ? what : what()}; log:\n  ${this.log.join("\n  ")}`))
      }, timeout)
      const listener = (): void => {
        if (!check()) this.wake.push(listener)
      }
      const tick = (): void => {
        immediate = check() ? undefined : setImmediate(tick)
      }
      if (!check()) {
        this.wake.push(listener)
        if (poll) immediate = setImmediate(tick)
      }
    })
  }

  private failure(what: string): Error {
    return new Error(`${what}; log:\n  ${this.log.join("\n  ")}`)
  }

  // ---------------------------------------------------------------------------
  // writing
  // ---------------------------------------------------------------------------

  /**
   * Writes bytes: at once (one write), or chopped as asked, each piece once the
   * server has read the previous one (see `Chop`).
   */
  async write(data: Uint8Array, chop?: Chop): Promise<void> {
    if (chop === undefined) {
      this.rawWrite(data)
      return
    }
    for (const piece of chopBytes(data, typeof chop.size === "number" ? [chop.size] : chop.size)) {
      this.rawWrite(piece)
      await this.untilServerRead()
      if (chop.delay !== undefined && chop.delay > 0) await pause(chop.delay)
    }
  }

  private rawWrite(data: Uint8Array): void {
    if (this.io.destroyed || this.io.writableEnded) {
      this.log.push(`write of ${data.length} bytes skipped: socket closed`)
      return
    }
    this.sent += data.length
    this.io.write(data)
  }

  /**
   * A masked client frame. `opcode` may be any 4-bit value (reserved ones
   * included): the header from `Frame.encode` is patched for it and for
   * RSV2/RSV3.
   */
  frame(opcode: number, payload: string | Uint8Array, options: FrameOptions = {}): Uint8Array {
    const mask = options.mask ?? randomBytes(4)
    const known = opcode === 0x0 || opcode === 0x1 || opcode === 0x2 || opcode === 0x8 || opcode === 0x9 || opcode === 0xa
    const base: Frame.Opcode = known ? (opcode as Frame.Opcode) : Frame.Opcode.Binary
    const [header, masked] = Frame.encode(base, bytes(payload), {
      fin: options.fin ?? true,
      rsv1: options.rsv1 ?? false,
      mask
    })
    const out = concat([header, masked])
    out[0] = (out[0]! & 0xf0) | (opcode & 0x0f)
    if (options.rsv2 === true) out[0] = out[0]! | 0x20
    if (options.rsv3 === true) out[0] = out[0]! | 0x10
    return out
  }

  /**
   * A message cut into frames of `size` bytes (the last one shorter): the
   * first with `opcode`, the others continuations, FIN on the last. An empty
   * message is one empty frame.
   */
  fragments(opcode: number, payload: string | Uint8Array, size: number): Uint8Array {
    const data = bytes(payload)
    const count = Math.max(1, Math.ceil(data.length / size))
    const frames = Array.from({ length: count }, (_, i) =>
      this.frame(i === 0 ? opcode : Frame.Opcode.Continuation, data.subarray(i * size, i * size + size), { fin: i === count - 1 }))
    return concat(frames)
  }

  /** Sends one masked frame (see `frame`). */
  sendFrame(opcode: number, payload: string | Uint8Array, options: FrameOptions = {}): Promise<void> {
    const out = this.frame(opcode, payload, options)
    if (opcode === Frame.Opcode.Close) this.sentClose = true
    this.log.push(`sent ${opcodeName(opcode)}${options.fin === false ? " (fin=0)" : ""} ${bytes(payload).length} bytes`)
    return this.write(out, options.chop)
  }

  sendText(text: string | Uint8Array, options?: FrameOptions): Promise<void> {
    return this.sendFrame(Frame.Opcode.Text, text, options)
  }

  sendBinary(data: Uint8Array, options?: FrameOptions): Promise<void> {
    return this.sendFrame(Frame.Opcode.Binary, data, options)
  }

  ping(payload: string | Uint8Array = "", options?: FrameOptions): Promise<void> {
    return this.sendFrame(Frame.Opcode.Ping, payload, options)
  }

  pong(payload: string | Uint8Array = "", options?: FrameOptions): Promise<void> {
    return this.sendFrame(Frame.Opcode.Pong, payload, options)
  }

  /** Sends a Close frame: with a code (and reason), or empty without one, or the raw payload given. */
  sendClose(code?: number | Uint8Array, reason = "", options?: FrameOptions): Promise<void> {
    const payload = code === undefined
      ? new Uint8Array(0)
      : typeof code === "number"
      ? concat([Uint8Array.of(code >> 8, code & 0xff), text(reason)])
      : code
    return this.sendFrame(Frame.Opcode.Close, payload, options)
  }

  // ---------------------------------------------------------------------------
  // reading
  // ---------------------------------------------------------------------------

  /** The next frame from the server. */
  async nextFrame(timeout = defaultTimeout): Promise<Frame.Frame> {
    await this.waitFor(
      () => this.frames.length > 0 || this.violation !== undefined || this.ended || this.closed,
      timeout,
      "a frame"
    )
    const frame = this.frames.shift()
    if (frame !== undefined) return frame
    if (this.violation !== undefined) throw this.failure(this.violation)
    throw this.failure("the server closed the connection instead of sending a frame")
  }

  /** The next frame, which must have the given opcode. */
  async expectFrame(opcode: number, timeout = defaultTimeout): Promise<Frame.Frame> {
    const frame = await this.nextFrame(timeout)
    if (frame.opcode !== opcode) throw this.failure(`expected ${opcodeName(opcode)}, got ${describe(frame)}`)
    return frame
  }

  /** The next message (a data frame and its continuations; any control frame in between fails). */
  async expectMessage(timeout = defaultTimeout): Promise<ReceivedMessage> {
    const first = await this.nextFrame(timeout)
    if (first.opcode !== Frame.Opcode.Text && first.opcode !== Frame.Opcode.Binary) {
      throw this.failure(`expected a message, got ${describe(first)}`)
    }
    const parts = [Uint8Array.from(first.payload)]
    let frame = first // the last frame of the message so far
    while (!frame.fin) {
      frame = await this.nextFrame(timeout)
      if (frame.opcode !== Frame.Opcode.Continuation) throw this.failure(`expected a continuation, got ${describe(frame)}`)
      parts.push(Uint8Array.from(frame.payload))
    }
    return { text: first.opcode === Frame.Opcode.Text, data: concat(parts), frames: parts.length }
  }

  /** The next message, which must be text; returns it decoded (strict UTF-8). */
  async expectText(timeout = defaultTimeout): Promise<string> {
    const message = await this.expectMessage(timeout)
    if (!message.text) throw this.failure(`expected a text message, got a binary one of ${message.data.length} bytes`)
    try {
      return text(message.data)
    } catch {
      throw this.failure("the server sent a text message that is not UTF-8")
    }
  }

  /** The next message, which must be binary. */
  async expectBinary(timeout = defaultTimeout): Promise<Uint8Array> {
    const message = await this.expectMessage(timeout)
    if (message.text) throw this.failure(`expected a binary message, got a text one of ${message.data.length} bytes`)
    return message.data
  }

  /** The next frame, which must be a Pong; returns its payload. */
  async expectPong(timeout = defaultTimeout): Promise<Uint8Array> {
    const frame = await this.expectFrame(Frame.Opcode.Pong, timeout)
    return Uint8Array.from(frame.payload)
  }

  /**
   * The next frame must be a Close (with `code` when given; 1005 means an
   * empty payload). Then: we answer it with a Close echoing its code unless we
   * sent one already; the server must send nothing after its Close, must end
   * TCP first (its FIN arrives while our side is open) and without a reset;
   * then we end our side and wait for the socket to close.
   */
  async expectClose(code?: number, options: ExpectCloseOptions = {}): Promise<ReceivedClose> {
    const timeout = options.timeout ?? defaultTimeout
    const frame = await this.nextFrame(timeout)
    if (frame.opcode !== Frame.Opcode.Close) throw this.failure(`expected Close${code === undefined ? "" : ` ${code}`}, got ${describe(frame)}`)
    const close = parseClose(frame.payload)
    if (code !== undefined && close.code !== code) {
      throw this.failure(`expected Close ${code}, got Close ${close.code} "${close.reason}"`)
    }
    if (options.beforeReply !== undefined) await options.beforeReply()
    if (!this.sentClose && (options.reply ?? true)) {
      await this.sendClose(close.code === 1005 ? undefined : close.code)
    }
    await this.waitFor(() => this.ended || this.closed || this.errorSeen !== undefined, timeout, "the server to close TCP after its Close")
    this.assertNoError()
    if (!this.ended) throw this.failure("the socket closed without the server's FIN")
    if (!this.serverClosedFirst) throw this.failure("the client closed TCP before the server did")
    this.weEnded = true
    this.io.end()
    await this.waitFor(() => this.closed, timeout, "the socket to close")
    this.assertNoError()
    const h2 = this.h2
    if (h2 !== undefined && h2.rstCode !== 0) throw this.failure(`the stream was reset (RST_STREAM ${h2.rstCode})`)
    if (this.framesAfterClose > 0 || this.frames.length > 0) throw this.failure("the server sent frames after its Close")
    if (this.violation !== undefined) throw this.failure(this.violation)
    return close
  }

  private assertNoError(): void {
    if (this.errorSeen !== undefined) throw this.failure(`the connection was not closed cleanly: ${this.errorSeen.message}`)
  }

  /** Waits for the server to end the connection (for non-101 answers); returns the body. */
  async expectEnd(timeout = defaultTimeout): Promise<Uint8Array> {
    await this.waitFor(() => this.ended || this.closed, timeout, "the server to end the connection")
    return this.body
  }

  /** Ends our side of TCP (a FIN). */
  end(): void {
    this.weEnded = true
    this.io.end()
  }

  destroy(): void {
    this.weEnded = true
    this.io.destroy()
    this.ownSession?.destroy()
    open.delete(this)
  }
}
