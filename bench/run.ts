/**
 * `npm run bench`: builds the load generator (bench/loadgen.c), then starts
 * each echo server (A-F) or fan-out server (G-J: one publisher, 1,000 or
 * 10,000 subscribers) in turn on this Node binary (Bun's peers on the `bun`
 * devDependency), pinned to one core, drives it from the other core with the
 * load generator, and prints medians and ratios to ws (pure JS) as markdown.
 * Raw results go to bench/out/ as JSON.
 *
 * Order: for each run, for each scenario, every server one after another, so
 * that servers compared in one row were measured minutes apart, not an hour.
 * Every server process is fresh for every measurement.
 *
 * Environment (all optional):
 *   BENCH_RUNS=3          runs per (scenario, server); the table shows medians
 *   BENCH_SECONDS=5       measured seconds per load scenario
 *   BENCH_WARMUP=2        warm-up seconds before measuring
 *   BENCH_SCENARIOS=A,B   subset of A-J (G-J: fan-out, only for the servers with a fan-out peer)
 *   BENCH_SERVERS=ws,raw  subset of websock, websock-events, websock-no-metrics, raw, minimal, ws, ws-bufferutil, effect,
 *                         effect-http-websock, effect-http-ws, bun, websock-loop (fan-out only)
 *   BENCH_IDLE_CONNS=10000  connections for scenario F (2000 with BENCH_DEFLATE=1)
 *   BENCH_HOLD=2          seconds F holds its connections before reading RSS
 *   BENCH_DEFLATE=1       offer permessage-deflate and turn it on in the peers (raw is skipped);
 *                         F then echoes one 1 KiB text message per connection before idling
 *   BENCH_VERIFY=1        the load generator compares every echoed byte
 *   BENCH_SERVER_CORE=0, BENCH_LOADGEN_CORE=1
 *   BENCH_QUIET_PCT=25    before each load measurement, wait while other processes keep
 *   BENCH_QUIET_WAIT=15   more than this % of a core busy, at most this many seconds
 *
 * It is a benchmark, not a test: nothing here is timed in CI.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"

const benchDir = import.meta.dirname
const root = Path.resolve(benchDir, "..")
const source = Path.join(benchDir, "loadgen.c")
const binary = Path.join(benchDir, "bin", "loadgen")
const outDir = Path.join(benchDir, "out")

// ------------------------------------------------------------------ configuration

const envNumber = (name: string, fallback: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw === "") return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a non-negative number, got ${raw}`)
  return value
}

const envList = (name: string): ReadonlyArray<string> | undefined => {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === "") return undefined
  return raw.split(",").map((s) => s.trim()).filter((s) => s !== "")
}

const config = {
  runs: Math.max(1, Math.floor(envNumber("BENCH_RUNS", 3))),
  seconds: envNumber("BENCH_SECONDS", 5),
  warmup: envNumber("BENCH_WARMUP", 2),
  // with deflate each connection holds its zlib contexts (~250 KiB with ws): fewer by default
  idleConns: Math.floor(envNumber("BENCH_IDLE_CONNS", process.env.BENCH_DEFLATE === "1" ? 2_000 : 10_000)),
  hold: envNumber("BENCH_HOLD", 2),
  deflate: process.env.BENCH_DEFLATE === "1",
  verify: process.env.BENCH_VERIFY === "1",
  quietPct: envNumber("BENCH_QUIET_PCT", 25),
  quietWait: envNumber("BENCH_QUIET_WAIT", 15),
  serverCore: Math.floor(envNumber("BENCH_SERVER_CORE", 0)),
  loadgenCore: Math.floor(envNumber("BENCH_LOADGEN_CORE", 1))
}

/** File descriptors for servers and the load generator (scenario F holds 10,000 sockets). */
const FD_LIMIT = 65_536

// ------------------------------------------------------------------ scenarios and servers

type Metric = "msgs_per_s" | "mb_per_s" | "kib_per_conn" | "deliveries_per_s"

interface Scenario {
  readonly id: string
  readonly title: string
  readonly args: ReadonlyArray<string>
  readonly metric: Metric
  readonly idle: boolean
  /** one publisher, the other connections subscribers: runs each server's `fanout` peer */
  readonly fanout: boolean
}

