/**
 * The server's metrics, reported through `effect/Metric`: what they are
 * called (the `websock.` prefix, OpenTelemetry-style names and attributes),
 * and the state behind them.
 *
 * The state is ours: plain numbers, one object per metric registry, shared by
 * every server that reports into it. Each series is registered once with
 * `Metric.registerUnsafe`, whose `get` reads those numbers when a snapshot is
 * taken (`Metric.snapshot`, a Prometheus scrape). Counting on the hot path is
 * then a field increment in a socket callback: no Effect, no registry lookup,
 * no allocation. Series with open-ended attributes (an upgrade's status, a
 * close code) are registered the first time their value is seen.
 *
 * Per data message (the cost measured by bench/cost.ts): the type's message
 * and byte counters, one bucket of `websock.message.size` (its index from
 * `Math.clz32`, the bounds being powers of 4) and its min and max, all done
 * inline in `Tally`; the histogram's count and sum are the counters' totals,
 * added when a snapshot is taken.
 *
 * With `metrics: false` no `Instruments` exists and the hot path pays one
 * `undefined` check.
 *
 * @internal
 */
import * as Context from "effect/Context"
import * as Metric from "effect/Metric"

/** The prefix of every metric's name. */
export const PREFIX = "websock."

/** Names of the metrics (see the README's table). */
export const names = {
  connectionsOpen: `${PREFIX}connections.open`,
  connectionsAccepted: `${PREFIX}connections.accepted`,
  upgrades: `${PREFIX}upgrades`,
  handshakeDuration: `${PREFIX}handshake.duration`,
  messagesReceived: `${PREFIX}messages.received`,
  messagesSent: `${PREFIX}messages.sent`,
  bytesReceived: `${PREFIX}bytes.received`,
  bytesSent: `${PREFIX}bytes.sent`,
  messageSize: `${PREFIX}message.size`,
  compressionOriginal: `${PREFIX}compression.original`,
  compressionCompressed: `${PREFIX}compression.compressed`,
  closes: `${PREFIX}closes`,
  messagesDropped: `${PREFIX}messages.dropped`,
  sendWaitDuration: `${PREFIX}send.wait.duration`,
  socketPauses: `${PREFIX}socket.pauses`
} as const

/** Message sizes, in bytes: powers of 4 from 64 B to 16 MiB. */
const SIZE_BOUNDARIES = [64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216]

/** Durations, in seconds: 0.5 ms to 10 s. */
const DURATION_BOUNDARIES = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** A histogram's buckets, kept by hand: `observe` is a short search and three additions. */
class Buckets {
  private readonly bounds: ReadonlyArray<number>
  private readonly counts: Uint32Array
  private count = 0
  private sum = 0
  private min = Number.MAX_VALUE
  private max = -Number.MAX_VALUE

  constructor(bounds: ReadonlyArray<number>) {
    this.bounds = bounds
    this.counts = new Uint32Array(bounds.length + 1)
  }

  observe(value: number): void {
    const bounds = this.bounds
    let i = 0 // the first bucket whose upper bound holds the value (bounds.length: above them all)
    while (i < bounds.length && value > bounds[i]!) i++
    this.counts[i]!++
    this.count++
    this.sum += value
    if (value < this.min) this.min = value
    if (value > this.max) this.max = value
  }

  state(): Metric.HistogramState {
    const buckets: Array<[number, number]> = []
    let cumulated = 0 // observations at or below this bound
    for (let i = 0; i < this.bounds.length; i++) {
      cumulated += this.counts[i]!
      buckets.push([this.bounds[i]!, cumulated])
    }
    return { buckets, count: this.count, min: this.min, max: this.max, sum: this.sum }
  }
}

/** The number of `SIZE_BOUNDARIES`' buckets, the last one above them all. */
const SIZE_BUCKETS = SIZE_BOUNDARIES.length + 1

/**
 * The bucket of a message of `size` bytes: the first of `SIZE_BOUNDARIES`
 * (64 * 4^i) that holds it, or the last bucket above 16 MiB. For 64 < size
 * <= 2^24, `32 - clz32(size - 1)` is ceil(log2(size)), and 64 * 4^i >= size
 * from i = ceil((ceil(log2(size)) - 6) / 2) on.
 */
