/**
 * Runs one upgraded connection: a thin interpreter of `Connection.step`'s
 * actions over parts with one job each (the `Outbox` writes, the `Inbox`
 * hands messages to the handler, `Compression` keeps permessage-deflate in
 * order, the `Sender` applies the overflow policy to the application's
 * sends, `Pings` matches Pongs to the application's Pings, the `Transport`
 * owns the socket, its read pausing, the close timer and its end,
 * `Keepalive` says when the server's sweep is due to ping or close,
 * `Deferral` when our delayed Close may go out, `Ending` when the handler may
 * stop), and teardown. It decides nothing the RFC rules on: every such
 * decision is an input to `Connection.step`.
 *
 * The hot path (`onData`, the outbox's flush) runs in socket callbacks,
 * outside any fiber: an Effect is allocated per batch of messages handed to
 * the handler, never per frame. Messages are counted there too (the
 * connection's `Tally` and the server's metrics): field increments, no
 * Effect.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import type { Duplex } from "node:stream"
import * as CloseReason from "../CloseReason.ts"
import * as Connection from "../Connection.ts"
import type { WebSocketError } from "../Errors.ts"
import type * as PerMessageDeflate from "../PerMessageDeflate.ts"
import type * as WebSocket from "../WebSocket.ts"
import { Compression } from "./compression.ts"
import { Deferral, type DeferralTarget } from "./deferral.ts"
import { Ending } from "./ending.ts"
import { closedError, invalidClose, isOwnClose, receiveError } from "./errors.ts"
import { Handle, type HandleTarget } from "./handle.ts"
import { Inbox, type InboxEvents } from "./inbox.ts"
import { Keepalive } from "./keepalive.ts"
import type { Masker } from "./masker.ts"
import { type Instruments, Tally } from "./metrics.ts"
import { Outbox } from "./outbox.ts"
import { Pings, type PingTarget } from "./pings.ts"
import { Sender, type SendTarget } from "./sender.ts"
import { Counts, Hub, type Outcome, type Shared, type Subscriber } from "./topics.ts"
import { Pause, type SocketEvents, Transport } from "./transport.ts"

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
  /** The server's metrics, unless turned off. */
  readonly instruments?: Instruments | undefined
  /** The topics the connection may subscribe to and publish to (default: topics of its own). */
  readonly hub?: Hub | undefined
  /** Runs an effect detached, with the server's services (compression work). */
  readonly run: <A, E>(effect: Effect.Effect<A, E>) => Promise<Exit.Exit<A, E>>
  readonly clock: Clock
  /** Who runs the connection: told of its end (methods, so that no closure is made per connection). */
  readonly owner: DriverOwner
  /**
   * Set for the client role: the server's frames must arrive unmasked, and
   * every frame we send is masked with a fresh key from it (RFC 6455 §5.1,
   * §5.3). Unset: the server role.
   */
  readonly masker?: Masker | undefined
}

/**
 * What a driver tells whoever runs it.
 *
 * @internal
 */
export interface DriverOwner {
  /** Called once, when the socket has closed, with the outcome. */
  onEnd(driver: Driver, outcome: WebSocket.CloseOutcome): void
  /** Called once the connection is over and every message received was delivered: the handler may stop. */
  onOver(driver: Driver): void
}

let nextId = 1

