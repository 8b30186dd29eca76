/**
 * `npm run bench:cost`: what the echo server's metrics cost, in instructions
 * per message, counted by valgrind's callgrind rather than timed, so that the
 * figure does not depend on whatever else the machine runs.
 *
 * For each scenario (B, C of bench/run.ts), each variant (metrics on, and
 * `METRICS=0`) and each repeat: a fresh `examples/EchoServer.ts` under
 * `valgrind --tool=callgrind`; this process opens the scenario's connections
 * (plain sockets, its own minimal client, outside valgrind) and runs phases
 * of a fixed number of echoes per connection, the scenario's depth in flight:
 *
 *   1. warm-up: `COST_WARMUP` echoes per connection, more until every
 *      connection has answered the server's first keepalive Ping (30 s after
 *      it opened; its code paths compiled), then `COST_WARMUP` again (the
 *      JIT's tiers, socket buffers); then `callgrind_control -z` zeroes the
 *      counters;
 *   2. a base part of `COST_BASE` echoes per connection, dumped
 *      (`callgrind_control -d`);
 *   3. `COST_PARTS` parts of `COST_MESSAGES` echoes per connection, each dumped.
 *
 * Instructions per message, from each part = (part - base) /
 * ((COST_MESSAGES - COST_BASE) x conns): what every part shares (waking up,
 * the control commands, timers while idle) cancels out. The figure is the
 * median of the parts, so that a one-off (a major GC, a deoptimization) in
 * one part does not move it. Every thread of the process is counted (V8's
 * GC helpers included); the optimizing compilers' background jobs (Turbofan,
 * Maglev: warm-up, landing in a part whenever V8 re-optimizes) are left out
 * of the main figure. The callgrind files stay in bench/out/callgrind/ for
 * `callgrind_annotate`.
 *
 * Environment (all optional):
 *   COST_SCENARIOS=B,C   subset of B, C, D (D, 64 KiB messages, only when named:
 *                        the unmasking and copying of large payloads)
 *   COST_VARIANTS=on,off subset of on (metrics on), off (METRICS=0)
 *   COST_REPEATS=2       fresh servers per (scenario, variant)
 *   COST_MESSAGES=400    echoes per connection in each part
 *   COST_PARTS=5         parts (the figure is their median)
 *   COST_BASE=20         echoes per connection in the base part
 *   COST_WARMUP=1000     echoes per connection in each warm-up round
 *   COST_SERVER=examples/EchoServer.ts  the echo server measured (PORT from the
 *                        environment), e.g. bench/peers/raw-echo.ts for the floor
 *   COST_NODE_FLAGS=     flags for the server's node, e.g. --perf-basic-prof (names for JIT code)
 *
 * It is a benchmark, not a test: nothing here runs in CI.
 */
import * as ChildProcess from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"

const benchDir = import.meta.dirname
const root = Path.resolve(benchDir, "..")
const outDir = Path.join(benchDir, "out")
const cgDir = Path.join(outDir, "callgrind")

