/**
 * Interoperation with a real client: the `ws` package talks to our server
 * over TCP. Text and binary echo, fragmented sends, ping, subprotocols,
 * permessage-deflate, and the closing handshake from both sides, observed
 * through `ws`'s WHATWG-style close event (`code`, `reason`, `wasClean`).
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import type * as Ws from "../src/WebSocket.ts"
import { text as utf8 } from "./support/Bytes.ts"
import * as TestServer from "./support/TestServer.ts"

interface Closed {
  readonly code: number
  readonly reason: string
  readonly wasClean: boolean
}

const TIMEOUT = 2_000

/** Resolves with the first `event` of `target`, rejects after a timeout. */
const once = <A>(subscribe: (resolve: (a: A) => void) => void, what: string): Promise<A> =>
  new Promise<A>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), TIMEOUT)
    subscribe((a) => {
      clearTimeout(timer)
      resolve(a)
    })
  })

/** Every `ws` client a test made, terminated after it (a failed test leaves none open). */
const clients = new Set<WebSocket>()
afterEach(() => {
  for (const socket of clients) socket.terminate()
  clients.clear()
})

/** A `ws` client whose messages are queued for `next`, and whose close event is captured. */
const open = async (url: string, protocols?: ReadonlyArray<string>, options?: WebSocket.ClientOptions) => {
  const socket = new WebSocket(url, protocols === undefined ? [] : [...protocols], options)
  clients.add(socket)
  socket.binaryType = "nodebuffer"
  const messages: Array<{ data: Buffer; isBinary: boolean }> = []
  let wake: (() => void) | undefined = undefined
  socket.on("message", (data: Buffer, isBinary: boolean) => {
    messages.push({ data, isBinary })
    wake?.()
  })
  const closed = once<Closed>(
    (resolve) => socket.addEventListener("close", (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean })),
    "the close event"
  )
  const errors: Array<Error> = []
  socket.on("error", (e) => errors.push(e))
  await once<void>((resolve) => socket.once("open", () => resolve()), "the open event")
  const next = async (): Promise<{ data: Buffer; isBinary: boolean }> => {
    while (messages.length === 0) await once<void>((resolve) => (wake = resolve), "a message")
    return messages.shift()!
  }
  return { socket, next, closed, errors }
}

let server: TestServer.StartedServer
let url: string

/** Closes with 4000 "bye" after the first message it receives (after echoing it). */
const closer = (ws: Ws.WebSocket) =>
  ws.messages.pipe(
    Stream.take(1),
    Stream.runForEach((m) => ws.send(m)),
    Effect.andThen(ws.close(4000, "bye"))
  )

beforeAll(async () => {
  server = await TestServer.start({
    maxMessageSize: 16 * 1024 * 1024,
    routes: {
      "/ws": TestServer.echo,
      "/closer": closer,
      "/protocol": {
        handler: (ws) => Effect.andThen(ws.send(ws.protocol ?? ""), TestServer.echo(ws)),
        protocol: (offered) => offered.at(-1)
      }
    }
  })
  url = `ws://127.0.0.1:${server.port}`
})
afterAll(() => server.close())

