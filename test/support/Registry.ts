/**
 * Reading a metric registry in tests: `series` (the series of one metric
 * whose attributes include the ones given) and `value` (a counter's or a
 * gauge's value, summed over those series; 0 when there is none), over a
 * snapshot (`Metric.snapshotUnsafe`).
 *
 * @since 0.2.0
 */
import type * as Metric from "effect/Metric"

type Snapshot = ReadonlyArray<Metric.Metric.Snapshot>

/**
 * @since 0.2.0
 */
export const series = (snapshot: Snapshot, id: string, attributes: Record<string, string> = {}): Snapshot =>
  snapshot.filter((s) =>
    s.id === id && Object.entries(attributes).every(([k, v]) => (s.attributes as Record<string, string> | undefined)?.[k] === v)
  )

/**
 * @since 0.2.0
 */
export const value = (snapshot: Snapshot, id: string, attributes?: Record<string, string>): number =>
  series(snapshot, id, attributes).reduce((sum, s) => {
    const state = s.state as { count?: number; value?: number }
    return sum + Number(state.count ?? state.value ?? 0)
  }, 0)
