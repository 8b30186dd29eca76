/**
 * The outbound side of one connection: frames queued since the last flush,
 * the flush itself (one `write` per turn of the event loop, or one corked
 * `writev` for large batches), the count of buffered bytes, and the fibers
 * suspended in `send` until the buffer drains below the high-water mark.
 *
 * It decides nothing about the protocol: the first byte of every data frame
 * comes from `Connection.sendHeader`, control frames arrive encoded from
 * `Connection.step`. In the client role (`masker` set) every frame queued
 * with `frame` or `text` is masked as it is encoded (RFC 6455 §5.3): a
 * fresh key per frame, the payload masked in the output buffer (or in a
 * copy, when written corked), never in the caller's bytes.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import { Buffer } from "node:buffer"
import type { Duplex } from "node:stream"
import * as Frame from "../Frame.ts"
import type { Masker } from "./masker.ts"
import type { Tally } from "./metrics.ts"

/** Bytes of outgoing frames encoded into one buffer per flush; more are written corked. */
const SCRATCH_SIZE = 65536

/**
 * The buffer flushes encode into, shared by every connection (one flush runs
 * at a time). Replaced when a socket keeps it for a write it could not
 * finish at once.
 */
let scratch = Buffer.allocUnsafeSlow(SCRATCH_SIZE)

/** Below this many bytes left, a scratch buffer a socket holds on to is replaced rather than shared further. */
const SCRATCH_REST = 4096

const EMPTY = new Uint8Array(0)

/** A data frame with this first header byte goes out: counted, unless deflated (RSV1, RFC 7692 §6), which is counted before deflate, or a control frame (queued with `frame` in the client role). */
const count = (tally: Tally, first: number, size: number): void => {
  if ((first & 0x48) === 0) tally.sent((first & 0x0f) === Frame.Opcode.Text, size)
}

/**
 * Masks the header just written at `buffer[start..end)` (RFC 6455 §5.2: the
 * MASK bit, then the key after the length) and the `length` payload bytes
 * that follow the key, in place. Returns the offset of the payload.
 */
const maskFrame = (masker: Masker, buffer: Uint8Array, start: number, end: number, length: number): number => {
  buffer[start + 1] |= 0x80
  masker.writeKey(buffer, end)
  if (length > 0) Frame.unmask(buffer.subarray(end + 4, end + 4 + length), buffer.subarray(end, end + 4))
  return end + 4
}

/**
 * Outboxes holding published messages, flushed together once the event
 * loop has run every I/O callback of this turn (`setImmediate`): the
 * messages a publisher's reads bring in one turn reach each subscriber in
 * one write, as uWebSockets does at the end of its loop iteration.
 */
let later: Array<Outbox> = []

const flushLater = (): void => {
  const outboxes = later
  later = []
  for (let i = 0; i < outboxes.length; i++) {
    const outbox = outboxes[i]!
    outbox.queuedLater = false
    if (outbox.pending()) outbox.flush()
  }
}

/** Markers in `first` for chunks already encoded: control frames (not counted), and whole data frames (a published message, counted). */
const ENCODED = -1
const ENCODED_TEXT = -2
const ENCODED_BINARY = -3

/** The payload length of a whole unmasked frame of `length` bytes (its header is 2, 4 or 10 bytes, RFC 6455 §5.2). */
const payloadOf = (length: number): number => (length - 2 < 126 ? length - 2 : length - 4 < 65536 ? length - 4 : length - 10)

/** An encoded chunk goes out: counted if it is a whole data frame. */
const countEncoded = (tally: Tally, marker: number, chunk: Uint8Array): void => {
  if (marker !== ENCODED) tally.sent(marker === ENCODED_TEXT, payloadOf(chunk.length))
}

