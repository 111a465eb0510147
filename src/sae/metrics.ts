/**
 * Reconstruction and sparsity metrics from the core's float64 sums (see `RawMetrics`). MSE is per element in
 * raw activation units; NMSE (the fraction of variance unexplained, FVU) and explained variance are scale free:
 *   nmse = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2
 *   explained_variance = 1 - sum_d Var(x_d - x_hat_d) / sum_d Var(x_d)   (a constant reconstruction bias is not penalised)
 */
import type { RawMetrics } from './native.js';

export interface SaeMetrics {
  mse: number;
  nmse: number;
  explained_variance: number;
  /** Mean active latents per token. */
  l0: number;
  /** Latents that did not fire in the window (see `dead_window_tokens`). */
  dead_fraction: number;
  /** Latents that fired on more than `dense_threshold` of the tokens. */
  dense_fraction: number;
  n_tokens: number;
}

function centredSumSq(sumSq: number, sum: Float64Array, n: number): number {
  let m = 0;
  for (let d = 0; d < sum.length; d++) m += sum[d] * sum[d];
  return sumSq - m / n;
}

/**
 * @param dead per-latent flag source: `since_fired` from training (dead when >= window), or null to count latents
 *   that never fired in these sums (evaluation).
 */
export function summarize(raw: RawMetrics, opts: { inputScale: number; denseThreshold: number; sinceFired?: Float64Array; deadWindow?: number }): SaeMetrics {
  const n = raw.n;
  const D = raw.sumX.length;
  const S = raw.fires.length;
  const totalVar = centredSumSq(raw.sumX2, raw.sumX, n);
  const residVar = centredSumSq(raw.sumR2, raw.sumR, n);
  let dead = 0,
    dense = 0;
  for (let s = 0; s < S; s++) {
    const isDead = opts.sinceFired ? opts.sinceFired[s] >= (opts.deadWindow ?? Infinity) : raw.fires[s] === 0;
    if (isDead) dead++;
    if (raw.fires[s] > opts.denseThreshold * n) dense++;
  }
  return {
    mse: raw.sse / (n * D) / (opts.inputScale * opts.inputScale),
    nmse: raw.sse / totalVar,
    explained_variance: 1 - residVar / totalVar,
    l0: raw.l0 / n,
    dead_fraction: dead / S,
    dense_fraction: dense / S,
    n_tokens: n,
  };
}
