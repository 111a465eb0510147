/**
 * Token loaders over a ShardDataset: one layer's tokens as [B, D] float32 batches, in file order (evaluation,
 * exemplars) or shuffled with bounded memory (training). The shuffling scheme is documented in README.md.
 */
import { UserError } from '../util/errors.js';
import type { ShardDataset } from './format.js';
import { Rng } from '../util/random.js';

/** Which rows a loader yields: the tokens of one recorded layer (a metadata.layers value or negative index). */
export interface TokenSelection {
  layer: number;
  tokens: 'patches' | 'cls' | 'all';
}

/** The selected stored-token range of every example; selections are contiguous because CLS is stored first. */
interface Selected {
  layerIdx: number;
  tokenStart: number;
  /** Selected tokens per example. */
  perExample: number;
}

function resolveSelection(ds: ShardDataset, sel: TokenSelection): Selected {
  const layerIdx = ds.layerIndex(sel.layer);
  const cls = ds.metadata.cls_token ? 1 : 0;
  switch (sel.tokens) {
    case 'patches':
      return { layerIdx, tokenStart: cls, perExample: ds.metadata.content_tokens_per_example };
    case 'cls':
      if (!cls) throw new UserError(`${ds.dir} has no CLS token (cls_token is false in metadata.json); select tokens 'patches' or 'all'`);
      return { layerIdx, tokenStart: 0, perExample: 1 };
    case 'all':
      return { layerIdx, tokenStart: 0, perExample: ds.tokensPerExample };
  }
}

