/**
 * `node bench/client.ts`: websock's client against ws's client, both driving
 * the same `ws` echo server (bench/peers/ws-echo.ts, a child process):
 * `MESSAGES` messages of `SIZE` bytes (binary), `WINDOW` in flight at a
 * time, round trips counted per second; `RUNS` runs each, alternated, the
 * median printed. Every frame of websock's client is masked with a fresh key
 * from its pooled batch; ws's masks with its own pooled random bytes
 * (`bufferutil` when installed, as here, unless WS_NO_BUFFER_UTIL=1).
 *
 *     node bench/client.ts                      # 1 KiB messages
 *     SIZE=64 MESSAGES=200000 node bench/client.ts
 *
 * A benchmark, not a test: nothing here is timed in CI.
 */
import * as Effect from "effect/Effect"
import * as ChildProcess from "node:child_process"
import * as Path from "node:path"
import WebSocket from "ws"
import * as Client from "../src/Client.ts"

const size = Number(process.env.SIZE ?? 1024)
const messages = Number(process.env.MESSAGES ?? 100_000)
const window = Number(process.env.WINDOW ?? 64)
const runs = Number(process.env.RUNS ?? 5)
const port = Number(process.env.PORT ?? 9123)
const url = `ws://127.0.0.1:${port}/ws`
const payload = new Uint8Array(size).fill(0x61)

const server = ChildProcess.spawn(process.execPath, [Path.join(import.meta.dirname, "peers", "ws-echo.ts")], {
  env: { ...process.env, PORT: String(port) },
  stdio: ["ignore", "pipe", "inherit"]
})
await new Promise<void>((resolve) => server.stdout!.once("data", () => resolve()))

/** websock's client: `window` sends ahead, one more per echo received. */
const websock = (): Promise<number> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const ws = yield* Client.connect(url, { compression: false })
    const start = performance.now()
    yield* ws.sendAll(Array.from({ length: window }, () => payload))
    let received = 0 // echoes so far
    let sent = window // messages sent so far
    while (received < messages) {
      yield* ws.receive
      received++
      if (sent < messages) {
        yield* ws.send(payload)
        sent++
      }
    }
    return messages / ((performance.now() - start) / 1000)
  })))

/** ws's client, the same way. */
const ws = (): Promise<number> =>
  new Promise((resolve) => {
    const socket = new WebSocket(url, { perMessageDeflate: false })
    let received = 0 // echoes so far
    let sent = 0 // messages sent so far
    let start = 0
    socket.on("open", () => {
      start = performance.now()
      for (; sent < window; sent++) socket.send(payload)
    })
    socket.on("message", () => {
      received++
      if (sent < messages) {
        socket.send(payload)
        sent++
      }
      if (received === messages) {
        const rate = messages / ((performance.now() - start) / 1000)
        socket.close()
        resolve(rate)
      }
    })
  })

const median = (xs: Array<number>) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const results: Record<string, Array<number>> = { websock: [], ws: [] }
for (let i = 0; i < runs; i++) {
  results.websock!.push(await websock())
  results.ws!.push(await ws())
}
console.log(`${messages} messages of ${size} bytes, ${window} in flight, median of ${runs} runs (round trips per second):`)
for (const [name, rates] of Object.entries(results)) {
  console.log(`  ${name.padEnd(8)} ${Math.round(median(rates)).toLocaleString("en")}  (runs: ${rates.map((r) => Math.round(r)).join(", ")})`)
}
server.kill("SIGTERM")
