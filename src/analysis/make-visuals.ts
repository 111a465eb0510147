/**
 * `vitsae visuals`: one in-order pass over a recording's patch tokens through an SAE, collecting for every latent
 * its top-k images (by the latent's maximum over each image's patches) with per-patch values, its statistics and
 * value histogram, and for every image its top latents (streamed to disk); then exemplar thumbnails with the
 * firing patches highlighted, and the index (README.md). Memory is bounded by the latent count: about
 * d_sae × k × (patches + 4 × co-firing + 10) bytes for the exemplars plus about 700 bytes (histogram, statistics) per latent.
 *
 * The pass checkpoints its accumulators atomically every N batches (and on request to stop); running the same
 * command again resumes from the last checkpoint, and after the pass only the missing thumbnails are rendered.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { OrderedTokenLoader, ShardDataset } from '../shards/index.js';
import type { Sae } from '../sae/model.js';
import { openSae } from '../interop/index.js';
import { UserError } from '../util/errors.js';
import { exists, writeFileAtomic } from '../util/fs.js';
import { progress } from '../util/progress.js';
import { type AccumulatorShape, ExemplarAccumulator } from './accumulate.js';
import { ExampleImages, type ExampleInfo, highlight, patchGrid, resizeRgb, webp } from './images.js';
import { CHUNK_SIZE, HISTOGRAM_LAYOUT, IMAGE_TOP_FILE, INDEX_FILE, STATS_COLUMNS, thumbPath, type VisualsMeta, writeFeatureChunks, writeIndexMeta, writeStatsTables } from './visuals-index.js';

export const CHECKPOINT_FILE = 'checkpoint.bin';

export interface VisualsOptions {
  sae: string;
  shards: string;
  /** The image dataset; default the one the recording names. */
  images?: string;
  out: string;
  /** Recorded layer; default the one the SAE was trained on. */
  layer?: number;
  k?: number;
  /** Latents kept per image in image_top.bin. */
  imageTop?: number;
  /** Co-firing latents kept per exemplar. */
  cofire?: number;
  /** Tokens per encoder batch (rounded down to whole images). */
  batchTokens?: number;
  checkpointEvery?: number;
  /** Longer side of exemplar thumbnails, in pixels. */
  thumbSize?: number;
  /** The model path, recorded in the index when known. */
  model?: string;
  showProgress?: boolean;
  /** Checked after each batch; when true the pass checkpoints and stops (Ctrl-C). Returns null then. */
  shouldStop?: () => boolean;
}

/** Everything that must match for a checkpoint to be continued. */
interface Settings {
  sae: string;
  sae_step: number | null;
  shards: string;
  n_examples: number;
  layer: number;
  batch_images: number;
  shape: AccumulatorShape;
}

interface CheckpointHeader {
  format: 'vitsae-visuals-checkpoint';
  version: 1;
  settings: Settings;
  /** The next batch to encode; images before it are in the accumulators and in image_top.bin. */
  next_batch: number;
  n_images: number;
  n_tokens: number;
  /** The pass is over; only the index and thumbnails remain. */
  complete: boolean;
  arrays: { name: string; type: string; length: number; offset: number }[];
}

const ALIGN = 8;
const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/**
 * checkpoint.bin: uint32 LE header length, the header JSON, zero padding to a multiple of 8, then each array's
 * raw bytes at header.arrays[i].offset from the end of the padding. One atomic write, so it is never torn.
 */
async function writeCheckpoint(file: string, head: Omit<CheckpointHeader, 'arrays'>, acc: ExemplarAccumulator): Promise<void> {
  const arrays = Object.entries(acc.arrays());
  let offset = 0;
  const entries = arrays.map(([name, a]) => {
    const e = { name, type: a.constructor.name, length: a.length, offset };
    offset += align(a.byteLength);
    return e;
  });
  const header = Buffer.from(JSON.stringify({ ...head, arrays: entries }));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  const parts: Uint8Array[] = [len, header, new Uint8Array(align(4 + header.length) - 4 - header.length)];
  for (const [, a] of arrays) parts.push(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), new Uint8Array(align(a.byteLength) - a.byteLength));
  await writeFileAtomic(file, parts);
}

const TYPES = { Float32Array, Float64Array, Int32Array, Uint16Array, Uint8Array, Uint32Array } as const;

