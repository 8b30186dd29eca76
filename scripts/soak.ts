/**
 * Soak test (issue 6): 10,000 idle WebSocket connections stay open while
 * rounds of 1,000 connections connect, echo and close cleanly; afterwards the
 * echo server's memory and file descriptors must be back near their baseline.
 *
 *     node_modules/.bin/node scripts/soak.ts                                   # the full load
 *     SOAK_IDLE=500 SOAK_CHURN=100 SOAK_HOLD=0 node_modules/.bin/node scripts/soak.ts   # a quick run
 *
 * The server is examples/EchoServer.ts in a child process, so that the
 * figures are its own: RSS from /proc/PID/status, descriptors from
 * /proc/PID/fd, and the V8 heap from a small probe preloaded with
 * `node --expose-gc --import data:...`, which runs a full GC (or one that also
 * gives V8's pooled free pages back) and answers `process.memoryUsage()` over
 * the IPC channel; the server's code is not touched. The clients are a minimal RFC 6455 client over node:net in this
 * process (10,000 clients of the `ws` package would cost more than the server
 * under test). Linux only (/proc); traffic only to 127.0.0.1. Every phase is
 * bounded in count and time; the server child is killed at the end, on error
 * and on SIGINT.
 *
 * Settings (SOAK_IDLE, SOAK_CHURN, SOAK_ROUNDS, SOAK_CYCLES, PORT, ...), the
 * checks and how to read the figures: scripts/README.md.
 *
 * Exit status: 0 PASS, 1 FAIL, 2 the run could not complete, 130 interrupted.
 *
 * @since 0.1.0
 */
import * as ChildProcess from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"

// -----------------------------------------------------------------------------
// settings
// -----------------------------------------------------------------------------

const intEnv = (name: string, fallback: number, min: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw === "") return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n < min) {
    console.error(`soak: ${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`)
    process.exit(2)
  }
  return n
}

const settings = {
  idle: intEnv("SOAK_IDLE", 10_000, 0),
  churn: intEnv("SOAK_CHURN", 1_000, 0),
  rounds: intEnv("SOAK_ROUNDS", 3, 0),
  cycles: intEnv("SOAK_CYCLES", 2, 1),
  concurrency: intEnv("SOAK_CONCURRENCY", 50, 1),
  warmup: intEnv("SOAK_WARMUP", 100, 0),
  holdMs: intEnv("SOAK_HOLD", 35, 0) * 1000,
  settleMs: intEnv("SOAK_SETTLE", 5, 0) * 1000,
  rssSlackMiB: intEnv("SOAK_RSS_SLACK_MIB", 50, 0),
  heapSlackMiB: intEnv("SOAK_HEAP_SLACK_MIB", 8, 0),
  fdSlack: intEnv("SOAK_FD_SLACK", 5, 0),
  timeoutMs: intEnv("SOAK_TIMEOUT", 1200, 1) * 1000,
  port: intEnv("PORT", 0, 0),
  gdb: process.env.SOAK_GDB === "1"
}

/** Handshakes in flight while opening the idle connections. */
const OPEN_CONCURRENCY = 200
/** Closing handshakes in flight while closing the idle connections. */
const CLOSE_CONCURRENCY = 500
/** Time for one connection's handshake, one echo, or one closing handshake (the server's closeTimeout is 5 s). */
const STEP_TIMEOUT_MS = 15_000
/** Time for the server's descriptors to come back after the last close (closeTimeout plus linger). */
const DRAIN_TIMEOUT_MS = 30_000

const root = Path.resolve(import.meta.dirname, "..")
/** The server under test; another echo server on PORT, path /ws, that logs "listening on" can stand in as a control. */
const serverEntry = Path.resolve(root, process.env.SOAK_SERVER || "examples/EchoServer.ts")

/** Raises the soft descriptor limit to the hard one (at most 65536), then execs "$0" "$@". */
const ULIMIT_EXEC = `h=$(ulimit -Hn); if [ "$h" = unlimited ] || [ "$h" -gt 65536 ]; then h=65536; fi; ulimit -n "$h"; exec "$0" "$@"`

const openFilesLimit = (pid: number | "self"): number => {
  const line = Fs.readFileSync(`/proc/${pid}/limits`, "latin1").split("\n").find((l) => l.startsWith("Max open files"))
  const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0]
  return soft === undefined ? 0 : soft === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(soft)
}

// -----------------------------------------------------------------------------
// a minimal RFC 6455 client
// -----------------------------------------------------------------------------

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
const Op = { Continuation: 0x0, Text: 0x1, Binary: 0x2, Close: 0x8, Ping: 0x9, Pong: 0xa } as const
const EMPTY = Buffer.alloc(0)
let pings = 0 // Pings received from the server (all answered)
const CLOSE_NORMAL = Buffer.from([0x03, 0xe8])