/** @internal */
export class Driver implements DeferralTarget, HandleTarget, InboxEvents, PingTarget, SendTarget, SocketEvents, Subscriber {
  readonly id = nextId++
  readonly handle: WebSocket.WebSocketConnection
  readonly request: WebSocket.Request
  readonly protocol: string | undefined
  readonly extensions: string | undefined
  readonly limits: Limits
  /** The protocol state; replaced by every step (`input`), read by the parts. */
  state: Connection.State
  readonly outbox: Outbox
  readonly inbox: Inbox
  readonly sender: Sender
  private readonly transport: Transport
  private readonly compression: Compression | undefined
  private readonly keepalive: Keepalive
  /** The application's Pings, from its first. */
  private pings: Pings | undefined = undefined
  /** The wait before our delayed Close, from the first. */
  private deferral: Deferral | undefined = undefined
  // What it keeps of its options (not the options object: nothing more is held per connection).
  private readonly socket: Duplex
  private readonly masker: Masker | undefined
  private readonly instruments: Instruments | undefined
  private readonly clock: Clock
  private readonly owner: DriverOwner
  private readonly ending: Ending
  /** What this connection sent and received, and the server's metrics. */
  readonly tally: Tally
  /** The topics it subscribes to (the hub's), from the first. */
  topics: Set<string> | undefined = undefined
  private readonly hub: Hub

  constructor(options: DriverOptions) {
    const limits = options.limits
    this.socket = options.socket
    this.masker = options.masker
    this.instruments = options.instruments
    this.clock = options.clock
    this.owner = options.owner
    this.hub = options.hub ?? new Hub(new Counts())
    this.limits = limits
    this.request = options.request
    this.protocol = options.protocol
    this.extensions = options.extensions
    this.keepalive = new Keepalive(options.clock.now, limits)
    this.tally = new Tally(options.instruments)
    this.state = Connection.initial({
      maxMessageSize: limits.maxMessageSize,
      compression: options.codec !== undefined,
      role: options.masker === undefined ? "server" : "client"
    })
    this.outbox = new Outbox(options.socket, limits.highWaterMark, () => this.transport.written(), this.tally)
    this.outbox.masker = options.masker
    this.transport = new Transport(options.socket, this.outbox, limits)
    this.inbox = new Inbox(this)
    this.ending = new Ending(this.inbox, limits.closeTimeout, this)
    this.compression = options.codec === undefined ? undefined : new Compression(
      options.codec,
      options.deflateThreshold,
      limits.maxMessageSize,
      options.run,
      {
        received: (message) => this.inbox.push(message),
        // Inflated at once while a read is handled, the read's end hands over and flushes.
        inflated: (text, data) => {
          if (this.instruments !== undefined) this.instruments.originalReceived += data.length
          if (this.outbox.batching) this.input({ _tag: "Inflated", text, data })
          else this.afterInput({ _tag: "Inflated", text, data })
        },
        inflateFailed: (reason) =>
          this.outbox.batching ? this.input({ _tag: "InflateFailed", reason }) : this.afterInput({ _tag: "InflateFailed", reason }),
        send: (payload, text, compressed, original) => {
          if (!this.sender.frame(payload, text, compressed)) return false
          // Deflated frames are counted here (the outbox counts the others).
          if (compressed) {
            this.tally.sent(text, original)
            const instruments = this.instruments
            if (instruments !== undefined) {
              instruments.originalSent += original
              instruments.compressedSent += payload.length
            }
          }
          return true
        },
        deflateFailed: () => this.input({ _tag: "Fail", reason: CloseReason.internalError("compression failed") })
      }
    )
    this.sender = new Sender(this, this.outbox, this.compression, limits, options.instruments)
    this.handle = new Handle(this)
  }

  /** Attaches the socket and feeds the bytes that came with the upgrade request. */
  start(rest: Uint8Array): void {
    this.transport.attach(this)
    // Closed before the listeners were attached (between the handshake and
    // now): no 'close' event will come.
    if (this.socket.closed) return this.onClose()
    if (rest.length > 0) this.onData(rest)
    // The bytes that came with the request may already have filled the inbox.
    this.transport.resume()
  }

  // ---------------------------------------------------------------------------
  // the protocol step and its actions
  // ---------------------------------------------------------------------------

  /** Runs one input through `Connection.step` and carries out its actions. */
  input(input: Connection.Input): void {
    if (this.state._tag === "Closed") return
    const result = Connection.step(this.state, input)
    this.state = result.state
    const compression = this.compression
    if (compression === undefined) return this.perform(result.actions)
    // Inflating at once happens after this step's actions (see `hold`).
    compression.hold()
    try {
      this.perform(result.actions)
    } finally {
      compression.resume()
    }
  }

