/**
 * permessage-deflate (RFC 7692): the server's negotiation and the per-connection
 * compression codec.
 *
 * ## What this module owns
 *
 * - `negotiate`: pure. Walks the client's `Sec-WebSocket-Extensions` offers in
 *   order of preference and accepts the first permessage-deflate offer the
 *   server's policy (`Options`) can honour, producing the negotiated parameters
 *   and the response header value. Offers it cannot honour are *declined*
 *   (RFC 7692 §7): the connection then proceeds uncompressed.
 * - `make`: the effectful part. One `Codec` per connection that negotiated the
 *   extension, owning (at most) one raw-deflate and one raw-inflate zlib context
 *   of its own, both freed with the connection's scope (a direction without
 *   context takeover uses a context shared by the process instead: see Memory).
 *
 * ## Architecture
 *
 * `Frame` and `Connection` stay pure: `Connection.step` hands a complete
 * compressed message out as `DeliverCompressed { text, data }` (RSV1 was set on
 * its first frame) and takes an already deflated payload back in
 * `Send { payload, compressed: true }`. The server's I/O layer sits between the
 * two and this codec: it inflates (then validates UTF-8 for text), or feeds
 * `Fail { code }` from an `InflateError`; and it deflates outgoing messages of at
 * least `threshold` bytes (`shouldCompress`).
 *
 * ## Scheduling: small messages at once, large ones on the thread pool
 *
 * A message of at most `syncLimit` bytes (64 KiB by default; the compressed
 * size when inflating) is inflated or deflated at once, on the event loop,
 * by `inflateSync`/`deflateSync`: one call into zlib on the connection's
 * context, through the native handle behind a node:zlib stream (see
 * `NativeZlib`: an undocumented internal, checked on every stream; without
 * it everything takes the thread-pool path). Below that size a round trip
 * through libuv's thread pool costs far more than the compression itself
 * (measured on Node 24, ~0.9 KiB JSON messages, one deflate and one inflate
 * each: 14 µs at once against 144 µs through the pool with context takeover,
 * 21 against 374 without), and the time the event loop is held stays
 * bounded: at most `syncLimit` bytes of input, and an inflate stops as soon
 * as it passes the message size limit.
 *
 * Larger messages go through node:zlib's asynchronous streams on libuv's
 * thread pool, never the event loop. node:zlib processes one input chunk in
 * slices of at most `chunkSize` (16 KiB) of output: each slice is one
 * thread-pool job, and the next job is queued only when the previous one has
 * come back to the event loop. A large message (or a decompression bomb) is
 * thus a sequence of small jobs that interleave with every other
 * connection's jobs and I/O callbacks instead of one long computation.
 * Within a codec, each direction is serialized by a one-permit semaphore, so
 * messages are inflated (and deflated) in order and never share a zlib
 * stream; `inflateSync`/`deflateSync` decline (`undefined`) while an
 * `inflate`/`deflate` is queued or in flight, so a small message never
 * overtakes a large one (the connection's queues, `internal/compression.ts`,
 * keep that order too).
 *
 * ## Memory
 *
 * A direction without context takeover carries nothing from one message to
 * the next. On the synchronous path such messages all go through one context
 * per process and set of zlib parameters (`shared`), reset after each
 * message: an idle connection holds none. By default the server announces
 * `server_no_context_takeover` to every client (RFC 7692 §7.1.1.1: a server
 * MAY), so its compressor is always the shared one; the client's direction
 * is the client's choice (Chromium and Firefox keep their context), so an
 * inflate context lives as long as the connection when the client takes
 * over, created on its first compressed message. Larger messages without
 * takeover get a context of their own for the message, freed after it.
 *
 * In zlib's terms a deflate context is `2^(windowBits+2) + 2^(memLevel+9)`
 * bytes (256 KiB at 15/8) plus its state, an inflate context `2^windowBits`
 * bytes (32 KiB at 15), allocated on first use and touched only as far as
 * the data went, plus about 7 KiB of state. A context kept for takeover does
 * not keep node:zlib's 16 KiB output buffer while idle (`narrow`). Measured
 * on Node 24 (x64, 2,000 codecs, after one 1 KiB message each way, after GC):
 *
 * | per idle connection (RSS)                                 | codec     |
 * |-----------------------------------------------------------|-----------|
 * | defaults, client keeps its context (Chromium's offer)     | ~23 KiB   |
 * | defaults, client offers client_no_context_takeover        | ~4 KiB    |
 * | `serverNoContextTakeover: false`, windows 15, memLevel 8  | ~231 KiB  |
 * | the same, memLevel 4                                      | ~224 KiB  |
 * | the same, server window 10                                | ~109 KiB  |
 *
 * (Node's zlib, Chromium's, keeps a hash table of at least 2^15 entries
 * whatever the memLevel, and its fast path needs 15-bit windows.) A
 * connection without the extension has no codec at all.
 *
 * The price of no takeover is the ratio on streams of similar messages: on
 * 2,000 small JSON updates (same keys, a small vocabulary, ~0.9 KiB each)
 * level 1 output is 31.6% of the input without takeover and 3.7% with it.
 * `serverNoContextTakeover: false` buys that back for ~230 KiB per
 * connection.
 *
 * ## Decompression bombs
 *
 * `inflate` counts inflated bytes as node:zlib emits them (16 KiB at a time) and
 * gives up as soon as the count exceeds `maxSize`: the context is destroyed, no
 * further thread-pool job is queued, and the caller gets `InflateError` 1009. At
 * most `maxSize + 16 KiB` of output is ever held, whatever the compression
 * ratio.
 *
 * The synchronous path applies the same limit: it copies zlib's output out
 * 64 KiB at a time and stops as soon as more than `maxSize` bytes came out
 * (the context, mid-message, is then dropped or reset), so it too holds at
 * most `maxSize + 64 KiB`, and its time is bounded by `maxSize`.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import { Buffer } from "node:buffer"
import * as Zlib from "node:zlib"
import * as CloseReason from "./CloseReason.ts"

// -----------------------------------------------------------------------------
// Options
// -----------------------------------------------------------------------------

/**
 * The server's compression policy.
 *
 * - `enabled` (default `true`): negotiate permessage-deflate when a client offers it.
 * - `serverMaxWindowBits` (8..15, default 15): the largest LZ77 window the server
 *   compresses with (a client's `server_max_window_bits` can lower it further).
 *   zlib cannot produce a raw deflate stream with an 8-bit window: for 8 the
 *   codec runs zlib with 9, whose matches never reach further back than
 *   `2^9 - 262 = 250` bytes, so the output is valid for a 256-byte window (ws
 *   and Node itself do the same).
 * - `clientMaxWindowBits` (8..15, default 15): the largest window the server lets
 *   the client compress with, i.e. the size of the server's inflate context.
 *   Below 15, an offer without `client_max_window_bits` is declined, since such a
 *   client cannot be told to use a smaller window (RFC 7692 §7.1.2.2).
 * - `serverNoContextTakeover` (default `true`): answer every offer with
 *   `server_no_context_takeover` (RFC 7692 §7.1.1.1: a server MAY, whatever
 *   the offer) and compress each message on its own, on one context shared
 *   by every connection: no compressor memory per idle connection (a 15-bit
 *   one is ~230 KiB), for a worse ratio on streams of similar messages (see
 *   the module header). `false`: a compressor per connection, kept for
 *   takeover unless the client asks for `server_no_context_takeover`. As a
 *   client's option it asks the server for it, and defaults to `false`.
 * - `clientNoContextTakeover` (default `false`): ask the client to do the same.
 * - `threshold` (bytes, default 1024): messages smaller than this go out
 *   uncompressed (`shouldCompress`). Below about a kilobyte deflate rarely saves
 *   more than a few bytes (without context takeover, the default, it saves
 *   less still); 1024 is also ws's default.
 * - `level` (0..9, default 1): zlib's fastest level. On chat/JSON traffic it is
 *   several times faster than the default 6 for output typically only 5-15%
 *   larger; a server compressing on behalf of thousands of connections is bound
 *   by CPU and latency long before bandwidth.
 * - `memLevel` (1..9, default 8): zlib's default; the hash table is
 *   `2^(memLevel+9)` bytes of each deflate context (Node's zlib keeps at
 *   least 64 KiB whatever the value, so lowering it saves little).
 * - `syncLimit` (bytes, default 65536): messages up to this size (the
 *   compressed size when inflating) are compressed at once on the event loop
 *   (see the module header); larger ones on libuv's thread pool, in 16 KiB
 *   slices. 0: always the thread pool (each message then costs a round trip,
 *   ~10 times the zlib work for a 1 KiB message).
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  readonly enabled: boolean
  readonly serverMaxWindowBits: number
  readonly clientMaxWindowBits: number
  readonly serverNoContextTakeover: boolean
  readonly clientNoContextTakeover: boolean
  readonly threshold: number
  readonly level: number
  readonly memLevel: number
  /** Bytes; see above. @since 0.2.0 */
  readonly syncLimit: number
}

