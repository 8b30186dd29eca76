/**
 * Runs one upgraded connection: a thin interpreter of `Connection.step`'s
 * actions over parts with one job each (the `Outbox` writes, the `Inbox`
 * hands messages to the handler, `Compression` keeps permessage-deflate in
 * order), plus what only time and the transport can tell: the close and
 * deferral timers, keepalive, idle and lifetime (ticked by the server's
 * sweep), read pausing, and teardown. It decides nothing the RFC rules on:
 * every such decision is an input to `Connection.step`.
 *
 * The hot path (`onData`, the outbox's flush) runs in socket callbacks,
 * outside any fiber: an Effect is allocated per batch of messages handed to
 * the handler, never per frame.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import type * as Stream from "effect/Stream"
import { Buffer } from "node:buffer"
import type { Duplex } from "node:stream"
import * as CloseReason from "../CloseReason.ts"
import * as Connection from "../Connection.ts"
import * as Frame from "../Frame.ts"
import { BufferOverflow, ConnectionClosed, InvalidClose, ProtocolViolation, WebSocketError } from "../Errors.ts"
import type * as PerMessageDeflate from "../PerMessageDeflate.ts"
import type * as WebSocket from "../WebSocket.ts"
import { Compression } from "./compression.ts"
import { Inbox } from "./inbox.ts"
import { Outbox } from "./outbox.ts"

type Message = WebSocket.Message

/**
 * The limits and timers of one connection, in bytes or milliseconds (0
 * disables a timer).
 *
 * @internal
 */
export interface Limits {
  readonly maxMessageSize: number
  readonly closeTimeout: number
  readonly pingInterval: number
  readonly idleTimeout: number
  readonly maxLifetime: number
  readonly highWaterMark: number
  readonly maxBufferedAmount: number
  readonly overflow: WebSocket.OverflowPolicy
  /** Messages waiting in the inbox above which the socket is no longer read. */
  readonly inboxHighWaterMark: number
}

/**
 * A coarse clock shared by the connections of one server, advanced by its
 * timer sweep, so that reading a chunk costs no `Date.now()`.
 *
 * @internal
 */
export interface Clock {
  now: number
}

/** @internal */
export interface DriverOptions {
  readonly socket: Duplex
  readonly limits: Limits
  readonly request: WebSocket.Request
  readonly protocol: string | undefined
  readonly extensions: string | undefined
  /** The permessage-deflate codec, when negotiated, and the size below which messages go out uncompressed. */
  readonly codec: PerMessageDeflate.Codec | undefined
  readonly deflateThreshold: number
  /** Runs an effect detached, with the server's services (compression work). */
  readonly run: <A, E>(effect: Effect.Effect<A, E>) => Promise<Exit.Exit<A, E>>
  readonly clock: Clock
  /** Called once, when the socket has closed, with the outcome. */
  readonly onEnd: (driver: Driver, outcome: WebSocket.CloseOutcome) => void
  /** Called once the connection is over and every message received was delivered: the handler may stop. */
  readonly onOver: (driver: Driver) => void
}

/** Why the socket is not being read. */
const Pause = {
  /** The handler has not taken `inboxHighWaterMark` messages. */
  InboxFull: 1,
  /** The peer does not read our writes (its Pings must not grow our memory). */
  PeerNotReading: 2,
  /** The peer closed or broke the protocol: what follows is not read. */
  Draining: 4
} as const

/**
 * Where the transport is: `Live` (reading and writing), `Ending` (our side of
 * TCP is closed after the last writes; waiting for the peer's), `Gone` (the
 * socket has closed).
 */
type Phase = "Live" | "Ending" | "Gone"

/** Milliseconds a deferred Close waits for a handler that is not consuming its messages. */
const SUBSCRIBE_GRACE = 100

const EMPTY = new Uint8Array(0)

let nextId = 1