async function readCheckpoint(file: string): Promise<{ head: CheckpointHeader; acc: ExemplarAccumulator } | null> {
  let buf: Buffer;
  try {
    buf = await fsp.readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const headLen = buf.readUInt32LE(0);
  const head = JSON.parse(buf.subarray(4, 4 + headLen).toString('utf8')) as CheckpointHeader;
  const base = buf.byteOffset + align(4 + headLen);
  const state: Record<string, ArrayBufferView> = {};
  for (const a of head.arrays) {
    const T = TYPES[a.type as keyof typeof TYPES];
    const start = base + a.offset;
    state[a.name] = new T((buf.buffer as ArrayBuffer).slice(start, start + a.length * T.BYTES_PER_ELEMENT));
  }
  return { head, acc: new ExemplarAccumulator(head.settings.shape, state as ReturnType<ExemplarAccumulator['arrays']>) };
}

/** Runs (or resumes) the pass and writes the index into opts.out. Returns its metadata, or null if stopped. */
export async function computeVisuals(opts: VisualsOptions): Promise<VisualsMeta | null> {
  const out = path.resolve(opts.out);
  if (await exists(path.join(out, INDEX_FILE))) throw new UserError(`${out} already holds finished visuals; choose another --out or delete it`);
  await fsp.mkdir(out, { recursive: true });
  const sae = await openSae(opts.sae);
  const ds = await ShardDataset.open(opts.shards);
  try {
    if (ds.d !== sae.dModel) throw new UserError(`${opts.shards} has d_model ${ds.d} but the SAE ${opts.sae} expects ${sae.dModel}`);
    const md = ds.metadata;
    const images = await ExampleImages.open(opts.shards, md, opts.images);
    const grid = patchGrid(md);
    const P = md.content_tokens_per_example;
    const layer = opts.layer ?? sae.config.data?.layer ?? -1;
    ds.layerIndex(layer); // a clear error for a layer that was not recorded
    const batchImages = Math.max(1, Math.floor((opts.batchTokens ?? 4096) / P));
    const settings: Settings = {
      sae: path.resolve(opts.sae),
      sae_step: sae.config.step ?? null,
      shards: path.resolve(opts.shards),
      n_examples: md.n_examples,
      layer,
      batch_images: batchImages,
      shape: { nLatents: sae.dSae, k: opts.k ?? 20, patches: P, cofire: opts.cofire ?? 8, imageTop: opts.imageTop ?? 16 },
    };
    const ckptFile = path.join(out, CHECKPOINT_FILE);
    const resumed = await readCheckpoint(ckptFile);
    if (resumed && JSON.stringify(resumed.head.settings) !== JSON.stringify(settings))
      throw new UserError(`${out} holds an unfinished visuals run with other settings (${JSON.stringify(resumed.head.settings)}); resume it with the same options, or delete ${ckptFile}`);
    const acc = resumed?.acc ?? new ExemplarAccumulator(settings.shape);
    if (resumed) {
      acc.nImages = resumed.head.n_images;
      acc.nTokens = resumed.head.n_tokens;
    }
    if (!resumed?.head.complete) {
      const done = await pass(ds, sae, acc, settings, out, resumed?.head.next_batch ?? 0, opts);
      if (!done) return null;
    }
    await writeStatsTables(out, acc);
    await writeFeatureChunks(out, acc, cachedInfo(images));
    const thumb = await renderThumbnails(out, acc, images, grid, opts.thumbSize ?? 128, opts.showProgress !== false);
    const meta: VisualsMeta = {
      format: 'vitsae-visuals',
      version: 1,
      d_sae: sae.dSae,
      n_images: acc.nImages,
      n_tokens: acc.nTokens,
      patches: P,
      grid,
      image_size: images.size,
      k: settings.shape.k,
      cofire: settings.shape.cofire,
      image_top: settings.shape.imageTop,
      chunk_size: CHUNK_SIZE,
      thumb_size: thumb,
      histogram: HISTOGRAM_LAYOUT,
      stats_columns: STATS_COLUMNS,
      source: { sae: settings.sae, shards: settings.shards, layer, images: images.dataset.source, ...(opts.model ? { model: path.resolve(opts.model) } : {}) },
      created: new Date().toISOString(),
    };
    await writeIndexMeta(out, meta);
    await fsp.rm(ckptFile, { force: true });
    return meta;
  } finally {
    await ds.close();
  }
}

/** image_top.bin record: int32 latent (-1 = none), float32 its maximum over the image's patches. */
const TOP_RECORD = 8;

/** The streaming pass from batch `start`; returns false if stopped early (after a checkpoint). */
async function pass(ds: ShardDataset, sae: Sae, acc: ExemplarAccumulator, settings: Settings, out: string, start: number, opts: VisualsOptions): Promise<boolean> {
  const { patches: P, imageTop: M } = settings.shape;
  const loader = new OrderedTokenLoader(ds, { layer: settings.layer, tokens: 'patches' }, settings.batch_images * P);
  const topFile = path.join(out, IMAGE_TOP_FILE);
  // Rows past the checkpoint belong to batches that will be redone.
  const fh = await fsp.open(topFile, (await exists(topFile)) ? 'r+' : 'w+');
  await fh.truncate(acc.nImages * M * TOP_RECORD);
  const bar = progress('visuals', ds.nExamples, { enabled: opts.showProgress !== false, unit: 'images' });
  const every = opts.checkpointEvery ?? 200;
  const checkpoint = async (next: number, complete: boolean) => {
    await fh.sync();
    await writeCheckpoint(
      path.join(out, CHECKPOINT_FILE),
      { format: 'vitsae-visuals-checkpoint', version: 1, settings, next_batch: next, n_images: acc.nImages, n_tokens: acc.nTokens, complete },
      acc,
    );
  };
  try {
    bar.update(acc.nImages);
    const it = loader.batches(start)[Symbol.asyncIterator]();
    let cur = await it.next();
    let encoding = cur.done ? null : sae.encode(cur.value.acts_BD);
    while (!cur.done) {
      const batch = cur.value;
      const csr = await encoding!;
      const next = await it.next();
      // The next batch encodes on the thread pool while this one is accumulated here.
      encoding = next.done ? null : sae.encode(next.value.acts_BD);
      const n = batch.example_B.length / P;
      const rows = Buffer.alloc(n * M * TOP_RECORD);
      for (let i = 0; i < n; i++) {
        const top = acc.addImage(batch.example_B[i * P], { rowptr: csr.rowptr, idx: csr.idx, val: csr.val, row0: i * P });
        for (let m = 0; m < M; m++) {
          rows.writeInt32LE(m < top.latents.length ? top.latents[m] : -1, (i * M + m) * TOP_RECORD);
          rows.writeFloatLE(m < top.latents.length ? top.values[m] : 0, (i * M + m) * TOP_RECORD + 4);
        }
      }
      await fh.write(rows, 0, rows.length, (acc.nImages - n) * M * TOP_RECORD);
      bar.update(acc.nImages);
      cur = next;
      const stop = !cur.done && (opts.shouldStop?.() ?? false);
      if (stop || (!cur.done && (batch.index + 1) % every === 0)) await checkpoint(batch.index + 1, false);
      if (stop) {
        await encoding?.catch(() => undefined);
        return false;
      }
    }
    await checkpoint(loader.nBatches, true);
    return true;
  } finally {
    bar.stop();
    await fh.close();
  }
}

/** Example info, memoised: an image is often an exemplar of many latents. */
function cachedInfo(images: ExampleImages): (e: number) => Promise<ExampleInfo> {
  const memo = new Map<number, Promise<ExampleInfo>>();
  return (e) => {
    let p = memo.get(e);
    if (!p) memo.set(e, (p = images.info(e)));
    return p;
  };
}

/** Images rendered at once (decoding and encoding run on libuv's threads). */
const RENDER_CONCURRENCY = 4;

/**
 * Renders every exemplar's thumbnail that is not on disk yet, decoding each image once for all the latents it is
 * an exemplar of. Highlights are scaled by the latent's top exemplar value, so weaker exemplars look weaker.
 * Returns the thumbnail size [H, W].
 */
async function renderThumbnails(out: string, acc: ExemplarAccumulator, images: ExampleImages, grid: [number, number], size: number, showProgress: boolean): Promise<[number, number]> {
  const [H, W] = images.size;
  // Never larger than the model's view: an upscaled thumbnail costs 4x the encoding and shows nothing more (the
  // browser scales it up pixelated).
  const longSide = Math.min(size, Math.max(H, W));
  const scale = longSide / Math.max(H, W);
  const thumbSize: [number, number] = [Math.max(1, Math.round(H * scale)), Math.max(1, Math.round(W * scale))];
  // Missing thumbnails grouped by image, as (latent, rank) pairs: the values are read from the accumulator when drawn.
  const jobs = new Map<number, [number, number][]>();
  for (let j = 0; j < acc.shape.nLatents; j++) {
    for (const [rank, e] of acc.exemplars(j).entries()) {
      if (await exists(path.join(out, thumbPath(j, rank)))) continue;
      const list = jobs.get(e.example) ?? [];
      list.push([j, rank]);
      jobs.set(e.example, list);
    }
  }
  const examples = [...jobs.keys()].sort((a, b) => a - b);
  const bar = progress('thumbnails', examples.length, { enabled: showProgress && examples.length > 0, unit: 'images' });
  let done = 0;
  const madeDirs = new Set<string>();
  const work = async (example: number) => {
    const base = await resizeRgb(await images.modelView(example), longSide);
    for (const [j, rank] of jobs.get(example)!) {
      const e = acc.exemplars(j)[rank];
      const file = path.join(out, thumbPath(j, rank));
      const dir = path.dirname(file);
      if (!madeDirs.has(dir)) {
        await fsp.mkdir(dir, { recursive: true });
        madeDirs.add(dir);
      }
      const values = Float32Array.from(e.patches_P, (q) => (q / 255) * e.max);
      // Written under a temporary name, so a crash never leaves a torn thumbnail that a resume would keep.
      await fsp.writeFile(file + '.tmp', await webp(highlight(base, grid, values, acc.stats(j).max)));
      await fsp.rename(file + '.tmp', file);
    }
    bar.update(++done);
  };
  let next = 0;
  await Promise.all(
    Array.from({ length: RENDER_CONCURRENCY }, async () => {
      while (next < examples.length) await work(examples[next++]);
    }),
  );
  bar.stop();
  return thumbSize;
}
