/**
 * Peer: fan-out on websock without topics, the way examples/ChatRoom.ts does
 * it today: every connection joins one set, and each message is `trySend` to
 * every other member (a loop, like the ws peer's). The baseline that
 * websock's topics (bench/peers/websock-fanout.ts) are measured against.
 * Logs off; METRICS=0 turns its metrics off.
 *
 *     PORT=9000 node bench/peers/websock-loop-fanout.ts
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as References from "effect/References"
import * as Stream from "effect/Stream"
import * as Server from "../../src/Server.ts"
import type * as WebSocket from "../../src/WebSocket.ts"

const port = Number(process.env.PORT ?? 9000)
const members = new Set<WebSocket.WebSocketConnection>()

const join = (ws: WebSocket.WebSocketConnection) =>
  Effect.acquireRelease(Effect.sync(() => members.add(ws)), () => Effect.sync(() => members.delete(ws)))

const FanOut = Server.serve({
  port,
  host: "127.0.0.1",
  maxConnections: 100_000,
  metrics: process.env.METRICS !== "0",
  routes: {
    "/ws": (ws) =>
      Effect.gen(function*() {
        yield* join(ws)
        yield* ws.messages.pipe(Stream.runForEach((message) =>
          Effect.forEach(members, (member) => member === ws ? Effect.void : member.trySend(message), { discard: true })
        ))
      })
  }
}).pipe(Effect.provideService(References.MinimumLogLevel, "None"))

console.log(`websock fan-out (hand-rolled loop) listening on ws://127.0.0.1:${port}/ws`)
NodeRuntime.runMain(FanOut)
