/**
 * One upgraded connection at run time: the user's handle (`WebSocket`) and the
 * driver that carries out what `Connection.step` decides.
 *
 * The driver owns everything effectful about one connection and decides
 * nothing about the protocol:
 * - reads: every chunk the socket delivers goes through one `Connection.step`,
 *   and the actions of that step are carried out before the next chunk;
 * - writes: outgoing frames are gathered and written once per turn of the
 *   event loop (one `write`, or one corked `writev` for large batches), never
 *   one system call per frame;
 * - timers: the close timer, keepalive pings, the idle timeout and the
 *   maximum lifetime;
 * - backpressure both ways: `send` suspends above the high-water mark, and
 *   the socket stops being read while the handler has not taken its messages
 *   or while the peer is not reading ours;
 * - permessage-deflate, when negotiated: inflating and deflating in order,
 *   off the event loop (see `PerMessageDeflate`).
 *
 * The hot path (`onData`, `write`, `flush`) runs in socket callbacks, outside
 * any fiber: an Effect is allocated per batch of messages handed to the
 * handler, never per frame.
 *
 * @since 0.1.0
 */
import type { NonEmptyReadonlyArray } from "effect/Array"
import type * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { Buffer } from "node:buffer"
import type * as Net from "node:net"
import * as Connection from "./Connection.ts"
import { BufferOverflow, ConnectionClosed, WebSocketError } from "./Errors.ts"
import * as Frame from "./Frame.ts"
import type * as PerMessageDeflate from "./PerMessageDeflate.ts"
import { isUtf8 } from "node:buffer"
import { done as causeDone } from "effect/Cause"

/**
 * A message: text as a string, binary as bytes.
 *
 * @since 0.1.0
 * @category models
 */
export type Message = string | Uint8Array

/**
 * How a connection ended.
 *
 * @since 0.1.0
 * @category models
 */
export interface CloseOutcome {
  /** The close code (1006 when no Close frame was received). */
  readonly code: number
  readonly reason: string
  /** True when the closing handshake completed both ways. */
  readonly clean: boolean
  /** Who sent the first Close frame (or dropped the connection). */
  readonly initiator: "local" | "remote"
}

/**
 * The upgrade request, as the handler sees it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Request {
  readonly method: string
  /** The raw request target, e.g. `/ws?room=1`. */
  readonly target: string
  readonly path: string
  readonly query: URLSearchParams
  /** Lower-cased header names; repeated headers joined with ", ". */
  readonly headers: ReadonlyMap<string, string>
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
}

/**
 * What to do when a connection's outbound buffer passes `maxBufferedAmount`.
 * - `"wait"`: `send` suspends until the buffer drains below the high-water mark.
 * - `"drop"`: the message is discarded and counted in `droppedMessages`.
 * - `"close"`: the connection is closed with 1008 and `send` fails with `BufferOverflow`.
 *
 * @since 0.1.0
 * @category models
 */
export type OverflowPolicy = "wait" | "drop" | "close"

/**
 * The connection handed to a route's handler.
 *
 * @since 0.1.0
 * @category models
 */
export interface WebSocket {
  /** A process-unique number, used in logs. */
  readonly id: number
  readonly request: Request
  /** The subprotocol chosen in the handshake, if any. */
  readonly protocol: string | undefined
  /** The negotiated Sec-WebSocket-Extensions response value, if any. */
  readonly extensions: string | undefined
  /**
   * The incoming messages, in order, in batches as they arrived. It ends when
   * the connection closes. Consume it once: it is a view of one inbox.
   * While it is not consumed, the socket is not read (TCP pushes back).
   */
  readonly messages: Stream.Stream<Message>
  /** Sends one message. Suspends while the outbound buffer is above the high-water mark. */
  readonly send: (message: Message) => Effect.Effect<void, WebSocketError>
  /** Sends several messages, written together. */
  readonly sendAll: (messages: ReadonlyArray<Message>) => Effect.Effect<void, WebSocketError>
  /** Starts the closing handshake (default 1000) and waits for its outcome. */
  readonly close: (code?: number, reason?: string) => Effect.Effect<CloseOutcome>
  /** Waits until the connection has closed. */
  readonly closed: Effect.Effect<CloseOutcome>
  /** Bytes written by the application but not yet handed to the kernel. */
  readonly bufferedAmount: Effect.Effect<number>
  /** Messages discarded by the `"drop"` overflow policy. */
  readonly droppedMessages: Effect.Effect<number>
}

