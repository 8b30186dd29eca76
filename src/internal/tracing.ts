/**
 * The server's spans, made outside any fiber (in socket callbacks) with the
 * services the server was built with: its `Tracer` (Effect's native one
 * unless another is provided), its clock, `TracerEnabled` and the trace
 * levels. One span per upgrade, one per connection; nothing per message.
 *
 * A span, under the common settings (tracing on, no
 * span annotations or links from the context), is made by the tracer
 * directly, as `Effect.makeSpan` would make it, without running an Effect
 * (which allocates a fiber and its scheduler: garbage at every upgrade);
 * any other goes through `Effect.makeSpan`.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Tracer from "effect/Tracer"

/** Starts and ends the spans of one server. */
export interface Tracing {
  readonly start: (name: string, options: Tracer.SpanOptionsNoTrace) => Tracer.Span
  readonly end: (span: Tracer.Span, exit: Exit.Exit<unknown, unknown>) => void
}

/** The spans of a server built in `context`. */
export const make = (context: Context.Context<never>): Tracing => {
  const run = Effect.runSyncWith(context)
  const clock = Context.get(context, Clock.Clock)
  const tracer = Context.get(context, Tracer.Tracer)
  const timing = Context.get(context, References.TracerTimingEnabled)
  const traceLevel = Context.get(context, Tracer.CurrentTraceLevel)
  const minimumLevel = Context.get(context, Tracer.MinimumTraceLevel)
  const direct = Context.get(context, References.TracerEnabled) &&
    Object.keys(Context.get(context, References.TracerSpanAnnotations)).length === 0 &&
    Context.get(context, References.TracerSpanLinks).length === 0
  // The parent of a span without one: the context's current span (a span that disables propagation: through `Effect.makeSpan`).
  const current = Context.getOption(context, Tracer.ParentSpan)
  const currentUsable = Option.isNone(current) || !Context.get(current.value.annotations, Tracer.DisablePropagation)
  return {
    start: (name, options) => {
      const parent = options.parent !== undefined ? Option.some(options.parent) : current
      if (
        !direct || (options.parent === undefined && !currentUsable) || options.root === true || options.annotations !== undefined ||
        options.links !== undefined
      ) {
        return run(Effect.makeSpan(name, options))
      }
      const span = tracer.span({
        name,
        parent,
        annotations: Context.empty(),
        links: [],
        startTime: timing ? clock.currentTimeNanosUnsafe() : BigInt(0),
        kind: options.kind ?? "internal",
        root: false,
        sampled: options.sampled ??
          (Option.isSome(parent) && parent.value.sampled === false ? false : !LogLevel.isGreaterThan(minimumLevel, options.level ?? traceLevel))
      })
      const attributes = options.attributes
      if (attributes !== undefined) for (const key in attributes) span.attribute(key, attributes[key])
      return span
    },
    end: (span, exit) => span.end(clock.currentTimeNanosUnsafe(), exit)
  }
}
