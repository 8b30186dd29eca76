/**
 * `npm run bench:h2`: scenarios B and C (bench/README.md) for 100 WebSockets
 * multiplexed as RFC 8441 streams on one HTTP/2 connection, beside 100
 * connections over TLS (HTTP/1.1 upgrades on the same server, `allowHTTP1`)
 * and 100 plain TCP connections (websock's own `Server.make`). The C load
 * generator speaks HTTP/1.1 only, so every row here is driven by the same
 * small Node client (this file, run with `--client`): one process, the
 * frames pre-encoded and masked once, each WebSocket keeping `depth`
 * messages in flight, echoes counted by their byte size. Like for like: the
 * rows differ only in the transport.
 *
 * The server (bench/peers/h2-echo.ts) is pinned to one core, the client to
 * the other, both fresh for every measurement.
 *
 * Environment (all optional):
 *   BENCH_RUNS=3            runs per (scenario, transport); the table shows medians
 *   BENCH_SECONDS=5         measured seconds
 *   BENCH_WARMUP=2          warm-up seconds
 *   BENCH_SCENARIOS=B,C     subset
 *   BENCH_TRANSPORTS=h2,tls,tcp  subset
 *   BENCH_SERVER_CORE=0, BENCH_LOADGEN_CORE=1
 *
 * It is a benchmark, not a test: nothing here is timed in CI.
 */
import * as ChildProcess from "node:child_process"
import { randomBytes } from "node:crypto"
import * as NodeHttp2 from "node:http2"
import * as Net from "node:net"
import * as Path from "node:path"
import type { Duplex } from "node:stream"
import * as Tls from "node:tls"

const root = Path.resolve(import.meta.dirname, "..")

type Transport = "h2" | "tls" | "tcp"

interface Scenario {
  readonly id: "B" | "C"
  readonly conns: number
  readonly size: number
  readonly text: boolean
  readonly depth: number
}

const SCENARIOS: ReadonlyArray<Scenario> = [
  { id: "B", conns: 100, size: 16, text: false, depth: 16 },
  { id: "C", conns: 100, size: 1024, text: true, depth: 8 }
]

const TRANSPORT_NAMES: Record<Transport, string> = {
  h2: "100 streams on 1 HTTP/2 connection (TLS)",
  tls: "100 TLS connections, HTTP/1.1 upgrade",
  tcp: "100 TCP connections, HTTP/1.1 upgrade"
}

// ------------------------------------------------------------------ the client

/** A masked client frame (RFC 6455 §5.2), with a fixed mask: the server unmasks it all the same. */
const clientFrame = (size: number, text: boolean): Buffer => {
  const header = size < 126 ? 2 : 4
  const frame = Buffer.alloc(header + 4 + size)
  frame[0] = 0x80 | (text ? 0x1 : 0x2)
  if (size < 126) frame[1] = 0x80 | size
  else {
    frame[1] = 0x80 | 126
    frame.writeUInt16BE(size, 2)
  }
  const mask = randomBytes(4)
  mask.copy(frame, header)
  for (let i = 0; i < size; i++) frame[header + 4 + i] = (0x61 + (i % 26)) ^ mask[i % 4]!
  return frame
}

/** The size of the server's (unmasked) echo of one message. */
const echoSize = (size: number): number => (size < 126 ? 2 : 4) + size

const upgradeRequest = (host: string): string =>
  `GET /ws HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`

/** Opens one WebSocket's byte stream: after the 101 (or `:status 200`), every byte is the server's frames. */
const open = (transport: Transport, port: number, tcpPort: number, session: NodeHttp2.ClientHttp2Session | undefined): Promise<Duplex> =>
  new Promise((resolve, reject) => {
    if (transport === "h2") {
      const stream = session!.request({
        ":method": "CONNECT",
        ":protocol": "websocket",
        ":scheme": "https",
        ":path": "/ws",
        ":authority": `localhost:${port}`,
        "sec-websocket-version": "13"
      })
      stream.once("response", (headers) => headers[":status"] === 200 ? resolve(stream) : reject(new Error(`status ${headers[":status"]}`)))
      stream.once("error", reject)
      return
    }
    const socket: Net.Socket = transport === "tls"
      ? Tls.connect({ host: "127.0.0.1", port, servername: "localhost", rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] })
      : Net.connect({ host: "127.0.0.1", port: tcpPort })
    socket.setNoDelay(true)
    socket.once("error", reject)
    socket.once(transport === "tls" ? "secureConnect" : "connect", () => socket.write(upgradeRequest("localhost")))
    let head = Buffer.alloc(0)
    const onHead = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk])
      const end = head.indexOf("\r\n\r\n")
      if (end < 0) return
      if (!head.subarray(0, 12).toString().includes("101")) return reject(new Error(head.toString("latin1")))
      socket.off("data", onHead)
      if (head.length > end + 4) socket.unshift(head.subarray(end + 4))
      resolve(socket)
    }
    socket.on("data", onHead)
  })

