/**
 * The package as its users get it (issue 11). `npm pack` the tarball (dist/
 * must be built: `npm test` builds it first), install it into scratch
 * projects under the OS temp directory, outside this repository, with
 * nothing but its peer dependencies (at the versions of our lockfile, from
 * the npm cache that `npm ci` filled), and use it there as a user would:
 *
 * - the tarball holds dist/, src/ (for the source maps), README, LICENSE and
 *   package.json, and nothing of test/, bench/, scripts/, .ci/, examples/;
 * - plain JavaScript on the pinned Node starts a server on a free port and
 *   echoes a message through Node's built-in `WebSocket` client; every
 *   exported module loads; nothing under internal/ (nor dist/ or src/ by
 *   path) can be imported;
 * - a TypeScript file type-checks against the installed declarations with
 *   `moduleResolution` `NodeNext` and with `Bundler`;
 * - the README's install line and quick start, copied into a project of
 *   their own, type-check and run unchanged, and the server they start
 *   echoes.
 *
 * The first block checks, without packing, that package.json exports every
 * public module (each file src/X.ts as `websock/X`) and that src/index.ts
 * re-exports them.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

const root = Path.resolve(import.meta.dirname, "..")
const readJson = (file: string): any => JSON.parse(Fs.readFileSync(file, "utf8"))
const pkg = readJson(Path.join(root, "package.json"))
const lock = readJson(Path.join(root, "package-lock.json"))
const tsc = Path.join(root, "node_modules", "typescript", "bin", "tsc")

/** The public modules: every file src/X.ts but index.ts (src/internal/ is not public). */
const publicModules = Fs.readdirSync(Path.join(root, "src"), { withFileTypes: true })
  .filter((entry) => entry.isFile() && entry.name.endsWith(".ts") && entry.name !== "index.ts")
  .map((entry) => entry.name.slice(0, -".ts".length))
  .sort()

/** Modules that need an optional peer dependency, and so stay out of the index. */
const notInIndex = new Set(["NodeHttpServer", "RedisTopics", "testing"])

/** The specifiers a user can import: "websock", "websock/Server", ... */
const specifiers = ["websock", ...publicModules.map((name) => `websock/${name}`)]

describe("package.json", () => {
  it("exports each public module src/X.ts as ./X with types and default, and nothing under internal/", () => {
    const expected: Record<string, unknown> = {
      "./package.json": "./package.json",
      ".": { types: "./dist/index.d.ts", default: "./dist/index.js" }
    }
    for (const name of publicModules) {
      expected[`./${name}`] = { types: `./dist/${name}.d.ts`, default: `./dist/${name}.js` }
    }
    expected["./internal/*"] = null
    expect(pkg.exports).toEqual(expected)
    // Conditions are matched in order: `types` must come before `default`.
    for (const [key, value] of Object.entries(pkg.exports)) {
      if (value !== null && typeof value === "object") expect(Object.keys(value), key).toEqual(["types", "default"])
    }
  })

  it("src/index.ts re-exports every public module but those that need an optional peer", () => {
    const index = Fs.readFileSync(Path.join(root, "src", "index.ts"), "utf8")
    const reexported = [...index.matchAll(/^export \* as (\w+) from "\.\/(\w+)\.ts"$/gm)].map(([, alias, file]) => {
      expect(alias).toBe(file)
      return file
    })
    expect(reexported.sort()).toEqual(publicModules.filter((name) => !notInIndex.has(name)))
    expect(index).not.toMatch(/from "\.\/internal\//)
  })

  it("declares effect (and, optional, fast-check for websock/testing, @effect/platform-node for websock/NodeHttpServer and websock/RedisTopics, redis for websock/RedisTopics) as peers, never as dependencies", () => {
    expect(pkg.dependencies ?? {}).toEqual({})
    expect(pkg.peerDependencies).toEqual({ "@effect/platform-node": "~4.1.0", effect: "^4.1.0", "fast-check": "^4.0.0", redis: ">=5.0.0 <7.0.0" })
    expect(pkg.peerDependenciesMeta).toEqual({
      "@effect/platform-node": { optional: true },
      "fast-check": { optional: true },
      redis: { optional: true }
    })
    for (const name of Object.keys(pkg.peerDependencies)) expect(pkg.devDependencies[name], name).toBeDefined()
    expect(pkg.files.sort()).toEqual(["LICENSE", "README.md", "dist/", "src/"])
  })
})

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * npm's own variables of the `npm test` that runs us (npm_config_local_prefix
 * above all, which would make npm install into this repository) must not
 * reach the npm we run in a scratch project; the user's npm configuration and
 * cache do.
 */