const load = (id: string, title: string, metric: Metric, args: ReadonlyArray<string>): Scenario => ({
  id,
  title,
  args,
  metric,
  idle: false,
  fanout: false
})

/** Publishes in flight in the fan-out scenarios (the publisher's --depth). */
const FANOUT_DEPTH = 16

const fanout = (id: string, subscribers: number, size: number): Scenario => ({
  id,
  title: `fan-out to ${subscribers.toLocaleString("en-US")} subscribers, ${size === 1024 ? "1 KiB" : `${size} B`} binary, ` +
    `${FANOUT_DEPTH} publishes in flight`,
  args: [
    // a publish is given up only after 30 s: a slow server at 10,000 subscribers is slow, not lossy
    "--fanout", "--conns", String(subscribers + 1), "--size", String(size), "--depth", String(FANOUT_DEPTH),
    "--fan-timeout", "30", "--timeout", "120"
  ],
  metric: "deliveries_per_s",
  idle: false,
  fanout: true
})

const allScenarios: ReadonlyArray<Scenario> = [
  load("A", "1 conn, 16 B text, 1 in flight", "msgs_per_s", ["--conns", "1", "--size", "16", "--text", "--depth", "1"]),
  load("B", "100 conns, 16 B binary, 16 in flight each", "msgs_per_s", [
    "--conns", "100", "--size", "16", "--binary", "--depth", "16"
  ]),
  load("C", "100 conns, 1 KiB text, 8 in flight", "msgs_per_s", [
    "--conns", "100", "--size", "1024", "--text", "--depth", "8"
  ]),
  load("D", "10 conns, 64 KiB binary, 4 in flight", "mb_per_s", [
    "--conns", "10", "--size", "65536", "--binary", "--depth", "4"
  ]),
  load("E", "1 conn, 16 MiB binary, 1 in flight", "mb_per_s", [
    "--conns", "1", "--size", "16777216", "--binary", "--depth", "1"
  ]),
  {
    id: "F",
    title: `${config.idleConns.toLocaleString("en-US")} idle conns${
      config.deflate ? " after one 1 KiB text echo each" : ""
    }, server memory`,
    args: [
      "--idle", "--conns", String(config.idleConns), "--hold", String(config.hold), "--timeout", "120",
      // with deflate, one message each so that the compression contexts exist when RSS is read,
      // offered with Chromium's parameters (context takeover allowed both ways)
      ...(config.deflate ? ["--echo-once", "--size", "1024", "--text", "--deflate-offer", "client_max_window_bits"] : [])
    ],
    metric: "kib_per_conn",
    idle: true,
    fanout: false
  },
  fanout("G", 1_000, 16),
  fanout("H", 1_000, 1024),
  fanout("I", 10_000, 16),
  fanout("J", 10_000, 1024)
]

interface Server {
  readonly id: string
  readonly label: string
  /** the echo peer (A-F); none: a fan-out-only server */
  readonly file: string | undefined
  readonly env: Readonly<Record<string, string>>
  /** speaks permessage-deflate (the raw peers do not) */
  readonly deflate: boolean
  /** extra load generator options for this server */
  readonly loadgen: ReadonlyArray<string>
  /** the peer run in the fan-out scenarios (G-J); none: the server has no topics */
  readonly fanout: string | undefined
  /** run under the `bun` binary of the devDependency instead of this Node */
  readonly bun: boolean
}

const peer = (id: string, label: string, file: string | undefined, options?: Partial<Server>): Server => ({
  id,
  label,
  file,
  env: {},
  deflate: true,
  loadgen: [],
  fanout: undefined,
  bun: false,
  ...options
})

const bunBinary = Path.join(root, "node_modules", ".bin", "bun")