const envCount = (name: string, fallback: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw === "") return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got ${raw}`)
  return value
}

const envList = (name: string, all: ReadonlyArray<string>): ReadonlyArray<string> => {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === "") return all
  const picked = raw.split(",").map((s) => s.trim()).filter((s) => s !== "")
  for (const p of picked) if (!all.includes(p)) throw new Error(`${name}: unknown ${p} (one of ${all.join(", ")})`)
  return picked
}

interface Scenario {
  readonly id: string
  readonly title: string
  readonly conns: number
  readonly size: number
  readonly text: boolean
  readonly depth: number
}

const scenarios: ReadonlyArray<Scenario> = [
  { id: "B", title: "100 conns, 16 B binary, 16 in flight each", conns: 100, size: 16, text: false, depth: 16 },
  { id: "C", title: "100 conns, 1 KiB text, 8 in flight each", conns: 100, size: 1024, text: true, depth: 8 },
  { id: "D", title: "10 conns, 64 KiB binary, 4 in flight each", conns: 10, size: 65536, text: false, depth: 4 }
]

const config = {
  scenarios: envList("COST_SCENARIOS", scenarios.map((s) => s.id)).filter((id) => process.env.COST_SCENARIOS || id !== "D"),
  variants: envList("COST_VARIANTS", ["on", "off"]),
  repeats: envCount("COST_REPEATS", 2),
  messages: envCount("COST_MESSAGES", 400),
  parts: envCount("COST_PARTS", 5),
  base: envCount("COST_BASE", 20),
  warmup: envCount("COST_WARMUP", 1000),
  /** The server measured, relative to the project: another echo (e.g. bench/peers/raw-echo.ts) for comparison */
  server: process.env.COST_SERVER ?? "examples/EchoServer.ts",
  /** e.g. `--perf-basic-prof`: /tmp/perf-PID.map then names the JIT code callgrind shows as addresses */
  nodeFlags: (process.env.COST_NODE_FLAGS ?? "").split(" ").filter((s) => s !== "")
}

if (config.base >= config.messages) throw new Error(`COST_BASE (${config.base}) must be below COST_MESSAGES (${config.messages})`)

// ------------------------------------------------------------------ processes

const live = new Set<ChildProcess.ChildProcess>()
process.on("exit", () => {
  for (const child of live) child.kill("SIGKILL")
})
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => process.exit(130))
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

const exited = (child: ChildProcess.ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
  })

/** `callgrind_control OPTION PID`; throws when it does not answer OK. */
const control = (option: "-z" | "-d", pid: number): void => {
  const result = ChildProcess.spawnSync("callgrind_control", [option, String(pid)], { encoding: "utf8", timeout: 60_000 })
  if (result.status !== 0 || !result.stdout.includes("OK")) {
    throw new Error(`callgrind_control ${option} ${pid} failed: ${result.stdout}${result.stderr}`)
  }
}

/** The `totals:` line of a callgrind part file (instructions executed, all threads). */
const totals = (file: string): number => {
  const match = /^totals:\s+(\d+)/m.exec(Fs.readFileSync(file, "utf8"))
  if (match === null) throw new Error(`no totals in ${file}`)
  return Number(match[1])
}

/** The optimizing compilers' background jobs (Turbofan, Maglev): warm-up work that lands in a part when V8 (re)optimizes. */
const COMPILE_JOBS = [
  "v8::internal::OptimizingCompileTaskExecutor::CompileTask::Run(",
  "v8::internal::maglev::MaglevConcurrentDispatcher::JobTask::Run("
]

/** Instructions spent inside `COMPILE_JOBS` in a part file (inclusive costs, from `callgrind_annotate`). */
const compileJobs = (file: string): number => {
  const result = ChildProcess.spawnSync("callgrind_annotate", ["--inclusive=yes", "--threshold=100", file], {
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024
  })
  if (result.status !== 0) throw new Error(`callgrind_annotate ${file} failed: ${result.stderr}`)
  let sum = 0
  for (const line of result.stdout.split("\n")) {
    const match = /^\s*([\d,]+)\s.*?:(.*)$/.exec(line)
    if (match !== null && COMPILE_JOBS.some((job) => match[2]!.startsWith(job))) sum += Number(match[1]!.replaceAll(",", ""))
  }
  return sum
}

/** Waits until `file` exists and holds its totals (callgrind writes it after answering). */
const awaitPart = async (file: string): Promise<number> => {
  for (let i = 0; i < 600; i++) {
    if (Fs.existsSync(file)) {
      try {
        return totals(file)
      } catch {
        // still being written
      }
    }
    await sleep(100)
  }
  throw new Error(`${file} did not appear`)
}

// ------------------------------------------------------------------ the client

/** One client connection: sends masked frames, counts the echoes, keeps `depth` in flight. */
class Client {
  /** Echoes still to come in this phase. */
  private remaining = 0
  /** Messages still to send in this phase. */
  private unsent = 0
  /** Bytes of an echo frame not yet received. */
  private pending: Buffer = Buffer.alloc(0)
  private done: (() => void) | undefined
  private failed: ((error: Error) => void) | undefined
  /** Keepalive Pings received (and answered). */
  pings = 0

  private readonly socket: Net.Socket
  /** `depth` frames back to back, sent as a prefix of whole frames. */
  private readonly frames: Buffer
  private readonly frameLength: number
  private readonly depth: number

  constructor(socket: Net.Socket, frames: Buffer, frameLength: number, depth: number) {
    this.socket = socket
    this.frames = frames
    this.frameLength = frameLength
    this.depth = depth
    socket.on("data", (chunk: Buffer) => this.onData(chunk))
    socket.on("close", () => this.failed?.(new Error("the server closed a connection")))
    socket.on("error", (error) => this.failed?.(error))
  }

  /** Sends `count` messages, `depth` at a time; resolves when every echo is back. */
  phase(count: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.remaining = count
      this.done = resolve
      this.failed = reject
      const now = Math.min(this.depth, count)
      this.unsent = count - now
      this.socket.write(this.frames.subarray(0, now * this.frameLength))
    })
  }

  private onData(chunk: Buffer): void {
    let buffer = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    let echoes = 0 // complete frames in this read
    let at = 0 // where the next frame starts
    while (buffer.length - at >= 2) {
      if ((buffer[at + 1]! & 0x80) !== 0) return this.failed?.(new Error("a masked server frame (RFC 6455 §5.1)"))
      const short = buffer[at + 1]! & 0x7f
      const header = short === 126 ? 4 : short === 127 ? 10 : 2
      if (buffer.length - at < header) break
      const length = short === 126 ? buffer.readUInt16BE(at + 2) : short === 127 ? Number(buffer.readBigUInt64BE(at + 2)) : short
      if (buffer.length - at < header + length) break
      const opcode = buffer[at]! & 0x0f
      if (opcode === 0x9) {
        // The server's keepalive Ping: answered with a masked Pong (RFC 6455 §5.5.3), not an echo.
        this.pings++
        const pong = Buffer.alloc(6 + length)
        pong[0] = 0x8a
        pong[1] = 0x80 | length
        for (let j = 0; j < length; j++) pong[6 + j] = buffer[at + header + j]!
        this.socket.write(pong)
      } else if (opcode >= 0x8) {
        return this.failed?.(new Error(`a control frame from the server (opcode ${opcode})`))
      } else echoes++
      at += header + length
    }
    this.pending = at === buffer.length ? Buffer.alloc(0) : Buffer.from(buffer.subarray(at))
    buffer = this.pending
    this.remaining -= echoes
    if (this.remaining < 0) return this.failed?.(new Error("an echo that was never sent"))
    // One write for everything owed, as the load generator does.
    const owed = Math.min(echoes, this.unsent)
    if (owed > 0) {
      this.unsent -= owed
      this.socket.write(this.frames.subarray(0, owed * this.frameLength))
    }
    if (this.remaining === 0) this.done?.()
  }
}

/** `depth` client frames of the scenario back to back (RFC 6455 §5.2, masked §5.3). */
const clientFrames = (scenario: Scenario): { readonly frames: Buffer; readonly frameLength: number } => {
  const payload = scenario.text ? Buffer.from("x".repeat(scenario.size)) : Crypto.randomBytes(scenario.size)
  const header = scenario.size < 126 ? 2 : scenario.size < 65536 ? 4 : 10
  const frameLength = header + 4 + scenario.size
  const frames = Buffer.alloc(frameLength * scenario.depth)
  for (let i = 0; i < scenario.depth; i++) {
    const at = i * frameLength
    frames[at] = 0x80 | (scenario.text ? 0x1 : 0x2)
    if (header === 2) frames[at + 1] = 0x80 | scenario.size
    else if (header === 4) {
      frames[at + 1] = 0x80 | 126
      frames.writeUInt16BE(scenario.size, at + 2)
    } else {
      frames[at + 1] = 0x80 | 127
      frames.writeBigUInt64BE(BigInt(scenario.size), at + 2)
    }
    const key = Crypto.randomBytes(4)
    key.copy(frames, at + header)
    for (let j = 0; j < scenario.size; j++) frames[at + header + 4 + j] = payload[j]! ^ key[j & 3]!
  }
  return { frames, frameLength }
}

/** Opens a connection and completes the opening handshake (RFC 6455 §4.1). */
const connect = (port: number, scenario: Scenario, frames: Buffer, frameLength: number): Promise<Client> =>
  new Promise((resolve, reject) => {
    const key = Crypto.randomBytes(16).toString("base64")
    const accept = Crypto.createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64")
    const socket = Net.connect({ host: "127.0.0.1", port, noDelay: true })
    let head = ""
    const onData = (chunk: Buffer) => {
      head += chunk.toString("latin1")
      const end = head.indexOf("\r\n\r\n")
      if (end < 0) return
      socket.off("data", onData)
      socket.off("error", reject)
      if (!head.startsWith("HTTP/1.1 101") || !head.toLowerCase().includes(`sec-websocket-accept: ${accept.toLowerCase()}`)) {
        socket.destroy()
        return reject(new Error(`handshake refused: ${head.slice(0, end)}`))
      }
      if (end + 4 < head.length) return reject(new Error("bytes after the 101 before any message"))
      resolve(new Client(socket, frames, frameLength, scenario.depth))
    }
    socket.on("data", onData)
    socket.once("error", reject)
    socket.once("connect", () =>
      socket.write(
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`
      )
    )
  })

