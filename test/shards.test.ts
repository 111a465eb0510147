import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { DETAILS_FILE, type NewShardMetadata, saevMetadata, ShardDataset, type ShardMetadata, ShardWriter, readMetadata } from '../src/shards/format.js';
import { OrderedTokenLoader, ShuffledTokenLoader, meanAndScale } from '../src/shards/loader.js';
import { Rng } from '../src/util/random.js';

// Geometry used throughout: 2 layers, 4 patches + CLS = 5 tokens, d = 8, so one example is 2*5*8 floats = 320 bytes.
const L = 2;
const P = 4;
const T = P + 1;
const D = 8;
const EXAMPLE_BYTES = L * T * D * 4;

function meta(over: Partial<NewShardMetadata> = {}): NewShardMetadata {
  return {
    family: 'dinov2',
    ckpt: 'test-ckpt',
    layers: [3, 7],
    content_tokens_per_example: P,
    cls_token: true,
    d_model: D,
    max_tokens_per_shard: 35, // 35 // (5 tokens * 2 layers) = 3 examples per shard
    data: { note: 'test' },
    dataset: '/data/test',
    pixel_agg: null,
    ...over,
  };
}

/** Value of (example, layer position, token, dim): distinct, exact in float32, and decodable. */
const code = (ex: number, l: number, t: number, k: number) => ((ex * L + l) * T + t) * D + k;

function encoded(ex0: number, n: number): Float32Array {
  const a = new Float32Array(n * L * T * D);
  let i = 0;
  for (let ex = ex0; ex < ex0 + n; ex++) for (let l = 0; l < L; l++) for (let t = 0; t < T; t++) for (let k = 0; k < D; k++) a[i++] = code(ex, l, t, k);
  return a;
}

/** (example, token) of a loader row, after checking the row is one intact token of layer position `l`. */
function decodeRow(acts_BD: Float32Array, r: number, l: number): { ex: number; t: number } {
  const v0 = acts_BD[r * D];
  for (let k = 0; k < D; k++) assert.equal(acts_BD[r * D + k], v0 + k);
  const id = v0 / D;
  const t = id % T;
  const ex = Math.floor(id / T / L);
  assert.equal(Math.floor(id / T) % L, l);
  return { ex, t };
}

const tmpDirs: string[] = [];
after(() => Promise.all(tmpDirs.map((d) => fs.rm(d, { recursive: true, force: true }))));

async function tmpDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vitsae-shards-'));
  tmpDirs.push(dir);
  return dir;
}

async function writeDir(dir: string, chunks: number[], over: Partial<NewShardMetadata> = {}): Promise<void> {
  const w = await ShardWriter.create(dir, meta(over));
  let ex = 0;
  for (const n of chunks) {
    await w.append(encoded(ex, n));
    ex += n;
  }
  await w.close();
}

const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

