/**
 * fast-check arbitraries for property-testing code that speaks WebSocket
 * (`websock/testing`).
 *
 * The generators websock's own tests use, exported so that you can test your
 * handlers the same way: frames of every opcode with payload lengths around
 * the encoding boundaries (0, 125, 126, 65535, 65536 and larger), messages
 * (text with non-ASCII and astral characters, binary), masking keys, and chop
 * sizes with `chop` to split a byte stream at arbitrary points, as TCP may.
 *
 * ```ts
 * import * as fc from "fast-check"
 * import * as Testing from "websock/testing"
 *
 * fc.assert(fc.property(Testing.frames(), Testing.maskKey, Testing.chopSizes, (frames, mask, sizes) => {
 *   const chunks = Testing.chop(Testing.encodeAll(frames, mask), sizes)
 *   // feed `chunks` to the code under test...
 * }))
 * ```
 *
 * And a conformance fuzzer for any WebSocket server: `fuzz({ url })` plays
 * sessions of valid and hostile frames against it over real TCP and checks
 * what RFC 6455 requires of every server (see `fuzz`); `fuzzRoute` starts
 * a websock route on a free port and fuzzes it.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fc from "fast-check"
import type * as Tls from "node:tls"
import type { ServerError } from "./Errors.ts"
import * as Frame from "./Frame.ts"
import * as Fuzz from "./internal/fuzz.ts"
import type * as Sessions from "./internal/fuzzSession.ts"
import * as Server from "./Server.ts"
import type * as WebSocket from "./WebSocket.ts"

/**
 * Every opcode of RFC 6455 §5.2 (continuation, text, binary, close, ping, pong).
 *
 * @since 0.1.0
 * @category frames
 */
export const opcode: fc.Arbitrary<Frame.Opcode> = fc.constantFrom(
  Frame.Opcode.Continuation,
  Frame.Opcode.Text,
  Frame.Opcode.Binary,
  Frame.Opcode.Close,
  Frame.Opcode.Ping,
  Frame.Opcode.Pong
)

/**
 * Payload lengths clustered where the length encoding changes (§5.2): around
 * 0, 125/126 (7 to 16 bits), 65535/65536 (16 to 64 bits), plus small and
 * larger lengths up to `max` (default 200 KiB).
 *
 * @since 0.1.0
 * @category frames
 */
export const payloadLength = (options?: { readonly max?: number }): fc.Arbitrary<number> => {
  const max = Math.max(0, Math.floor(options?.max ?? 200 * 1024))
  const clusters: Array<fc.WeightedArbitrary<number>> = []
  const cluster = (min: number, top: number, weight: number) => {
    if (min <= max) clusters.push({ arbitrary: fc.integer({ min, max: Math.min(top, max) }), weight })
  }
  cluster(0, 3, 3)
  cluster(0, 200, 2)
  cluster(122, 130, 3)
  cluster(65532, 65540, 1)
  cluster(65541, 200 * 1024, 1)
  return fc.oneof(...clusters)
}

/**
 * Bytes of a given length, filled from a random seed (fast for large
 * payloads, and still shrinkable to short ones through the length).
 *
 * @since 0.1.0
 * @category frames
 */
export const payload = (length: fc.Arbitrary<number> = payloadLength()): fc.Arbitrary<Uint8Array> =>
  fc.tuple(length, fc.integer()).map(([n, seed]) => fill(n, seed))

/** xorshift32 bytes: deterministic, cheap, not all-equal (so masking bugs show). */
const fill = (length: number, seed: number): Uint8Array => {
  const bytes = new Uint8Array(length)
  let x = seed | 1 // generator state, never 0
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    bytes[i] = x & 0xff
  }
  return bytes
}

/**
 * A valid control frame (close, ping or pong): FIN set, payload at most 125
 * bytes (§5.5). Close payloads are arbitrary bytes, not necessarily a valid
 * close code and reason.
 *
 * @since 0.1.0
 * @category frames
 */
export const controlFrame: fc.Arbitrary<Frame.Frame> = fc
  .tuple(fc.constantFrom(Frame.Opcode.Close, Frame.Opcode.Ping, Frame.Opcode.Pong), payload(payloadLength({ max: 125 })))
  .map(([opcode, bytes]) => ({ fin: true, rsv1: false, rsv2: false, rsv3: false, opcode, payload: bytes }))

/**
 * A close code valid on the wire (RFC 6455 §7.4): 1000-1003, 1007-1014,
 * 3000-4999.
 *
 * @since 0.1.0
 * @category frames
 */
export const closeCode: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014),
  fc.integer({ min: 3000, max: 4999 })
)

/**
 * A well-formed Close frame (§5.5.1): empty, or a valid code and a UTF-8
 * reason that fits the 125-byte control frame limit.
 *
 * @since 0.1.0
 * @category frames
 */
export const closeFrame: fc.Arbitrary<Frame.Frame> = fc
  .option(fc.tuple(closeCode, fc.string({ unit: "binary", maxLength: 40 })), { nil: undefined })
  .map((close) => ({
    fin: true,
    rsv1: false,
    rsv2: false,
    rsv3: false,
    opcode: Frame.Opcode.Close,
    payload: close === undefined ? new Uint8Array(0) : Frame.encodeClose(close[0], close[1])
  }))

