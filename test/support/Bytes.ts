/**
 * The byte helpers every test shares: `text` (UTF-8 both ways) and `hex`
 * (hexadecimal both ways). Chopping and joining bytes are `chop`, `chopSizes`
 * and `concat` of `src/testing.ts` (re-exported by `test/arbitraries.ts`),
 * the same functions the package offers its users.
 *
 * @since 0.1.0
 */
import { Buffer } from "node:buffer"

const encoder = new TextEncoder()
const strict = new TextDecoder("utf-8", { fatal: true })

/**
 * UTF-8: a string's bytes, or the string of bytes (strict: invalid UTF-8
 * throws, so a test never compares a replacement character by accident).
 *
 * @since 0.1.0
 */
export function text(s: string): Uint8Array
export function text(bytes: Uint8Array): string
export function text(x: string | Uint8Array): Uint8Array | string {
  return typeof x === "string" ? encoder.encode(x) : strict.decode(x)
}

/**
 * Hexadecimal: the lower-case digits of bytes, or the bytes of digits
 * (whitespace between them ignored, e.g. `hex("ce ba ed a0 80")`).
 *
 * @since 0.1.0
 */
export function hex(bytes: Uint8Array): string
export function hex(digits: string): Uint8Array
export function hex(x: string | Uint8Array): Uint8Array | string {
  if (typeof x !== "string") return Buffer.from(x.buffer, x.byteOffset, x.byteLength).toString("hex")
  const digits = x.replace(/\s+/g, "")
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(digits)) throw new Error(`not hexadecimal bytes: ${JSON.stringify(x)}`)
  return Uint8Array.from(Buffer.from(digits, "hex"))
}
