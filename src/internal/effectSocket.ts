/**
 * websock's connection handle in the two shapes Effect's HTTP server takes a
 * WebSocket in, for `websock/NodeHttpServer`:
 *
 * - `WebSocketLike`: what `Socket.fromWebSocket` (and so Effect's
 *   `makeUpgradeHandler`) reads of a `ws` WebSocket: `readyState`,
 *   `message` and `close` events, `send`, `close`, and `pause`/`resume`/
 *   `isPaused`, which `fromWebSocket` calls to stop the messages at its
 *   64 KiB buffer (websock's inbox then stops reading the socket).
 * - `upgradedSocket`: a `Socket.Socket` for the routes, `websock/Socket`'s
 *   `toSocket` on the handle once the handshake has given it: the reader
 *   pulls the handle's batches, `write`/`writeAll` wait above
 *   `highWaterMark` (Effect's own `fromWebSocket` never waits).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import type * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import * as Stream from "effect/Stream"
import { Buffer } from "node:buffer"
import * as CloseReason from "../CloseReason.ts"
import * as WebsockSocket from "../Socket.ts"
import type * as WebSocket from "../WebSocket.ts"

/** Runs an effect in the engine's fiber set (interrupted at shutdown). */
type RunFork = <A, E>(effect: Effect.Effect<A, E, any>) => Fiber.Fiber<A, E>

type EventType = "open" | "message" | "error" | "close"
type Listener = (event: Socket.WebSocketEvent) => void

/** The DOM WebSocket's `readyState` values. */
const OPEN = 1
const CLOSING = 2
const CLOSED = 3

/**
 * Why a Close cannot be sent, as DOM WebSockets and `ws` refuse it (with an
 * exception), or `undefined` when it can.
 */
const closeProblem = (code: number, reason: string): string | undefined => {
  if (!CloseReason.isSendable(code)) return `${code} may not be sent in a Close frame (1000-1003, 1007-1014, 3000-4999)`
  const bytes = Buffer.byteLength(reason, "utf8")
  return bytes > CloseReason.maxReasonBytes ? `the close reason is ${bytes} UTF-8 bytes, more than ${CloseReason.maxReasonBytes}` : undefined
}

/**
 * The handle as the `ws`-like object Effect's `makeUpgradeHandler` hands
 * to `Socket.fromWebSocket`. With `pump`, it emits the handle's messages as
 * `message` events while resumed; without, it emits none (a route's socket
 * reads the handle itself) and serves for its `close`.
 */
export class WebSocketLike implements Socket.WebSocketLike {
  readyState: number = OPEN
  readonly connection: WebSocket.WebSocketConnection
  private readonly listeners = new Map<EventType, Array<{ readonly listener: Listener; readonly once: boolean }>>()
  private readonly runFork: RunFork
  private readonly overflow: "drop" | "close"
  /** Closed while paused: the pump waits on it before each batch. */
  private readonly flowing = Latch.makeUnsafe(false)
  private paused = true

  constructor(connection: WebSocket.WebSocketConnection, runFork: RunFork, options: {
    readonly pump: boolean
    readonly overflow: WebSocket.OverflowPolicy
  }) {
    this.connection = connection
    this.runFork = runFork
    this.overflow = options.overflow === "close" ? "close" : "drop"
    const closed = Effect.map(connection.closed, (outcome) => {
      this.readyState = CLOSED
      this.emit("close", { type: "close", code: outcome.code, reason: outcome.reason })
    })
    runFork(options.pump ? Effect.andThen(this.pump(), closed) : closed)
  }

  /** `fromWebSocket` reads it once, and resumes a paused socket once it listens. */
  get isPaused(): boolean {
    return this.paused
  }

  pause(): void {
    this.flow(false)
  }

  resume(): void {
    this.flow(true)
  }

  private flow(on: boolean): void {
    this.paused = !on
    if (on) this.flowing.openUnsafe()
    else this.flowing.closeUnsafe()
  }

  addEventListener(type: EventType, listener: Listener, options?: { readonly once?: boolean }): void {
    const list = this.listeners.get(type)
    const entry = { listener, once: options?.once === true }
    if (list === undefined) this.listeners.set(type, [entry])
    else list.push(entry)
  }

  removeEventListener(type: EventType, listener: Listener): void {
    const list = this.listeners.get(type)
    const i = list?.findIndex((entry) => entry.listener === listener) ?? -1
    if (i >= 0) list!.splice(i, 1)
  }

  /**
   * Queues the message without waiting (this shape's `send` is
   * synchronous): above `maxBufferedAmount` it is dropped, or the
   * connection closed with 1008 under `overflow: "close"`. Nothing happens
   * after the close, as with `ws`.
   */
  send(data: string | Uint8Array): void {
    if (this.readyState !== OPEN) return
    Effect.runSync(this.connection.trySend(data, { overflow: this.overflow }))
  }

  /** Starts the closing handshake; throws on a code or reason that may not be sent, as `ws` does. */
  close(code: number = 1000, reason: string = ""): void {
    const problem = closeProblem(code, reason)
    if (problem !== undefined) throw new TypeError(problem)
    if (this.readyState !== OPEN) return
    this.readyState = CLOSING
    this.runFork(Effect.ignore(this.connection.close(code, reason)))
  }

  private emit(type: EventType, event: Socket.WebSocketEvent): void {
    const list = this.listeners.get(type)
    if (list === undefined || list.length === 0) return
    for (const entry of [...list]) {
      if (entry.once) this.removeEventListener(type, entry.listener)
      entry.listener(event)
    }
  }

  /** The messages as events, each batch once resumed. */
  private pump(): Effect.Effect<void> {
    return Stream.runForEachArray(this.connection.messages, (batch) =>
      Effect.map(this.flowing.await, () => {
        for (const data of batch) this.emit("message", { type: "message", data })
      }))
  }
}

/**
 * A `Socket.Socket` on the connection that `acquire` gives, once it has
 * given it: `acquire` runs when the reader is acquired (the handshake, as
 * with Effect's own upgrade sockets), in the reader's scope, and the reader
 * and the writer are `websock/Socket`'s `toSocket`'s. Writes before then
 * wait for it; after the reader's scope closes they go to the closed
 * connection (and send nothing).
 */
export const upgradedSocket = (
  acquire: Effect.Effect<WebSocket.WebSocketConnection, Socket.SocketError, Scope.Scope>
): Socket.Socket => {
  let writer: Socket.Writer | undefined = undefined
  const ready = Latch.makeUnsafe(false)
  const reader = Effect.gen(function*() {
    const socket = WebsockSocket.toSocket(yield* acquire)
    writer = yield* socket.writer
    ready.openUnsafe()
    return yield* socket.reader
  })
  const withWriter = (f: (writer: Socket.Writer) => Effect.Effect<void, Socket.SocketError>) => {
    const attempt: Effect.Effect<void, Socket.SocketError> = Effect.suspend(() =>
      writer === undefined ? ready.whenOpen(attempt) : f(writer)
    )
    return attempt
  }
  return Socket.make({
    reader,
    writer: Effect.succeed({
      write: (chunk) => withWriter((w) => w.write(chunk)),
      writeAll: (chunks) => withWriter((w) => w.writeAll(chunks))
    })
  })
}
