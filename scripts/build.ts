/**
 * `npm run build`: compiles src/ into dist/ (ESM JavaScript, `.d.ts`, and
 * source maps for both) with tsconfig.build.json.
 *
 * dist/ is emptied first, so that a module removed from src/ does not linger
 * in the package. tsc rewrites the `.ts` extensions of relative imports to
 * `.js` in the JavaScript (`rewriteRelativeImportExtensions`) but keeps them
 * in the declarations; the last step rewrites those too, so that the `.d.ts`
 * files name the files that sit beside them and resolve under any
 * `moduleResolution` and any TypeScript version.
 *
 *     npm run build
 *
 * @since 0.1.0
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"

const root = Path.resolve(import.meta.dirname, "..")
const dist = Path.join(root, "dist")

Fs.rmSync(dist, { recursive: true, force: true })

const tsc = ChildProcess.spawnSync(
  process.execPath,
  [Path.join(root, "node_modules", "typescript", "bin", "tsc"), "-p", Path.join(root, "tsconfig.build.json")],
  { stdio: "inherit" }
)
if (tsc.status !== 0) {
  console.error(`build: tsc failed (${tsc.status ?? tsc.signal})`)
  process.exit(1)
}

// `from "./X.ts"`, `import("../X.ts")`, `declare module "./X.ts"`: relative specifiers only.
const relativeTs = /(["'])(\.\.?\/[^"'\n]*?)\.ts\1/g
let rewritten = 0
for (const entry of Fs.readdirSync(dist, { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || !entry.name.endsWith(".d.ts")) continue
  const file = Path.join(entry.parentPath, entry.name)
  const text = Fs.readFileSync(file, "utf8")
  const fixed = text.replace(relativeTs, (_, quote: string, path: string) => `${quote}${path}.js${quote}`)
  if (fixed !== text) {
    Fs.writeFileSync(file, fixed)
    rewritten++
  }
}
console.log(`build: dist/ written (${rewritten} declaration files with their imports rewritten to .js)`)
