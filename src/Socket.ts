/**
 * websock under Effect's socket abstractions: `toSocket` shows a connection
 * as an Effect `Socket.Socket`, and `makeSocketServer` / `layerSocketServer`
 * provide a `SocketServer.SocketServer` whose connections are websock's, so
 * that what runs on Effect's sockets (`RpcServer.layerProtocolSocketServer`,
 * `Socket.toChannel`, ...) runs on websock unchanged, with its limits,
 * keepalive and write backpressure.
 *
 * ```ts
 * import { Layer } from "effect"
 * import { RpcSerialization, RpcServer } from "effect/rpc"
 * import * as WebsockSocket from "websock/Socket"
 *
 * const RpcLive = RpcServer.layer(MyRpcs).pipe(
 *   Layer.provide(MyHandlers),
 *   Layer.provide(RpcServer.layerProtocolSocketServer),
 *   Layer.provide(WebsockSocket.layerSocketServer({ port: 8080, path: "/rpc" })),
 *   Layer.provide(RpcSerialization.layerJson)
 * )
 * ```
 *
 * The contract Effect's consumers rely on, as `Socket.fromWebSocket` keeps it:
 * - the reader's `pull` gives the messages in batches as they arrived (text
 *   as strings, binary as bytes), then fails with a `SocketError` whose reason
 *   is `SocketCloseError` with the peer's close code and reason, a clean 1000
 *   included (`RpcServer` and `RpcClient` catch exactly that);
 * - closing the reader's scope fails a pull that is waiting (with 1006, as
 *   `fromWebSocket` does) and starts the closing handshake with 1000, 1001 or
 *   1011 by the scope's exit (success, interruption, failure), without
 *   waiting for it;
 * - `write` and `writeAll` are websock's `send` and `sendAll`: under the
 *   default `"wait"` policy they suspend while more than `highWaterMark`
 *   bytes wait to be written (Effect's own WebSocket writers never wait);
 * - a `CloseEvent` starts the closing handshake with its code and reason (a
 *   reason longer than a Close frame holds is cut on a character boundary);
 * - a write once the connection is closing or closed succeeds and sends
 *   nothing, as with `ws` (`RpcServer` dies on a failed write).
 *
 * @since 0.2.0
 */
import type { NonEmptyReadonlyArray } from "effect/Array"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Layer from "effect/Layer"
import * as NetAddress from "effect/net/NetAddress"
import * as Pull from "effect/Pull"
import * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import * as SocketServer from "effect/socket/SocketServer"
import * as Stream from "effect/Stream"
import * as CloseReason from "./CloseReason.ts"
import { InvalidOption, ServerError, type WebSocketError } from "./Errors.ts"
import * as Server from "./Server.ts"
import type * as WebSocket from "./WebSocket.ts"

type Message = WebSocket.Message
type Batch = NonEmptyReadonlyArray<Message>

// -----------------------------------------------------------------------------
// toSocket
// -----------------------------------------------------------------------------

/**
 * A websock connection as an Effect `Socket.Socket` (see the module's note on
 * the contract). The connection is open already: acquiring the reader dials
 * nothing, and the writer may be used before the reader. One reader at a
 * time; a reader acquired after another's scope closed gets what is left,
 * then the close.
 *
 * @since 0.2.0
 * @category constructors
 */
export const toSocket = (ws: WebSocket.WebSocketConnection): Socket.Socket =>
  Socket.make({ reader: makeReader(ws), writer: makeWriter(ws) })

const closeError = (code: number, reason: string | undefined): Socket.SocketError =>
  new Socket.SocketError({ reason: new Socket.SocketCloseError({ code, closeReason: reason }) })

const writeError = (cause: unknown): Socket.SocketError =>
  new Socket.SocketError({ reason: new Socket.SocketWriteError({ cause }) })

