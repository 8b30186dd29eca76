/**
 * Type-level checks of the handler API (the handler-traps issue), compiled by
 * `tsc --noEmit` (the first step of `npm test`) and never run: vitest only
 * runs `*.test.ts`. A check that does not hold is a compile error.
 *
 * - trap 7: the services a server requires are the union of what its
 *   handlers require, inferred with no type argument, and never `Scope` (each
 *   handler runs in a scope of its own); `make` adds `Scope` for itself.
 * - trap 10: the handle is `WebSocket.WebSocketConnection`, with
 *   `WebSocket.WebSocket` kept as a deprecated alias of it.
 * - the types of the new members the runtime tests use (`test/Handler.test.ts`).
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { ConnectionClosed, ServerError, WebSocketError, WebSocketErrorReason } from "../src/Errors.ts"
import * as Server from "../src/Server.ts"
import type * as WebSocket from "../src/WebSocket.ts"

/** True when A and B are the same type (mutual assignability through `any` does not count). */
type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false

/** Compiles only when A and B are the same type. */
const exact = <A, B>(_: Equals<A, B>): void => {}

/** Compiles only when `value` is assignable to T. */
const accepts = <T>(_value: T): void => {}

declare const any: <T>() => T

// -----------------------------------------------------------------------------
// 7. the server's requirements are inferred from its handlers
// -----------------------------------------------------------------------------

/** The handle as routes receive it (named apart from trap 10, so that these checks stand on their own). */
type Handle = Parameters<Server.Route["handler"]>[0]

class Users extends Context.Service<Users, { readonly name: (id: string) => Effect.Effect<string> }>()("test/Users") {}
class Clock extends Context.Service<Clock, { readonly now: Effect.Effect<number> }>()("test/Clock") {}

/** Requires Users. */
const needsUsers = (ws: Handle) =>
  Effect.gen(function*() {
    const users = yield* Users
    yield* ws.send(yield* users.name(ws.request.query.get("id") ?? ""))
  })

/** Requires Clock. */
const needsClock = (ws: Handle) =>
  Effect.gen(function*() {
    const clock = yield* Clock
    yield* ws.send(String(yield* clock.now))
  })

/** Requires only a Scope, which the server gives each handler. */
const withFinalizer = (ws: Handle) =>
  Effect.andThen(Effect.addFinalizer(() => Effect.void), Stream.runForEach(ws.messages, (m) => ws.send(m)))

// The handlers are what they say (so that the checks below test the server).
exact<Effect.Services<ReturnType<typeof needsUsers>>, Users>(true)
exact<Effect.Services<ReturnType<typeof needsClock>>, Clock>(true)
exact<Effect.Services<ReturnType<typeof withFinalizer>>, Scope.Scope>(true)

// serve: Users | Clock, from two handlers, no type argument
const served = Server.serve({ routes: { "/a": needsUsers, "/b": needsClock } })
exact<Effect.Services<typeof served>, Users | Clock>(true)
accepts<Effect.Effect<never, ServerError, Users | Clock>>(served)
accepts<typeof served>(any<Effect.Effect<never, ServerError, Users | Clock>>())

// serve: a handler's Scope is not the server's
const servedWithFinalizer = Server.serve({ routes: { "/a": needsUsers, "/f": withFinalizer } })
exact<Effect.Services<typeof servedWithFinalizer>, Users>(true)
const servedOnlyFinalizer = Server.serve({ routes: { "/f": withFinalizer } })
exact<Effect.Services<typeof servedOnlyFinalizer>, never>(true)
accepts<Effect.Effect<never, ServerError, never>>(servedOnlyFinalizer)

// serve: a route given as an object with its handler counts the same
const servedRouteObject = Server.serve({
  routes: {
    "/a": needsUsers,
    "/b": { handler: needsClock, protocol: (offered) => offered[0] }
  }
})
exact<Effect.Services<typeof servedRouteObject>, Users | Clock>(true)

// make: the handlers' services, minus their Scope, plus the Scope make itself listens in
const made = Server.make({ routes: { "/a": needsUsers, "/b": needsClock, "/f": withFinalizer } })
exact<Effect.Services<typeof made>, Scope.Scope | Users | Clock>(true)
accepts<Effect.Effect<Server.RunningServer, ServerError, Scope.Scope | Users | Clock>>(made)
accepts<typeof made>(any<Effect.Effect<Server.RunningServer, ServerError, Scope.Scope | Users | Clock>>())
const madeOnlyFinalizer = Server.make({ routes: { "/f": withFinalizer } })
exact<Effect.Services<typeof madeOnlyFinalizer>, Scope.Scope>(true)

// layer: the handlers' services, no Scope
const layered = Server.layer({ routes: { "/a": needsUsers, "/b": needsClock, "/f": withFinalizer } })
exact<Layer.Services<typeof layered>, Users | Clock>(true)
exact<Layer.Success<typeof layered>, Server.WebSocketServer>(true)
accepts<Layer.Layer<Server.WebSocketServer, ServerError, Users | Clock>>(layered)
accepts<typeof layered>(any<Layer.Layer<Server.WebSocketServer, ServerError, Users | Clock>>())
const layeredOnlyFinalizer = Server.layer({ routes: { "/f": withFinalizer } })
exact<Layer.Services<typeof layeredOnlyFinalizer>, never>(true)

