/**
 * The server's spans, made outside any fiber (in socket callbacks) with the
 * services the server was built with: its `Tracer` (Effect's native one
 * unless another is provided), its clock, `TracerEnabled` and the trace
 * levels. One span per upgrade, one per connection; nothing per message.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import type * as Tracer from "effect/Tracer"

/** Starts and ends the spans of one server. */
export interface Tracing {
  readonly start: (name: string, options: Tracer.SpanOptionsNoTrace) => Tracer.Span
  readonly end: (span: Tracer.Span, exit: Exit.Exit<unknown, unknown>) => void
}

/** The spans of a server built in `context`. */
export const make = (context: Context.Context<never>): Tracing => {
  const run = Effect.runSyncWith(context)
  const clock = Context.get(context, Clock.Clock)
  return {
    start: (name, options) => run(Effect.makeSpan(name, options)),
    end: (span, exit) => span.end(clock.currentTimeNanosUnsafe(), exit)
  }
}