/**
 * The limits and timers of one connection, all in bytes or milliseconds
 * (0 disables a timer).
 *
 * @since 0.1.0
 * @category models
 */
export interface DriverOptions {
  readonly maxMessageSize: number
  readonly closeTimeout: number
  readonly pingInterval: number
  readonly idleTimeout: number
  readonly maxLifetime: number
  readonly highWaterMark: number
  readonly maxBufferedAmount: number
  readonly overflow: OverflowPolicy
  /** Messages waiting in the inbox above which the socket is no longer read. */
  readonly inboxHighWaterMark: number
}

let nextId = 1

const EMPTY = new Uint8Array(0)

/** Bytes of outgoing frames encoded into one buffer per flush; more are written corked. */
const SCRATCH_SIZE = 65536

/**
 * The buffer flushes encode into, shared by every connection (one flush runs
 * at a time). Replaced when a socket keeps it for a write it could not
 * finish at once.
 */
let scratch = Buffer.allocUnsafeSlow(SCRATCH_SIZE)

/** Milliseconds a deferred close waits for a handler that has not subscribed to its messages. */
const SUBSCRIBE_GRACE = 100

/**
 * Drives one upgraded socket. Created by the server after a successful
 * handshake; not part of the public API.
 *
 * @since 0.1.0
 * @internal
 */
export class Driver {
  readonly id = nextId++
  /** Created on the first wait for the outcome, if any comes before the end. */
  private outcome: Deferred.Deferred<CloseOutcome> | undefined = undefined
  readonly handle: WebSocket
  readonly request: Request
  readonly protocol: string | undefined
  readonly extensions: string | undefined
  /** The protocol state; replaced by every step. */
  private state: Connection.State
  /** Frames waiting for the next flush. */
  /** Payloads and encoded bytes waiting for the flush; text stays a string until it is encoded into the output. */
  private out: Array<Uint8Array | string> = []
  /** For each chunk of `out`: the first header byte of a data frame to encode before it, or -1 for bytes already encoded. */
  private outFirst: Array<number> = []
  /** Bytes in `out` (for text not yet encoded, its largest UTF-8 size). */
  private outBytes = 0
  private flushScheduled = false
  /** True while a received chunk is being handled: `onData` flushes at its end. */
  private reading = false
  /** Messages waiting for the handler. */
  private inbox: Array<Message> = []
  /** The handler's suspended pull, if it is waiting for messages. */
  private waiter: ((effect: Effect.Effect<NonEmptyReadonlyArray<Message>, Cause.Done>) => void) | undefined = undefined
  /** True once no more messages will arrive. */
  private inboxEnded = false
  /** Why reading is paused: bit 1 = inbox full, bit 2 = peer not reading our writes. */
  private pausedFor = 0
  private closeTimer: ReturnType<typeof setTimeout> | undefined = undefined
  /** The server's coarse clock, advanced by its timer sweep. */
  private readonly clock: Clock
  private readonly createdAt: number
  /** Time of the last bytes received, for the idle timeout. */
  private lastReceived: number
  /** Time of the last automatic Ping. */
  private lastPing: number
  /** Fibers suspended in `send`, waiting for the buffer to drain (allocated on first use). */
  private drainWaiters: Array<() => void> | undefined = undefined
  /** `flush` bound to this driver, allocated on the first write. */
  private flushTask: (() => void) | undefined = undefined
  private droppedCount = 0
  private transportClosing = false
  private finalOutcome: CloseOutcome | undefined = undefined
  /** True while the handler holds a batch it took and has not come back for more. */
  private holding = false
  /** True once the handler has asked for messages at all. */
  private subscribed = false
  /**
   * The closing actions of a step that ended the connection while the handler
   * still had messages to handle: they wait until it has caught up, so that
   * its answers to those messages go out before our Close.
   */
  private deferred: Array<Connection.Action> | undefined = undefined
  /** The Open state before the deferred close, used to encode the handler's late answers. */
  private sendState: Connection.State | undefined = undefined
  private deferTimer: ReturnType<typeof setTimeout> | undefined = undefined
  /** Compressed messages received and not yet inflated. */
  private pendingInflates = 0
  /** Serialises inflate and deflate work when compression is on. */
  private inflateChain: Promise<void> | undefined = undefined
  private deflateChain: Promise<void> | undefined = undefined

