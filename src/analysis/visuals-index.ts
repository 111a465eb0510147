/**
 * The on-disk exemplar index (format in README.md): what `vitsae visuals` writes and the server and the static
 * site read. Everything a feature page needs is one small lookup: statistics and histograms are fixed-size binary
 * tables loaded once, exemplars live in JSON chunks of CHUNK_SIZE latents that load on first use.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { readJson, writeFileAtomic } from '../util/fs.js';
import { type ExemplarAccumulator, HIST_BINS, HIST_BINS_PER_OCTAVE, HIST_MIN_EXP } from './accumulate.js';
import type { ExampleInfo } from './images.js';
import { CHUNK_SIZE, FEATURES_DIR, type VisualsMeta } from './layout.js';

export { CHUNK_SIZE, thumbPath, THUMBS_DIR } from './layout.js';
export type { VisualsMeta } from './layout.js';

export const INDEX_FILE = 'index.json';
export const STATS_FILE = 'stats.bin';
export const HIST_FILE = 'hist.bin';
export const IMAGE_TOP_FILE = 'image_top.bin';
export const STATS_COLUMNS = ['fire_tokens', 'fire_images', 'value_sum', 'value_max'] as const;
/** Co-firing latents listed per feature. */
const COFIRE_LISTED = 12;

export interface ExemplarRecord {
  image: number;
  key: string;
  label: number | null;
  max: number;
  /** Base64 of uint8 [patches]: the value at patch p is byte p / 255 * max. */
  patches: string;
}

export interface FeatureRecord {
  latent: number;
  exemplars: ExemplarRecord[];
  /** [latent, exemplars whose peak patch it also fires on], most frequent first. */
  cofire: [number, number][];
}

interface FeatureChunk {
  first: number;
  features: FeatureRecord[];
}

export interface FeatureSummary {
  latent: number;
  /** Fraction of patch tokens the latent fires on. */
  frequency: number;
  /** Fraction of images with at least one firing patch. */
  image_frequency: number;
  /** Mean value over the tokens it fires on. */
  mean: number;
  max: number;
}

function chunkFile(dir: string, chunk: number): string {
  return path.join(dir, FEATURES_DIR, `${chunk}.json`);
}

