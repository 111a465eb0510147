/**
 * Pearson correlation between every latent of one SAE and every latent of another on the same tokens, streamed
 * over batches: each batch's codes are made dense and their cross products come from the native sgemm (float32
 * within a batch), added to float64 sums across batches, with each latent's sum and sum of squares beside them.
 * Memory depends on the latent counts and the batch size only, never on the number of tokens:
 * 8·S·T bytes of sums, 4·B·(S + T) of dense batch codes and a float32 product tile of about 16 MB.
 *
 * Shape letters: B tokens in a batch, S latents of run A, T latents of run B.
 */
import type { SparseActs } from '../../sae/native.js';
import { native } from '../../sae/native.js';

/** Floats in one float32 product tile (rows of S times T). */
const TILE_FLOATS = 1 << 22;

/**
 * A variance below this fraction of the mean square counts as zero: a latent that never fires, or one whose value
 * never changes, has no defined correlation, and we report 0 for it rather than NaN or rounding noise.
 */
const RELATIVE_VARIANCE_FLOOR = 1e-10;

export class StreamingCorrelation {
  /** Tokens added so far. */
  n = 0;
  readonly sumA_S: Float64Array;
  readonly sqA_S: Float64Array;
  readonly sumB_T: Float64Array;
  readonly sqB_T: Float64Array;
  /** Sum over tokens of a_s * b_t. */
  readonly cross_ST: Float64Array;
  /** Batch codes of A transposed (so that any block of latents is contiguous) and of B. */
  private readonly denseA_SB: Float32Array;
  private readonly denseB_BT: Float32Array;
  private readonly tileRows: number;
  private readonly tile: Float32Array;

  constructor(
    readonly S: number,
    readonly T: number,
    /** The most tokens one `add` call may bring. */
    readonly maxBatch: number,
  ) {
    this.sumA_S = new Float64Array(S);
    this.sqA_S = new Float64Array(S);
    this.sumB_T = new Float64Array(T);
    this.sqB_T = new Float64Array(T);
    this.cross_ST = new Float64Array(S * T);
    this.denseA_SB = new Float32Array(S * maxBatch);
    this.denseB_BT = new Float32Array(maxBatch * T);
    this.tileRows = Math.max(1, Math.min(S, Math.floor(TILE_FLOATS / Math.max(1, T))));
    this.tile = new Float32Array(this.tileRows * T);
  }

  /** Bytes an accumulator of these sizes holds. */
  static bytes(S: number, T: number, maxBatch: number): number {
    return 8 * S * T + 4 * maxBatch * (S + T) + 4 * Math.min(S * T, Math.max(T, TILE_FLOATS)) + 16 * (S + T);
  }

  /** Adds one batch: row b of `a` and row b of `b` are the two SAEs' codes of the same token. */
  add(a: SparseActs<Float32Array>, b: SparseActs<Float32Array>): void {
    const rows = a.rowptr.length - 1;
    if (b.rowptr.length - 1 !== rows) throw new Error(`the two code batches have ${rows} and ${b.rowptr.length - 1} tokens`);
    if (rows > this.maxBatch) throw new Error(`a batch of ${rows} tokens is larger than the ${this.maxBatch} this accumulator holds`);
    if (rows === 0) return;
    const { S, T, denseA_SB, denseB_BT } = this;
    for (let r = 0; r < rows; r++) {
      for (let e = a.rowptr[r]; e < a.rowptr[r + 1]; e++) {
        const s = a.idx[e],
          x = a.val[e];
        denseA_SB[s * rows + r] = x;
        this.sumA_S[s] += x;
        this.sqA_S[s] += x * x;
      }
      for (let e = b.rowptr[r]; e < b.rowptr[r + 1]; e++) {
        const t = b.idx[e],
          x = b.val[e];
        denseB_BT[r * T + t] = x;
        this.sumB_T[t] += x;
        this.sqB_T[t] += x * x;
      }
    }
    const sgemm = native().sgemm;
    const B_ = denseB_BT.subarray(0, rows * T);
    for (let s0 = 0; s0 < S; s0 += this.tileRows) {
      const h = Math.min(this.tileRows, S - s0);
      const tile = this.tile.subarray(0, h * T);
      sgemm(false, false, h, T, rows, denseA_SB.subarray(s0 * rows, (s0 + h) * rows), B_, tile);
      const out = this.cross_ST.subarray(s0 * T, (s0 + h) * T);
      for (let i = 0; i < tile.length; i++) out[i] += tile[i];
    }
    // Clear only what was written: the buffers are mostly zeros.
    for (let r = 0; r < rows; r++) {
      for (let e = a.rowptr[r]; e < a.rowptr[r + 1]; e++) denseA_SB[a.idx[e] * rows + r] = 0;
      for (let e = b.rowptr[r]; e < b.rowptr[r + 1]; e++) denseB_BT[r * T + b.idx[e]] = 0;
    }
    this.n += rows;
  }

  /**
   * The correlation matrix r_ST, computed in place over the cross sums (so the accumulator is spent afterwards).
   * Latents without variance correlate 0 with everything; values are clamped to [-1, 1].
   */
  correlations(): Float64Array {
    const { S, T, n } = this;
    const stats = (sum: Float64Array, sq: Float64Array) => {
      const mean = new Float64Array(sum.length),
        sd = new Float64Array(sum.length);
      for (let i = 0; i < sum.length; i++) {
        mean[i] = n ? sum[i] / n : 0;
        const meanSq = n ? sq[i] / n : 0;
        const variance = meanSq - mean[i] * mean[i];
        sd[i] = variance > RELATIVE_VARIANCE_FLOOR * meanSq ? Math.sqrt(variance) : 0;
      }
      return { mean, sd };
    };
    const a = stats(this.sumA_S, this.sqA_S),
      b = stats(this.sumB_T, this.sqB_T);
    const r_ST = this.cross_ST;
    for (let s = 0; s < S; s++) {
      for (let t = 0; t < T; t++) {
        const i = s * T + t;
        const denom = a.sd[s] * b.sd[t];
        r_ST[i] = denom > 0 ? Math.max(-1, Math.min(1, (r_ST[i] / n - a.mean[s] * b.mean[t]) / denom)) : 0;
      }
    }
    return r_ST;
  }
}
