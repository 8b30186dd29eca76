/**
 * Peer: fan-out on `ws`, the way ws users broadcast (ws#476, its README's
 * "broadcast to all connected clients, excluding itself"): on each message,
 * loop over `wss.clients` and `send` it to every other open client. Each send
 * frames the message again: ws has no shared, pre-framed broadcast. With
 * WS_NO_BUFFER_UTIL=1 it runs in pure JS (the ratio baseline); without it, ws
 * uses the `bufferutil` addon (a devDependency).
 *
 *     PORT=9000 WS_NO_BUFFER_UTIL=1 node bench/peers/ws-fanout.ts
 */
import { WebSocket, WebSocketServer } from "ws"

const port = Number(process.env.PORT ?? 9000)

const server = new WebSocketServer({ host: "127.0.0.1", port, path: "/ws", perMessageDeflate: false })
server.on("connection", (ws) => {
  ws.on("error", () => ws.terminate())
  ws.on("message", (data, isBinary) => {
    for (const client of server.clients) {
      if (client !== ws && client.readyState === WebSocket.OPEN) client.send(data as Buffer, { binary: isBinary })
    }
  })
})
server.on("listening", () => {
  console.log(`ws fan-out listening on ws://127.0.0.1:${port}/ws (bufferutil: ${!process.env.WS_NO_BUFFER_UTIL})`)
})
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0))