/** One masked, unfragmented client frame (RFC 6455 §5.2, §5.3). */
const encodeFrame = (opcode: number, payload: Uint8Array): Buffer => {
  const length = payload.length
  const headerLength = length < 126 ? 2 : length < 65536 ? 4 : 10
  const frame = Buffer.allocUnsafe(headerLength + 4 + length)
  frame[0] = 0x80 | opcode
  if (length < 126) {
    frame[1] = 0x80 | length
  } else if (length < 65536) {
    frame[1] = 0x80 | 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 0x80 | 127
    frame.writeBigUInt64BE(BigInt(length), 2)
  }
  const mask = Crypto.randomBytes(4)
  mask.copy(frame, headerLength)
  const start = headerLength + 4 // first payload byte in the frame
  for (let i = 0; i < length; i++) frame[start + i] = payload[i]! ^ mask[i & 3]!
  return frame
}

interface Message {
  readonly opcode: number
  readonly data: Buffer
}

/** An open client connection; answers Pings, parses the server's frames, queues its messages. */
class Client {
  readonly socket: Net.Socket
  /** Bytes received and not yet parsed (a frame split across reads). */
  private pending: Buffer = EMPTY
  /** The fragments of a message in progress, and its opcode. */
  private fragments: Array<Buffer> = []
  private fragmentOpcode = 0
  private readonly inbox: Array<Message> = []
  private waiter: ((message: Message | undefined) => void) | undefined = undefined
  /** The code of the server's Close once received (1005 when it had none). */
  closeCode: number | undefined = undefined
  closeSent = false
  closed = false
  /** The first thing that went wrong: a protocol error by the server, a socket error. */
  fault: string | undefined = undefined
  /** Called when the connection ends without our having closed it. */
  onDropped: ((client: Client) => void) | undefined = undefined
  readonly whenClosed: Promise<void>

  constructor(socket: Net.Socket, rest: Buffer) {
    this.socket = socket
    let resolveClosed = (): void => {}
    this.whenClosed = new Promise((resolve) => {
      resolveClosed = resolve
    })
    socket.on("data", (chunk: Buffer) => this.receive(chunk))
    socket.on("error", (error) => {
      this.fault ??= `socket error: ${error.message}`
    })
    socket.on("close", () => {
      this.closed = true
      this.wake(undefined)
      resolveClosed()
      if (!this.closeSent) this.onDropped?.(this)
    })
    if (rest.length > 0) this.receive(rest)
  }

  send(opcode: number, payload: Uint8Array): void {
    this.socket.write(encodeFrame(opcode, payload))
  }

  /** The next data message, or undefined if the connection closed or nothing came in time. */
  next(timeoutMs: number): Promise<Message | undefined> {
    const queued = this.inbox.shift()
    if (queued !== undefined) return Promise.resolve(queued)
    if (this.closed || this.closeCode !== undefined) return Promise.resolve(undefined)
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.wake(undefined), timeoutMs)
      this.waiter = (message) => {
        clearTimeout(timer)
        resolve(message)
      }
    })
  }

  /**
   * The closing handshake from our side: Close 1000, then the server's Close,
   * then its TCP close (RFC 6455 §7.1.1: the server closes first). Returns
   * undefined when all of that happened cleanly, else what went wrong.
   */
  async close(timeoutMs: number): Promise<string | undefined> {
    if (!this.closeSent && !this.closed) {
      this.closeSent = true
      this.send(Op.Close, CLOSE_NORMAL)
    }
    const done = await within(this.whenClosed, timeoutMs)
    if (!done) {
      this.socket.destroy()
      return `no TCP close within ${timeoutMs} ms (server Close: ${this.closeCode ?? "none"})`
    }
    if (this.fault !== undefined) return this.fault
    if (this.closeCode === undefined) return "TCP closed without the server's Close"
    if (this.closeCode !== 1000) return `the server answered Close ${this.closeCode}`
    return undefined
  }

  private wake(message: Message | undefined): void {
    const waiter = this.waiter
    this.waiter = undefined
    waiter?.(message)
  }

  private protocolFault(reason: string): void {
    this.fault ??= `server protocol error: ${reason}`
    this.socket.destroy()
  }

  private receive(chunk: Buffer): void {
    if (this.closeCode !== undefined) return // RFC 6455 §5.5.1: nothing after the Close
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    while (this.pending.length >= 2 && this.closeCode === undefined && !this.socket.destroyed) {
      const b0 = this.pending[0]!
      const b1 = this.pending[1]!
      let length = b1 & 0x7f // declared payload length
      let offset = 2 // payload start
      if (length === 126) {
        if (this.pending.length < 4) return
        length = this.pending.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (this.pending.length < 10) return
        length = Number(this.pending.readBigUInt64BE(2))
        offset = 10
      }
      if ((b1 & 0x80) !== 0) return this.protocolFault("masked frame from the server") // §5.1
      if ((b0 & 0x70) !== 0) return this.protocolFault("RSV bits without an extension") // §5.2
      if (this.pending.length < offset + length) return
      const payload = this.pending.subarray(offset, offset + length)
      this.pending = this.pending.subarray(offset + length)
      this.frame((b0 & 0x80) !== 0, b0 & 0x0f, payload)
    }
  }

  private frame(fin: boolean, opcode: number, payload: Buffer): void {
    switch (opcode) {
      case Op.Ping:
        pings++
        if (!this.closeSent) this.send(Op.Pong, payload) // §5.5.2
        return
      case Op.Pong:
        return
      case Op.Close: {
        this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005
        if (!this.closeSent) {
          // Server-initiated close: answer it (§5.5.1). The soak counts it as a drop.
          this.closeSent = true
          this.send(Op.Close, payload.subarray(0, 2))
          this.onDropped?.(this)
        }
        this.wake(undefined)
        return
      }
      case Op.Text:
      case Op.Binary:
        if (this.fragments.length > 0) return this.protocolFault("new message inside a fragmented one")
        if (fin) return this.deliver({ opcode, data: payload })
        this.fragmentOpcode = opcode
        this.fragments.push(payload)
        return
      case Op.Continuation:
        if (this.fragments.length === 0) return this.protocolFault("continuation without a message")
        this.fragments.push(payload)
        if (fin) {
          const data = Buffer.concat(this.fragments)
          this.fragments = []
          this.deliver({ opcode: this.fragmentOpcode, data })
        }
        return
      default:
        return this.protocolFault(`reserved opcode ${opcode}`)
    }
  }

  private deliver(message: Message): void {
    if (this.waiter !== undefined) this.wake(message)
    else this.inbox.push(message)
  }
}

