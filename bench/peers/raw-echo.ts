/**
 * The ceiling that stays valid WebSocket: the least work a Node.js process can
 * do and still be an honest WebSocket echo on the wire (tcp-reflect.ts, the
 * issue's "raw TCP echo", sends the masked frames back unchanged). It answers the HTTP upgrade, then for every read
 * batch parses the client's frames, unmasks them (word-wise, in place, in the
 * buffer Node handed us), rewrites each header without the mask and writes the
 * whole batch back with one write (several buffers corked into one writev only
 * when a large payload is left where it lies).
 *
 * It is NOT a WebSocket server: no UTF-8 validation, no size limits, no
 * reassembly (fragments go back as fragments, large frames stream through
 * without being buffered), no closing handshake beyond echoing the Close
 * frame. Any real server does at least this much, and more.
 *
 *     PORT=9000 node bench/peers/raw-echo.ts
 */
import * as Net from "node:net"
import * as Os from "node:os"
import { upgrade } from "./upgrade.ts"

const port = Number(process.env.PORT ?? 9000)
/** payloads at least this big are unmasked where they lie instead of being moved */
const BIG = 8192
const littleEndian = Os.endianness() === "LE"

/**
 * XOR `n` bytes of `chunk` from `pos` with the mask, in place; `phase` is the
 * mask index of the first byte. Word-wise over the aligned middle.
 */
const unmask = (chunk: Buffer, words: Int32Array | undefined, pos: number, n: number, mask: Uint8Array, phase: number): void => {
  let a = pos // byte index in chunk
  const end = pos + n
  let t = phase // mask index of byte a
  if (words !== undefined) {
    const base = chunk.byteOffset
    while (a < end && ((base + a) & 3) !== 0) {
      chunk[a] ^= mask[t & 3]
      a++, t++
    }
    const wordEnd = (base + end) >> 2 // first word not wholly inside the range
    let w = (base + a) >> 2 // current word
    if (w < wordEnd) {
      const k = t & 3
      const m = mask[k] | (mask[(k + 1) & 3] << 8) | (mask[(k + 2) & 3] << 16) | (mask[(k + 3) & 3] << 24)
      t += (wordEnd - w) * 4
      while (w < wordEnd) {
        words[w] ^= m
        w++
      }
      a = wordEnd * 4 - base
    }
  }
  while (a < end) {
    chunk[a] ^= mask[t & 3]
    a++, t++
  }
}

const onConnection = (socket: Net.Socket): void => {
  let carry: Buffer | undefined // a frame header split across reads
  let left = 0 // payload bytes of the current frame still to come
  let phase = 0 // mask index of the next payload byte
  const mask = new Uint8Array(4) // the current frame's masking key

  const frames = (chunk: Buffer): void => {
    const parts: Array<Uint8Array> = [] // what goes back, in order
    const words = littleEndian && chunk.buffer instanceof ArrayBuffer
      ? new Int32Array(chunk.buffer, 0, chunk.buffer.byteLength >> 2)
      : undefined
    const length = chunk.length
    let r = 0 // read position
    let w = 0 // end of the compacted output inside chunk (w <= r)
    let seg = 0 // start of the output segment not yet in parts
    if (carry !== undefined) {
      // rare: a header split across reads; complete it and send it on its own
      const joined = Buffer.concat([carry, chunk.subarray(0, Math.min(14, length))])
      const need = headerLength(joined, 0)
      if (need === 0) return void socket.destroy()
      if (joined.length < need) {
        carry = joined
        return
      }
      r = w = seg = need - carry.length
      carry = undefined
      left = payloadLength(joined, 0)
      phase = 0
      readMask(joined, need)
      const out = joined.subarray(0, need - 4)
      fixHeader(out, 0)
      parts.push(out)
    }
    while (r < length) {
      if (left > 0) { // payload continuing from a previous read: unmask where it lies
        const n = Math.min(left, length - r)
        if (seg !== w) parts.push(chunk.subarray(seg, w))
        unmask(chunk, words, r, n, mask, phase)
        phase = (phase + n) & 3
        left -= n
        seg = r
        r += n
        w = r
        continue
      }
      const need = headerLength(chunk, r)
      if (need === 0) return void socket.destroy() // unmasked client frame: RFC 6455 §5.1
      if (r + need > length) {
        carry = Buffer.from(chunk.subarray(r))
        break
      }
      const n = payloadLength(chunk, r)
      const opcode = chunk[r] & 15
      readMask(chunk, r + need)
      const here = Math.min(n, length - r - need)
      if (n >= BIG || here < n) {
        // large or incomplete payload: header moved right before it, payload unmasked in place
        if (seg !== w) parts.push(chunk.subarray(seg, w))
        for (let k = need - 5; k >= 0; k--) chunk[r + 4 + k] = chunk[r + k] // overlapping: backwards
        fixHeader(chunk, r + 4)
        seg = r + 4
        r += need
        unmask(chunk, words, r, here, mask, 0)
        r += here
        w = r
        left = n - here
        phase = here & 3
      } else {
        // small payload: compact header and payload behind the previous output
        for (let k = 0; k < need - 4; k++) chunk[w + k] = chunk[r + k] // w <= r: forwards
        fixHeader(chunk, w)
        w += need - 4
        r += need
        if (n < 64) {
          for (let k = 0; k < n; k++) chunk[w + k] = chunk[r + k] ^ mask[k & 3]
        } else {
          chunk.copyWithin(w, r, r + n)
          unmask(chunk, words, w, n, mask, 0)
        }
        w += n
        r += n
      }
      if (opcode === 0x8) { // Close: the echoed frame is our reply; then end
        if (seg !== w) parts.push(chunk.subarray(seg, w))
        write(parts)
        socket.end()
        return
      }
    }
    if (seg !== w) parts.push(chunk.subarray(seg, w))
    write(parts)
  }

  /** Stores the masking key that ends at `end`. */
  const readMask = (b: Uint8Array, end: number): void => {
    mask[0] = b[end - 4], mask[1] = b[end - 3], mask[2] = b[end - 2], mask[3] = b[end - 1]
  }

  const write = (parts: Array<Uint8Array>): void => {
    if (parts.length === 1) {
      socket.write(parts[0])
    } else if (parts.length > 1) {
      socket.cork()
      for (const p of parts) socket.write(p)
      socket.uncork()
    }
  }

  upgrade(socket, frames)
}

/** Bytes of the client frame header at `r` (the need, if incomplete), 0 when unmasked. */
const headerLength = (b: Uint8Array, r: number): number => {
  if (b.length - r < 2) return 2
  if ((b[r + 1] & 0x80) === 0) return 0
  const l7 = b[r + 1] & 127
  return l7 === 126 ? 8 : l7 === 127 ? 14 : 6
}

/** Turns the client header copied to `at` into a server header: no MASK bit, Ping answered by Pong. */
const fixHeader = (b: Uint8Array, at: number): void => {
  b[at + 1] &= 0x7f
  if ((b[at] & 15) === 0x9) b[at] = (b[at] & 0xf0) | 0xa
}

/** Payload length of the (complete) client frame header at `r`. */
const payloadLength = (b: Uint8Array, r: number): number => {
  const l7 = b[r + 1] & 127
  if (l7 < 126) return l7
  if (l7 === 126) return (b[r + 2] << 8) | b[r + 3]
  let n = 0
  for (let k = 2; k < 10; k++) n = n * 256 + b[r + k]
  return n
}

const server = Net.createServer(onConnection)
server.listen(port, "127.0.0.1", () => {
  console.log(`raw echo listening on ws://127.0.0.1:${port}/ws`)
})
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0))
