/**
 * The inbound side of one connection: the messages received and not yet
 * taken by the handler, the one consumer that takes them (a `messages` stream
 * or a `receive`), and the end of the messages.
 *
 * Consumers may follow one another without loss: a consumer's first pull
 * takes one message (so `Stream.runHead`, `Stream.take(1)` and `receive`
 * leave the rest for the next one), later pulls take every message waiting,
 * as one batch. Two consumers at once are refused: the second dies at once.
 *
 * @internal
 */
import type { NonEmptyReadonlyArray } from "effect/Array"
import * as Cause from "effect/Cause"
import * as Channel from "effect/Channel"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { WebSocketError } from "../Errors.ts"

/** A message: text as a string, binary as bytes. */
type Message = string | Uint8Array

/** A consumer's pull: what it is given (a batch, or the end). */
export interface Consumer {
  give(batch: NonEmptyReadonlyArray<Message>): void
  end(): void
}

/** What the inbox tells its driver. */
export interface InboxEvents {
  /** Messages were taken, or the consumer came back for more / went away: the handler may have caught up. */
  onProgress(): void
  /** The error of a `receive` after the end. */
  receiveError(): WebSocketError
}

const CONCURRENT = "websock: the connection's messages are already being consumed (one consumer at a time: a second `messages` stream or `receive` while one runs)"

/** @internal */
export class Inbox {
  private items: Array<Message> = []
  private waiter: Consumer | undefined = undefined
  /** At most this many messages for the waiting consumer. */
  private limit = 1
  private ended = false
  /** The consumer holds a batch it took and has not come back for more. */
  private holding = false
  /** A consumer is running (a stream between its start and its end, or a pending `receive`). */
  private active = false
  /** A consumer has run at some point. */
  private used = false

  private readonly events: InboxEvents

  constructor(events: InboxEvents) {
    this.events = events
  }

  get size(): number {
    return this.items.length
  }

  /** Whether a consumer is running now. */
  get consuming(): boolean {
    return this.active
  }

  /** Whether any consumer ever ran. */
  get subscribed(): boolean {
    return this.used
  }

  /** Nothing waits to be taken and the consumer holds nothing. */
  idle(): boolean {
    return this.items.length === 0 && !this.holding
  }

  /** Whether the end was reached and every message was taken. */
  drained(): boolean {
    return this.ended && this.items.length === 0
  }

  push(message: Message): void {
    this.items.push(message)
  }

  /** Hands waiting messages to a waiting consumer. */
  hand(): void {
    const waiter = this.waiter
    if (waiter === undefined || this.items.length === 0) return
    this.waiter = undefined
    waiter.give(this.take(this.limit))
  }

  /** No more messages will arrive. */
  end(): void {
    this.ended = true
    const waiter = this.waiter
    if (waiter !== undefined && this.items.length === 0) {
      this.waiter = undefined
      waiter.end()
    }
  }

  /** Whether `consumer` waits for messages (its pull is pending). */
  waiting(consumer: Consumer): boolean {
    return this.waiter === consumer
  }

  /** Only called when `items` is not empty. */
  private take(limit: number): NonEmptyReadonlyArray<Message> {
    let batch: Array<Message>
    if (limit >= this.items.length) {
      batch = this.items
      this.items = []
    } else {
      batch = this.items.splice(0, limit)
    }
    this.holding = true
    this.events.onProgress()
    return batch as unknown as NonEmptyReadonlyArray<Message>
  }

  /**
   * One pull: up to `limit` messages, or the end, given to `consumer` now or
   * when they come. Coming back for more means the previous batch has been
   * handled.
   */
  next(limit: number, consumer: Consumer): void {
    this.holding = false
    if (this.items.length > 0) return consumer.give(this.take(limit))
    if (this.ended) {
      // The consumer holds nothing any more: the connection may be over now.
      this.events.onProgress()
      return consumer.end()
    }
    this.waiter = consumer
    this.limit = limit
    this.events.onProgress()
  }

  /**
   * `next(1, consumer)` for a consumer that takes messages one by one: the
   * next message is returned at once if one waits (no batch array, no
   * splice), otherwise `consumer` is given it, or the end, later.
   */
  nextOne(consumer: Consumer): Message | undefined {
    this.holding = false
    if (this.items.length === 0) {
      this.next(1, consumer)
      return undefined
    }
    const message = this.items.shift()!
    this.holding = true
    this.events.onProgress()
    return message
  }

  private cancel(): void {
    this.waiter = undefined
  }

  /** Starts a consumer of its own kind (`next` then pulls); false when one is running. */
  start(): boolean {
    if (this.active) return false
    this.active = true
    this.used = true
    return true
  }

  /** The consumer has stopped. */
  stop(): void {
    this.active = false
    this.holding = false
    this.waiter = undefined
    this.events.onProgress()
  }

  /**
   * The messages as a stream (see the module's note on consumers). One pull
   * effect per stream, whose end is a finalizer of the stream's own scope
   * (no `unwrap` nor `ensuring` layer, the channel's own scope: fewer objects held while it waits).
   */
  stream(): Stream.Stream<Message> {
    return Stream.fromChannel(Channel.fromTransform((_, scope) => Effect.suspend(() => {
      if (!this.start()) return Effect.die(new Error(CONCURRENT))
      let first = true // the first pull takes one message
      const pull = Effect.callback<NonEmptyReadonlyArray<Message>, Cause.Done>((resume) => {
        const limit = first ? 1 : Number.MAX_SAFE_INTEGER
        first = false
        this.next(limit, { give: (batch) => resume(Effect.succeed(batch)), end: () => resume(Cause.done()) })
        return Effect.sync(() => this.cancel())
      })
      return Effect.as(Scope.addFinalizer(scope, Effect.sync(() => this.stop())), pull)
    })))
  }

  /** The next message; fails with the connection's closed error once the messages have ended. */
  receive(): Effect.Effect<Message, WebSocketError> {
    return Effect.suspend(() => {
      if (!this.start()) return Effect.die(new Error(CONCURRENT))
      return Effect.callback<Message, WebSocketError>((resume) => {
        this.next(1, {
          give: (batch) => {
            this.stop()
            resume(Effect.succeed(batch[0]))
          },
          end: () => {
            this.stop()
            resume(Effect.fail(this.events.receiveError()))
          }
        })
        return Effect.sync(() => this.stop())
      })
    })
  }
}
