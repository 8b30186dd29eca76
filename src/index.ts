/**
 * websock: a WebSocket server (RFC 6455, RFC 7692) for Effect 4 and Node.js.
 *
 * @since 0.1.0
 */
export * as CloseReason from "./CloseReason.ts"
export * as Connection from "./Connection.ts"
export * as Errors from "./Errors.ts"
export * as Frame from "./Frame.ts"
export * as Handshake from "./Handshake.ts"
export * as PerMessageDeflate from "./PerMessageDeflate.ts"
export * as Server from "./Server.ts"
export * as WebSocket from "./WebSocket.ts"