const allServers: ReadonlyArray<Server> = [
  peer("websock", "websock", "examples/EchoServer.ts", { fanout: "bench/peers/websock-fanout.ts" }),
  // per-event Effects (Server.events): no fiber parked per connection
  peer("websock-events", "websock, Server.events", "examples/EventsEchoServer.ts"),
  // fan-out only: websock without topics, trySend in a loop as examples/ChatRoom.ts does (what topics must beat)
  peer("websock-loop", "websock, trySend loop", undefined, { fanout: "bench/peers/websock-loop-fanout.ts" }),
  // the same with its metrics off: what counting costs (issue 14 allows 3% on B and C)
  peer("websock-no-metrics", "websock, metrics: false", "examples/EchoServer.ts", { env: { METRICS: "0" } }),
  // the issue's ceiling: bytes reflected unchanged, masked frames included (hence --allow-masked)
  peer("raw", "raw TCP echo (ceiling)", "bench/peers/tcp-reflect.ts", { deflate: false, loadgen: ["--allow-masked"] }),
  // the least a valid WebSocket echo does: parse, unmask, one write per read
  peer("minimal", "minimal WS echo (unmasks)", "bench/peers/raw-echo.ts", { deflate: false }),
  peer("ws", "ws pure JS", "bench/peers/ws-echo.ts", {
    env: { WS_NO_BUFFER_UTIL: "1" },
    fanout: "bench/peers/ws-fanout.ts"
  }),
  peer("ws-bufferutil", "ws + bufferutil", "bench/peers/ws-echo.ts", { fanout: "bench/peers/ws-fanout.ts" }),
  peer("effect", "Effect layerWebSocket", "bench/peers/effect-echo.ts"),
  // an Effect HttpRouter route calling HttpServerRequest.upgrade, on websock's NodeHttpServer and on Effect's own (ws)
  peer("effect-http-websock", "Effect HTTP route on websock", "bench/peers/effect-http-echo.ts", { env: { ENGINE: "websock" } }),
  peer("effect-http-ws", "Effect HTTP route on ws", "bench/peers/effect-http-echo.ts", { env: { ENGINE: "effect" } }),
  // Bun.serve (uWebSockets) under the bun devDependency: its echo, and its built-in pub/sub for G-J
  peer("bun", "Bun", "bench/peers/bun-echo.ts", { bun: true, fanout: "bench/peers/bun-pubsub.ts" })
]

/** The column every ratio is taken against. */
const BASELINE = "ws"

const pick = <A extends { readonly id: string }>(all: ReadonlyArray<A>, wanted: ReadonlyArray<string> | undefined, what: string) => {
  if (wanted === undefined) return all
  for (const id of wanted) {
    if (!all.some((a) => a.id.toLowerCase() === id.toLowerCase())) {
      throw new Error(`unknown ${what} ${id}; known: ${all.map((a) => a.id).join(", ")}`)
    }
  }
  return all.filter((a) => wanted.some((id) => id.toLowerCase() === a.id.toLowerCase()))
}

// ------------------------------------------------------------------ child processes

/** Every process we started and have not yet seen exit: killed on any way out. */
const live = new Set<ChildProcess.ChildProcess>()

const track = (child: ChildProcess.ChildProcess): ChildProcess.ChildProcess => {
  live.add(child)
  child.once("exit", () => live.delete(child))
  return child
}

const killAll = (): void => {
  for (const child of live) {
    try {
      child.kill("SIGKILL")
    } catch {
      // already gone
    }
  }
}

process.on("exit", killAll)
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    process.stderr.write(`\nbench: ${signal}, stopping ${live.size} process(es)\n`)
    killAll()
    process.exit(130)
  })
}

/** `bash -c 'ulimit -n N; exec taskset -c CORE cmd args'`: the pid we get is the final process's. */
const pinned = (core: number, command: string, args: ReadonlyArray<string>, env: NodeJS.ProcessEnv) =>
  track(ChildProcess.spawn(
    "bash",
    [
      "-c",
      `ulimit -n ${FD_LIMIT} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec taskset -c ${core} "$0" "$@"`,
      command,
      ...args
    ],
    { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] }
  ))

const exited = (child: ChildProcess.ChildProcess, ms: number): Promise<boolean> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(true)
    const timer = setTimeout(() => resolve(false), ms)
    child.once("exit", () => {
      clearTimeout(timer)
      resolve(true)
    })
  })