// -----------------------------------------------------------------------------
// 10. the handle's name does not collide with the global WebSocket
// -----------------------------------------------------------------------------

exact<WebSocket.WebSocket, WebSocket.WebSocketConnection>(true)
accepts<(ws: WebSocket.WebSocketConnection) => WebSocket.WebSocket>((ws) => ws)
accepts<(ws: WebSocket.WebSocket) => WebSocket.WebSocketConnection>((ws) => ws)
// the handler of a route is given a WebSocketConnection
exact<Parameters<Server.Route["handler"]>[0], WebSocket.WebSocketConnection>(true)
// and the global WebSocket client is not it
accepts<Equals<WebSocket.WebSocketConnection, globalThis.WebSocket>>(false)

// -----------------------------------------------------------------------------
// the new members (traps 2, 3, 5, 6, 9)
// -----------------------------------------------------------------------------

type Connection = WebSocket.WebSocketConnection

// 2. receive takes one message
exact<Connection["receive"], Effect.Effect<WebSocket.Message, WebSocketError>>(true)

// 3. trySend never fails and says what it did; its policy is "drop" or "close"
exact<ReturnType<Connection["trySend"]>, Effect.Effect<"sent" | "queued" | "dropped" | "closed">>(true)
accepts<(ws: Connection) => unknown>((ws) => [
  ws.trySend("text"),
  ws.trySend(new Uint8Array(1), { overflow: "drop" }),
  ws.trySend("text", { overflow: "close" }),
  ws.trySend("text", {}),
  // @ts-expect-error "wait" is not a policy of trySend
  ws.trySend("text", { overflow: "wait" })
])
// 3. a ConnectionClosed says which connection it is about
exact<ConnectionClosed["connection"], number>(true)

// 5. close can be refused
exact<ReturnType<Connection["close"]>, Effect.Effect<WebSocket.CloseOutcome, WebSocketError>>(true)
exact<Extract<WebSocketErrorReason, { readonly _tag: "InvalidClose" }> extends never ? false : true, true>(true)

// 6. path parameters; invalid options name the option
exact<WebSocket.Request["params"], Readonly<Record<string, string>>>(true)
accepts<(error: ServerError) => string | undefined>((error) =>
  error.reason._tag === "InvalidOption" ? error.reason.option : undefined
)

// 9. ping and terminate
exact<ReturnType<Connection["ping"]>, Effect.Effect<number, WebSocketError>>(true)
accepts<(ws: Connection) => unknown>((ws) => [ws.ping(), ws.ping(Uint8Array.of(1, 2, 3))])
exact<Connection["terminate"], Effect.Effect<void>>(true)

// -----------------------------------------------------------------------------
// the route's upgrade decision: its value typed for the handler, its
// requirements in the server's
// -----------------------------------------------------------------------------

class Auth extends Context.Service<Auth, { readonly user: (token: string | undefined) => Effect.Effect<{ readonly id: number } | undefined> }>()(
  "test/Auth"
) {}

const privateRoute = Server.route({
  upgrade: (request) =>
    Effect.gen(function*() {
      const auth = yield* Auth
      const user = yield* auth.user(request.headers.get("authorization"))
      if (user === undefined) return yield* Server.reject(401)
      return user
    }),
  handler: (ws, user) => {
    exact<typeof user, { readonly id: number }>(true)
    return needsClock(ws)
  },
  protocol: (_offered, _request, user) => (user.id > 0 ? "v1" : undefined),
  headers: (_request, user) => [["X-User", String(user.id)]]
})
exact<typeof privateRoute, Server.Route<Auth | Clock, { readonly id: number }>>(true)

/** Requires what the decision needs (Auth) and what the handlers need (Clock, Users). */
export const decided = Server.make({ routes: { "/private": privateRoute, "/users": needsUsers } })
exact<Effect.Services<typeof decided>, Scope.Scope | Auth | Clock | Users>(true)

// A decision may only fail with UpgradeRejected.
Server.route({
  // @ts-expect-error a decision's error channel is UpgradeRejected only
  upgrade: () => Effect.fail("nope"),
  handler: () => Effect.void
})

// -----------------------------------------------------------------------------
// Server.events: the requirements of its Effects, inferred; none for absent ones
// -----------------------------------------------------------------------------

const servedEvents = Server.serve({
  routes: {
    "/plain": Server.events({ message: (ws, message) => ws.send(message) }),
    "/services": Server.events({
      open: (ws) => Effect.andThen(Users, ws.send("hi")),
      message: (ws, message) => Effect.andThen(Effect.addFinalizer(() => Effect.void), ws.send(message)),
      close: (_ws, outcome) => Effect.andThen(Clock, Effect.log(outcome.code))
    })
  }
})
exact<Effect.Services<typeof servedEvents>, Users | Clock>(true)

const servedPlainEvents = Server.serve({ routes: { "/ws": Server.events({ message: (ws, message) => ws.send(message) }) } })
exact<Effect.Services<typeof servedPlainEvents>, never>(true)

// the upgrade decision's value reaches every event, typed
Server.events({
  upgrade: () => Effect.succeed({ user: "ada" }),
  open: (_ws, accepted) => Effect.succeed(accepted.user satisfies string),
  message: (_ws, _message, accepted) => Effect.succeed(accepted.user satisfies string),
  close: (_ws, outcome, accepted) => Effect.succeed([outcome.code satisfies number, accepted.user satisfies string])
})