/**
 * The batches between the connection and the reader's pulls. The pump (a
 * fiber of the reader's scope) takes a batch from the connection only when a
 * pull waits with nothing ready, so that websock's inbox sees the consumer
 * as it is: messages not pulled are not taken, and the socket stops being
 * read above `inboxHighWaterMark` (TCP pushes back).
 */
class Inbound {
  /** A batch taken for a pull that went away before it arrived: the next pull gets it. */
  private ready: Batch | undefined = undefined
  /** Set once: the close (or the reader's end); every pull after `ready` fails with it. */
  private error: Socket.SocketError | undefined = undefined
  /** The pull waiting for a batch. */
  private waiter: ((effect: Effect.Effect<Batch, Socket.SocketError>) => void) | undefined = undefined
  /** The pump waiting for a pull. */
  private wake: ((effect: Effect.Effect<void>) => void) | undefined = undefined

  readonly pull: Effect.Effect<Batch, Socket.SocketError> = Effect.callback((resume) => {
    const ready = this.ready
    if (ready !== undefined) {
      this.ready = undefined
      return resume(Effect.succeed(ready))
    }
    if (this.error !== undefined) return resume(Effect.fail(this.error))
    this.waiter = resume
    const wake = this.wake
    if (wake !== undefined) {
      this.wake = undefined
      wake(Effect.void)
    }
    return Effect.sync(() => {
      if (this.waiter === resume) this.waiter = undefined
    })
  })

  /** Resumes once a pull waits with nothing ready (the pump's cue to take a batch). */
  readonly demand: Effect.Effect<void> = Effect.callback((resume) => {
    if (this.waiter !== undefined) return resume(Effect.void)
    this.wake = resume
    return Effect.sync(() => {
      if (this.wake === resume) this.wake = undefined
    })
  })

  give(batch: Batch): void {
    const waiter = this.waiter
    if (waiter === undefined) {
      this.ready = batch
      return
    }
    this.waiter = undefined
    waiter(Effect.succeed(batch))
  }

  /** The end: a waiting pull fails now, later ones after the batch still ready, if any. */
  fail(error: Socket.SocketError): void {
    this.error ??= error
    const waiter = this.waiter
    if (waiter !== undefined && this.ready === undefined) {
      this.waiter = undefined
      waiter(Effect.fail(this.error))
    }
  }
}

const makeReader = (ws: WebSocket.WebSocketConnection): Effect.Effect<Socket.Reader, Socket.SocketError, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const inbound = new Inbound()
    const next = yield* Stream.toPull(ws.messages)
    yield* Effect.forkIn(pump(ws, next, inbound), scope)
    // Added after the pump, so that it runs first: the waiting pull fails
    // before the pump is interrupted.
    yield* Scope.addFinalizerExit(scope, (exit) =>
      Effect.suspend(() => {
        inbound.fail(closeError(1006, undefined))
        return Effect.ignore(startClose(ws, closeCode(exit), ""))
      }))
    return { pull: inbound.pull, upgrade: Socket.SocketUpgradeError.unsupported }
  })

const pump = (
  ws: WebSocket.WebSocketConnection,
  next: Pull.Pull<Batch>,
  inbound: Inbound
): Effect.Effect<void> =>
  Effect.gen(function*() {
    while (true) {
      yield* inbound.demand
      const exit = yield* Effect.exit(next)
      if (Exit.isSuccess(exit)) {
        inbound.give(exit.value)
        continue
      }
      if (Pull.isDoneCause(exit.cause)) {
        // Every message was taken: the connection is over, its outcome known.
        const outcome = yield* ws.closed
        return inbound.fail(closeError(outcome.code, outcome.reason))
      }
      // A second consumer of the same connection's messages, or a defect.
      return inbound.fail(new Socket.SocketError({ reason: new Socket.SocketReadError({ cause: Cause.squash(exit.cause) }) }))
    }
  })

