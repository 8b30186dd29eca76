/**
 * A tracer that records every span it starts (Effect's native spans), for
 * asserting span trees.
 *
 * @since 0.2.0
 */
import * as Tracer from "effect/Tracer"

/**
 * A fresh tracer and the spans it has started, in order.
 *
 * @since 0.2.0
 */
export const recording = (): { readonly tracer: Tracer.Tracer; readonly spans: ReadonlyArray<Tracer.NativeSpan> } => {
  const spans: Array<Tracer.NativeSpan> = []
  const tracer = Tracer.make({
    span(options) {
      const span = new Tracer.NativeSpan(options)
      spans.push(span)
      return span
    }
  })
  return { tracer, spans }
}
