/**
 * The conformance fuzzer of `websock/testing`, for a fixed budget: against
 * examples/EchoServer.ts (a separate process, over TCP) it finds nothing;
 * against deliberately broken servers written here on node:net (one that
 * forgets the Pong, one that does not check UTF-8 and echoes what it gets,
 * one that answers violations with the wrong code) it finds the fault,
 * shrinks it to a small session, prints it as frames and bytes with the
 * seed, and replays it from the seed and path it printed.
 */
import * as Effect from "effect/Effect"
import * as References from "effect/References"
import * as ChildProcess from "node:child_process"
import * as Net from "node:net"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Frame from "../src/Frame.ts"
import * as Handshake from "../src/Handshake.ts"
import * as FuzzSession from "../src/internal/fuzzSession.ts"
import * as Testing from "../src/testing.ts"
import * as TestServer from "./support/TestServer.ts"

const root = Path.resolve(import.meta.dirname, "..")

interface Faults {
  /** Never answers a Ping. */
  readonly noPong?: boolean
  /** Echoes text without checking its UTF-8. */
  readonly noUtf8Check?: boolean
  /** Answers every violation with 1000 instead of its code. */
  readonly wrongCode?: boolean
}

/**
 * A small WebSocket echo server on node:net with the faults asked for:
 * websock's pure `Handshake` and `Frame` for the wire, rules of its own
 * (deliberately incomplete) above them.
 */
const brokenServer = async (faults: Faults) => {
  const sockets = new Set<Net.Socket>()
  const server = Net.createServer((socket) => {
    sockets.add(socket)
    socket.on("error", () => {})
    socket.on("close", () => sockets.delete(socket))
    let head = Handshake.initialHead(16 * 1024)
    let decoder: Frame.DecoderState | undefined = undefined
    let message: { opcode: number; parts: Array<Uint8Array> } | undefined = undefined
    let closed = false
    const send = (opcode: Frame.Opcode, payload: Uint8Array) => {
      for (const part of Frame.encode(opcode, payload)) socket.write(part)
    }
    const fail = (code: number) => {
      closed = true
      send(Frame.Opcode.Close, Frame.encodeClose(faults.wrongCode ? 1000 : code, ""))
      socket.end()
    }
    const frames = (chunk: Uint8Array) => {
      const result = Frame.decode(decoder!, chunk)
      for (const frame of result.frames) {
        if (closed) return
        switch (frame.opcode) {
          case Frame.Opcode.Ping:
            if (!faults.noPong) send(Frame.Opcode.Pong, frame.payload)
            break
          case Frame.Opcode.Pong:
            break
          case Frame.Opcode.Close: {
            const close = Frame.parseClose(frame.payload)
            if (close._tag === "Invalid") return fail(close.failure.code)
            closed = true
            send(Frame.Opcode.Close, close._tag === "Code" ? Frame.encodeClose(close.code, "") : new Uint8Array(0))
            socket.end()
            return
          }
          default: {
            if (frame.opcode === Frame.Opcode.Continuation) {
              if (message === undefined) return fail(1002)
            } else {
              if (message !== undefined) return fail(1002)
              message = { opcode: frame.opcode, parts: [] }
            }
            message.parts.push(Uint8Array.from(frame.payload))
            if (frame.fin) {
              const data = Buffer.concat(message.parts)
              if (message.opcode === Frame.Opcode.Text && !faults.noUtf8Check && !isUtf8(data)) return fail(1007)
              send(message.opcode as Frame.Opcode, data)
              message = undefined
            }
          }
        }
      }
      if (result._tag === "Violation") return fail(result.failure.code)
      decoder = result.state
    }
    socket.on("data", (chunk: Uint8Array) => {
      if (closed) return
      if (decoder !== undefined) return frames(chunk)
      const result = Handshake.feedHead(head, chunk)
      if (result._tag === "Incomplete") {
        head = result.state
        return
      }
      if (result._tag !== "Complete") return socket.destroy()
      const upgrade = Handshake.validateUpgrade(result.request)
      if (upgrade._tag !== "Accept") return socket.destroy()
      socket.write(Handshake.response101({ accept: Handshake.acceptKey(upgrade.key) }))
      decoder = Frame.initialDecoder({ role: "server", maxPayload: 1024 * 1024, allowRsv1: false })
      if (result.rest.length > 0) frames(result.rest)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `ws://127.0.0.1:${(server.address() as Net.AddressInfo).port}/`,
    close: () => new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resolve())
    })
  }
}

const isUtf8 = (bytes: Uint8Array): boolean => {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes)
    return true
  } catch {
    return false
  }
}

