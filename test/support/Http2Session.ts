/**
 * The HTTP/2 side of the raw test client (`RawClient` with `transport:
 * "h2"`): sessions to test servers (TLS, the test certificate), the headers
 * of an extended CONNECT (RFC 8441 §4), the response as an `HttpResponse`,
 * and the server's side of every HTTP/2 stream opened in this process, so
 * that a client can wait for the server to have read what it sent.
 *
 * @since 0.2.0
 */
import * as DiagnosticsChannel from "node:diagnostics_channel"
import { readFileSync } from "node:fs"
import * as NodeHttp2 from "node:http2"
import type { ConnectOptions, HttpResponse } from "./RawClient.ts"

/** How long a session waits for the server's SETTINGS by default. */
const defaultTimeout = 2_000

/**
 * The server's side of every HTTP/2 stream opened in this process, by
 * "client port:stream id", with the bytes of DATA Node has pushed into it
 * (counted by wrapping that stream's `push`, which is all that is touched).
 */
const acceptedStreams = new Map<string, { readonly stream: NodeHttp2.Http2Stream; pushed: number }>()
DiagnosticsChannel.subscribe("http2.server.stream.created", (message) => {
  const stream = (message as { readonly stream: NodeHttp2.ServerHttp2Stream }).stream
  const key = `${stream.session?.socket?.remotePort}:${stream.id}`
  const entry = { stream, pushed: 0 }
  acceptedStreams.set(key, entry)
  const push = stream.push
  stream.push = (chunk: unknown, encoding?: BufferEncoding) => {
    if (chunk instanceof Uint8Array) entry.pushed += chunk.length
    return push.call(stream, chunk, encoding)
  }
  stream.once("close", () => {
    if (acceptedStreams.get(key) === entry) acceptedStreams.delete(key)
  })
})

/**
 * The test certificate's CA (itself), for HTTP/2 clients of test servers.
 *
 * @since 0.2.0
 */
export const testCertificate = readFileSync(new URL("../fixtures/localhost.crt", import.meta.url))

/**
 * Opens an HTTP/2 session to a test server on 127.0.0.1 (TLS, the test
 * certificate) and waits for its SETTINGS (an extended CONNECT needs
 * `enableConnectProtocol` from the server, RFC 8441 §3).
 *
 * @since 0.2.0
 */
export const connectSession = (port: number, timeout = defaultTimeout): Promise<NodeHttp2.ClientHttp2Session> =>
  new Promise((resolve, reject) => {
    const session = NodeHttp2.connect(`https://localhost:${port}`, { ca: testCertificate, host: "127.0.0.1" })
    const timer = setTimeout(() => {
      session.destroy()
      reject(new Error(`timed out after ${timeout} ms waiting for the server's HTTP/2 SETTINGS`))
    }, timeout)
    session.once("error", (error) => {
      clearTimeout(timer)
      reject(error)
    })
    session.once("remoteSettings", () => {
      clearTimeout(timer)
      resolve(session)
    })
  })

/**
 * The server's side of the stream `id` of the session whose client port is
 * `localPort`, with the bytes of DATA pushed into it so far.
 *
 * @since 0.2.0
 */
export const serverStream = (
  localPort: number,
  id: number | undefined
): { readonly stream: NodeHttp2.Http2Stream; readonly pushed: number } | undefined => acceptedStreams.get(`${localPort}:${id}`)

/**
 * The headers of an extended CONNECT for a WebSocket (RFC 8441 §4), with
 * `options.method` as `:method` and `options.headers` replacing a default of
 * the same name, pseudo-headers included (`undefined` removes one).
 *
 * @since 0.2.0
 */
export const connectHeaders = (port: number, options: ConnectOptions): Record<string, string> => {
  const defaults: Record<string, string> = {
    ":method": options.method ?? "CONNECT",
    ":protocol": "websocket",
    ":scheme": "https",
    ":authority": `localhost:${port}`,
    ":path": options.path ?? "/ws",
    "sec-websocket-version": "13"
  }
  const headers: Record<string, string> = {}
  const custom = Object.fromEntries(Object.entries(options.headers ?? {}).map(([name, value]) => [name.toLowerCase(), value]))
  for (const [name, value] of Object.entries({ ...defaults, ...custom })) if (value !== undefined) headers[name] = value
  return headers
}

/**
 * A stream's response headers as an `HttpResponse` (no status text in
 * HTTP/2; the pseudo-headers left out, repeats joined with ", ").
 *
 * @since 0.2.0
 */
export const responseOf = (response: NodeHttp2.IncomingHttpHeaders & NodeHttp2.IncomingHttpStatusHeader): HttpResponse => {
  const headers = new Map<string, string>()
  const rawHeaders: Array<readonly [string, string]> = []
  for (const [name, value] of Object.entries(response)) {
    if (name.startsWith(":") || value === undefined) continue
    const joined = Array.isArray(value) ? value.join(", ") : String(value)
    headers.set(name, joined)
    rawHeaders.push([name, joined])
  }
  const status = Number(response[":status"])
  const head = `:status ${status}\n${rawHeaders.map(([n, v]) => `${n}: ${v}`).join("\n")}`
  return { status, statusText: "", headers, rawHeaders, head }
}