function checkInt(name: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${v}`);
}

export interface OrderedBatch {
  index: number;
  acts_BD: Float32Array;
  /** Example index of each row. */
  example_B: Int32Array;
  /** Patch (content token) index of each row, -1 for the CLS token: saev's `token_idx` convention. */
  patch_B: Int32Array;
}

/** All selected tokens once, in file order (example-major, then token); the last batch may be smaller. */
export class OrderedTokenLoader {
  readonly d: number;
  /** Tokens in the whole pass. */
  readonly nTokens: number;
  private readonly sel: Selected;

  constructor(
    readonly ds: ShardDataset,
    readonly selection: TokenSelection,
    readonly batchSize: number,
  ) {
    checkInt('batchSize', batchSize, 1);
    this.sel = resolveSelection(ds, selection);
    this.d = ds.d;
    this.nTokens = ds.nExamples * this.sel.perExample;
  }

  get nBatches(): number {
    return Math.ceil(this.nTokens / this.batchSize);
  }

  /**
   * Batches `startBatch` up to `endBatch` (exclusive; default: to the end); the next batch's read is in flight while
   * one is consumed.
   */
  async *batches(startBatch = 0, endBatch = Infinity): AsyncGenerator<OrderedBatch> {
    checkInt('startBatch', startBatch, 0);
    const end = Math.min(endBatch, this.nBatches);
    let pending = startBatch < end ? prefetch(this.read(startBatch)) : null;
    try {
      for (let b = startBatch; pending; b++) {
        const batch = await pending;
        pending = b + 1 < end ? prefetch(this.read(b + 1)) : null;
        yield batch;
      }
    } finally {
      await pending?.catch(() => undefined); // no reads in flight once the generator is done
    }
  }

  /** The first `nTokens` tokens, batch by batch (see TokenSource). */
  async *sampleSpans(nTokens: number): AsyncGenerator<TokenSpan> {
    let left = nTokens;
    for await (const { acts_BD } of this.batches(0, Math.ceil(nTokens / this.batchSize))) {
      const take = Math.min(left, acts_BD.length / this.d);
      yield { tokens_TD: acts_BD, rows: Uint32Array.from({ length: take }, (_, i) => i) };
      left -= take;
    }
  }

  /** Reads the examples overlapping batch `b` and cuts its rows out. */
  private async read(b: number): Promise<OrderedBatch> {
    const { layerIdx, tokenStart, perExample: s } = this.sel;
    const d = this.d;
    const row0 = b * this.batchSize;
    const rows = Math.min(this.batchSize, this.nTokens - row0);
    const ex0 = Math.floor(row0 / s);
    const ex1 = Math.ceil((row0 + rows) / s);
    const buf = await this.ds.readTokens(layerIdx, ex0, ex1 - ex0, tokenStart, s);
    const skip = row0 - ex0 * s;
    const example_B = new Int32Array(rows);
    const patch_B = new Int32Array(rows);
    const cls = this.ds.metadata.cls_token ? 1 : 0;
    for (let r = 0; r < rows; r++) {
      const t = row0 + r;
      example_B[r] = Math.floor(t / s);
      patch_B[r] = tokenStart + (t % s) - cls;
    }
    return { index: b, acts_BD: buf.slice(skip * d, (skip + rows) * d), example_B, patch_B };
  }
}

export interface ShuffleConfig {
  seed: number;
  batchSize: number;
  /** Most tokens shuffled together; memory is about 2 × windowTokens × d × 4 bytes (current + prefetched window). */
  windowTokens?: number;
  /** Tokens per chunk of whole examples, the unit of the between-chunk permutation. */
  chunkTokens?: number;
}

export const DEFAULT_WINDOW_TOKENS = 2 ** 18;
export const DEFAULT_CHUNK_TOKENS = 4096;

export interface ShuffledBatch {
  index: number;
  /** Epoch of the batch's first row; a batch may end in the next epoch. */
  epoch: number;
  acts_BD: Float32Array;
}

/** Per-epoch plan: chunk order and the token offset where each window starts (windowStarts[W] = epoch tokens). */
interface EpochPlan {
  epoch: number;
  chunkOrder: Uint32Array;
  windowStarts: Float64Array;
}

interface Window {
  tokens_TD: Float32Array;
  /** Row order within the window. */
  order: Uint32Array;
}

// Stream tags keep the chunk and window generators independent for the same (seed, epoch).
const CHUNK_STREAM = 1;
const WINDOW_STREAM = 2;
const READ_CONCURRENCY = 8;

/**
 * Endless, deterministic, resumable shuffled batches for datasets far larger than RAM. Each epoch permutes chunks
 * of whole examples, groups consecutive permuted chunks into windows of at most `windowTokens` tokens, and permutes
 * the tokens inside each window; batches are cut from the concatenated stream of all epochs, so batch t is a pure
 * function of (data, selection, config, t).
 */
export class ShuffledTokenLoader {
  readonly d: number;
  /** Tokens per epoch. */
  readonly nTokens: number;
  readonly batchSize: number;
  readonly windowTokens: number;
  readonly examplesPerChunk: number;
  readonly nChunks: number;
  readonly chunksPerWindow: number;
  private readonly seed: number;
  private readonly sel: Selected;
  private plans: EpochPlan[] = [];
  /** The window read last: the scale estimate's passes and the training that follows all start with it. */
  private lastWindow: { epoch: number; w: number; window: Promise<Window> } | null = null;

  constructor(
    readonly ds: ShardDataset,
    readonly selection: TokenSelection,
    cfg: ShuffleConfig,
  ) {
    const { seed, batchSize, windowTokens = DEFAULT_WINDOW_TOKENS, chunkTokens = DEFAULT_CHUNK_TOKENS } = cfg;
    checkInt('batchSize', batchSize, 1);
    checkInt('seed', seed, 0);
    checkInt('chunkTokens', chunkTokens, 1);
    this.sel = resolveSelection(ds, selection);
    const s = this.sel.perExample;
    checkInt('windowTokens', windowTokens, 1);
    if (windowTokens < s) throw new RangeError(`windowTokens=${windowTokens} is smaller than one example's ${s} selected tokens; raise windowTokens`);
    this.seed = seed;
    this.batchSize = batchSize;
    this.windowTokens = windowTokens;
    this.d = ds.d;
    this.nTokens = ds.nExamples * s;
    this.examplesPerChunk = Math.max(1, Math.floor(Math.min(chunkTokens, windowTokens) / s));
    this.nChunks = Math.ceil(ds.nExamples / this.examplesPerChunk);
    this.chunksPerWindow = Math.max(1, Math.floor(this.windowTokens / (this.examplesPerChunk * s)));
  }

  /** Token offsets within `epoch` where its windows start, plus the epoch length at the end. */
  windowStarts(epoch: number): Float64Array {
    return this.plan(epoch).windowStarts;
  }

  /**
   * Yields batch `startBatch`, `startBatch + 1`, ... up to `endBatch` (exclusive; default: forever, stop by
   * breaking out). Starting at t costs one epoch plan and one window read, not a replay of batches 0..t-1. The next
   * window is read while one is consumed, unless no batch before `endBatch` needs it.
   */
  async *batches(startBatch = 0, endBatch = Infinity): AsyncGenerator<ShuffledBatch> {
    checkInt('startBatch', startBatch, 0);
    if (startBatch >= endBatch) return;
    const B = this.batchSize;
    const d = this.d;
    const pos = startBatch * B;
    if (!Number.isSafeInteger(pos)) throw new RangeError(`startBatch=${startBatch} × batchSize=${B} is too large`);
    let epoch = Math.floor(pos / this.nTokens);
    const inEpoch = pos - epoch * this.nTokens;
    const starts = this.windowStarts(epoch);
    let w = upperBound(starts, inEpoch) - 1;
    let offset = inEpoch - starts[w];
    let index = startBatch;
    let batch_BD = new Float32Array(B * d);
    let filled = 0;
    let batchEpoch = epoch;
    let pending: Promise<Window> | null = prefetch(this.loadWindow(epoch, w));
    try {
      while (pending) {
        const win: Window = await pending;
        const winEpoch = epoch;
        if (++w === this.windowStarts(epoch).length - 1) {
          epoch++;
          w = 0;
        }
        // The next window starts at token epoch * nTokens + windowStarts[w] of the stream.
        pending = epoch * this.nTokens + this.windowStarts(epoch)[w] < endBatch * B ? prefetch(this.loadWindow(epoch, w)) : null;
        const size = win.order.length;
        while (offset < size) {
          if (filled === 0) batchEpoch = winEpoch;
          const take = Math.min(B - filled, size - offset);
          for (let r = 0; r < take; r++) {
            const src = win.order[offset + r] * d;
            batch_BD.set(win.tokens_TD.subarray(src, src + d), (filled + r) * d);
          }
          filled += take;
          offset += take;
          if (filled === B) {
            yield { index: index++, epoch: batchEpoch, acts_BD: batch_BD };
            if (index >= endBatch) return;
            batch_BD = new Float32Array(B * d);
            filled = 0;
          }
        }
        offset = 0;
      }
    } finally {
      await pending?.catch(() => undefined);
    }
  }

  /**
   * The first `nTokens` tokens of the stream, the rows that batches 0, 1, ... hold, as spans of the windows they
   * lie in, each span's rows in ascending order: statistics over the sample (whose order does not matter) read them
   * in place instead of copying every row into a batch.
   */
  async *sampleSpans(nTokens: number): AsyncGenerator<TokenSpan> {
    let left = nTokens;
    for (let epoch = 0, w = 0; left > 0; ) {
      const win = await this.loadWindow(epoch, w);
      const take = Math.min(left, win.order.length);
      yield { tokens_TD: win.tokens_TD, rows: win.order.slice(0, take).sort() };
      left -= take;
      if (++w === this.windowStarts(epoch).length - 1) {
        epoch++;
        w = 0;
      }
    }
  }

  /** Chunk permutation and window boundaries of an epoch; the last two epochs are cached. */
  private plan(epoch: number): EpochPlan {
    const hit = this.plans.find((p) => p.epoch === epoch);
    if (hit) return hit;
    const chunkOrder = new Rng(this.seed, CHUNK_STREAM, epoch).permutation(this.nChunks);
    const K = this.chunksPerWindow;
    const nWindows = Math.ceil(this.nChunks / K);
    const windowStarts = new Float64Array(nWindows + 1);
    for (let w = 0; w < nWindows; w++) {
      let tokens = 0;
      for (let c = w * K; c < Math.min((w + 1) * K, this.nChunks); c++) tokens += this.chunkExamples(chunkOrder[c]).count * this.sel.perExample;
      windowStarts[w + 1] = windowStarts[w] + tokens;
    }
    const p = { epoch, chunkOrder, windowStarts };
    this.plans = [this.plans[this.plans.length - 1], p].filter((x): x is EpochPlan => x !== undefined);
    return p;
  }

  private chunkExamples(chunk: number): { start: number; count: number } {
    const start = chunk * this.examplesPerChunk;
    return { start, count: Math.min(this.examplesPerChunk, this.ds.nExamples - start) };
  }

  /** Window `w` of `epoch`, read again unless it was the last one read. */
  private loadWindow(epoch: number, w: number): Promise<Window> {
    const last = this.lastWindow;
    if (last && last.epoch === epoch && last.w === w) return last.window;
    const window = this.readWindow(epoch, w);
    this.lastWindow = { epoch, w, window };
    window.catch(() => {
      if (this.lastWindow?.window === window) this.lastWindow = null; // a failed read is retried next time
    });
    return window;
  }

  /** Reads window `w` of `epoch` (its chunks in permuted order) and draws its token order. */
  private async readWindow(epoch: number, w: number): Promise<Window> {
    const { chunkOrder, windowStarts } = this.plan(epoch);
    const { layerIdx, tokenStart, perExample: s } = this.sel;
    const d = this.d;
    const size = windowStarts[w + 1] - windowStarts[w];
    const tokens_TD = new Float32Array(size * d);
    const K = this.chunksPerWindow;
    const jobs: (() => Promise<unknown>)[] = [];
    let at = 0;
    for (let c = w * K; c < Math.min((w + 1) * K, this.nChunks); c++) {
      const { start, count } = this.chunkExamples(chunkOrder[c]);
      const dest = tokens_TD.subarray(at * d, (at + count * s) * d);
      jobs.push(() => this.ds.readTokens(layerIdx, start, count, tokenStart, s, dest));
      at += count * s;
    }
    await runLimited(jobs, READ_CONCURRENCY);
    return { tokens_TD, order: new Rng(this.seed, WINDOW_STREAM, epoch, w).permutation(size) };
  }
}

