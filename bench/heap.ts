/**
 * Where an idle connection's bytes go: starts an echo server as a child
 * (`--expose-gc`, this file preloaded as its agent), takes a V8 heap
 * snapshot after a full GC, opens N idle WebSocket connections, takes
 * another, and prints the self size per constructor (and per node type) per
 * connection, largest first, with the V8 heap used and RSS per connection.
 * It measures, it asserts nothing (not a test).
 *
 *     npm run bench:heap                                   # examples/EchoServer.ts, 2,000 connections
 *     HEAP_CONNS=5000 npm run bench:heap -- examples/EventsEchoServer.ts
 *     npm run bench:heap -- bench/peers/ws-echo.ts
 *     HEAP_SAMPLE=1 npm run bench:heap                     # also: what the burst allocated, garbage included, by function
 *
 * The server file must listen on `PORT` at path `/ws` (every echo peer
 * does). Snapshots are written to the OS temporary directory and removed.
 */
import * as ChildProcess from "node:child_process"
import * as Inspector from "node:inspector"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as V8 from "node:v8"

/** Agent side (preloaded into the server with `--import`): answers the runner's requests over IPC. */
const agent = (): void => {
  const gc = (globalThis as { gc?: () => void }).gc
  const session = new Inspector.Session()
  session.connect()
  const post = (method: string, params?: object) =>
    new Promise<any>((resolve, reject) => session.post(method, params ?? {}, (error, result) => error ? reject(error) : resolve(result)))
  process.on("message", async (message: { readonly op: string; readonly file?: string }) => {
    if (message.op === "sample") {
      // every allocation of the burst, garbage included: sampled by stack
      await post("HeapProfiler.enable")
      await post("HeapProfiler.startSampling", { samplingInterval: 512, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
      process.send!({ heapUsed: 0, rss: 0, file: undefined })
      return
    }
    if (message.op === "sampled") {
      const { profile } = await post("HeapProfiler.stopSampling")
      const sizes = new Map<string, number>()
      const walk = (node: any, path: string) => {
        const frame = node.callFrame
        const here = `${frame.functionName || "(anonymous)"} ${frame.url.split("/").slice(-2).join("/")}:${frame.lineNumber + 1}`
        // attribute to the innermost frame of our own code (src/), else to the innermost frame
        const own = frame.url.includes("/src/") ? here : process.env.HEAP_SAMPLE_DETAIL === "1" && path !== "" && !path.includes(" > ") ? `${path} > ${here}` : path
        sizes.set(own || here, (sizes.get(own || here) ?? 0) + node.selfSize)
        for (const child of node.children) walk(child, own)
      }
      walk(profile.head, "")
      process.send!({ heapUsed: 0, rss: 0, file: undefined, sizes: [...sizes].sort((a, b) => b[1] - a[1]).slice(0, 30) })
      return
    }
    if (message.op === "spaces") {
      // before any GC: what the burst left (committed and used per space)
      const spaces = V8.getHeapSpaceStatistics().map((s) => `${s.space_name} ${(s.space_size / 1048576).toFixed(1)}/${(s.space_used_size / 1048576).toFixed(1)}`)
      process.send!({ heapUsed: process.memoryUsage().heapUsed, rss: process.memoryUsage().rss, file: undefined, spaces })
      return
    }
    gc?.()
    gc?.()
    const heapUsed = process.memoryUsage().heapUsed
    const rss = process.memoryUsage().rss
    const file = message.op === "snapshot" && message.file !== undefined ? V8.writeHeapSnapshot(message.file) : undefined
    process.send!({ heapUsed, rss, file })
  })
}

interface Sample {
  readonly heapUsed: number
  readonly rss: number
  readonly file: string | undefined
}

/**
 * Self sizes by "type:name" in a snapshot (V8's format: flat `nodes` with
 * `node_fields`, `edges` with `edge_fields`). A plain `Object` is named by
 * its first property names, a closure by its function's name and source
 * line (`locations`), a V8 `Context` by the variables it holds: enough to
 * find the code that made them.
 */
const census = (file: string): Map<string, { count: number; size: number }> => {
  const snapshot = JSON.parse(Fs.readFileSync(file, "utf8")) as {
    snapshot: { meta: { node_fields: Array<string>; node_types: [Array<string>]; edge_fields: Array<string>; edge_types: [Array<string>]; location_fields?: Array<string> } }
    nodes: Array<number>
    edges: Array<number>
    locations?: Array<number>
    strings: Array<string>
  }
  const meta = snapshot.snapshot.meta
  const fields = meta.node_fields
  const types = meta.node_types[0]
  const width = fields.length
  const typeAt = fields.indexOf("type")
  const nameAt = fields.indexOf("name")
  const sizeAt = fields.indexOf("self_size")
  const edgesAt = fields.indexOf("edge_count")
  const edgeWidth = meta.edge_fields.length
  const edgeTypeAt = meta.edge_fields.indexOf("type")
  const edgeNameAt = meta.edge_fields.indexOf("name_or_index")
  const edgeTypes = meta.edge_types[0]
  const { nodes, edges, strings } = snapshot
  // the source line of each closure, by node offset
  const lines = new Map<number, string>()
  const locations = snapshot.locations ?? []
  const locationWidth = meta.location_fields?.length ?? 4
  for (let i = 0; i < locations.length; i += locationWidth) {
    lines.set(locations[i]!, `${locations[i + 1]}:${locations[i + 2]! + 1}`)
  }
  // arrays, strings and hidden objects are named by their first retainer (object and edge)
  const toAt = meta.edge_fields.indexOf("to_node")
  const owners = new Map<number, string>()
  {
    let e = 0
    for (let i = 0; i < nodes.length; i += width) {
      const ownerType = types[nodes[i + typeAt]!]!
      const ownerName = strings[nodes[i + nameAt]!]!
      const end = e + nodes[i + edgesAt]! * edgeWidth
      // a plain object's out-of-object properties are named by the object's own properties
      let props = ""
      if (ownerType === "object" && ownerName === "Object") {
        const seen: Array<string> = []
        for (let f = e; f < end && seen.length < 5; f += edgeWidth) {
          if (edgeTypes[edges[f + edgeTypeAt]!] === "property") seen.push(strings[edges[f + edgeNameAt]!]!)
        }
        props = ` {${seen.join(",")}}`
      }
      for (; e < end; e += edgeWidth) {
        const to = edges[e + toAt]!
        if (owners.has(to)) continue
        const toType = types[nodes[to + typeAt]!]!
        if (toType !== "array" && toType !== "string" && toType !== "hidden" && toType !== "sliced string") continue
        const kind = edgeTypes[edges[e + edgeTypeAt]!]!
        const edgeName = kind === "element" || kind === "hidden" ? `[${edges[e + edgeNameAt]}]` : strings[edges[e + edgeNameAt]!]!
        if (ownerType === "synthetic" || ownerName === "(GC roots)") continue
        owners.set(to, `< ${ownerType === "object" || ownerType === "closure" ? ownerName.slice(0, 30) : ownerType}${props}.${edgeName}`)
      }
    }
  }
  const out = new Map<string, { count: number; size: number }>()
  let edge = 0
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + typeAt]!]!
    let name = strings[nodes[i + nameAt]!]!
    const count = nodes[i + edgesAt]!
    const first = edge
    edge += count * edgeWidth
    const names = (kinds: ReadonlyArray<string>, max: number): string => {
      const seen: Array<string> = []
      for (let e = first; e < edge && seen.length < max; e += edgeWidth) {
        const kind = edgeTypes[edges[e + edgeTypeAt]!]!
        if (!kinds.includes(kind)) continue
        const n = strings[edges[e + edgeNameAt]!]!
        if (n === "map" || n === "__proto__" || n === "scope_info" || n === "previous" || n === "extension") continue
        seen.push(n)
      }
      return seen.join(",")
    }
    if (type === "closure") name = `${name || "(anonymous)"} @${lines.get(i) ?? "?"}`
    else if (type === "object" && name === "Object") name = `Object {${names(["property"], 6)}}`
    else if (type === "object" && name === "system / Context") name = `Context {${names(["context"], 6)}}`
    else if (type === "array" || type === "string" || type === "hidden" || type === "sliced string") name = owners.get(i) ?? ""
    else if (type !== "object" && type !== "native") name = ""
    if (name.length > 90) name = name.slice(0, 90) + "..."
    const key = `${type}:${name}`
    const entry = out.get(key) ?? { count: 0, size: 0 }
    entry.count++
    entry.size += nodes[i + sizeAt]!
    out.set(key, entry)
  }
  return out
}

