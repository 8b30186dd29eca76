/**
 * The ceiling, as the performance issue measured it: a raw TCP echo in Node.
 * After answering the upgrade it writes every chunk back as it came, masked
 * client frames included, so it costs one read and one write per batch and
 * nothing else. No real client accepts masked frames from a server (RFC 6455
 * §5.1): the load generator does only with --allow-masked, which the runner
 * passes for this peer alone. raw-echo.ts is the ceiling that stays valid
 * WebSocket (it also unmasks).
 *
 *     PORT=9000 node bench/peers/tcp-reflect.ts
 */
import * as Net from "node:net"
import { upgrade } from "./upgrade.ts"

const port = Number(process.env.PORT ?? 9000)

const server = Net.createServer((socket) =>
  upgrade(socket, (chunk) => {
    // backpressure: the closed-loop client bounds what is in flight, but stay correct anyway
    if (!socket.write(chunk)) {
      socket.pause()
      socket.once("drain", () => socket.resume())
    }
  })
)
server.listen(port, "127.0.0.1", () => {
  console.log(`raw TCP reflector listening on ws://127.0.0.1:${port}/ws`)
})
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0))
