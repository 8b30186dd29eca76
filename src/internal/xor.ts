/**
 * XOR with a repeated 32-bit word, 16 bytes at a time, in WebAssembly SIMD:
 * the masking of RFC 6455 §5.3 for payloads long enough that the copies in
 * and out of the module's memory cost less than the word-wise JavaScript
 * loop they replace (about 2.5x faster from 1 KiB up, measured on Node 24;
 * no native addon). `Frame` calls it; where WebAssembly SIMD is missing it
 * is `undefined` and `Frame` keeps its JavaScript loop.
 *
 * The module (one function, one page of memory), in the text format:
 *
 * ```wat
 * (module
 *   (memory (export "m") 1)
 *   (func (export "x") (param $at i32) (param $end i32) (param $word i32)
 *     (local $mask v128)
 *     (local.set $mask (i32x4.splat (local.get $word)))
 *     (block $done
 *       (loop $next
 *         (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
 *         (v128.store (local.get $at) (v128.xor (v128.load (local.get $at)) (local.get $mask)))
 *         (local.set $at (i32.add (local.get $at) (i32.const 16)))
 *         (br $next)))))
 * ```
 *
 * `x(0, n, word)` XORs the first `n` bytes of the memory (`n` a multiple of
 * 16) with `word` (the key in memory order, rotated to the phase of byte 0).
 *
 * @internal
 */

/** The module above, encoded (WebAssembly binary format 1). */
const MODULE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x07, 0x01, 0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x00, // type: (i32 i32 i32) -> ()
  0x03, 0x02, 0x01, 0x00, // function 0 has type 0
  0x05, 0x03, 0x01, 0x00, 0x01, // memory: 1 page, no maximum
  0x07, 0x09, 0x02, 0x01, 0x6d, 0x02, 0x00, 0x01, 0x78, 0x00, 0x00, // export "m" memory 0, "x" function 0
  0x0a, 0x32, 0x01, 0x30, // code: one body of 48 bytes
  0x01, 0x01, 0x7b, // one local, v128
  0x20, 0x02, 0xfd, 0x11, 0x21, 0x03, // mask = i32x4.splat(word)
  0x02, 0x40, 0x03, 0x40, // block, loop
  0x20, 0x00, 0x20, 0x01, 0x4f, 0x0d, 0x01, // br_if done (at >= end)
  0x20, 0x00, 0x20, 0x00, 0xfd, 0x00, 0x00, 0x00, 0x20, 0x03, 0xfd, 0x51, 0xfd, 0x0b, 0x00, 0x00, // store(at, load(at) ^ mask)
  0x20, 0x00, 0x41, 0x10, 0x6a, 0x21, 0x00, // at += 16
  0x0c, 0x00, 0x0b, 0x0b, 0x0b // br next, end loop, end block, end function
])

/** What this module uses of the global `WebAssembly` (the project's `lib` does not declare it). */
declare const WebAssembly: {
  readonly Module: new(bytes: Uint8Array) => object
  readonly Instance: new(module: object) => { readonly exports: object }
}

/** Bytes the module's memory holds: the largest piece XORed in one call. */
const BLOCK = 65536

interface Instance {
  readonly memory: Uint8Array
  readonly x: (at: number, end: number, word: number) => void
}

const instantiate = (): Instance | undefined => {
  try {
    const instance = new WebAssembly.Instance(new WebAssembly.Module(MODULE))
    const exports = instance.exports as { readonly m: { readonly buffer: ArrayBuffer }; readonly x: Instance["x"] }
    const memory = new Uint8Array(exports.m.buffer, 0, BLOCK)
    // Checked once: a runtime that compiles the module but computes
    // otherwise is not used.
    memory.fill(0x5a, 0, 16)
    exports.x(0, 16, 0x01020304)
    const expected = new Uint8Array(new Int32Array([0x01020304]).buffer)
    for (let i = 0; i < 16; i++) if (memory[i] !== (0x5a ^ expected[i & 3]!)) return undefined
    return { memory, x: exports.x }
  } catch {
    // No WebAssembly, or no SIMD (the module does not validate).
    return undefined
  }
}

const simd = instantiate()

/**
 * XORs `buf[start..start+n)` in place with `word` repeated, `n` a multiple of
 * 16, through the module's memory in blocks.
 */
const inPlace = (simd: Instance, buf: Uint8Array, start: number, n: number, word: number): void => {
  const { memory, x } = simd
  for (let done = 0; done < n; done += BLOCK) {
    const size = n - done < BLOCK ? n - done : BLOCK
    const piece = new Uint8Array(buf.buffer, buf.byteOffset + start + done, size)
    memory.set(piece)
    x(0, size, word)
    piece.set(size === BLOCK ? memory : memory.subarray(0, size))
  }
}

/**
 * Copies `src[from..from+n)` into `dst` at `at`, XORed with `word`
 * repeated, `n` a multiple of 16: one pass in, one out, `src` untouched.
 */
const copy = (simd: Instance, dst: Uint8Array, at: number, src: Uint8Array, from: number, n: number, word: number): void => {
  const { memory, x } = simd
  for (let done = 0; done < n; done += BLOCK) {
    const size = n - done < BLOCK ? n - done : BLOCK
    memory.set(new Uint8Array(src.buffer, src.byteOffset + from + done, size))
    x(0, size, word)
    dst.set(size === BLOCK ? memory : memory.subarray(0, size), at + done)
  }
}

/**
 * The SIMD XOR, when the runtime has it: `inPlace(buf, start, n, word)` and
 * `copy(dst, at, src, from, n, word)`, for `n` a multiple of 16 (the phase
 * of the key is unchanged after them).
 *
 * @internal
 */
export const Simd = simd === undefined ? undefined : {
  inPlace: (buf: Uint8Array, start: number, n: number, word: number): void => inPlace(simd, buf, start, n, word),
  copy: (dst: Uint8Array, at: number, src: Uint8Array, from: number, n: number, word: number): void =>
    copy(simd, dst, at, src, from, n, word)
}

/**
 * Below this many bytes the JavaScript word loop is faster than the copies
 * in and out of the module's memory.
 *
 * @internal
 */
export const SIMD_THRESHOLD = 512