test('writer round trip: acts files byte for byte, shards.json and metadata.json', async () => {
  const dir = await tmpDir();
  await writeDir(dir, [1, 4, 2, 3]); // 10 examples, 3 per shard -> 3, 3, 3, 1
  assert.deepEqual(JSON.parse(await fs.readFile(path.join(dir, 'shards.json'), 'utf8')), [
    { name: 'acts000000.bin', n_examples: 3 },
    { name: 'acts000001.bin', n_examples: 3 },
    { name: 'acts000002.bin', n_examples: 3 },
    { name: 'acts000003.bin', n_examples: 1 },
  ]);
  const md = JSON.parse(await fs.readFile(path.join(dir, 'metadata.json'), 'utf8'));
  const order = ['family', 'ckpt', 'layers', 'content_tokens_per_example', 'cls_token', 'd_model', 'n_examples', 'max_tokens_per_shard', 'data', 'dataset', 'pixel_agg', 'dtype', 'protocol'];
  assert.deepEqual(Object.keys(md), order);
  // On disk, saev's values; vitsae's own (here `data` and `pixel_agg`) in vitsae.json, and back in readMetadata.
  const full = { ...meta(), n_examples: 10, dtype: 'float32', protocol: '2.1' } as ShardMetadata;
  assert.deepEqual(md, saevMetadata(full));
  assert.deepEqual(JSON.parse(await fs.readFile(path.join(dir, DETAILS_FILE), 'utf8')), { format: 'vitsae-shard-details', version: 1, family: 'dinov2', data: full.data, pixel_agg: full.pixel_agg });
  assert.deepEqual(await readMetadata(dir), full);
  assert.deepEqual((await fs.readdir(dir)).sort(), ['acts000000.bin', 'acts000001.bin', 'acts000002.bin', 'acts000003.bin', 'metadata.json', 'shards.json', DETAILS_FILE]);

  const all = bytesOf(encoded(0, 10));
  for (const [i, n] of [3, 3, 3, 1].entries()) {
    const file = await fs.readFile(path.join(dir, `acts00000${i}.bin`));
    assert.equal(file.byteLength, 3 * EXAMPLE_BYTES, 'every shard has the full saev size');
    assert.ok(file.subarray(0, n * EXAMPLE_BYTES).equals(all.subarray(i * 3 * EXAMPLE_BYTES, (i * 3 + n) * EXAMPLE_BYTES)));
    assert.ok(
      file.subarray(n * EXAMPLE_BYTES).every((b) => b === 0),
      'padding is zeros',
    );
  }

  const ds = await ShardDataset.open(dir);
  assert.equal(ds.nExamples, 10);
  assert.equal(ds.nLayers, 2);
  assert.equal(ds.tokensPerExample, 5);
  assert.equal(ds.d, 8);
  assert.equal(ds.hasLabels, false);
  assert.equal(await ds.readLabels(), null);
  assert.deepEqual(await ds.readExamples(2, 6), encoded(2, 6)); // spans three files
  const tokens = await ds.readTokens(1, 1, 8, 1, 4); // layer position 1, patches, examples 1..8
  for (let e = 0; e < 8; e++) for (let t = 0; t < 4; t++) for (let k = 0; k < D; k++) assert.equal(tokens[(e * 4 + t) * D + k], code(1 + e, 1, 1 + t, k));
  const cls = await ds.readTokens(0, 0, 10, 0, 1); // one small block per example: per-example reads
  for (let e = 0; e < 10; e++) assert.equal(cls[e * D + 3], code(e, 0, 0, 3));
  await assert.rejects(ds.readExamples(8, 3), /examples \[8, 11\) are outside \[0, 10\)/);
  await ds.close();
});

test('layerIndex accepts recorded layers and python-style negative indices', async () => {
  const dir = await tmpDir();
  await writeDir(dir, [2]);
  const ds = await ShardDataset.open(dir);
  assert.equal(ds.layerIndex(3), 0);
  assert.equal(ds.layerIndex(7), 1);
  assert.equal(ds.layerIndex(-1), 1);
  assert.equal(ds.layerIndex(-2), 0);
  assert.throws(() => ds.layerIndex(5), /layer 5 was not recorded .*\[3, 7\]/);
  assert.throws(() => ds.layerIndex(-3), /layer -3 was not recorded/);
  await ds.close();
});

test('open detects truncated shards, bad metadata and bad shards.json with the file named', async () => {
  const dir = await tmpDir();
  await writeDir(dir, [10]);
  await fs.truncate(path.join(dir, 'acts000001.bin'), 100);
  await assert.rejects(ShardDataset.open(dir), /\/acts000001\.bin has 100 bytes, expected 960: the shard is truncated; re-record it or remove it from shards.json/);
  await fs.truncate(path.join(dir, 'acts000001.bin'), 960);

  // A last shard of exactly its examples (no saev padding) is accepted; one byte short is not.
  await fs.truncate(path.join(dir, 'acts000003.bin'), EXAMPLE_BYTES);
  await (await ShardDataset.open(dir)).close();
  await fs.truncate(path.join(dir, 'acts000003.bin'), EXAMPLE_BYTES - 1);
  await assert.rejects(ShardDataset.open(dir), /\/acts000003\.bin has 319 bytes, expected 320 \(or 960 padded\): the shard is truncated/);
  await fs.truncate(path.join(dir, 'acts000003.bin'), 960);

  await fs.rm(path.join(dir, 'acts000002.bin'));
  await assert.rejects(ShardDataset.open(dir), /\/acts000002\.bin is listed in shards.json but missing/);
  await fs.writeFile(path.join(dir, 'acts000002.bin'), Buffer.alloc(960));

  const mdFile = path.join(dir, 'metadata.json');
  const good = await fs.readFile(mdFile, 'utf8');
  await fs.writeFile(mdFile, good.replace('"d_model": 8', '"d_model": "8"'));
  await assert.rejects(readMetadata(dir), /metadata\.json: field "d_model" must be a positive integer, got "8"; fix the file/);
  await fs.writeFile(mdFile, good.replace('"protocol": "2.1"', '"protocol": "1.1"'));
  await assert.rejects(ShardDataset.open(dir), /field "protocol" must be "2\.1"/);
  await fs.writeFile(mdFile, good.replace('"n_examples": 10', '"n_examples": 11'));
  await assert.rejects(ShardDataset.open(dir), /shards\.json: shards hold 10 examples in total but metadata\.json says n_examples=11/);
  await fs.writeFile(mdFile, good);

  const sjFile = path.join(dir, 'shards.json');
  const sj = JSON.parse(await fs.readFile(sjFile, 'utf8'));
  sj[1].n_examples = 2;
  sj[3].n_examples = 2;
  await fs.writeFile(sjFile, JSON.stringify(sj));
  await assert.rejects(ShardDataset.open(dir), /acts000001\.bin holds 2 examples but every shard except the last must hold 3/);

  await fs.rm(mdFile);
  await assert.rejects(ShardDataset.open(dir), /metadata\.json does not exist: .* is not a complete shard directory/);
});

