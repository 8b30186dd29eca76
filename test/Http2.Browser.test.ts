/**
 * A real browser over RFC 8441: headless Chromium loads examples/Http2App.ts's
 * page over HTTP/2 (TLS, the test certificate, `--ignore-certificate-errors`)
 * and opens `wss://` WebSockets from it; since the page's connection
 * advertises SETTINGS_ENABLE_CONNECT_PROTOCOL, Chromium opens them as
 * extended CONNECT streams of that connection. The test asserts the server
 * saw them as HTTP/2 streams (`WebSocket.Request.httpVersion` "2", counted by
 * the example) and that text and a 1 MiB binary message come back intact.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { readFileSync } from "node:fs"
import type { Browser } from "playwright-core"
import { afterAll, beforeAll, expect, it } from "vitest"
import * as App from "../examples/Http2App.ts"
import { launch } from "./support/Browser.ts"

let app: App.Running
let scope: Scope.Closeable
let browser: Browser

beforeAll(async () => {
  scope = Scope.makeUnsafe()
  app = await Effect.runPromise(Scope.provide(
    App.make({
      port: 0,
      host: "127.0.0.1",
      cert: readFileSync(new URL("fixtures/localhost.crt", import.meta.url)),
      key: readFileSync(new URL("fixtures/localhost.key", import.meta.url))
    }),
    scope
  ))
  browser = await launch(["--ignore-certificate-errors"])
}, 30_000)
afterAll(async () => {
  await browser?.close()
  if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
})

it("Chromium opens wss:// as an HTTP/2 stream of the page's connection and echoes text and 1 MiB binary", async () => {
  const page = await browser.newPage()
  try {
    await page.goto(`https://localhost:${app.port}/`)
    // The page was served over HTTP/2 (ALPN h2), and its own WebSocket opened.
    // (The scripts are strings: they run in the page, and this project's types have no DOM.)
    expect(await page.evaluate(`performance.getEntriesByType("navigation")[0].nextHopProtocol`)).toBe("h2")
    await page.waitForFunction(`document.getElementById("state").textContent === "open"`)
    const result = await page.evaluate(`(async () => {
      const ws = new WebSocket("wss://" + location.host + "/ws")
      ws.binaryType = "arraybuffer"
      const next = () => new Promise((resolve) => ws.addEventListener("message", (e) => resolve(e.data), { once: true }))
      await new Promise((resolve, reject) => {
        ws.onopen = resolve
        ws.onerror = reject
      })
      ws.send("hello over h2")
      const text = await next()
      const data = new Uint8Array(1024 * 1024)
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff
      ws.send(data)
      const echoed = new Uint8Array(await next())
      let same = echoed.length === data.length
      for (let i = 0; same && i < data.length; i++) same = echoed[i] === data[i]
      const code = await new Promise((resolve) => {
        ws.onclose = (e) => resolve(e.code)
        ws.close(1000)
      })
      return { text, length: echoed.length, same, code, extensions: ws.extensions }
    })()`)
    expect(result).toEqual({ text: "hello over h2", length: 1024 * 1024, same: true, code: 1000, extensions: expect.stringMatching(/^permessage-deflate/) })
    // The page's WebSocket and ours: both HTTP/2 streams, none an HTTP/1.1 upgrade.
    expect(app.opened["2"]).toBe(2)
    expect(app.opened["1.1"]).toBe(0)
  } finally {
    await page.close()
  }
}, 30_000)