  /** An input from outside a read (inflate results): its writes and deliveries are flushed and handed over. */
  private afterInput(input: Connection.Input): void {
    this.input(input)
    this.afterRead()
    this.deferral?.check()
    if (this.outbox.pending()) this.outbox.flush()
  }

  private perform(actions: ReadonlyArray<Connection.Action>): void {
    for (let i = 0; i < actions.length; i++) {
      const action = actions[i]!
      switch (action._tag) {
        case "Write": {
          const chunks = action.chunks
          if (this.masker !== undefined) {
            // Client role: each frame (header, payload) is queued again by its
            // first byte, so that the outbox masks it (RFC 6455 §5.3).
            for (let j = 0; j + 1 < chunks.length; j += 2) this.outbox.frame(chunks[j]![0]!, chunks[j + 1]!)
          } else {
            for (let j = 0; j < chunks.length; j++) this.outbox.encoded(chunks[j]!)
          }
          break
        }
        case "Deliver":
          this.tally.received(typeof action.data === "string", action.size)
          if (this.compression === undefined) this.inbox.push(action.data)
          else this.compression.receive(action.data)
          break
        case "DeliverCompressed":
          // Counted as a message once inflated (its `Deliver`).
          if (this.instruments !== undefined) this.instruments.compressedReceived += action.data.length
          this.compression?.receiveCompressed(action.text, action.data)
          break
        case "Pong":
          this.pings?.answer(action.payload)
          break
        case "AwaitHandler":
          // Our Close waits for the handler: nothing more is read meanwhile.
          this.transport.pause(Pause.Draining)
          ;(this.deferral ??= new Deferral(this, this.inbox, this.compression, this.outbox, this.limits.closeTimeout)).start()
          break
        case "ArmCloseTimer":
          this.transport.armCloseTimer()
          break
        case "CancelCloseTimer":
          this.transport.cancelCloseTimer()
          break
        case "CloseTransport":
          this.transport.close()
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

  /** Bytes from the socket: the hot path. */
  onData(chunk: Uint8Array): void {
    this.keepalive.received(this.clock.now)
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
    if (!this.transport.live) return
    // Messages still inflating count: they are received and not yet taken.
    if (this.inbox.size + (this.compression?.pendingInbound ?? 0) >= this.limits.inboxHighWaterMark) {
      if (this.instruments !== undefined && !this.transport.isPaused(Pause.InboxFull)) this.instruments.pauses++
      this.transport.pause(Pause.InboxFull)
    }
    this.transport.checkPeerReading()
  }

  /** The handler took messages, came back for more, or stopped consuming (the inbox's call). */
  onProgress(): void {
    if (this.inbox.size + (this.compression?.pendingInbound ?? 0) < this.limits.inboxHighWaterMark) this.transport.unpause(Pause.InboxFull)
    this.deferral?.check()
    if (this.transport.gone) this.ending.checkOver()
  }

  // ---------------------------------------------------------------------------
  // the application's Pings and Close, and the outcome
  // ---------------------------------------------------------------------------

  /** The error of a `receive` after the end (the inbox's call). */
  receiveError(): WebSocketError {
    return receiveError(this.id, this.ending.outcome)
  }

  /** The connection is over and every message was delivered (the ending's call). */
  onOver(): void {
    this.owner.onOver(this)
  }

  /** See the handle's `ping`. */
  ping(payload: Uint8Array | undefined): Effect.Effect<number, WebSocketError> {
    return (this.pings ??= new Pings(this)).ping(payload)
  }

  /** See the handle's `close`. */
  close(code: number, reason: string): Effect.Effect<WebSocket.CloseOutcome, WebSocketError> {
    const invalid = invalidClose(this.id, code, reason)
    if (invalid !== undefined) return Effect.fail(invalid)
    this.input({ _tag: "Close", reason: CloseReason.application(code, reason) })
    return this.ending.await()
  }

  /** Ends the closing handshake we started, for the server (handler ended, shutdown, ...). */
  closeWith(reason: CloseReason.CloseReason): void {
    this.input({ _tag: "Close", reason })
  }

  /** The code of the Close we sent or will send, for logs. */
  sentCode(): number | undefined {
    const state = this.state
    return state._tag === "Closing" ? state.detail.code
      : state._tag === "Draining" ? state.reply.code
      : state._tag === "Closed" ? state.outcome.detail?.code
      : undefined
  }

  /** The outcome, once the connection has one. */
  get outcome(): WebSocket.CloseOutcome | undefined {
    return this.ending.outcome
  }

  /** See the handle's `closed`. */
  awaitOutcome(): Effect.Effect<WebSocket.CloseOutcome> {
    return this.ending.await()
  }

  /** The error of an operation that needs an open connection. */
  closedError(): WebSocketError {
    return closedError(this.id, this.ending.outcome)
  }

  /** Whether an error is this connection's own ConnectionClosed: its normal end. */
  isOwnClose(error: unknown): boolean {
    return isOwnClose(this.id, error)
  }

  // ---------------------------------------------------------------------------
  // topics
  // ---------------------------------------------------------------------------

  get subscriber(): Subscriber {
    return this
  }

  /** See the handle's `subscribe`: refused once the connection is closing (its subscriptions are over). */
  subscribe(topic: string): Effect.Effect<void, WebSocketError> {
    if (!Connection.canSend(this.state)) return Effect.fail(this.closedError())
    this.hub.subscribe(this, topic)
    return Effect.void
  }

  unsubscribe(topic: string): void {
    this.hub.unsubscribe(this, topic)
  }

  subscriptions(): ReadonlyArray<string> {
    return this.topics === undefined ? [] : Array.from(this.topics)
  }

  publish(topic: string, message: WebSocket.Message, self: boolean): WebSocket.PublishResult {
    return this.hub.publish(topic, message, self ? undefined : this)
  }

  /** A message published to one of its topics (the hub's call). */
  deliver(message: Shared): Outcome {
    return this.sender.deliver(message)
  }

  private finish(outcome: WebSocket.CloseOutcome): void {
    // Nothing more can be sent: its subscriptions end now.
    this.hub.unsubscribeAll(this)
    if (!this.ending.settle(outcome)) return
    this.transport.cancelCloseTimer()
    this.deferral?.cancel()
    // RFC 6455 §7.1.7: nothing more is processed (what was due was delivered while draining).
    this.compression?.stop()
    this.inbox.end()
    this.inbox.hand()
    this.pings?.failAll()
    this.ending.announce()
  }

  // ---------------------------------------------------------------------------
  // timers and teardown
  // ---------------------------------------------------------------------------

  /** Called by the server's timer sweep (one timer for all connections): see `Keepalive`. */
  tick(now: number): void {
    if (this.state._tag !== "Open") return
    const due = this.keepalive.due(now, this.transport.isPaused(Pause.InboxFull))
    if (due !== undefined) this.input(due)
  }

  /** Drops the connection without a closing handshake (the outcome is 1006, ours). */
  terminate(): void {
    this.input({ _tag: "Abort" })
    this.dispose()
  }

  /** The socket has closed. */
  onClose(): void {
    this.input({ _tag: "EndOfStream" })
    this.dispose()
    this.hub.unsubscribeAll(this)
    this.transport.closed()
    this.owner.onEnd(this, this.ending.outcome!)
    this.ending.checkOver()
  }

  /** Tears everything down; safe to call more than once. */
  dispose(): void {
    this.transport.cancelCloseTimer()
    this.deferral?.cancel()
    this.transport.destroy()
    this.input({ _tag: "EndOfStream" })
    this.outbox.end()
  }

  /** Drops what remains at the end of a shutdown (after `shutdownTimeout`). */
  abort(): void {
    this.terminate()
    this.ending.cancel()
  }
}
