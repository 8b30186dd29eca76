/**
 * The end of one connection as the application meets it: the outcome (the
 * handle's `closed`, what `close` returns, what the errors after the end
 * say), waited for until it is known; and the moment the handler may stop
 * (`onOver`), once the socket has closed and the handler has every message:
 * at once when it never consumed them or has taken them all, while a
 * consumer that still has messages to take gets up to `closeTimeout`.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as WebSocket from "../WebSocket.ts"
import type { Inbox } from "./inbox.ts"

/** @internal */
export class Ending {
  /** The outcome, once the connection has one (set once, by `settle`). */
  outcome: WebSocket.CloseOutcome | undefined = undefined
  /** Created on the first wait for the outcome, if any comes before the end. */
  private waiter: Deferred.Deferred<WebSocket.CloseOutcome> | undefined = undefined
  private over = false
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private readonly inbox: Inbox
  private readonly closeTimeout: number
  private readonly owner: { onOver(): void }

  constructor(inbox: Inbox, closeTimeout: number, owner: { onOver(): void }) {
    this.inbox = inbox
    this.closeTimeout = closeTimeout
    this.owner = owner
  }

  /** The outcome, when it is known. */
  await(): Effect.Effect<WebSocket.CloseOutcome> {
    if (this.outcome !== undefined) return Effect.succeed(this.outcome)
    this.waiter ??= Deferred.makeUnsafe<WebSocket.CloseOutcome>()
    return Deferred.await(this.waiter)
  }

  /** Records the outcome; false when there already was one. Those waiting for it are told by `announce`. */
  settle(outcome: WebSocket.CloseOutcome): boolean {
    if (this.outcome !== undefined) return false
    this.outcome = outcome
    return true
  }

  /** Tells those waiting for the outcome (after `settle`). */
  announce(): void {
    if (this.waiter !== undefined && this.outcome !== undefined) Deferred.doneUnsafe(this.waiter, Effect.succeed(this.outcome))
  }

  /** The socket has closed, or since then the handler took messages or stopped consuming: see the module's note. */
  checkOver(): void {
    if (this.over) return
    const inbox = this.inbox
    if (!inbox.subscribed || inbox.drained() && inbox.idle()) {
      this.over = true
      this.cancel()
      this.owner.onOver()
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined
        this.over = true
        this.owner.onOver()
      }, this.closeTimeout)
    }
  }

  /** Stops waiting for the handler to take its messages (the server drops what remains). */
  cancel(): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }
}