/**
 * @since 0.1.0
 * @category options
 */
export const defaults: Options = {
  enabled: true,
  serverMaxWindowBits: 15,
  clientMaxWindowBits: 15,
  serverNoContextTakeover: true,
  clientNoContextTakeover: false,
  threshold: 1024,
  level: 1,
  memLevel: 8,
  syncLimit: 64 * 1024
}

/**
 * The problems with a policy, empty when it is valid, each naming its field.
 * For the server to check once, when it is configured, rather than per
 * handshake.
 *
 * @since 0.1.0
 * @category options
 */
export const validate = (options: Options): ReadonlyArray<{ readonly option: string; readonly problem: string }> => {
  const problems: Array<{ readonly option: string; readonly problem: string }> = []
  const range = (option: keyof Options, min: number, max: number) => {
    const value = options[option]
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      problems.push({ option, problem: `must be an integer in ${min}..${max}, got ${String(value)}` })
    }
  }
  const flag = (option: keyof Options) => {
    if (typeof options[option] !== "boolean") problems.push({ option, problem: `must be a boolean, got ${String(options[option])}` })
  }
  // RFC 7692 §7.1.2.1, §7.1.2.2: window bits are 8 to 15.
  range("serverMaxWindowBits", 8, 15)
  range("clientMaxWindowBits", 8, 15)
  range("level", 0, 9)
  range("memLevel", 1, 9)
  range("threshold", 0, Number.MAX_SAFE_INTEGER)
  range("syncLimit", 0, Number.MAX_SAFE_INTEGER)
  flag("enabled")
  flag("serverNoContextTakeover")
  flag("clientNoContextTakeover")
  return problems
}