/** The close code for the end of a scope, as Effect's WebSocket upgrades choose it. */
const closeCode = (exit: Exit.Exit<unknown, unknown>): number =>
  Exit.isSuccess(exit) ? 1000 : Cause.hasInterruptsOnly(exit.cause) ? 1001 : 1011

/** A Close reason cut to what a Close frame holds (RFC 6455 §5.5), on a character boundary. */
const fitReason = (reason: string | undefined): string => {
  if (reason === undefined) return ""
  // A UTF-16 unit is at most 3 UTF-8 bytes: short reasons need no encoding.
  if (reason.length * 3 <= CloseReason.maxReasonBytes) return reason
  const bytes = new Uint8Array(CloseReason.maxReasonBytes)
  // encodeInto writes whole characters only.
  const { written } = encoder.encodeInto(reason, bytes)
  return decoder.decode(bytes.subarray(0, written))
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/**
 * Starts the closing handshake without waiting for it: `close` runs until it
 * has sent (or refused) the Close, then waits for the outcome on its own.
 * A code that may not be sent fails with `SocketWriteError`.
 */
const startClose = (ws: WebSocket.WebSocketConnection, code: number, reason: string): Effect.Effect<void, Socket.SocketError> =>
  Effect.flatMap(Effect.forkDetach(ws.close(code, reason), { startImmediately: true }), (fiber) => {
    const exit = fiber.pollUnsafe()
    return exit !== undefined && Exit.isFailure(exit) ? Effect.fail(writeError(Cause.squash(exit.cause))) : Effect.void
  })

/** A send's failure as a write's: none once the connection is closing (as `ws` ignores such a send). */
const onSendError = (error: WebSocketError): Effect.Effect<void, Socket.SocketError> =>
  error.reason._tag === "ConnectionClosed" ? Effect.void : Effect.fail(writeError(error))

const makeWriter = (ws: WebSocket.WebSocketConnection): Effect.Effect<Socket.Writer> =>
  Effect.succeed({
    write: (chunk) =>
      Socket.isCloseEvent(chunk)
        ? startClose(ws, chunk.code, fitReason(chunk.reason))
        : Effect.catch(ws.send(chunk), onSendError),
    writeAll: (chunks) => Effect.catch(ws.sendAll(chunks), onSendError)
  })

// -----------------------------------------------------------------------------
// SocketServer
// -----------------------------------------------------------------------------

/**
 * The websock connection behind the `Socket` a `SocketServer` handler gets
 * (its request, subprotocol, `ping`, ...), in the handler's context;
 * `undefined` elsewhere. A reference, so that reading it adds nothing to
 * what `run` requires: `const ws = yield* Socket.CurrentConnection`.
 *
 * @since 0.2.0
 * @category references
 */
export const CurrentConnection = Context.Reference<WebSocket.WebSocketConnection | undefined>("websock/Socket/CurrentConnection", {
  defaultValue: () => undefined
})

/**
 * The server's settings (every `Server.Options` but the routes), and the one
 * path it serves: a plain path or one with `:name` segments, as a route key
 * (default `"/"`). Upgrades to any other path are answered 404.
 *
 * @since 0.2.0
 * @category models
 */
export interface SocketServerOptions extends Omit<Server.Options, "routes"> {
  readonly path?: string | undefined
}

/** Hands one connection to a running `run`: its handler's fiber, in `run`'s scope. */
type Runner = (ws: WebSocket.WebSocketConnection) => Fiber.Fiber<unknown, unknown>

const openError = (cause: unknown): SocketServer.SocketServerError =>
  new SocketServer.SocketServerError({ reason: new SocketServer.SocketServerOpenError({ cause }) })

/** A route key the router refused is the `path` option's fault. */
const serverError = (error: ServerError): SocketServer.SocketServerError =>
  openError(
    error.reason._tag === "InvalidOption" && error.reason.option === "routes"
      ? new ServerError({ reason: new InvalidOption({ option: "path", problem: error.reason.problem }) })
      : error
  )

/**
 * Starts a websock server in the current scope, as a `SocketServer`:
 * `run(handler)` runs `handler` for every connection, with `run`'s services
 * (and `CurrentConnection`), in a fiber of `run`'s own, as
 * `NodeSocketServer.makeWebSocket` does. Connections that arrive while no
 * `run` is active wait for one (their messages are kept, up to
 * `inboxHighWaterMark`). Interrupting `run` interrupts its handlers, and
 * their connections close with 1001.
 *
 * A handler that returns, or fails with a `SocketCloseError` (the reader's
 * normal end), leaves its connection closing with 1000; one that fails
 * otherwise, with 1011 (websock logs the cause). The server's `address` is
 * the bound one (with `port: 0`, the port picked). Bad options and listen
 * failures fail with `SocketServerError` (`SocketServerOpenError`) whose
 * `cause` is websock's `ServerError`: `InvalidOption` names the option (a
 * bad `path` is `"path"`), `ListenFailed` carries the system error.
 *
 * @since 0.2.0
 * @category constructors
 */
export const makeSocketServer = (
  options: SocketServerOptions = {}
): Effect.Effect<SocketServer.SocketServer["Service"], SocketServer.SocketServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const { path = "/", ...settings } = options
    if (typeof path !== "string") {
      const problem = `must be a string, got ${String(path)}`
      return yield* Effect.fail(openError(new ServerError({ reason: new InvalidOption({ option: "path", problem }) })))
    }
    // The active runs, newest last: a connection goes to the newest.
    const runners: Array<Runner> = []
    const running = Latch.makeUnsafe(false)

    const serve = (ws: WebSocket.WebSocketConnection): Effect.Effect<unknown, unknown> =>
      Effect.suspend(() => {
        const runner = runners[runners.length - 1]
        if (runner === undefined) return Effect.andThen(running.await, serve(ws))
        // Joined, not owned: when websock interrupts this fiber (the
        // connection is over), the handler goes on to see the close itself;
        // `run`'s scope bounds its life.
        return Effect.catchIf(Fiber.join(runner(ws)), isCloseError, () => Effect.void)
      })

    const server = yield* Server.make({ ...settings, routes: { [path]: serve } }).pipe(Effect.mapError(serverError))
    const address = yield* Effect.fromResult(NetAddress.inetAddressFromIpString(server.address.host, server.address.port)).pipe(
      Effect.mapError(openError)
    )

    const run = <R, E, _>(handler: (socket: Socket.Socket) => Effect.Effect<_, E, R>): Effect.Effect<never, SocketServer.SocketServerError, R> =>
      Effect.acquireUseRelease(
        Effect.gen(function*() {
          const scope = yield* Scope.make()
          const context = Context.omit(Scope.Scope)(yield* Effect.context<R>()) as Context.Context<R>
          const runner: Runner = (ws) =>
            Fiber.runIn(Effect.runForkWith(Context.add(context, CurrentConnection, ws))(Effect.suspend(() => handler(toSocket(ws)))), scope)
          runners.push(runner)
          running.openUnsafe()
          return { scope, runner }
        }),
        () => Effect.never,
        ({ runner, scope }) =>
          Effect.suspend(() => {
            runners.splice(runners.indexOf(runner), 1)
            if (runners.length === 0) running.closeUnsafe()
            return Scope.close(scope, Exit.void)
          })
      )

    return SocketServer.SocketServer.of({ address, run })
  })

/**
 * `makeSocketServer` as a Layer providing `SocketServer.SocketServer`.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerSocketServer = (
  options: SocketServerOptions = {}
): Layer.Layer<SocketServer.SocketServer, SocketServer.SocketServerError> =>
  Layer.effect(SocketServer.SocketServer, makeSocketServer(options))

const isCloseError = (error: unknown): boolean =>
  Socket.isSocketError(error) && error.reason._tag === "SocketCloseError"
