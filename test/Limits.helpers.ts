/**
 * Helpers shared by the `Limits.*.test.ts` files (issue 6: production limits
 * over real TCP): waiting for buffers to settle, numbered binary messages to
 * check order and loss, and reading past keepalive Pings or data to the
 * server's Close. Waiting for a condition is `until` in `support/Wait.ts`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Frame from "../src/Frame.ts"
import type * as WebSocket from "../src/WebSocket.ts"
import type { RawClient } from "./support/RawClient.ts"

/** The pace of the polls below. */
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Polls `value` until it has not changed for `quiet` ms, calling `sample`
 * at every poll; returns the settled value. Fails after `timeout` ms.
 *
 * @since 0.1.0
 */
export const settled = async (
  what: string,
  value: () => number,
  options: { readonly quiet?: number; readonly timeout?: number; readonly sample?: () => void } = {}
): Promise<number> => {
  const quiet = options.quiet ?? 200
  const deadline = Date.now() + (options.timeout ?? 4_000)
  let last = value() // the value seen at the last change
  let since = Date.now() // when it last changed
  for (;;) {
    options.sample?.()
    const now = Date.now()
    const current = value()
    if (current !== last) {
      last = current
      since = now
    } else if (now - since >= quiet) {
      return current
    }
    if (now > deadline) throw new Error(`timed out waiting for ${what} to settle (still changing: ${current})`)
    await sleep(5)
  }
}

/**
 * Writes `next()` to `socket` whenever fewer than `backlog` bytes wait in it,
 * until at least `backlog` bytes have waited for `quiet` ms (the peer has
 * stopped reading); returns the bytes written. Fails after `timeout` ms with
 * `detail()`.
 *
 * @since 0.1.0
 */
export const flood = async (
  socket: { readonly writableLength: number; write(chunk: Uint8Array): unknown },
  next: () => Uint8Array,
  options: { readonly backlog: number; readonly quiet?: number; readonly timeout?: number; readonly sample?: () => void; readonly detail?: () => string }
): Promise<number> => {
  const quiet = options.quiet ?? 200
  const deadline = Date.now() + (options.timeout ?? 6_000)
  let written = 0 // bytes handed to the socket
  let since: number | undefined = undefined // since when the backlog has stayed full
  for (;;) {
    options.sample?.()
    const now = Date.now()
    if (socket.writableLength < options.backlog) {
      since = undefined
      // at most ~1 MiB per turn, so that the peer's side runs too
      for (let n = 0; n < 1024 * 1024 && socket.writableLength < options.backlog;) {
        const chunk = next()
        socket.write(chunk)
        written += chunk.length
        n += chunk.length
      }
    } else {
      since ??= now
      if (now - since >= quiet) return written
    }
    if (now > deadline) {
      throw new Error(`the writes kept draining for ${options.timeout ?? 6_000} ms (${written} bytes written)${options.detail === undefined ? "" : `: ${options.detail()}`}`)
    }
    await sleep(2)
  }
}

/**
 * A binary message of `size` bytes (at least 4) numbered `i`: the number
 * big-endian in its first 4 bytes, the rest filled with `i & 0xff`.
 *
 * @since 0.1.0
 */
export const numbered = (i: number, size: number): Uint8Array => {
  const message = new Uint8Array(size)
  new DataView(message.buffer).setUint32(0, i)
  message.fill(i & 0xff, 4)
  return message
}

/**
 * The number of a message made by `numbered` (checks its filling too).
 *
 * @since 0.1.0
 */
export const numberOf = (message: WebSocket.Message): number => {
  if (typeof message === "string") throw new Error(`expected a numbered binary message, got text of ${message.length} chars`)
  const i = new DataView(message.buffer, message.byteOffset, message.byteLength).getUint32(0)
  for (let k = 4; k < message.length; k++) {
    if (message[k] !== (i & 0xff)) throw new Error(`message ${i} is corrupted at byte ${k}`)
  }
  return i
}

/**
 * The connection's current `bufferedAmount`, read from outside any fiber.
 *
 * @since 0.1.0
 */
export const buffered = (ws: WebSocket.WebSocket | undefined): number =>
  ws === undefined ? 0 : Effect.runSync(ws.bufferedAmount)

/**
 * Reads frames, skipping Pings (and data messages when `skipData`), up to
 * the server's Close; returns it parsed (code 1005 when empty). Does not
 * answer it.
 *
 * @since 0.1.0
 */
export const readToClose = async (
  c: RawClient,
  options: { readonly timeout?: number; readonly skipData?: boolean } = {}
): Promise<{ readonly code: number; readonly reason: string; readonly skipped: number }> => {
  let skipped = 0 // frames read before the Close
  for (;;) {
    const frame = await c.nextFrame(options.timeout ?? 2_000)
    if (frame.opcode === Frame.Opcode.Close) {
      const parsed = Frame.parseClose(frame.payload)
      if (parsed._tag === "Invalid") throw new Error(`the server sent an invalid Close: ${parsed.failure.reason}`)
      return parsed._tag === "Empty" ? { code: 1005, reason: "", skipped } : { code: parsed.code, reason: parsed.reason, skipped }
    }
    const isData = frame.opcode === Frame.Opcode.Binary || frame.opcode === Frame.Opcode.Text ||
      frame.opcode === Frame.Opcode.Continuation
    if (frame.opcode !== Frame.Opcode.Ping && !(isData && options.skipData === true)) {
      throw new Error(`expected Close, got a frame with opcode ${frame.opcode} (${frame.payload.length} bytes)`)
    }
    skipped++
  }
}

/**
 * Answers the server's Close with `code`, waits for the server to end TCP,
 * then ends ours.
 *
 * @since 0.1.0
 */
export const answerClose = async (c: RawClient, code: number): Promise<void> => {
  await c.sendClose(code)
  await c.expectEnd()
  c.end()
}

/**
 * Closes from the client's side with 1000: sends Close, reads past Pings to
 * the server's answer, waits for the server to end TCP, then ends ours.
 *
 * @since 0.1.0
 */
export const closeFromClient = async (c: RawClient): Promise<{ readonly code: number; readonly reason: string }> => {
  await c.sendClose(1000)
  const close = await readToClose(c)
  await c.expectEnd()
  c.end()
  return close
}
