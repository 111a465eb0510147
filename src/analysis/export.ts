/**
 * `vitsae export`: a run's latents, per-feature statistics and exemplars in files numpy, scipy and pandas read
 * directly (npz, CSV), for users who continue in Python. It sits in analysis because it exports what the analysis
 * computed (a run and its visuals); the numpy formats themselves are in src/interop/numpy.ts. README.md beside
 * this file lists the files.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { writeFilesTogether } from '../util/fs.js';
import { progress } from '../util/progress.js';
import { openSae } from '../interop/index.js';
import type { Sae } from '../sae/model.js';
import { EXAMPLES_FILE, OrderedTokenLoader, ShardDataset } from '../shards/index.js';
import { csrNpz, csv, npzBytes } from '../interop/numpy.js';
import { readRun } from './run.js';
import { STATS_COLUMNS, VisualsIndex } from './visuals-index.js';

export const EXPORT_FILE = 'export.json';

export interface ExportOptions {
  run: string;
  out: string;
  /** Export the latents of the first n images only (0: all); statistics and exemplars are always the run's. */
  maxImages?: number;
  /** Tokens per encoder batch (rounded down to whole images). */
  batchTokens?: number;
  showProgress?: boolean;
}

/** export.json: what was exported and how the files are laid out. */
export interface ExportManifest {
  format: 'vitsae-export';
  version: 1;
  run: string;
  sae: string;
  shards: string;
  layer: number;
  d_sae: number;
  patches: number;
  /** Images whose latents are in latents.npz (rows n_images * patches). */
  n_images: number;
  nnz: number;
  files: Record<string, string>;
}

/** The latents of every patch token, CSR float32 [images * patches, d_sae]; row e * patches + p is patch p of image e. */
async function encodeLatents(sae: Sae, ds: ShardDataset, layer: number, nImages: number, batchTokens: number, showProgress: boolean) {
  const P = ds.metadata.content_tokens_per_example;
  const batchImages = Math.max(1, Math.floor(batchTokens / P));
  const loader = new OrderedTokenLoader(ds, { layer, tokens: 'patches' }, batchImages * P);
  const rows = nImages * P;
  const indptr = new BigInt64Array(rows + 1);
  const parts: { idx: Int32Array; val: Float32Array }[] = [];
  let row = 0;
  let nnz = 0;
  const bar = progress('encode', nImages, { enabled: showProgress, unit: 'images' });
  try {
    for await (const batch of loader.batches()) {
      if (row >= rows) break;
      const acts = await sae.encode(batch.acts_BD);
      const take = Math.min(acts.rowptr.length - 1, rows - row);
      const end = acts.rowptr[take];
      parts.push({ idx: acts.idx.slice(0, end), val: acts.val.slice(0, end) });
      for (let r = 1; r <= take; r++) indptr[row + r] = BigInt(nnz + acts.rowptr[r]);
      nnz += end;
      row += take;
      bar.update(row / P);
    }
  } finally {
    bar.stop();
  }
  const data = new Float32Array(nnz);
  const indices = new Int32Array(nnz);
  let at = 0;
  for (const p of parts) {
    data.set(p.val, at);
    indices.set(p.idx, at);
    at += p.val.length;
  }
  return { data, indices, indptr, shape: [rows, sae.dSae] as [number, number] };
}