  readonly socket: Net.Socket
  readonly options: DriverOptions
  readonly codec: PerMessageDeflate.Codec | undefined
  /** Messages below this many bytes go out uncompressed. */
  readonly deflateThreshold: number
  /** Runs an effect detached (compression work); provided by the server. */
  readonly runEffect: <A, E>(effect: Effect.Effect<A, E>) => Promise<A>
  /** Called once, when the socket has closed, with the outcome. */
  readonly onEnd: (driver: Driver, outcome: CloseOutcome) => void

  constructor(
    socket: Net.Socket,
    options: DriverOptions,
    request: Request,
    protocol: string | undefined,
    extensions: string | undefined,
    codec: PerMessageDeflate.Codec | undefined,
    deflateThreshold: number,
    runEffect: <A, E>(effect: Effect.Effect<A, E>) => Promise<A>,
    onEnd: (driver: Driver, outcome: CloseOutcome) => void,
    clock: Clock
  ) {
    this.socket = socket
    this.options = options
    this.request = request
    this.protocol = protocol
    this.extensions = extensions
    this.codec = codec
    this.deflateThreshold = deflateThreshold
    this.runEffect = runEffect
    this.onEnd = onEnd
    this.clock = clock
    this.createdAt = this.lastReceived = this.lastPing = clock.now
    this.state = Connection.initial({ maxMessageSize: options.maxMessageSize, compression: codec !== undefined })
    this.handle = new Handle(this)
  }

  /** The handler's pull: the next batch of messages, or the end. */
  pull(): Effect.Effect<NonEmptyReadonlyArray<Message>, Cause.Done> {
    return Effect.callback((resume) => {
      // Coming back for more means the previous batch has been handled.
      this.holding = false
      this.subscribed = true
      if (this.deferred !== undefined && this.inbox.length === 0 && this.pendingInflates === 0) this.releaseDeferred()
      if (this.inbox.length > 0) {
        resume(Effect.succeed(this.takeInbox()))
        return
      }
      if (this.inboxEnded) {
        resume(causeDone())
        return
      }
      this.waiter = resume
      return Effect.sync(() => {
        if (this.waiter === resume) this.waiter = undefined
      })
    })
  }

  /**
   * The handler's stream of messages ended or was interrupted: it holds no
   * batch and will not come back for more, so a close need not wait for it.
   */
  unsubscribe(): void {
    this.holding = false
    this.subscribed = false
    if (this.deferred !== undefined) this.releaseDeferred()
  }

  /** Waits for the outcome. */
  awaitOutcome(): Effect.Effect<CloseOutcome> {
    if (this.finalOutcome !== undefined) return Effect.succeed(this.finalOutcome)
    this.outcome ??= Deferred.makeUnsafe<CloseOutcome>()
    return Deferred.await(this.outcome)
  }

  get dropped(): number {
    return this.droppedCount
  }

  /** Attaches the socket and feeds the bytes that came with the upgrade request. */
  start(rest: Uint8Array): void {
    const socket = this.socket as DriverSocket
    socket[DRIVER] = this
    socket.on("data", onSocketData)
    socket.on("end", onSocketEnd)
    socket.on("error", onSocketError)
    socket.on("close", onSocketClose)
    socket.on("drain", onSocketDrain)
    if (rest.length > 0) this.onData(rest)
    // The bytes that came with the request may already have filled the inbox.
    if (this.pausedFor === 0 && !this.isFinished()) socket.resume()
  }

  // ---------------------------------------------------------------------------
  // reading
  // ---------------------------------------------------------------------------

  /** @internal */
  onData(chunk: Uint8Array): void {
    this.lastReceived = this.clock.now
    // Everything written while this chunk is handled (Pongs, Closes, and the
    // answers of a handler resumed synchronously by `afterRead`) goes out in
    // one write at the end, with no microtask in between.
    this.reading = true
    this.input({ _tag: "Bytes", chunk })
    this.afterRead()
    this.reading = false
    if (this.out.length > 0) this.flush()
  }

  /** @internal */
  onSocketEnd(): void {
    this.input({ _tag: "EndOfStream" })
  }

  /** @internal */
  onSocketError(): void {
    // A reset or a write to a peer that went away: the connection is over.
    // The error is reported through the outcome (1006), never thrown.
    this.input({ _tag: "EndOfStream" })
    this.socket.destroy()
  }

