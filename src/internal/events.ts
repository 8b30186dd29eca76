/**
 * A route of per-event Effects (`Server.events`) on one connection: `open`
 * once, then `message` for each message in order, one at a time, then
 * `close` once with the outcome. Between events nothing runs for the
 * connection: no fiber, no Stream, only this object waiting as the inbox's
 * consumer. Each event is an Effect in a fiber of the server's, with a scope
 * of its own; one that completes synchronously hands the next message over
 * in the same loop (no recursion per message).
 *
 * The inbox keeps its backpressure: a message is taken when the previous
 * Effect is done, so a slow `message` lets the inbox fill up to
 * `inboxHighWaterMark`, and the socket is no longer read.
 *
 * @internal
 */
import type { NonEmptyReadonlyArray } from "effect/Array"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import type * as WebSocket from "../WebSocket.ts"
import type { Consumer, Inbox } from "./inbox.ts"

type Message = WebSocket.Message

/** The per-event Effects of a route, as `Server.events` takes them. */
export interface Handlers {
  readonly open?: ((socket: WebSocket.WebSocketConnection, accepted: any) => Effect.Effect<unknown, unknown, any>) | undefined
  readonly message: (socket: WebSocket.WebSocketConnection, message: Message, accepted: any) => Effect.Effect<unknown, unknown, any>
  readonly close?:
    | ((socket: WebSocket.WebSocketConnection, outcome: WebSocket.CloseOutcome, accepted: any) => Effect.Effect<unknown, unknown, any>)
    | undefined
}

/** Where a route keeps its per-event Effects, for the engine (`Server.events`). */
export const EventsId: unique symbol = Symbol.for("websock/Server/events") as never

/** What the runner needs of its connection and server. */
export interface EventsHost {
  readonly handle: WebSocket.WebSocketConnection
  readonly inbox: Inbox
  /** The outcome, known once the connection is over. */
  readonly outcome: WebSocket.CloseOutcome | undefined
  /** Forks an event's Effect with the server's services (and the connection's span as its parent). */
  fork(effect: Effect.Effect<unknown, unknown, any>): Fiber.Fiber<unknown, unknown>
  /** `open` or `message` failed or died, or was interrupted (not by the connection's end): close as a handler's end would. */
  stopped(exit: Exit.Exit<unknown, unknown>): void
  /** `close` is done (or there is none): the connection's Effects are over. */
  finished(exit: Exit.Exit<unknown, unknown>): void
}

/** @internal */
export class Events implements Consumer {
  /** The event's fiber, while one runs. */
  private fiber: Fiber.Fiber<unknown, unknown> | undefined = undefined
  /** The connection is over (the engine's `onOver`): `close` runs once no event does. */
  private over = false
  /** `open` or a `message` did not succeed: the remaining messages are discarded. */
  private failed = false
  private closing = false
  /** Inside `pump`'s loop; `again` asks it for one more pull. */
  private pumping = false
  private again = false
  /** A message given while the previous event's fiber had not exited yet: it runs once that fiber is done. */
  private queued: { readonly message: Message } | undefined = undefined
  private readonly handlers: Handlers
  private readonly accepted: unknown
  private readonly host: EventsHost

  constructor(handlers: Handlers, accepted: unknown, host: EventsHost) {
    this.handlers = handlers
    this.accepted = accepted
    this.host = host
  }

  /** Runs `open`, then hands the messages over. */
  start(): void {
    this.host.inbox.start()
    const open = this.handlers.open
    if (open === undefined) return this.pump()
    this.run(Effect.scoped(Effect.suspend(() => open(this.host.handle, this.accepted))))
  }

  /** The connection is over and its messages were delivered (or `closeTimeout` passed): an event still running is interrupted. */
  onOver(): void {
    this.over = true
    if (this.fiber !== undefined) this.fiber.interruptUnsafe()
    else this.closeNow()
  }

  /** A message (the inbox gives one at a time). */
  give(batch: NonEmptyReadonlyArray<Message>): void {
    if (this.failed) {
      // Discarded: pull the rest (the loop of `pump`, which may be running).
      return this.pump()
    }
    // The fiber that asked for it has not exited yet (it yielded after its
    // pull): one event at a time, so this one starts when that fiber is done.
    if (this.fiber !== undefined) {
      this.queued = { message: batch[0] }
      return
    }
    // One fiber for the messages waiting now: it takes the next one itself
    // when an Effect is done, and ends when none waits.
    this.run(this.messages(batch[0]))
  }

  /** No more messages: `close` waits for the engine's `onOver`. */
  end(): void {}

  /** `message` for `first`, then for each message that waits by the time it is done. */
  private messages(first: Message): Effect.Effect<unknown, unknown, any> {
    return Effect.flatMap(
      Effect.scoped(Effect.suspend(() => this.handlers.message(this.host.handle, first, this.accepted))),
      () => this.following()
    )
  }

  private following(): Effect.Effect<unknown, unknown, any> {
    const next = this.host.inbox.nextOne(this)
    // Nothing waits: the inbox gives the next one to `give`, after this fiber.
    return next === undefined ? Effect.void : this.messages(next)
  }

  /** Pulls the next message; the discarding after a failure loops here instead of recursing. */
  private pump(): void {
    if (this.pumping) {
      this.again = true
      return
    }
    this.pumping = true
    do {
      this.again = false
      this.host.inbox.next(this.failed ? Number.MAX_SAFE_INTEGER : 1, this)
    } while (this.again && !this.over)
    this.pumping = false
  }

  private run(effect: Effect.Effect<unknown, unknown, any>): void {
    const fiber = this.host.fork(effect)
    // A fiber that completed synchronously has an exit already.
    const exit = fiber.pollUnsafe()
    if (exit !== undefined) return this.exited(exit)
    this.fiber = fiber
    fiber.addObserver((exit) => {
      if (this.fiber === fiber) this.fiber = undefined
      this.exited(exit)
    })
  }

  private exited(exit: Exit.Exit<unknown, unknown>): void {
    if (this.closing) return this.host.finished(exit)
    const opened = !this.host.inbox.waiting(this)
    if (Exit.isFailure(exit) && !(this.over && Cause.hasInterruptsOnly(exit.cause))) {
      this.failed = true
      this.host.stopped(exit)
    }
    const queued = this.queued
    this.queued = undefined
    if (this.over) return this.closeNow()
    if (queued !== undefined) {
      // Given while this fiber was finishing: its turn now (after a failure, discarded).
      if (!this.failed) return this.run(this.messages(queued.message))
      return this.pump()
    }
    // After `open`, or a failure: pull (a messages' fiber that succeeded waits in the inbox already).
    if (opened) this.pump()
  }

  /** Runs `close` once, with the outcome. */
  private closeNow(): void {
    if (this.closing) return
    this.closing = true
    this.host.inbox.stop()
    const close = this.handlers.close
    const outcome = this.host.outcome
    if (close === undefined || outcome === undefined) return this.host.finished(Exit.void)
    this.run(Effect.scoped(Effect.suspend(() => close(this.host.handle, outcome, this.accepted))))
  }
}