const stop = async (child: ChildProcess.ChildProcess): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill("SIGTERM")
  if (await exited(child, 5_000)) return
  child.kill("SIGKILL")
  await exited(child, 5_000)
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A port nobody listens on right now (the kernel's pick). */
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

const accepts = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = Net.connect({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

interface Running {
  readonly child: ChildProcess.ChildProcess
  readonly pid: number
  readonly port: number
  readonly log: () => string
}

/** Keeps the last 8 KiB a process wrote, for error messages. */
const tail = (child: ChildProcess.ChildProcess): () => string => {
  let text = ""
  const keep = (chunk: Buffer) => {
    text = (text + chunk.toString("utf8")).slice(-8192)
  }
  child.stdout?.on("data", keep)
  child.stderr?.on("data", keep)
  return () => text
}

/** The peer a scenario runs for a server: its fan-out peer in G-J, else its echo. */
const peerFile = (server: Server, scenario: Scenario): string | undefined =>
  scenario.fanout ? server.fanout : server.file

const startServer = async (server: Server, scenario: Scenario): Promise<Running> => {
  const port = await freePort()
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), ...server.env }
  if (server.env.WS_NO_BUFFER_UTIL === undefined) delete env.WS_NO_BUFFER_UTIL
  if (config.deflate) env.DEFLATE = "1"
  const file = peerFile(server, scenario)
  if (file === undefined) throw new Error(`${server.label} has no peer for ${scenario.id}`)
  const child = pinned(config.serverCore, server.bun ? bunBinary : process.execPath, [Path.join(root, file)], env)
  const log = tail(child)
  const deadline = Date.now() + 20_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break
    if (await accepts(port)) {
      if (child.pid === undefined) break
      return { child, pid: child.pid, port, log }
    }
    await sleep(50)
  }
  await stop(child)
  throw new Error(`${server.label} did not accept on port ${port} within 20 s\n${log()}`)
}

type Result = Readonly<Record<string, unknown>>

const runLoadgen = (args: ReadonlyArray<string>, timeoutMs: number): Promise<Result> =>
  new Promise((resolve, reject) => {
    const child = pinned(config.loadgenCore, binary, args, process.env)
    let out = ""
    let err = ""
    child.stdout?.on("data", (chunk: Buffer) => (out += chunk.toString("utf8")))
    child.stderr?.on("data", (chunk: Buffer) => (err = (err + chunk.toString("utf8")).slice(-4096)))
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      const line = out.trim().split("\n").pop() ?? ""
      try {
        const parsed: unknown = JSON.parse(line)
        if (typeof parsed === "object" && parsed !== null) {
          return resolve({ ...parsed, exit_code: code, stderr: err.trim() })
        }
      } catch {
        // fall through
      }
      reject(new Error(`loadgen exited (${code ?? signal}) without a result: ${err.trim() || out.trim()}`))
    })
  })

/** Busy and total jiffies of the whole machine, from /proc/stat. */
const cpuTicks = (): { readonly busy: number; readonly total: number } => {
  const fields = Fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1, 9).map(Number)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = fields
  const busy = user + nice + system + irq + softirq + steal
  return { busy, total: busy + idle + iowait }
}

/** % of one core the machine is busy with over `ms` (nothing of ours runs meanwhile). */
const machineBusy = async (ms: number): Promise<number> => {
  const a = cpuTicks()
  await sleep(ms)
  const b = cpuTicks()
  const total = b.total - a.total
  return total > 0 ? (100 * (b.busy - a.busy) * Os.cpus().length) / total : 0
}

/** Waits, at most BENCH_QUIET_WAIT seconds, until other work leaves the cores alone. */
const awaitQuiet = async (tag: string): Promise<number> => {
  const deadline = Date.now() + config.quietWait * 1000
  let busy = await machineBusy(300)
  let said = false
  while (busy > config.quietPct && Date.now() < deadline) {
    if (!said) process.stderr.write(`${tag}: other processes keep ${fmt(busy)}% of a core busy, waiting...\n`)
    said = true
    busy = await machineBusy(1000)
  }
  return busy
}