/** @internal */
export class Outbox {
  /** Payloads and encoded bytes waiting for the flush; text stays a string until it is encoded into the output. */
  private out: Array<Uint8Array | string> = []
  /** For each chunk of `out`: the first header byte of a data frame to encode before it, or a marker (< 0) for bytes already encoded. */
  private first: Array<number> = []
  /** Bytes in `out` (for text not yet encoded, its largest UTF-8 size). */
  private bytes = 0
  private scheduled = false
  /** True while the driver handles a received chunk: it flushes at the end, with no microtask in between. */
  batching = false
  /** True while this outbox waits for the end-of-turn flush of published messages. */
  queuedLater = false
  /** Set by the transport while it waits for the peer to read our writes: every flush asks to be told when written. */
  watch = false
  /** Set once nothing more will be written: waiters are released for good. */
  private ended = false
  /** Fibers suspended in `send`, waiting for the buffer to drain (allocated on first use). */
  private waiters: Array<() => void> | undefined = undefined
  /** `flush` bound to this outbox, allocated on the first write. */
  private flushTask: (() => void) | undefined = undefined
  /** `onWritten` bound, allocated when first needed. */
  private writtenTask: (() => void) | undefined = undefined
  /** Set for the client role: every frame queued with `frame` or `text` is masked with a fresh key (RFC 6455 §5.3). */
  masker: Masker | undefined = undefined

  private readonly socket: Duplex
  private readonly highWaterMark: number
  /** Called when what was buffered has reached the kernel (for read pausing). */
  private readonly onWritten: () => void
  /** Counts the data messages written (deflated ones are counted where they were deflated). */
  private readonly tally: Tally

  constructor(socket: Duplex, highWaterMark: number, onWritten: () => void, tally: Tally) {
    this.tally = tally
    this.socket = socket
    this.highWaterMark = highWaterMark
    this.onWritten = onWritten
  }

  /** Bytes written by the application but not yet handed to the kernel. */
  buffered(): number {
    return this.bytes + this.socket.writableLength
  }

  /** Queues bytes already encoded (control frames). */
  encoded(chunk: Uint8Array): void {
    if (chunk.length > 0) this.queue(ENCODED, chunk, chunk.length)
  }

  /**
   * Queues a whole data frame encoded once for many connections (a
   * published message): never modified, counted when written, and written
   * at the end of this turn of the event loop with whatever else was
   * published to this connection meanwhile (or sooner, with a send's flush).
   */
  shared(frame: Uint8Array, text: boolean): void {
    this.out.push(frame)
    this.first.push(text ? ENCODED_TEXT : ENCODED_BINARY)
    this.bytes += frame.length
    if (this.scheduled || this.batching || this.queuedLater) return
    this.queuedLater = true
    if (later.length === 0) setImmediate(flushLater)
    later.push(this)
  }

  /** Queues a data frame whose header (first byte `first`) is encoded at flush time, into the same buffer as its neighbours. */
  frame(first: number, payload: Uint8Array): void {
    this.queue(first, payload, Frame.headerSize(payload.length) + (this.masker === undefined ? 0 : 4) + payload.length)
  }

  /** Queues a text frame: the string is encoded straight into the output at flush time. */
  text(first: number, text: string): void {
    const most = text.length * 3 // UTF-8 bytes at most (3 per UTF-16 unit)
    this.queue(first, text, Frame.headerSize(most) + (this.masker === undefined ? 0 : 4) + most)
  }

  private queue(first: number, chunk: Uint8Array | string, bytes: number): void {
    this.out.push(chunk)
    this.first.push(first)
    this.bytes += bytes
    if (!this.scheduled && !this.batching) {
      this.scheduled = true
      queueMicrotask(this.flushTask ??= () => this.flush())
    }
  }

  /** Whether frames wait for the next flush. */
  pending(): boolean {
    return this.out.length > 0
  }

