/**
 * Streaming per-latent statistics and top-k exemplar images over SAE latents, in memory bounded by the number of
 * latents (never by the number of images): fixed-size heaps per latent, fixed-size histograms. Fed one whole
 * image at a time (the CSR latents of its patch tokens), so every image is scored once by its per-patch maximum.
 *
 * Shape letters: S latents, K exemplars per latent, P patches per image, C co-firing latents kept per exemplar,
 * H histogram bins, M top latents kept per image.
 */

/** Value histogram on a log2 scale: bin b covers [2^(MIN_EXP + b/BPO), 2^(MIN_EXP + (b+1)/BPO)). */
export const HIST_BINS_PER_OCTAVE = 4;
export const HIST_MIN_EXP = -20;
export const HIST_MAX_EXP = 20;
export const HIST_BINS = (HIST_MAX_EXP - HIST_MIN_EXP) * HIST_BINS_PER_OCTAVE;

/** The histogram bin of a positive value; values outside the range fall into the first or last bin. */
export function histBin(v: number): number {
  const b = Math.floor((Math.log2(v) - HIST_MIN_EXP) * HIST_BINS_PER_OCTAVE);
  return b < 0 ? 0 : b >= HIST_BINS ? HIST_BINS - 1 : b;
}

export interface AccumulatorShape {
  nLatents: number;
  /** Exemplar images kept per latent. */
  k: number;
  patches: number;
  /** Co-firing latents kept per exemplar (the strongest others at the exemplar's peak patch). */
  cofire: number;
  /** Top latents reported per image. */
  imageTop: number;
}

/** One image's patch tokens as CSR rows: latents idx[rowptr[r]..rowptr[r+1]] of row `row0 + p` are patch p's. */
export interface ImageRows {
  rowptr: Int32Array;
  idx: Int32Array;
  val: Float32Array;
  row0: number;
}

export interface Exemplar {
  example: number;
  /** The latent's maximum over the image's patches. */
  max: number;
  /** Per-patch values quantised to 0..255 of `max` (0 = not firing). */
  patches_P: Uint8Array;
  /** Latents firing most strongly at the peak patch besides this one, strongest first (-1 pads). */
  cofire_C: Int32Array;
}

export interface LatentStats {
  fireTokens: number;
  fireImages: number;
  sum: number;
  max: number;
}

type Arrays = ReturnType<ExemplarAccumulator['arrays']>;

export class ExemplarAccumulator {
  nImages = 0;
  nTokens = 0;
  // Heaps: slot arrays indexed [latent * K + slot]; heap_SK holds slot numbers, the worst exemplar at the root.
  private readonly score_SK: Float32Array;
  private readonly example_SK: Int32Array;
  private readonly patches_SKP: Uint8Array;
  private readonly cofire_SKC: Int32Array;
  private readonly heap_SK: Uint16Array;
  private readonly count_S: Uint16Array;
  // Statistics.
  private readonly fireTokens_S: Float64Array;
  private readonly fireImages_S: Float64Array;
  private readonly sum_S: Float64Array;
  private readonly max_S: Float32Array;
  private readonly hist_SH: Uint32Array;
  // Per-image scratch, reset after each image: touched latents, their max, peak row and entry counts.
  private readonly touched: Int32Array;
  private readonly imgMax_S: Float32Array;
  private readonly imgArg_S: Int32Array;
  private readonly imgCount_S: Int32Array;
  private readonly offset_S: Int32Array;
  private entPatch = new Int32Array(1024);
  private entVal = new Float32Array(1024);
  /** Per-image: entry indices of each row sorted by value (filled for peak rows only), and which rows are done. */
  private rowSorted = new Int32Array(1024);
  private readonly rowReady: Uint8Array;

  constructor(
    readonly shape: AccumulatorShape,
    state?: Arrays,
  ) {
    const { nLatents: S, k: K, patches: P, cofire: C } = shape;
    if (K > 65535) throw new RangeError('k must be at most 65535');
    this.score_SK = state?.score_SK ?? new Float32Array(S * K);
    this.example_SK = state?.example_SK ?? new Int32Array(S * K);
    this.patches_SKP = state?.patches_SKP ?? new Uint8Array(S * K * P);
    this.cofire_SKC = state?.cofire_SKC ?? new Int32Array(S * K * C);
    this.heap_SK = state?.heap_SK ?? new Uint16Array(S * K);
    this.count_S = state?.count_S ?? new Uint16Array(S);
    this.fireTokens_S = state?.fireTokens_S ?? new Float64Array(S);
    this.fireImages_S = state?.fireImages_S ?? new Float64Array(S);
    this.sum_S = state?.sum_S ?? new Float64Array(S);
    this.max_S = state?.max_S ?? new Float32Array(S);
    this.hist_SH = state?.hist_SH ?? new Uint32Array(S * HIST_BINS);
    const want = {
      score_SK: S * K,
      example_SK: S * K,
      patches_SKP: S * K * P,
      cofire_SKC: S * K * C,
      heap_SK: S * K,
      count_S: S,
      fireTokens_S: S,
      fireImages_S: S,
      sum_S: S,
      max_S: S,
      hist_SH: S * HIST_BINS,
    };
    const arrays = this.arrays();
    for (const [name, n] of Object.entries(want)) {
      const got = arrays[name as keyof Arrays].length;
      if (got !== n) throw new RangeError(`accumulator state ${name} has ${got} values, expected ${n}`);
    }
    this.touched = new Int32Array(S);
    this.imgMax_S = new Float32Array(S);
    this.imgArg_S = new Int32Array(S);
    this.imgCount_S = new Int32Array(S);
    this.offset_S = new Int32Array(S);
    this.rowReady = new Uint8Array(P);
  }

