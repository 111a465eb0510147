/**
 * The pass over two recordings of the same images: both are read in file order, token for token, each batch is
 * encoded by its run's SAE (both on the thread pool, the next batch while this one is accumulated) and the codes
 * go into a StreamingCorrelation.
 *
 * Shape letters: B tokens in a batch, D d_model.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import * as path from 'node:path';
import { EXAMPLES_FILE } from '../../shards/format.js';
import type { Sae } from '../../sae/model.js';
import type { SparseActs } from '../../sae/native.js';
import { type OrderedBatch, OrderedTokenLoader, type ShardDataset } from '../../shards/index.js';
import { UserError } from '../../util/errors.js';
import { progress } from '../../util/progress.js';
import { patchGrid } from '../images.js';
import { StreamingCorrelation } from './correlation.js';

/** One side of a comparison: a run's SAE on its recorded layer. */
export interface RecordingSide {
  name: string;
  sae: Sae;
  ds: ShardDataset;
  layer: number;
  /** The image dataset the examples come from (run.json's `images`, else the recording's). */
  dataset: string;
}

async function fileHash(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Refuses two recordings that are not of the same images, in the same order, on the same patch grid. */
export async function checkSameImages(a: RecordingSide, b: RecordingSide): Promise<void> {
  const [ma, mb] = [a.ds.metadata, b.ds.metadata];
  const differ = (what: string, x: unknown, y: unknown) =>
    new UserError(
      `${a.name} and ${b.name} were not recorded on the same images: ${what} ${JSON.stringify(x)} vs ${JSON.stringify(y)}; compare runs whose SAEs saw the same images (two models, or two layers of one)`,
    );
  if (ma.n_examples !== mb.n_examples) throw differ('images', ma.n_examples, mb.n_examples);
  if (ma.content_tokens_per_example !== mb.content_tokens_per_example) throw differ('patches per image', ma.content_tokens_per_example, mb.content_tokens_per_example);
  if (String(patchGrid(ma)) !== String(patchGrid(mb))) throw differ('patch grid', patchGrid(ma), patchGrid(mb));
  if (path.resolve(a.ds.dir) === path.resolve(b.ds.dir)) return;
  const [fa, fb] = [path.join(a.ds.dir, EXAMPLES_FILE), path.join(b.ds.dir, EXAMPLES_FILE)];
  if (existsSync(fa) && existsSync(fb)) {
    // The manifests name every example's image in order: identical manifests mean identical image sequences.
    if ((await fileHash(fa)) !== (await fileHash(fb))) throw differ(`the image lists (${EXAMPLES_FILE}) differ;`, fa, fb);
  } else if (path.resolve(a.dataset) !== path.resolve(b.dataset)) throw differ('datasets', a.dataset, b.dataset);
}

export interface StreamOptions {
  /** Tokens per batch. */
  batch: number;
  /** Images to correlate, from the first on. */
  maxImages: number;
  showProgress?: boolean;
}

interface EncodedBatch {
  rows: number;
  codes: Promise<[SparseActs<Float32Array>, SparseActs<Float32Array>]>;
}

/** Correlates every latent of `a` with every latent of `b` over the patch tokens of their recordings. */
export async function correlateRecordings(a: RecordingSide, b: RecordingSide, opts: StreamOptions): Promise<StreamingCorrelation> {
  const loaders = [a, b].map((s) => new OrderedTokenLoader(s.ds, { layer: s.layer, tokens: 'patches' }, opts.batch));
  const total = Math.min(a.ds.nExamples, opts.maxImages) * a.ds.metadata.content_tokens_per_example;
  const acc = new StreamingCorrelation(a.sae.dSae, b.sae.dSae, opts.batch);
  const its = loaders.map((l) => l.batches()[Symbol.asyncIterator]());
  let read = 0;
  const encodeNext = async (): Promise<EncodedBatch | null> => {
    if (read >= total) return null;
    const [x, y] = await Promise.all(its.map((it) => it.next()));
    if (x.done || y.done) return null;
    const [bx, by] = [x.value as OrderedBatch, y.value as OrderedBatch];
    if (bx.example_B[0] !== by.example_B[0] || bx.patch_B[0] !== by.patch_B[0]) throw new Error('the two recordings went out of step');
    const rows = Math.min(bx.example_B.length, total - read);
    read += rows;
    const cut = (batch: OrderedBatch, d: number) => batch.acts_BD.subarray(0, rows * d);
    return { rows, codes: Promise.all([a.sae.encode(cut(bx, a.ds.d)), b.sae.encode(cut(by, b.ds.d))]) };
  };
  const bar = progress('correlate', total, { enabled: opts.showProgress !== false, unit: 'patches' });
  try {
    let cur = await encodeNext();
    let done = 0;
    while (cur) {
      const [codesA, codesB] = await cur.codes;
      // The next batch is read and encoded while this one is accumulated.
      const next = await encodeNext();
      acc.add(codesA, codesB);
      done += cur.rows;
      bar.update(done);
      cur = next;
    }
    return acc;
  } finally {
    bar.stop();
    await Promise.all(its.map((it) => it.return?.(undefined)));
  }
}
