/**
 * examples/PubSub.ts as its users run it, in processes of its own, on a real
 * Redis: two headless Chromium pages on two server processes chat through
 * the example's page (what one types appears on the other), and `WORKERS=2`
 * serves one port from two worker processes whose rooms span both.
 *
 * @since 0.2.0
 */
import * as ChildProcess from "node:child_process"
import { once } from "node:events"
import type { Browser } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as BrowserSupport from "./support/Browser.ts"
import { RawClient } from "./support/RawClient.ts"
import * as RedisServer from "./support/RedisServer.ts"
import { until } from "./support/Wait.ts"

let redis: RedisServer.RedisServer
let browser: Browser

beforeAll(async () => {
  redis = await RedisServer.start()
  browser = await BrowserSupport.launch()
})

afterAll(async () => {
  RawClient.destroyAll()
  await browser?.close()
  await redis?.stop()
})

interface Example {
  readonly port: number
  readonly output: () => string
  readonly stop: () => Promise<readonly [number | null, string | null]>
}

/** Starts the example on a free port; resolves once `listening` lines have been logged `count` times. */
const example = async (env: Record<string, string>, count = 1): Promise<Example> => {
  const port = await RedisServer.freePort()
  const child = ChildProcess.spawn(process.execPath, [new URL("../examples/PubSub.ts", import.meta.url).pathname], {
    env: { ...process.env, PORT: String(port), ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout.on("data", (chunk) => (output += String(chunk)))
  child.stderr.on("data", (chunk) => (output += String(chunk)))
  const exited = once(child, "exit") as Promise<[number | null, string | null]>
  const listening = () => output.match(/worker \d+ listening on/g)?.length ?? 0
  try {
    await until(`${count} worker(s) listening`, () => listening() >= count || child.exitCode !== null, 20_000, () => output)
  } catch (error) {
    child.kill("SIGKILL")
    throw error
  }
  if (child.exitCode !== null) throw new Error(`the example exited: ${output}`)
  return {
    port,
    output: () => output,
    stop: async () => {
      child.kill("SIGTERM")
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
      const [code, signal] = await exited
      clearTimeout(timer)
      return [code, signal] as const
    }
  }
}

describe("examples/PubSub.ts", () => {
  it("two Chromium pages on two server processes sharing Redis: what one types appears on the other, both ways", async () => {
    const one = await example({ REDIS_URL: redis.url })
    const two = await example({ REDIS_URL: redis.url })
    try {
      const ada = await browser.newPage()
      const bob = await browser.newPage()
      const enter = async (page: typeof ada, port: number, name: string) => {
        await page.goto(`http://127.0.0.1:${port}/`)
        await page.fill("input[name=room]", "r1")
        await page.fill("input[name=name]", name)
        await page.click("#join button")
        await page.waitForSelector("#status:has-text('in room r1')")
      }
      await enter(ada, one.port, "ada")
      await enter(bob, two.port, "bob")
      // Both processes subscribe on Redis before anyone speaks (each while it has a local subscriber).
      await redis.untilNumsub("websock:topic:r1", 2)
      await ada.fill("input[name=text]", "hello from ada")
      await ada.press("input[name=text]", "Enter")
      await bob.waitForSelector("#log li:has-text('ada: hello from ada')", { timeout: 10_000 })
      await bob.fill("input[name=text]", "hi ada, bob here")
      await bob.press("input[name=text]", "Enter")
      await ada.waitForSelector("#log li:has-text('bob: hi ada, bob here')", { timeout: 10_000 })
      // Each line once on the other page, and one's own line shown once, locally.
      expect(await bob.locator("#log li").allTextContents()).toEqual(["ada: hello from ada", "bob: hi ada, bob here"])
      expect(await ada.locator("#log li").allTextContents()).toEqual(["ada: hello from ada", "bob: hi ada, bob here"])
      await ada.close()
      await bob.close()
    } finally {
      await one.stop()
      await two.stop()
    }
  })

  it("WORKERS=2 on one port: connections land on both workers, and a room spans them through Redis", async () => {
    const app = await example({ REDIS_URL: redis.url, WORKERS: "2" }, 2)
    try {
      const byWorker = new Map<string, RawClient>()
      for (let i = 0; i < 64 && byWorker.size < 2; i++) {
        const client = await RawClient.connect(app.port, { path: "/topic/span" })
        const worker = client.response.headers.get("x-websock-worker")!
        if (byWorker.has(worker)) client.destroy()
        else byWorker.set(worker, client)
      }
      expect(byWorker.size).toBe(2)
      const [first, second] = [...byWorker.values()]
      // Both workers subscribe to the room's channel on Redis.
      await redis.untilNumsub("websock:topic:span", 2)
      await first!.sendText("across")
      expect(await second!.expectText(5_000)).toBe("across")
      await second!.sendText("back across")
      expect(await first!.expectText(5_000)).toBe("back across")
    } finally {
      RawClient.destroyAll()
      const [code, signal] = await app.stop()
      expect({ code, signal }).toEqual({ code: 0, signal: null })
    }
  })
})