  /** @internal */
  onSocketClose(): void {
    this.releaseDeferred()
    this.input({ _tag: "EndOfStream" })
    this.dispose()
    this.onEnd(this, this.finalOutcome!)
  }

  /** @internal */
  onDrain(): void {
    this.releaseDrainWaiters()
    if ((this.pausedFor & 2) !== 0 && this.socket.writableLength < this.options.highWaterMark) {
      this.pausedFor &= ~2
      if (this.pausedFor === 0 && !this.isFinished()) this.socket.resume()
    }
  }

  /** Hands waiting messages over and applies inbound backpressure. */
  private afterRead(): void {
    if (this.waiter !== undefined && this.inbox.length > 0) {
      const resume = this.waiter
      this.waiter = undefined
      resume(Effect.succeed(this.takeInbox()))
    }
    // Once the transport is closing, its last bytes must be read (see closeTransport).
    if (this.transportClosing) return
    // Messages still inflating count: they are received and not yet taken.
    if (this.inbox.length + this.pendingInflates >= this.options.inboxHighWaterMark && (this.pausedFor & 1) === 0) {
      this.pausedFor |= 1
      this.socket.pause()
    }
    // RFC 6455 §5.5.2 makes us answer every Ping; a peer that pings without
    // reading our writes must not grow our memory: stop reading it instead.
    if (this.socket.writableLength + this.outBytes > this.options.maxBufferedAmount && (this.pausedFor & 2) === 0) {
      this.pausedFor |= 2
      this.socket.pause()
    }
  }

  /** Only called when the inbox is not empty. */
  private takeInbox(): NonEmptyReadonlyArray<Message> {
    const batch = this.inbox as unknown as NonEmptyReadonlyArray<Message>
    this.inbox = []
    this.holding = true
    if ((this.pausedFor & 1) !== 0 && this.pendingInflates < this.options.inboxHighWaterMark) {
      this.pausedFor &= ~1
      if (this.pausedFor === 0 && !this.isFinished()) this.socket.resume()
    }
    return batch
  }

  private endInbox(): void {
    this.inboxEnded = true
    if (this.waiter !== undefined && this.inbox.length === 0) {
      const resume = this.waiter
      this.waiter = undefined
      resume(causeDone())
    }
  }

  // ---------------------------------------------------------------------------
  // the protocol step and its actions
  // ---------------------------------------------------------------------------

  /** Runs one input through `Connection.step` and carries out its actions. */
  input(input: Connection.Input): void {
    if (this.deferred !== undefined) {
      // The application closing, or a timeout, ends the wait for the handler.
      if (input._tag === "Close" || input._tag === "Fail" || input._tag === "CloseTimeout" || input._tag === "EndOfStream") {
        this.releaseDeferred()
      }
      return
    }
    if (this.state._tag === "Closed") return
    const before = this.state
    const result = Connection.step(before, input)
    this.state = result.state
    const actions = result.actions
    if (input._tag === "Bytes" && before._tag === "Open" && result.state._tag !== "Open" && this.mustWaitForHandler(actions)) {
      this.deferClose(before, actions)
      return
    }
    this.perform(actions)
  }

  /** Whether messages are still to be handled when a read ends the connection. */
  private mustWaitForHandler(actions: ReadonlyArray<Connection.Action>): boolean {
    if (this.holding || this.inbox.length > 0 || this.pendingInflates > 0) return true
    for (let i = 0; i < actions.length; i++) {
      const tag = actions[i]!._tag
      if (tag === "Deliver" || tag === "DeliverCompressed") return true
    }
    return false
  }

  /**
   * Delivers the messages of this step now and keeps its other actions (our
   * Close, the end of the transport) until the handler has caught up: it
   * comes back for more with nothing left, ends, closes, or `closeTimeout`
   * passes. RFC 6455 §5.5.1 lets an endpoint delay its Close until its
   * current message is sent.
   */
  private deferClose(before: Connection.State, actions: ReadonlyArray<Connection.Action>): void {
    const rest: Array<Connection.Action> = []
    for (let i = 0; i < actions.length; i++) {
      const action = actions[i]!
      if (action._tag === "Deliver" || action._tag === "DeliverCompressed") this.perform([action])
      else rest.push(action)
    }
    this.deferred = rest
    this.sendState = before
    // Whatever the peer sends now is past its Close or past a violation.
    this.socket.pause()
    // A handler that has not asked for messages yet gets a short grace to
    // start (its fiber may not have run yet); one that never reads them must
    // not delay our answer to the peer's Close (RFC 6455 §5.5.1, "as soon as
    // practical").
    const wait = this.subscribed ? this.options.closeTimeout : Math.min(this.options.closeTimeout, SUBSCRIBE_GRACE)
    this.deferTimer = setTimeout(() => this.releaseDeferred(), wait)
    this.deferTimer.unref?.()
    this.afterRead()
  }