// ------------------------------------------------------------------ build

const build = (): void => {
  const stale = !Fs.existsSync(binary) || Fs.statSync(binary).mtimeMs < Fs.statSync(source).mtimeMs
  if (!stale) return
  Fs.mkdirSync(Path.dirname(binary), { recursive: true })
  process.stderr.write("bench: building bench/bin/loadgen (gcc -O2)\n")
  const gcc = ChildProcess.spawnSync("gcc", ["-O2", "-Wall", "-o", binary, source, "-lz"], { stdio: "inherit" })
  if (gcc.error !== undefined || gcc.status !== 0) {
    throw new Error("bench: could not build bench/loadgen.c: gcc and zlib headers (zlib1g-dev) are needed")
  }
}

// ------------------------------------------------------------------ statistics and formatting

const num = (r: Result, key: string): number => {
  const v = r[key]
  return typeof v === "number" ? v : Number.NaN
}

const median = (xs: ReadonlyArray<number>): number => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return Number.NaN
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

const fmt = (x: number, digits = 0): string =>
  Number.isFinite(x)
    ? x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
    : "-"

const fmtMetric = (metric: Metric, x: number): string =>
  metric === "kib_per_conn" ? fmt(x, 1) : fmt(x, 0)

const fmtUs = (x: number): string => (x < 100 ? fmt(x, 1) : fmt(x, 0))

const unit: Record<Metric, string> = {
  msgs_per_s: "msg/s",
  mb_per_s: "MB/s",
  kib_per_conn: "KiB/conn",
  deliveries_per_s: "deliveries/s"
}

/** A fan-out run that lost, repeated, reordered or echoed back a publish. */
const fanoutWrong = (r: Result): boolean =>
  ["incomplete", "gaps", "out_of_order", "to_publisher"].some((key) => num(r, key) > 0)

// ------------------------------------------------------------------ main

interface Cell {
  readonly results: Array<Result>
  readonly errors: Array<string>
}