/**
 * Marks a read-ahead promise as handled, so that a failure while the consumer holds a batch does not crash the
 * process as an unhandled rejection; the error still surfaces when the promise is awaited.
 */
function prefetch<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** First index i with a[i] > x (a sorted ascending). */
function upperBound(a: Float64Array, x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

async function runLimited(jobs: (() => Promise<unknown>)[], limit: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) await jobs[next++]();
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
}

/** Rows `rows` (ascending) of a [T, d] block of tokens. */
export interface TokenSpan {
  tokens_TD: Float32Array;
  rows: Uint32Array;
}

/** Anything that gives its first tokens as spans, e.g. either loader. */
export interface TokenSource {
  readonly d: number;
  /** The first `nTokens` tokens (fewer if the source ends first), the same ones on every call. */
  sampleSpans(nTokens: number): AsyncIterable<TokenSpan>;
}

export interface MeanAndScale {
  mean_D: Float32Array;
  /** Mean L2 norm of (x - mean) over the sample. */
  meanNorm: number;
  /** sqrt(d) / meanNorm: multiplying (x - mean) by it makes the mean norm sqrt(d), so one learning rate fits all models. */
  scale: number;
  /** Tokens actually used (fewer than asked if the source ran out). */
  nTokens: number;
}

/**
 * Estimates the data mean (float64 accumulation) and the mean norm of (x - mean) from the first `nTokens` tokens of
 * `source`, in two passes over its spans, which hold the tokens in place (nothing but the running sums is kept).
 */