  /** The whole state, for checkpoints; pass it back to the constructor to continue. */
  arrays() {
    return {
      score_SK: this.score_SK,
      example_SK: this.example_SK,
      patches_SKP: this.patches_SKP,
      cofire_SKC: this.cofire_SKC,
      heap_SK: this.heap_SK,
      count_S: this.count_S,
      fireTokens_S: this.fireTokens_S,
      fireImages_S: this.fireImages_S,
      sum_S: this.sum_S,
      max_S: this.max_S,
      hist_SH: this.hist_SH,
    };
  }

  /**
   * Adds one image (its P patch rows, patch p at row row0 + p). Returns its top latents by per-image maximum,
   * strongest first (ties: smaller latent first), at most `imageTop`.
   */
  addImage(example: number, rows: ImageRows): { latents: Int32Array; values: Float32Array } {
    const { k: K, patches: P, cofire: C } = this.shape;
    const { rowptr, idx, val, row0 } = rows;
    const imgMax = this.imgMax_S,
      imgArg = this.imgArg_S,
      imgCount = this.imgCount_S,
      touched = this.touched;
    let nTouched = 0;
    let nEntries = 0;
    for (let p = 0; p < P; p++) {
      const r = row0 + p;
      for (let e = rowptr[r]; e < rowptr[r + 1]; e++) {
        const v = val[e];
        if (!(v > 0)) continue;
        const j = idx[e];
        this.fireTokens_S[j]++;
        this.sum_S[j] += v;
        if (v > this.max_S[j]) this.max_S[j] = v;
        this.hist_SH[j * HIST_BINS + histBin(v)]++;
        if (imgCount[j]++ === 0) touched[nTouched++] = j;
        if (v > imgMax[j]) {
          imgMax[j] = v;
          imgArg[j] = r;
        }
        nEntries++;
      }
    }
    this.nTokens += P;
    this.nImages++;
    // Group the image's entries by latent (counting sort), so an exemplar's patch values cost only its own entries.
    if (this.entPatch.length < nEntries) {
      this.entPatch = new Int32Array(nEntries * 2);
      this.entVal = new Float32Array(nEntries * 2);
    }
    let at = 0;
    for (let t = 0; t < nTouched; t++) {
      const j = touched[t];
      this.offset_S[j] = at;
      at += imgCount[j];
    }
    for (let p = 0; p < P; p++) {
      const r = row0 + p;
      for (let e = rowptr[r]; e < rowptr[r + 1]; e++) {
        if (!(val[e] > 0)) continue;
        const pos = this.offset_S[idx[e]]++;
        this.entPatch[pos] = p;
        this.entVal[pos] = val[e];
      }
    }
    // Co-firing lists sort a peak row's entries once per image, however many latents peak there.
    const entries = rowptr[row0 + P] - rowptr[row0];
    if (this.rowSorted.length < entries) this.rowSorted = new Int32Array(entries * 2);
    this.rowReady.fill(0);
    const patches = this.patches_SKP;
    for (let t = 0; t < nTouched; t++) {
      const j = touched[t];
      this.fireImages_S[j]++;
      const slot = this.offer(j, imgMax[j], example);
      if (slot < 0) continue;
      const s = j * K + slot;
      const score = imgMax[j];
      patches.fill(0, s * P, (s + 1) * P);
      const end = this.offset_S[j]; // advanced past the latent's entries by the fill above
      for (let e = end - imgCount[j]; e < end; e++) patches[s * P + this.entPatch[e]] = Math.round((this.entVal[e] / score) * 255);
      // The strongest other latents at the peak patch.
      const r = imgArg[j];
      const base = rowptr[r] - rowptr[row0];
      if (!this.rowReady[r - row0]) {
        this.sortRow(r, base, rowptr, idx, val);
        this.rowReady[r - row0] = 1;
      }
      let c = 0;
      for (let e = 0; e < rowptr[r + 1] - rowptr[r] && c < C; e++) {
        const at = this.rowSorted[base + e];
        if (idx[at] !== j && val[at] > 0) this.cofire_SKC[s * C + c++] = idx[at];
      }
      this.cofire_SKC.fill(-1, s * C + c, (s + 1) * C);
    }
    const top = this.imageTopLatents(nTouched);
    for (let t = 0; t < nTouched; t++) {
      const j = touched[t];
      imgMax[j] = 0;
      imgCount[j] = 0;
    }
    return top;
  }

