/**
 * The application's data messages on their way out of one connection (the
 * handle's `send`, `sendAll` and `trySend`): the overflow policy when the
 * peer does not read (`wait`, `drop`, `close`), the choice between the
 * `Compression` queue and the `Outbox` directly, and the wait for the buffer
 * to drain below the high-water mark.
 *
 * Whether a message may go out, and the first byte of its frame, are
 * `Connection`'s (`canSend`, `sendHeader`): nothing is allocated per message
 * on the uncompressed path beyond what the outbox queues.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as CloseReason from "../CloseReason.ts"
import * as Connection from "../Connection.ts"
import type { WebSocketError } from "../Errors.ts"
import type * as WebSocket from "../WebSocket.ts"
import type { Compression } from "./compression.ts"
import { overflowError } from "./errors.ts"
import type { Instruments } from "./metrics.ts"
import type { Outbox } from "./outbox.ts"
import { Outcome, type Shared } from "./topics.ts"

type Message = WebSocket.Message

/** The connection, as its sender sees it. */
export interface SendTarget {
  readonly id: number
  /** The protocol state now: whether, and how, a data message may go out. */
  readonly state: Connection.State
  input(input: Connection.Input): void
  closedError(): WebSocketError
}

/** The limits a send obeys, in bytes. */
export interface SendLimits {
  /** Buffered above this, a send overflows: its policy applies. */
  readonly maxBufferedAmount: number
  /** Buffered above this, a `wait` send waits for the drain. */
  readonly highWaterMark: number
  /** The policy of `send`; a published message is never waited for (`"close"` closes, anything else drops). */
  readonly overflow: WebSocket.OverflowPolicy
}

/** @internal */
export class Sender {
  private dropped = 0
  private readonly connection: SendTarget
  private readonly outbox: Outbox
  private readonly compression: Compression | undefined
  private readonly limits: SendLimits
  private readonly instruments: Instruments | undefined

  constructor(
    connection: SendTarget,
    outbox: Outbox,
    compression: Compression | undefined,
    limits: SendLimits,
    instruments: Instruments | undefined
  ) {
    this.instruments = instruments
    this.connection = connection
    this.outbox = outbox
    this.compression = compression
    this.limits = limits
  }

  /** Messages dropped under the "drop" policy so far. */
  get droppedMessages(): number {
    return this.dropped
  }

  /** One data frame, if the state allows it (`Connection.sendHeader`): the compression queue's way out. */
  frame(payload: Uint8Array, text: boolean, compressed: boolean): boolean {
    const first = Connection.sendHeader(this.connection.state, text, compressed)
    if (first < 0) return false
    this.outbox.frame(first, payload)
    return true
  }

  /** Sends under `policy`; see the handle's `send`. */
  send(messages: ReadonlyArray<Message>, policy: WebSocket.OverflowPolicy): Effect.Effect<void, WebSocketError> {
    const connection = this.connection
    if (!Connection.canSend(connection.state)) return Effect.fail(connection.closedError())
    const buffered = this.outbox.buffered()
    if (buffered > this.limits.maxBufferedAmount) {
      switch (policy) {
        case "drop":
          this.dropped += messages.length
          if (this.instruments !== undefined) this.instruments.dropped += messages.length
          return Effect.void
        case "close":
          connection.input({ _tag: "Close", reason: CloseReason.policyViolation("outbound buffer overflow") })
          return Effect.fail(overflowError(connection.id, buffered, this.limits.maxBufferedAmount))
        case "wait":
          return Effect.andThen(this.outbox.awaitDrain(), Effect.suspend(() => this.send(messages, policy)))
      }
    }
    const compression = this.compression
    if (compression !== undefined) {
      const sent = Effect.callback<void, WebSocketError>((resume) => {
        compression.send(messages, (ok) => resume(ok ? Effect.void : Effect.fail(connection.closedError())))
      })
      return policy === "wait" ? Effect.andThen(sent, Effect.suspend(() => this.drained())) : sent
    }
    const state = connection.state
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i]!
      if (typeof message === "string") this.outbox.text(Connection.sendHeader(state, true, false), message)
      else this.outbox.frame(Connection.sendHeader(state, false, false), message)
    }
    return policy === "wait" ? this.drained() : Effect.void
  }

  /** See the handle's `trySend`. */
  trySend(message: Message, policy: "drop" | "close"): WebSocket.SendStatus {
    const connection = this.connection
    if (!Connection.canSend(connection.state)) return "closed"
    if (this.outbox.buffered() > this.limits.maxBufferedAmount) {
      if (policy === "drop") {
        this.dropped++
        if (this.instruments !== undefined) this.instruments.dropped++
        return "dropped"
      }
      connection.input({ _tag: "Close", reason: CloseReason.policyViolation("outbound buffer overflow") })
      return "closed"
    }
    if (this.compression !== undefined) this.compression.send([message], ignore)
    else if (typeof message === "string") this.outbox.text(Connection.sendHeader(connection.state, true, false), message)
    else this.outbox.frame(Connection.sendHeader(connection.state, false, false), message)
    return this.outbox.buffered() > this.limits.highWaterMark ? "queued" : "sent"
  }

  /**
   * A message published to a topic of this connection's: `trySend` with the
   * connection's policy (never waiting) and the frame its publisher encoded
   * once for every subscriber, unless this connection compresses.
   */
  deliver(shared: Shared): Outcome {
    const connection = this.connection
    if (!Connection.canSend(connection.state)) return Outcome.Closed
    if (this.outbox.buffered() > this.limits.maxBufferedAmount) {
      if (this.limits.overflow !== "close") {
        this.dropped++
        if (this.instruments !== undefined) this.instruments.dropped++
        return Outcome.Dropped
      }
      connection.input({ _tag: "Close", reason: CloseReason.policyViolation("outbound buffer overflow") })
      return Outcome.Closed
    }
    if (this.compression !== undefined) this.compression.send([shared.value()], ignore)
    else this.outbox.shared(shared.frame(), shared.text)
    return this.outbox.buffered() > this.limits.highWaterMark ? Outcome.Queued : Outcome.Sent
  }

  private drained(): Effect.Effect<void> {
    return this.outbox.buffered() > this.limits.highWaterMark ? this.outbox.awaitDrain() : Effect.void
  }
}

const ignore = (): void => {}