  /**
   * Hands everything gathered since the last flush to the socket at once:
   * up to `SCRATCH_SIZE` bytes are encoded into one reused buffer and written
   * with one `write`; more are written corked (one `writev`), payloads
   * uncopied.
   */
  flush(): void {
    this.scheduled = false
    const out = this.out
    const first = this.first
    const n = out.length
    if (n === 0) return
    const total = this.bytes
    this.out = []
    this.first = []
    this.bytes = 0
    const socket = this.socket
    if (socket.destroyed || socket.writableEnded) return
    const masker = this.masker
    if (masker !== undefined) return this.flushMasked(masker, out, first, n, total)
    if (total <= SCRATCH_SIZE) {
      // What is left of the scratch buffer may be too short for this flush.
      if (total > scratch.length) scratch = Buffer.allocUnsafeSlow(SCRATCH_SIZE)
      const buffer = scratch
      let at = 0 // where the next header or payload goes in `buffer`
      for (let i = 0; i < n; i++) {
        const chunk = out[i]!
        if (typeof chunk === "string") {
          // Encoded after room for the largest header it could need; moved
          // back when its actual length needs a shorter one.
          const room = Frame.headerSize(chunk.length * 3)
          const length = buffer.write(chunk, at + room, "utf8")
          const size = Frame.headerSize(length)
          if (size !== room) buffer.copyWithin(at + size, at + room, at + room + length)
          at = Frame.writeHeader(buffer, at, first[i]!, length) + length
          this.tally.sent(true, length)
        } else {
          if (first[i]! >= 0) {
            at = Frame.writeHeader(buffer, at, first[i]!, chunk.length)
            count(this.tally, first[i]!, chunk.length)
          } else countEncoded(this.tally, first[i]!, chunk)
          buffer.set(chunk, at)
          at += chunk.length
        }
      }
      socket.write(buffer.subarray(0, at))
      // Written synchronously, the kernel has the bytes and the buffer is free
      // again; otherwise the socket holds its first `at` bytes until they are
      // written (always, on an HTTP/2 stream or a TLS socket): the next
      // flushes encode into the rest, so that small flushes share one
      // allocation instead of taking 64 KiB each.
      if (socket.writableLength > 0) scratch = buffer.length - at >= SCRATCH_REST ? buffer.subarray(at) : Buffer.allocUnsafeSlow(SCRATCH_SIZE)
    } else {
      socket.cork()
      for (let i = 0; i < n; i++) {
        const item = out[i]!
        const chunk = typeof item === "string" ? Buffer.from(item, "utf8") : item
        if (first[i]! >= 0) {
          const header = new Uint8Array(Frame.headerSize(chunk.length))
          Frame.writeHeader(header, 0, first[i]!, chunk.length)
          socket.write(header)
          count(this.tally, first[i]!, chunk.length)
        } else countEncoded(this.tally, first[i]!, chunk)
        socket.write(chunk)
      }
      socket.uncork()
    }
    if (this.watch || (this.waiters !== undefined && this.waiters.length > 0)) this.notifyWhenWritten()
  }

