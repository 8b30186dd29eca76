/**
 * Settings from Effect Config (`Server.layerConfig`) and time settings as
 * `Duration.Input`, over a real socket.
 */
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { describe, expect, it } from "vitest"
import { ServerError } from "../src/Errors.ts"
import * as Server from "../src/Server.ts"
import { RawClient } from "./support/RawClient.ts"
import * as TestServer from "./support/TestServer.ts"

/** Runs `body` with the server the layer builds, then releases the layer. */
const withLayer = <E>(layer: Layer.Layer<Server.WebSocketServer, E>, body: (port: number) => Promise<void>) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(layer)
    const server = context.mapUnsafe.get(Server.WebSocketServer.key) as Server.RunningServer
    yield* Effect.promise(() => body(server.address.port))
  })))

describe("Server.layerConfig", () => {
  it("reads its settings from the ConfigProvider: maxMessageSize from config closes a larger message with 1009", async () => {
    const layer = Server.layerConfig({ "/ws": TestServer.echo }, {
      host: Config.succeed("127.0.0.1"),
      port: Config.Int("PORT"), // Config.Port refuses 0 (any free port), which a test needs
      maxMessageSize: Config.Int("MAX_MESSAGE_SIZE"),
      idleTimeout: Config.Duration("IDLE_TIMEOUT"),
      pingInterval: Config.succeed(0)
    }).pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ PORT: "0", MAX_MESSAGE_SIZE: "16", IDLE_TIMEOUT: "1 minute" }))))
    await withLayer(layer, async (port) => {
      const c = await RawClient.connect(port)
      try {
        await c.sendText("0123456789abcdef") // 16 bytes: at the limit
        expect(await c.expectText()).toBe("0123456789abcdef")
        await c.sendText("0123456789abcdefg") // 17 bytes
        await c.expectClose(1009)
      } finally {
        c.destroy()
      }
    })
  })

  it("missing configuration fails the layer with a ConfigError; a bad value with InvalidOption", async () => {
    const missing = Server.layerConfig({ "/ws": TestServer.echo }, { port: Config.Port("NO_SUCH_PORT") }).pipe(
      Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({})))
    )
    const exit = await Effect.runPromiseExit(Effect.scoped(Layer.build(missing)))
    expect(Exit.isFailure(exit) && String(exit.cause)).toContain("NO_SUCH_PORT")
    const bad = Server.layerConfig({ "/ws": TestServer.echo }, { maxMessageSize: Config.Int("SIZE") }).pipe(
      Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ SIZE: "-5" })))
    )
    const failed = await Effect.runPromiseExit(Effect.scoped(Layer.build(bad)))
    expect(Exit.isFailure(failed)).toBe(true)
    if (Exit.isFailure(failed)) {
      const error = failed.cause.reasons.find((r) => r._tag === "Fail")
      expect(error?._tag === "Fail" && error.error).toBeInstanceOf(ServerError)
      expect(error?._tag === "Fail" && (error.error as ServerError).reason).toMatchObject({ _tag: "InvalidOption", option: "maxMessageSize" })
    }
  })
})

describe("time settings as Duration.Input", () => {
  it("\"200 millis\" as the handshake timeout answers a silent client with 408; \"soon\" fails make naming the option", async () => {
    await TestServer.withServer({ handshakeTimeout: "200 millis" }, async (port) => {
      const c = await RawClient.request(port, { request: "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n" })
      try {
        expect(c.response.status).toBe(408)
      } finally {
        c.destroy()
      }
    })
    const exit = await Effect.runPromiseExit(Effect.scoped(Server.make({ routes: { "/ws": TestServer.echo }, idleTimeout: "soon" as never })))
    expect(Exit.isFailure(exit) && String(exit.cause)).toContain("idleTimeout")
  })
})