/** A Ping of the application's, waiting for its Pong. */
interface PendingPing {
  readonly payload: Uint8Array
  readonly sentAt: number
  readonly resume: (effect: Effect.Effect<number, WebSocketError>) => void
}

/** @internal */
export class Driver {
  readonly id = nextId++
  readonly handle: WebSocket.WebSocketConnection
  readonly request: WebSocket.Request
  readonly protocol: string | undefined
  readonly extensions: string | undefined
  readonly socket: Duplex
  readonly limits: Limits
  /** The protocol state; replaced by every step. */
  private state: Connection.State
  private phase: Phase = "Live"
  /** The reasons reading is paused (bits of `Pause`). */
  private paused = 0
  readonly outbox: Outbox
  readonly inbox: Inbox
  private readonly compression: Compression | undefined
  private readonly options: DriverOptions
  private closeTimer: ReturnType<typeof setTimeout> | undefined = undefined
  private deferTimer: ReturnType<typeof setTimeout> | undefined = undefined
  private overTimer: ReturnType<typeof setTimeout> | undefined = undefined
  private readonly createdAt: number
  /** Time of the last bytes received, for the idle timeout. */
  private lastReceived: number
  /** Time of the last automatic Ping. */
  private lastPing: number
  private dropped = 0
  private outcome: WebSocket.CloseOutcome | undefined = undefined
  /** Created on the first wait for the outcome, if any comes before the end. */
  private outcomeWaiter: Deferred.Deferred<WebSocket.CloseOutcome> | undefined = undefined
  private pings: Array<PendingPing> | undefined = undefined
  private pingCounter = 0
  private over = false
  /** True while an inflated message is stepped: its delivery is in order already. */
  private inflating = false

  constructor(options: DriverOptions) {
    this.options = options
    this.socket = options.socket
    this.limits = options.limits
    this.request = options.request
    this.protocol = options.protocol
    this.extensions = options.extensions
    this.createdAt = this.lastReceived = this.lastPing = options.clock.now
    this.state = Connection.initial({ maxMessageSize: options.limits.maxMessageSize, compression: options.codec !== undefined })
    this.outbox = new Outbox(options.socket, options.limits.highWaterMark, () => this.onWritten())
    this.inbox = new Inbox({ onProgress: () => this.onInboxProgress(), closedError: () => this.receiveError() })
    this.compression = options.codec === undefined ? undefined : new Compression(
      options.codec,
      options.deflateThreshold,
      options.limits.maxMessageSize,
      options.run,
      {
        received: (message) => this.inbox.push(message),
        inflated: (text, data) => {
          // Its Deliver goes straight to the inbox: this is its turn in the order.
          this.inflating = true
          this.afterInput({ _tag: "Inflated", text, data })
          this.inflating = false
        },
        inflateFailed: (reason) => this.afterInput({ _tag: "InflateFailed", reason }),
        send: (payload, text, compressed) => this.sendFrame(payload, text, compressed),
        deflateFailed: () => this.input({ _tag: "Fail", reason: CloseReason.internalError("compression failed") })
      }
    )
    this.handle = new Handle(this)
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
    if (this.paused === 0 && this.phase === "Live") socket.resume()
  }

  // ---------------------------------------------------------------------------
  // the protocol step and its actions
  // ---------------------------------------------------------------------------

  /** Runs one input through `Connection.step` and carries out its actions. */
  input(input: Connection.Input): void {
    if (this.state._tag === "Closed") return
    const result = Connection.step(this.state, input)
    this.state = result.state
    this.perform(result.actions)
  }

  /** An input from outside a read (inflate results): its writes and deliveries are flushed and handed over. */
  private afterInput(input: Connection.Input): void {
    this.input(input)
    this.afterRead()
    if (this.state._tag === "Draining") this.checkHandlerIdle()
    if (this.outbox.pending()) this.outbox.flush()
  }

