/**
 * The wait before our delayed Close (`Connection`'s `Draining` state): it
 * ends, with a `HandlerIdle` input, once the handler has taken what arrived
 * before the peer's Close (or the violation), messages still inflating
 * included: it comes back for more with nothing left, stops consuming, or
 * the wait times out (`closeTimeout` while it consumes; a short grace when it
 * does not, since one that never reads must not delay our answer: RFC 6455
 * §5.5.1, "as soon as practical").
 *
 * When to stop waiting is decided here; what the Close is, and that it waits
 * at all, are `Connection.step`'s.
 *
 * @internal
 */
import type * as Connection from "../Connection.ts"
import type { Compression } from "./compression.ts"
import type { Inbox } from "./inbox.ts"
import type { Outbox } from "./outbox.ts"

/** Milliseconds a deferred Close waits for a handler that is not consuming its messages. */
const SUBSCRIBE_GRACE = 100

const HANDLER_IDLE: Connection.Input = { _tag: "HandlerIdle" }

/** The connection, as the wait sees it. */
export interface DeferralTarget {
  /** The protocol state now: the wait matters only while it is `Draining`. */
  readonly state: Connection.State
  input(input: Connection.Input): void
}

/** @internal */
export class Deferral {
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private readonly connection: DeferralTarget
  private readonly inbox: Inbox
  private readonly compression: Compression | undefined
  private readonly outbox: Outbox
  private readonly closeTimeout: number

  constructor(
    connection: DeferralTarget,
    inbox: Inbox,
    compression: Compression | undefined,
    outbox: Outbox,
    closeTimeout: number
  ) {
    this.connection = connection
    this.inbox = inbox
    this.compression = compression
    this.outbox = outbox
    this.closeTimeout = closeTimeout
  }

  /** Our Close was delayed (the `AwaitHandler` action): the wait starts. */
  start(): void {
    this.arm()
    // The step's own deliveries precede its AwaitHandler: they are in the inbox.
    this.check()
  }

  /** The handler may have caught up: ends the wait if it has, else keeps the right timer. */
  check(): void {
    if (this.connection.state._tag !== "Draining") return
    const inbox = this.inbox
    inbox.hand()
    if (inbox.idle() && (this.compression?.pendingInbound ?? 0) === 0) {
      this.cancel()
      this.connection.input(HANDLER_IDLE)
      if (this.outbox.pending() && !this.outbox.batching) this.outbox.flush()
    } else if (!inbox.consuming) {
      // Between consumers (or none yet): only the short grace.
      this.arm()
    }
  }

  cancel(): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private arm(): void {
    this.cancel()
    const wait = this.inbox.consuming ? this.closeTimeout : Math.min(this.closeTimeout, SUBSCRIBE_GRACE)
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.connection.input(HANDLER_IDLE)
    }, wait)
  }
}