/** Opens a connection to ws://127.0.0.1:port/ws and checks the 101 (RFC 6455 §4.1). */
const connect = (port: number, timeoutMs: number): Promise<Client> =>
  new Promise((resolve, reject) => {
    const key = Crypto.randomBytes(16).toString("base64")
    const accept = Crypto.createHash("sha1").update(key + GUID).digest("base64")
    const socket = Net.connect({ host: "127.0.0.1", port, noDelay: true })
    let head: Buffer = EMPTY // the response head read so far
    let settled = false // resolved or rejected
    const finish = (error: string | undefined) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.off("data", onData)
      socket.off("error", onError)
      socket.off("close", onClose)
      if (error === undefined) return
      socket.destroy()
      reject(new Error(error))
    }
    const onError = (error: Error) => finish(error.message)
    const onClose = () => finish("closed during the handshake")
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk])
      const end = head.indexOf("\r\n\r\n")
      if (end < 0) {
        if (head.length > 16_384) finish("response head too long")
        return
      }
      const lines = head.subarray(0, end).toString("latin1").split("\r\n")
      if (!/^HTTP\/1\.1 101 /.test(lines[0] ?? "")) return finish(`upgrade answered ${JSON.stringify(lines[0])}`)
      const acceptLine = lines.find((l) => /^sec-websocket-accept:/i.test(l))
      if (acceptLine?.slice(acceptLine.indexOf(":") + 1).trim() !== accept) return finish("wrong Sec-WebSocket-Accept")
      finish(undefined)
      resolve(new Client(socket, head.subarray(end + 4)))
    }
    const timer = setTimeout(() => finish(`handshake not done within ${timeoutMs} ms`), timeoutMs)
    socket.on("data", onData)
    socket.on("error", onError)
    socket.on("close", onClose)
    socket.once("connect", () => {
      socket.write(
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`
      )
    })
  })

// -----------------------------------------------------------------------------
// helpers
// -----------------------------------------------------------------------------

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** true if `promise` settled within `ms`. */
const within = (promise: Promise<unknown>, ms: number): Promise<boolean> =>
  new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms)
    promise.then(
      () => {
        clearTimeout(timer)
        resolve(true)
      },
      () => {
        clearTimeout(timer)
        resolve(true)
      }
    )
  })

/** Runs task(0) ... task(count - 1), at most `concurrency` at a time. Tasks must not reject. */
const pool = async (count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> => {
  let next = 0 // the next task to start
  const worker = async () => {
    while (next < count) await task(next++)
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
}

const started = Date.now()
const log = (message: string): void => {
  console.error(`[soak ${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${message}`)
}

type ProblemKind = "connectFailures" | "echoErrors" | "uncleanCloses" | "dropped"
const problems: Record<ProblemKind, number> = { connectFailures: 0, echoErrors: 0, uncleanCloses: 0, dropped: 0 }
const problemSamples: Array<string> = []
const problem = (kind: ProblemKind, detail: string): void => {
  problems[kind]++
  if (problemSamples.length < 20) problemSamples.push(`${kind}: ${detail}`)
}

// -----------------------------------------------------------------------------
// the server child and its figures
// -----------------------------------------------------------------------------

/**
 * Preloaded into the server: answers `process.memoryUsage()` (after a full
 * GC when asked) over the IPC channel, without keeping the process alive;
 * exits the server if this script goes away; and when someone else sends
 * the server SIGINT or SIGTERM, prints the process list (who did it?).
 */
const PROBE = `
import * as ChildProcess from "node:child_process"
import * as V8 from "node:v8"
if (process.send) {
  let stopping = false
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => {
      if (stopping) return
      let ps = ""
      try { ps = ChildProcess.execSync("ps -eo pid,ppid,etime,args", { encoding: "utf8", timeout: 5000 }) } catch {}
      ps = ps.split("\\n").filter((line) => !/^\\s*\\d+\\s+\\d+\\s+\\S+\\s+\\[/.test(line)).map((line) => line.slice(0, 160)).join("\\n") // no kernel threads, short lines
      process.stderr.write("soak probe: " + signal + " not sent by the soak script; processes then:\\n" + ps)
    })
  }
  process.on("message", (m) => {
    if (m !== null && typeof m === "object" && m.type === "soak:stop") stopping = true
    if (m === null || typeof m !== "object" || m.type !== "soak:memory") return
    if (m.gc === "full") globalThis.gc()
    // "last-resort": a full GC that also gives back the free pages V8 keeps for reuse
    if (m.gc === "reduce") globalThis.gc({ type: "major", execution: "sync", flavor: "last-resort" })
    const h = V8.getHeapStatistics()
    process.send({ type: "soak:memory", id: m.id, usage: { ...process.memoryUsage(), v8Physical: h.total_physical_size } })
  })
  process.on("disconnect", () => process.exit(70))
  process.channel?.unref()
}
`

interface Usage {
  readonly heapUsed: number
  readonly heapTotal: number
  readonly external: number
  readonly arrayBuffers: number
  /** V8's heap pages in RAM (total_physical_size). */
  readonly v8Physical: number
}

interface Sample {
  readonly fds: number
  readonly rssKiB: number
  readonly usage: Usage | undefined
}

/** glibc's own account (malloc_stats through gdb, SOAK_GDB=1), and RSS after malloc_trim(0). */
interface Malloc {
  readonly inUse: number
  readonly system: number
  readonly rssTrimmedKiB: number
}

interface ServerChild {
  readonly child: ChildProcess.ChildProcess
  readonly pid: number
  /** The last lines the server wrote (stdout and stderr). */
  readonly tail: Array<string>
  lines: number
  /** Lines of the last malloc_stats() report (SOAK_GDB=1), not counted as log lines. */
  mallocLines: Array<string>
  exited: boolean
  stopping: boolean
}

let server: ServerChild | undefined = undefined
let probeId = 0 // the id of the last memory request
const probeWaiters = new Map<number, (usage: Usage) => void>()

const startServer = (port: number): Promise<ServerChild> =>
  new Promise((resolve, reject) => {
    const child = ChildProcess.spawn(
      "bash",
      ["-c", ULIMIT_EXEC, process.execPath, "--expose-gc", "--import", `data:text/javascript,${encodeURIComponent(PROBE)}`, serverEntry],
      { cwd: root, env: { ...process.env, PORT: String(port) }, stdio: ["ignore", "pipe", "pipe", "ipc"] }
    )
    if (child.pid === undefined) return reject(new Error("could not spawn the server"))
    const s: ServerChild = { child, pid: child.pid, tail: [], lines: 0, mallocLines: [], exited: false, stopping: false }
    server = s
    let listening = false
    const timer = setTimeout(() => reject(new Error("the server did not say it was listening within 30 s")), 30_000)
    const copy = process.env.SOAK_SERVER_LOG ? Fs.createWriteStream(process.env.SOAK_SERVER_LOG) : undefined
    const onLine = (line: string) => {
      copy?.write(line + "\n")
      if (/^(Arena \d+:|Total \(incl\. mmap\):|system bytes|in use bytes|max mmap)/.test(line)) {
        s.mallocLines.push(line)
        return
      }
      s.lines++
      s.tail.push(line)
      if (s.tail.length > 200) s.tail.shift()
      if (!listening && line.includes("listening on")) {
        listening = true
        clearTimeout(timer)
        resolve(s)
      }
    }
    for (const stream of [child.stdout, child.stderr]) {
      let partial = "" // an unterminated last line
      stream?.setEncoding("utf8")
      stream?.on("data", (text: string) => {
        const parts = (partial + text).split("\n")
        partial = parts.pop() ?? ""
        for (const line of parts) onLine(line)
      })
    }
    child.on("message", (m: unknown) => {
      if (typeof m !== "object" || m === null || !("id" in m) || !("usage" in m)) return
      const waiter = probeWaiters.get(Number(m.id))
      probeWaiters.delete(Number(m.id))
      waiter?.(m.usage as Usage)
    })
    child.on("exit", (code, signal) => {
      s.exited = true
      clearTimeout(timer)
      if (!listening) reject(new Error(`the server exited (${code ?? signal}) before listening`))
      else if (!s.stopping) {
        // NodeRuntime.runMain exits with 130 when SIGINT or SIGTERM interrupted it.
        const hint = code === 130 ? ": it was sent SIGINT or SIGTERM, not by this script" : ""
        void abort(`the server exited unexpectedly (code ${code}, signal ${signal})${hint}`, 2)
      }
    })
  })

/** The server's V8 figures, after a full GC, or a full GC that gives back V8's free pages, or none. */
const probe = (gc: "full" | "reduce" | "none"): Promise<Usage | undefined> => {
  const s = server
  if (s === undefined || s.exited || !s.child.connected) return Promise.resolve(undefined)
  const id = ++probeId
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      probeWaiters.delete(id)
      resolve(undefined)
    }, 10_000)
    probeWaiters.set(id, (usage) => {
      clearTimeout(timer)
      resolve(usage)
    })
    s.child.send({ type: "soak:memory", id, gc })
  })
}

const procFigures = (pid: number): { fds: number; rssKiB: number } => {
  const status = Fs.readFileSync(`/proc/${pid}/status`, "latin1")
  const rss = /^VmRSS:\s+(\d+) kB/m.exec(status)
  return { fds: Fs.readdirSync(`/proc/${pid}/fd`).length, rssKiB: rss === null ? Number.NaN : Number(rss[1]) }
}

interface Checkpoint {
  readonly label: string
  readonly clients: number
  /** Read at once. */
  readonly raw: Sample
  /** Read after SOAK_SETTLE seconds and a forced full GC. */
  readonly settled: Sample
  /** RSS after a full GC that also returns V8's pooled free pages to the system. */
  readonly reducedRssKiB: number
  readonly malloc: Malloc | undefined
}

/**
 * SOAK_GDB=1: attaches gdb to the server for a moment to have glibc print
 * malloc_stats() (to the server's stderr, which we read) and release its free
 * pages with malloc_trim(0). Tells native memory in use from memory glibc
 * keeps for reuse after a peak.
 */
const mallocFigures = async (pid: number): Promise<Malloc | undefined> => {
  const s = server!
  s.mallocLines = []
  const gdb = ChildProcess.spawnSync(
    "gdb",
    ["-p", String(pid), "-batch", "-nx", "-ex", "call (void) malloc_stats()", "-ex", "call (int) malloc_trim(0)"],
    { encoding: "utf8", timeout: 60_000 }
  )
  if (/signal|SIGSEGV|SIGABRT/.test(gdb.stdout ?? "")) log(`gdb: ${gdb.stdout.slice(-500)}`)
  if (gdb.status !== 0) {
    log(`gdb failed (${gdb.error?.message ?? `status ${gdb.status}`}): ${(gdb.stderr ?? "").slice(-300)}`)
    return undefined
  }
  for (let i = 0; i < 40 && !s.mallocLines.some((l) => l.startsWith("max mmap bytes")); i++) await sleep(50)
  const total = s.mallocLines.findIndex((l) => l.startsWith("Total"))
  const field = (name: string) => Number(/=\s*(\d+)/.exec(s.mallocLines.slice(total).find((l) => l.startsWith(name)) ?? "")?.[1])
  if (total < 0) return undefined
  return { inUse: field("in use bytes"), system: field("system bytes"), rssTrimmedKiB: procFigures(pid).rssKiB }
}

const checkpoints: Array<Checkpoint> = []

const checkpoint = async (label: string, clients: number): Promise<Checkpoint> => {
  const pid = server!.pid
  const raw: Sample = { ...procFigures(pid), usage: await probe("none") }
  await sleep(settings.settleMs)
  const usage = await probe("full")
  const settled: Sample = { ...procFigures(pid), usage }
  const reduced = await probe("reduce")
  const reducedRssKiB = procFigures(pid).rssKiB
  const malloc = settings.gdb ? await mallocFigures(pid) : undefined
  const c: Checkpoint = { label, clients, raw, settled, reducedRssKiB, malloc }
  checkpoints.push(c)
  log(
    `${label}: fds ${raw.fds} -> ${settled.fds}, RSS ${mib(raw.rssKiB * 1024)} -> ${mib(settled.rssKiB * 1024)} -> ${mib(reducedRssKiB * 1024)} MiB, ` +
      `V8 heap after GC ${mib(usage?.heapUsed)} MiB (in RAM ${mib(usage?.v8Physical)} -> ${mib(reduced?.v8Physical)}), external ${mib(usage?.external)} MiB` +
      (malloc === undefined ? "" : `, malloc in use ${mib(malloc.inUse)} of ${mib(malloc.system)} MiB, RSS after trim ${mib(malloc.rssTrimmedKiB * 1024)} MiB`)
  )
  return c
}

const stopServer = async (): Promise<string> => {
  const s = server
  if (s === undefined || s.exited) return "not running"
  s.stopping = true
  const exited = new Promise<string>((resolve) => s.child.once("exit", (code, signal) => resolve(`code ${code}, signal ${signal}`)))
  const t0 = Date.now()
  if (s.child.connected) s.child.send({ type: "soak:stop" })
  await sleep(100)
  s.child.kill("SIGTERM")
  if (await within(exited, 15_000)) return `${await exited} after SIGTERM in ${((Date.now() - t0) / 1000).toFixed(1)} s`
  s.child.kill("SIGKILL")
  await within(exited, 5_000)
  return "did not exit within 15 s of SIGTERM; killed"
}

// -----------------------------------------------------------------------------
// the load
// -----------------------------------------------------------------------------

const idleClients = new Set<Client>()
const churnClients = new Set<Client>()

const textPayload = (n: number): Buffer => {
  const unit = "échø ✓ 🌍 " // 1-, 2-, 3- and 4-byte UTF-8
  return Buffer.from(`${n}:${unit.repeat(Math.ceil(n / unit.length))}`.slice(0, n), "utf8")
}

/** What a churn connection sends; each one echoed and checked byte for byte, in order. */
const churnMessages = (): ReadonlyArray<Message> => [
  { opcode: Op.Text, data: textPayload(12) },
  { opcode: Op.Binary, data: Crypto.randomBytes(300) }, // 16-bit length
  { opcode: Op.Text, data: textPayload(3000) },
  { opcode: Op.Binary, data: Crypto.randomBytes(70_000) } // 64-bit length
]

/** Sends the messages, checks their echoes; true if all came back intact. */
const echo = async (client: Client, messages: ReadonlyArray<Message>, what: string): Promise<boolean> => {
  for (const m of messages) client.send(m.opcode, m.data)
  for (let i = 0; i < messages.length; i++) {
    const sent = messages[i]!
    const got = await client.next(STEP_TIMEOUT_MS)
    if (got === undefined) {
      problem("echoErrors", `${what}: message ${i} not echoed (${client.fault ?? (client.closed ? "closed" : "timeout")})`)
      return false
    }
    if (got.opcode !== sent.opcode || !got.data.equals(sent.data)) {
      problem("echoErrors", `${what}: message ${i} came back different (opcode ${got.opcode}, ${got.data.length} bytes)`)
      return false
    }
  }
  return true
}

const droppedHow = (client: Client): string =>
  client.closeCode !== undefined
    ? `the server closed it with ${client.closeCode}`
    : `the connection ended without a Close from the server${client.fault === undefined ? "" : ` (${client.fault})`}`

const closeCleanly = async (client: Client, what: string): Promise<void> => {
  const unclean = await client.close(STEP_TIMEOUT_MS)
  if (unclean !== undefined) problem("uncleanCloses", `${what}: ${unclean}`)
}

/** One churn connection: connect, echo text and binary, close cleanly. */
const churnOne = async (port: number, what: string): Promise<void> => {
  let client: Client
  try {
    client = await connect(port, STEP_TIMEOUT_MS)
  } catch (error) {
    problem("connectFailures", `${what}: ${error instanceof Error ? error.message : String(error)}`)
    return
  }
  churnClients.add(client)
  client.onDropped = () => problem("dropped", `${what}: ${droppedHow(client)}`)
  await echo(client, churnMessages(), what)
  await closeCleanly(client, what)
  churnClients.delete(client)
}

const churn = async (port: number, count: number, label: string): Promise<void> => {
  const t0 = Date.now()
  await pool(count, settings.concurrency, (i) => churnOne(port, `${label} #${i}`))
  const seconds = (Date.now() - t0) / 1000
  log(`${label}: ${count} connections in ${seconds.toFixed(1)} s (${(count / seconds).toFixed(0)}/s)`)
}

const openIdle = async (port: number): Promise<void> => {
  const t0 = Date.now()
  await pool(settings.idle, OPEN_CONCURRENCY, async (i) => {
    try {
      const client = await connect(port, STEP_TIMEOUT_MS)
      client.onDropped = (c) => {
        idleClients.delete(c)
        problem("dropped", `idle #${i}: ${droppedHow(c)}`)
      }
      idleClients.add(client)
    } catch (error) {
      problem("connectFailures", `idle #${i}: ${error instanceof Error ? error.message : String(error)}`)
    }
    if ((i + 1) % 2000 === 0) log(`  ${i + 1} idle connections opened`)
  })
  const seconds = (Date.now() - t0) / 1000
  log(`${idleClients.size} idle connections open in ${seconds.toFixed(1)} s`)
}

/** Each idle connection still works: one small echo on every one, then a clean close. */
const closeIdle = async (): Promise<void> => {
  const clients = [...idleClients]
  const t0 = Date.now()
  await pool(clients.length, CLOSE_CONCURRENCY, async (i) => {
    const client = clients[i]!
    await echo(client, [{ opcode: Op.Text, data: textPayload(20) }], `idle #${i} (liveness)`)
    await closeCleanly(client, `idle #${i}`)
    idleClients.delete(client)
  })
  log(`${clients.length} idle connections echoed once and closed in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
}

/** Waits (bounded) for the server's descriptors to come down to `target`. */
const drain = async (target: number): Promise<number> => {
  const t0 = Date.now()
  while (Date.now() - t0 < DRAIN_TIMEOUT_MS) {
    if (procFigures(server!.pid).fds <= target) break
    await sleep(250)
  }
  return (Date.now() - t0) / 1000
}

// -----------------------------------------------------------------------------
// report
// -----------------------------------------------------------------------------

const mib = (bytes: number | undefined): string => (bytes === undefined ? "?" : (bytes / 1024 / 1024).toFixed(1))
const signed = (n: number, digits: number): string => (n >= 0 ? "+" : "") + n.toFixed(digits)

const table = (rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)))
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ")).join("\n")
}

interface Cycle {
  readonly idle: Checkpoint
  readonly closed: Checkpoint
  readonly drainSeconds: number
}

const report = (baseline: Checkpoint, cycles: ReadonlyArray<Cycle>, serverExit: string): boolean => {
  const base = baseline.settled
  const gdb = checkpoints.some((c) => c.malloc !== undefined)
  const rows: Array<Array<string>> = [[
    "checkpoint", "clients", "fds", "fds set.", "Δfds", "RSS", "RSS gc", "RSS min", "ΔRSS min", "V8 heap", "Δheap",
    ...(gdb ? ["malloc", "RSS trim"] : [])
  ]]
  for (const c of checkpoints) {
    const s = c.settled
    rows.push([
      c.label,
      String(c.clients),
      String(c.raw.fds),
      String(s.fds),
      signed(s.fds - base.fds, 0),
      mib(c.raw.rssKiB * 1024),
      mib(s.rssKiB * 1024),
      mib(c.reducedRssKiB * 1024),
      signed((c.reducedRssKiB - baseline.reducedRssKiB) / 1024, 1),
      mib(s.usage?.heapUsed),
      s.usage && base.usage ? signed((s.usage.heapUsed - base.usage.heapUsed) / 1024 / 1024, 1) : "?",
      ...(gdb ? [mib(c.malloc?.inUse), mib(c.malloc === undefined ? undefined : c.malloc.rssTrimmedKiB * 1024)] : [])
    ])
  }
  console.log("")
  console.log(
    `soak: ${settings.cycles} cycle(s) of ${settings.idle} idle + ${settings.rounds} x ${settings.churn} churn ` +
      `(concurrency ${settings.concurrency}); warm-up ${settings.warmup}; idle held ${settings.holdMs / 1000} s; settle ${settings.settleMs / 1000} s`
  )
  console.log(
    "MiB. fds, RSS: at the checkpoint. fds set., RSS gc: after the settle and a full GC. RSS min: after a full GC that " +
      "also gives V8's pooled free pages back. V8 heap: heapUsed after the full GC. Δ: vs the baseline" +
      (gdb ? "; malloc = glibc bytes in use (malloc_stats); RSS trim = RSS after malloc_trim(0)" : "")
  )
  console.log("")
  console.log(table(rows))
  console.log("")
  const first = cycles[0]
  if (first !== undefined && first.idle.clients > 0) {
    const idle = first.idle.settled
    const n = first.idle.clients
    const heapPer = idle.usage && base.usage ? ((idle.usage.heapUsed - base.usage.heapUsed) / 1024 / n).toFixed(2) : "?"
    console.log(
      `per idle connection (cycle 1): RSS gc ${((idle.rssKiB - base.rssKiB) / n).toFixed(2)} KiB, ` +
        `RSS min ${((first.idle.reducedRssKiB - baseline.reducedRssKiB) / n).toFixed(2)} KiB, ` +
        `V8 heap ${heapPer} KiB, ${((idle.fds - base.fds) / n).toFixed(3)} fds`
    )
  }
  console.log(
    `descriptors back within ${cycles.map((c) => c.drainSeconds.toFixed(1)).join(", ")} s of each cycle's last close; ` +
      `Pings answered: ${pings}; server log lines: ${server?.lines ?? 0}; server shutdown: ${serverExit}`
  )
  const slackKiB = settings.rssSlackMiB * 1024
  const heapSlack = settings.heapSlackMiB * 1024 * 1024
  const checks: Array<[string, boolean]> = []
  for (const [i, c] of cycles.entries()) {
    const f = c.closed.settled
    const tag = cycles.length > 1 ? `cycle ${i + 1}: ` : ""
    checks.push([`${tag}fds ${f.fds} within baseline ${base.fds} ±${settings.fdSlack}`, Math.abs(f.fds - base.fds) <= settings.fdSlack])
    checks.push([
      `${tag}V8 heap after GC ${mib(f.usage?.heapUsed)} MiB <= baseline ${mib(base.usage?.heapUsed)} + ${settings.heapSlackMiB} MiB`,
      f.usage !== undefined && base.usage !== undefined && f.usage.heapUsed - base.usage.heapUsed <= heapSlack
    ])
    checks.push([
      `${tag}RSS min ${mib(c.closed.reducedRssKiB * 1024)} MiB <= baseline ${mib(baseline.reducedRssKiB * 1024)} + ${settings.rssSlackMiB} MiB`,
      c.closed.reducedRssKiB - baseline.reducedRssKiB <= slackKiB
    ])
    checks.push([`${tag}all ${settings.idle} idle connections opened and held (${c.idle.clients})`, c.idle.clients === settings.idle])
  }
  checks.push(
    [`connect failures: ${problems.connectFailures}`, problems.connectFailures === 0],
    [`echo errors: ${problems.echoErrors}`, problems.echoErrors === 0],
    [`unclean closes: ${problems.uncleanCloses}`, problems.uncleanCloses === 0],
    [`connections the server closed or dropped on its own: ${problems.dropped}`, problems.dropped === 0]
  )
  console.log("")
  for (const [what, ok] of checks) console.log(`${ok ? "PASS" : "FAIL"}  ${what}`)
  const last = cycles[cycles.length - 1]
  if (last !== undefined) {
    const m = last.closed.malloc
    console.log(
      `info  after everything closed: RSS gc ${signed((last.closed.settled.rssKiB - base.rssKiB) / 1024, 1)} MiB, ` +
        `RSS min ${signed((last.closed.reducedRssKiB - baseline.reducedRssKiB) / 1024, 1)} MiB over the baseline` +
        (m !== undefined && baseline.malloc !== undefined
          ? `; glibc in use ${signed((m.inUse - baseline.malloc.inUse) / 1024 / 1024, 1)} MiB, RSS after malloc_trim ${signed((m.rssTrimmedKiB - baseline.malloc.rssTrimmedKiB) / 1024, 1)} MiB`
          : "")
    )
  }
  if (problemSamples.length > 0) {
    console.log("\nfirst problems:")
    for (const p of problemSamples) console.log(`  ${p}`)
  }
  const pass = checks.every(([, ok]) => ok)
  console.log(`\nverdict: ${pass ? "PASS" : "FAIL"}`)
  return pass
}

// -----------------------------------------------------------------------------
// main
// -----------------------------------------------------------------------------

let aborting = false

const destroyClients = (): void => {
  for (const c of idleClients) c.socket.destroy()
  for (const c of churnClients) c.socket.destroy()
}

const abort = async (reason: string, code: number): Promise<never> => {
  if (!aborting) {
    aborting = true
    console.error(`\nsoak: ${reason}`)
    destroyClients()
    if (server !== undefined) {
      console.error(`server: ${await stopServer()}; its last lines:`)
      for (const line of server.tail) console.error(`  | ${line}`)
    }
    if (problemSamples.length > 0) console.error(`problems so far: ${JSON.stringify(problems)}\n  ${problemSamples.join("\n  ")}`)
    process.exit(code)
  }
  return new Promise<never>(() => {})
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const probeServer = Net.createServer()
    probeServer.once("error", reject)
    probeServer.listen({ host: "127.0.0.1", port: 0 }, () => {
      const address = probeServer.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      probeServer.close(() => resolve(port))
    })
  })

const main = async (): Promise<void> => {
  const port = settings.port !== 0 ? settings.port : await freePort()
  const s = await startServer(port)
  log(`server pid ${s.pid} on port ${port}, open-files limit ${openFilesLimit(s.pid)}; client limit ${openFilesLimit("self")}`)
  await checkpoint("start", 0)
  if (settings.warmup > 0) await churn(port, settings.warmup, "warm-up")
  const baseline = await checkpoint("baseline (warm)", 0)

  const cycles: Array<Cycle> = []
  for (let cycle = 1; cycle <= settings.cycles; cycle++) {
    const tag = settings.cycles > 1 ? `${cycle}: ` : ""
    await openIdle(port)
    if (settings.holdMs > 0) {
      const before = pings
      log(`holding them ${settings.holdMs / 1000} s (the server pings every 30 s by default)`)
      await sleep(settings.holdMs)
      log(`${pings - before} Pings from the server answered meanwhile`)
    }
    const idle = await checkpoint(`${tag}${settings.idle} idle`, idleClients.size)
    for (let round = 1; round <= settings.rounds; round++) {
      await churn(port, settings.churn, `${tag}churn round ${round}`)
      await checkpoint(`${tag}+ churn ${round} x ${settings.churn}`, idleClients.size)
    }
    await closeIdle()
    const drainSeconds = await drain(baseline.settled.fds + settings.fdSlack)
    const closed = await checkpoint(`${tag}all closed`, idleClients.size + churnClients.size)
    cycles.push({ idle, closed, drainSeconds })
  }

  const serverExit = await stopServer()
  process.exitCode = report(baseline, cycles, serverExit) ? 0 : 1
}

/** Descriptors this process needs: the idle connections, the churn in flight, and some to spare. */
const needed = settings.idle + settings.concurrency + 256
if (openFilesLimit("self") < needed) {
  // Raise this process's descriptor limit by running again under bash's ulimit.
  if (process.env.SOAK_REEXEC === "1") {
    console.error(`soak: ${needed} descriptors needed but the limit is ${openFilesLimit("self")} (hard limit too low?): lower SOAK_IDLE`)
    process.exit(2)
  }
  const child = ChildProcess.spawn("bash", ["-c", ULIMIT_EXEC, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, SOAK_REEXEC: "1" }
  })
  // Ctrl-C reaches the whole process group; the child cleans up and reports.
  process.on("SIGINT", () => {})
  process.on("SIGTERM", () => child.kill("SIGTERM"))
  child.on("exit", (code, signal) => process.exit(code ?? (signal === "SIGINT" ? 130 : 2)))
} else {
  process.once("SIGINT", () => void abort("interrupted", 130))
  process.once("SIGTERM", () => void abort("terminated", 143))
  process.on("exit", () => {
    if (server !== undefined && !server.exited) server.child.kill("SIGKILL")
  })
  const deadline = setTimeout(() => void abort(`not done within SOAK_TIMEOUT (${settings.timeoutMs / 1000} s)`, 2), settings.timeoutMs)
  main().then(
    () => clearTimeout(deadline),
    (error: unknown) => void abort(`failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}`, 2)
  )
}