export const sizeBucket = (size: number): number =>
  size <= 64 ? 0 : size > 16777216 ? SIZE_BUCKETS - 1 : (27 - Math.clz32(size - 1)) >> 1

/**
 * `websock.message.size` for one direction: the bucket counts and the
 * extremes; the count and sum are the message and byte counters' (every
 * message counted is observed, see `Tally`).
 */
class SizeBuckets {
  readonly counts = new Uint32Array(SIZE_BUCKETS)
  min = Number.MAX_VALUE
  max = -Number.MAX_VALUE

  state(count: number, sum: number): Metric.HistogramState {
    const buckets: Array<[number, number]> = []
    let cumulated = 0 // observations at or below this bound
    for (let i = 0; i < SIZE_BOUNDARIES.length; i++) {
      cumulated += this.counts[i]!
      buckets.push([SIZE_BOUNDARIES[i]!, cumulated])
    }
    return { buckets, count, min: this.min, max: this.max, sum }
  }
}

/** A counter's value, for series registered on first use. */
interface Cell {
  count: number
}

const counterState = (count: number): Metric.CounterState<number> => ({ count, incremental: true })

/**
 * The `unit` attribute (OpenTelemetry's unit notation: `By`, `s`,
 * `{message}`), from the end of the description; Effect's Prometheus
 * formatter leaves it out of the labels.
 */
const unit = (description: string, attributes?: Record<string, string>): Record<string, string> => ({
  unit: /\(([^()]+)\)$/.exec(description)![1]!,
  ...attributes
})

/** `registerUnsafe` ignores a series' update hooks (ours are the fields below). */
const noop = (): void => {}

/** The hooks of a series whose state `get` reads. */
const reading = <S>(get: () => S): Metric.Metric.Hooks<number, S> => ({ get, update: noop, modify: noop })

/** The message and byte counts a `Tally` and the `Instruments` both keep. */
type TallyField =
  | "textReceived"
  | "textBytesReceived"
  | "binaryReceived"
  | "binaryBytesReceived"
  | "textSent"
  | "textBytesSent"
  | "binarySent"
  | "binaryBytesSent"

/** The metrics of every server reporting into one registry. */
export class Instruments {
  /** Upgraded connections whose socket has not closed yet. */
  open = 0
  accepted = 0
  textReceived = 0
  binaryReceived = 0
  textBytesReceived = 0
  binaryBytesReceived = 0
  textSent = 0
  binarySent = 0
  textBytesSent = 0
  binaryBytesSent = 0
  originalReceived = 0
  compressedReceived = 0
  originalSent = 0
  compressedSent = 0
  dropped = 0
  pauses = 0
  readonly handshake = new Buckets(DURATION_BOUNDARIES)
  readonly sendWait = new Buckets(DURATION_BOUNDARIES)
  readonly sizeReceived = new SizeBuckets()
  readonly sizeSent = new SizeBuckets()
  /** Upgrades answered, by status. */
  private readonly statuses = new Map<number, Cell>()
  /** Closes, by `code/initiator`. */
  private readonly closeCells = new Map<string, Cell>()
  /** The tallies of the open connections: the message and byte counters add them to the closed ones' totals above. */
  readonly live = new Set<Tally>()
  private readonly context: Context.Context<never>

