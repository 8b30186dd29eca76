/**
 * Peer: an echo server on `Bun.serve` (uWebSockets inside), the way Bun's
 * docs write one: `message(ws, m) { ws.send(m) }`; text comes back as text,
 * binary as binary. Limits raised so that scenario E's 16 MiB messages pass
 * and nothing is dropped under backpressure. DEFLATE=1 turns
 * permessage-deflate on. Runs under the `bun` binary of the devDependency.
 *
 *     PORT=9000 node_modules/.bin/bun bench/peers/bun-echo.ts
 */
import * as BunTypes from "./bun-types.ts"

const port = Number(process.env.PORT ?? 9000)
const deflate = process.env.DEFLATE === "1"
const Bun = BunTypes.bun()

Bun.serve({
  port,
  hostname: "127.0.0.1",
  fetch: BunTypes.upgradeWs,
  websocket: {
    message(ws, message) {
      ws.send(message)
    },
    perMessageDeflate: deflate,
    maxPayloadLength: 64 * 1024 * 1024,
    backpressureLimit: 256 * 1024 * 1024,
    closeOnBackpressureLimit: false,
    idleTimeout: 0
  }
})
console.log(`bun ${Bun.version} echo listening on ws://127.0.0.1:${port}/ws (deflate: ${deflate})`)
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0))
