/**
 * Peer: fan-out on websock's topics (issue 15): every connection subscribes
 * to one topic, and each message it sends is published to that topic;
 * `publish` leaves the sender out, as the fan-out scenarios need. Limits as
 * in examples/EchoServer.ts where they matter here (10,001 connections),
 * logs off. METRICS=0 turns its metrics off.
 *
 *     PORT=9000 node bench/peers/websock-fanout.ts
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as References from "effect/References"
import * as Stream from "effect/Stream"
import * as Server from "../../src/Server.ts"

const port = Number(process.env.PORT ?? 9000)

const FanOut = Server.serve({
  port,
  host: "127.0.0.1",
  maxConnections: 100_000,
  metrics: process.env.METRICS !== "0",
  routes: {
    "/ws": (ws) =>
      Effect.gen(function*() {
        yield* ws.subscribe("bench")
        yield* ws.messages.pipe(Stream.runForEach((message) => ws.publish("bench", message)))
      })
  }
}).pipe(Effect.provideService(References.MinimumLogLevel, "None"))

console.log(`websock fan-out listening on ws://127.0.0.1:${port}/ws`)
NodeRuntime.runMain(FanOut)