  constructor(context: Context.Context<never>) {
    this.context = context
    const gauge = (name: string, description: string, get: () => number) =>
      Metric.registerUnsafe(Metric.gauge(name, { description, attributes: unit(description) }), context, reading(() => ({ value: get() })))
    const counter = (name: string, description: string, attributes: Record<string, string> | undefined, get: () => number) =>
      Metric.registerUnsafe(
        Metric.counter(name, { description, attributes: unit(description, attributes), incremental: true }),
        context,
        reading(() => counterState(get()))
      )
    const histogram = (
      name: string,
      description: string,
      attributes: Record<string, string> | undefined,
      bounds: ReadonlyArray<number>,
      state: () => Metric.HistogramState
    ) =>
      Metric.registerUnsafe(
        Metric.histogram(name, { description, attributes: unit(description, attributes), boundaries: bounds }),
        context,
        reading(state)
      )
    const text = { "websocket.message.type": "text" }
    const binary = { "websocket.message.type": "binary" }
    const receive = { "network.io.direction": "receive" }
    const transmit = { "network.io.direction": "transmit" }
    gauge(names.connectionsOpen, "Upgraded connections whose socket is open ({connection})", () => this.open)
    counter(names.connectionsAccepted, "Upgrades answered 101 ({connection})", undefined, () => this.accepted)
    histogram(names.handshakeDuration, "From the request head to the 101 answer, the route's upgrade decision included (s)", undefined, DURATION_BOUNDARIES, () => this.handshake.state())
    /** A message or byte counter: the closed connections' total and the open ones' tallies. */
    const total = (field: TallyField) => () => {
      let sum = this[field]
      for (const tally of this.live) sum += tally[field]
      return sum
    }
    counter(names.messagesReceived, "Data messages received ({message})", text, total("textReceived"))
    counter(names.messagesReceived, "Data messages received ({message})", binary, total("binaryReceived"))
    counter(names.messagesSent, "Data messages sent ({message})", text, total("textSent"))
    counter(names.messagesSent, "Data messages sent ({message})", binary, total("binarySent"))
    counter(names.bytesReceived, "Payload bytes of the data messages received, inflated (By)", text, total("textBytesReceived"))
    counter(names.bytesReceived, "Payload bytes of the data messages received, inflated (By)", binary, total("binaryBytesReceived"))
    counter(names.bytesSent, "Payload bytes of the data messages sent, before deflate (By)", text, total("textBytesSent"))
    counter(names.bytesSent, "Payload bytes of the data messages sent, before deflate (By)", binary, total("binaryBytesSent"))
    const received = [total("textReceived"), total("binaryReceived"), total("textBytesReceived"), total("binaryBytesReceived")] as const
    const sent = [total("textSent"), total("binarySent"), total("textBytesSent"), total("binaryBytesSent")] as const
    histogram(names.messageSize, "Payload size of each data message, inflated (By)", receive, SIZE_BOUNDARIES, () =>
      this.sizeReceived.state(received[0]() + received[1](), received[2]() + received[3]()))
    histogram(names.messageSize, "Payload size of each data message, inflated (By)", transmit, SIZE_BOUNDARIES, () =>
      this.sizeSent.state(sent[0]() + sent[1](), sent[2]() + sent[3]()))
    counter(names.compressionOriginal, "Bytes of the messages that went through permessage-deflate, inflated (By)", receive, () => this.originalReceived)
    counter(names.compressionOriginal, "Bytes of the messages that went through permessage-deflate, inflated (By)", transmit, () => this.originalSent)
    counter(names.compressionCompressed, "Bytes of the messages that went through permessage-deflate, deflated (By)", receive, () => this.compressedReceived)
    counter(names.compressionCompressed, "Bytes of the messages that went through permessage-deflate, deflated (By)", transmit, () => this.compressedSent)
    counter(names.messagesDropped, "Messages discarded above maxBufferedAmount: sends under the \"drop\" policy, published messages under \"drop\" or \"wait\" ({message})", undefined, () => this.dropped)
    histogram(names.sendWaitDuration, "Time a send waited for the outbound buffer to drain (s)", undefined, DURATION_BOUNDARIES, () => this.sendWait.state())
    counter(names.socketPauses, "Times a socket stopped being read because its handler had not taken inboxHighWaterMark messages ({pause})", undefined, () => this.pauses)
  }

  /** An upgrade answered with `status` (101, or the error's). */
  upgraded(status: number): void {
    let cell = this.statuses.get(status)
    if (cell === undefined) {
      const created: Cell = (cell = { count: 0 })
      this.statuses.set(status, created)
      Metric.registerUnsafe(
        Metric.counter(names.upgrades, {
          description: "Upgrade requests answered, by status ({request})",
          attributes: { unit: "{request}", "http.response.status_code": String(status) },
          incremental: true
        }),
        this.context,
        reading(() => counterState(created.count))
      )
    }
    cell.count++
  }

