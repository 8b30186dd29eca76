/**
 * The Autobahn|Testsuite client driver for websock's client: reads the case
 * count from `$AUTOBAHN_URL/getCaseCount`, runs each case at
 * `/runCase?case=N&agent=$AUTOBAHN_AGENT` echoing every message back until
 * the server closes, then asks for the reports at
 * `/updateReports?agent=$AUTOBAHN_AGENT`. permessage-deflate is offered
 * (the client's default); the limits let the suite's largest cases through
 * (16 MiB messages).
 *
 *     ../shared/autobahn/serve SUITE 9001 '*' '' /tmp/abc-client -- node examples/AutobahnClient.ts
 *
 * CASES=1-10 runs only those case numbers (for a quick check).
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as Client from "../src/Client.ts"

const base = process.env.AUTOBAHN_URL ?? "ws://127.0.0.1:9001"
const agent = process.env.AUTOBAHN_AGENT ?? "websock"

const options: Client.Options = {
  maxMessageSize: 64 * 1024 * 1024,
  closeTimeout: "5 seconds",
  compression: {}
}

/** Echoes every message until the server closes, then waits for the end of the connection. */
const echo = (url: string) =>
  Effect.scoped(Effect.gen(function*() {
    const ws = yield* Client.connect(url, options)
    yield* ws.messages.pipe(Stream.runForEachArray((batch) => Effect.ignore(ws.sendAll(batch))))
    return yield* ws.closed
  }))

export const AutobahnClient = Effect.gen(function*() {
  const count = yield* Effect.scoped(Effect.gen(function*() {
    const ws = yield* Client.connect(`${base}/getCaseCount`, options)
    return Number(yield* ws.receive)
  }))
  const [from, to] = (process.env.CASES ?? `1-${count}`).split("-").map(Number) as [number, number]
  yield* Effect.logInfo(`running cases ${from} to ${to} of ${count} as ${agent}`)
  for (let n = from; n <= to; n++) {
    const outcome = yield* echo(`${base}/runCase?case=${n}&agent=${encodeURIComponent(agent)}`).pipe(
      Effect.catch((error) => Effect.succeed(error.message))
    )
    if (typeof outcome === "string") yield* Effect.logWarning(`case ${n}: ${outcome}`)
  }
  yield* echo(`${base}/updateReports?agent=${encodeURIComponent(agent)}`)
  yield* Effect.logInfo("reports updated")
})

if (import.meta.main) NodeRuntime.runMain(AutobahnClient)
