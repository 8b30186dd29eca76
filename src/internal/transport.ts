/**
 * The TCP socket under one connection: its listeners, reading paused for
 * named reasons (among them a peer that does not read our writes), and its
 * lifecycle (`Live`, `Ending`, `Gone`), including the end of our side after
 * the last writes and the two waits for the peer at the end: for its Close
 * once we sent ours (the close timer, armed and cancelled as
 * `Connection.step` says), and for its FIN once we ended TCP.
 *
 * The listeners are shared by every socket (one function per event, no
 * closure per connection): the socket carries its connection, which gets
 * one method call per event.
 *
 * @internal
 */
import type { Duplex } from "node:stream"
import type * as Connection from "../Connection.ts"
import type { Outbox } from "./outbox.ts"

/** The connection, as its socket's events reach it. */
export interface SocketEvents {
  onData(chunk: Uint8Array): void
  /** Fed `EndOfStream` when the peer ends its side of TCP. */
  input(input: Connection.Input): void
  /** A reset, or a write to a peer that went away: the connection is over (reported through its outcome, never thrown). */
  dispose(): void
  /** The socket has closed. */
  onClose(): void
  /** Told when what was buffered has reached the kernel ('drain'). */
  readonly outbox: { written(): void }
}

/**
 * Why the socket is not being read (bits: several may hold at once).
 *
 * @internal
 */
export const Pause = {
  /** The handler has not taken `inboxHighWaterMark` messages. */
  InboxFull: 1,
  /** The peer does not read our writes (its Pings must not grow our memory). */
  PeerNotReading: 2,
  /** The peer closed or broke the protocol: what follows is not read. */
  Draining: 4
} as const

/** @internal */
export type Pause = typeof Pause[keyof typeof Pause]

/**
 * Where the transport is: `Live` (reading and writing), `Ending` (our side of
 * TCP is closed after the last writes; waiting for the peer's), `Gone` (the
 * socket has closed).
 */
type Phase = "Live" | "Ending" | "Gone"

/** The limits the transport applies, in bytes or milliseconds. */
export interface TransportLimits {
  /** Buffered below this again, a peer we stopped reading is read again. */
  readonly highWaterMark: number
  /** Buffered above this, the peer is not read. */
  readonly maxBufferedAmount: number
  /** How long the peer has to answer our Close, and to close TCP after we ended our side. */
  readonly closeTimeout: number
}

/** @internal */
export class Transport {
  private phase: Phase = "Live"
  /** The reasons reading is paused (bits of `Pause`). */
  private paused = 0
  private closeTimer: ReturnType<typeof setTimeout> | undefined = undefined
  private readonly socket: Duplex
  private readonly outbox: Outbox
  private readonly limits: TransportLimits

  constructor(socket: Duplex, outbox: Outbox, limits: TransportLimits) {
    this.socket = socket
    this.outbox = outbox
    this.limits = limits
  }

  /** Reading and writing: our side of TCP is not closed yet. */
  get live(): boolean {
    return this.phase === "Live"
  }

  /** The socket has closed. */
  get gone(): boolean {
    return this.phase === "Gone"
  }

  /** Listens to the socket's events on behalf of `events`. */
  attach(events: SocketEvents): void {
    const socket = this.socket as OwnedSocket
    socket[OWNER] = events
    socket.on("data", onSocketData)
    socket.on("end", onSocketEnd)
    socket.on("error", onSocketError)
    socket.on("close", onSocketClose)
    socket.on("drain", onSocketDrain)
  }

  /** Reads, unless a reason to pause holds or our side has ended. */
  resume(): void {
    if (this.paused === 0 && this.phase === "Live") this.socket.resume()
  }

  isPaused(reason: Pause): boolean {
    return (this.paused & reason) !== 0
  }

  pause(reason: Pause): void {
    this.paused |= reason
    this.socket.pause()
  }

  unpause(reason: Pause): void {
    if ((this.paused & reason) === 0) return
    this.paused &= ~reason
    this.resume()
  }

  /**
   * After a read. RFC 6455 §5.5.2 makes us answer every Ping; a peer that
   * pings without reading our writes must not grow our memory: stop reading
   * it instead, until what we buffered is written (`written`).
   */
  checkPeerReading(): void {
    if (this.outbox.buffered() > this.limits.maxBufferedAmount) {
      this.pause(Pause.PeerNotReading)
      this.outbox.watch = true
    }
  }

  /** What was buffered reached the kernel. */
  written(): void {
    if (this.socket.writableLength < this.limits.highWaterMark) {
      this.outbox.watch = false
      this.unpause(Pause.PeerNotReading)
    }
  }

  /**
   * Ends our side of TCP after the pending writes (the server closes first,
   * RFC 6455 §7.1.1), keeps reading so that the peer's last bytes do not turn
   * into a reset, and destroys the socket if the peer does not close within
   * `closeTimeout`.
   */
  close(): void {
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
    const timer = setTimeout(() => socket.destroy(), this.limits.closeTimeout)
    socket.once("close", () => clearTimeout(timer))
  }

  /** Our Close went out: the peer has `closeTimeout` to answer it (then `CloseTimeout` is stepped). */
  armCloseTimer(): void {
    this.cancelCloseTimer()
    const socket = this.socket as OwnedSocket
    this.closeTimer = setTimeout(() => {
      this.closeTimer = undefined
      socket[OWNER]!.input(CLOSE_TIMEOUT)
    }, this.limits.closeTimeout)
  }

  cancelCloseTimer(): void {
    clearTimeout(this.closeTimer)
    this.closeTimer = undefined
  }

  /** The socket has closed. */
  closed(): void {
    this.phase = "Gone"
  }

  destroy(): void {
    if (!this.socket.destroyed) this.socket.destroy()
  }
}

const ignore = (): void => {}

const END_OF_STREAM: Connection.Input = { _tag: "EndOfStream" }
const CLOSE_TIMEOUT: Connection.Input = { _tag: "CloseTimeout" }

const OWNER = Symbol.for("websock/Driver")

interface OwnedSocket extends Duplex {
  [OWNER]?: SocketEvents
}

function onSocketData(this: OwnedSocket, chunk: Uint8Array): void {
  this[OWNER]!.onData(chunk)
}
function onSocketEnd(this: OwnedSocket): void {
  this[OWNER]!.input(END_OF_STREAM)
}
function onSocketError(this: OwnedSocket): void {
  this[OWNER]!.dispose()
}
function onSocketClose(this: OwnedSocket): void {
  this[OWNER]!.onClose()
}
function onSocketDrain(this: OwnedSocket): void {
  this[OWNER]!.outbox.written()
}