  /** A connection's socket closed with this outcome. */
  closed(code: number, initiator: "local" | "remote"): void {
    const key = `${code}/${initiator}`
    let cell = this.closeCells.get(key)
    if (cell === undefined) {
      const created: Cell = (cell = { count: 0 })
      this.closeCells.set(key, created)
      Metric.registerUnsafe(
        Metric.counter(names.closes, {
          description: "Connections closed, by close code and by the side that closed first ({connection})",
          attributes: { unit: "{connection}", "websocket.close.code": String(code), "websocket.close.initiator": initiator },
          incremental: true
        }),
        this.context,
        reading(() => counterState(created.count))
      )
    }
    cell.count++
  }
}

/**
 * One `Instruments` per registry and set of contextual attributes
 * (`Metric.CurrentMetricAttributes`, merged into every series), so that
 * servers sharing both add up instead of replacing each other's series.
 */
const byRegistry = new WeakMap<Metric.MetricRegistry, Map<string, Instruments>>()

/** The instruments of the registry in `context` (made and registered on first use). */
export const instruments = (context: Context.Context<never>): Instruments => {
  const registry = Context.get(context, Metric.MetricRegistry)
  const attributes = Context.get(context, Metric.CurrentMetricAttributes)
  const key = JSON.stringify(Object.entries(attributes).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
  let sets = byRegistry.get(registry)
  if (sets === undefined) byRegistry.set(registry, sets = new Map())
  let found = sets.get(key)
  if (found === undefined) {
    found = new Instruments(context)
    sets.set(key, found)
  }
  return found
}

/**
 * What one connection sent and received, by message type: for its span, and
 * for the server's message and byte counters, which add up the tallies of
 * the open connections when a snapshot is taken (and keep the totals of the
 * closed ones), so that counting a message costs the same two additions
 * whether metrics are on or off. With metrics on, the message is also
 * placed in its `websock.message.size` bucket.
 */
export class Tally {
  textReceived = 0
  textBytesReceived = 0
  binaryReceived = 0
  binaryBytesReceived = 0
  textSent = 0
  textBytesSent = 0
  binarySent = 0
  binaryBytesSent = 0
  readonly instruments: Instruments | undefined

  constructor(instruments: Instruments | undefined) {
    this.instruments = instruments
    instruments?.live.add(this)
  }

  get messagesReceived(): number {
    return this.textReceived + this.binaryReceived
  }
  get bytesReceived(): number {
    return this.textBytesReceived + this.binaryBytesReceived
  }
  get messagesSent(): number {
    return this.textSent + this.binarySent
  }
  get bytesSent(): number {
    return this.textBytesSent + this.binaryBytesSent
  }

  /**
   * A data message handed to the handler (its payload inflated). Written out
   * in full: it runs for every message, and bench/cost.ts counts what it
   * costs.
   */
  received(text: boolean, size: number): void {
    if (text) {
      this.textReceived++
      this.textBytesReceived += size
    } else {
      this.binaryReceived++
      this.binaryBytesReceived += size
    }
    const m = this.instruments
    if (m === undefined) return
    const h = m.sizeReceived
    h.counts[sizeBucket(size)]!++
    if (size < h.min) h.min = size
    if (size > h.max) h.max = size
  }

  /** A data message handed to the socket (`size`: before deflate). */
  sent(text: boolean, size: number): void {
    if (text) {
      this.textSent++
      this.textBytesSent += size
    } else {
      this.binarySent++
      this.binaryBytesSent += size
    }
    const m = this.instruments
    if (m === undefined) return
    const h = m.sizeSent
    h.counts[sizeBucket(size)]!++
    if (size < h.min) h.min = size
    if (size > h.max) h.max = size
  }

  /** The connection has ended: its counts join the server's totals. */
  end(): void {
    const m = this.instruments
    if (m === undefined || !m.live.delete(this)) return
    m.textReceived += this.textReceived
    m.textBytesReceived += this.textBytesReceived
    m.binaryReceived += this.binaryReceived
    m.binaryBytesReceived += this.binaryBytesReceived
    m.textSent += this.textSent
    m.textBytesSent += this.textBytesSent
    m.binarySent += this.binarySent
    m.binaryBytesSent += this.binaryBytesSent
  }
}