  private perform(actions: ReadonlyArray<Connection.Action>): void {
    for (let i = 0; i < actions.length; i++) {
      const action = actions[i]!
      switch (action._tag) {
        case "Write": {
          const chunks = action.chunks
          for (let j = 0; j < chunks.length; j++) this.outbox.encoded(chunks[j]!)
          break
        }
        case "Deliver":
          if (this.compression === undefined || this.inflating) this.inbox.push(action.data)
          else this.compression.receive(action.data)
          break
        case "DeliverCompressed":
          this.compression?.receiveCompressed(action.text, action.data)
          break
        case "Pong":
          this.answerPing(action.payload)
          break
        case "AwaitHandler":
          this.awaitHandler()
          break
        case "ArmCloseTimer":
          this.clearTimer("closeTimer")
          this.closeTimer = setTimeout(() => {
            this.closeTimer = undefined
            this.input({ _tag: "CloseTimeout" })
          }, this.limits.closeTimeout)
          break
        case "CancelCloseTimer":
          this.clearTimer("closeTimer")
          break
        case "CloseTransport":
          this.closeTransport()
          break
        case "Closed":
          this.finish(action.outcome)
          break
        default: {
          const _exhaustive: never = action
          return _exhaustive
        }
      }
    }
  }

  // ---------------------------------------------------------------------------
  // reading
  // ---------------------------------------------------------------------------

  /** @internal */
  onData(chunk: Uint8Array): void {
    this.lastReceived = this.options.clock.now
    // Everything written while this chunk is handled (Pongs, Closes, and the
    // answers of a handler resumed synchronously by `afterRead`) goes out in
    // one write at the end, with no microtask in between.
    this.outbox.batching = true
    this.input({ _tag: "Bytes", chunk })
    this.afterRead()
    this.outbox.batching = false
    if (this.outbox.pending()) this.outbox.flush()
  }

  /** Hands waiting messages over and applies inbound backpressure. */
  private afterRead(): void {
    this.inbox.hand()
    if (this.phase !== "Live") return
    // Messages still inflating count: they are received and not yet taken.
    if (this.inbox.size + (this.compression?.pendingInbound ?? 0) >= this.limits.inboxHighWaterMark) this.pause(Pause.InboxFull)
    // RFC 6455 §5.5.2 makes us answer every Ping; a peer that pings without
    // reading our writes must not grow our memory: stop reading it instead.
    if (this.outbox.buffered() > this.limits.maxBufferedAmount) {
      this.pause(Pause.PeerNotReading)
      this.outbox.watch = true
    }
  }

  private pause(reason: number): void {
    this.paused |= reason
    this.socket.pause()
  }

  private unpause(reason: number): void {
    if ((this.paused & reason) === 0) return
    this.paused &= ~reason
    if (this.paused === 0 && this.phase === "Live") this.socket.resume()
  }

  /** The handler took messages, came back for more, or stopped consuming. */
  private onInboxProgress(): void {
    if (this.inbox.size + (this.compression?.pendingInbound ?? 0) < this.limits.inboxHighWaterMark) this.unpause(Pause.InboxFull)
    if (this.state._tag === "Draining") this.checkHandlerIdle()
    if (this.phase === "Gone") this.checkOver()
  }

  /** What was buffered reached the kernel. */
  private onWritten(): void {
    if (this.socket.writableLength < this.limits.highWaterMark) {
      this.outbox.watch = false
      this.unpause(Pause.PeerNotReading)
    }
  }

  // ---------------------------------------------------------------------------
  // the delayed Close
  // ---------------------------------------------------------------------------

  /**
   * Our Close waits until the handler has taken what arrived before the
   * peer's Close (or the violation): it comes back for more with nothing
   * left, stops consuming, or the wait times out (`closeTimeout` while it
   * consumes; a short grace when it does not, since one that never reads must
   * not delay our answer: RFC 6455 §5.5.1, "as soon as practical").
   */
  private awaitHandler(): void {
    this.pause(Pause.Draining)
    this.armDeferTimer()
    // The step's own deliveries precede this action: they are in the inbox.
    this.checkHandlerIdle()
  }

