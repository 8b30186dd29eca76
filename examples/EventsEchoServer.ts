/**
 * The echo server with per-event Effects (`Server.events`): every message
 * comes back as it came, on port 8888 (PORT overrides it) at path /ws, with
 * no fiber parked per connection between messages. The same limits and
 * compression as examples/EchoServer.ts, so that the benchmark compares the
 * two forms of handler alone (`BENCH_SERVERS=websock,websock-events`).
 *
 *     node examples/EventsEchoServer.ts
 *
 * SIGINT or SIGTERM shut it down gracefully (1001 to every connection).
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Server from "../src/Server.ts"

const port = Number(process.env.PORT ?? 8888)

export const EventsEchoServer = Effect.gen(function*() {
  const server = yield* Server.make({
    port,
    maxMessageSize: 64 * 1024 * 1024,
    maxConnections: 100_000,
    compression: {},
    metrics: process.env.METRICS !== "0",
    routes: {
      "/ws": Server.events({ message: (ws, message) => ws.send(message) })
    }
  })
  yield* Effect.logInfo(`echo server (events) listening on ws://127.0.0.1:${server.address.port}/ws`)
  return yield* Effect.never
}).pipe(Effect.scoped)

if (import.meta.main) NodeRuntime.runMain(EventsEchoServer)
