/**
 * Comparing two runs: the Hungarian assignment against brute force over every assignment, the streamed
 * correlation against a direct float64 computation, the abstraction scores on an input worked out by hand, and
 * `vitsae compare` end to end on two layers of the demo model (numbers consistent with each other and with a
 * direct encoding, a self-contained report, clear refusals), and the comparison in the server, a static site and
 * the browser's matches page.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { maxWeightAssignment } from '../src/analysis/compare/hungarian.js';
import { StreamingCorrelation } from '../src/analysis/compare/correlation.js';
import { abstractionScores, type ExemplarPatches, type PatchLabels } from '../src/analysis/compare/abstraction.js';
import { checkSameImages, type RecordingSide } from '../src/analysis/compare/stream.js';
import type { CompareJson } from '../src/analysis/compare/format.js';
import { compareCommand } from '../src/cli/commands/compare.js';
import { runCommand } from '../src/cli/command.js';
import { readRun } from '../src/analysis/run.js';
import { VisualsIndex } from '../src/analysis/visuals-index.js';
import { Sae } from '../src/sae/model.js';
import { openSae } from '../src/interop/index.js';
import type { SparseActs } from '../src/sae/native.js';
import { OrderedTokenLoader, ShardDataset } from '../src/shards/index.js';
import { Rng } from '../src/util/random.js';
import { browserSkip, serveInBrowser } from './fixtures/browser.js';
import { createServer, openRuns } from '../src/server/app.js';
import { readComparison, withComparedRuns, withRunIds } from '../src/server/comparison.js';
import { writeSite } from '../src/server/site.js';
import type { RunComparison } from '../src/server/api.js';
import { runForJson } from './fixtures/helpers.js';
import { type LayerPair, makeLayerPair } from './fixtures/compare/runs.js';

/** Every injective map of the smaller side into the larger: the best total weight. */
function bruteForceBest(w: Float64Array, n: number, m: number): number {
  const rows = Math.min(n, m),
    cols = Math.max(n, m);
  const at = (i: number, j: number) => (n <= m ? w[i * m + j] : w[j * m + i]);
  const used = new Uint8Array(cols);
  const go = (i: number): number => {
    if (i === rows) return 0;
    let best = -Infinity;
    for (let j = 0; j < cols; j++) {
      if (used[j]) continue;
      used[j] = 1;
      best = Math.max(best, at(i, j) + go(i + 1));
      used[j] = 0;
    }
    return best;
  };
  return go(0);
}

test('the Hungarian assignment matches brute force on square and rectangular matrices, with ties and negatives', () => {
  const rng = new Rng(7);
  let cases = 0;
  for (let n = 1; n <= 6; n++) {
    for (let m = 1; m <= 6; m++) {
      for (let trial = 0; trial < 6; trial++) {
        // Half the trials draw from five integers, so ties are everywhere; the rest are continuous in [-1, 1].
        const w = Float64Array.from({ length: n * m }, () => (trial % 2 ? rng.nextInt(5) - 2 : 2 * rng.nextFloat() - 1));
        const rowToCol = maxWeightAssignment(w, n, m);
        assert.equal(rowToCol.length, n);
        const assigned = [...rowToCol].filter((j) => j >= 0);
        assert.equal(assigned.length, Math.min(n, m), `every row of the smaller side is matched (${n}x${m})`);
        assert.equal(new Set(assigned).size, assigned.length, 'no column is used twice');
        let total = 0;
        rowToCol.forEach((j, i) => j >= 0 && (total += w[i * m + j]));
        assert.ok(Math.abs(total - bruteForceBest(w, n, m)) < 1e-9, `${n}x${m} trial ${trial}: ${total} vs ${bruteForceBest(w, n, m)}`);
        cases++;
      }
    }
  }
  assert.equal(cases, 216);
});