function bytes(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Writes stats.bin and hist.bin from the accumulator. */
export async function writeStatsTables(dir: string, acc: ExemplarAccumulator): Promise<void> {
  const S = acc.shape.nLatents;
  const stats = new Float64Array(S * STATS_COLUMNS.length);
  for (let j = 0; j < S; j++) {
    const s = acc.stats(j);
    stats.set([s.fireTokens, s.fireImages, s.sum, s.max], j * STATS_COLUMNS.length);
  }
  await writeFileAtomic(path.join(dir, STATS_FILE), bytes(stats));
  await writeFileAtomic(path.join(dir, HIST_FILE), bytes(acc.arrays().hist_SH));
}

/** The most frequent co-firing latents over a feature's exemplars. */
function countCofire(cofire: Int32Array[]): [number, number][] {
  const counts = new Map<number, number>();
  for (const row of cofire) for (const j of row) if (j >= 0) counts.set(j, (counts.get(j) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, COFIRE_LISTED);
}

/** Writes features/C.json for every chunk; `info` names each exemplar image. */
export async function writeFeatureChunks(dir: string, acc: ExemplarAccumulator, info: (example: number) => Promise<ExampleInfo>): Promise<void> {
  const S = acc.shape.nLatents;
  await fsp.mkdir(path.join(dir, FEATURES_DIR), { recursive: true });
  for (let c = 0; c * CHUNK_SIZE < S; c++) {
    const features: FeatureRecord[] = [];
    for (let j = c * CHUNK_SIZE; j < Math.min(S, (c + 1) * CHUNK_SIZE); j++) {
      const ex = acc.exemplars(j);
      const exemplars = await Promise.all(ex.map(async (e) => ({ image: e.example, ...(await info(e.example)), max: e.max, patches: Buffer.from(e.patches_P).toString('base64') })));
      features.push({ latent: j, exemplars, cofire: countCofire(ex.map((e) => e.cofire_C)) });
    }
    const chunk: FeatureChunk = { first: c * CHUNK_SIZE, features };
    await writeFileAtomic(chunkFile(dir, c), JSON.stringify(chunk));
  }
}

export async function writeIndexMeta(dir: string, meta: VisualsMeta): Promise<void> {
  await writeFileAtomic(path.join(dir, INDEX_FILE), JSON.stringify(meta, null, 2) + '\n');
}

/** Chunks kept parsed in memory by a reader. */
const CHUNK_CACHE = 32;

/** A finished exemplar index, read lazily: chunk files on first use (with a small LRU), image rows by offset. */
export class VisualsIndex {
  private readonly chunks = new Map<number, Promise<FeatureChunk>>();

  private constructor(
    readonly dir: string,
    readonly meta: VisualsMeta,
    /** float64 [d_sae, STATS_COLUMNS]. */
    readonly stats: Float64Array,
    /** uint32 [d_sae, histogram.bins]. */
    readonly hist: Uint32Array,
  ) {}

  static async open(dir: string): Promise<VisualsIndex> {
    const meta = await readJson<VisualsMeta>(path.join(dir, INDEX_FILE), `${dir} holds no finished visuals; run vitsae visuals (it resumes an interrupted run)`);
    if (meta.format !== 'vitsae-visuals' || meta.version !== 1) throw new UserError(`${dir}/${INDEX_FILE} is not a vitsae-visuals version 1 index`);
    const S = meta.d_sae;
    const read = async (name: string, want: number) => {
      const buf = await fsp.readFile(path.join(dir, name));
      if (buf.byteLength !== want) throw new UserError(`${dir}/${name} has ${buf.byteLength} bytes, expected ${want}; the index is damaged, run vitsae visuals again`);
      return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
    };
    const stats = new Float64Array(await read(STATS_FILE, S * STATS_COLUMNS.length * 8));
    const hist = new Uint32Array(await read(HIST_FILE, S * meta.histogram.bins * 4));
    return new VisualsIndex(dir, meta, stats, hist);
  }

  get nLatents(): number {
    return this.meta.d_sae;
  }

  summary(latent: number): FeatureSummary {
    const w = STATS_COLUMNS.length;
    const [fireTokens, fireImages, sum, max] = this.stats.subarray(latent * w, (latent + 1) * w);
    return {
      latent,
      frequency: fireTokens / Math.max(1, this.meta.n_tokens),
      image_frequency: fireImages / Math.max(1, this.meta.n_images),
      mean: fireTokens ? sum / fireTokens : 0,
      max,
    };
  }

  /** How many exemplars (and thumbnails, ranks 0..n-1) the latent has: one per image it fires on, at most k. */
  exemplarCount(latent: number): number {
    return Math.min(this.meta.k, this.stats[latent * STATS_COLUMNS.length + 1]);
  }

  /** The value histogram from the first to the last non-empty bin; bin b spans [lo * r^b, lo * r^(b+1)), r = 2^(1/bins_per_octave). */
  histogram(latent: number): { lo: number; ratio: number; counts: number[] } {
    const { bins, bins_per_octave, min_exp } = this.meta.histogram;
    const row = this.hist.subarray(latent * bins, (latent + 1) * bins);
    let a = 0;
    let b = bins - 1;
    while (a < bins && row[a] === 0) a++;
    while (b > a && row[b] === 0) b--;
    return { lo: 2 ** (min_exp + a / bins_per_octave), ratio: 2 ** (1 / bins_per_octave), counts: a < bins ? Array.from(row.subarray(a, b + 1)) : [] };
  }

  async feature(latent: number): Promise<FeatureRecord> {
    const c = Math.floor(latent / CHUNK_SIZE);
    let chunk = this.chunks.get(c);
    if (chunk)
      this.chunks.delete(c); // re-inserted below as the most recent
    else {
      chunk = readJson<FeatureChunk>(chunkFile(this.dir, c), `the exemplar chunk of latent ${latent}; the index is damaged, run vitsae visuals again`);
      chunk.catch(() => this.chunks.delete(c));
    }
    this.chunks.set(c, chunk);
    if (this.chunks.size > CHUNK_CACHE) this.chunks.delete(this.chunks.keys().next().value!);
    return (await chunk).features[latent - c * CHUNK_SIZE];
  }

  /** Example `e`'s strongest latents and their maxima over its patches. */
  async imageTop(e: number): Promise<{ latent: number; value: number }[]> {
    const M = this.meta.image_top;
    const fh = await fsp.open(path.join(this.dir, IMAGE_TOP_FILE), 'r');
    try {
      const buf = Buffer.alloc(M * 8);
      await fh.read(buf, 0, buf.length, e * M * 8);
      const out = [];
      for (let i = 0; i < M; i++) {
        const latent = buf.readInt32LE(i * 8);
        if (latent >= 0) out.push({ latent, value: buf.readFloatLE(i * 8 + 4) });
      }
      return out;
    } finally {
      await fh.close();
    }
  }
}

/** The histogram layout written by this version. */
export const HISTOGRAM_LAYOUT = { bins_per_octave: HIST_BINS_PER_OCTAVE, min_exp: HIST_MIN_EXP, bins: HIST_BINS };
