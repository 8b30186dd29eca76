/**
 * The little of Bun's API that the Bun peers use (`bun-pubsub.ts`,
 * `bun-echo.ts`), typed here so that `tsc` checks them without `bun-types`.
 * They run under the `bun` binary of the `bun` devDependency
 * (`node_modules/.bin/bun`), never under Node.
 */

/** A server-side WebSocket of `Bun.serve`. */
export interface BunWebSocket {
  /** -1: queued behind backpressure, 0: dropped, otherwise bytes sent. */
  send(data: string | Uint8Array): number
  subscribe(topic: string): void
  /** To every subscriber of `topic` but this socket. */
  publish(topic: string, data: string | Uint8Array): number
  close(code?: number, reason?: string): void
}

/** The running server handed to `fetch`. */
export interface BunServer {
  upgrade(request: Request): boolean
  readonly port: number
}

/** `Bun.serve`'s options, as far as the peers set them. */
export interface BunServeOptions {
  readonly port: number
  readonly hostname: string
  fetch(request: Request, server: BunServer): Response | undefined
  readonly websocket: {
    open?(ws: BunWebSocket): void
    message(ws: BunWebSocket, message: string | Uint8Array): void
    readonly perMessageDeflate?: boolean
    readonly maxPayloadLength?: number
    readonly backpressureLimit?: number
    readonly closeOnBackpressureLimit?: boolean
    readonly idleTimeout?: number
    readonly publishToSelf?: boolean
  }
}

/** The `Bun` global. */
export interface BunGlobal {
  readonly version: string
  serve(options: BunServeOptions): BunServer
}

/** `Bun` when running under Bun, else undefined. */
export const bun = (): BunGlobal => {
  const found: unknown = Reflect.get(globalThis, "Bun")
  if (found === undefined) throw new Error("this peer runs under bun (node_modules/.bin/bun), not node")
  return found as BunGlobal
}

/** Upgrades requests for `/ws`; anything else is a 404. */
export const upgradeWs = (request: Request, server: BunServer): Response | undefined => {
  if (new URL(request.url).pathname === "/ws" && server.upgrade(request)) return undefined
  return new Response("not found", { status: 404 })
}