  private armDeferTimer(): void {
    this.clearTimer("deferTimer")
    const wait = this.inbox.consuming ? this.limits.closeTimeout : Math.min(this.limits.closeTimeout, SUBSCRIBE_GRACE)
    this.deferTimer = setTimeout(() => {
      this.deferTimer = undefined
      this.input({ _tag: "HandlerIdle" })
    }, wait)
  }

  private checkHandlerIdle(): void {
    if (this.state._tag !== "Draining") return
    this.inbox.hand()
    if (this.inbox.idle() && (this.compression?.pendingInbound ?? 0) === 0) {
      this.clearTimer("deferTimer")
      this.input({ _tag: "HandlerIdle" })
      if (this.outbox.pending() && !this.outbox.batching) this.outbox.flush()
    } else if (!this.inbox.consuming) {
      // Between consumers (or none yet): only the short grace.
      this.armDeferTimer()
    }
  }

  // ---------------------------------------------------------------------------
  // sending
  // ---------------------------------------------------------------------------

  /** One data frame, if the state allows it (`Connection.sendHeader`). */
  private sendFrame(payload: Uint8Array, text: boolean, compressed: boolean): boolean {
    const first = Connection.sendHeader(this.state, text, compressed)
    if (first < 0) return false
    this.outbox.frame(first, payload)
    return true
  }