test('a non-finite value on disk is refused by every read, naming the file, example, layer, token and dim', async () => {
  const dir = await tmpDir();
  await writeDir(dir, [5]);
  // Example 4 is the second of acts000001.bin: layer position 1 (= layer 7), token 3 (patch 2), dim 6.
  const file = path.join(dir, 'acts000001.bin');
  const bytes = await fs.readFile(file);
  bytes.writeFloatLE(NaN, 4 * (1 * L * T * D + 1 * T * D + 3 * D + 6));
  await fs.writeFile(file, bytes);
  const ds = await ShardDataset.open(dir);
  try {
    const where = `${file}: example 4 has a non-finite value (NaN) at layer 7, token 3 (patch 2), dim 6`;
    await assert.rejects(ds.readExamples(3, 2), (e: Error) => e.message.startsWith(where));
    await assert.rejects(ds.readTokens(1, 4, 1, 1, 4), (e: Error) => e.message.startsWith(where));
    // Reads that do not touch the value still work.
    assert.deepEqual(await ds.readExamples(0, 4), encoded(0, 4));
    assert.deepEqual(await ds.readTokens(0, 4, 1, 0, T), encoded(4, 1).subarray(0, T * D));
    // A recording's examples.jsonl names the image too.
    await fs.writeFile(path.join(dir, 'examples.jsonl'), [0, 1, 2, 3, 4].map((i) => JSON.stringify({ file: `img${i}.png` })).join('\n') + '\n');
    await assert.rejects(ds.readExamples(4, 1), (e: Error) => e.message.startsWith(`${file}: example 4 (image img4.png) has a non-finite value (NaN)`));
  } finally {
    await ds.close();
  }
});

test('append rejects non-finite values naming the example, and partial examples; writes nothing', async () => {
  const dir = await tmpDir();
  const w = await ShardWriter.create(dir, meta());
  await w.append(encoded(0, 2));
  const bad = encoded(2, 3);
  bad[1 * L * T * D + 1 * T * D + 2 * D + 5] = NaN; // row 1, layer position 1 (= layer 7), token 2, dim 5
  await assert.rejects(w.append(bad), /append: example 3 \(row 1 of this call\) has NaN at layer 7, token 2, dim 5; activations must be finite/);
  bad[1 * L * T * D + 1 * T * D + 2 * D + 5] = 0;
  bad[2 * L * T * D] = -Infinity;
  await assert.rejects(w.append(bad), /example 4 \(row 2 of this call\) has -Infinity/);
  await assert.rejects(w.append(new Float32Array(L * T * D + 1)), /got 81 floats, not a multiple of .* = 80/);
  assert.equal(w.nExamples, 2);
  await w.append(encoded(2, 1));
  const md = await w.close();
  assert.equal(md.n_examples, 3);
  const ds = await ShardDataset.open(dir);
  assert.deepEqual(await ds.readExamples(0, 3), encoded(0, 3));
  await ds.close();
  await assert.rejects(w.append(encoded(0, 1)), /is closed/);
});

