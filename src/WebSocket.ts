/**
 * One upgraded connection as route handlers see it: the handle
 * (`WebSocketConnection`), the request it came with, its messages and what
 * sending returns. The run-time parts behind the handle are internal
 * (`internal/driver.ts` interprets `Connection.step`'s actions over a
 * transport, an outbox, a sender, an inbox, the compression queues and a few
 * smaller parts; see the README's Architecture).
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import type * as Connection from "./Connection.ts"
import type { WebSocketError } from "./Errors.ts"

/**
 * A message: text as a string, binary as bytes.
 *
 * @since 0.1.0
 * @category models
 */
export type Message = string | Uint8Array

/**
 * How a connection ended: `{ code, reason, clean, initiator, detail }` (see
 * `Connection.CloseOutcome`).
 *
 * @since 0.1.0
 * @category models
 */
export type CloseOutcome = Connection.CloseOutcome

/**
 * The upgrade request, as the handler sees it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Request {
  readonly method: string
  /** The raw request target, e.g. `/rooms/42?name=ada`. */
  readonly target: string
  /** The target's path, without the query. */
  readonly path: string
  readonly query: URLSearchParams
  /** The values of the route's `:name` segments, percent-decoded (`{}` for a plain route). */
  readonly params: Readonly<Record<string, string>>
  /** Lower-cased header names; repeated headers joined with ", ". */
  readonly headers: ReadonlyMap<string, string>
  /**
   * The HTTP version the upgrade came over: "1.1" for an HTTP/1.1 upgrade,
   * "2" for an HTTP/2 extended CONNECT stream (RFC 8441, see `Http2`).
   *
   * @since 0.2.0
   */
  readonly httpVersion: string
  /** The `Cookie` header's cookies by name (`Handshake.parseCookies`). */
  readonly cookies: ReadonlyMap<string, string>
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
}

/**
 * What to do when a connection's outbound buffer passes `maxBufferedAmount`.
 * - `"wait"`: `send` suspends until the buffer drains below the high-water mark.
 * - `"drop"`: the message is discarded and counted in `droppedMessages`.
 * - `"close"`: the connection is closed with 1008 and `send` fails with `BufferOverflow`.
 *
 * @since 0.1.0
 * @category models
 */
export type OverflowPolicy = "wait" | "drop" | "close"

/**
 * What `trySend` did with a message:
 * - `"sent"`: queued for the socket, the buffer below the high-water mark;
 * - `"queued"`: queued, but the buffer is above the high-water mark (the peer
 *   is slow: a producer may want to slow down);
 * - `"dropped"`: discarded, the buffer being above `maxBufferedAmount`
 *   (counted in `droppedMessages`);
 * - `"closed"`: not sent, the connection is closing or closed (or this call's
 *   `"close"` policy has just closed it with 1008).
 *
 * @since 0.2.0
 * @category models
 */
export type SendStatus = "sent" | "queued" | "dropped" | "closed"

/**
 * What a publish did (see `WebSocketConnection.publish` and
 * `Topics.publish`), counted over the local subscribers it reached (every
 * one but the excluded sender): `sent` were queued for the socket, `queued`
 * too but above the subscriber's high-water mark (a slow subscriber),
 * `dropped` were discarded above its `maxBufferedAmount`, `closed` were not
 * sent (the connection closing or closed, or closed with 1008 just now by
 * the `"close"` overflow policy). Subscribers in other processes (the Redis
 * adapter) are not counted here.
 *
 * @since 0.2.0
 * @category models
 */
export interface PublishResult {
  readonly subscribers: number
  readonly sent: number
  readonly queued: number
  readonly dropped: number
  readonly closed: number
}

/**
 * The connection handed to a route's handler. Call its members on it
 * (`ws.send(m)`), not detached.
 *
 * @since 0.2.0
 * @category models
 */