const keep = new Set(["npm_config_cache", "npm_config_userconfig", "npm_config_globalconfig", "npm_config_registry"])
const env: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([name]) =>
    !(name.toLowerCase().startsWith("npm_") && !keep.has(name.toLowerCase())) && name !== "INIT_CWD"
  )
)

const run = (command: string, args: ReadonlyArray<string>, cwd: string, timeout = 120_000): Promise<Result> =>
  new Promise((resolve, reject) => {
    const child = ChildProcess.spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"], timeout })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })

/** Runs and expects exit 0, else fails with what the command printed. */
const ok = async (command: string, args: ReadonlyArray<string>, cwd: string): Promise<Result> => {
  const result = await run(command, args, cwd)
  if (result.code !== 0) {
    throw new Error(
      `${[command, ...args].join(" ")} (in ${cwd}) exited ${result.code}\n${result.stdout}\n${result.stderr}`
    )
  }
  return result
}

/** The version of a package in our lockfile: the user gets what we test with. */
const lockedVersion = (name: string): string => {
  const version = lock.packages?.[`node_modules/${name}`]?.version
  if (typeof version !== "string") throw new Error(`${name} is not in package-lock.json`)
  return version
}

// ---------------------------------------------------------------------------
// The README
// ---------------------------------------------------------------------------

const readme = Fs.readFileSync(Path.join(root, "README.md"), "utf8")

/** The body of the first fenced block of `language` in the section `## heading`. */
const readmeBlock = (heading: string, language: string): string => {
  const start = readme.indexOf(`\n## ${heading}\n`)
  if (start < 0) throw new Error(`README.md has no "## ${heading}" section`)
  const rest = readme.slice(start + heading.length + 5)
  const section = rest.slice(0, rest.search(/\n## |$/))
  const block = section.match(new RegExp("```" + language + "\\n([\\s\\S]*?)```"))
  if (block === null) throw new Error(`README.md's "${heading}" section has no \`\`\`${language} block`)
  return block[1]
}

/** The packages of the README's install line (`npm install websock effect`). */
const readmeInstall = (): ReadonlyArray<string> => {
  const line = readmeBlock("Install", "sh").split("\n").find((l) => l.startsWith("npm install "))
  if (line === undefined) throw new Error("README.md's Install section has no `npm install` line")
  return line.slice("npm install ".length).trim().split(/\s+/).filter((word) => !word.startsWith("-"))
}

// ---------------------------------------------------------------------------
// What runs in the scratch projects
// ---------------------------------------------------------------------------

/** The plain JavaScript user: echo, every export, nothing internal. */
const consumerJs = (internal: ReadonlyArray<string>): string => `
import { Effect, Stream } from "effect"
import * as Server from "websock/Server"

const echo = Effect.gen(function*() {
  const server = yield* Server.make({
    port: 0,
    host: "127.0.0.1",
    routes: { "/echo": (ws) => ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch))) }
  })
  return yield* Effect.promise(() => new Promise((resolve, reject) => {
    const client = new WebSocket("ws://127.0.0.1:" + server.address.port + "/echo")
    client.onopen = () => client.send("hello, websock")
    client.onmessage = (event) => {
      resolve(event.data)
      client.close()
    }
    client.onerror = (event) => reject(event.error ?? new Error("WebSocket error"))
  }))
}).pipe(Effect.scoped, Effect.timeout("10 seconds"))

const reply = await Effect.runPromise(echo)

const exports = {}
for (const specifier of ${JSON.stringify(specifiers)}) {
  exports[specifier] = Object.keys(await import(specifier)).length
}

const internal = {}
for (const specifier of ${JSON.stringify(internal)}) {
  internal[specifier] = await import(specifier).then(() => "imported", (error) => error.code)
}

console.log(JSON.stringify({ node: process.version, reply, exports, internal }))
`

/** The TypeScript user: every module's types, a typed program, internal/ unresolvable. */
const consumerTs = `
import { Effect, Stream } from "effect"
import type * as Scope from "effect/Scope"
import * as fc from "fast-check"
import * as Websock from "websock"
import type * as Errors from "websock/Errors"
import * as Frame from "websock/Frame"
import * as Server from "websock/Server"
import * as Testing from "websock/testing"
import type * as WebSocket from "websock/WebSocket"
${publicModules.map((name) => `import * as All_${name} from "websock/${name}"`).join("\n")}
// @ts-expect-error internal modules are not part of the package's API
import * as Internal from "websock/internal/x"

const echo = (ws: WebSocket.WebSocket) => ws.messages.pipe(Stream.runForEachArray((batch) => ws.sendAll(batch)))

export const running: Effect.Effect<Server.RunningServer, Errors.ServerError, Scope.Scope> = Server.make({
  port: 0,
  routes: { "/echo": echo },
  compression: { threshold: 256 }
})
export const port: Effect.Effect<number, Errors.ServerError> = Effect.scoped(
  Effect.map(running, (server) => server.address.port)
)
export const sameMake: typeof Server.make = Websock.Server.make
export const text: number = Frame.Opcode.Text
export const frames: fc.Arbitrary<ReadonlyArray<unknown>> = Testing.frames()
export const all = [${publicModules.map((name) => `All_${name}`).join(", ")}]
export const internal: unknown = Internal

// A declaration file that failed to resolve would make its types \`any\`.
type IsAny<T> = 0 extends 1 & T ? true : false
export const notAny: [IsAny<Server.RunningServer>, IsAny<WebSocket.WebSocket>, IsAny<Errors.WebSocketError>] = [
  false,
  false,
  false
]
// @ts-expect-error a port is a number
export const wrong: Effect.Effect<string, Errors.ServerError> = port
`

const tsconfig = (resolution: "NodeNext" | "Bundler", files: ReadonlyArray<string>): string =>
  JSON.stringify(
    {
      compilerOptions: {
        target: "ES2023",
        lib: ["ES2023"],
        module: resolution === "NodeNext" ? "NodeNext" : "Preserve",
        moduleResolution: resolution,
        // Our @types/node: the scratch projects install nothing but the package and its peers.
        typeRoots: [Path.join(root, "node_modules", "@types")],
        types: ["node"],
        strict: true,
        noEmit: true,
        skipLibCheck: true
      },
      files
    },
    null,
    2
  )

/** Relative specifiers (`from "./X.js"`, `import("../X.js")`) in a JavaScript or declaration file. */
const relativeSpecifiers = (text: string): ReadonlyArray<string> =>
  [...text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)(["'])(\.\.?\/[^"']+)\1/g)].map((match) => match[2])

const listFiles = (dir: string): ReadonlyArray<string> =>
  Fs.readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => Path.relative(dir, Path.join(entry.parentPath, entry.name)).split(Path.sep).join("/"))

const portIsFree = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const probe = Net.createServer()
    probe.once("error", () => resolve(false))
    probe.listen(port, () => probe.close(() => resolve(true)))
  })

/** Connects to `url` until it answers (or `deadline`), sends `message`, resolves with the reply. */
const echoThrough = async (url: string, message: string, deadline: number, exited: () => string | undefined) => {
  for (;;) {
    const exit = exited()
    if (exit !== undefined) throw new Error(`the quick start exited before it answered: ${exit}`)
    try {
      return await new Promise<unknown>((resolve, reject) => {
        const client = new WebSocket(url)
        const timer = setTimeout(() => {
          client.close()
          reject(new Error("no reply"))
        }, 5_000)
        client.onopen = () => client.send(message)
        client.onmessage = (event) => {
          clearTimeout(timer)
          resolve(event.data)
          client.close()
        }
        client.onerror = () => {
          clearTimeout(timer)
          reject(new Error(`could not connect to ${url}`))
        }
      })
    } catch (error) {
      if (Date.now() > deadline) throw error
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/** Each check spawns a process (node, tsc) that competes for the 2 cores with the other test files. */
const timeout = 120_000

describe.concurrent("the packed tarball, installed in projects of its own", () => {
  let scratch = ""
  let consumer = ""
  let quickstart = ""
  let tarballFiles: ReadonlyArray<string> = []
  let installed = ""

  beforeAll(async () => {
    // Pack what is built; a dist/ older than src/ would test stale code.
    const dist = Path.join(root, "dist")
    if (!Fs.existsSync(Path.join(dist, "index.js"))) {
      throw new Error("dist/ is not built: run `npm run build` first (`npm test` does)")
    }
    for (const file of listFiles(Path.join(root, "src"))) {
      const built = Path.join(dist, file.replace(/\.ts$/, ".js"))
      if (!Fs.existsSync(built) || Fs.statSync(built).mtimeMs < Fs.statSync(Path.join(root, "src", file)).mtimeMs) {
        throw new Error(`dist/ is older than src/${file}: run \`npm run build\` first (\`npm test\` does)`)
      }
    }

    scratch = Fs.mkdtempSync(Path.join(Os.tmpdir(), "websock-package-"))
    const packed = await ok("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", scratch], root)
    const [info] = JSON.parse(packed.stdout)
    tarballFiles = info.files.map((file: { path: string }) => file.path)
    const tarball = Path.join(scratch, info.filename)

    const project = async (name: string, packages: ReadonlyArray<string>): Promise<string> => {
      const dir = Path.join(scratch, name)
      Fs.mkdirSync(dir)
      Fs.writeFileSync(
        Path.join(dir, "package.json"),
        JSON.stringify({ name: `websock-${name}`, private: true, type: "module" })
      )
      await ok("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", ...packages], dir)
      return dir
    }
    const pinned = (name: string) => name === pkg.name ? tarball : `${name}@${lockedVersion(name)}`
    // The package and its peers, the optional ones included (websock/testing, websock/NodeHttpServer).
    const peers = Object.keys(pkg.peerDependencies)
    // What the README says to install, for its quick start.
    const readmePackages = readmeInstall()
    ;[consumer, quickstart] = await Promise.all([
      project("consumer", [pkg.name, ...peers].map(pinned)),
      project("quickstart", readmePackages.map(pinned))
    ])
    installed = Path.join(consumer, "node_modules", pkg.name)
  }, 180_000)

  afterAll(() => {
    if (scratch !== "") Fs.rmSync(scratch, { recursive: true, force: true })
  })

  it("holds dist/, src/, README, LICENSE and package.json: no tests, benchmarks, scripts, CI or examples", () => {
    for (const file of tarballFiles) {
      expect(file, file).toMatch(/^(dist\/|src\/|README\.md$|LICENSE$|package\.json$)/)
      expect(file, file).not.toMatch(/(^|\/)(test|bench|scripts|\.ci|examples)\//)
      expect(file, file).not.toMatch(/\.test\.|\.tgz$|tsbuildinfo/)
    }
    for (const name of ["index", ...publicModules]) {
      for (const ext of [".js", ".js.map", ".d.ts", ".d.ts.map"]) expect(tarballFiles).toContain(`dist/${name}${ext}`)
      expect(tarballFiles).toContain(`src/${name}.ts`)
    }
    expect(tarballFiles).toEqual(expect.arrayContaining(["README.md", "LICENSE", "package.json"]))
    // Nothing built from a source that is gone.
    for (const file of tarballFiles.filter((f) => f.startsWith("dist/"))) {
      expect(tarballFiles, file).toContain(file.replace(/^dist\//, "src/").replace(/\.(js|d\.ts)(\.map)?$/, ".ts"))
    }
    // The installed package is what was packed, and every relative import in it resolves.
    expect([...listFiles(installed)].sort()).toEqual([...tarballFiles].sort())
    for (const file of listFiles(installed).filter((f) => /\.(js|d\.ts)$/.test(f))) {
      for (const specifier of relativeSpecifiers(Fs.readFileSync(Path.join(installed, file), "utf8"))) {
        expect(specifier, `${file} imports ${specifier}`).toMatch(/\.js$/)
        expect(Fs.existsSync(Path.join(installed, Path.dirname(file), specifier)), `${file} imports ${specifier}`)
          .toBe(true)
      }
    }
  })

  it("runs from plain JavaScript on the pinned Node: echoes through Node's WebSocket client, loads every export, refuses internal/", async () => {
    // Every built internal module, by its path with and without extension, and the files themselves by path.
    const internal = [
      "websock/internal/x",
      ...listFiles(installed)
        .filter((file) => file.startsWith("dist/internal/") && file.endsWith(".js"))
        .flatMap((file) => {
          const name = file.slice("dist/internal/".length)
          return [`websock/internal/${name.slice(0, -3)}`, `websock/internal/${name}`]
        }),
      "websock/dist/index.js",
      "websock/dist/Server.js",
      "websock/src/index.ts"
    ]
    // Node 24 has the global WebSocket client; `npm test` runs us on the pinned one (a bare `vitest` may not).
    expect(Number(process.versions.node.split(".")[0]), "the pinned Node 24 (run through npm test)")
      .toBeGreaterThanOrEqual(24)
    Fs.writeFileSync(Path.join(consumer, "consumer.mjs"), consumerJs(internal))
    const { stdout } = await ok(process.execPath, ["consumer.mjs"], consumer)
    const result = JSON.parse(stdout.trim().split("\n").at(-1)!)
    expect(result.node).toBe(process.version)
    expect(result.reply).toBe("hello, websock")
    for (const specifier of specifiers) {
      // websock/WebSocket holds types only (the handle's interface): it loads, with no values.
      if (specifier === "websock/WebSocket") expect(result.exports[specifier], specifier).toBe(0)
      else expect(result.exports[specifier], specifier).toBeGreaterThan(0)
    }
    for (const specifier of internal) {
      expect(result.internal[specifier], specifier).toBe("ERR_PACKAGE_PATH_NOT_EXPORTED")
    }
  }, timeout)

  for (const resolution of ["NodeNext", "Bundler"] as const) {
    it(`type-checks a TypeScript user of every module with moduleResolution ${resolution}`, async () => {
      const file = `consumer.${resolution}.ts`
      Fs.writeFileSync(Path.join(consumer, file), consumerTs)
      Fs.writeFileSync(Path.join(consumer, `tsconfig.${resolution}.json`), tsconfig(resolution, [file]))
      await ok(process.execPath, [tsc, "-p", `tsconfig.${resolution}.json`], consumer)
    }, timeout)
  }

  it("the README quick start, in a project that ran the README's install line, type-checks and runs unchanged", async (context) => {
    const code = readmeBlock("Quick start", "ts")
    // Whatever the quick start imports, the install line must have installed.
    const imported = [...code.matchAll(/from "([^"./][^"]*)"/g)].map(([, specifier]) =>
      specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0]
    )
    for (const name of imported) expect(readmeInstall(), `the quick start imports ${name}`).toContain(name)

    Fs.writeFileSync(Path.join(quickstart, "main.ts"), code)
    Fs.writeFileSync(Path.join(quickstart, "tsconfig.json"), tsconfig("NodeNext", ["main.ts"]))
    await ok(process.execPath, [tsc, "-p", "tsconfig.json"], quickstart)

    const url = code.match(/ws:\/\/[\w.-]+:(\d+)\/[^\s"'`]*/)
    if (url === null) throw new Error("the quick start names no ws:// URL to connect to")
    if (!(await portIsFree(Number(url[1])))) {
      console.warn(`port ${url[1]} is taken: the quick start was type-checked but not run`)
      return context.skip()
    }
    // Node runs the TypeScript file as it is (type stripping).
    const child = ChildProcess.spawn(process.execPath, ["main.ts"], { cwd: quickstart, env, stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    let exit: string | undefined
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk))
    child.on("exit", (code, signal) => (exit = `${code ?? signal}\n${output}`))
    try {
      const reply = await echoThrough(url[0], "hello, quick start", Date.now() + 20_000, () => exit)
      expect(reply).toBe("hello, quick start")
    } finally {
      if (exit === undefined) {
        const exited = new Promise((resolve) => child.once("exit", resolve))
        child.kill("SIGTERM")
        await exited
      }
    }
  }, timeout)
})