  /**
   * `flush` in the client role: every frame queued with `frame` or `text`
   * gets the MASK bit and a fresh key, its payload masked where it is
   * encoded (RFC 6455 §5.3).
   */
  private flushMasked(masker: Masker, out: Array<Uint8Array | string>, first: Array<number>, n: number, total: number): void {
    const socket = this.socket
    for (let i = 0; i < n; i++) {
      if (first[i]! >= ENCODED) continue
      // A published frame, encoded unmasked once for many connections: sent
      // again as its first byte and payload, masked like our own (+4 bytes).
      const frame = out[i] as Uint8Array
      const length7 = frame[1]! & 0x7f
      first[i] = frame[0]!
      out[i] = frame.subarray(length7 < 126 ? 2 : length7 === 126 ? 4 : 10)
      total += 4
    }
    if (total <= SCRATCH_SIZE) {
      // What is left of the scratch buffer may be too short for this flush (see `flush`).
      if (total > scratch.length) scratch = Buffer.allocUnsafeSlow(SCRATCH_SIZE)
      const buffer = scratch
      let at = 0 // where the next header or payload goes in `buffer`
      for (let i = 0; i < n; i++) {
        const chunk = out[i]!
        if (typeof chunk === "string") {
          const room = Frame.headerSize(chunk.length * 3) + 4
          const length = buffer.write(chunk, at + room, "utf8")
          const size = Frame.headerSize(length) + 4
          if (size !== room) buffer.copyWithin(at + size, at + room, at + room + length)
          at = maskFrame(masker, buffer, at, Frame.writeHeader(buffer, at, first[i]!, length), length) + length
          this.tally.sent(true, length)
        } else if (first[i]! >= 0) {
          const end = Frame.writeHeader(buffer, at, first[i]!, chunk.length)
          buffer.set(chunk, end + 4)
          at = maskFrame(masker, buffer, at, end, chunk.length) + chunk.length
          count(this.tally, first[i]!, chunk.length)
        } else {
          buffer.set(chunk, at)
          at += chunk.length
        }
      }
      socket.write(buffer.subarray(0, at))
      if (socket.writableLength > 0) scratch = buffer.length - at >= SCRATCH_REST ? buffer.subarray(at) : Buffer.allocUnsafeSlow(SCRATCH_SIZE)
    } else {
      socket.cork()
      for (let i = 0; i < n; i++) {
        const item = out[i]!
        if (first[i]! < 0) {
          socket.write(item)
          continue
        }
        // Our own copy, masked in place: the caller's bytes are never touched.
        const chunk = typeof item === "string" ? Buffer.from(item, "utf8") : Buffer.from(item)
        const header = new Uint8Array(Frame.headerSize(chunk.length) + 4)
        const end = Frame.writeHeader(header, 0, first[i]!, chunk.length)
        header[1] |= 0x80
        masker.writeKey(header, end)
        Frame.unmask(chunk, header.subarray(end, end + 4))
        socket.write(header)
        socket.write(chunk)
        if (typeof item === "string") this.tally.sent(true, chunk.length)
        else count(this.tally, first[i]!, chunk.length)
      }
      socket.uncork()
    }
    if (this.watch || (this.waiters !== undefined && this.waiters.length > 0)) this.notifyWhenWritten()
  }

  /**
   * Asks to be told once everything handed to the socket is written: 'drain'
   * only follows a write() that returned false (the socket's own mark, 64 KiB
   * on Node 22+), which a high-water mark below it never reaches.
   */
  notifyWhenWritten(): void {
    const socket = this.socket
    if (socket.destroyed || socket.writableEnded) return
    socket.write(EMPTY, this.writtenTask ??= () => this.written())
  }

  /** What was buffered has been written (a write callback, or the socket's 'drain'). */
  written(): void {
    this.release()
    this.onWritten()
  }

  /** Suspends until the buffer is at most the high-water mark (or nothing more can be written). */
  awaitDrain(): Effect.Effect<void> {
    return Effect.callback<void>((resume) => {
      if (this.ended || this.buffered() <= this.highWaterMark) {
        resume(Effect.void)
        return
      }
      const instruments = this.tally.instruments
      const since = instruments !== undefined ? performance.now() : 0
      const waiter = instruments === undefined ? () => resume(Effect.void) : () => {
        instruments.sendWait.observe((performance.now() - since) / 1000)
        resume(Effect.void)
      }
      const waiters = (this.waiters ??= [])
      waiters.push(waiter)
      // Everything may already be with the socket, below its own mark, so
      // that no 'drain' will come: ask to be called once it is written.
      if (this.out.length === 0) this.notifyWhenWritten()
      return Effect.sync(() => {
        const i = waiters.indexOf(waiter)
        if (i >= 0) waiters.splice(i, 1)
      })
    })
  }

  /** Nothing more will be written (the transport is closing or gone): releases every waiter. */
  end(): void {
    this.ended = true
    this.release()
  }

  private release(): void {
    const waiters = this.waiters
    if (waiters === undefined || waiters.length === 0) return
    if (!this.ended && this.buffered() > this.highWaterMark) return
    this.waiters = undefined
    for (let i = 0; i < waiters.length; i++) waiters[i]!()
  }
}