/**
 * Whether an outgoing message of `byteLength` bytes should be compressed.
 *
 * @since 0.1.0
 * @category options
 */
export const shouldCompress = (options: Options, byteLength: number): boolean => byteLength >= options.threshold

// -----------------------------------------------------------------------------
// Negotiation (pure)
// -----------------------------------------------------------------------------

/**
 * The extension token (RFC 7692 §6), compared case-sensitively as registered.
 *
 * @since 0.1.0
 * @category negotiation
 */
export const extensionName = "permessage-deflate"

/**
 * One element of the client's `Sec-WebSocket-Extensions`: a name and its
 * parameters in order, a parameter's value `undefined` when it had none (quoted
 * values already unquoted). Structurally `Handshake.ExtensionOffer`.
 *
 * @since 0.1.0
 * @category negotiation
 */
export interface Offer {
  readonly name: string
  readonly params: ReadonlyArray<readonly [string, string | undefined]>
}

/**
 * What both ends agreed on. Window bits are the RFC values (8..15) that the
 * response announced or implied; `make` maps 8 to zlib's 9 for the compressor.
 *
 * @since 0.1.0
 * @category negotiation
 */
export interface Negotiated {
  readonly serverNoContextTakeover: boolean
  readonly clientNoContextTakeover: boolean
  readonly serverMaxWindowBits: number
  readonly clientMaxWindowBits: number
}

/**
 * - `Accepted`: use the extension; `header` is the `Sec-WebSocket-Extensions`
 *   response value.
 * - `Declined`: no acceptable offer (or compression disabled): answer without
 *   the header and proceed uncompressed.
 * - `Rejected`: fail the handshake. RFC 7692 never requires a server to fail
 *   over an offer (§7: it MUST *decline* an offer with unknown, duplicate or
 *   invalid parameters, or one it does not support, and §5 lets the connection
 *   proceed without the extension), so `negotiate` never returns it; the variant
 *   is part of the contract for a policy that would insist on compression.
 *
 * @since 0.1.0
 * @category negotiation
 */
export type Negotiation =
  | { readonly _tag: "Accepted"; readonly params: Negotiated; readonly header: string }
  | { readonly _tag: "Declined" }
  | { readonly _tag: "Rejected"; readonly reason: string }

const declined: Negotiation = { _tag: "Declined" }

/** The parameters of one offer once validated; `true` = present without a value. */
interface OfferParams {
  readonly serverNoContextTakeover: boolean
  readonly clientNoContextTakeover: boolean
  readonly serverMaxWindowBits: number | undefined
  readonly clientMaxWindowBits: number | true | undefined
}

/** RFC 7692 §7.1.2.1/§7.1.2.2: "a decimal integer value without leading zeroes between 8 to 15, inclusive". */
const windowBitsValue = /^(?:[89]|1[0-5])$/

/** Validates one offer's parameters, or `undefined` when RFC 7692 §7 says to decline it. */
const parseOffer = (offer: Offer): OfferParams | undefined => {
  let serverNoContextTakeover = false
  let clientNoContextTakeover = false
  let serverMaxWindowBits: number | undefined
  let clientMaxWindowBits: number | true | undefined
  const seen = new Set<string>()
  for (const [name, value] of offer.params) {
    // RFC 7692 §7: "multiple extension parameters with the same name" -> decline
    if (seen.has(name)) return undefined
    seen.add(name)
    switch (name) {
      case "server_no_context_takeover":
      case "client_no_context_takeover": {
        // RFC 7692 §7.1.1.1/§7.1.1.2: "This parameter has no value."
        if (value !== undefined) return undefined
        if (name === "server_no_context_takeover") serverNoContextTakeover = true
        else clientNoContextTakeover = true
        break
      }
      case "server_max_window_bits": {
        // RFC 7692 §7.1.2.1: always has a value in an offer
        if (value === undefined || !windowBitsValue.test(value)) return undefined
        serverMaxWindowBits = Number(value)
        break
      }
      case "client_max_window_bits": {
        // RFC 7692 §7.1.2.2: no value, or a value, in an offer
        if (value === undefined) clientMaxWindowBits = true
        else if (windowBitsValue.test(value)) clientMaxWindowBits = Number(value)
        else return undefined
        break
      }
      default:
        // RFC 7692 §7: "an extension parameter not defined for use in an offer" -> decline
        return undefined
    }
  }
  return { serverNoContextTakeover, clientNoContextTakeover, serverMaxWindowBits, clientMaxWindowBits }
}