  private releaseDeferred(): void {
    const deferred = this.deferred
    if (deferred === undefined) return
    this.deferred = undefined
    this.sendState = undefined
    if (this.deferTimer !== undefined) clearTimeout(this.deferTimer)
    this.deferTimer = undefined
    this.perform(deferred)
  }

  /** Queues one message; while a close is deferred, under the state before it. */
  private sendOne(payload: Uint8Array, text: boolean, compressed: boolean): void {
    // What `step` does with a `Send` input, without its allocations.
    if (!Connection.canSend(this.sendState ?? this.state)) return
    this.writeFrame(
      0x80 | (compressed ? 0x40 : 0) | (text ? Frame.Opcode.Text : Frame.Opcode.Binary),
      payload
    )
  }

  /** Carries out the actions of one step, in order. */
  private perform(actions: ReadonlyArray<Connection.Action>): void {
    for (let i = 0; i < actions.length; i++) {
      const action = actions[i]!
      switch (action._tag) {
        case "Write": {
          const chunks = action.chunks
          for (let j = 0; j < chunks.length; j++) this.write(chunks[j]!)
          break
        }
        case "Deliver": {
          if (this.codec === undefined) this.inbox.push(action.data)
          else this.deliverInOrder(Promise.resolve(action.data))
          break
        }
        case "DeliverCompressed": {
          this.deliverCompressed(action.text, action.data)
          break
        }
        case "ArmCloseTimer": {
          this.clearCloseTimer()
          this.closeTimer = setTimeout(() => {
            this.closeTimer = undefined
            this.input({ _tag: "CloseTimeout" })
          }, this.options.closeTimeout)
          break
        }
        case "CancelCloseTimer": {
          this.clearCloseTimer()
          break
        }
        case "CloseTransport": {
          this.closeTransport()
          break
        }
        case "Closed": {
          this.finish({ code: action.code, reason: action.reason, clean: action.clean, initiator: action.initiator })
          break
        }
        default: {
          const _exhaustive: never = action
          return _exhaustive
        }
      }
    }
  }

  private finish(outcome: CloseOutcome): void {
    if (this.finalOutcome !== undefined) return
    this.finalOutcome = outcome
    this.clearCloseTimer()
    // Messages still inflating are delivered before the stream ends.
    if (this.inflateChain === undefined) this.endInbox()
    else {
      const end = () => this.endInbox()
      this.inflateChain = this.inflateChain.then(end, end)
    }
    this.releaseDrainWaiters()
    if (this.outcome !== undefined) Deferred.doneUnsafe(this.outcome, Effect.succeed(outcome))
  }

  /** The outcome is known or the transport is closing: nothing sent now will be written. */
  private hasEnded(): boolean {
    return this.finalOutcome !== undefined || this.transportClosing
  }

  private isFinished(): boolean {
    return this.transportClosing || this.state._tag === "Closed"
  }

  // ---------------------------------------------------------------------------
  // writing
  // ---------------------------------------------------------------------------

  /** Queues bytes already encoded (control frames from `Connection.step`). */
  private write(chunk: Uint8Array): void {
    if (chunk.length === 0) return
    this.queue(-1, chunk, chunk.length)
  }

  /** Queues a data frame whose header is encoded at flush time, into the same buffer as its neighbours. */
  private writeFrame(first: number, payload: Uint8Array): void {
    this.queue(first, payload, Frame.headerSize(payload.length) + payload.length)
  }

  /** Queues a text frame: the string is encoded straight into the output at flush time. */
  private writeText(first: number, text: string): void {
    const most = text.length * 3 // UTF-8 bytes at most (3 per UTF-16 unit)
    this.queue(first, text, Frame.headerSize(most) + most)
  }

  private queue(first: number, chunk: Uint8Array | string, bytes: number): void {
    this.out.push(chunk)
    this.outFirst.push(first)
    this.outBytes += bytes
    if (!this.flushScheduled && !this.reading) {
      this.flushScheduled = true
      queueMicrotask(this.flushTask ??= () => this.flush())
    }
  }

