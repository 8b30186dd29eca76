/**
 * Peer: fan-out on Bun's built-in pub/sub (uWebSockets inside): every
 * connection subscribes to one topic when it opens, and each message it sends
 * is published to that topic. `ws.publish` leaves the sender out, as the
 * fan-out scenarios need. Runs under the `bun` binary of the devDependency.
 *
 *     PORT=9000 node_modules/.bin/bun bench/peers/bun-pubsub.ts
 */
import * as BunTypes from "./bun-types.ts"

const port = Number(process.env.PORT ?? 9000)
const Bun = BunTypes.bun()

Bun.serve({
  port,
  hostname: "127.0.0.1",
  fetch: BunTypes.upgradeWs,
  websocket: {
    open(ws) {
      ws.subscribe("bench")
    },
    message(ws, message) {
      ws.publish("bench", message)
    },
    perMessageDeflate: false,
    idleTimeout: 0
  }
})
console.log(`bun ${Bun.version} pub/sub listening on ws://127.0.0.1:${port}/ws`)
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0))