  /** Sorts row r's entry indices by value, strongest first (ties: smaller latent), into rowSorted[base...]. */
  private sortRow(r: number, base: number, rowptr: Int32Array, idx: Int32Array, val: Float32Array): void {
    const out = this.rowSorted;
    const n = rowptr[r + 1] - rowptr[r];
    // Insertion sort: a row holds a few dozen entries.
    for (let i = 0; i < n; i++) {
      const e = rowptr[r] + i;
      let k = i;
      while (k > 0) {
        const prev = out[base + k - 1];
        if (val[prev] > val[e] || (val[prev] === val[e] && idx[prev] < idx[e])) break;
        out[base + k] = prev;
        k--;
      }
      out[base + k] = e;
    }
  }

  /** The current image's top latents by maximum (ties: smaller latent), by insertion into a list of at most M. */
  private imageTopLatents(nTouched: number): { latents: Int32Array; values: Float32Array } {
    const M = this.shape.imageTop;
    const latents = new Int32Array(M);
    const values = new Float32Array(M);
    let n = 0;
    for (let t = 0; t < nTouched; t++) {
      const j = this.touched[t];
      const v = this.imgMax_S[j];
      if (n === M && (v < values[M - 1] || (v === values[M - 1] && j > latents[M - 1]))) continue;
      let k = n < M ? n++ : M - 1;
      while (k > 0 && (values[k - 1] < v || (values[k - 1] === v && latents[k - 1] > j))) {
        values[k] = values[k - 1];
        latents[k] = latents[k - 1];
        k--;
      }
      values[k] = v;
      latents[k] = j;
    }
    return { latents: latents.slice(0, n), values: values.slice(0, n) };
  }

  /** Whether slot a ranks below slot b: lower score, or equal score and later example. */
  private worse(a: number, b: number): boolean {
    const sa = this.score_SK[a],
      sb = this.score_SK[b];
    return sa < sb || (sa === sb && this.example_SK[a] > this.example_SK[b]);
  }

  /**
   * Offers (score, example) to latent j's top-k; returns the slot it now occupies, or -1 if it ranks below all k.
   * Exemplars are ordered by score, ties by example index (earlier first).
   */
  private offer(j: number, score: number, example: number): number {
    const K = this.shape.k;
    const base = j * K;
    const heap = this.heap_SK;
    const n = this.count_S[j];
    let slot: number;
    let i: number;
    if (n < K) {
      slot = n;
      this.count_S[j] = n + 1;
      this.score_SK[base + slot] = score;
      this.example_SK[base + slot] = example;
      // Sift up from the new leaf.
      for (i = n; i > 0; ) {
        const parent = (i - 1) >> 1;
        if (!this.worse(base + slot, base + heap[base + parent])) break;
        heap[base + i] = heap[base + parent];
        i = parent;
      }
      heap[base + i] = slot;
      return slot;
    }
    slot = heap[base];
    const worst = this.score_SK[base + slot];
    if (score < worst || (score === worst && example >= this.example_SK[base + slot])) return -1;
    this.score_SK[base + slot] = score;
    this.example_SK[base + slot] = example;
    // Sift down from the root.
    for (i = 0; ; ) {
      const l = 2 * i + 1;
      if (l >= K) break;
      const c = l + 1 < K && this.worse(base + heap[base + l + 1], base + heap[base + l]) ? l + 1 : l;
      if (!this.worse(base + heap[base + c], base + slot)) break;
      heap[base + i] = heap[base + c];
      i = c;
    }
    heap[base + i] = slot;
    return slot;
  }

  /** Latent j's exemplars, best first; their arrays are views of the accumulator's state (no copies). */
  exemplars(j: number): Exemplar[] {
    const { k: K, patches: P, cofire: C } = this.shape;
    const out: Exemplar[] = [];
    for (let slot = 0; slot < this.count_S[j]; slot++) {
      const s = j * K + slot;
      out.push({
        example: this.example_SK[s],
        max: this.score_SK[s],
        patches_P: this.patches_SKP.subarray(s * P, (s + 1) * P),
        cofire_C: this.cofire_SKC.subarray(s * C, (s + 1) * C),
      });
    }
    return out.sort((a, b) => b.max - a.max || a.example - b.example);
  }

  stats(j: number): LatentStats {
    return { fireTokens: this.fireTokens_S[j], fireImages: this.fireImages_S[j], sum: this.sum_S[j], max: this.max_S[j] };
  }

  histogram(j: number): Uint32Array {
    return this.hist_SH.subarray(j * HIST_BINS, (j + 1) * HIST_BINS);
  }
}