test('create validates metadata and refuses directories that already hold shards', async () => {
  const dir = await tmpDir();
  await assert.rejects(ShardWriter.create(dir, meta({ max_tokens_per_shard: 9 })), /max_tokens_per_shard=9 cannot hold one example of 10 tokens .*raise it to at least 10/);
  await assert.rejects(ShardWriter.create(dir, meta({ layers: [] })), /field "layers" must be a non-empty list/);
  await writeDir(dir, [1]);
  await assert.rejects(ShardWriter.create(dir, meta()), /already holds a shard directory/);
  await assert.rejects(ShardWriter.resume(dir), /already complete/);
});

test('labels: written in order, validated at close, read back; bad labels.bin size detected', async () => {
  const dir = await tmpDir();
  const labels = Uint8Array.from({ length: 7 * P }, (_, i) => (i * 37) % 251);
  const w = await ShardWriter.create(dir, meta());
  await w.append(encoded(0, 7));
  await w.appendLabels(labels.subarray(0, 3 * P));
  await assert.rejects(w.setLabels(5, labels.subarray(5 * P)), /would leave a gap; .* next unlabeled example is 3/);
  await w.setLabels(2, labels.subarray(2 * P, 6 * P)); // overlapping rewrite is fine
  await assert.rejects(w.close(), /labels cover 6 examples but 7 examples were appended/);
  await w.appendLabels(labels.subarray(6 * P));
  await w.close();
  const ds = await ShardDataset.open(dir);
  assert.deepEqual(await ds.readLabels(), labels);
  await ds.close();
  await fs.truncate(path.join(dir, 'labels.bin'), 7 * P - 1);
  await assert.rejects(ShardDataset.open(dir), /\/labels\.bin has 27 bytes, expected 28/);
});

const exec = promisify(execFile);
const formatJs = new URL('../src/shards/format.js', import.meta.url).href;

test('resume after a crash keeps complete shards, discards the partial one, and finishes identically', async () => {
  const dir = await tmpDir();
  const labels = Uint8Array.from({ length: 10 * P }, (_, i) => i % 256);
  // A real crash: a child process appends labels and 7 examples (2 full shards + 1 partial) and exits without close().
  const child = `
    import { ShardWriter } from ${JSON.stringify(formatJs)};
    const m = ${JSON.stringify(meta())};
    const w = await ShardWriter.create(${JSON.stringify(dir)}, m);
    await w.appendLabels(new Uint8Array(${JSON.stringify(Array.from(labels.subarray(0, 7 * P)))}));
    await w.append(new Float32Array(${JSON.stringify(Array.from(encoded(0, 7)))}));
    process.exit(3);`;
  await assert.rejects(exec(process.execPath, ['--input-type=module', '-e', child]), (e: { code?: number }) => e.code === 3);
  assert.deepEqual((await fs.readdir(dir)).sort(), ['acts000000.bin', 'acts000001.bin', 'acts000002.bin.tmp', 'labels.bin.tmp', 'progress.json']);
  await assert.rejects(ShardDataset.open(dir), /unfinished recording \(progress\.json exists\)/);
  await assert.rejects(ShardWriter.create(dir, meta()), /unfinished recording/);

  const w = await ShardWriter.resume(dir);
  assert.equal(w.nExamples, 6, 'two complete shards of 3 are kept');
  assert.equal(w.nLabeled, 6);
  assert.ok(!(await fs.readdir(dir)).includes('acts000002.bin.tmp'), 'the partial shard is discarded');
  await w.append(encoded(6, 4));
  await w.appendLabels(labels.subarray(6 * P));
  await w.close();

  const clean = await tmpDir();
  const wc = await ShardWriter.create(clean, meta());
  await wc.append(encoded(0, 10));
  await wc.appendLabels(labels);
  await wc.close();
  const names = (await fs.readdir(clean)).sort();
  assert.deepEqual((await fs.readdir(dir)).sort(), names);
  for (const name of names) assert.ok((await fs.readFile(path.join(dir, name))).equals(await fs.readFile(path.join(clean, name))), `${name} matches a clean write`);
});

// Loader fixture: 201 examples (the last chunk is short), selections over layer 7.
const N_EX = 201;
let loaderDir: Promise<string> | null = null;
async function loaderDataset(): Promise<ShardDataset> {
  loaderDir ??= (async () => {
    const dir = await tmpDir();
    await writeDir(dir, [N_EX], { max_tokens_per_shard: 200 }); // 20 examples per shard
    return dir;
  })();
  return ShardDataset.open(await loaderDir);
}

