/**
 * The HTTP upgrade for the two raw peers (tcp-reflect.ts, raw-echo.ts): waits
 * for the request head on a plain TCP socket, answers 101 with the
 * Sec-WebSocket-Accept of RFC 6455 §4.2.2 (no extensions, no subprotocol),
 * then hands every later chunk, starting with bytes that came after the head,
 * to `onData`. No other check: these peers are ceilings, not servers.
 */
import * as Crypto from "node:crypto"
import type * as Net from "node:net"

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/** Sets up the upgrade on a fresh socket; `onData` owns every chunk after it. */
export const upgrade = (socket: Net.Socket, onData: (chunk: Buffer) => void): void => {
  socket.setNoDelay(true)
  socket.on("error", () => socket.destroy())
  let head = Buffer.alloc(0) // request bytes until the head is complete
  const onHead = (chunk: Buffer): void => {
    head = Buffer.concat([head, chunk])
    const end = head.indexOf("\r\n\r\n")
    if (end < 0) {
      if (head.length > 16384) socket.destroy()
      return
    }
    const key = /^sec-websocket-key:[ \t]*(\S+)/im.exec(head.subarray(0, end).toString("latin1"))?.[1]
    if (key === undefined) {
      socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
      return
    }
    const accept = Crypto.createHash("sha1").update(key + GUID).digest("base64")
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`
    )
    socket.off("data", onHead)
    socket.on("data", onData)
    if (head.length > end + 4) onData(Buffer.from(head.subarray(end + 4)))
  }
  socket.on("data", onHead)
}