// ------------------------------------------------------------------ one measurement

interface Measurement {
  readonly scenario: string
  readonly variant: string
  readonly repeat: number
  /** Instructions of the base part and of each equal part (all threads). */
  readonly base: number
  readonly parts: ReadonlyArray<number>
  /** Of the base and of each part, inside the optimizing compilers' background jobs. */
  readonly baseCompile: number
  readonly partsCompile: ReadonlyArray<number>
  /** Per message, from each part, without the compilers' jobs and with them. */
  readonly perPart: ReadonlyArray<number>
  readonly perPartAll: ReadonlyArray<number>
  /** Their medians. */
  readonly perMessage: number
  readonly perMessageAll: number
  readonly seconds: number
}

const median = (xs: ReadonlyArray<number>): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const measure = async (scenario: Scenario, variant: string, repeat: number): Promise<Measurement> => {
  const port = await freePort()
  const tag = `${scenario.id}-${variant}-${repeat}`
  const out = Path.join(cgDir, `callgrind.${tag}.out`)
  for (const f of Fs.readdirSync(cgDir)) if (f.startsWith(`callgrind.${tag}.out`)) Fs.rmSync(Path.join(cgDir, f))
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), METRICS: variant === "off" ? "0" : "1" }
  const child = ChildProcess.spawn(
    "valgrind",
    ["--tool=callgrind", `--callgrind-out-file=${out}`, process.execPath, ...config.nodeFlags, Path.join(root, config.server)],
    { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] }
  )
  live.add(child)
  let log = ""
  child.stdout?.on("data", (c: Buffer) => (log = (log + c.toString("utf8")).slice(-4096)))
  child.stderr?.on("data", (c: Buffer) => (log = (log + c.toString("utf8")).slice(-4096)))
  try {
    // The server logs where it listens once it does.
    for (let i = 0; !log.includes("listening on"); i++) {
      if (child.exitCode !== null || i > 6000) throw new Error(`the server did not start:\n${log}`)
      await sleep(100)
    }
    const pid = child.pid!
    const { frameLength, frames } = clientFrames(scenario)
    const clients: Array<Client> = []
    for (let i = 0; i < scenario.conns; i++) clients.push(await connect(port, scenario, frames, frameLength))
    const phase = (count: number) => Promise.all(clients.map((c) => c.phase(count)))
    // Warm up until every connection has answered the server's first keepalive
    // Ping (30 s after it opened), so that the code paths it takes are
    // compiled before counting starts, then once more.
    await phase(config.warmup)
    // (A peer of bench/peers/ sends no keepalive Ping.)
    const pings = config.server === "examples/EchoServer.ts"
    while (pings && clients.some((c) => c.pings === 0)) await phase(Math.ceil(config.warmup / 4))
    await phase(config.warmup)
    control("-z", pid)
    const started = Date.now()
    let dumps = 0 // parts dumped so far
    const part = async (count: number): Promise<string> => {
      await phase(count)
      control("-d", pid)
      const file = `${out}.${++dumps}`
      await awaitPart(file)
      return file
    }
    const baseFile = await part(config.base)
    const partFiles: Array<string> = []
    for (let k = 0; k < config.parts; k++) partFiles.push(await part(config.messages))
    const seconds = (Date.now() - started) / 1000
    const base = totals(baseFile)
    const baseCompile = compileJobs(baseFile)
    const parts = partFiles.map(totals)
    const partsCompile = partFiles.map(compileJobs)
    // What a part shares with the base (waking up, the control commands, timers) cancels out.
    const messages = (config.messages - config.base) * scenario.conns
    const perPartAll = parts.map((p) => (p - base) / messages)
    const perPart = parts.map((p, k) => (p - partsCompile[k]! - (base - baseCompile)) / messages)
    return {
      scenario: scenario.id,
      variant,
      repeat,
      base,
      parts,
      baseCompile,
      partsCompile,
      perPart,
      perPartAll,
      perMessage: median(perPart),
      perMessageAll: median(perPartAll),
      seconds
    }
  } finally {
    child.kill("SIGTERM")
    const killer = setTimeout(() => child.kill("SIGKILL"), 30_000)
    await exited(child)
    clearTimeout(killer)
    live.delete(child)
  }
}

