/**
 * A real Redis server for tests: Debian's `redis-server` (installed by
 * `.ci/run` when missing), started on a free loopback port with no
 * persistence, and stopped (or stopped and started again on the same port,
 * to test reconnects) by the test. A test that needs it fails when it cannot
 * start; it never skips.
 *
 * @since 0.2.0
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as net from "node:net"
import { createClient } from "redis"
import { until } from "./Wait.ts"

/**
 * A free TCP port on 127.0.0.1 (bound, read, released).
 *
 * @since 0.2.0
 */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const probe = net.createServer()
    probe.once("error", reject)
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address()
      probe.close(() => typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port")))
    })
  })

/**
 * @since 0.2.0
 */
export interface RedisServer {
  readonly port: number
  readonly url: string
  /** Stops the server (SIGTERM) and waits for it to exit. */
  readonly stop: () => Promise<void>
  /** Starts it again on the same port (after `stop`). */
  readonly restart: () => Promise<void>
  /** `PUBSUB NUMSUB channel`: how many connections subscribe to a channel. */
  readonly numsub: (channel: string) => Promise<number>
  /** Waits until `numsub(channel)` is `n` (asked again at every answer). */
  readonly untilNumsub: (channel: string, n: number, timeout?: number) => Promise<void>
}

const launch = (port: number): Promise<ChildProcess> =>
  new Promise((resolve, reject) => {
    const child = spawn("redis-server", [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--loglevel",
      "notice"
    ], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    const onData = (chunk: Buffer) => {
      out += chunk.toString()
      if (out.includes("Ready to accept connections")) {
        child.stdout!.off("data", onData)
        child.stdout!.resume()
        resolve(child)
      }
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", (chunk: Buffer) => (out += chunk.toString()))
    child.once("error", (error) => reject(new Error(`redis-server could not start (is it installed? .ci/run installs it): ${error.message}`)))
    child.once("exit", (code) => reject(new Error(`redis-server exited with ${code} before it was ready:\n${out}`)))
  })

const exit = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGTERM")
  })

/**
 * Starts a Redis server on a free port.
 *
 * @since 0.2.0
 */
export const start = async (): Promise<RedisServer> => {
  const port = await freePort()
  let child: ChildProcess | undefined = await launch(port)
  const url = `redis://127.0.0.1:${port}`
  /** The test's own client, for NUMSUB (made on first use, reconnecting after a restart). */
  let probe: ReturnType<typeof createClient> | undefined = undefined
  const numsub = async (channel: string): Promise<number> => {
    if (probe === undefined) {
      probe = createClient({ url, socket: { reconnectStrategy: () => 50 } })
      probe.on("error", () => {})
      await probe.connect()
    }
    const reply = (await probe.sendCommand(["PUBSUB", "NUMSUB", channel])) as Array<unknown>
    return Number(reply[1])
  }
  const untilNumsub = (channel: string, n: number, timeout = 10_000): Promise<void> => {
    let last = -1
    let asking = false
    return until(`PUBSUB NUMSUB ${channel} = ${n}`, () => {
      if (!asking) {
        asking = true
        numsub(channel).then((x) => (last = x), () => {}).finally(() => (asking = false))
      }
      return last === n
    }, timeout, () => `last answer ${last}`)
  }
  return {
    port,
    url,
    numsub,
    untilNumsub,
    stop: async () => {
      probe?.destroy()
      probe = undefined
      if (child !== undefined) await exit(child)
      child = undefined
    },
    restart: async () => {
      if (child !== undefined) await exit(child)
      child = await launch(port)
    }
  }
}