  /**
   * Hands everything gathered since the last flush to the socket at once:
   * up to `SCRATCH_SIZE` bytes are encoded into one reused buffer and written
   * with one `write`; more are written corked (one `writev`), payloads
   * uncopied.
   */
  private flush(): void {
    this.flushScheduled = false
    const out = this.out
    const first = this.outFirst
    const n = out.length
    if (n === 0) return
    const total = this.outBytes
    this.out = []
    this.outFirst = []
    this.outBytes = 0
    const socket = this.socket
    if (socket.destroyed || socket.writableEnded) return
    if (total <= SCRATCH_SIZE) {
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
        } else {
          if (first[i]! >= 0) at = Frame.writeHeader(buffer, at, first[i]!, chunk.length)
          buffer.set(chunk, at)
          at += chunk.length
        }
      }
      socket.write(buffer.subarray(0, at))
      // Written synchronously, the kernel has the bytes and the buffer is free
      // again; otherwise the socket holds it until it is written.
      if (socket.writableLength > 0) scratch = Buffer.allocUnsafeSlow(SCRATCH_SIZE)
    } else {
      socket.cork()
      for (let i = 0; i < n; i++) {
        const item = out[i]!
        const chunk = typeof item === "string" ? Buffer.from(item, "utf8") : item
        if (first[i]! >= 0) {
          const header = new Uint8Array(Frame.headerSize(chunk.length))
          Frame.writeHeader(header, 0, first[i]!, chunk.length)
          socket.write(header)
        }
        socket.write(chunk)
      }
      socket.uncork()
    }
    // 'drain' only follows a write() that returned false (the socket's own mark, 64 KiB)
    if (this.drainWaiters !== undefined || this.pausedFor !== 0) socket.write(EMPTY, () => this.onDrain())
  }

  bufferedAmount(): number {
    return this.outBytes + this.socket.writableLength
  }

  private closedError(): Effect.Effect<never, WebSocketError> {
    const outcome = this.finalOutcome
    return Effect.fail(
      new WebSocketError({
        reason: new ConnectionClosed({ code: outcome?.code ?? Frame.CloseCode.NoStatusReceived, reason: outcome?.reason ?? "closing" })
      })
    )
  }

  /** @internal */
  sendMessages(messages: ReadonlyArray<Message>): Effect.Effect<void, WebSocketError> {
    const state = this.sendState ?? this.state
    if (state._tag !== "Open") return this.closedError()
    const buffered = this.bufferedAmount()
    if (buffered > this.options.maxBufferedAmount) {
      switch (this.options.overflow) {
        case "drop":
          this.droppedCount += messages.length
          return Effect.void
        case "close": {
          this.input({ _tag: "Close", code: Frame.CloseCode.PolicyViolation, reason: "outbound buffer overflow" })
          return Effect.fail(
            new WebSocketError({ reason: new BufferOverflow({ bufferedAmount: buffered, limit: this.options.maxBufferedAmount }) })
          )
        }
        case "wait":
          return Effect.andThen(this.awaitDrain(), Effect.suspend(() => this.sendMessages(messages)))
      }
    }
    if (this.codec !== undefined) return this.sendCompressed(messages)
    // What `step` does with a `Send` input, without its allocations.
    if (Connection.canSend(state)) {
      for (let i = 0; i < messages.length; i++) {
        const message = messages[i]!
        if (typeof message === "string") this.writeText(0x80 | Frame.Opcode.Text, message)
        else this.writeFrame(0x80 | Frame.Opcode.Binary, message)
      }
    }
    return this.options.overflow === "wait" && this.bufferedAmount() > this.options.highWaterMark ? this.awaitDrain() : Effect.void
  }

  /**
   * Deflates in order (context takeover makes the order of the compressed
   * stream the order of the messages), and steps each message as soon as it
   * is deflated, inside the same chain, so that no later message overtakes.
   */
  private sendCompressed(messages: ReadonlyArray<Message>): Effect.Effect<void, WebSocketError> {
    const codec = this.codec!
    const threshold = this.deflateThreshold
    const chained = (this.deflateChain ?? Promise.resolve()).then(async () => {
      for (let i = 0; i < messages.length; i++) {
        const message = messages[i]!
        const text = typeof message === "string"
        const payload = text ? Buffer.from(message, "utf8") : message
        if (payload.length < threshold) {
          this.sendOne(payload, text, false)
        } else {
          const deflated = await this.runEffect(codec.deflate(payload))
          this.sendOne(deflated, text, true)
        }
      }
    })
    const settled = chained.then(() => true, () => false)
    this.deflateChain = settled.then(() => {})
    return Effect.andThen(
      Effect.flatMap(Effect.promise(() => settled), (ok) => (ok ? Effect.void : this.closedError())),
      Effect.suspend(() =>
        this.options.overflow === "wait" && this.bufferedAmount() > this.options.highWaterMark ? this.awaitDrain() : Effect.void
      )
    )
  }

  private awaitDrain(): Effect.Effect<void> {
    return Effect.callback<void>((resume) => {
      if (this.hasEnded() || this.bufferedAmount() <= this.options.highWaterMark) {
        resume(Effect.void)
        return
      }
      const waiter = () => resume(Effect.void)
      const waiters = (this.drainWaiters ??= [])
      waiters.push(waiter)
      // Everything may already be with the socket, below its own mark, so
      // that no 'drain' will come: ask to be called once it is written.
      if (this.out.length === 0) this.socket.write(EMPTY, () => this.onDrain())
      return Effect.sync(() => {
        const i = waiters.indexOf(waiter)
        if (i >= 0) waiters.splice(i, 1)
      })
    })
  }

  private releaseDrainWaiters(): void {
    const waiters = this.drainWaiters
    if (waiters === undefined || waiters.length === 0) return
    if (!this.hasEnded() && this.bufferedAmount() > this.options.highWaterMark) return
    this.drainWaiters = undefined
    for (let i = 0; i < waiters.length; i++) waiters[i]!()
  }

  // ---------------------------------------------------------------------------
  // compression
  // ---------------------------------------------------------------------------

  /** Keeps delivery in arrival order when some messages must be inflated first. */
  private deliverInOrder(message: Promise<Message | undefined>): void {
    this.pendingInflates++
    this.inflateChain = (this.inflateChain ?? Promise.resolve()).then(async () => {
      let m: Message | undefined = undefined
      try {
        m = await message
      } catch {
        // Interrupted (the connection's zlib scope closed): nothing to deliver.
      } finally {
        this.pendingInflates--
      }
      // RFC 6455 §7.1.7: once we have failed the connection, no more data is processed.
      const failed = this.finalOutcome !== undefined && this.finalOutcome.initiator === "local" && !this.finalOutcome.clean
      if (m !== undefined && !failed) this.inbox.push(m)
      this.afterRead()
    })
  }

  private deliverCompressed(text: boolean, data: Uint8Array): void {
    const codec = this.codec
    if (codec === undefined) return
    const previous = this.inflateChain ?? Promise.resolve()
    // Inflate strictly after the previous message: the context carries over.
    const inflated = previous.then(() =>
      this.runEffect(Effect.result(codec.inflate(data, this.options.maxMessageSize))).then((result): Message | undefined => {
        if (result._tag === "Failure") {
          this.input({ _tag: "Fail", code: result.failure.code, reason: result.failure.reason })
          return undefined
        }
        const bytes = result.success
        if (!text) return bytes
        if (!isUtf8(bytes)) {
          this.input({ _tag: "Fail", code: Frame.CloseCode.InvalidPayload, reason: "invalid UTF-8 in text message" })
          return undefined
        }
        return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("utf8")
      })
    )
    this.deliverInOrder(inflated)
  }

  // ---------------------------------------------------------------------------
  // timers and teardown
  // ---------------------------------------------------------------------------

  /**
   * Called by the server's timer sweep (one timer for all connections):
   * the maximum lifetime, the idle timeout and the automatic Ping.
   */
  tick(now: number): void {
    if (this.state._tag !== "Open" || this.deferred !== undefined) return
    const { idleTimeout, pingInterval, maxLifetime } = this.options
    if (maxLifetime > 0 && now - this.createdAt >= maxLifetime) {
      this.input({ _tag: "Close", code: Frame.CloseCode.GoingAway, reason: "maximum lifetime reached" })
      return
    }
    // A peer we stopped reading (our handler is behind) is not idle.
    if ((this.pausedFor & 1) !== 0) this.lastReceived = now
    if (idleTimeout > 0 && now - this.lastReceived >= idleTimeout) {
      this.input({ _tag: "Close", code: Frame.CloseCode.GoingAway, reason: "idle timeout" })
      return
    }
    if (pingInterval > 0 && now - this.lastPing >= pingInterval) {
      this.lastPing = now
      this.writeFrame(0x80 | Frame.Opcode.Ping, EMPTY)
    }
  }

  private clearCloseTimer(): void {
    if (this.closeTimer !== undefined) {
      clearTimeout(this.closeTimer)
      this.closeTimer = undefined
    }
  }

  /**
   * Ends our side of TCP after the pending writes (the server closes first,
   * RFC 6455 §7.1.1), keeps reading so that the peer's last bytes do not turn
   * into a reset, and destroys the socket if the peer does not close in time.
   */
  private closeTransport(): void {
    if (this.transportClosing) return
    this.transportClosing = true
    this.flush()
    const socket = this.socket
    this.pausedFor = 0
    socket.off("data", onSocketData)
    socket.on("data", discard)
    socket.resume()
    socket.end()
    const linger = setTimeout(() => socket.destroy(), this.options.closeTimeout)
    linger.unref?.()
    socket.once("close", () => clearTimeout(linger))
  }

  /** Tears everything down; safe to call more than once. */
  dispose(): void {
    this.clearCloseTimer()
    if (!this.socket.destroyed) this.socket.destroy()
    if (this.finalOutcome === undefined) {
      this.finish({ code: Frame.CloseCode.Abnormal, reason: "", clean: false, initiator: "local" })
    }
    this.releaseDrainWaiters()
  }
}

