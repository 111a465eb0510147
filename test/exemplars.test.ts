/**
 * Exemplars and statistics: the streaming accumulator against a brute-force computation (top-k with ties,
 * per-patch values, co-firing, histograms, per-image top latents), and `vitsae visuals` end to end on a small
 * real run: the index agrees with a direct encoding, thumbnails decode, and an interrupted run resumes to the
 * same bytes.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { ExemplarAccumulator, HIST_BINS, histBin } from '../src/analysis/accumulate.js';
import { computeVisuals } from '../src/analysis/make-visuals.js';
import { plasma } from '../src/analysis/colormap.js';
import { highlight } from '../src/analysis/images.js';
import { readRun } from '../src/analysis/run.js';
import { thumbPath, VisualsIndex } from '../src/analysis/visuals-index.js';
import { openSae } from '../src/interop/index.js';
import { OrderedTokenLoader, ShardDataset } from '../src/shards/index.js';
import { Rng } from '../src/util/random.js';
import { makeRun, type SmallRun } from './fixtures/web/run.js';

let tmp: string;
let run: SmallRun;

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-exemplars-'));
  run = await makeRun(path.join(tmp, 'run'));
});

after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** Random sparse codes [images * P rows] with values on a coarse grid, so that ties are common. */
function randomCsr(rng: Rng, rows: number, S: number, perRow: number) {
  const rowptr = new Int32Array(rows + 1);
  const idx: number[] = [];
  const val: number[] = [];
  for (let r = 0; r < rows; r++) {
    const chosen = new Set<number>();
    const n = Math.floor(rng.nextFloat() * (perRow + 1));
    while (chosen.size < n) chosen.add(Math.floor(rng.nextFloat() * S));
    for (const j of chosen) {
      idx.push(j);
      // Mostly positive, sometimes zero (not firing); 2^-30 lands in the first histogram bin.
      const u = rng.nextFloat();
      val.push(u < 0.1 ? 0 : u < 0.12 ? 2 ** -30 : Math.ceil(rng.nextFloat() * 8) / 4);
    }
    rowptr[r + 1] = idx.length;
  }
  return { rowptr, idx: Int32Array.from(idx), val: Float32Array.from(val) };
}