/**
 * A frame that a decoder must accept, taken alone: any opcode; control frames
 * are final and at most 125 bytes; RSV1 only on text and binary frames and
 * only with `rsv1: true` (permessage-deflate negotiated). Sequences of these
 * need not form valid messages (a continuation may come first).
 *
 * @since 0.1.0
 * @category frames
 */
export const frame = (options?: {
  readonly rsv1?: boolean
  readonly maxLength?: number
}): fc.Arbitrary<Frame.Frame> => {
  const data = fc
    .tuple(
      fc.constantFrom(Frame.Opcode.Continuation, Frame.Opcode.Text, Frame.Opcode.Binary),
      fc.boolean(),
      options?.rsv1 === true ? fc.boolean() : fc.constant(false),
      payload(payloadLength({ max: options?.maxLength }))
    )
    .map(([opcode, fin, rsv1, bytes]): Frame.Frame => ({
      fin,
      rsv1: rsv1 && opcode !== Frame.Opcode.Continuation,
      rsv2: false,
      rsv3: false,
      opcode,
      payload: bytes
    }))
  return fc.oneof({ arbitrary: data, weight: 3 }, { arbitrary: controlFrame, weight: 1 })
}

/**
 * A sequence of frames (see `frame`), at most `maxFrames` (default 6).
 *
 * @since 0.1.0
 * @category frames
 */
export const frames = (options?: {
  readonly rsv1?: boolean
  readonly maxLength?: number
  readonly maxFrames?: number
}): fc.Arbitrary<ReadonlyArray<Frame.Frame>> =>
  fc.array(frame(options), { maxLength: options?.maxFrames ?? 6 })

/**
 * A 4-byte masking key (§5.3).
 *
 * @since 0.1.0
 * @category frames
 */
export const maskKey: fc.Arbitrary<Uint8Array> = fc.uint8Array({ minLength: 4, maxLength: 4 })

/**
 * The wire bytes of `frames`, one after the other; masked with `mask` when
 * given (as a client sends them), unmasked otherwise (as a server does).
 *
 * @since 0.1.0
 * @category frames
 */
export const encodeAll = (frames: ReadonlyArray<Frame.Frame>, mask?: Uint8Array): Uint8Array => {
  const chunks: Array<Uint8Array> = []
  for (const f of frames) {
    const [header, body] = Frame.encode(f.opcode, f.payload, { fin: f.fin, rsv1: f.rsv1, mask })
    chunks.push(header, body)
  }
  return concat(chunks)
}

/**
 * A text message: any Unicode string (ASCII, non-ASCII, astral code points),
 * never a lone surrogate, so it round-trips through UTF-8.
 *
 * @since 0.1.0
 * @category messages
 */
export const textMessage: fc.Arbitrary<string> = fc.oneof(
  fc.string({ maxLength: 64 }),
  fc.string({ unit: "binary", maxLength: 256 }),
  fc.string({ unit: "grapheme", maxLength: 64 })
)

/**
 * A binary message, up to `maxLength` bytes (default 4096).
 *
 * @since 0.1.0
 * @category messages
 */
export const binaryMessage = (options?: { readonly maxLength?: number }): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    payload(fc.integer({ min: 0, max: Math.max(0, options?.maxLength ?? 4096) }))
  )

/**
 * A message as an application sends or receives it: a string for text, bytes
 * for binary.
 *
 * @since 0.1.0
 * @category messages
 */
export const message: fc.Arbitrary<string | Uint8Array> = fc.oneof(textMessage, binaryMessage())

/**
 * Chop sizes for `chop`: one byte at a time, a few small sizes, or a mix of
 * small and large ones (up to 70000 bytes, beyond a 64 KiB TCP read).
 *
 * @since 0.1.0
 * @category chopping
 */
export const chopSizes: fc.Arbitrary<ReadonlyArray<number>> = fc.oneof(
  fc.constant([1]),
  fc.array(fc.integer({ min: 1, max: 16 }), { minLength: 1, maxLength: 8 }),
  fc.array(fc.oneof(fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 70000 })), {
    minLength: 1,
    maxLength: 8
  })
)

/**
 * Splits `bytes` into consecutive chunks whose sizes cycle through `sizes`
 * (non-positive or missing sizes count as 1; no sizes: one chunk). Each chunk
 * is a copy, so a consumer that takes ownership of its chunks (e.g.
 * `Frame.decode`, which unmasks in place) leaves `bytes` intact.
 *
 * @since 0.1.0
 * @category chopping
 */
export const chop = (bytes: Uint8Array, sizes: ReadonlyArray<number>): Array<Uint8Array> => {
  if (sizes.length === 0) return [bytes.slice()]
  const chunks: Array<Uint8Array> = []
  let pos = 0 // start of the next chunk
  let i = 0 // index into sizes
  while (pos < bytes.length) {
    const size = Math.max(1, Math.floor(sizes[i] || 1))
    chunks.push(bytes.slice(pos, pos + size))
    pos += size
    i = (i + 1) % sizes.length
  }
  return chunks
}