/** The server's answer to one valid offer, or `undefined` if its policy cannot honour it. */
const acceptOffer = (offer: OfferParams, options: Options): Negotiation | undefined => {
  const response: Array<string> = [extensionName]

  // RFC 7692 §7.1.1.1: the server accepts a requested server_no_context_takeover
  // by echoing it, and MAY add it on its own.
  const serverNoContextTakeover = options.serverNoContextTakeover || offer.serverNoContextTakeover
  if (serverNoContextTakeover) response.push("server_no_context_takeover")

  // RFC 7692 §7.1.1.2: the server MAY include client_no_context_takeover; a
  // client offering it promises not to use takeover, and echoing it makes that
  // binding, so the inflate context can be dropped between messages.
  const clientNoContextTakeover = options.clientNoContextTakeover || offer.clientNoContextTakeover
  if (clientNoContextTakeover) response.push("client_no_context_takeover")

  // RFC 7692 §7.1.2.1: accepting an offered server_max_window_bits means
  // answering with the same or a smaller value; without it in the offer the
  // server MAY still announce its (smaller) window.
  const serverMaxWindowBits = Math.min(options.serverMaxWindowBits, offer.serverMaxWindowBits ?? 15)
  if (offer.serverMaxWindowBits !== undefined || serverMaxWindowBits < 15) {
    response.push(`server_max_window_bits=${serverMaxWindowBits}`)
  }

  // RFC 7692 §7.1.2.2: without client_max_window_bits in the offer the response
  // MUST NOT carry it, and the client may use a 32 KiB window: decline when the
  // policy wants a smaller one ("the server doesn't support the offered
  // configuration", §7). With it (with or without a value) the server MAY limit
  // the client's window to a value <= the offered one.
  let clientMaxWindowBits: number
  if (offer.clientMaxWindowBits === undefined) {
    if (options.clientMaxWindowBits < 15) return undefined
    clientMaxWindowBits = 15
  } else {
    clientMaxWindowBits = offer.clientMaxWindowBits === true
      ? options.clientMaxWindowBits
      : Math.min(options.clientMaxWindowBits, offer.clientMaxWindowBits)
    if (clientMaxWindowBits < 15) response.push(`client_max_window_bits=${clientMaxWindowBits}`)
  }

  return {
    _tag: "Accepted",
    params: { serverNoContextTakeover, clientNoContextTakeover, serverMaxWindowBits, clientMaxWindowBits },
    header: response.join("; ")
  }
}

/**
 * Chooses the first acceptable permessage-deflate offer (RFC 7692 §5: "the
 * order of elements is important as it specifies the client's preference").
 * Other extensions are skipped (the server supports no other). Pure.
 *
 * @since 0.1.0
 * @category negotiation
 */
export const negotiate = (offers: ReadonlyArray<Offer>, options: Options): Negotiation => {
  if (!options.enabled) return declined
  for (const offer of offers) {
    if (offer.name !== extensionName) continue
    const params = parseOffer(offer)
    if (params === undefined) continue
    const accepted = acceptOffer(params, options)
    if (accepted !== undefined) return accepted
  }
  return declined
}

// -----------------------------------------------------------------------------
// Codec (effectful)
// -----------------------------------------------------------------------------

/**
 * An inflate failure, mapped by the server to a Close with `code`:
 *
 * - 1009 (Message Too Big): the inflated message exceeds the size limit.
 * - 1007 (Invalid Payload Data): the payload is not a valid DEFLATE stream.
 *   The framing was fine (RSV1 on a first frame, extension negotiated), so this
 *   is not a protocol error (1002) in RFC 6455 §7.4.1's sense; the message's
 *   data is inconsistent with its declared encoding, exactly like invalid UTF-8
 *   in a text message. ws makes the same choice.
 *
 * `reason` is a short text for the Close frame; it never contains payload bytes.
 *
 * @since 0.1.0
 * @category errors
 */
export class InflateError extends Data.TaggedError("InflateError")<{
  readonly failure: CloseReason.InvalidPayload | CloseReason.MessageTooBig
}> {
  /** The close code the connection fails with: 1007 (not valid DEFLATE data) or 1009 (inflates past the limit). */
  get code(): 1007 | 1009 {
    return this.failure.code
  }
  get reason(): string {
    return this.failure.reason
  }
}

/**
 * A connection's compression contexts.
 *
 * - `inflate(data, maxSize)`: the payload of a compressed message (all
 *   fragments, RSV1 on the first); appends `00 00 ff ff` (RFC 7692 §7.2.2) and
 *   fails with 1009 as soon as more than `maxSize` bytes come out. The result
 *   may be a view into zlib's 16 KiB output buffer. An empty payload reads as
 *   the empty message. A block with BFINAL set ends the peer's stream: the
 *   next message gets a fresh context.
 * - `deflate(data)`: compresses one whole message and strips the trailing
 *   `00 00 ff ff` (RFC 7692 §7.2.1). The result may be a view into zlib's output
 *   buffer: write it out, don't keep it for long.
 * - `close`: frees both contexts (also done by the scope). Operations after
 *   `close`, or in flight when it runs, are interrupted.
 *
 * @since 0.1.0
 * @category codec
 */
export interface Codec {
  readonly inflate: (data: Uint8Array, maxSize: number) => Effect.Effect<Uint8Array, InflateError>
  readonly deflate: (data: Uint8Array) => Effect.Effect<Uint8Array>
  readonly close: Effect.Effect<void>
  /**
   * `inflate` done at once on the calling thread, for a payload of at most
   * `syncLimit` bytes: the inflated message (a fresh array, not a view), or
   * its `InflateError`; `undefined` when it must go through `inflate`
   * instead (a larger payload, an `inflate` still queued or in flight, a
   * closed codec, or a Node without the zlib internals this relies on). The
   * context is the same as `inflate`'s, so the caller keeps the order of
   * the two.
   *
   * @since 0.2.0
   */
  readonly inflateSync: (data: Uint8Array, maxSize: number) => Uint8Array | InflateError | undefined
  /**
   * `deflate` done at once, under the same conditions as `inflateSync` (a
   * message of at most `syncLimit` bytes): the deflated payload (a fresh
   * array), an `Error` if zlib failed, or `undefined`: call `deflate`.
   *
   * @since 0.2.0
   */
  readonly deflateSync: (data: Uint8Array) => Uint8Array | Error | undefined
}

