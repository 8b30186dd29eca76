/**
 * Peer: an echo server on Effect's own WebSocket server,
 * `NodeSocketServer.layerWebSocket` (ws inside), written the batch-friendly
 * way: pull a batch of messages, write the batch back with `writeAll`. Text
 * comes out of the reader as strings and goes back as text frames. ws inside
 * uses `bufferutil` when it is installed (set WS_NO_BUFFER_UTIL=1 to stop it).
 * DEFLATE=1 turns permessage-deflate on.
 *
 *     PORT=9000 node bench/peers/effect-echo.ts
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeSocketServer from "@effect/platform-node/NodeSocketServer"
import * as Effect from "effect/Effect"
import type * as Socket from "effect/socket/Socket"
import * as SocketServer from "effect/socket/SocketServer"

const port = Number(process.env.PORT ?? 9000)
const deflate = process.env.DEFLATE === "1"

const echo = (socket: Socket.Socket) =>
  Effect.gen(function*() {
    const reader = yield* socket.reader
    const writer = yield* socket.writer
    while (true) {
      const batch = yield* reader.pull
      yield* writer.writeAll(batch)
    }
  }).pipe(Effect.scoped, Effect.ignore)

const main = Effect.gen(function*() {
  const server = yield* SocketServer.SocketServer
  yield* Effect.sync(() => console.log(`effect echo listening on ws://127.0.0.1:${port}/ws (deflate: ${deflate})`))
  return yield* server.run(echo)
}).pipe(
  Effect.provide(NodeSocketServer.layerWebSocket({ host: "127.0.0.1", port, path: "/ws", perMessageDeflate: deflate }))
)

NodeRuntime.runMain(main)