describe("against examples/EchoServer.ts", () => {
  let child: ChildProcess.ChildProcess
  let url = ""
  beforeAll(async () => {
    child = ChildProcess.spawn(process.execPath, [Path.join(root, "examples", "EchoServer.ts")], {
      env: { ...process.env, PORT: "0", METRICS: "0" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    url = await new Promise<string>((resolve, reject) => {
      let out = ""
      child.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        const found = /listening on (ws:\/\/\S+)/.exec(out)
        if (found !== null) resolve(found[1]!)
      })
      child.once("exit", (code) => reject(new Error(`the echo server exited (${code}): ${out}`)))
    })
  })
  afterAll(() => {
    child.kill("SIGTERM")
  })

  it("300 sessions find nothing", async () => {
    const report = await Testing.fuzz({ url, numRuns: 300, seed: 17 })
    expect(report.failure?.message).toBeUndefined()
    expect(report.runs).toBe(300)
  })
})

describe("fuzzRoute: a websock route started in the test", () => {
  it("the echo route passes 100 sessions", async () => {
    const report = await Effect.runPromise(Testing.fuzzRoute(TestServer.echo, { numRuns: 100 }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")))
    expect(report.failure?.message).toBeUndefined()
  })
})

describe("against deliberately broken servers", () => {
  const broken: Array<{ close: () => Promise<void> }> = []
  afterAll(async () => {
    for (const server of broken) await server.close()
  })
  const start = async (faults: Faults) => {
    const server = await brokenServer(faults)
    broken.push(server)
    return server.url
  }

  it("the broken server without faults passes (the fuzzer does not cry wolf)", async () => {
    const report = await Testing.fuzz({ url: await start({}), numRuns: 200, seed: 4 })
    expect(report.failure?.message).toBeUndefined()
  })

  it("finds the forgotten Pong, shrunk to a Ping and our Close, printed with the seed; the seed and path replay it", async () => {
    const url = await start({ noPong: true })
    const report = await Testing.fuzz({ url, numRuns: 200, seed: 1 })
    const failure = report.failure!
    expect(failure).toBeDefined()
    expect(failure.message).toContain("did not answer our last Ping")
    // Shrunk: one Ping (with the empty payload fast-check shrinks to) and the session's Close.
    expect(failure.session.frames.map((f) => f.opcode)).toEqual([0x9, 0x8])
    expect(failure.session.frames[0]!.payload.length).toBe(0)
    expect(failure.message).toContain("#0 Ping")
    expect(failure.message).toMatch(/bytes: 89 80 [0-9a-f]{2} /)
    expect(failure.message).toContain(`seed: ${report.seed}`)
    const replay = await Testing.fuzz({ url, numRuns: 1, seed: report.seed, path: failure.path })
    expect(replay.failure?.message).toContain("did not answer our last Ping")
    await expect(Testing.assertFuzz({ url, numRuns: 1, seed: report.seed, path: failure.path })).rejects.toThrow(/did not answer our last Ping/)
  })

  it("finds text echoed without its UTF-8 checked (the server's own frame is not UTF-8, or no 1007)", async () => {
    const report = await Testing.fuzz({ url: await start({ noUtf8Check: true }), numRuns: 300, seed: 2 })
    const failure = report.failure!
    expect(failure).toBeDefined()
    expect(failure.message).toMatch(/sent a text message that is not UTF-8|with a Close 1007|not 1007/)
    // Shrunk to the bad text (one or two fragments) and our Close.
    expect(failure.session.frames.length).toBeLessThanOrEqual(3)
    expect(failure.session.frames.some((f) => f.note === "text with invalid UTF-8")).toBe(true)
  })

  it("finds violations answered with the wrong code", async () => {
    const report = await Testing.fuzz({ url: await start({ wrongCode: true }), numRuns: 300, seed: 3 })
    const failure = report.failure!
    expect(failure).toBeDefined()
    expect(failure.message).toMatch(/answered the violation \(.*\) with Close 1000, not 100[279]/)
    expect(failure.session.frames.length).toBeLessThanOrEqual(2)
  })
})

describe("the fuzzer's judge of the RFC (internal/fuzzSession.ts)", () => {
  const key = Uint8Array.of(1, 2, 3, 4)
  const frame = (fin: boolean, opcode: number, payload: ReadonlyArray<number>, extra: Partial<FuzzSession.WireFrame> = {}): FuzzSession.WireFrame => ({
    fin,
    rsv: 0,
    opcode,
    payload: Uint8Array.from(payload),
    mask: key,
    note: "",
    ...extra
  })
  const close = frame(true, 8, [0x03, 0xe8])
  const judge = (...frames: Array<FuzzSession.WireFrame>) => FuzzSession.expect({ frames: [...frames, close], cuts: [], end: "close" })

  it("a character split across fragments is valid text; a byte no continuation can fix fails fast or at the end (1007 either way)", () => {
    expect(judge(frame(false, 1, [0xe2, 0x82]), frame(true, 0, [0xac]))).toMatchObject({ violationCodes: new Set(), cleanAllowed: true })
    expect(judge(frame(false, 1, [0xe2, 0x28]), frame(true, 0, [0x41]))).toMatchObject({ violationCodes: new Set([1007]), cleanAllowed: false })
    // Invalid so far, and the message never ends before our Close: fail-fast servers say 1007, others close cleanly.
    expect(judge(frame(false, 1, [0xff]))).toMatchObject({ violationCodes: new Set([1007]), cleanAllowed: true })
  })

  it("gives each hostile frame its code, and stops at the first violation or our Close", () => {
    expect(judge(frame(true, 2, [], { rsv: 2 })).violationCodes).toEqual(new Set([1002]))
    expect(judge(frame(true, 3, [])).violationCodes).toEqual(new Set([1002]))
    expect(judge(frame(true, 2, [], { mask: undefined })).violationCodes).toEqual(new Set([1002]))
    expect(judge(frame(true, 2, [], { length: "huge" })).violationCodes).toEqual(new Set([1009]))
    expect(judge(frame(true, 2, [], { length: "msb" })).violationCodes).toEqual(new Set([1002, 1009]))
    expect(judge(frame(true, 8, [0x03, 0xed])).violationCodes).toEqual(new Set([1002]))
    expect(judge(frame(true, 8, [0x03, 0xe8, 0xff])).violationCodes).toEqual(new Set([1007]))
    expect(judge(frame(true, 9, [1]), close, frame(true, 3, [])).pings.map((p) => [...p])).toEqual([[1]])
    expect(judge(frame(true, 9, [1]), close, frame(true, 3, [])).violationCodes).toEqual(new Set())
  })
})
