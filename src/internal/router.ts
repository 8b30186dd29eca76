/**
 * Route keys to routes: plain paths (`/chat`) and paths with `:name`
 * parameters (`/rooms/:id`), compiled once when the server is made.
 *
 * Matching is on the request's path only (the query never matters), segment
 * by segment and exactly: `/rooms/:id` matches `/rooms/42` but neither
 * `/rooms/42/` nor `/rooms`; a parameter matches one non-empty segment and is
 * percent-decoded. An exact route wins over a parameterised one; among
 * parameterised routes, the one with the most literal segments first wins
 * (then the order of the keys).
 *
 * @internal
 */

/** A compiled pattern: each segment a literal or a parameter's name. */
interface Pattern<A> {
  readonly segments: ReadonlyArray<{ readonly literal: string } | { readonly param: string }>
  readonly value: A
  /** For ordering: literal segments, position by position (1 literal, 0 parameter). */
  readonly rank: string
}

/** @internal */
export interface Match<A> {
  readonly value: A
  readonly params: Readonly<Record<string, string>>
}

/** @internal */
export interface Router<A> {
  readonly match: (path: string) => Match<A> | undefined
}

const NO_PARAMS: Readonly<Record<string, string>> = Object.freeze({})
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
/** RFC 3986 pchar, with percent-encodings: what a path segment may hold. */
const SEGMENT = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+$/

/**
 * Compiles route keys; returns the problem with the first key that is not a
 * plain path or a path with `:name` segments.
 *
 * @internal
 */
export const make = <A>(routes: ReadonlyArray<readonly [string, A]>): Router<A> | { readonly problem: string } => {
  const exact = new Map<string, A>()
  const patterns: Array<Pattern<A>> = []
  for (const [key, value] of routes) {
    if (!key.startsWith("/")) return { problem: `route ${JSON.stringify(key)} must start with "/"` }
    if (key === "/") {
      exact.set(key, value)
      continue
    }
    const parts = key.slice(1).split("/")
    const segments: Array<Pattern<A>["segments"][number]> = []
    const names = new Set<string>()
    for (const part of parts) {
      if (part.startsWith(":")) {
        const name = part.slice(1)
        if (!NAME.test(name)) return { problem: `route ${JSON.stringify(key)}: ${JSON.stringify(part)} is not a parameter (":" then a name)` }
        if (names.has(name)) return { problem: `route ${JSON.stringify(key)}: parameter ${JSON.stringify(name)} appears twice` }
        names.add(name)
        segments.push({ param: name })
      } else if (part === "*" || part.includes("*") || !SEGMENT.test(part)) {
        return {
          problem: `route ${JSON.stringify(key)}: segment ${JSON.stringify(part)} is not a plain path segment (no empty segments, wildcards or spaces)`
        }
      } else {
        segments.push({ literal: part })
      }
    }
    if (names.size === 0) exact.set(key, value)
    else patterns.push({ segments, value, rank: segments.map((s) => ("literal" in s ? "1" : "0")).join("") })
  }
  // Most literal segments first, position by position; a stable sort keeps the keys' order among equals.
  patterns.sort((a, b) => (a.rank === b.rank ? 0 : a.rank > b.rank ? -1 : 1))
  return {
    match: (path) => {
      const found = exact.get(path)
      if (found !== undefined) return { value: found, params: NO_PARAMS }
      if (patterns.length === 0) return undefined
      const parts = path.slice(1).split("/")
      for (const pattern of patterns) {
        const params = matchPattern(pattern, parts)
        if (params !== undefined) return { value: pattern.value, params }
      }
      return undefined
    }
  }
}

const matchPattern = <A>(pattern: Pattern<A>, parts: ReadonlyArray<string>): Record<string, string> | undefined => {
  const segments = pattern.segments
  if (segments.length !== parts.length) return undefined
  const params: Record<string, string> = {}
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!
    const part = parts[i]!
    if ("literal" in segment) {
      if (segment.literal !== part) return undefined
    } else {
      if (part.length === 0) return undefined
      try {
        params[segment.param] = decodeURIComponent(part)
      } catch {
        return undefined // not valid percent-encoding: no match (404)
      }
    }
  }
  return params
}