const request = (port: number): string =>
  `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`

/** Opens `n` connections, a few hundred at a time, each upgraded (101 read) before it counts. */
const connectAll = async (port: number, n: number): Promise<Array<Net.Socket>> => {
  const sockets: Array<Net.Socket> = []
  const one = () =>
    new Promise<Net.Socket>((resolve, reject) => {
      const socket = Net.connect(port, "127.0.0.1", () => socket.write(request(port)))
      socket.once("data", (chunk) => {
        if (chunk.toString("latin1").startsWith("HTTP/1.1 101")) resolve(socket)
        else reject(new Error(`not upgraded: ${chunk.toString("latin1").split("\r\n")[0]}`))
      })
      socket.once("error", reject)
    })
  for (let i = 0; i < n; i += 200) {
    const batch = await Promise.all(Array.from({ length: Math.min(200, n - i) }, one))
    sockets.push(...batch)
  }
  return sockets
}

const main = async (): Promise<void> => {
  const file = process.argv[2] ?? "examples/EchoServer.ts"
  const n = Number(process.env.HEAP_CONNS ?? 2000)
  const top = Number(process.env.HEAP_TOP ?? 25)
  const port = 20000 + Math.floor(Math.random() * 20000)
  const self = new URL(import.meta.url).pathname
  // HEAP_NODE_ARGS: more Node/V8 flags for the server, e.g. "--max-semi-space-size=16"
  const extra = (process.env.HEAP_NODE_ARGS ?? "").split(" ").filter((a) => a.length > 0)
  const child = ChildProcess.spawn(process.execPath, ["--expose-gc", ...extra, "--import", self, file], {
    env: { ...process.env, PORT: String(port) },
    stdio: ["ignore", "ignore", "inherit", "ipc"]
  })
  const ask = (op: string, file?: string) =>
    new Promise<Sample>((resolve) => {
      child.once("message", (m) => resolve(m as Sample))
      child.send({ op, file })
    })
  try {
    // wait for the port
    for (let i = 0;; i++) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = Net.connect(port, "127.0.0.1", () => (s.destroy(), resolve(true)))
        s.once("error", () => resolve(false))
      })
      if (ok) break
      if (i > 600) throw new Error("the server did not listen")
      await new Promise((r) => setTimeout(r, 50))
    }
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "websock-heap-"))
    // one connection first: lazily built shared things (code, caches) are not per connection
    const warm = await connectAll(port, 50)
    await new Promise((r) => setTimeout(r, 300))
    const before = await ask("snapshot", Path.join(dir, "before.heapsnapshot"))
    const sampling = process.env.HEAP_SAMPLE === "1"
    if (sampling) await ask("sample")
    const sockets = await connectAll(port, n)
    await new Promise((r) => setTimeout(r, 500))
    if (sampling) {
      const { sizes } = await ask("sampled") as Sample & { readonly sizes: ReadonlyArray<[string, number]> }
      console.log("allocated during the burst, by the innermost frame in src/ (B/conn):")
      for (const [where, size] of sizes) console.log(`  ${(size / n).toFixed(0).padStart(6)}  ${where}`)
    }
    const burst = await ask("spaces") as Sample & { readonly spaces: ReadonlyArray<string> }
    const after = await ask("snapshot", Path.join(dir, "after.heapsnapshot"))
    const a = census(before.file!)
    const b = census(after.file!)
    Fs.rmSync(dir, { recursive: true, force: true })
    const rows: Array<{ key: string; count: number; size: number }> = []
    for (const [key, v] of b) {
      const old = a.get(key) ?? { count: 0, size: 0 }
      rows.push({ key, count: (v.count - old.count) / n, size: (v.size - old.size) / n })
    }
    rows.sort((x, y) => y.size - x.size)
    const total = rows.reduce((s, r) => s + r.size, 0)
    console.log(`${file}: ${n} idle connections`)
    console.log(`heap used: ${((after.heapUsed - before.heapUsed) / n).toFixed(0)} B/conn; snapshot self sizes: ${total.toFixed(0)} B/conn; RSS: ${((after.rss - before.rss) / n / 1024).toFixed(1)} KiB/conn`)
    console.log(`before a GC: RSS ${((burst.rss - before.rss) / n / 1024).toFixed(1)} KiB/conn; heap used ${((burst.heapUsed - before.heapUsed) / n).toFixed(0)} B/conn; spaces (MiB committed/used): ${burst.spaces.join(", ")}`)
    console.log("")
    console.log("| type:constructor | objects/conn | bytes/conn |")
    console.log("|---|---:|---:|")
    for (const r of rows.slice(0, top)) console.log(`| ${r.key} | ${r.count.toFixed(2)} | ${r.size.toFixed(0)} |`)
    const byType = new Map<string, number>()
    for (const r of rows) {
      const type = r.key.split(":")[0]!
      byType.set(type, (byType.get(type) ?? 0) + r.size)
    }
    console.log("")
    console.log("by node type: " + [...byType].sort((x, y) => y[1] - x[1]).map(([t, s]) => `${t} ${s.toFixed(0)}`).join(", "))
    for (const s of [...warm, ...sockets]) s.destroy()
  } finally {
    child.kill("SIGKILL")
  }
}

if (import.meta.main) await main()
else agent()