  /** Sends under `policy`; see the handle's `send`. */
  send(messages: ReadonlyArray<Message>, policy: WebSocket.OverflowPolicy): Effect.Effect<void, WebSocketError> {
    if (!Connection.canSend(this.state)) return Effect.fail(this.closedError())
    const buffered = this.outbox.buffered()
    if (buffered > this.limits.maxBufferedAmount) {
      switch (policy) {
        case "drop":
          this.dropped += messages.length
          return Effect.void
        case "close":
          this.input({ _tag: "Close", reason: CloseReason.policyViolation("outbound buffer overflow") })
          return Effect.fail(this.overflowError(buffered))
        case "wait":
          return Effect.andThen(this.outbox.awaitDrain(), Effect.suspend(() => this.send(messages, policy)))
      }
    }
    const compression = this.compression
    if (compression !== undefined) {
      const sent = Effect.callback<void, WebSocketError>((resume) => {
        compression.send(messages, (ok) => resume(ok ? Effect.void : Effect.fail(this.closedError())))
      })
      return policy === "wait" ? Effect.andThen(sent, Effect.suspend(() => this.drained())) : sent
    }
    const state = this.state
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i]!
      if (typeof message === "string") this.outbox.text(Connection.sendHeader(state, true, false), message)
      else this.outbox.frame(Connection.sendHeader(state, false, false), message)
    }
    return policy === "wait" ? this.drained() : Effect.void
  }

  private drained(): Effect.Effect<void> {
    return this.outbox.buffered() > this.limits.highWaterMark ? this.outbox.awaitDrain() : Effect.void
  }

  /** See the handle's `trySend`. */
  trySend(message: Message, policy: "drop" | "close"): WebSocket.SendStatus {
    if (!Connection.canSend(this.state)) return "closed"
    if (this.outbox.buffered() > this.limits.maxBufferedAmount) {
      if (policy === "drop") {
        this.dropped++
        return "dropped"
      }
      this.input({ _tag: "Close", reason: CloseReason.policyViolation("outbound buffer overflow") })
      return "closed"
    }
    if (this.compression !== undefined) this.compression.send([message], ignore)
    else if (typeof message === "string") this.outbox.text(Connection.sendHeader(this.state, true, false), message)
    else this.outbox.frame(Connection.sendHeader(this.state, false, false), message)
    return this.outbox.buffered() > this.limits.highWaterMark ? "queued" : "sent"
  }

  /** See the handle's `ping`. */
  ping(payload: Uint8Array | undefined): Effect.Effect<number, WebSocketError> {
    return Effect.callback<number, WebSocketError>((resume) => {
      if (this.state._tag !== "Open") return resume(Effect.fail(this.closedError()))
      let bytes = payload
      if (bytes === undefined) {
        // A payload of our own, so that its Pong is told apart from others.
        const n = this.pingCounter = (this.pingCounter + 1) >>> 0
        bytes = Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff)
      }
      const pending: PendingPing = { payload: bytes, sentAt: performance.now(), resume }
      ;(this.pings ??= []).push(pending)
      this.input({ _tag: "Ping", payload: bytes })
      return Effect.sync(() => {
        const pings = this.pings
        const i = pings?.indexOf(pending) ?? -1
        if (i >= 0) pings!.splice(i, 1)
      })
    })
  }

  /** A Pong arrived: it answers the oldest Ping of ours with the same payload (RFC 6455 §5.5.3). */
  private answerPing(payload: Uint8Array): void {
    const pings = this.pings
    if (pings === undefined) return
    const i = pings.findIndex((p) => sameBytes(p.payload, payload))
    if (i < 0) return
    const [answered] = pings.splice(i, 1)
    answered!.resume(Effect.succeed(performance.now() - answered!.sentAt))
  }

  /** See the handle's `close`. */
  close(code: number, reason: string): Effect.Effect<WebSocket.CloseOutcome, WebSocketError> {
    if (!CloseReason.isSendable(code)) {
      return Effect.fail(this.invalidClose(code, `${code} may not be sent in a Close frame (1000-1003, 1007-1014, 3000-4999)`))
    }
    const bytes = Buffer.byteLength(reason, "utf8")
    if (bytes > CloseReason.maxReasonBytes) {
      return Effect.fail(this.invalidClose(code, `the reason is ${bytes} UTF-8 bytes, more than ${CloseReason.maxReasonBytes}`))
    }
    this.input({ _tag: "Close", reason: CloseReason.application(code, reason) })
    return this.awaitOutcome()
  }

  /** Ends the closing handshake we started, for the server (handler ended, shutdown, ...). */
  closeWith(reason: CloseReason.CloseReason): void {
    this.input({ _tag: "Close", reason })
  }

  /** The code of the Close we sent or will send, for logs. */
  sentCode(): number | undefined {
    const state = this.state
    switch (state._tag) {
      case "Closing":
        return state.detail.code
      case "Draining":
        return state.reply.code
      case "Closed":
        return state.outcome.detail?.code
      case "Open":
        return undefined
    }
  }

  // ---------------------------------------------------------------------------
  // the outcome and errors
  // ---------------------------------------------------------------------------

  awaitOutcome(): Effect.Effect<WebSocket.CloseOutcome> {
    if (this.outcome !== undefined) return Effect.succeed(this.outcome)
    this.outcomeWaiter ??= Deferred.makeUnsafe<WebSocket.CloseOutcome>()
    return Deferred.await(this.outcomeWaiter)
  }

  get droppedMessages(): number {
    return this.dropped
  }

  private closedError(): WebSocketError {
    const outcome = this.outcome
    return new WebSocketError({
      reason: new ConnectionClosed({
        connection: this.id,
        code: outcome?.code ?? Frame.CloseCode.NoStatusReceived,
        reason: outcome?.reason ?? "closing"
      })
    })
  }

  /** What `receive` fails with at the end: the violation that ended the connection, or its close. */
  private receiveError(): WebSocketError {
    const detail = this.outcome?.detail
    if (detail !== undefined && CloseReason.isViolation(detail)) {
      return new WebSocketError({ reason: new ProtocolViolation({ connection: this.id, code: detail.code, reason: detail.reason }) })
    }
    return this.closedError()
  }

  private overflowError(buffered: number): WebSocketError {
    return new WebSocketError({
      reason: new BufferOverflow({ connection: this.id, bufferedAmount: buffered, limit: this.limits.maxBufferedAmount })
    })
  }

  private invalidClose(code: number, problem: string): WebSocketError {
    return new WebSocketError({ reason: new InvalidClose({ connection: this.id, code, problem }) })
  }

  /** Whether an error is this connection's own ConnectionClosed: its normal end. */
  isOwnClose(error: unknown): boolean {
    return error instanceof WebSocketError && error.reason._tag === "ConnectionClosed" && error.reason.connection === this.id
  }

  private finish(outcome: WebSocket.CloseOutcome): void {
    if (this.outcome !== undefined) return
    this.outcome = outcome
    this.clearTimer("closeTimer")
    this.clearTimer("deferTimer")
    // RFC 6455 §7.1.7: nothing more is processed (what was due was delivered while draining).
    this.compression?.stop()
    this.inbox.end()
    this.inbox.hand()
    const pings = this.pings
    this.pings = undefined
    if (pings !== undefined) for (const p of pings) p.resume(Effect.fail(this.closedError()))
    if (this.outcomeWaiter !== undefined) Deferred.doneUnsafe(this.outcomeWaiter, Effect.succeed(outcome))
  }

  // ---------------------------------------------------------------------------
  // timers and teardown
  // ---------------------------------------------------------------------------

  /**
   * Called by the server's timer sweep (one timer for all connections):
   * the maximum lifetime, the idle timeout and the automatic Ping.
   */
  tick(now: number): void {
    if (this.state._tag !== "Open") return
    const { idleTimeout, pingInterval, maxLifetime } = this.limits
    if (maxLifetime > 0 && now - this.createdAt >= maxLifetime) {
      return this.input({ _tag: "Close", reason: CloseReason.goingAway("maximum lifetime reached") })
    }
    // A peer we stopped reading (our handler is behind) is not idle.
    if ((this.paused & Pause.InboxFull) !== 0) this.lastReceived = now
    if (idleTimeout > 0 && now - this.lastReceived >= idleTimeout) {
      return this.input({ _tag: "Close", reason: CloseReason.goingAway("idle timeout") })
    }
    if (pingInterval > 0 && now - this.lastPing >= pingInterval) {
      this.lastPing = now
      this.input({ _tag: "Ping", payload: EMPTY })
    }
  }

  private clearTimer(name: "closeTimer" | "deferTimer" | "overTimer"): void {
    const timer = this[name]
    if (timer !== undefined) {
      clearTimeout(timer)
      this[name] = undefined
    }
  }

  /**
   * Ends our side of TCP after the pending writes (the server closes first,
   * RFC 6455 §7.1.1), keeps reading so that the peer's last bytes do not turn
   * into a reset, and destroys the socket if the peer does not close in time.
   */
  private closeTransport(): void {
    if (this.phase !== "Live") return
    this.phase = "Ending"
    this.outbox.flush()
    this.outbox.end()
    const socket = this.socket
    if (socket.destroyed) return
    this.paused = 0
    socket.off("data", onSocketData)
    socket.on("data", ignore)
    socket.resume()
    socket.end()
    const linger = setTimeout(() => socket.destroy(), this.limits.closeTimeout)
    socket.once("close", () => clearTimeout(linger))
  }

  /** Drops the connection without a closing handshake (the outcome is 1006, ours). */
  terminate(): void {
    this.input({ _tag: "Abort" })
    this.dispose()
  }

  /** @internal */
  onSocketClose(): void {
    this.input({ _tag: "EndOfStream" })
    this.dispose()
    this.phase = "Gone"
    this.options.onEnd(this, this.outcome!)
    this.checkOver()
  }

  /**
   * The handler may stop once the connection is over and it has every
   * message: at once when it never consumed them or has taken them all; a
   * consumer that still has messages to take gets up to `closeTimeout`.
   */
  private checkOver(): void {
    if (this.over) return
    if (!this.inbox.subscribed || this.inbox.drained() && this.inbox.idle()) {
      this.over = true
      this.clearTimer("overTimer")
      this.options.onOver(this)
    } else if (this.overTimer === undefined) {
      this.overTimer = setTimeout(() => {
        this.overTimer = undefined
        this.over = true
        this.options.onOver(this)
      }, this.limits.closeTimeout)
    }
  }

  /** Tears everything down; safe to call more than once. */
  dispose(): void {
    this.clearTimer("closeTimer")
    this.clearTimer("deferTimer")
    if (!this.socket.destroyed) this.socket.destroy()
    this.input({ _tag: "EndOfStream" })
    this.outbox.end()
  }

  /** Drops what remains at the end of a shutdown (after `shutdownTimeout`). */
  abort(): void {
    this.terminate()
    this.clearTimer("overTimer")
  }
}

