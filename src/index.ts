/**
 * websock: a WebSocket server (RFC 6455, RFC 7692) for Effect 4 and Node.js.
 *
 * Every public module as a namespace, the same modules that package.json
 * exports one by one (`websock/Server`, `websock/Frame`, ...). Not here:
 * `websock/testing`, which needs the optional peer dependency fast-check,
 * `websock/NodeHttpServer` and `websock/RedisTopics`, which need
 * `@effect/platform-node`, and
 * anything under `internal/`, which is not part of the API.
 *
 * @since 0.1.0
 */
export * as Client from "./Client.ts"
export * as ClientHandshake from "./ClientHandshake.ts"
export * as CloseReason from "./CloseReason.ts"
export * as Connection from "./Connection.ts"
export * as Errors from "./Errors.ts"
export * as Frame from "./Frame.ts"
export * as Handshake from "./Handshake.ts"
export * as Http2 from "./Http2.ts"
export * as PerMessageDeflate from "./PerMessageDeflate.ts"
export * as Server from "./Server.ts"
export * as Socket from "./Socket.ts"
export * as Topics from "./Topics.ts"
export * as Upgrade from "./Upgrade.ts"
export * as Utf8 from "./Utf8.ts"
export * as WebSocket from "./WebSocket.ts"