test('ordered loader covers every selected token once, in file order, with example and patch indices', async () => {
  const ds = await loaderDataset();
  for (const [tokens, first, per] of [
    ['patches', 1, P],
    ['cls', 0, 1],
    ['all', 0, T],
  ] as const) {
    const loader = new OrderedTokenLoader(ds, { layer: 7, tokens }, 48);
    assert.equal(loader.nTokens, N_EX * per);
    let row = 0;
    let nBatches = 0;
    for await (const b of loader.batches()) {
      assert.equal(b.index, nBatches++);
      const rows = b.acts_BD.length / D;
      assert.equal(rows, Math.min(48, loader.nTokens - row));
      for (let r = 0; r < rows; r++, row++) {
        const { ex, t } = decodeRow(b.acts_BD, r, 1);
        assert.equal(ex, Math.floor(row / per));
        assert.equal(t, first + (row % per));
        assert.equal(b.example_B[r], ex);
        assert.equal(b.patch_B[r], t - 1, 'patch index, -1 for CLS');
      }
    }
    assert.equal(row, loader.nTokens);
    assert.equal(nBatches, loader.nBatches);
  }
  const late = new OrderedTokenLoader(ds, { layer: -1, tokens: 'patches' }, 48);
  const fromStart = [];
  for await (const b of late.batches()) fromStart.push(b);
  const resumed = [];
  for await (const b of late.batches(10)) resumed.push(b);
  assert.deepEqual(resumed, fromStart.slice(10));
  assert.throws(() => new OrderedTokenLoader(ds, { layer: 4, tokens: 'all' }, 8), /layer 4 was not recorded/);
  await ds.close();
});

const SHUFFLE = { seed: 11, batchSize: 48, windowTokens: 100, chunkTokens: 16 };

async function take(loader: ShuffledTokenLoader, n: number, start = 0) {
  const out = [];
  for await (const b of loader.batches(start)) {
    out.push(b);
    if (out.length === n) break;
  }
  return out;
}

test('shuffled loader: deterministic for a seed, differs across seeds, resumes exactly from any batch', async () => {
  const ds = await loaderDataset();
  const sel = { layer: 7, tokens: 'patches' } as const;
  const a = await take(new ShuffledTokenLoader(ds, sel, SHUFFLE), 40); // 40 * 48 rows > 2 epochs of 804 tokens
  const b = await take(new ShuffledTokenLoader(ds, sel, SHUFFLE), 40);
  assert.deepEqual(
    a.map((x) => x.index),
    Array.from({ length: 40 }, (_, i) => i),
  );
  for (let i = 0; i < 40; i++) assert.ok(bytesOf(a[i].acts_BD).equals(bytesOf(b[i].acts_BD)), `batch ${i} is byte-identical`);
  const other = await take(new ShuffledTokenLoader(ds, sel, { ...SHUFFLE, seed: 12 }), 1);
  assert.ok(!bytesOf(other[0].acts_BD).equals(bytesOf(a[0].acts_BD)));
  for (const t of [1, 13, 16, 33]) {
    const r = await take(new ShuffledTokenLoader(ds, sel, SHUFFLE), 40 - t, t);
    for (let i = 0; i < r.length; i++) {
      assert.equal(r[i].index, t + i);
      assert.equal(r[i].epoch, a[t + i].epoch);
      assert.ok(bytesOf(r[i].acts_BD).equals(bytesOf(a[t + i].acts_BD)), `resume at ${t}: batch ${t + i} matches`);
    }
  }
  await ds.close();
});