/** Writes the export of `opts.run` into `opts.out` (all files appear together). Returns the manifest. */
export async function exportRun(opts: ExportOptions): Promise<ExportManifest> {
  const run = await readRun(opts.run);
  const vis = await VisualsIndex.open(run.visuals);
  const meta = vis.meta;
  const sae = await openSae(run.sae);
  const ds = await ShardDataset.open(run.shards);
  try {
    if (sae.dSae !== meta.d_sae) throw new UserError(`${run.sae} has ${sae.dSae} latents but the visuals in ${run.visuals} have ${meta.d_sae}; run vitsae visuals --run ${opts.run} again`);
    const nImages = opts.maxImages ? Math.min(opts.maxImages, ds.nExamples) : ds.nExamples;
    const latents = await encodeLatents(sae, ds, meta.source.layer, nImages, opts.batchTokens ?? 4096, opts.showProgress ?? true);
    const S = meta.d_sae;
    const w = STATS_COLUMNS.length;
    const col = (c: number) => Float64Array.from({ length: S }, (_, s) => vis.stats[s * w + c]);
    const summaries = Array.from({ length: S }, (_, s) => vis.summary(s));
    const features = await Promise.all(Array.from({ length: S }, (_, s) => vis.feature(s)));
    const K = meta.k;
    const exImage = new BigInt64Array(S * K).fill(-1n);
    const exMax = new Float32Array(S * K);
    const exRows: (string | number | null)[][] = [];
    for (const f of features)
      f.exemplars.forEach((e, r) => {
        exImage[f.latent * K + r] = BigInt(e.image);
        exMax[f.latent * K + r] = e.max;
        exRows.push([f.latent, r, e.image, e.max, e.key, e.label]);
      });
    const examples = await fsp.readFile(path.join(run.shards, EXAMPLES_FILE), 'utf8').catch(() => null);
    const files: Record<string, string> = {
      'latents.npz': `CSR float32 [${latents.shape.join(', ')}] (scipy.sparse.load_npz); row e * ${meta.patches} + p is patch p of image e`,
      'features.csv': 'one row per latent: latent, fire_tokens, fire_images, frequency, image_frequency, mean, max',
      'features.npz': 'the same columns as arrays of length d_sae',
      'exemplars.npz': `image int64 [d_sae, ${K}] (-1 = none), max float32 [d_sae, ${K}]: each latent's top images, best first`,
      'exemplars.csv': 'one row per exemplar: latent, rank, image, max, key, label',
      ...(examples !== null ? { 'examples.csv': "one row per image: image, key, label (the recording's examples.jsonl)" } : {}),
    };
    const manifest: ExportManifest = {
      format: 'vitsae-export',
      version: 1,
      run: run.dir,
      sae: run.sae,
      shards: run.shards,
      layer: meta.source.layer,
      d_sae: S,
      patches: meta.patches,
      n_images: nImages,
      nnz: latents.data.length,
      files,
    };
    await writeFilesTogether(opts.out, async (dir) => {
      const put = (name: string, data: string | Uint8Array) => fsp.writeFile(path.join(dir, name), data);
      await put('latents.npz', csrNpz(latents, `${opts.out}/latents.npz`));
      await put(
        'features.csv',
        csv(
          ['latent', 'fire_tokens', 'fire_images', 'frequency', 'image_frequency', 'mean', 'max'],
          summaries.map((f, s) => [s, vis.stats[s * w], vis.stats[s * w + 1], f.frequency, f.image_frequency, f.mean, f.max]),
        ),
      );
      await put(
        'features.npz',
        npzBytes(
          {
            fire_tokens: { data: col(0), shape: [S] },
            fire_images: { data: col(1), shape: [S] },
            frequency: { data: Float64Array.from(summaries, (f) => f.frequency), shape: [S] },
            image_frequency: { data: Float64Array.from(summaries, (f) => f.image_frequency), shape: [S] },
            mean: { data: Float64Array.from(summaries, (f) => f.mean), shape: [S] },
            max: { data: col(3), shape: [S] },
          },
          'features.npz',
        ),
      );
      await put('exemplars.npz', npzBytes({ image: { data: exImage, shape: [S, K] }, max: { data: exMax, shape: [S, K] } }, 'exemplars.npz'));
      await put('exemplars.csv', csv(['latent', 'rank', 'image', 'max', 'key', 'label'], exRows));
      if (examples !== null) {
        const rows = examples
          .split('\n')
          .filter(Boolean)
          .map((l, i) => {
            const e = JSON.parse(l) as { file: string; label?: number | null };
            return [i, e.file, e.label ?? null];
          });
        await put('examples.csv', csv(['image', 'key', 'label'], rows));
      }
      await put(EXPORT_FILE, JSON.stringify(manifest, null, 2) + '\n');
    });
    return manifest;
  } finally {
    await ds.close();
  }
}
