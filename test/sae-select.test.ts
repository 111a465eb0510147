/**
 * TopK selection against a plain ranking in JS. Small integer inputs and weights make every pre-activation exact in
 * both precisions and full of ties, so the test also pins the tie rule (the lower latent wins) and that NaN is
 * never chosen; rows long enough for the grouped search (topk.h) and short rows (which rank everything) are covered,
 * in float32 (vectorised where the CPU has AVX-512) and float64 (the generic code).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../src/sae/native.js';
import { Rng } from '../src/util/random.js';

const D = 4,
  B = 50;

/** Per token, the k largest of x W_enc^T + b_enc by (value desc, latent asc), NaN left out, in latent order. */
function reference(x: Float64Array, W: Float64Array, bEnc: Float64Array, S: number, K: number) {
  const idx: number[] = [],
    val: number[] = [];
  for (let b = 0; b < B; b++) {
    const row: [number, number][] = [];
    for (let s = 0; s < S; s++) {
      let v = bEnc[s];
      for (let d = 0; d < D; d++) v += x[b * D + d] * W[s * D + d];
      if (!Number.isNaN(v)) row.push([v, s]);
    }
    row.sort((a, c) => c[0] - a[0] || a[1] - c[1]);
    const top = row.slice(0, K).sort((a, c) => a[1] - c[1]);
    idx.push(...top.map((e) => e[1]));
    val.push(...top.map((e) => Math.max(e[0], 0)));
  }
  return { idx, val };
}

for (const [S, K] of [
  [3000, 8],
  [12288, 32],
  [40, 8],
] as const) {
  for (const kind of ['SaeF32', 'SaeF64'] as const) {
    test(`topk (d_sae ${S}, k ${K}, ${kind}) keeps the k largest per token, ties to the lower latent, never NaN`, async () => {
      const rng = new Rng(5, S);
      const int = (n: number, m: number) => Float64Array.from({ length: n }, () => rng.nextInt(2 * m + 1) - m);
      const x = int(B * D, 2),
        W = int(S * D, 3),
        bEnc = int(S, 2);
      for (let s = 0; s < S; s += 7) bEnc[s] = Number.NaN;
      const Arr = kind === 'SaeF32' ? Float32Array : Float64Array;
      const core = new (native()[kind])({ d: D, s: S, activation: 1, k: K, prefixes: [S], kAux: 0, auxCoeff: 0, deadWindow: 1e12, thresholdMomentum: 0.99 });
      core.setTensor('W_enc', Arr.from(W) as Float32Array & Float64Array);
      core.setTensor('b_enc', Arr.from(bEnc) as Float32Array & Float64Array);
      const got = await core.infer(Arr.from(x) as Float32Array & Float64Array);
      const want = reference(x, W, bEnc, S, K);
      assert.deepEqual(
        Array.from(got.rowptr),
        Array.from({ length: B + 1 }, (_, b) => b * K),
      );
      assert.deepEqual(Array.from(got.idx), want.idx);
      assert.deepEqual(Array.from(got.val), want.val);
    });
  }
}