test('the accumulator matches a brute-force computation, including ties', () => {
  const S = 40,
    P = 9,
    N = 70,
    K = 5,
    C = 3,
    M = 6;
  const rng = new Rng(7);
  const csr = randomCsr(rng, N * P, S, 6);
  const acc = new ExemplarAccumulator({ nLatents: S, k: K, patches: P, cofire: C, imageTop: M });
  const tops = [];
  for (let i = 0; i < N; i++) tops.push(acc.addImage(i, { ...csr, row0: i * P }));

  // Brute force: dense per-image, per-patch values.
  const value = (i: number, p: number, j: number) => {
    const r = i * P + p;
    for (let e = csr.rowptr[r]; e < csr.rowptr[r + 1]; e++) if (csr.idx[e] === j) return Math.max(0, csr.val[e]);
    return 0;
  };
  for (let j = 0; j < S; j++) {
    let fires = 0,
      sum = 0,
      max = 0,
      images = 0;
    const hist = new Uint32Array(HIST_BINS);
    const cands: { example: number; max: number; arg: number }[] = [];
    for (let i = 0; i < N; i++) {
      let m = 0,
        arg = -1;
      for (let p = 0; p < P; p++) {
        const v = value(i, p, j);
        if (v > 0) {
          fires++;
          sum += v;
          hist[histBin(v)]++;
          if (v > m) (m = v), (arg = p);
        }
      }
      max = Math.max(max, m);
      if (m > 0) images++, cands.push({ example: i, max: m, arg });
    }
    const s = acc.stats(j);
    assert.deepEqual([s.fireTokens, s.fireImages, s.max], [fires, images, Math.fround(max)], `latent ${j} stats`);
    assert.ok(Math.abs(s.sum - sum) < 1e-9, `latent ${j} sum`);
    assert.deepEqual(acc.histogram(j), hist, `latent ${j} histogram`);
    cands.sort((a, b) => b.max - a.max || a.example - b.example);
    const got = acc.exemplars(j);
    assert.deepEqual(
      got.map((e) => [e.example, e.max]),
      cands.slice(0, K).map((c) => [c.example, Math.fround(c.max)]),
      `latent ${j} top-k`,
    );
    for (const [r, e] of got.entries()) {
      const c = cands[r];
      assert.deepEqual(
        Array.from(e.patches_P),
        Array.from({ length: P }, (_, p) => Math.round((value(c.example, p, j) / c.max) * 255)),
        `latent ${j} exemplar ${r} patches`,
      );
      const row = c.example * P + c.arg;
      const others: { j: number; v: number }[] = [];
      for (let x = csr.rowptr[row]; x < csr.rowptr[row + 1]; x++) if (csr.idx[x] !== j && csr.val[x] > 0) others.push({ j: csr.idx[x], v: csr.val[x] });
      others.sort((a, b) => b.v - a.v || a.j - b.j);
      const want = Array.from({ length: C }, (_, q) => (q < others.length ? others[q].j : -1));
      assert.deepEqual(Array.from(e.cofire_C), want, `latent ${j} exemplar ${r} co-firing`);
    }
  }
  for (let i = 0; i < N; i++) {
    const maxima = Array.from({ length: S }, (_, j) => ({ j, m: Math.max(...Array.from({ length: P }, (_, p) => value(i, p, j))) })).filter((x) => x.m > 0);
    maxima.sort((a, b) => b.m - a.m || a.j - b.j);
    assert.deepEqual(
      Array.from(tops[i].latents),
      maxima.slice(0, M).map((x) => x.j),
      `image ${i} top latents`,
    );
  }
  assert.equal(acc.nTokens, N * P);
});

test('an accumulator restored from its arrays continues exactly', () => {
  const shape = { nLatents: 30, k: 4, patches: 6, cofire: 2, imageTop: 3 };
  const csr = randomCsr(new Rng(11), 50 * 6, 30, 5);
  const whole = new ExemplarAccumulator(shape);
  const first = new ExemplarAccumulator(shape);
  for (let i = 0; i < 50; i++) whole.addImage(i, { ...csr, row0: i * 6 });
  for (let i = 0; i < 20; i++) first.addImage(i, { ...csr, row0: i * 6 });
  const copy = Object.fromEntries(Object.entries(first.arrays()).map(([k, a]) => [k, a.slice()])) as ReturnType<ExemplarAccumulator['arrays']>;
  const second = new ExemplarAccumulator(shape, copy);
  for (let i = 20; i < 50; i++) second.addImage(i, { ...csr, row0: i * 6 });
  assert.deepEqual(second.arrays(), whole.arrays());
});

test('histogram bins are quarter octaves with clamped ends', () => {
  assert.equal(histBin(1), 80);
  assert.equal(histBin(2 ** 0.25), 81);
  assert.equal(histBin(0.99), 79);
  assert.equal(histBin(1e-30), 0);
  assert.equal(histBin(1e30), HIST_BINS - 1);
});

test('highlights tint firing patches with plasma and leave the rest untouched', () => {
  assert.deepEqual(plasma(0), [15, 6, 139]);
  assert.deepEqual(plasma(1), [238, 247, 38]);
  const img = { data: new Uint8Array(4 * 4 * 3).fill(100), width: 4, height: 4 };
  const out = highlight(img, [2, 2], [0, 1, 0, 0.5], 1);
  assert.deepEqual(Array.from(out.data.subarray(0, 3)), [100, 100, 100]); // patch 0, top-left pixel
  const top = plasma(1);
  assert.deepEqual(
    Array.from(out.data.subarray(2 * 3, 3 * 3)),
    top.map((c) => Math.round(100 * 0.25 + c * 0.75)),
  ); // patch 1
});

