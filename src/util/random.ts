/**
 * A small seeded PRNG (xoshiro128**) in plain 32-bit arithmetic, so that shuffles and synthetic data are
 * reproducible across machines and Node versions without BigInt. Not for cryptography.
 */

const GOLDEN = 0x9e3779b9;

/** murmur3's 32-bit finalizer: a cheap bijective mix with full avalanche. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | null = null;

  /**
   * Seeds from a list of non-negative integer keys (each below 2^53), e.g. `new Rng(seed, epoch)`: different key lists
   * give independent streams, so a component can derive the generator for (epoch, window) directly instead of
   * replaying earlier draws, which is what makes O(1) resume possible.
   */
  constructor(...keys: number[]) {
    let h = 0x243f6a88;
    for (const key of keys) {
      if (!Number.isSafeInteger(key) || key < 0) throw new RangeError(`Rng: keys must be non-negative safe integers, got ${key}`);
      for (const word of [key >>> 0, Math.floor(key / 2 ** 32) >>> 0]) h = (fmix32((h ^ word) >>> 0) + GOLDEN) >>> 0;
    }
    h = fmix32((h ^ keys.length) >>> 0);
    const s: number[] = [];
    for (let i = 0; i < 4; i++) {
      h = (h + GOLDEN) >>> 0;
      s.push(fmix32(h));
    }
    [this.s0, this.s1, this.s2, this.s3] = s;
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
  }

  /** Uniform integer in [0, 2^32). */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform float in [0, 1) with 32 random bits. */
  nextFloat(): number {
    return this.nextU32() / 2 ** 32;
  }

  /** Uniform integer in [0, n) for 1 <= n <= 2^32, without modulo bias (rejection sampling). */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 2 ** 32) throw new RangeError(`Rng.nextInt: n must be an integer in [1, 2^32], got ${n}`);
    const limit = 2 ** 32 - (2 ** 32 % n);
    for (;;) {
      const r = this.nextU32();
      if (r < limit) return r % n;
    }
  }

  /** Standard normal sample (Box-Muller; the second value of each pair is kept for the next call). */
  normal(): number {
    if (this.spare !== null) {
      const z = this.spare;
      this.spare = null;
      return z;
    }
    const r = Math.sqrt(-2 * Math.log(1 - this.nextFloat())); // 1 - u is in (0, 1], so the log is finite
    const theta = 2 * Math.PI * this.nextFloat();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** In-place Fisher-Yates shuffle. */
  shuffle<T extends { length: number; [i: number]: unknown }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = a[i];
      a[i] = a[j];
      a[j] = tmp;
    }
    return a;
  }

  /** A uniformly random permutation of 0..n-1. */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }
}
