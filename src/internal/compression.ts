/**
 * permessage-deflate at run time for one connection: one ordered queue per
 * direction, like ws's Sender. Received messages leave in the order they
 * arrived, whether or not they had to be inflated first; sent messages go out
 * in the order they were sent, whether or not they were deflated (context
 * takeover makes the order of the compressed stream the order of the
 * messages). A message the codec can handle at once (`inflateSync`,
 * `deflateSync`: up to its `syncLimit`) is handled in the queue's own loop,
 * with no fiber and no thread-pool hop; a larger one runs on libuv's thread
 * pool, and the queue waits for it: one message at a time per direction (see
 * `PerMessageDeflate`).
 *
 * Every outcome is reported, none swallowed: a message that does not inflate,
 * or inflates past the size limit, is reported with its close reason; a
 * deflate that fails reports a failure to the sender and to the driver.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { Buffer } from "node:buffer"
import * as CloseReason from "../CloseReason.ts"
import * as PerMessageDeflate from "../PerMessageDeflate.ts"

type Message = string | Uint8Array

/** What the queues tell their driver. */
export interface CompressionEvents {
  /** A received message, in order: already a message, or inflated bytes (`text` says which kind). */
  readonly received: (message: Message) => void
  readonly inflated: (text: boolean, data: Uint8Array) => void
  readonly inflateFailed: (reason: CloseReason.InvalidPayload | CloseReason.MessageTooBig) => void
  /** A message to send, in order: deflated (`compressed`) or not, `original` bytes before. Returns false when the connection refuses it. */
  readonly send: (payload: Uint8Array, text: boolean, compressed: boolean, original: number) => boolean
  /** Deflating failed: the connection cannot go on. */
  readonly deflateFailed: () => void
}

/** A received message waiting for its turn. */
type Inbound =
  | { readonly compressed: false; readonly message: Message }
  | { readonly compressed: true; readonly text: boolean; readonly data: Uint8Array }

/** A batch of messages sent together, and the sender waiting for it. */
interface Outbound {
  readonly messages: ReadonlyArray<Message>
  readonly done: (sent: boolean) => void
  /** The next message to send (past the end: the batch was refused). */
  next: number
}

/** @internal */
export class Compression {
  private inbound: Array<Inbound> = []
  private inflating = false
  /** True while `pumpInbound` runs (it may be re-entered from a delivery). */
  private pumpingIn = false
  /** True while an inflated message is reported: its delivery (`receive`) is in order already. */
  private delivering = false
  private outbound: Array<Outbound> = []
  private deflating = false
  /** Set when the connection is over: queued work is abandoned. */
  private stopped = false
  /** Above 0 while the driver carries out a step's actions (`hold`): inflating waits until `resume`. */
  private held = 0

  private readonly codec: PerMessageDeflate.Codec
  /** Messages below this many bytes go out uncompressed. */
  private readonly threshold: number
  private readonly maxMessageSize: number
  /** Runs an effect detached (with the server's services). */
  private readonly run: <A, E>(effect: Effect.Effect<A, E>) => Promise<Exit.Exit<A, E>>
  private readonly events: CompressionEvents

  constructor(
    codec: PerMessageDeflate.Codec,
    threshold: number,
    maxMessageSize: number,
    run: <A, E>(effect: Effect.Effect<A, E>) => Promise<Exit.Exit<A, E>>,
    events: CompressionEvents
  ) {
    this.codec = codec
    this.threshold = threshold
    this.maxMessageSize = maxMessageSize
    this.run = run
    this.events = events
  }

  /** Received messages not yet handed over (they count against the inbox's high-water mark). */
  get pendingInbound(): number {
    return this.inbound.length + (this.inflating ? 1 : 0)
  }

  /** A received message: delivered now, or after the ones still inflating (an inflated one is delivered now: this is its turn). */
  receive(message: Message): void {
    if (this.delivering || (!this.inflating && this.inbound.length === 0)) return this.events.received(message)
    this.inbound.push({ compressed: false, message })
  }

  /** A received compressed message: inflated after the ones before it. */
  receiveCompressed(text: boolean, data: Uint8Array): void {
    this.inbound.push({ compressed: true, text, data })
    if (this.held === 0) this.pumpInbound()
  }

  /**
   * The driver is about to carry out the actions of one step: a message that
   * would be inflated at once waits until `resume`, so that its outcome (its
   * delivery, or the Close of a failed inflate) comes after the rest of that
   * step's actions (the messages after it wait in the queue, a Pong is
   * written before a Close), as it would if it had inflated on the thread pool.
   */
  hold(): void {
    this.held++
  }