test('visuals of a real run agree with a direct encoding of every patch', async () => {
  const index = await VisualsIndex.open(run.visuals);
  const sae = await openSae(run.sae);
  const ds = await ShardDataset.open(run.shards);
  const P = ds.metadata.content_tokens_per_example;
  const S = sae.dSae;
  // The same batches as visuals, so that the encoder's float rounding is the same.
  const fires = new Float64Array(S);
  const best = Array.from({ length: S }, () => ({ v: 0, example: -1 }));
  for await (const b of new OrderedTokenLoader(ds, { layer: -1, tokens: 'patches' }, 4096).batches()) {
    const z = await sae.encode(b.acts_BD);
    for (let r = 0; r < b.example_B.length; r++)
      for (let e = z.rowptr[r]; e < z.rowptr[r + 1]; e++) {
        const j = z.idx[e],
          v = z.val[e];
        if (!(v > 0)) continue;
        fires[j]++;
        if (v > best[j].v || (v === best[j].v && b.example_B[r] < best[j].example)) best[j] = { v, example: b.example_B[r] };
      }
  }
  await ds.close();
  assert.deepEqual(index.meta.grid, [4, 4]);
  assert.equal(index.meta.n_images, 240);
  assert.equal(index.meta.n_tokens, 240 * P);
  let live = 0;
  for (let j = 0; j < S; j++) {
    const s = index.summary(j);
    assert.equal(s.frequency, fires[j] / (240 * P));
    assert.equal(s.max, best[j].v);
    const f = await index.feature(j);
    if (best[j].example < 0) {
      assert.equal(f.exemplars.length, 0);
      continue;
    }
    live++;
    assert.equal(f.exemplars[0].image, best[j].example, `latent ${j}'s top exemplar`);
    assert.equal(f.exemplars[0].key, `images-idx3-ubyte#${best[j].example}`);
    assert.equal(Buffer.from(f.exemplars[0].patches, 'base64').length, P);
    assert.ok(f.exemplars.length <= 8);
    assert.equal(
      index.histogram(j).counts.reduce((a, b) => a + b, 0),
      fires[j],
    );
  }
  assert.ok(live > S / 2, `${live} of ${S} latents fire`);
  // Thumbnails: every exemplar has one, of the recorded size.
  const j = best.findIndex((b) => b.example >= 0);
  const thumb = await sharp(path.join(run.visuals, thumbPath(j, 0))).metadata();
  assert.deepEqual([thumb.height, thumb.width, thumb.format], [...index.meta.thumb_size, 'webp']);
  const top = await index.imageTop(best[j].example);
  assert.ok(
    top.some((t) => t.latent === j),
    'the image lists the latent among its top latents',
  );
  const r = await readRun(run.dir);
  assert.deepEqual([r.shards, r.sae, r.visuals], [run.shards, run.sae, run.visuals]);
});

test('an interrupted visuals run resumes to the same index', async () => {
  const common = { sae: run.sae, shards: run.shards, k: 8, thumbSize: 64, batchTokens: 16 * 20, checkpointEvery: 3, showProgress: false };
  const whole = path.join(tmp, 'whole');
  const parts = path.join(tmp, 'parts');
  await computeVisuals({ ...common, out: whole });
  let batches = 0;
  assert.equal(await computeVisuals({ ...common, out: parts, shouldStop: () => ++batches === 5 }), null);
  assert.ok(readFileSync(path.join(parts, 'checkpoint.bin')).length > 0);
  await assert.rejects(computeVisuals({ ...common, k: 7, out: parts }), /other settings/);
  await computeVisuals({ ...common, out: parts });
  for (const f of ['stats.bin', 'hist.bin', 'image_top.bin', 'features/0.json', thumbPath(3, 0)]) assert.deepEqual(readFileSync(path.join(parts, f)), readFileSync(path.join(whole, f)), f);
  await assert.rejects(computeVisuals({ ...common, out: parts }), /already holds finished visuals/);
});
