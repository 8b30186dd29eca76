/**
 * What the server's timer sweep checks on an open connection: the maximum
 * lifetime, the idle timeout and the automatic Ping. It keeps the times they
 * count from and says which input, if any, is due; the Close or the Ping
 * itself is `Connection.step`'s.
 *
 * @internal
 */
import * as CloseReason from "../CloseReason.ts"
import type * as Connection from "../Connection.ts"

/** The timers, in milliseconds (0 disables one). */
export interface KeepaliveLimits {
  readonly maxLifetime: number
  readonly idleTimeout: number
  readonly pingInterval: number
}

const PING: Connection.Input = { _tag: "Ping", payload: new Uint8Array(0) }

/** @internal */
export class Keepalive {
  private readonly createdAt: number
  /** Time of the last bytes received, for the idle timeout. */
  private lastReceived: number
  /** Time of the last automatic Ping. */
  private lastPing: number
  private readonly limits: KeepaliveLimits

  constructor(now: number, limits: KeepaliveLimits) {
    this.createdAt = this.lastReceived = this.lastPing = now
    this.limits = limits
  }

  /** Bytes arrived. */
  received(now: number): void {
    this.lastReceived = now
  }

  /**
   * The input due at `now`, if any: a Close when the connection has lived
   * too long or been idle too long, else a Ping when one is due. A peer we
   * stopped reading (`notReading`: our handler is behind) is not idle.
   */
  due(now: number, notReading: boolean): Connection.Input | undefined {
    const { idleTimeout, pingInterval, maxLifetime } = this.limits
    if (maxLifetime > 0 && now - this.createdAt >= maxLifetime) {
      return { _tag: "Close", reason: CloseReason.goingAway("maximum lifetime reached") }
    }
    if (notReading) this.lastReceived = now
    if (idleTimeout > 0 && now - this.lastReceived >= idleTimeout) {
      return { _tag: "Close", reason: CloseReason.goingAway("idle timeout") }
    }
    if (pingInterval > 0 && now - this.lastPing >= pingInterval) {
      this.lastPing = now
      return PING
    }
    return undefined
  }
}
