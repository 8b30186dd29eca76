/**
 * The echo server: every message comes back as it came, on port 8888 (PORT
 * overrides it) at path /ws, with permessage-deflate whenever a client offers
 * it. Its limits let Autobahn's largest cases pass (16 MiB messages, 4 MiB in
 * 64-byte fragments). METRICS=0 turns its metrics off (for the benchmark's
 * before/after).
 *
 *     npm start                          # logs where it listens
 *     Effect.runFork(EchoServer)         # from your own program
 *
 * SIGINT or SIGTERM shut it down gracefully (1001 to every connection).
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as Server from "../src/Server.ts"

const port = Number(process.env.PORT ?? 8888)

export const EchoServer = Effect.gen(function*() {
  const server = yield* Server.make({
    port,
    maxMessageSize: 64 * 1024 * 1024,
    maxConnections: 100_000,
    compression: {},
    metrics: process.env.METRICS !== "0",
    routes: {
      "/ws": (ws) => ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch)))
    }
  })
  yield* Effect.logInfo(`echo server listening on ws://127.0.0.1:${server.address.port}/ws`)
  return yield* Effect.never
}).pipe(Effect.scoped)

if (import.meta.main) NodeRuntime.runMain(EchoServer)