export async function meanAndScale(source: TokenSource, nTokens: number): Promise<MeanAndScale> {
  checkInt('meanAndScale: nTokens', nTokens, 1);
  const d = source.d;
  const sum_D = new Float64Array(d);
  let n = 0;
  for await (const { tokens_TD, rows } of source.sampleSpans(nTokens)) {
    // Four rows per pass over sum_D: half the time of one.
    let i = 0;
    for (; i + 4 <= rows.length; i += 4) {
      const a = rows[i] * d,
        b = rows[i + 1] * d,
        c = rows[i + 2] * d,
        e = rows[i + 3] * d;
      for (let k = 0; k < d; k++) sum_D[k] += tokens_TD[a + k] + tokens_TD[b + k] + (tokens_TD[c + k] + tokens_TD[e + k]);
    }
    for (; i < rows.length; i++) for (let k = 0, o = rows[i] * d; k < d; k++) sum_D[k] += tokens_TD[o + k];
    n += rows.length;
  }
  if (n === 0) throw new UserError('meanAndScale: the source yielded no tokens');
  // A sum is finite iff every value added to it is: look for the culprit only when one is not.
  if (!sum_D.every(Number.isFinite)) {
    let seen = 0;
    for await (const { tokens_TD, rows } of source.sampleSpans(n)) {
      for (const r of rows) {
        for (let k = 0; k < d; k++) {
          const v = tokens_TD[r * d + k];
          if (!Number.isFinite(v)) throw new UserError(`sampled token ${seen} has a non-finite value (${v}) in dimension ${k}: the shards are corrupt; re-record them`);
        }
        seen++;
      }
    }
  }
  const mean_D = new Float64Array(d);
  for (let k = 0; k < d; k++) mean_D[k] = sum_D[k] / n;
  let normSum = 0;
  for await (const { tokens_TD, rows } of source.sampleSpans(n)) {
    for (const r of rows) {
      let sq = 0;
      for (let k = 0, o = r * d; k < d; k++) {
        const v = tokens_TD[o + k] - mean_D[k];
        sq += v * v;
      }
      normSum += Math.sqrt(sq);
    }
  }
  const meanNorm = normSum / n;
  if (!(meanNorm > 0)) throw new UserError(`meanAndScale: all ${n} sampled tokens are identical, so there is no scale to estimate`);
  return { mean_D: Float32Array.from(mean_D), meanNorm, scale: Math.sqrt(d) / meanNorm, nTokens: n };
}
