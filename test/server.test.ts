/**
 * The feature browser's HTTP API on a small real run: contents against the index and a direct encoding, paging
 * and sorting, annotations persisted in SQLite, concept matches from a known concept report, cache headers, 4xx
 * with a message for every bad request (never a 500), no file outside the thumbnail directories, and the server
 * time of a feature page and of lists with 24,576 latents.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { promisify } from 'node:util';
import * as os from 'node:os';
import * as path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { createServer, openRuns } from '../src/server/app.js';
import type { ConceptMatch, FeatureList, FeaturePage, ImagePage, RunInfo, Comparison } from '../src/server/api.js';
import { RunData } from '../src/server/run-data.js';
import { ANNOTATIONS_FILE } from '../src/server/annotations.js';
import { HIST_BINS } from '../src/analysis/accumulate.js';
import { readRun, writeRun } from '../src/analysis/run.js';
import { addConceptReportToRun, type ConceptReport, writeConceptReport } from '../src/analysis/concepts.js';
import { CHUNK_SIZE, HISTOGRAM_LAYOUT, STATS_COLUMNS, thumbPath, VisualsIndex, type VisualsMeta } from '../src/analysis/visuals-index.js';
import { openSae } from '../src/interop/index.js';
import { ShardDataset } from '../src/shards/index.js';
import { Rng } from '../src/util/random.js';
import { type ConfigOf, type ConfigSpec, helpText, parseArgs } from '../src/util/config.js';
import { jsonSchemaOf } from '../src/server/schema.js';
import { makeRun, type SmallRun } from './fixtures/web/run.js';

let tmp: string;
let run: SmallRun;
let app: FastifyInstance;
let index: VisualsIndex;
const ID = 'run';

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-server-'));
  run = await makeRun(path.join(tmp, 'run'));
  // The same run twice: a second SAE for the comparison endpoint.
  app = await createServer({ runs: await openRuns([run.dir, run.dir]), loopbackOnly: true });
  index = await VisualsIndex.open(run.visuals);
});

after(async () => {
  await app?.close();
  await fsp.rm(tmp, { recursive: true, force: true });
});

const get = (url: string, headers: Record<string, string> = {}) => app.inject({ method: 'GET', url, headers: { host: '127.0.0.1:8770', ...headers } });

test('runs and the feature list: sorted, filtered, paged', async () => {
  const runs = (await get('/api/runs')).json<{ runs: RunInfo[] }>().runs;
  assert.deepEqual(
    runs.map((r) => r.id),
    [ID, `${ID}-2`],
  );
  assert.equal(runs[0].d_sae, 64);
  assert.deepEqual(runs[0].grid, [4, 4]);
  assert.equal(runs[0].files, `/files/${ID}/`);
  const all = (await get(`/api/runs/${ID}/features?sort=frequency&order=desc&limit=500`)).json<FeatureList>();
  assert.equal(all.total, 64);
  const want = Array.from({ length: 64 }, (_, j) => index.summary(j)).sort((a, b) => b.frequency - a.frequency || a.latent - b.latent);
  assert.deepEqual(
    all.items.map((f) => f.latent),
    want.map((f) => f.latent),
  );
  const page2 = (await get(`/api/runs/${ID}/features?sort=frequency&order=desc&offset=10&limit=5`)).json<FeatureList>();
  assert.deepEqual(
    page2.items.map((f) => f.latent),
    want.slice(10, 15).map((f) => f.latent),
  );
  const alive = (await get(`/api/runs/${ID}/features?min_frequency=1e-300&limit=500`)).json<FeatureList>();
  assert.equal(alive.total, want.filter((f) => f.frequency > 0).length);
});

test('a feature page holds its statistics, exemplars and co-firing features', async () => {
  const j = index.meta.d_sae - 1 - [...Array(64).keys()].reverse().findIndex((x) => index.summary(x).frequency > 0);
  const res = await get(`/api/runs/${ID}/features/${j}`);
  assert.equal(res.statusCode, 200);
  assert.match(String(res.headers['server-timing']), /^app;dur=[\d.]+$/);
  const f = res.json<FeaturePage>();
  const rec = await index.feature(j);
  assert.equal(f.latent, j);
  assert.equal(f.frequency, index.summary(j).frequency);
  assert.deepEqual(
    f.exemplars.map((e) => e.image),
    rec.exemplars.map((e) => e.image),
  );
  assert.equal(f.exemplars[0].values.length, 16);
  assert.ok(Math.abs(Math.max(...f.exemplars[0].values) - f.max) < 1e-6, 'the top exemplar peaks at the feature max');
  assert.equal(
    f.histogram.counts.reduce((a, b) => a + b, 0),
    Math.round(f.frequency * index.meta.n_tokens),
  );
  assert.ok(f.cofire.every((c) => c.latent !== j && c.count >= 1 && c.count <= f.exemplars.length));
  // Thumbnails are static files with cache validators.
  const thumb = await get(`/files/${ID}/${thumbPath(j, 0)}`);
  assert.equal(thumb.statusCode, 200);
  assert.equal(thumb.headers['content-type'], 'image/webp');
  assert.match(String(thumb.headers['cache-control']), /max-age=86400/);
  assert.ok(thumb.headers.etag);
  assert.equal((await get(`/files/${ID}/${thumbPath(j, 0)}`, { 'if-none-match': String(thumb.headers.etag) })).statusCode, 304);
});

test('an image page lists what fires on each patch, as a direct encoding says', async () => {
  const res = await get(`/api/runs/${ID}/images/7`);
  assert.equal(res.statusCode, 200);
  const page = res.json<ImagePage>();
  assert.equal(page.key, 'images-idx3-ubyte#7');
  assert.equal(page.patches.length, 16);
  const sae = await openSae(run.sae);
  const ds = await ShardDataset.open(run.shards);
  const z = await sae.encode(await ds.readTokens(0, 7, 1, 1, 16));
  await ds.close();
  for (let p = 0; p < 16; p++) {
    const want = new Map<number, number>();
    for (let e = z.rowptr[p]; e < z.rowptr[p + 1]; e++) if (z.val[e] > 0) want.set(z.idx[e], z.val[e]);
    assert.deepEqual(new Map(page.patches[p]), want, `patch ${p}`);
    for (const [j] of page.patches[p]) assert.equal(page.latents[j].latent, j);
  }
  assert.deepEqual(page.top, await index.imageTop(7));
  // Concurrent pages share the SAE, which encodes one batch at a time.
  const pages = await Promise.all([11, 12, 13, 14].map((i) => get(`/api/runs/${ID}/images/${i}`)));
  assert.deepEqual(
    pages.map((p) => p.statusCode),
    [200, 200, 200, 200],
  );
  const view = await get(page.view);
  assert.equal(view.headers['content-type'], 'image/png');
  assert.match(String(view.headers['cache-control']), /max-age/);
  assert.equal((await get(page.view, { 'if-none-match': String(view.headers.etag) })).statusCode, 304);
});

test('names and notes are saved in SQLite and shown everywhere', async () => {
  const put = (latent: number, body: unknown) => app.inject({ method: 'PUT', url: `/api/runs/${ID}/features/${latent}/annotation`, headers: { host: '127.0.0.1' }, payload: body as object });
  assert.equal((await put(3, { name: ' vertical edge ', notes: 'left side of trousers' })).statusCode, 200);
  assert.equal((await get(`/api/runs/${ID}/features/3`)).json<FeaturePage>().name, 'vertical edge');
  const named = (await get(`/api/runs/${ID}/features?annotated=named`)).json<FeatureList>();
  assert.deepEqual(
    named.items.map((f) => [f.latent, f.name]),
    [[3, 'vertical edge']],
  );
  assert.equal((await get(`/api/runs/${ID}/features?q=TROUSERS`)).json<FeatureList>().total, 1);
  const bad = await put(3, { name: 'x'.repeat(201) });
  assert.equal(bad.statusCode, 400);
  assert.match(bad.json().message, /name/);
  assert.equal((await put(3, { title: 'x' })).statusCode, 400);
  // Text must be valid Unicode: a lone surrogate is refused, any real character (outside the BMP too) round-trips,
  // through vitsae and through Python's sqlite3, which rejects invalid UTF-8.
  const lone = await put(5, { name: 'lone \ud800 surrogate' });
  assert.equal(lone.statusCode, 400);
  assert.match(lone.json().message, /name holds a lone UTF-16 surrogate/);
  assert.equal((await put(5, { name: 'butterfly \u{1F98B} é', notes: '\udbff\udfff' })).statusCode, 200);
  assert.equal((await get(`/api/runs/${ID}/features/5`)).json<FeaturePage>().name, 'butterfly \u{1F98B} é');
  if (existsSync('/usr/bin/python3')) {
    const py = 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select name from features where latent = 5").fetchone()[0].encode("unicode_escape").decode())';
    const { stdout } = await promisify(execFile)('/usr/bin/python3', ['-c', py, path.join(run.dir, ANNOTATIONS_FILE)]);
    assert.equal(stdout.trim(), 'butterfly \\U0001f98b \\xe9');
  }
  // Stored on disk: a fresh reader sees it.
  const again = await RunData.open(run.dir, 'again', { files: () => '', view: () => '' }, { readonly: true });
  assert.equal((await again.feature(3)).notes, 'left side of trousers');
  await again.close();
});

/** A concept report with the given per-latent matches (the per-concept summary does not matter here). */
function reportOf(concepts: string[], latents: ConceptMatch[][]): ConceptReport {
  const score = { support: 1, latent: 0, threshold: 0, f1: 0, fires_latent: 0, fires_f1: 0, group: [], group_f1: 0, probe_f1: 0, neuron_f1: 0, random_f1: 0 };
  return {
    mean_best_f1: 0,
    mean_fires_f1: 0,
    mean_group_f1: 0,
    mean_probe_f1: 0,
    mean_neuron_f1: 0,
    mean_random_f1: 0,
    recovery_ratio: 0,
    recovery_ratio_fires: 0,
    recovery_ratio_group3: 0,
    n_decodable: 0,
    n_patches: 1,
    n_fit_patches: 1,
    n_scored_patches: 1,
    concepts: concepts.map((concept) => ({ concept, ...score })),
    latents,
  };
}

