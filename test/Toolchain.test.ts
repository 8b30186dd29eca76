import { describe, expect, it } from "vitest"

describe("toolchain", () => {
  it("runs on the pinned Node 24 toolchain, not the machine's Node 20", () => {
    // The `node` devDependency puts a Node 24 binary first on PATH for npm scripts.
    console.log(`tests running on Node ${process.version}`)
    const major = Number(process.versions.node.split(".")[0])
    expect(major).toBeGreaterThanOrEqual(24)
  })
})