  /** The step's actions are done: inflate what waited. */
  resume(): void {
    if (--this.held === 0 && this.inbound.length > 0) this.pumpInbound()
  }

  private pumpInbound(): void {
    // Re-entered from a delivery below (the handler's code runs inside it):
    // the loop already running takes the message in its turn.
    if (this.pumpingIn) return
    this.pumpingIn = true
    try {
      this.drainInbound()
    } finally {
      this.pumpingIn = false
    }
  }

  private drainInbound(): void {
    while (!this.inflating && !this.stopped && this.inbound.length > 0) {
      const next = this.inbound.shift()!
      if (!next.compressed) {
        this.events.received(next.message)
        continue
      }
      // Small enough to inflate here and now (no inflate is in flight, since
      // this loop only runs when none is): no thread-pool round trip, no fiber.
      const now = this.codec.inflateSync(next.data, this.maxMessageSize)
      if (now !== undefined) {
        if (now instanceof PerMessageDeflate.InflateError) {
          this.inbound = []
          this.events.inflateFailed(now.failure)
          return
        }
        this.delivering = true
        try {
          this.events.inflated(next.text, now)
        } finally {
          this.delivering = false
        }
        continue
      }
      this.inflating = true
      void this.run(this.codec.inflate(next.data, this.maxMessageSize)).then((exit) => {
        this.inflating = false
        if (this.stopped) return
        if (Exit.isSuccess(exit)) {
          this.delivering = true
          this.events.inflated(next.text, exit.value)
          this.delivering = false
        } else {
          const error = exit.cause.reasons.find((r) => r._tag === "Fail")
          const failure = error?._tag === "Fail" ? error.error.failure : CloseReason.invalidPayload("inflate interrupted")
          this.inbound = []
          this.events.inflateFailed(failure)
          return
        }
        this.pumpInbound()
      })
    }
  }

  /** Sends messages in order; `done(false)` when the connection refused them or deflating failed. */
  send(messages: ReadonlyArray<Message>, done: (sent: boolean) => void): void {
    this.outbound.push({ messages, done, next: 0 })
    this.pumpOutbound()
  }

  /**
   * Sends the batches in order. A batch leaves the queue before its sender
   * is told (`done`), since the sender may send again at once, from inside
   * `done`.
   */
  private pumpOutbound(): void {
    while (!this.deflating && this.outbound.length > 0) {
      const batch = this.outbound[0]!
      const result = this.sendFrom(batch)
      if (result === "waiting") return
      this.outbound.shift()
      batch.done(result === "sent")
      if (result === "failed") {
        if (!this.stopped) this.events.deflateFailed()
        return this.failAll()
      }
    }
  }

  /**
   * Sends `batch.messages[batch.next..]`, deflating at once what the codec
   * can, until one must be deflated on the thread pool: then "waiting" while
   * it runs; "failed" when deflating failed.
   */
  private sendFrom(batch: Outbound): "sent" | "refused" | "waiting" | "failed" {
    const messages = batch.messages
    for (let i = batch.next; i < messages.length; i++) {
      if (this.stopped) return "refused"
      const message = messages[i]!
      const text = typeof message === "string"
      const payload = text ? Buffer.from(message, "utf8") : message
      if (payload.length < this.threshold) {
        if (!this.events.send(payload, text, false, payload.length)) return "refused"
        continue
      }
      // Small enough to deflate here and now; this loop runs only when no
      // deflate is in flight, so the compressed stream keeps the send order.
      const now = this.codec.deflateSync(payload)
      if (now !== undefined) {
        // A fault of ours (zlib failed): as for a failed deflate on the thread pool.
        if (now instanceof Error) return "failed"
        if (!this.events.send(now, text, true, payload.length)) return "refused"
        continue
      }
      this.deflating = true
      batch.next = i + 1
      void this.run(this.codec.deflate(payload)).then((exit) => {
        this.deflating = false
        if (Exit.isFailure(exit)) {
          // A fault of ours (zlib died, or the codec was closed under it).
          this.outbound.shift()
          batch.done(false)
          if (!this.stopped) this.events.deflateFailed()
          this.failAll()
          return
        }
        if (!this.events.send(exit.value, text, true, payload.length)) batch.next = messages.length + 1 // refused: the batch fails
        if (batch.next > messages.length) {
          this.outbound.shift()
          batch.done(false)
        }
        this.pumpOutbound()
      })
      return "waiting"
    }
    return "sent"
  }

  private failAll(): void {
    const outbound = this.outbound
    this.outbound = []
    for (const batch of outbound) batch.done(false)
  }

  /** The connection is over: queued messages are abandoned, waiting senders fail. */
  stop(): void {
    this.stopped = true
    this.inbound = []
    if (!this.deflating) this.failAll()
  }
}
