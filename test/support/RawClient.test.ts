/**
 * The test client checks itself: against a fake server (plain `node:net`)
 * that misbehaves on purpose, `expectClose` and `expectMessage` must fail, so
 * that a passing conformance case means what it says; and its chopped writes
 * must reach the server as separate reads.
 */
import { Buffer } from "node:buffer"
import { createHash } from "node:crypto"
import * as Net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import * as Frame from "../../src/Frame.ts"
import { text } from "./Bytes.ts"
import { RawClient } from "./RawClient.ts"

type Behaviour = (socket: Net.Socket, frame: Frame.Frame) => void

interface Fake {
  readonly port: number
  readonly close: () => Promise<void>
}

/** Runs `body` against a fake server that accepts the upgrade, then calls `behaviour` with every frame the client sends; closes it after `body`, even when it fails. */
const withFake = async (behaviour: Behaviour, body: (server: Fake) => Promise<void>, onChunk?: (chunk: Buffer) => void) => {
  const server = await fake(behaviour, onChunk)
  try {
    await body(server)
  } finally {
    await server.close()
  }
}

const fake = async (behaviour: Behaviour, onChunk?: (chunk: Buffer) => void): Promise<Fake> => {
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
  it("expectClose passes when the server answers Close and ends TCP", () =>
    withFake(answerClose((s) => s.end()), async (server) => {
      const c = await RawClient.connect(server.port)
      await c.sendClose(1000)
      expect(await c.expectClose(1000)).toEqual({ code: 1000, reason: "" })
    }))

  it("expectClose fails on a different code", () =>
    withFake(answerClose((s) => s.end()), async (server) => {
      const c = await RawClient.connect(server.port)
      await c.sendClose(1001)
      await expect(c.expectClose(1000)).rejects.toThrow(/expected Close 1000, got Close 1001/)
    }))

  it("expectClose fails when the server never ends TCP", () =>
    withFake(answerClose(() => {}), async (server) => {
      const c = await RawClient.connect(server.port)
      await c.sendClose(1000)
      await expect(c.expectClose(1000, { timeout: 200 })).rejects.toThrow(/the server to close TCP/)
    }))

  it("expectClose fails when the server waits for the client to close TCP first", () =>
    withFake(answerClose((s) => s.once("end", () => s.end())), async (server) => {
      const c = await RawClient.connect(server.port)
      await c.sendClose(1000)
      await expect(c.expectClose(1000, { timeout: 200 })).rejects.toThrow(/the server to close TCP/)
    }))

  it("expectClose fails when the server resets the connection", async () => {
    // The reset comes once the client has its Close (a reset any earlier could
    // discard the Close in flight, and the test would check something else).
    let client: RawClient | undefined = undefined
    const hasClose = () => client?.log.some((line) => line.startsWith("received Close")) === true
    const resetOnceReceived = (s: Net.Socket) => {
      if (hasClose()) s.resetAndDestroy()
      else setImmediate(() => resetOnceReceived(s))
    }
    await withFake(answerClose(resetOnceReceived), async (server) => {
      const c = client = await RawClient.connect(server.port)
      await c.sendClose(1000)
      await expect(c.expectClose(1000)).rejects.toThrow(/not closed cleanly|without the server's FIN/)
    })
  })

  it("expectClose fails when the server sends a frame after its Close", () =>
    withFake(
      answerClose((s) => {
        write(s, Frame.Opcode.Text, text("late"))
        s.end()
      }),
      async (server) => {
        const c = await RawClient.connect(server.port)
        await c.sendClose(1000)
        await expect(c.expectClose(1000)).rejects.toThrow(/frames after its Close/)
      }
    ))

  it("expectClose fails when the server ends TCP without a Close", () =>
    withFake((s) => s.end(), async (server) => {
      const c = await RawClient.connect(server.port)
      await c.sendText("x")
      await expect(c.expectClose(1000)).rejects.toThrow(/instead of sending a frame/)
    }))

  it("expectMessage fails on a masked server frame and on a control frame", () =>
    withFake((s, frame) => {
      if (frame.opcode === Frame.Opcode.Text) write(s, Frame.Opcode.Text, frame.payload, Uint8Array.of(1, 2, 3, 4))
      if (frame.opcode === Frame.Opcode.Binary) write(s, Frame.Opcode.Pong, new Uint8Array(0))
    }, async (server) => {
      const c = await RawClient.connect(server.port)
      await c.sendText("masked")
      await expect(c.expectMessage()).rejects.toThrow(/invalid frame \(1002/)
      const d = await RawClient.connect(server.port)
      await d.sendBinary(Uint8Array.of(1))
      await expect(d.expectMessage()).rejects.toThrow(/expected a message, got Pong/)
    }))

  it("chopped writes arrive as separate reads, one a piece, all read when the write resolves", async () => {
    const reads: Array<number> = [] // sizes of the fake server's reads
    await withFake(() => {}, async (server) => {
      const c = await RawClient.connect(server.port)
      const before = reads.length
      // 16 bytes (2 header + 4 mask + 10 payload), one a piece
      await c.sendText("0123456789", { chop: { size: 1 } })
      expect(reads.slice(before)).toEqual(Array.from({ length: 16 }, () => 1))
      expect(c.serverBytesRead()).toBe(c.bytesSent)
      // sizes cycle as `chop` cuts them
      await c.sendBinary(new Uint8Array(24), { chop: { size: [5, 20] } })
      expect(reads.slice(before + 16)).toEqual([5, 20, 5])
    }, (chunk) => reads.push(chunk.length))
  })
})