/** Random sparse codes: each token fires `perRow` of the latents in `pool`, on a few values (ties). */
function randomCodes(rng: Rng, rows: number, pool: number[], perRow: number): SparseActs<Float32Array> {
  const rowptr = new Int32Array(rows + 1);
  const idx: number[] = [],
    val: number[] = [];
  for (let r = 0; r < rows; r++) {
    const chosen = new Set<number>();
    while (chosen.size < Math.min(perRow, pool.length)) chosen.add(pool[rng.nextInt(pool.length)]);
    for (const j of chosen) {
      idx.push(j);
      val.push(0.25 * (1 + rng.nextInt(8)));
    }
    rowptr[r + 1] = idx.length;
  }
  return { rowptr, idx: Int32Array.from(idx), val: Float32Array.from(val) };
}

/** Dense float64 [rows, S] of a code batch. */
function dense(c: SparseActs<Float32Array>, S: number): Float64Array {
  const rows = c.rowptr.length - 1;
  const out = new Float64Array(rows * S);
  for (let r = 0; r < rows; r++) for (let e = c.rowptr[r]; e < c.rowptr[r + 1]; e++) out[r * S + c.idx[e]] = c.val[e];
  return out;
}

/** Pearson correlation of two columns in float64, two-pass; 0 when either is constant. */
function pearson(x: Float64Array, y: Float64Array): number {
  const n = x.length;
  const mx = x.reduce((s, v) => s + v, 0) / n,
    my = y.reduce((s, v) => s + v, 0) / n;
  let sxy = 0,
    sxx = 0,
    syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : 0;
}

test('the streamed correlation equals a direct float64 computation; latents without variance correlate 0', () => {
  const rng = new Rng(3);
  const S = 9,
    T = 6;
  // Latents 7 and 8 of A and 5 of B never fire; latent 4 of B fires on every token with the same value.
  const poolA = [0, 1, 2, 3, 4, 5, 6],
    poolB = [0, 1, 2, 3];
  const acc = new StreamingCorrelation(S, T, 64);
  const colsA: number[][] = Array.from({ length: S }, () => []),
    colsB: number[][] = Array.from({ length: T }, () => []);
  for (const rows of [64, 17, 64, 1, 40]) {
    const a = randomCodes(rng, rows, poolA, 3);
    const b0 = randomCodes(rng, rows, poolB, 2);
    // Add the constant latent 4 to every row of b.
    const rowptr = new Int32Array(rows + 1),
      idx: number[] = [],
      val: number[] = [];
    for (let r = 0; r < rows; r++) {
      for (let e = b0.rowptr[r]; e < b0.rowptr[r + 1]; e++) idx.push(b0.idx[e]), val.push(b0.val[e]);
      idx.push(4);
      val.push(1.5);
      rowptr[r + 1] = idx.length;
    }
    const b = { rowptr, idx: Int32Array.from(idx), val: Float32Array.from(val) };
    acc.add(a, b);
    const [da, db] = [dense(a, S), dense(b, T)];
    for (let r = 0; r < rows; r++) {
      for (let s = 0; s < S; s++) colsA[s].push(da[r * S + s]);
      for (let t = 0; t < T; t++) colsB[t].push(db[r * T + t]);
    }
  }
  assert.equal(acc.n, 186);
  const r_ST = acc.correlations();
  for (let s = 0; s < S; s++) {
    for (let t = 0; t < T; t++) {
      const want = pearson(Float64Array.from(colsA[s]), Float64Array.from(colsB[t]));
      const got = r_ST[s * T + t];
      assert.ok(Number.isFinite(got), `r[${s}, ${t}] is a number`);
      assert.ok(Math.abs(got - want) < 1e-6, `r[${s}, ${t}]: ${got} vs ${want}`);
      if (s >= 7 || t === 5 || t === 4) assert.equal(got, 0, `a latent without variance: r[${s}, ${t}] = 0`);
    }
  }
});