/** Runs the load: prints `{ messages, seconds }` measured after the warm-up, as JSON. */
const client = async (): Promise<void> => {
  const [transport, scenarioId, portArg, tcpPortArg, warmupArg, secondsArg] = process.argv.slice(3)
  const scenario = SCENARIOS.find((s) => s.id === scenarioId)!
  const port = Number(portArg)
  const tcpPort = Number(tcpPortArg)
  const session = transport === "h2"
    ? await new Promise<NodeHttp2.ClientHttp2Session>((resolve, reject) => {
      const s = NodeHttp2.connect(`https://localhost:${port}`, { host: "127.0.0.1", rejectUnauthorized: false })
      s.once("error", reject)
      s.once("remoteSettings", () => resolve(s))
    })
    : undefined
  // Generous windows on our side: the server's per-stream sends are not held back by our reads.
  session?.setLocalWindowSize(16 * 1024 * 1024)
  const frame = clientFrame(scenario.size, scenario.text)
  const batches = Array.from({ length: scenario.depth + 1 }, (_, n) => Buffer.concat(Array.from({ length: n }, () => frame)))
  const unit = echoSize(scenario.size)
  let counting = false
  let messages = 0 // echoes received while counting
  const streams = await Promise.all(Array.from({ length: scenario.conns }, () => open(transport as Transport, port, tcpPort, session)))
  for (const stream of streams) {
    let pending = 0 // bytes of an echo not yet complete
    stream.on("data", (chunk: Buffer) => {
      pending += chunk.length
      const done = Math.floor(pending / unit)
      if (done === 0) return
      pending -= done * unit
      if (counting) messages += done
      // Keep `depth` in flight: one new message per echo, in one write.
      for (let left = done; left > 0; left -= scenario.depth) stream.write(batches[Math.min(left, scenario.depth)]!)
    })
    stream.write(batches[scenario.depth]!)
  }
  await new Promise((resolve) => setTimeout(resolve, Number(warmupArg) * 1000))
  counting = true
  const started = performance.now()
  await new Promise((resolve) => setTimeout(resolve, Number(secondsArg) * 1000))
  counting = false
  const seconds = (performance.now() - started) / 1000
  console.log(JSON.stringify({ messages, seconds }))
  process.exit(0)
}

// ------------------------------------------------------------------ the driver

const envNumber = (name: string, fallback: number): number => {
  const raw = process.env[name]
  return raw === undefined || raw === "" ? fallback : Number(raw)
}
const envList = <A extends string>(name: string, all: ReadonlyArray<A>): ReadonlyArray<A> => {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === "") return all
  return raw.split(",").map((s) => s.trim()).filter((s): s is A => (all as ReadonlyArray<string>).includes(s))
}

const pinned = (core: number, args: ReadonlyArray<string>, env: NodeJS.ProcessEnv) =>
  ChildProcess.spawn("taskset", ["-c", String(core), process.execPath, ...args], { cwd: root, env, stdio: ["ignore", "pipe", "inherit"] })

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })

const firstLine = (child: ChildProcess.ChildProcess): Promise<string> =>
  new Promise((resolve, reject) => {
    let out = ""
    child.stdout!.setEncoding("utf8")
    child.stdout!.on("data", (chunk: string) => {
      out += chunk
      const nl = out.indexOf("\n")
      if (nl >= 0) resolve(out.slice(0, nl))
    })
    child.once("exit", (code) => reject(new Error(`exited with ${code} before printing: ${out}`)))
  })

const stop = (child: ChildProcess.ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000)
    child.once("exit", () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill("SIGTERM")
  })

const median = (xs: ReadonlyArray<number>): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const driver = async (): Promise<void> => {
  const runs = Math.max(1, Math.floor(envNumber("BENCH_RUNS", 3)))
  const seconds = envNumber("BENCH_SECONDS", 5)
  const warmup = envNumber("BENCH_WARMUP", 2)
  const serverCore = envNumber("BENCH_SERVER_CORE", 0)
  const clientCore = envNumber("BENCH_LOADGEN_CORE", 1)
  const scenarios = SCENARIOS.filter((s) => envList("BENCH_SCENARIOS", ["B", "C"]).includes(s.id))
  const transports = envList<Transport>("BENCH_TRANSPORTS", ["h2", "tls", "tcp"])
  const results = new Map<string, Array<number>>()
  for (let run = 0; run < runs; run++) {
    for (const scenario of scenarios) {
      for (const transport of transports) {
        const port = await freePort()
        const tcpPort = await freePort()
        const server = pinned(serverCore, ["bench/peers/h2-echo.ts"], { ...process.env, PORT: String(port), TCP_PORT: String(tcpPort) })
        try {
          await firstLine(server)
          const load = pinned(clientCore, [import.meta.filename, "--client", transport, scenario.id, String(port), String(tcpPort), String(warmup), String(seconds)], process.env)
          const { messages, seconds: measured } = JSON.parse(await firstLine(load)) as { messages: number; seconds: number }
          await stop(load)
          const rate = messages / measured
          const key = `${scenario.id}:${transport}`
          results.set(key, [...(results.get(key) ?? []), rate])
          process.stderr.write(`run ${run + 1} ${scenario.id} ${transport}: ${Math.round(rate).toLocaleString("en-US")} msg/s\n`)
        } finally {
          await stop(server)
        }
      }
    }
  }
  const lines = [
    `## websock over HTTP/2 (RFC 8441): B and C, one Node client, medians of ${runs} run(s) of ${seconds} s`,
    "",
    `| scenario | ${transports.map((t) => TRANSPORT_NAMES[t]).join(" | ")} |`,
    `|---|${transports.map(() => "---:").join("|")}|`
  ]
  for (const scenario of scenarios) {
    const base = results.get(`${scenario.id}:tcp`)
    const cells = transports.map((t) => {
      const rate = median(results.get(`${scenario.id}:${t}`) ?? [0])
      const ratio = base !== undefined && t !== "tcp" ? ` (${(rate / median(base)).toFixed(2)}x)` : ""
      return `${Math.round(rate).toLocaleString("en-US")}${ratio}`
    })
    const name = scenario.id === "B" ? "B: 100 WebSockets, 16 B binary, 16 in flight each (msg/s)" : "C: 100 WebSockets, 1 KiB text, 8 in flight (msg/s)"
    lines.push(`| ${name} | ${cells.join(" | ")} |`)
  }
  console.log(lines.join("\n"))
}

if (process.argv[2] === "--client") await client()
else await driver()