export interface WebSocketConnection {
  /** A process-unique number, used in logs and carried by this connection's errors. */
  readonly id: number
  readonly request: Request
  /** The subprotocol chosen in the handshake, if any. */
  readonly protocol: string | undefined
  /** The negotiated Sec-WebSocket-Extensions response value, if any. */
  readonly extensions: string | undefined
  /**
   * The incoming messages, in order, in batches as they arrived; it ends when
   * the connection closes, after every message received before. Consumers
   * may follow one another without loss (a stream's first pull takes one
   * message, so `Stream.runHead` leaves the rest); a second consumer while
   * one runs dies at once. While nobody consumes it, the socket is not read
   * beyond `inboxHighWaterMark` messages (TCP pushes back).
   */
  readonly messages: Stream.Stream<Message>
  /** The next message; fails with `ConnectionClosed` (or `ProtocolViolation`) once the messages have ended. */
  readonly receive: Effect.Effect<Message, WebSocketError>
  /** Sends one message under the server's overflow policy (`"wait"` suspends above the high-water mark). */
  readonly send: (message: Message) => Effect.Effect<void, WebSocketError>
  /** Sends several messages, written together. */
  readonly sendAll: (messages: ReadonlyArray<Message>) => Effect.Effect<void, WebSocketError>
  /**
   * Sends one message without ever waiting or failing, for relays and
   * fan-out: above `maxBufferedAmount` the message is dropped (default) or
   * the connection closed with 1008 (`overflow: "close"`). Returns what
   * happened (see `SendStatus`).
   */
  readonly trySend: (message: Message, options?: { readonly overflow?: "drop" | "close" }) => Effect.Effect<SendStatus>
  /**
   * Sends a Ping (payload at most 125 bytes; by default 4 bytes of its own)
   * and resolves with the round-trip time in milliseconds when its Pong
   * arrives; fails with `ConnectionClosed` if the connection closes first.
   */
  readonly ping: (payload?: Uint8Array) => Effect.Effect<number, WebSocketError>
  /**
   * Starts the closing handshake (default 1000) and waits for its outcome.
   * Only codes an endpoint may send are accepted (1000-1003, 1007-1014,
   * 3000-4999), with a reason of at most 123 UTF-8 bytes; anything else fails
   * with `InvalidClose` and sends nothing.
   */
  readonly close: (code?: number, reason?: string) => Effect.Effect<CloseOutcome, WebSocketError>
  /** Drops the connection at once, without a closing handshake (the outcome is 1006). */
  readonly terminate: Effect.Effect<void>
  /** Waits until the connection has closed. */
  readonly closed: Effect.Effect<CloseOutcome>
  /** Bytes written by the application but not yet handed to the kernel. */
  readonly bufferedAmount: Effect.Effect<number>
  /** Messages discarded by the `"drop"` overflow policy (sends and published messages alike). */
  readonly droppedMessages: Effect.Effect<number>
  /**
   * Subscribes this connection to a topic (of the server's `Topics`: its own,
   * or the one provided, e.g. `RedisTopics.layer`); the subscription ends
   * with the connection. Subscribing twice is one subscription. Fails with
   * `ConnectionClosed` once the connection can no longer send (as `send`
   * does).
   */
  readonly subscribe: (topic: string) => Effect.Effect<void, WebSocketError>
  /** Ends this connection's subscription to a topic (nothing if it had none). */
  readonly unsubscribe: (topic: string) => Effect.Effect<void>
  /** The topics this connection subscribes to. */
  readonly subscriptions: Effect.Effect<ReadonlyArray<string>>
  /**
   * Publishes a message to a topic's subscribers, this connection excluded
   * (`{ self: true }` includes it): framed once, queued to each subscriber
   * under its own limits, never waiting (see `PublishResult`).
   */
  readonly publish: (topic: string, message: Message, options?: { readonly self?: boolean }) => Effect.Effect<PublishResult>
}

/**
 * The former name of `WebSocketConnection`, which shadowed the global
 * `WebSocket` client in files that use both.
 *
 * @deprecated Use `WebSocketConnection`; this alias goes in the next minor release.
 * @since 0.1.0
 * @category models
 */
export type WebSocket = WebSocketConnection