const main = async (): Promise<void> => {
  const scenarios = pick(allScenarios, envList("BENCH_SCENARIOS"), "scenario")
  let servers = pick(allServers, envList("BENCH_SERVERS"), "server")
  const notes: Array<string> = []
  if (!Fs.existsSync(Path.join(root, "examples/EchoServer.ts"))) {
    servers = servers.filter((s) => s.id !== "websock")
    notes.push("websock skipped: examples/EchoServer.ts does not exist yet")
  }
  if (config.deflate) {
    servers = servers.filter((s) => s.deflate)
    notes.push("permessage-deflate on: the raw peers do not speak it and are skipped")
  }
  if (servers.some((s) => s.bun) && !Fs.existsSync(bunBinary)) {
    servers = servers.filter((s) => !s.bun)
    notes.push("Bun skipped: node_modules/.bin/bun does not exist (npm ci installs the bun devDependency)")
  }
  // fan-out: only servers with topics, and only while their peer exists (websock's waits for the topics API)
  const runs = (scenario: Scenario, server: Server): boolean => {
    const file = peerFile(server, scenario)
    if (file === undefined) return false
    return !scenario.fanout || (!config.deflate && Fs.existsSync(Path.join(root, file)))
  }
  if (scenarios.some((s) => s.fanout)) {
    if (config.deflate) notes.push("fan-out scenarios skipped: the load generator publishes uncompressed frames only")
    for (const server of servers) {
      if (server.fanout !== undefined && !config.deflate && !Fs.existsSync(Path.join(root, server.fanout))) {
        notes.push(`${server.label} skipped in the fan-out scenarios: ${server.fanout} does not exist yet`)
      }
    }
  }
  build()
  Fs.mkdirSync(outDir, { recursive: true })

  const cells = new Map<string, Cell>()
  const cell = (scenario: Scenario, server: Server): Cell => {
    const key = `${scenario.id}/${server.id}`
    let c = cells.get(key)
    if (c === undefined) {
      c = { results: [], errors: [] }
      cells.set(key, c)
    }
    return c
  }

  const started = new Date()
  for (let run = 1; run <= config.runs; run++) {
    for (const scenario of scenarios) {
      for (const server of servers) {
        if (!runs(scenario, server)) continue
        const c = cell(scenario, server)
        const tag = `[run ${run}/${config.runs}] ${scenario.id} ${server.label}`
        let running: Running | undefined
        try {
          const busyBefore = scenario.idle ? Number.NaN : await awaitQuiet(tag)
          running = await startServer(server, scenario)
          if (scenario.idle) await sleep(500) // let startup garbage settle before the RSS baseline
          const args = [
            ...scenario.args,
            ...server.loadgen,
            "--port", String(running.port),
            "--pid", String(running.pid),
            ...(scenario.idle ? [] : ["--seconds", String(config.seconds), "--warmup", String(config.warmup)]),
            ...(config.deflate ? ["--deflate"] : []),
            ...(config.verify && !scenario.idle ? ["--verify"] : [])
          ]
          // fan-out: up to 120 s for 10,001 handshakes and as much for every subscription to exist
          const budget = scenario.idle ? 180_000 : (config.seconds + config.warmup + 60 + (scenario.fanout ? 240 : 0)) * 1000
          const result = await runLoadgen(args, budget)
          const child = running.child
          if (child.exitCode !== null || child.signalCode !== null) {
            // a crash, or someone else's kill: either way the figure is not a measurement of this server
            const how = child.signalCode ?? `code ${child.exitCode}`
            throw new Error(`${server.label} exited (${how}) during the measurement; its output ended with:\n${running.log()}`)
          }
          c.results.push({ ...result, run, busy_before_pct: busyBefore })
          process.stderr.write(`${tag}: ${describe(scenario, result)}\n`)
        } catch (error) {
          const message = error instanceof Error ? error.message : String(error)
          c.errors.push(message)
          process.stderr.write(`${tag}: FAILED ${message}\n`)
        } finally {
          if (running !== undefined) await stop(running.child)
        }
      }
    }
  }

  const report = render(scenarios, servers, cells, notes, started)
  process.stdout.write(report)
  const stamp = started.toISOString().replace(/[:.]/g, "-")
  const json = {
    meta: machine(started),
    config,
    scenarios: scenarios.map(({ id, title, args, metric }) => ({ id, title, args, metric })),
    servers: servers.map(({ id, label, file, env, loadgen, fanout, bun }) => ({ id, label, file, env, loadgen, fanout, bun })),
    notes,
    results: [...cells.entries()].map(([key, c]) => ({ key, results: c.results, errors: c.errors }))
  }
  Fs.writeFileSync(Path.join(outDir, `bench-${stamp}.json`), JSON.stringify(json, null, 2) + "\n")
  Fs.writeFileSync(Path.join(outDir, `bench-${stamp}.md`), report)
  Fs.writeFileSync(Path.join(outDir, "latest.json"), JSON.stringify(json, null, 2) + "\n")
  process.stderr.write(`bench: wrote bench/out/bench-${stamp}.json and .md\n`)
}

const describe = (scenario: Scenario, r: Result): string => {
  if (scenario.idle) {
    return `${fmt(num(r, "kib_per_conn"), 2)} KiB/conn (${num(r, "open")}/${num(r, "conns")} open, ` +
      `handshakes ${fmt(num(r, "handshake_s"), 2)} s, errors ${num(r, "errors")}` +
      (typeof r.first_error === "string" ? `: ${r.first_error})` : ")")
  }
  if (scenario.fanout) {
    return `${fmt(num(r, "deliveries_per_s"))} deliveries/s, ${fmt(num(r, "publishes_per_s"))} publishes/s, ` +
      `p99 ${fmtUs(num(r, "p99_us"))} µs (to the last ${fmtUs(num(r, "last_p99_us"))} µs), ` +
      `cpu loadgen ${fmt(num(r, "cpu_loadgen_pct"))}% server ${fmt(num(r, "cpu_server_pct"))}% ` +
      `other ${fmt(num(r, "cpu_other_pct"))}%, incomplete ${num(r, "incomplete")}, errors ${num(r, "errors")}` +
      (typeof r.first_error === "string" ? ` (${r.first_error})` : "")
  }
  return `${fmt(num(r, "msgs_per_s"))} msg/s, ${fmt(num(r, "mb_per_s"), 1)} MB/s, ` +
    `p99 ${fmtUs(num(r, "p99_us"))} µs, cpu loadgen ${fmt(num(r, "cpu_loadgen_pct"))}% ` +
    `server ${fmt(num(r, "cpu_server_pct"))}% other ${fmt(num(r, "cpu_other_pct"))}%, errors ${num(r, "errors")}` +
    (typeof r.first_error === "string" ? ` (${r.first_error})` : "")
}

