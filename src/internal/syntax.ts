/**
 * HTTP's character classes and small parsers (RFC 9110, RFC 6265), for
 * `Handshake` (which re-exports what is public).
 *
 * @internal
 */
import { Buffer } from "node:buffer"
/** tchar of RFC 9110 §5.6.2, indexed by char code (ASCII only). */
export const TCHAR: ReadonlyArray<boolean> = (() => {
  const table: Array<boolean> = []
  for (let c = 0; c < 128; c++) {
    table.push(
      (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) ||
        "!#$%&'*+-.^_`|~".includes(String.fromCharCode(c))
    )
  }
  return table
})()

/** A non-empty RFC 9110 token. */
export const isToken = (s: string): boolean => {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 128 || !TCHAR[c]) return false
  }
  return true
}

/** field-value characters (RFC 9110 §5.5): HTAB, SP, VCHAR, obs-text. No other CTL. */
export const isFieldValue = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x09) continue
    if (c < 0x20 || c === 0x7f || c > 0xff) return false
  }
  return true
}

export const isOws = (c: number): boolean => c === 0x20 || c === 0x09

export const trimOws = (s: string): string => {
  let a = 0
  let b = s.length
  while (a < b && isOws(s.charCodeAt(a))) a++
  while (b > a && isOws(s.charCodeAt(b - 1))) b--
  return s.slice(a, b)
}

/**
 * Latin-1 (byte per char) decoding of a header block; exact for every byte
 * value. Node's own decoder: one string, no garbage (spreading the bytes
 * into `String.fromCharCode` made an iterator result per byte, about 17 KB
 * of garbage per request head). Not `TextDecoder("latin1")`, which is
 * windows-1252 (0x80-0x9F differ).
 */
export const latin1Decode = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1")

/** Latin-1 encoding; callers only pass strings whose chars are <= 0xFF. */
export const latin1Encode = (s: string, into: Uint8Array, at: number): void => {
  for (let i = 0; i < s.length; i++) into[at + i] = s.charCodeAt(i) & 0xff
}


/** The cookies of a `Cookie` header (see `Handshake.parseCookies`). */
export const parseCookies = (header: string | undefined): ReadonlyMap<string, string> => {
  const cookies = new Map<string, string>()
  if (header === undefined) return cookies
  for (const pair of header.split(";")) {
    const eq = pair.indexOf("=")
    if (eq < 0) continue
    const name = pair.slice(0, eq).trim()
    if (name.length === 0 || cookies.has(name)) continue
    let value = pair.slice(eq + 1).trim()
    if (value.length >= 2 && value.startsWith("\"") && value.endsWith("\"")) value = value.slice(1, -1)
    try {
      value = decodeURIComponent(value)
    } catch {
      // kept as sent
    }
    cookies.set(name, value)
  }
  return cookies
}

const ABSOLUTE = /^(?:https?|wss?):\/\/([^/?]+)(.*)$/i

/**
 * origin-form ("/path?query") or absolute-form ("http://host/path?query",
 * also https, ws, wss) of RFC 9112 §3.2. Visible ASCII only; a fragment ("#")
 * is not part of any request-target.
 */
export const splitTarget = (target: string): { readonly path: string; readonly query: string } | undefined => {
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i)
    if (c <= 0x20 || c >= 0x7f || c === 0x23) return undefined
  }
  let pathAndQuery: string
  if (target.startsWith("/")) {
    pathAndQuery = target
  } else {
    const m = ABSOLUTE.exec(target)
    if (m === null) return undefined
    pathAndQuery = m[2]!
  }
  const q = pathAndQuery.indexOf("?")
  const path = q < 0 ? pathAndQuery : pathAndQuery.slice(0, q)
  return { path: path.length === 0 ? "/" : path, query: q < 0 ? "" : pathAndQuery.slice(q + 1) }
}

/**
 * Where the head reader leaves the text of a request's head (its lines, the
 * final CRLF CRLF excluded) on the request it parsed, for a connection that
 * drops the parsed headers while idle and parses them again if asked.
 */
export const HEAD_TEXT: unique symbol = Symbol.for("websock/Handshake/headText") as never
