/**
 * Masking keys for the client role (RFC 6455 §5.3): a fresh 4-byte key per
 * frame, "derived from a strong source of entropy". Keys are cut from a
 * pooled 4 KiB batch filled by `crypto.randomFillSync`, refilled when used
 * up, so that a key costs four byte reads, not a system call.
 *
 * @internal
 */
import { randomFillSync } from "node:crypto"

/** Bytes of random data fetched at once: 1024 keys. */
const POOL_SIZE = 4096

/** @internal */
export class Masker {
  /** Random bytes; `pool[at..]` are unused. */
  private readonly pool = new Uint8Array(POOL_SIZE)
  /** The next unused byte of `pool` (POOL_SIZE: refill first). */
  private at = POOL_SIZE

  /** Writes a fresh key into `into[offset..offset+4)`. */
  writeKey(into: Uint8Array, offset: number): void {
    if (this.at === POOL_SIZE) {
      randomFillSync(this.pool)
      this.at = 0
    }
    const pool = this.pool
    const at = this.at
    into[offset] = pool[at]!
    into[offset + 1] = pool[at + 1]!
    into[offset + 2] = pool[at + 2]!
    into[offset + 3] = pool[at + 3]!
    this.at = at + 4
  }
}

/** One pool for every client connection (keys are used once, whoever takes them). */
export const shared: Masker = new Masker()