const ignore = (): void => {}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

const DRIVER = Symbol.for("websock/Driver")

interface DriverSocket extends Duplex {
  [DRIVER]?: Driver
}

// One listener of each kind for all sockets (no closures per connection):
// the socket carries its driver.
function onSocketData(this: DriverSocket, chunk: Uint8Array): void {
  this[DRIVER]!.onData(chunk)
}
function onSocketEnd(this: DriverSocket): void {
  this[DRIVER]!.input({ _tag: "EndOfStream" })
}
function onSocketError(this: DriverSocket): void {
  // A reset or a write to a peer that went away: the connection is over.
  // The error is reported through the outcome (1006), never thrown.
  this[DRIVER]!.dispose()
}
function onSocketClose(this: DriverSocket): void {
  this[DRIVER]!.onSocketClose()
}
function onSocketDrain(this: DriverSocket): void {
  this[DRIVER]!.outbox.written()
}

/**
 * The handle given to handlers: a thin view of its driver, with nothing
 * allocated per connection beyond itself (streams and effects are made when
 * asked for).
 */
class Handle implements WebSocket.WebSocketConnection {
  readonly #driver: Driver
  constructor(driver: Driver) {
    this.#driver = driver
  }
  get id(): number {
    return this.#driver.id
  }
  get request(): WebSocket.Request {
    return this.#driver.request
  }
  get protocol(): string | undefined {
    return this.#driver.protocol
  }
  get extensions(): string | undefined {
    return this.#driver.extensions
  }
  get messages(): Stream.Stream<Message> {
    return this.#driver.inbox.stream()
  }
  get receive(): Effect.Effect<Message, WebSocketError> {
    return this.#driver.inbox.receive()
  }
  send(message: Message): Effect.Effect<void, WebSocketError> {
    return Effect.suspend(() => this.#driver.send([message], this.#driver.limits.overflow))
  }
  sendAll(messages: ReadonlyArray<Message>): Effect.Effect<void, WebSocketError> {
    return Effect.suspend(() => (messages.length === 0 ? Effect.void : this.#driver.send(messages, this.#driver.limits.overflow)))
  }
  trySend(message: Message, options?: { readonly overflow?: "drop" | "close" }): Effect.Effect<WebSocket.SendStatus> {
    return Effect.sync(() => this.#driver.trySend(message, options?.overflow ?? "drop"))
  }
  ping(payload?: Uint8Array): Effect.Effect<number, WebSocketError> {
    return Effect.suspend(() => this.#driver.ping(payload))
  }
  close(code: number = Frame.CloseCode.Normal, reason = ""): Effect.Effect<WebSocket.CloseOutcome, WebSocketError> {
    return Effect.suspend(() => this.#driver.close(code, reason))
  }
  get terminate(): Effect.Effect<void> {
    return Effect.sync(() => this.#driver.terminate())
  }
  get closed(): Effect.Effect<WebSocket.CloseOutcome> {
    return Effect.suspend(() => this.#driver.awaitOutcome())
  }
  get bufferedAmount(): Effect.Effect<number> {
    return Effect.sync(() => this.#driver.outbox.buffered())
  }
  get droppedMessages(): Effect.Effect<number> {
    return Effect.sync(() => this.#driver.droppedMessages)
  }
}