/**
 * Concatenates chunks into one new buffer.
 *
 * @since 0.1.0
 * @category chopping
 */
export const concat = (chunks: ReadonlyArray<Uint8Array>): Uint8Array => {
  let size = 0 // total bytes
  for (const c of chunks) size += c.length
  const out = new Uint8Array(size)
  let at = 0 // where the next chunk goes
  for (const c of chunks) {
    out.set(c, at)
    at += c.length
  }
  return out
}

// ---------------------------------------------------------------------------
// The fuzzer
// ---------------------------------------------------------------------------

/**
 * @since 0.2.0
 * @category fuzzing
 */
export interface FuzzOptions {
  /** The server's WebSocket URL (`ws://` or `wss://`, path and query included). */
  readonly url: string | URL
  /** Sessions to play; default 100. */
  readonly numRuns?: number | undefined
  /** fast-check's seed, to replay a run (printed with every failure). */
  readonly seed?: number | undefined
  /** fast-check's path to the failing case, to replay exactly that session (printed with every failure). */
  readonly path?: string | undefined
  /** Milliseconds the server has for each answer (its Close, closing TCP, a fresh handshake); default 5000. */
  readonly timeout?: number | undefined
  /** Elements per session at most (messages, Pings, hostile frames, early Closes); default 8. */
  readonly maxSteps?: number | undefined
  /** TLS options for a `wss://` server (e.g. `{ rejectUnauthorized: false }` for a self-signed test certificate). */
  readonly tls?: Tls.ConnectionOptions | undefined
}

/**
 * What `fuzz` found: the sessions played, the seed, and the smallest
 * failing session (`failure.message` prints it as frames and bytes, with
 * what the server did wrong, what it sent, and the seed and path to replay
 * it), or no failure.
 *
 * @since 0.2.0
 * @category fuzzing
 */
export type FuzzReport = Fuzz.Report

/**
 * @since 0.2.0
 * @category fuzzing
 */
export type FuzzSession = Sessions.Session

/**
 * Fuzzes the WebSocket server at `url`. fast-check generates sessions of
 * valid and hostile frames (fragmented messages with control frames between
 * fragments, reserved bits and opcodes, text that is not UTF-8 split at
 * every point, control frames too long or fragmented, stray continuations,
 * unmasked frames, lying and oversized lengths, bad close codes and
 * reasons, early Closes and TCP ends), writes each over a fresh connection
 * in pieces cut at arbitrary points, and checks the invariants every server
 * owes (RFC 6455):
 *
 * - each violation is answered with exactly one Close carrying the code
 *   the RFC requires (1002, 1007 or 1009; text that is not UTF-8 may be
 *   caught at the frame or at the end of its message, §8.1), then TCP is
 *   closed;
 * - our Close is answered with a Close, our last Ping with its Pong, and
 *   every Pong answers a Ping;
 * - nothing the server sends is masked or malformed (its text is UTF-8, its
 *   fragments in order, its Close payload valid), nor sent after its Close;
 * - after every session the server accepts a fresh connection.
 *
 * A failure is shrunk to the smallest failing session. Never rejects for a
 * fault of the server's: see the report (`assertFuzz` throws it).
 *
 * @since 0.2.0
 * @category fuzzing
 */
export const fuzz = (options: FuzzOptions): Promise<FuzzReport> => {
  const url = new URL(String(options.url))
  if (url.protocol !== "ws:" && url.protocol !== "wss:") return Promise.reject(new TypeError(`fuzz: url must be ws:// or wss://, got ${url.protocol}`))
  return Fuzz.run(
    { url, timeout: options.timeout ?? 5000, tls: options.tls },
    { numRuns: options.numRuns ?? 100, seed: options.seed, path: options.path, maxSteps: options.maxSteps ?? 8 }
  )
}

/**
 * `fuzz`, rejecting with the printed failure (for a test: `await
 * Testing.assertFuzz({ url })`).
 *
 * @since 0.2.0
 * @category fuzzing
 */
export const assertFuzz = async (options: FuzzOptions): Promise<FuzzReport> => {
  const report = await fuzz(options)
  if (report.failure !== undefined) throw new Error(report.failure.message)
  return report
}

/**
 * Starts `handler` as a websock route (`/fuzz`) on a free port of
 * 127.0.0.1, with `server` options, and fuzzes it (`fuzz`).
 *
 * @since 0.2.0
 * @category fuzzing
 */
export const fuzzRoute = (
  handler: (ws: WebSocket.WebSocketConnection) => Effect.Effect<unknown, unknown, Scope.Scope>,
  options?: Omit<FuzzOptions, "url"> & { readonly server?: Omit<Server.Options, "routes" | "port" | "host"> | undefined }
): Effect.Effect<FuzzReport, ServerError> =>
  Effect.scoped(Effect.gen(function*() {
    const server = yield* Server.make({ ...options?.server, host: "127.0.0.1", port: 0, routes: { "/fuzz": handler } })
    const url = `ws://127.0.0.1:${server.address.port}/fuzz`
    return yield* Effect.promise(() => fuzz({ ...options, url }))
  }))