/** RFC 7692 §7.2.1/§7.2.2: the tail of a sync flush, stripped by the sender and appended by the receiver. */
const TRAILER = new Uint8Array([0x00, 0x00, 0xff, 0xff])

const empty = new Uint8Array(0)

/** Compressed payloads up to this size are copied to append the trailer (one zlib write instead of two). */
const SMALL_MESSAGE = 16 * 1024

/**
 * One zlib stream with permanent listeners that forward to the operation in
 * progress (`sink`), so nothing is (un)registered per message and nothing is
 * ever emitted to nobody.
 */
interface Engine {
  readonly stream: Zlib.Inflate | Zlib.Deflate
  sink: Sink | undefined
  /** The same context for the synchronous path (`undefined`: this Node does not expose it). */
  readonly sync: SyncZlib | undefined
}

interface Sink {
  readonly data: (chunk: Buffer) => void
  readonly error: (error: Error) => void
}

const makeEngine = (stream: Zlib.Inflate | Zlib.Deflate): Engine => {
  const sync = syncOf(stream)
  const engine: Engine = { stream, sink: undefined, sync }
  stream.on("data", (chunk: Buffer) => engine.sink?.data(chunk))
  // Also keeps a late error (e.g. after close) from becoming an uncaught exception.
  stream.on("error", (error: Error) => engine.sink?.error(error))
  // The synchronous path writes into `scratch`: the stream's own 16 KiB
  // output buffer is only needed by a thread-pool write (see `widen`).
  if (sync !== undefined) narrow(stream)
  return engine
}

/**
 * node:zlib's output buffer, through which the stream's thread-pool writes
 * go, `_chunkSize` bytes at a time (internals again, checked before use).
 * A context that lives as long as its connection (context takeover) would
 * hold 16 KiB there for nothing while idle; the synchronous path needs none:
 * the buffer is swapped for a tiny one (`narrow`) and back (`widen`) around
 * each thread-pool write, when no write is in progress.
 */
interface OutputBuffer {
  _outBuffer: Buffer
  _outOffset: number
  _chunkSize: number
}

/** node:zlib's default chunk size: the output slice of one thread-pool job. */
const CHUNK_SIZE = 16 * 1024

const outputBuffer = (stream: Zlib.Inflate | Zlib.Deflate): OutputBuffer | undefined => {
  const s = stream as unknown as Partial<OutputBuffer>
  return Buffer.isBuffer(s._outBuffer) && typeof s._outOffset === "number" && typeof s._chunkSize === "number"
    ? s as OutputBuffer
    : undefined
}

const narrow = (stream: Zlib.Inflate | Zlib.Deflate): void => {
  const out = outputBuffer(stream)
  if (out === undefined || out._chunkSize !== CHUNK_SIZE) return
  out._chunkSize = Zlib.constants.Z_MIN_CHUNK
  out._outBuffer = Buffer.allocUnsafe(Zlib.constants.Z_MIN_CHUNK)
  out._outOffset = 0
}

const widen = (stream: Zlib.Inflate | Zlib.Deflate): void => {
  const out = outputBuffer(stream)
  if (out === undefined || out._chunkSize === CHUNK_SIZE) return
  out._chunkSize = CHUNK_SIZE
  out._outBuffer = Buffer.allocUnsafe(CHUNK_SIZE)
  out._outOffset = 0
}

// -----------------------------------------------------------------------------
// Synchronous zlib
// -----------------------------------------------------------------------------

/**
 * What the synchronous path needs of a node:zlib stream: its native handle's
 * `writeSync(flush, in, inOff, inLen, out, outOff, outLen)` and the
 * `[availOut, availIn]` it leaves in `_writeState`, i.e. one call of zlib's
 * `inflate`/`deflate` on the stream's own context, on this thread.
 *
 * These are node:zlib internals, not a documented API (node's own
 * `zlib.inflateRawSync` runs on them). The public `_processChunk(chunk, flag)`
 * would be the obvious candidate, but without a callback it closes the
 * stream after the one chunk (it is `inflateRawSync`'s one-shot helper), so
 * it cannot keep a context from one message to the next. Every stream is
 * checked (`syncOf`): where they are missing the codec runs everything on
 * the thread pool, as it always can.
 */
interface NativeZlib {
  readonly writeSync: (
    flush: number,
    input: Uint8Array,
    inOff: number,
    inLen: number,
    output: Uint8Array,
    outOff: number,
    outLen: number
  ) => void
  readonly reset: () => void
  onerror: (message: string, errno: number, code: string) => void
}

/** A stream's native handle for the synchronous path, and the error it reported during the last call. */
interface SyncZlib {
  readonly stream: Zlib.Inflate | Zlib.Deflate
  readonly handle: NativeZlib
  readonly state: Uint32Array
  /** Set by the handle's `onerror` during a `writeSync` (the stream is then destroyed). */
  error: Error | undefined
}

