/**
 * Matching latents across two runs from their correlation matrix: each latent's best match in the other run, and
 * the one-to-one Hungarian assignment that maximises the total correlation. Latents that never fire have no
 * correlation with anything: they get no best match and are never anyone's best match.
 *
 * Shape letters: S latents of run A, T latents of run B.
 */
import { binOf } from './format.js';
import { maxWeightAssignment } from './hungarian.js';

export interface SideMatches {
  /** The best live latent of the other run (-1 if this latent or every latent there is dead) and its r. */
  best: Int32Array;
  bestR: Float64Array;
  /** The Hungarian partner (-1 when left out) and its r. */
  partner: Int32Array;
  partnerR: Float64Array;
}

/** `liveA_S[s]` / `liveB_T[t]` say whether a latent fired on the compared tokens. */
export function matchLatents(r_ST: Float64Array, S: number, T: number, liveA_S: Uint8Array, liveB_T: Uint8Array): [SideMatches, SideMatches] {
  const side = (n: number): SideMatches => ({
    best: new Int32Array(n).fill(-1),
    bestR: new Float64Array(n),
    partner: new Int32Array(n).fill(-1),
    partnerR: new Float64Array(n),
  });
  const a = side(S),
    b = side(T);
  a.bestR.fill(-Infinity);
  b.bestR.fill(-Infinity);
  for (let s = 0; s < S; s++) {
    if (!liveA_S[s]) continue;
    for (let t = 0; t < T; t++) {
      if (!liveB_T[t]) continue;
      const r = r_ST[s * T + t];
      if (r > a.bestR[s]) {
        a.bestR[s] = r;
        a.best[s] = t;
      }
      if (r > b.bestR[t]) {
        b.bestR[t] = r;
        b.best[t] = s;
      }
    }
  }
  for (const x of [a, b]) for (let i = 0; i < x.bestR.length; i++) if (x.best[i] < 0) x.bestR[i] = 0;

  const partner_S = maxWeightAssignment(r_ST, S, T);
  for (let s = 0; s < S; s++) {
    const t = partner_S[s];
    if (t < 0) continue;
    a.partner[s] = t;
    b.partner[t] = s;
    a.partnerR[s] = b.partnerR[t] = r_ST[s * T + t];
  }
  return [a, b];
}

/** Counts of `values` per bin of `edges`, with their mean and median (0 for no values). */
export function distribution(values: readonly number[], edges: readonly number[]): { counts: number[]; mean: number; median: number } {
  const counts = new Array<number>(edges.length - 1).fill(0);
  for (const v of values) counts[binOf(edges, v)]++;
  const sorted = [...values].sort((x, y) => x - y);
  const h = sorted.length >> 1;
  const median = !sorted.length ? 0 : sorted.length % 2 ? sorted[h] : (sorted[h - 1] + sorted[h]) / 2;
  return { counts, mean: sorted.length ? sorted.reduce((s, v) => s + v, 0) / sorted.length : 0, median };
}