describe("ws client", () => {
  it("echoes text and binary, then closes cleanly (1000, wasClean)", async () => {
    const c = await open(`${url}/ws`)
    c.socket.send("Hello, κόσμε 𝄞")
    const text = await c.next()
    expect(text.isBinary).toBe(false)
    expect(utf8(text.data)).toBe("Hello, κόσμε 𝄞")
    const bytes = Buffer.from(Array.from({ length: 300 }, (_, i) => i & 0xff))
    c.socket.send(bytes)
    const binary = await c.next()
    expect(binary.isBinary).toBe(true)
    expect(binary.data).toEqual(bytes)
    c.socket.close(1000, "done")
    expect(await c.closed).toMatchObject({ code: 1000, wasClean: true })
    expect(c.errors).toEqual([])
  })

  it("echoes empty, 64 KiB and 1 MiB messages", async () => {
    const c = await open(`${url}/ws`)
    for (const size of [0, 65536, 1024 * 1024]) {
      const data = Buffer.alloc(size, size & 0xff)
      c.socket.send(data)
      const got = await c.next()
      expect(got.isBinary).toBe(true)
      expect(got.data.equals(data)).toBe(true)
    }
    c.socket.send("")
    expect((await c.next()).data.length).toBe(0)
    c.socket.close(1000)
    expect((await c.closed).wasClean).toBe(true)
  })

  it("echoes 500 messages in order", async () => {
    const c = await open(`${url}/ws`)
    for (let i = 0; i < 500; i++) c.socket.send(`message ${i}`)
    for (let i = 0; i < 500; i++) expect(utf8((await c.next()).data)).toBe(`message ${i}`)
    c.socket.close(1000)
    expect(await c.closed).toMatchObject({ code: 1000, wasClean: true })
  })

  it("reassembles a message ws sends in fragments", async () => {
    const c = await open(`${url}/ws`)
    c.socket.send("frag", { fin: false })
    c.socket.send("ment", { fin: false })
    c.socket.send("ed", { fin: true })
    expect(utf8((await c.next()).data)).toBe("fragmented")
    c.socket.close(1000)
    expect((await c.closed).wasClean).toBe(true)
  })

  it("answers ws's ping with a pong carrying the payload", async () => {
    const c = await open(`${url}/ws`)
    const pong = once<Buffer>((resolve) => c.socket.once("pong", resolve), "a pong")
    c.socket.ping("are you there")
    expect(utf8(await pong)).toBe("are you there")
    c.socket.close(1000)
    expect((await c.closed).wasClean).toBe(true)
  })

  it("a server-initiated close reaches ws with its code and reason, cleanly", async () => {
    const c = await open(`${url}/closer`)
    c.socket.send("last words")
    expect(utf8((await c.next()).data)).toBe("last words")
    expect(await c.closed).toEqual({ code: 4000, reason: "bye", wasClean: true })
  })

  it("negotiates the subprotocol the route chooses", async () => {
    const c = await open(`${url}/protocol`, ["one", "two"])
    expect(c.socket.protocol).toBe("two")
    expect(utf8((await c.next()).data)).toBe("two")
    c.socket.close(1000)
    expect((await c.closed).wasClean).toBe(true)
  })

  it("ws sees a 404 as an unexpected-response error", async () => {
    const socket = new WebSocket(`${url}/nowhere`)
    clients.add(socket)
    socket.on("error", () => {}) // terminate() before the upgrade reports an error
    const status = await once<number>((resolve) => socket.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0)), "the response")
    socket.terminate()
    expect(status).toBe(404)
  })

  it("server shutdown reaches ws as a clean 1001", async () => {
    const own = await TestServer.start()
    try {
      const c = await open(`ws://127.0.0.1:${own.port}/ws`)
      await own.close()
      expect(await c.closed).toMatchObject({ code: 1001, wasClean: true })
    } finally {
      await own.close()
    }
  })
})

describe("ws client with permessage-deflate", () => {
  it("negotiates permessage-deflate and echoes compressed text and binary", async () => {
    await TestServer.withServer({ compression: { threshold: 0 } }, async (port) => {
      const c = await open(`ws://127.0.0.1:${port}/ws`, undefined, { perMessageDeflate: { threshold: 0 } })
      expect(c.socket.extensions).toContain("permessage-deflate")
      const text = "compress me ".repeat(1000)
      c.socket.send(text)
      expect(utf8((await c.next()).data)).toBe(text)
      const binary = Buffer.alloc(100_000, 7)
      c.socket.send(binary)
      expect((await c.next()).data.equals(binary)).toBe(true)
      for (let i = 0; i < 20; i++) c.socket.send(`context takeover ${i}`)
      for (let i = 0; i < 20; i++) expect(utf8((await c.next()).data)).toBe(`context takeover ${i}`)
      c.socket.close(1000)
      expect(await c.closed).toMatchObject({ code: 1000, wasClean: true })
    })
  })
})
