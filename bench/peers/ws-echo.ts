/**
 * Peer: an echo server on `ws`, the way its README writes one. With
 * WS_NO_BUFFER_UTIL=1 ws masks and unmasks in pure JS; without it, ws uses the
 * `bufferutil` addon when installed (it is a devDependency of this repository).
 * DEFLATE=1 turns permessage-deflate on with ws's defaults.
 *
 *     PORT=9000 WS_NO_BUFFER_UTIL=1 node bench/peers/ws-echo.ts
 */
import { createRequire } from "node:module"
import { WebSocketServer } from "ws"

const port = Number(process.env.PORT ?? 9000)
const deflate = process.env.DEFLATE === "1"

/** Whether ws will find bufferutil: the same test ws makes when it loads. */
const bufferUtil = (): boolean => {
  if (process.env.WS_NO_BUFFER_UTIL) return false
  try {
    createRequire(import.meta.url).resolve("bufferutil")
    return true
  } catch {
    return false
  }
}

const server = new WebSocketServer({ host: "127.0.0.1", port, path: "/ws", perMessageDeflate: deflate })
server.on("connection", (ws) => {
  ws.on("error", () => ws.terminate())
  ws.on("message", (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }))
})
server.on("listening", () => {
  console.log(`ws echo listening on ws://127.0.0.1:${port}/ws (bufferutil: ${bufferUtil()}, deflate: ${deflate})`)
})
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0))