test('shuffled loader: every token exactly once per epoch, a new order each epoch, windows bounded', async () => {
  const ds = await loaderDataset();
  const loader = new ShuffledTokenLoader(ds, { layer: 3, tokens: 'all' }, SHUFFLE);
  const N = loader.nTokens;
  assert.equal(N, N_EX * T);
  const batches = await take(loader, Math.ceil((3 * N) / SHUFFLE.batchSize));
  const stream: { ex: number; t: number }[] = [];
  for (const b of batches) {
    assert.equal(b.acts_BD.length, SHUFFLE.batchSize * D, 'every batch is full, even across epochs');
    assert.equal(b.epoch, Math.floor((b.index * SHUFFLE.batchSize) / N));
    for (let r = 0; r < SHUFFLE.batchSize; r++) stream.push(decodeRow(b.acts_BD, r, 0));
  }
  const ids = (e: number) => stream.slice(e * N, (e + 1) * N).map(({ ex, t }) => ex * T + t);
  for (let e = 0; e < 3; e++) {
    assert.deepEqual(
      [...ids(e)].sort((x, y) => x - y),
      Array.from({ length: N }, (_, i) => i),
      `epoch ${e} is a permutation`,
    );
  }
  assert.notDeepEqual(ids(0), ids(1));

  // Windows: at most windowTokens tokens, each exactly the tokens of at most chunksPerWindow whole chunks.
  const perChunk = loader.examplesPerChunk;
  assert.equal(perChunk, 3); // floor(16 / 5)
  assert.equal(loader.chunksPerWindow, 6); // floor(100 / 15)
  for (let e = 0; e < 3; e++) {
    const starts = loader.windowStarts(e);
    assert.equal(starts[starts.length - 1], N);
    for (let w = 0; w + 1 < starts.length; w++) {
      assert.ok(starts[w + 1] - starts[w] <= SHUFFLE.windowTokens);
      const rows = stream.slice(e * N + starts[w], e * N + starts[w + 1]);
      const chunks: Set<number> = new Set(rows.map((r): number => Math.floor(r.ex / perChunk)));
      assert.ok(chunks.size <= loader.chunksPerWindow);
      const expected: number = [...chunks].reduce((a: number, c: number) => a + Math.min(perChunk, N_EX - c * perChunk) * T, 0);
      assert.equal(rows.length, expected, `window ${w} of epoch ${e} holds whole chunks`);
    }
  }
  assert.throws(() => new ShuffledTokenLoader(ds, { layer: 3, tokens: 'all' }, { ...SHUFFLE, windowTokens: 4 }), /windowTokens=4 is smaller than one example's 5/);
  await ds.close();
});

test('shuffled loader: an end batch stops the stream and its read-ahead; passes from the start reuse the last window', async () => {
  const ds = await loaderDataset();
  const sel = { layer: 7, tokens: 'patches' } as const;
  const all = await take(new ShuffledTokenLoader(ds, sel, SHUFFLE), 30);
  const reads = { n: 0 };
  const readTokens = ds.readTokens.bind(ds);
  ds.readTokens = (...a: Parameters<typeof ds.readTokens>) => {
    reads.n++;
    return readTokens(...a);
  };
  const loader = new ShuffledTokenLoader(ds, sel, SHUFFLE);
  const chunksUpTo = (tokens: number) => {
    // Reads (one per chunk) of the windows holding stream tokens [0, tokens): epoch 0 only here.
    const starts = loader.windowStarts(0);
    let n = 0;
    for (let w = 0; w + 1 < starts.length && starts[w] < tokens; w++) n += Math.min(loader.chunksPerWindow, loader.nChunks - w * loader.chunksPerWindow);
    return n;
  };
  for (const [start, end] of [
    [0, 3],
    [2, 9],
  ]) {
    reads.n = 0;
    const got = [];
    for await (const b of loader.batches(start, end)) got.push(b);
    assert.deepEqual(
      got.map((b) => b.index),
      Array.from({ length: end - start }, (_, i) => start + i),
    );
    for (const b of got) assert.ok(bytesOf(b.acts_BD).equals(bytesOf(all[b.index].acts_BD)), `batch ${b.index} is the unbounded stream's`);
    assert.ok(reads.n <= chunksUpTo(end * SHUFFLE.batchSize), `${reads.n} chunk reads for batches ${start}..${end}: nothing read ahead past the end`);
  }
  reads.n = 0;
  for await (const _ of loader.batches(0, 1)) assert.ok(_);
  for await (const _ of loader.batches(0, 1)) assert.ok(_);
  assert.equal(reads.n, chunksUpTo(1), 'the first window is read once for two passes over batch 0');
  await ds.close();
});

test('meanAndScale matches a float64 brute force; shuffled epoch gives the full-data mean', async () => {
  const ds = await loaderDataset();
  const sel = { layer: 3, tokens: 'patches' } as const;
  const n = 500;
  const ordered = new OrderedTokenLoader(ds, sel, 64);
  const rows: Float64Array[] = [];
  for await (const b of ordered.batches()) for (let r = 0; r < b.acts_BD.length / D; r++) rows.push(Float64Array.from(b.acts_BD.subarray(r * D, (r + 1) * D)));
  const bruteMean = (m: number) => Array.from({ length: D }, (_, k) => rows.slice(0, m).reduce((a, x) => a + x[k], 0) / m);
  const mean500 = bruteMean(n);
  const norm500 = rows.slice(0, n).reduce((a, x) => a + Math.hypot(...x.map((v, k) => v - mean500[k])), 0) / n;
  const got = await meanAndScale(ordered, n);
  assert.equal(got.nTokens, n);
  for (let k = 0; k < D; k++) assert.ok(Math.abs(got.mean_D[k] - mean500[k]) <= 1e-3 * Math.abs(mean500[k]) + 1e-3);
  assert.ok(Math.abs(got.meanNorm - norm500) < 1e-6 * norm500);
  assert.ok(Math.abs(got.scale - Math.sqrt(D) / norm500) < 1e-9);
  assert.equal((await meanAndScale(ordered, 10 ** 6)).nTokens, ordered.nTokens, 'a finite source caps the sample');

  const full = bruteMean(rows.length);
  const shuffled = await meanAndScale(new ShuffledTokenLoader(ds, sel, SHUFFLE), ordered.nTokens);
  for (let k = 0; k < D; k++) assert.ok(Math.abs(shuffled.mean_D[k] - full[k]) <= 1e-4 * Math.abs(full[k]));
  await ds.close();
});

test('meanAndScale on the shuffled loader samples exactly the rows its first batches hold (across windows, into the next epoch)', async () => {
  const ds = await loaderDataset();
  const sel = { layer: 3, tokens: 'patches' } as const;
  const loader = new ShuffledTokenLoader(ds, sel, SHUFFLE);
  const epoch = loader.nTokens;
  // Windows hold at most 100 tokens: 250 rows end inside the third window, epoch + 70 inside the next epoch.
  for (const n of [250, epoch + 70]) {
    const rows: Float32Array[] = [];
    for await (const b of loader.batches(0, Math.ceil(n / SHUFFLE.batchSize))) for (let r = 0; r < b.acts_BD.length / D; r++) rows.push(b.acts_BD.slice(r * D, (r + 1) * D));
    const sample = rows.slice(0, n);
    const mean = Array.from({ length: D }, (_, k) => sample.reduce((a, x) => a + x[k], 0) / n);
    const norm = sample.reduce((a, x) => a + Math.hypot(...Array.from(x, (v, k) => v - mean[k])), 0) / n;
    const got = await meanAndScale(loader, n);
    assert.equal(got.nTokens, n);
    for (let k = 0; k < D; k++) assert.ok(Math.abs(got.mean_D[k] - mean[k]) <= 1e-6 * (1 + Math.abs(mean[k])), `n ${n} dim ${k}: ${got.mean_D[k]} vs ${mean[k]}`);
    assert.ok(Math.abs(got.meanNorm - norm) <= 1e-9 * norm, `n ${n}: mean norm ${got.meanNorm} vs ${norm}`);
  }
  await ds.close();
});

test('Rng: reproducible streams, independent keys, uniform-looking ints and normals', () => {
  const a = new Rng(42, 1);
  const b = new Rng(42, 1);
  const seqA = Array.from({ length: 5 }, () => a.nextU32());
  assert.deepEqual(
    seqA,
    Array.from({ length: 5 }, () => b.nextU32()),
  );
  assert.notDeepEqual(
    seqA,
    Array.from({ length: 5 }, () => new Rng(42, 2).nextU32()),
  );
  assert.notEqual(new Rng(1).nextU32(), new Rng(2 ** 32 + 1).nextU32(), 'high bits of the seed matter');
  const r = new Rng(7);
  const counts = new Array(6).fill(0);
  let sum = 0;
  let sq = 0;
  for (let i = 0; i < 60000; i++) {
    counts[r.nextInt(6)]++;
    const z = r.normal();
    sum += z;
    sq += z * z;
  }
  for (const c of counts) assert.ok(Math.abs(c - 10000) < 400);
  assert.ok(Math.abs(sum / 60000) < 0.02);
  assert.ok(Math.abs(sq / 60000 - 1) < 0.03);
  const p = new Rng(3).permutation(1000);
  assert.deepEqual(
    [...p].sort((x, y) => x - y),
    Array.from({ length: 1000 }, (_, i) => i),
  );
});