test('abstraction scores of a hand-worked latent', () => {
  const C = 3;
  // Per exemplar: class, stored values on 4 patches, and the concepts present at each patch.
  const spec: [number | null, number[], number[][]][] = [
    [2, [255, 0, 0, 0], [[0], [], [], []]],
    [2, [100, 100, 0, 0], [[0], [1], [], []]],
    [1, [0, 0, 51, 204], [[], [], [0, 2], [2]]],
    [2, [255, 255, 255, 255], [[1], [], [], []]],
  ];
  const exemplars: ExemplarPatches[] = spec.map(([label, q], i) => ({ label, example: i, patches_P: Uint8Array.from(q) }));
  const labels: PatchLabels = {
    concepts: ['colour:red', 'shape:star', 'texture:dots'],
    labels(example) {
      const out = new Uint8Array(4 * C);
      spec[example][2].forEach((cs, p) => cs.forEach((c) => (out[p * C + c] = 1)));
      return out;
    },
  };
  const s = abstractionScores(exemplars, labels);
  // spread: (1 + 2 + 2 + 4) / 4 patches / 4 exemplars.
  assert.ok(Math.abs(s.spread - 0.5625) < 1e-12, `spread ${s.spread}`);
  assert.equal(s.class, 2);
  assert.equal(s.class_purity, 0.75);
  // Shares of firing mass: red 1, 0.5, 51/255, 0 -> mean 0.425; star 0.5 + 0.25 -> 0.1875; dots 1 -> 0.25.
  assert.equal(s.concept, 'colour:red');
  assert.ok(Math.abs(s.concept_purity! - 0.425) < 1e-12, `concept purity ${s.concept_purity}`);
  // Without labels the scores are left out, not guessed.
  const bare = abstractionScores(exemplars.map((e, i) => ({ ...e, label: i === 1 ? null : e.label })));
  assert.equal(bare.class_purity, undefined);
  assert.equal(bare.concept_purity, undefined);
  assert.ok(Math.abs(bare.spread - 0.5625) < 1e-12);
});

let tmp: string;
let pair: LayerPair;

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-compare-'));
  pair = await makeLayerPair(path.join(tmp, 'runs'));
});

after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** Every latent's best correlation with the other run, from a direct float64 encoding of all patches. */
async function directBestMatches(runA: string, runB: string): Promise<[Float64Array, Float64Array]> {
  const cols = async (dir: string) => {
    const run = await readRun(dir);
    const sae = await Sae.load(run.sae);
    const ds = await ShardDataset.open(run.shards);
    const layer = (await VisualsIndex.open(run.visuals)).meta.source.layer;
    const out: number[][] = Array.from({ length: sae.dSae }, () => []);
    for await (const b of new OrderedTokenLoader(ds, { layer, tokens: 'patches' }, 1000).batches()) {
      const z = dense(await sae.encode(b.acts_BD), sae.dSae);
      for (let r = 0; r < b.example_B.length; r++) for (let s = 0; s < sae.dSae; s++) out[s].push(z[r * sae.dSae + s]);
    }
    await ds.close();
    return out.map((c) => Float64Array.from(c));
  };
  const [a, b] = [await cols(runA), await cols(runB)];
  const fires = (c: Float64Array) => c.some((v) => v > 0);
  const best = (x: Float64Array[], y: Float64Array[]) => Float64Array.from(x, (c) => (fires(c) && y.some(fires) ? Math.max(...y.filter(fires).map((d) => pearson(c, d))) : 0));
  return [best(a, b), best(b, a)];
}

