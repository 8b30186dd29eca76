/**
 * `websock.message.size`, kept the cheap way (src/internal/metrics.ts): the
 * bucket index computed with `Math.clz32` agrees with a search of the bounds
 * for every size, and over real sockets the histogram's buckets, count, sum,
 * min and max (count and sum taken from the message and byte counters) are
 * those of the messages exchanged, in both directions.
 */
import * as fc from "fast-check"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import { afterEach, describe, expect, it } from "vitest"
import { sizeBucket } from "../src/internal/metrics.ts"
import * as Server from "../src/Server.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"
import { until } from "./support/Wait.ts"

afterEach(() => RawClient.destroyAll())

/** The bounds of `websock.message.size` (README: 64 B to 16 MiB, powers of 4). */
const BOUNDS = [64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216]

/** The first bucket whose upper bound holds `size`, by search (BOUNDS.length: above them all). */
const searched = (size: number): number => {
  let i = 0
  while (i < BOUNDS.length && size > BOUNDS[i]!) i++
  return i
}

describe("websock.message.size", () => {
  it("puts every size in the bucket a search of the bounds finds", () => {
    for (const bound of BOUNDS) {
      for (const size of [bound - 1, bound, bound + 1]) expect(sizeBucket(size)).toBe(searched(size))
    }
    for (const size of [0, 1, 2, 2 ** 31, 2 ** 32, 2 ** 32 + 1, 2 ** 53 - 1]) expect(sizeBucket(size)).toBe(searched(size))
    fc.assert(
      fc.property(fc.oneof(fc.nat({ max: 2 ** 25 }), fc.maxSafeNat()), (size) => {
        expect(sizeBucket(size)).toBe(searched(size))
      }),
      { numRuns: 10_000 }
    )
  })

  it("counts the sizes of the messages received and sent, with count, sum, min and max", async () => {
    const registry: Metric.MetricRegistry = new Map()
    const scope = Scope.makeUnsafe()
    const server = await Effect.runPromise(
      Server.make({ ...TestServer.testDefaults, routes: { "/ws": TestServer.echo } }).pipe(
        Scope.provide(scope),
        Effect.provideService(Metric.MetricRegistry, registry),
        Effect.provideService(References.MinimumLogLevel, "None")
      )
    )
    const context = Context.make(Metric.MetricRegistry, registry)
    const histogram = (direction: string): Metric.HistogramState => {
      const found = Metric.snapshotUnsafe(context).filter((s) =>
        s.id === "websock.message.size" && (s.attributes as Record<string, string>)["network.io.direction"] === direction
      )
      expect(found).toHaveLength(1)
      return found[0]!.state as Metric.HistogramState
    }
    try {
      const empty = histogram("receive")
      expect(empty.count).toBe(0)
      expect(empty.sum).toBe(0)
      const sizes = [3, 64, 65, 300, 1024, 5000, 70_000]
      const client = await RawClient.connect(server.address.port)
      for (const [i, size] of sizes.entries()) {
        if (i % 2 === 0) {
          await client.sendBinary(new Uint8Array(size).fill(7))
          expect(await client.expectBinary()).toHaveLength(size)
        } else {
          await client.sendText("a".repeat(size))
          expect(await client.expectText()).toHaveLength(size)
        }
      }
      await until("all echoes counted", () => histogram("transmit").count === sizes.length)
      for (const direction of ["receive", "transmit"]) {
        const state = histogram(direction)
        expect(state.count).toBe(sizes.length)
        expect(state.sum).toBe(sizes.reduce((a, b) => a + b, 0))
        expect(state.min).toBe(3)
        expect(state.max).toBe(70_000)
        // Cumulative: <= 64: 3 and 64; <= 256: 65; <= 1024: 300 and 1024; <= 16 KiB: 5000; <= 256 KiB: 70,000.
        expect(state.buckets).toEqual([
          [64, 2],
          [256, 3],
          [1024, 5],
          [4096, 5],
          [16384, 6],
          [65536, 6],
          [262144, 7],
          [1048576, 7],
          [4194304, 7],
          [16777216, 7]
        ])
      }
    } finally {
      RawClient.destroyAll()
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })
})
