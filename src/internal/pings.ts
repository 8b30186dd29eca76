/**
 * The application's Pings on one connection (the handle's `ping`): each
 * waits for the Pong with its payload (RFC 6455 §5.5.3) and resolves with
 * the round-trip time; those still waiting when the connection ends fail
 * with its closed error. Keepalive Pings are not here: they expect no answer.
 *
 * The Ping frame itself goes out through `Connection.step` (a `Ping` input),
 * like every other frame.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Connection from "../Connection.ts"
import type { WebSocketError } from "../Errors.ts"

/** The connection, as its Pings see it. */
export interface PingTarget {
  /** The protocol state now: a Ping goes out only while it is `Open`. */
  readonly state: Connection.State
  input(input: Connection.Input): void
  closedError(): WebSocketError
}

/** A Ping of the application's, waiting for its Pong. */
interface PendingPing {
  readonly payload: Uint8Array
  readonly sentAt: number
  readonly resume: (effect: Effect.Effect<number, WebSocketError>) => void
}

/** @internal */
export class Pings {
  /** The Pings waiting for their Pong, oldest first. */
  private pending: Array<PendingPing> = []
  /** The number in the last payload of our own (see `ping`). */
  private counter = 0
  private readonly connection: PingTarget

  constructor(connection: PingTarget) {
    this.connection = connection
  }

  /** See the handle's `ping`. */
  ping(payload: Uint8Array | undefined): Effect.Effect<number, WebSocketError> {
    return Effect.callback<number, WebSocketError>((resume) => {
      const connection = this.connection
      if (connection.state._tag !== "Open") return resume(Effect.fail(connection.closedError()))
      let bytes = payload
      if (bytes === undefined) {
        // A payload of our own, so that its Pong is told apart from others.
        const n = this.counter = (this.counter + 1) >>> 0
        bytes = Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff)
      }
      const pending: PendingPing = { payload: bytes, sentAt: performance.now(), resume }
      this.pending.push(pending)
      connection.input({ _tag: "Ping", payload: bytes })
      return Effect.sync(() => {
        const i = this.pending.indexOf(pending)
        if (i >= 0) this.pending.splice(i, 1)
      })
    })
  }

  /** A Pong arrived: it answers the oldest Ping with the same payload (RFC 6455 §5.5.3). */
  answer(payload: Uint8Array): void {
    const pending = this.pending
    const i = pending.findIndex((p) => sameBytes(p.payload, payload))
    if (i < 0) return
    const [answered] = pending.splice(i, 1)
    answered!.resume(Effect.succeed(performance.now() - answered!.sentAt))
  }

  /** The connection is over: every Ping still waiting fails with its closed error. */
  failAll(): void {
    const pending = this.pending
    this.pending = []
    for (const p of pending) p.resume(Effect.fail(this.connection.closedError()))
  }
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