test('vitsae compare: consistent numbers, matches a direct computation, a self-contained report', async () => {
  const out = path.join(tmp, 'cmp');
  const [printed] = (await runForJson(compareCommand, [pair.late, pair.early, '--out', out, '--threshold', '0.4', '--min-exemplars', '3', '--json', '--no-progress'])) as CompareJson[];
  const onDisk = JSON.parse(await fsp.readFile(path.join(out, 'compare.json'), 'utf8')) as CompareJson;
  assert.deepEqual(onDisk, printed);
  const cmp = onDisk;
  assert.equal(cmp.format, 'vitsae-compare');
  assert.equal(cmp.n_images, pair.images);
  assert.equal(cmp.n_patches, pair.images * 64);
  const [a, b] = cmp.runs;
  assert.deepEqual([a.name, b.name, a.d_sae, b.d_sae], ['late', 'early', 48, 40]);
  assert.ok(a.layer > b.layer, 'the later layer is A');

  const [directA, directB] = await directBestMatches(pair.late, pair.early);
  for (const [side, other, direct] of [
    [a, b, directA],
    [b, a, directB],
  ] as const) {
    const index = await VisualsIndex.open((await readRun(side.dir)).visuals);
    assert.equal(side.latents.length, side.d_sae);
    // Spectrum: every latent is in a bin or dead, and dead ones never fire.
    assert.equal(side.spectrum.counts.reduce((s, c) => s + c, 0) + side.spectrum.dead, side.d_sae);
    assert.equal(side.spectrum.dead, side.d_sae - side.live);
    assert.equal(
      side.best_match.counts.reduce((s, c) => s + c, 0),
      side.live,
    );
    assert.equal(side.best_match.above_threshold + side.unmatched.length, side.live);
    for (const l of side.latents) {
      assert.ok(Math.abs(l.frequency - index.summary(l.latent).frequency) <= 1e-5 * l.frequency, 'frequency from the visuals');
      assert.ok(Math.abs(l.best_r - direct[l.latent]) < 1e-4, `${side.name} #${l.latent}: best r ${l.best_r} vs direct ${direct[l.latent]}`);
      if (l.partner >= 0) {
        assert.equal(other.latents[l.partner].partner, l.latent, 'the assignment is one to one');
        assert.equal(other.latents[l.partner].partner_r, l.partner_r);
        if (l.best >= 0) assert.ok(l.partner_r <= l.best_r + 1e-12, 'no partner beats the best match');
      }
      if (l.spread !== undefined) {
        assert.ok(l.n_exemplars >= 3 && l.spread > 0 && l.spread <= 1);
        // Scores are stored to 6 significant digits (compare.ts), so 1/7 reads 0.142857.
        assert.ok(l.class_purity! >= Number((1 / l.n_exemplars).toPrecision(6)) && l.class_purity! <= 1 && l.class! >= 0 && l.class! < 12, `the concept world has 12 classes: ${JSON.stringify(l)}`);
        assert.ok(l.concept_purity! > 0 && l.concept_purity! <= 1 + 1e-9 && l.concept!.includes(':'));
      } else assert.ok(l.n_exemplars < 3);
    }
    let previous = Infinity;
    for (const j of side.unmatched) {
      assert.ok(side.latents[j].best_r < cmp.threshold && side.latents[j].frequency <= previous, 'unmatched, most frequent first');
      previous = side.latents[j].frequency;
    }
    assert.ok(side.abstraction.class_labels && side.abstraction.concept_names?.length === 22 && side.abstraction.class_names?.length === 12);
    assert.ok(side.abstraction.scored > 0 && side.abstraction.mean_class_purity !== null && side.abstraction.mean_concept_purity !== null);
  }
  assert.equal(a.latents.filter((l) => l.partner >= 0).length, 40, 'the smaller run is matched in full');
  assert.ok(a.concepts && a.concepts.concepts.length === 22 && a.concepts.mean_best_f1 > 0, 'the late run has a concept report');
  assert.equal(b.concepts, null, 'the early run has none, and gets none');

  const html = await fsp.readFile(path.join(out, 'report.html'), 'utf8');
  assert.ok(html.includes('Chart.js v4') && html.includes('new Chart('), 'Chart.js is inlined and used');
  for (const id of ['spectrum', 'best', 'scatter']) assert.ok(html.includes(`<canvas id="${id}">`), `plot ${id}`);
  assert.ok(html.includes('src="data:image/webp;base64,'), 'thumbnails are inlined');
  // The only URLs are in Chart.js's licence comment; nothing is loaded from anywhere.
  const library = html.slice(html.indexOf('/*!\n * Chart.js'), html.indexOf('</script>'));
  const page = html.replace(library, '');
  assert.doesNotMatch(page, /https?:\/\//);
  assert.doesNotMatch(html, /(src|href)\s*=\s*["']?(https?:)?\/\//i);
});

test('vitsae compare refuses runs on other images and matrices beyond the memory limit', async () => {
  const side = async (dir: string): Promise<RecordingSide> => {
    const run = await readRun(dir);
    const ds = await ShardDataset.open(run.shards);
    return { name: dir, sae: await openSae(run.sae), ds, layer: -1, dataset: ds.metadata.dataset };
  };
  const [x, y] = [await side(pair.late), await side(pair.early)];
  await checkSameImages(x, y);
  const fewer = { ...y, ds: { ...y.ds, dir: y.ds.dir, metadata: { ...y.ds.metadata, n_examples: pair.images - 1 } } as unknown as ShardDataset };
  await assert.rejects(checkSameImages(x, fewer), /not recorded on the same images: images 96 vs 95/);
  await x.ds.close();
  await y.ds.close();
  await assert.rejects(
    runCommand(compareCommand, [pair.late, pair.early, '--out', path.join(tmp, 'none'), '--max-memory-gb', '0.000001', '--no-progress']),
    /needs about .* GiB \(8 bytes per pair of latents, d_sae_A x d_sae_B x 8/,
  );
  await assert.rejects(runCommand(compareCommand, [pair.late, '--no-progress']), /expected two run directories/);
});

test('the server answers the comparison of its runs at /api/comparison, and a static site stores it', async () => {
  // The output of the end-to-end test above.
  const cmp = await readComparison(path.join(tmp, 'cmp'));
  const runs = await openRuns(withComparedRuns([pair.early], cmp));
  assert.deepEqual(
    runs.map((r) => r.id),
    ['early', 'late'],
    'the compared runs are opened, each once',
  );
  assert.throws(() => withRunIds(cmp, runs.slice(0, 1)), /not among the runs given/);
  const app = await createServer({ runs, comparison: withRunIds(cmp, runs) });
  try {
    const res = await app.inject({ url: '/api/comparison', headers: { host: '127.0.0.1' } });
    assert.equal(res.statusCode, 200);
    const served = res.json<RunComparison>();
    assert.deepEqual(served.ids, ['late', 'early']);
    assert.deepEqual(served.runs, cmp.runs);
  } finally {
    await app.close();
  }
  const bare = await createServer({ runs: await openRuns([pair.late]) });
  const missing = await bare.inject({ url: '/api/comparison', headers: { host: '127.0.0.1' } });
  assert.equal(missing.statusCode, 404);
  assert.match(missing.json<{ message: string }>().message, /--compare DIR/);
  await bare.close();

  const site = path.join(tmp, 'site');
  await writeSite(withComparedRuns([], cmp), site, { comparison: cmp, showProgress: false });
  const stored = JSON.parse(await fsp.readFile(path.join(site, 'data', 'comparison.json'), 'utf8')) as RunComparison;
  assert.deepEqual(stored.ids, ['late', 'early']);
});

test('the matches page lists pairs and unmatched latents and opens a pair side by side', { skip: browserSkip }, async () => {
  const cmp = await readComparison(path.join(tmp, 'cmp'));
  const runs = await openRuns(withComparedRuns([], cmp));
  const { app, base, browser, page, pageErrors: errors } = await serveInBrowser(tmp, { runs, comparison: withRunIds(cmp, runs) });
  try {
    await page.goto(`${base}#/matches`);
    await page.waitForSelector('[data-testid=matches] tbody tr');
    const [a, b] = cmp.runs;
    const pairs = a.latents.filter((l) => l.partner >= 0 && l.best >= 0 && b.latents[l.partner].best >= 0);
    assert.equal(await page.locator('[data-testid=matches] tbody tr').count(), Math.min(50, pairs.length));
    const best = pairs.sort((x, y) => y.partner_r - x.partner_r)[0];
    assert.equal((await page.locator('[data-testid=matches] tbody tr:first-child td').first().textContent())?.trim(), best.partner_r.toFixed(3), 'the most correlated pair first');
    await page.click('[data-testid=matches-only-a]');
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid=matches] tbody tr').length === n, Math.min(50, a.unmatched.length));
    await page.goto(`${base}#/matches`);
    await page.click('[data-testid=matches] tbody tr:first-child >> text=side by side');
    await page.waitForSelector('[data-testid=compare-right] h2, [data-testid=compare-right] [data-testid=exemplar-img]');
    assert.ok(page.url().endsWith(`#/compare/late/${best.latent}/early/${best.partner}`), page.url());
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await app.close();
  }
});