const machine = (started: Date) => {
  const git = ChildProcess.spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" })
  const dirty = ChildProcess.spawnSync("git", ["status", "--porcelain", "--untracked-files=no"], {
    cwd: root,
    encoding: "utf8"
  })
  const cpus = Os.cpus()
  return {
    date: started.toISOString(),
    node: process.version,
    nodePath: process.execPath,
    cpu: cpus[0]?.model ?? "unknown",
    cores: cpus.length,
    memoryGiB: Math.round(Os.totalmem() / 2 ** 30),
    kernel: `${Os.type()} ${Os.release()}`,
    commit: `${git.stdout.trim() || "?"}${dirty.stdout.trim() !== "" ? " (dirty)" : ""}`
  }
}

const render = (
  scenarios: ReadonlyArray<Scenario>,
  servers: ReadonlyArray<Server>,
  cells: ReadonlyMap<string, Cell>,
  notes: ReadonlyArray<string>,
  started: Date
): string => {
  const m = machine(started)
  const lines: Array<string> = []
  const get = (scenario: Scenario, server: Server) => cells.get(`${scenario.id}/${server.id}`)
  const med = (scenario: Scenario, server: Server, key: string) =>
    median((get(scenario, server)?.results ?? []).map((r) => num(r, key)))
  const baseline = servers.find((s) => s.id === BASELINE)
  const header = `| scenario | ${servers.map((s) => s.label).join(" | ")} |`
  const rule = `|---|${servers.map(() => "---:").join("|")}|`
  const marks = new Set<string>()

  lines.push(
    `## websock benchmark${config.deflate ? " (permessage-deflate)" : ""}`,
    "",
    `${m.date} · Node ${m.node} · ${m.cpu} × ${m.cores} · ${m.kernel} · commit ${m.commit}`,
    `server on core ${config.serverCore}, load generator on core ${config.loadgenCore} · ` +
      `median of ${config.runs} run(s) · ${config.warmup} s warm-up + ${config.seconds} s measured` +
      (config.verify ? " · every echoed byte verified" : ""),
    "",
    `### Throughput and memory (ratio to ${baseline?.label ?? BASELINE})`,
    "",
    header,
    rule
  )
  for (const scenario of scenarios) {
    const base = baseline === undefined ? Number.NaN : med(scenario, baseline, scenario.metric)
    const row = servers.map((server) => {
      const c = get(scenario, server)
      if (c === undefined || c.results.length === 0) return c !== undefined && c.errors.length > 0 ? "failed" : "-"
      const value = med(scenario, server, scenario.metric)
      let text = fmtMetric(scenario.metric, value)
      if (Number.isFinite(base) && base > 0 && server !== baseline) text += ` (${fmt(value / base, 2)}x)`
      const wrong = (r: Result) =>
        num(r, "errors") > 0 || num(r, "bad_len") > 0 || num(r, "bad_op") > 0 || num(r, "bad_data") > 0 ||
        (scenario.fanout && fanoutWrong(r))
      if (c.errors.length > 0 || c.results.some(wrong)) {
        text += " !"
        marks.add("!")
      }
      if (!scenario.idle && med(scenario, server, "cpu_other_pct") > 20) {
        text += " †"
        marks.add("†")
      }
      if (!scenario.idle && med(scenario, server, "cpu_loadgen_pct") > 85) {
        text += " ‡"
        marks.add("‡")
      }
      return text
    })
    lines.push(`| ${scenario.id}: ${scenario.title} (${unit[scenario.metric]}) | ${row.join(" | ")} |`)
  }
  if (marks.has("!")) {
    lines.push("", "! errors during the measurement (failed runs, closed connections, wrong echoes; in fan-out also " +
      "incomplete publishes, gaps, repeats or a publish sent back to its publisher): see the JSON")
  }
  if (marks.has("†")) lines.push("", "† other processes used more than 20% of a core meanwhile: noisy")
  if (marks.has("‡")) lines.push("", "‡ the load generator used more than 85% of its core: it may be the limit")

  const loadScenarios = scenarios.filter((s) => !s.idle)
  if (loadScenarios.length > 0) {
    lines.push("", "### Latency p50 / p99 / p99.9 (µs)", "", header, rule)
    for (const scenario of loadScenarios) {
      const row = servers.map((server) =>
        (get(scenario, server)?.results.length ?? 0) === 0
          ? "-"
          : ["p50_us", "p99_us", "p999_us"].map((k) => fmtUs(med(scenario, server, k))).join(" / ")
      )
      lines.push(`| ${scenario.id} | ${row.join(" | ")} |`)
    }
    lines.push(
      "",
      "### CPU, % of one core: load generator (its user-space part) / server / other processes",
      "",
      header,
      rule
    )
    for (const scenario of loadScenarios) {
      const row = servers.map((server) =>
        (get(scenario, server)?.results.length ?? 0) === 0
          ? "-"
          : `${fmt(med(scenario, server, "cpu_loadgen_pct"))} (${fmt(med(scenario, server, "cpu_loadgen_user_pct"))}) / ` +
            `${fmt(med(scenario, server, "cpu_server_pct"))} / ${fmt(med(scenario, server, "cpu_other_pct"))}`
      )
      lines.push(`| ${scenario.id} | ${row.join(" | ")} |`)
    }
  }
  const fanouts = scenarios.filter((s) => s.fanout)
  if (fanouts.length > 0) {
    lines.push(
      "",
      "### Fan-out in detail: complete publishes/s · publish to last delivery p50 / p99 (µs) · incomplete · " +
        "deliveries per second of server CPU",
      "",
      header,
      rule
    )
    for (const scenario of fanouts) {
      const row = servers.map((server) => {
        const results = get(scenario, server)?.results ?? []
        if (results.length === 0) return "-"
        const incomplete = results.reduce((sum, r) => sum + (num(r, "incomplete") || 0), 0)
        // on a shared machine the server may not get its whole core: what one core-second of it delivers
        const perCpu = median(results.map((r) => num(r, "deliveries_per_s") / (num(r, "cpu_server_pct") / 100)))
        return `${fmt(med(scenario, server, "publishes_per_s"))} · ${fmtUs(med(scenario, server, "last_p50_us"))} / ` +
          `${fmtUs(med(scenario, server, "last_p99_us"))} · ${fmt(incomplete)} · ${fmt(perCpu)}`
      })
      lines.push(`| ${scenario.id} | ${row.join(" | ")} |`)
    }
  }
  const idle = scenarios.find((s) => s.idle)
  if (idle !== undefined) {
    lines.push("", "### F in detail: server RSS before → with all connections open (MiB), KiB/conn at open / after hold", "", header, rule)
    const row = servers.map((server) => {
      if ((get(idle, server)?.results.length ?? 0) === 0) return "-"
      return `${fmt(med(idle, server, "rss_before_kib") / 1024, 0)} → ${fmt(med(idle, server, "rss_end_kib") / 1024, 0)}` +
        ` · ${fmt(med(idle, server, "kib_per_conn_open"), 1)} / ${fmt(med(idle, server, "kib_per_conn"), 1)}`
    })
    lines.push(`| F | ${row.join(" | ")} |`)
  }
  const failures = [...cells.entries()].flatMap(([key, c]) => c.errors.map((e) => `- ${key}: ${e.split("\n")[0]}`))
  if (notes.length > 0 || failures.length > 0) {
    lines.push("", "### Notes", "", ...notes.map((n) => `- ${n}`), ...failures)
  }
  lines.push("")
  return lines.join("\n") + "\n"
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`)
  killAll()
  process.exitCode = 1
})