const syncOf = (stream: Zlib.Inflate | Zlib.Deflate): SyncZlib | undefined => {
  const internals = stream as unknown as { readonly _handle?: Partial<NativeZlib> | null; readonly _writeState?: unknown }
  const handle = internals._handle
  const state = internals._writeState
  if (
    handle === undefined || handle === null || typeof handle.writeSync !== "function" ||
    typeof handle.reset !== "function" || typeof handle.onerror !== "function" ||
    !(state instanceof Uint32Array) || state.length < 2
  ) return undefined
  const native = handle as NativeZlib
  const sync: SyncZlib = { stream, handle: native, state, error: undefined }
  // node's own onerror destroys the stream; remember the error first, so the
  // caller can tell a zlib failure from a result.
  const original = native.onerror
  native.onerror = function(this: unknown, message, errno, code) {
    const error = new Error(message) as Error & { code?: string; errno?: number }
    error.code = code
    error.errno = errno
    sync.error = error
    return original.call(this, message, errno, code)
  }
  return sync
}

/**
 * One buffer zlib writes into on the synchronous path, shared by every codec:
 * nothing runs between a `writeSync` and the copy out of it. A message's
 * output is copied out in pieces of this size.
 */
const scratch = new Uint8Array(64 * 1024)

/** Where an inflate's payload and trailer are put together, grown to the largest synchronous payload. */
let joined = new Uint8Array(16 * 1024 + TRAILER.length)

/** The payload with `00 00 ff ff` appended, in `joined` (valid until the next call). */
const withTrailer = (data: Uint8Array): Uint8Array => {
  const length = data.length + TRAILER.length
  if (joined.length < length) joined = new Uint8Array(Math.max(length, joined.length * 2))
  joined.set(data, 0)
  joined.set(TRAILER, data.length)
  return joined.subarray(0, length)
}

/** The result of one message through `runSync`: its output, and whether zlib left input unread (BFINAL). */
type SyncResult =
  | { readonly _tag: "Done"; readonly output: Uint8Array; readonly unread: number }
  | { readonly _tag: "Failed"; readonly error: Error }
  | { readonly _tag: "TooBig" }

/**
 * Feeds `input` to the context with Z_SYNC_FLUSH until zlib stops filling the
 * output, and copies the output out. Gives up as soon as more than `maxSize`
 * bytes came out (the context is then in the middle of the message).
 */
const runSync = (z: SyncZlib, input: Uint8Array, maxSize: number): SyncResult => {
  const flush = Zlib.constants.Z_SYNC_FLUSH
  let inOff = 0 // the input zlib has not read yet starts here
  let inLen = input.length // and is this long
  let total = 0 // bytes out so far
  let first: Uint8Array | undefined // the first piece of output (usually the only one)
  let more: Array<Uint8Array> | undefined // the others
  for (;;) {
    z.error = undefined
    z.handle.writeSync(flush, input, inOff, inLen, scratch, 0, scratch.length)
    if (z.error !== undefined) return { _tag: "Failed", error: z.error }
    const availOut = z.state[0]!
    const availIn = z.state[1]!
    const have = scratch.length - availOut
    if (have > 0) {
      total += have
      if (total > maxSize) return { _tag: "TooBig" }
      const piece = scratch.slice(0, have)
      if (first === undefined) first = piece
      else (more ??= []).push(piece)
    }
    inOff += inLen - availIn
    inLen = availIn
    // A full output buffer may hide more output; anything less means zlib is done.
    if (availOut !== 0) break
  }
  const output = first === undefined ? empty : more === undefined ? first : concat([first, ...more], total)
  return { _tag: "Done", output, unread: inLen }
}

/**
 * Contexts shared by every connection, for the directions without context
 * takeover: such a context carries nothing from one message to the next, and
 * on the synchronous path no two messages use it at once, so one context per
 * set of zlib parameters serves the whole process, reset after each message.
 * An idle connection holds none. A context that failed is replaced.
 */
const shared = new Map<string, SyncZlib>()

/** Set when a zlib stream lacked the internals of the synchronous path: no shared context is tried again. */
let noSharedContexts = false

const sharedContext = (key: string, create: () => Zlib.Inflate | Zlib.Deflate): SyncZlib | undefined => {
  if (noSharedContexts) return undefined
  const existing = shared.get(key)
  if (existing !== undefined && !existing.stream.destroyed) return existing
  const stream = create()
  // a late error event (after a failure destroyed it) goes nowhere
  stream.on("error", () => {})
  const sync = syncOf(stream)
  if (sync === undefined) {
    // The same runtime lacks them for every stream: not one more per message.
    noSharedContexts = true
    stream.close()
    return undefined
  }
  narrow(stream) // only ever used synchronously
  shared.set(key, sync)
  return sync
}

/** After a message on a shared context: reset it for the next one, or forget it if it failed. */
const release = (key: string, z: SyncZlib): void => {
  if (z.stream.destroyed) {
    if (shared.get(key) === z) shared.delete(key)
    return
  }
  z.handle.reset()
}

const concat = (chunks: ReadonlyArray<Uint8Array>, total: number): Uint8Array => {
  if (chunks.length === 1) {
    // a plain Uint8Array view (no copy), not node's Buffer subclass
    const only = chunks[0]!
    return new Uint8Array(only.buffer, only.byteOffset, only.length)
  }
  if (chunks.length === 0) return empty
  const out = new Uint8Array(total)
  let offset = 0 // where the next chunk goes
  for (const chunk of chunks) {
    out.set(chunk, offset)
    offset += chunk.length
  }
  return out
}

const endsWithTrailer = (bytes: Uint8Array): boolean => {
  const n = bytes.length
  return n >= 4 && bytes[n - 4] === 0x00 && bytes[n - 3] === 0x00 && bytes[n - 2] === 0xff && bytes[n - 1] === 0xff
}