const discard = (): void => {}

/**
 * A coarse clock shared by the connections of one server, advanced by its
 * timer sweep, so that reading a chunk costs no `Date.now()`.
 *
 * @since 0.1.0
 * @internal
 */
export interface Clock {
  now: number
}

const DRIVER = Symbol.for("websock/Driver")

interface DriverSocket extends Net.Socket {
  [DRIVER]?: Driver
}

// One listener of each kind for all sockets (no closures per connection):
// the socket carries its driver.
function onSocketData(this: DriverSocket, chunk: Uint8Array): void {
  this[DRIVER]!.onData(chunk)
}
function onSocketEnd(this: DriverSocket): void {
  this[DRIVER]!.onSocketEnd()
}
function onSocketError(this: DriverSocket): void {
  this[DRIVER]!.onSocketError()
}
function onSocketClose(this: DriverSocket): void {
  this[DRIVER]!.onSocketClose()
}
function onSocketDrain(this: DriverSocket): void {
  this[DRIVER]!.onDrain()
}

/**
 * The handle given to handlers: a thin view of its driver, with nothing
 * allocated per connection beyond itself (streams and effects are made when
 * asked for). Call its methods on it (`ws.send(m)`), not detached.
 */
class Handle implements WebSocket {
  readonly #driver: Driver
  constructor(driver: Driver) {
    this.#driver = driver
  }
  get id(): number {
    return this.#driver.id
  }
  get request(): Request {
    return this.#driver.request
  }
  get protocol(): string | undefined {
    return this.#driver.protocol
  }
  get extensions(): string | undefined {
    return this.#driver.extensions
  }
  get messages(): Stream.Stream<Message> {
    const driver = this.#driver
    return Stream.fromPull(Effect.sync(() => driver.pull())).pipe(Stream.ensuring(Effect.sync(() => driver.unsubscribe())))
  }
  send(message: Message): Effect.Effect<void, WebSocketError> {
    return Effect.suspend(() => this.#driver.sendMessages([message]))
  }
  sendAll(messages: ReadonlyArray<Message>): Effect.Effect<void, WebSocketError> {
    return Effect.suspend(() => (messages.length === 0 ? Effect.void : this.#driver.sendMessages(messages)))
  }
  close(code: number = Frame.CloseCode.Normal, reason = ""): Effect.Effect<CloseOutcome> {
    return Effect.suspend(() => {
      this.#driver.input({ _tag: "Close", code, reason })
      return this.#driver.awaitOutcome()
    })
  }
  get closed(): Effect.Effect<CloseOutcome> {
    return Effect.suspend(() => this.#driver.awaitOutcome())
  }
  get bufferedAmount(): Effect.Effect<number> {
    return Effect.sync(() => this.#driver.bufferedAmount())
  }
  get droppedMessages(): Effect.Effect<number> {
    return Effect.sync(() => this.#driver.dropped)
  }
}
