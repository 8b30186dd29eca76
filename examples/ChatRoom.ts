/**
 * A chat room: every message a member sends goes to every other member of
 * its room (`/rooms/:room`). Members register in an `acquireRelease`: the
 * handler is interrupted when its connection is over, so the release runs
 * then, with no registry cleanup by hand. Fan-out uses `trySend`, which never
 * waits: a member that stops reading has its messages dropped once its
 * buffer passes `maxBufferedAmount`, and never slows the others.
 *
 * `node examples/ChatRoom.ts` (PORT, default 8890), then connect two clients
 * to ws://localhost:8890/rooms/lobby.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Stream } from "effect"
import * as Server from "../src/Server.ts"
import type * as WebSocket from "../src/WebSocket.ts"

const rooms = new Map<string, Set<WebSocket.WebSocketConnection>>()

const join = (room: string, ws: WebSocket.WebSocketConnection) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const members = rooms.get(room) ?? new Set()
      rooms.set(room, members.add(ws))
      return members
    }),
    (members) =>
      Effect.sync(() => {
        members.delete(ws)
        if (members.size === 0) rooms.delete(room)
      })
  )

export const ChatRoom = Server.serve({
  port: Number(process.env.PORT ?? 8890),
  maxBufferedAmount: 1024 * 1024,
  routes: {
    "/rooms/:room": (ws) =>
      Effect.gen(function*() {
        const room = ws.request.params.room!
        const members = yield* join(room, ws)
        yield* ws.messages.pipe(Stream.runForEach((message) =>
          Effect.forEach(members, (member) => member === ws ? Effect.void : member.trySend(message), { discard: true })
        ))
      })
  }
})

if (import.meta.main) NodeRuntime.runMain(ChatRoom)