// ------------------------------------------------------------------ main

const format = (n: number) => Math.round(n).toLocaleString("en-US")

const main = async (): Promise<void> => {
  const probe = ChildProcess.spawnSync("valgrind", ["--version"], { encoding: "utf8" })
  if (probe.status !== 0) throw new Error("valgrind is needed (apt-get install valgrind)")
  Fs.mkdirSync(cgDir, { recursive: true })
  const results: Array<Measurement> = []
  const picked = scenarios.filter((s) => config.scenarios.includes(s.id))
  for (let repeat = 1; repeat <= config.repeats; repeat++) {
    for (const scenario of picked) {
      for (const variant of config.variants) {
        const m = await measure(scenario, variant, repeat)
        results.push(m)
        process.stderr.write(
          `${scenario.id} metrics ${variant} #${repeat}: ${m.perMessage.toFixed(0)} instructions/message ` +
            `(parts: ${m.perPart.map((x) => x.toFixed(0)).join(", ")}; with the compilers' jobs ${m.perMessageAll.toFixed(0)}; ` +
            `${m.seconds.toFixed(0)} s)\n`
        )
      }
    }
  }
  const mean = (xs: ReadonlyArray<number>) => xs.reduce((a, b) => a + b, 0) / xs.length
  const cell = (xs: ReadonlyArray<number>) => (xs.length === 0 ? "-" : xs.map(format).join(" · "))
  const diff = (on: ReadonlyArray<number>, off: ReadonlyArray<number>) =>
    on.length > 0 && off.length > 0 ? `${(mean(on) / mean(off) - 1) * 100 >= 0 ? "+" : ""}${((mean(on) / mean(off) - 1) * 100).toFixed(1)}%` : "-"
  const lines = [
    `Instructions per echoed message (callgrind, all threads; each figure one fresh server, the median of ${config.parts} parts of ` +
      `${config.messages} echoes per connection less a base part of ${config.base}; the optimizing compilers' background jobs ` +
      `left out, in parentheses with them):`,
    "",
    "| scenario | metrics on | metrics off | on vs off |",
    "|---|---:|---:|---:|"
  ]
  for (const scenario of picked) {
    const of = (variant: string, key: "perMessage" | "perMessageAll") =>
      results.filter((r) => r.scenario === scenario.id && r.variant === variant).map((r) => r[key])
    const run = (variant: string) => of(variant, "perMessage")
    const all = (variant: string) => of(variant, "perMessageAll")
    lines.push(
      `| ${scenario.id}: ${scenario.title} | ${cell(run("on"))} (${cell(all("on"))}) | ${cell(run("off"))} (${cell(all("off"))}) | ` +
        `${diff(run("on"), run("off"))} (${diff(all("on"), all("off"))}) |`
    )
  }
  const table = lines.join("\n")
  process.stdout.write(`${table}\n`)
  const git = ChildProcess.spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" })
  const stamp = new Date().toISOString().replace(/[:.]/g, "-")
  const record = { date: new Date().toISOString(), commit: git.stdout.trim(), node: process.version, config, results, table }
  Fs.writeFileSync(Path.join(outDir, `cost-${stamp}.json`), JSON.stringify(record, null, 2))
}

main().catch((error: unknown) => {
  process.stderr.write(`bench:cost: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
  process.exit(1)
})