/** A zlib error's code (e.g. `Z_DATA_ERROR`) and message, never payload bytes. */
const describe = (error: Error): string => {
  const code = "code" in error && typeof error.code === "string" ? error.code : "zlib error"
  return `invalid compressed data (${code}: ${error.message})`
}

/**
 * Creates the codec for a connection that negotiated `params`. No zlib memory is
 * allocated until the first message; the scope frees whatever was.
 *
 * @since 0.1.0
 * @category codec
 */
export const make = (params: Negotiated, options: Options): Effect.Effect<Codec, never, Scope.Scope> =>
  Effect.acquireRelease(Effect.sync(() => makeUnsafe(params, options)), (codec) => codec.close)

const makeUnsafe = (params: Negotiated, options: Options): Codec => {
  // zlib's raw deflate cannot do 8 bits (see Options); inflating with 9 is a
  // superset of 8 and tolerates peers that rounded up the same way.
  const deflateWindowBits = Math.max(9, params.serverMaxWindowBits)
  const inflateWindowBits = Math.max(9, params.clientMaxWindowBits)
  const flush = Zlib.constants.Z_SYNC_FLUSH

  let closed = false // set once by close; every later operation is interrupted
  let inflater: Engine | undefined // created on the first compressed message received
  let deflater: Engine | undefined // created on the first compressed message sent
  let abortInflate: (() => void) | undefined // interrupts the inflate in flight, for close
  let abortDeflate: (() => void) | undefined // interrupts the deflate in flight, for close
  const inflateLock = Semaphore.makeUnsafe(1)
  const deflateLock = Semaphore.makeUnsafe(1)
  let inflatesQueued = 0 // `inflate`s not yet done: inflateSync waits for them (by declining)
  let deflatesQueued = 0 // `deflate`s not yet done
  const syncLimit = options.syncLimit
  // the shared contexts for the directions without context takeover
  const sharedInflateKey = `inflate/${inflateWindowBits}`
  const sharedDeflateKey = `deflate/${deflateWindowBits}/${options.level}/${options.memLevel}`
  const createInflater = () => Zlib.createInflateRaw({ windowBits: inflateWindowBits, flush })
  const createDeflater = () =>
    Zlib.createDeflateRaw({ windowBits: deflateWindowBits, level: options.level, memLevel: options.memLevel, flush })

  const dropInflater = () => {
    if (inflater !== undefined) {
      inflater.sink = undefined
      inflater.stream.close()
      inflater = undefined
    }
  }
  const dropDeflater = () => {
    if (deflater !== undefined) {
      deflater.sink = undefined
      deflater.stream.close()
      deflater = undefined
    }
  }

  const inflateOnce = (data: Uint8Array, maxSize: number) =>
    Effect.callback<Uint8Array, InflateError>((resume) => {
      if (closed) return resume(Effect.interrupt)
      // An empty payload is not a DEFLATE block (the empty message is 00,
      // RFC 7692 §7.2.3.6), but some peers send it for an empty message: read
      // it as one, without feeding zlib a lone trailer that would leave the
      // context in the middle of a stored block header.
      if (data.length === 0) return resume(Effect.succeed(empty))
      if (inflater === undefined) {
        // node:zlib's flush option: every write is inflated with Z_SYNC_FLUSH,
        // so the write callback fires once all its output has been emitted.
        inflater = makeEngine(createInflater())
      }
      const engine = inflater
      widen(engine.stream)
      const consumedBefore = engine.stream.bytesWritten
      const chunks: Array<Buffer> = []
      let total = 0 // inflated bytes so far, checked against maxSize
      let settled = false // resume has been called (or the operation was abandoned)
      const settle = (effect: Effect.Effect<Uint8Array, InflateError>) => {
        settled = true
        engine.sink = undefined
        if (engine.sync !== undefined) narrow(engine.stream)
        abortInflate = undefined
        resume(effect)
      }
      engine.sink = {
        data: (chunk) => {
          if (settled) return
          total += chunk.length
          if (total > maxSize) {
            // Decompression bomb guard: stop before holding more than maxSize;
            // closing the stream queues no further thread-pool job.
            dropInflater()
            settle(Effect.fail(new InflateError({ failure: CloseReason.messageTooBig(`inflated message exceeds ${maxSize} bytes`) })))
            return
          }
          chunks.push(chunk)
        },
        error: (error) => {
          if (settled) return
          dropInflater()
          settle(Effect.fail(new InflateError({ failure: CloseReason.invalidPayload(describe(error)) })))
        }
      }
      const abort = () => {
        if (settled) return
        dropInflater()
        settle(Effect.interrupt)
      }
      abortInflate = abort
      // One write is one thread-pool round trip: for small messages copying the
      // payload to append the trailer is cheaper than a second write.
      let input = TRAILER // the last (or only) write
      if (data.length <= SMALL_MESSAGE) {
        input = new Uint8Array(data.length + TRAILER.length)
        input.set(data, 0)
        input.set(TRAILER, data.length)
      } else {
        engine.stream.write(data)
      }
      engine.stream.write(input, (error) => {
        if (settled) return
        if (error) {
          dropInflater()
          return settle(Effect.fail(new InflateError({ failure: CloseReason.invalidPayload(describe(error)) })))
        }
        // zlib stops at a block with BFINAL set and leaves the rest of the input
        // (at least our trailer) unconsumed: that stream is over, so the next
        // message needs a fresh context. Without takeover the context is dropped
        // after every message (see the module header).
        const consumed = engine.stream.bytesWritten - consumedBefore
        if (params.clientNoContextTakeover || consumed < data.length + TRAILER.length) dropInflater()
        settle(Effect.succeed(concat(chunks, total)))
      })
      // Interrupted mid-message: the context is in an unknown state, drop it.
      return Effect.sync(abort)
    })

  const deflateOnce = (data: Uint8Array) =>
    Effect.callback<Uint8Array>((resume) => {
      if (closed) return resume(Effect.interrupt)
      // RFC 7692 §7.2.3.6: an empty message is the single octet 00 (an empty
      // stored block, trailer stripped). zlib would emit nothing at all for a
      // sync flush right after another one, and the octet is valid at any
      // byte-aligned point of a stream, so no context is needed.
      if (data.length === 0) return resume(Effect.succeed(Uint8Array.of(0x00)))
      if (deflater === undefined) {
        // One write with Z_SYNC_FLUSH per message: a single thread-pool job
        // for messages whose output fits in one 16 KiB chunk.
        deflater = makeEngine(createDeflater())
      }
      const engine = deflater
      widen(engine.stream)
      const chunks: Array<Buffer> = []
      let total = 0 // deflated bytes so far
      let settled = false // resume has been called (or the operation was abandoned)
      const settle = (effect: Effect.Effect<Uint8Array>) => {
        settled = true
        engine.sink = undefined
        if (engine.sync !== undefined) narrow(engine.stream)
        abortDeflate = undefined
        resume(effect)
      }
      engine.sink = {
        data: (chunk) => {
          chunks.push(chunk)
          total += chunk.length
        },
        error: (error) => {
          if (settled) return
          dropDeflater()
          settle(Effect.die(error))
        }
      }
      const abort = () => {
        if (settled) return
        dropDeflater()
        settle(Effect.interrupt)
      }
      abortDeflate = abort
      engine.stream.write(data, (error) => {
        if (settled) return
        if (error) {
          dropDeflater()
          return settle(Effect.die(error))
        }
        const out = concat(chunks, total)
        if (params.serverNoContextTakeover) dropDeflater()
        // RFC 7692 §7.2.1: remove the 4 octets 00 00 ff ff at the tail end.
        settle(Effect.succeed(endsWithTrailer(out) ? out.subarray(0, out.length - 4) : out))
      })
      return Effect.sync(abort)
    })

  const inflateSync = (data: Uint8Array, maxSize: number): Uint8Array | InflateError | undefined => {
    if (closed || inflatesQueued > 0 || data.length > syncLimit) return undefined
    // as in inflateOnce: the empty payload is the empty message
    if (data.length === 0) return empty
    const isShared = params.clientNoContextTakeover
    let z: SyncZlib | undefined
    if (isShared) z = sharedContext(sharedInflateKey, createInflater)
    else z = (inflater ??= makeEngine(createInflater())).sync
    if (z === undefined) return undefined
    const result = runSync(z, withTrailer(data), maxSize)
    if (isShared) release(sharedInflateKey, z)
    // Failed, too big (stopped mid-message), or ended by BFINAL (zlib left
    // our trailer unread): the next message needs a fresh context.
    else if (result._tag !== "Done" || result.unread > 0) dropInflater()
    switch (result._tag) {
      case "Done":
        return result.output
      case "TooBig":
        return new InflateError({ failure: CloseReason.messageTooBig(`inflated message exceeds ${maxSize} bytes`) })
      case "Failed":
        return new InflateError({ failure: CloseReason.invalidPayload(describe(result.error)) })
    }
  }

  const deflateSync = (data: Uint8Array): Uint8Array | Error | undefined => {
    if (closed || deflatesQueued > 0 || data.length > syncLimit) return undefined
    // as in deflateOnce: RFC 7692 §7.2.3.6, the empty message is 00
    if (data.length === 0) return Uint8Array.of(0x00)
    const isShared = params.serverNoContextTakeover
    let z: SyncZlib | undefined
    if (isShared) z = sharedContext(sharedDeflateKey, createDeflater)
    else z = (deflater ??= makeEngine(createDeflater())).sync
    if (z === undefined) return undefined
    const result = runSync(z, data, Number.MAX_SAFE_INTEGER)
    if (isShared) release(sharedDeflateKey, z)
    else if (result._tag !== "Done") dropDeflater()
    if (result._tag !== "Done") return result._tag === "Failed" ? result.error : new Error("deflate overflowed")
    // RFC 7692 §7.2.1: remove the 4 octets 00 00 ff ff at the tail end.
    const out = result.output
    return endsWithTrailer(out) ? out.subarray(0, out.length - 4) : out
  }

  return {
    inflate: (data, maxSize) =>
      Effect.suspend(() => {
        inflatesQueued++
        return inflateLock.withPermit(inflateOnce(data, maxSize)).pipe(Effect.ensuring(Effect.sync(() => inflatesQueued--)))
      }),
    deflate: (data) =>
      Effect.suspend(() => {
        deflatesQueued++
        return deflateLock.withPermit(deflateOnce(data)).pipe(Effect.ensuring(Effect.sync(() => deflatesQueued--)))
      }),
    inflateSync,
    deflateSync,
    close: Effect.sync(() => {
      closed = true
      abortInflate?.()
      abortDeflate?.()
      dropInflater()
      dropDeflater()
    })
  }
}