const match = (concept: string, precision: number, recall: number): ConceptMatch => ({ concept, f1: (2 * precision * recall) / (precision + recall), precision, recall });

test('concept matches: the list sorts and filters by them, a feature page shows them', async () => {
  // The same run with a known concept report, recorded in its run.json.
  const dir = path.join(tmp, 'labelled');
  await writeRun(dir, { shards: run.shards, sae: run.sae, visuals: run.visuals });
  const known: Record<number, ConceptMatch[]> = {
    5: [match('colour:red', 0.9, 0.9), match('shape:square', 0.3, 0.6)], // F1 0.9, 0.4
    20: [match('colour:red', 0.9, 0.9)], // ties with 5
    9: [match('shape:square', 0.8, 0.6)], // 0.686
    12: [match('colour:red', 0.5, 0.5), match('shape:circle', 0.2, 0.2)], // 0.5
    40: [match('shape:circle', 0.25, 0.1)], // 0.143
  };
  const concepts = ['colour:red', 'shape:square', 'shape:circle', 'texture:striped'];
  await addConceptReportToRun(
    dir,
    reportOf(
      concepts,
      Array.from({ length: 64 }, (_, j) => known[j] ?? []),
    ),
  );
  assert.equal((await readRun(dir)).concepts, path.join(dir, 'concepts.json'));
  const labelled = await createServer({ runs: await openRuns([dir]), loopbackOnly: true });
  try {
    const ask = async <T>(url: string) => {
      const res = await labelled.inject({ method: 'GET', url, headers: { host: '127.0.0.1' } });
      assert.equal(res.statusCode, 200, res.body);
      return res.json<T>();
    };
    const list = async (query: string) => (await ask<FeatureList>(`/api/runs/labelled/features?limit=500&${query}`)).items;
    assert.deepEqual((await ask<{ runs: RunInfo[] }>('/api/runs')).runs[0].concepts, concepts);
    assert.deepEqual((await get('/api/runs')).json<{ runs: RunInfo[] }>().runs[0].concepts, [], 'a run without a report');
    // Best F1 first, ties by id; features without a match (F1 0) after them, by id.
    const unmatched = [...Array(64).keys()].filter((j) => !known[j]);
    const desc = await list('sort=concept_f1&order=desc');
    assert.deepEqual(
      desc.map((f) => f.latent),
      [5, 20, 9, 12, 40, ...unmatched],
    );
    assert.deepEqual(
      desc.slice(0, 5).map((f) => f.concept),
      ['colour:red', 'colour:red', 'shape:square', 'colour:red', 'shape:circle'],
    );
    const f1s = [0.9, 0.9, 0.6857, 0.5, 0.1429];
    desc.slice(0, 5).forEach((f, i) => assert.ok(Math.abs(f.concept_f1 - f1s[i]) < 1e-4, `latent ${f.latent}: F1 ${f.concept_f1}`));
    assert.deepEqual(desc[5], { ...desc[5], concept: '', concept_f1: 0 });
    assert.deepEqual(
      (await list('sort=concept_f1&order=asc')).map((f) => f.latent),
      [...unmatched, 40, 12, 9, 5, 20],
    );
    // The concept filter selects by the best match: latent 5 also matches shape:square, but less well than red.
    assert.deepEqual(
      (await list('sort=concept_f1&order=desc&concept=colour:red')).map((f) => f.latent),
      [5, 20, 12],
    );
    assert.deepEqual(
      (await list('sort=latent&concept=shape:square')).map((f) => f.latent),
      [9],
    );
    assert.deepEqual(await list('concept=texture:striped'), [], "a concept that is no feature's best");
    assert.deepEqual(
      (await list('sort=latent&min_concept_f1=0.5')).map((f) => f.latent),
      [5, 9, 12, 20],
    );
    assert.deepEqual(
      (await list('sort=concept_f1&order=desc&concept=colour:red&min_concept_f1=0.6')).map((f) => f.latent),
      [5, 20],
    );
    // A feature page lists its matches with precision and recall, best first.
    const page = await ask<FeaturePage>('/api/runs/labelled/features/5');
    assert.deepEqual(page.concepts, known[5]);
    assert.ok(Math.abs(page.concepts[1].f1 - 0.4) < 1e-12 && page.concepts[1].precision === 0.3 && page.concepts[1].recall === 0.6);
    assert.deepEqual([page.concept, page.concept_f1], ['colour:red', known[5][0].f1]);
    assert.deepEqual((await ask<FeaturePage>('/api/runs/labelled/features/0')).concepts, []);
    assert.equal((await labelled.inject({ method: 'GET', url: '/api/runs/labelled/features?min_concept_f1=2', headers: { host: '127.0.0.1' } })).statusCode, 400);
  } finally {
    await labelled.close();
  }
  // Another SAE's report (another latent count) is refused with a message.
  await writeConceptReport(path.join(dir, 'concepts.json'), reportOf(concepts, [[], []]));
  await assert.rejects(RunData.open(dir, 'x', { files: () => '', view: () => '' }), /matches 2 latents but the run's SAE has 64/);
});

test('two runs compare by the images they share', async () => {
  const j = index.meta.d_sae - 1 - [...Array(64).keys()].reverse().findIndex((x) => index.summary(x).frequency > 0);
  const c = (await get(`/api/runs/${ID}/compare/${j}?other=${ID}-2`)).json<Comparison>();
  assert.equal(c.images, index.exemplarCount(j));
  // The feature fires on all its own exemplars, so in an identical run it is among the best matches.
  assert.ok(
    c.matches.some((m) => m.latent === j && m.count === c.images),
    JSON.stringify(c.matches.slice(0, 3)),
  );
});

test("a flat option set is a config spec: its JSON Schema, its type and the CLI's reading agree", () => {
  const spec = {
    run: { kind: 'string', required: true, maxLength: 100, doc: 'the run' },
    limit: { kind: 'number', int: true, min: 1, max: 500, default: 100, doc: 'rows' },
    freq: { kind: 'number', min: 0, max: 1, doc: 'a frequency' },
    order: { kind: 'enum', choices: ['asc', 'desc'], default: 'asc', doc: 'the order' },
    id: { kind: 'string', pattern: '^[0-9a-f]+$', doc: 'an id' },
  } as const satisfies ConfigSpec;
  assert.deepEqual(jsonSchemaOf(spec), {
    type: 'object',
    properties: {
      run: { type: 'string', description: 'the run', maxLength: 100 },
      limit: { type: 'integer', description: 'rows', default: 100, minimum: 1, maximum: 500 },
      freq: { type: 'number', description: 'a frequency', minimum: 0, maximum: 1 },
      order: { type: 'string', description: 'the order', default: 'asc', enum: ['asc', 'desc'] },
      id: { type: 'string', description: 'an id', pattern: '^[0-9a-f]+$' },
    },
    required: ['run'],
    additionalProperties: false,
  });
  // A field with no default may be absent (type and value); a required one may not.
  const given: ConfigOf<typeof spec> = { run: 'r', limit: 1, order: 'desc' };
  // @ts-expect-error run is required
  const missing: ConfigOf<typeof spec> = { limit: 1, order: 'desc' };
  assert.ok(given && missing);
  assert.deepEqual(parseArgs(spec, ['--run', 'r']).config, { run: 'r', limit: 100, order: 'asc' });
  assert.throws(() => parseArgs(spec, ['--limit', '5']), /--run is required/);
  assert.throws(() => parseArgs(spec, ['--run', 'x'.repeat(101)]), /--run "x+": longer than 100 characters/);
  assert.throws(() => parseArgs(spec, ['--run', 'r', '--id', 'XY']), /--id "XY": must match \^\[0-9a-f\]\+\$/);
  assert.match(helpText(spec), /^ {2}--freq N +a frequency$/m);
});

test('numbers written plainly still pass the strict check', async () => {
  assert.equal((await get(`/api/runs/${ID}/features/0`)).statusCode, 200);
  assert.equal((await get(`/api/runs/${ID}/features/12`)).statusCode, 200);
  assert.equal((await get(`/api/runs/${ID}/features?min_frequency=1e-300&max_frequency=0.5&offset=10&limit=5`)).statusCode, 200);
});

test('bad requests get a 4xx with a message, never a 500, and no file outside the data', async () => {
  const cases: [string, number][] = [
    [`/api/runs/${ID}/features/64`, 404],
    [`/api/runs/${ID}/features/-1`, 400],
    [`/api/runs/${ID}/features/1.5`, 400],
    [`/api/runs/${ID}/features/abc`, 400],
    [`/api/runs/${ID}/features/99999999999999999999999`, 400],
    // Numbers in URLs are written plainly: no whitespace, no Infinity, no overflow to Infinity, no leading zeros.
    [`/api/runs/${ID}/features/%20`, 400],
    [`/api/runs/${ID}/features/%09`, 400],
    [`/api/runs/${ID}/features/Infinity`, 400],
    [`/api/runs/${ID}/features/1e1`, 400],
    [`/api/runs/${ID}/features/07`, 400],
    [`/api/runs/${ID}/images/%20`, 400],
    [`/api/runs/${ID}/features?min_concept_f1=1e309`, 400],
    [`/api/runs/${ID}/features?min_frequency=%20`, 400],
    [`/api/runs/${ID}/features?offset=%20`, 400],
    [`/api/runs/nope/features/1`, 404],
    [`/api/runs/${ID}/features?sort=bogus`, 400],
    [`/api/runs/${ID}/features?limit=0`, 400],
    [`/api/runs/${ID}/features?limit=100000`, 400],
    [`/api/runs/${ID}/features?offset=-3`, 400],
    [`/api/runs/${ID}/features?min_frequency=2`, 400],
    [`/api/runs/${ID}/features?what=1`, 400],
    [`/api/runs/${ID}/images/240`, 404],
    [`/api/runs/${ID}/images/-2/view.png`, 400],
    [`/api/runs/${ID}/compare/1?other=nope`, 404],
    [`/api/runs/${ID}/compare/1`, 400],
    [`/files/${ID}/thumbs/../../run.json`, 0],
    [`/files/${ID}/thumbs/..%2f..%2frun.json`, 0],
    [`/files/${ID}/thumbs/%2e%2e/%2e%2e/run.json`, 0],
    [`/files/${ID}/thumbs/%2e%2e%2f%2e%2e%2fannotations.sqlite`, 0],
    [`/files/${ID}/thumbs/%00`, 0],
    [`/files/${ID}/features/0.json`, 0],
    ['/api/nothing', 404],
  ];
  // Code 0: any 4xx (path traversal attempts are refused in different ways, but never served).
  for (const [url, code] of cases) {
    const res = await get(url);
    assert.ok(res.statusCode >= 400 && res.statusCode < 500, `${url}: ${res.statusCode}`);
    if (code && res.statusCode !== code) assert.fail(`${url}: expected ${code}, got ${res.statusCode} ${res.body}`);
    assert.ok(!res.body.includes('"format": "vitsae-run"'), `${url} leaked run.json`);
    if (String(res.headers['content-type']).includes('json')) assert.ok(res.json().message, `${url} has a message`);
  }
  assert.match((await get(`/api/runs/${ID}/features?sort=bogus`)).json().message, /latent, frequency/);
  // A page on another host name (DNS rebinding) is refused.
  assert.equal((await get('/api/runs', { host: 'attacker.example:8770' })).statusCode, 403);
});

/**
 * A synthetic index of 24,576 latents with realistic chunks (20 exemplars of 256 patches each): full statistics
 * and histogram tables, the chunk files of the latents the test asks for, and a concept report.
 */
async function bigIndex(dir: string, S: number, asked: number[]): Promise<void> {
  const visuals = path.join(dir, 'visuals');
  const P = 256,
    K = 20,
    N = 100_000;
  await fsp.mkdir(path.join(visuals, 'features'), { recursive: true });
  const rng = new Rng(5);
  const stats = new Float64Array(S * STATS_COLUMNS.length);
  for (let j = 0; j < S; j++) {
    const fires = Math.floor(rng.nextFloat() * 1e5);
    stats.set([fires, Math.min(N, fires), fires * 2, 4 + rng.nextFloat()], j * 4);
  }
  const hist = new Uint32Array(S * HIST_BINS).map(() => (rng.nextFloat() < 0.2 ? Math.floor(rng.nextFloat() * 1000) : 0));
  await fsp.writeFile(path.join(visuals, 'stats.bin'), new Uint8Array(stats.buffer));
  await fsp.writeFile(path.join(visuals, 'hist.bin'), new Uint8Array(hist.buffer));
  for (const c of new Set(asked.map((j) => Math.floor(j / CHUNK_SIZE)))) {
    const features = Array.from({ length: CHUNK_SIZE }, (_, i) => ({
      latent: c * CHUNK_SIZE + i,
      exemplars: Array.from({ length: K }, (_, r) => ({
        image: (c * 7919 + i * 31 + r) % N,
        key: `n01440764/ILSVRC2012_val_000${(c * 7919 + i * 31 + r) % N}.JPEG`,
        label: r,
        max: 5 - r * 0.1,
        patches: Buffer.from(Array.from({ length: P }, () => (rng.nextFloat() < 0.3 ? Math.floor(rng.nextFloat() * 256) : 0))).toString('base64'),
      })),
      cofire: Array.from({ length: 12 }, (_, q) => [(c * CHUNK_SIZE + i + q + 1) % S, 12 - q]),
    }));
    await fsp.writeFile(path.join(visuals, 'features', `${c}.json`), JSON.stringify({ first: c * CHUNK_SIZE, features }));
  }
  const meta: VisualsMeta = {
    format: 'vitsae-visuals',
    version: 1,
    d_sae: S,
    n_images: N,
    n_tokens: N * P,
    patches: P,
    grid: [16, 16],
    image_size: [224, 224],
    k: K,
    cofire: 8,
    image_top: 16,
    chunk_size: CHUNK_SIZE,
    thumb_size: [128, 128],
    histogram: HISTOGRAM_LAYOUT,
    stats_columns: STATS_COLUMNS,
    source: { sae: path.join(dir, 'sae'), shards: path.join(dir, 'acts'), layer: -2, images: path.join(dir, 'images') },
    created: new Date().toISOString(),
  };
  await fsp.writeFile(path.join(visuals, 'index.json'), JSON.stringify(meta));
  // Most latents match up to three of 22 concepts.
  const names = Array.from({ length: 22 }, (_, c) => `concept:${c}`);
  const matches = (n: number) => Array.from({ length: n }, () => match(names[rng.nextInt(names.length)], 0.01 + rng.nextFloat(), 0.01 + rng.nextFloat())).sort((a, b) => b.f1 - a.f1);
  const concepts = path.join(dir, 'concepts.json');
  await writeConceptReport(
    concepts,
    reportOf(
      names,
      Array.from({ length: S }, () => matches(rng.nextInt(4))),
    ),
  );
  await writeRun(dir, { shards: path.join(dir, 'acts'), sae: path.join(dir, 'sae'), visuals, concepts });
}

test('with 24,576 latents a feature page takes under 50 ms of server time', async () => {
  const S = 24_576;
  const asked = Array.from({ length: 8 }, (_, i) => Math.floor(((i + 0.5) * S) / 8));
  const dir = path.join(tmp, 'big');
  await bigIndex(dir, S, asked);
  const big = await createServer({ runs: await openRuns([dir]) });
  try {
    const timing = async (url: string) => {
      const res = await big.inject({ method: 'GET', url });
      assert.equal(res.statusCode, 200, res.body);
      return Number(/dur=([\d.]+)/.exec(String(res.headers['server-timing']))![1]);
    };
    await timing(`/api/runs/big/features/${asked[0]}`); // the first request also warms up the code
    // Each latent is in a different chunk, so every request reads and parses its chunk from disk.
    const cold = [];
    for (const j of asked.slice(1)) cold.push(await timing(`/api/runs/big/features/${j}`));
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    assert.ok(median(cold) < 50, `feature pages took ${cold.map((t) => t.toFixed(1)).join(', ')} ms`);
    const warm = await timing(`/api/runs/big/features/${asked[3]}`);
    assert.ok(warm < 50, `a cached feature page took ${warm} ms`);
    // A list sorts all latents once per sort order (kept for later requests), then pages through that order.
    const lists = [];
    for (const sort of ['frequency', 'max', 'name', 'latent', 'concept_f1']) {
      await timing(`/api/runs/big/features?sort=${sort}&order=desc`);
      lists.push(await timing(`/api/runs/big/features?sort=${sort}&order=desc&offset=200&limit=100&min_frequency=1e-9`));
      lists.push(await timing(`/api/runs/big/features?sort=${sort}&order=desc&limit=100&concept=concept:3&min_concept_f1=0.2`));
    }
    assert.ok(median(lists) < 50, `feature lists took ${lists.join(', ')} ms`);
  } finally {
    await big.close();
  }
});
