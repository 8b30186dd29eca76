/**
 * The test client checks itself: against a fake server (plain `node:net`)
 * that misbehaves on purpose, `expectClose` and `expectMessage` must fail, so
 * that a passing conformance case means what it says.
 */
import { Buffer } from "node:buffer"
import { createHash } from "node:crypto"
import * as Net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import * as Frame from "../../src/Frame.ts"
import { RawClient } from "./RawClient.ts"

type Behaviour = (socket: Net.Socket, frame: Frame.Frame) => void

/** Accepts the upgrade, then calls `behaviour` with every frame the client sends. */
const fake = async (behaviour: Behaviour, onChunk?: (chunk: Buffer) => void) => {
  const sockets = new Set<Net.Socket>()
  const server = Net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
    let head = Buffer.alloc(0)
    let upgraded = false
    let decoder = Frame.initialDecoder({ role: "server", maxPayload: 1 << 20, allowRsv1: false })
    socket.on("error", () => {})
    socket.on("data", (chunk: Buffer) => {
      onChunk?.(chunk)
      if (!upgraded) {
        head = Buffer.concat([head, chunk])
        const end = head.indexOf("\r\n\r\n")
        if (end < 0) return
        const key = /sec-websocket-key: *(\S+)/i.exec(head.toString("latin1"))?.[1] ?? ""
        const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64")
        socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`)
        upgraded = true
        chunk = head.subarray(end + 4)
      }
      const result = Frame.decode(decoder, Uint8Array.from(chunk))
      for (const frame of result.frames) behaviour(socket, frame)
      if (result._tag === "Ok") decoder = result.state
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const socket of sockets) socket.destroy()
      })
  }
}

const write = (socket: Net.Socket, opcode: Frame.Opcode, payload: Uint8Array, mask?: Uint8Array) => {
  const [header, body] = Frame.encode(opcode, payload, mask === undefined ? {} : { mask })
  socket.write(Buffer.concat([header, body]))
}

const answerClose = (after: (socket: Net.Socket) => void): Behaviour => (socket, frame) => {
  if (frame.opcode === Frame.Opcode.Close) {
    write(socket, Frame.Opcode.Close, frame.payload)
    after(socket)
  }
}

afterEach(() => RawClient.destroyAll())

describe("RawClient against a misbehaving server", { timeout: 5_000 }, () => {
  it("expectClose passes when the server answers Close and ends TCP", async () => {
    const server = await fake(answerClose((s) => s.end()))
    const c = await RawClient.connect(server.port)
    await c.sendClose(1000)
    expect(await c.expectClose(1000)).toEqual({ code: 1000, reason: "" })
    await server.close()
  })

  it("expectClose fails on a different code", async () => {
    const server = await fake(answerClose((s) => s.end()))
    const c = await RawClient.connect(server.port)
    await c.sendClose(1001)
    await expect(c.expectClose(1000)).rejects.toThrow(/expected Close 1000, got Close 1001/)
    c.destroy()
    await server.close()
  })

  it("expectClose fails when the server never ends TCP", async () => {
    const server = await fake(answerClose(() => {}))
    const c = await RawClient.connect(server.port)
    await c.sendClose(1000)
    await expect(c.expectClose(1000, { timeout: 200 })).rejects.toThrow(/the server to close TCP/)
    c.destroy()
    await server.close()
  })

  it("expectClose fails when the server waits for the client to close TCP first", async () => {
    const server = await fake(answerClose((s) => s.once("end", () => s.end())))
    const c = await RawClient.connect(server.port)
    await c.sendClose(1000)
    await expect(c.expectClose(1000, { timeout: 200 })).rejects.toThrow(/the server to close TCP/)
    c.destroy()
    await server.close()
  })

  it("expectClose fails when the server resets the connection", async () => {
    const server = await fake(answerClose((s) => setTimeout(() => s.resetAndDestroy(), 10)))
    const c = await RawClient.connect(server.port)
    await c.sendClose(1000)
    await expect(c.expectClose(1000)).rejects.toThrow(/not closed cleanly|without the server's FIN/)
    await server.close()
  })

  it("expectClose fails when the server sends a frame after its Close", async () => {
    const server = await fake(answerClose((s) => {
      write(s, Frame.Opcode.Text, new TextEncoder().encode("late"))
      s.end()
    }))
    const c = await RawClient.connect(server.port)
    await c.sendClose(1000)
    await expect(c.expectClose(1000)).rejects.toThrow(/frames after its Close/)
    await server.close()
  })

  it("expectClose fails when the server ends TCP without a Close", async () => {
    const server = await fake((s) => s.end())
    const c = await RawClient.connect(server.port)
    await c.sendText("x")
    await expect(c.expectClose(1000)).rejects.toThrow(/instead of sending a frame/)
    await server.close()
  })

  it("expectMessage fails on a masked server frame and on a control frame", async () => {
    const server = await fake((s, frame) => {
      if (frame.opcode === Frame.Opcode.Text) write(s, Frame.Opcode.Text, frame.payload, Uint8Array.of(1, 2, 3, 4))
      if (frame.opcode === Frame.Opcode.Binary) write(s, Frame.Opcode.Pong, new Uint8Array(0))
    })
    const c = await RawClient.connect(server.port)
    await c.sendText("masked")
    await expect(c.expectMessage()).rejects.toThrow(/invalid frame \(1002/)
    const d = await RawClient.connect(server.port)
    await d.sendBinary(Uint8Array.of(1))
    await expect(d.expectMessage()).rejects.toThrow(/expected a message, got Pong/)
    await server.close()
  })

  it("chopped writes arrive as separate reads", async () => {
    let reads = 0 // data events seen by the fake server
    const server = await fake(() => {}, () => reads++)
    const c = await RawClient.connect(server.port)
    const before = reads
    await c.sendText("0123456789", { chop: { size: 1, delay: 2 } })
    await new Promise((resolve) => setTimeout(resolve, 20))
    // 16 bytes (2 header + 4 mask + 10 payload), one a write: at least most of them separate
    expect(reads - before).toBeGreaterThanOrEqual(12)
    c.destroy()
    await server.close()
  })
})
