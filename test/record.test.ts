import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, describe, it, before } from 'node:test';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { createSession, openBackbone } from '../src/backbone/backbone.js';
import { frontModel } from '../src/backbone/graph.js';
import { DEFAULT_MAX_TOKENS_PER_SHARD, record, type RecordingData, type RecordOptions } from '../src/backbone/record.js';
import { recordCommand, shardsMergeCommand } from '../src/cli/commands/record.js';
import { openDataset } from '../src/data/images.js';
import { loadPixels, type Preprocess } from '../src/data/preprocess.js';
import { camelKeys } from '../src/util/json-keys.js';
import { ShardDataset } from '../src/shards/format.js';
import { mergeShards } from '../src/backbone/merge.js';
import { idxFile, runForJson } from './fixtures/helpers.js';
import { fixtureDir, fixtureModel } from './fixtures/models.js';

/** A noise image of the given size, deterministic in `seed`. */
function noisePng(seed: number, w: number, h: number): Promise<Buffer> {
  let s = seed * 2654435761 + 1;
  const px = new Uint8Array(w * h * 3).map(() => ((s = (s * 1103515245 + 12345) >>> 0) >>> 24) & 255);
  return sharp(px, { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toBuffer();
}

async function writeImages(dir: string, files: string[]): Promise<void> {
  for (const [i, f] of files.entries()) {
    mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    writeFileSync(path.join(dir, f), await noisePng(i + 1, 24 + 4 * (i % 5), 40 - 3 * (i % 4)));
  }
}

const quiet: Partial<RecordOptions> = { progress: false, log: () => {} };

async function readAll(dir: string): Promise<{ ds: ShardDataset; acts: Float32Array; examples: string[] }> {
  const ds = await ShardDataset.open(dir);
  const acts = await ds.readExamples(0, ds.nExamples);
  await ds.close();
  return { ds, acts, examples: readFileSync(path.join(dir, 'examples.jsonl'), 'utf8').split('\n').filter(Boolean) };
}

/**
 * What the shards should hold, computed without the recorder: decode each file the way metadata says, run the front
 * in the same batches, and pick CLS + patch tokens (or transpose a feature map) by index arithmetic.
 */
async function expectedActs(dir: string, batch: number): Promise<Float32Array> {
  const ds = await ShardDataset.open(dir);
  const md = ds.metadata;
  await ds.close();
  const data = md.data as RecordingData;
  const pp = camelKeys<Preprocess>(data.preprocess);
  const bb = await openBackbone(data.model);
  const front = await createSession(frontModel(bb.model, data.tensors), bb);
  const dataset = await openDataset(md.dataset);
  const keys = readFileSync(path.join(dir, 'examples.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l).file as string);
  const index = new Map(Array.from({ length: dataset.size }, (_, i) => [dataset.key(i), i]));
  const [H, W] = pp.size;
  const img = 3 * H * W;
  const L = data.tensors.length;
  const D = md.d_model;
  const P = md.content_tokens_per_example;
  const T = P + (md.cls_token ? 1 : 0);
  const out = new Float32Array(keys.length * L * T * D);
  for (let b0 = 0; b0 < keys.length; b0 += batch) {
    const n = Math.min(batch, keys.length - b0);
    const pixels = new Float32Array(n * img);
    for (let j = 0; j < n; j++) await loadPixels(await dataset.image(index.get(keys[b0 + j])!), pp, pixels.subarray(j * img, (j + 1) * img));
    const res = await front.run({ [bb.input.name]: new ort.Tensor('float32', pixels, [n, 3, H, W]) });
    for (let j = 0; j < n; j++)
      for (let l = 0; l < L; l++) {
        const src = res[data.tensors[l]].data as Float32Array;
        for (let t = 0; t < T; t++)
          for (let d = 0; d < D; d++) {
            const at = (((b0 + j) * L + l) * T + t) * D + d;
            if (data.layout === 'nchw') out[at] = src[(j * D + d) * P + t];
            else {
              const token = md.cls_token ? (t === 0 ? 0 : data.prefix_tokens + t - 1) : data.prefix_tokens + t;
              out[at] = src[(j * (data.prefix_tokens + P) + token) * D + d];
            }
          }
      }
  }
  return out;
}

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('record', () => {
  let root: string;
  let classes: string;
  let single: string;
  const files = Array.from({ length: 10 }, (_, i) => `${['cat', 'dog'][i % 2]}/img${i}.png`);
  // vit_hf stores CLS + 16 patches = 17 tokens; two layers, 4 examples per shard.
  const shard4 = 17 * 2 * 4;

  after(() => rmSync(root, { recursive: true, force: true }));
  before(async () => {
    root = mkdtempSync(path.join(os.tmpdir(), 'vitsae-record-'));
    classes = path.join(root, 'classes');
    await writeImages(classes, files);
    single = path.join(root, 'single');
    await record({ ...quiet, model: fixtureModel('vit_hf'), layers: ['-2', '-1'], data: classes, out: single, batch: 4, maxTokensPerShard: shard4 });
  });

  it('writes two layers of a ViT, CLS first, byte for byte as a direct onnxruntime run', async () => {
    const { ds, acts, examples } = await readAll(single);
    const md = ds.metadata;
    assert.deepEqual(
      [md.family, md.ckpt, md.layers, md.content_tokens_per_example, md.cls_token, md.d_model, md.n_examples, md.pixel_agg, md.dataset, md.protocol],
      ['vit', 'vit_hf.onnx', [1, 2], 16, true, 32, 10, null, classes, '2.1'],
    );
    const data = md.data as RecordingData;
    assert.deepEqual(
      [data.tensors, data.prefix_tokens, data.classes, data.slice],
      [['/vision_model/encoder/layers.1/Add_1_output_0', 'last_hidden_state'], 3, ['cat', 'dog'], { start: 0, end: 10, worker: 0, workers: 1 }],
    );
    assert.deepEqual(
      ds.shards.map((s) => s.n_examples),
      [4, 4, 2],
    );
    // The dataset order is class by class.
    const sorted = [...files].sort();
    assert.deepEqual(
      examples.map((l) => JSON.parse(l)),
      sorted.map((f) => ({ file: f, label: f.startsWith('cat') ? 0 : 1 })),
    );
    assert.equal(Buffer.compare(bytes(acts), bytes(await expectedActs(single, 4))), 0);
    // The last layer is the model's own output last_hidden_state: the CLS token matches it directly.
    const hf = await openBackbone(fixtureModel('vit_hf'));
    const full = await createSession(hf.model, hf);
    const x = new Float32Array(3 * 32 * 32);
    // On disk the preprocessing has snake_case keys, as every JSON vitsae writes.
    assert.deepEqual(
      Object.keys(data.preprocess).filter((k) => /[A-Z]/.test(k)),
      [],
    );
    await loadPixels(readFileSync(path.join(classes, sorted[0])), camelKeys<Preprocess>(data.preprocess), x);
    const y = (await full.run({ pixel_values: new ort.Tensor('float32', x, [1, 3, 32, 32]) })).last_hidden_state.data as Float32Array;
    assert.deepEqual([...acts.subarray(17 * 32, 17 * 32 + 32)], [...y.subarray(0, 32)]);
  });

  it('runs a model exported with a fixed batch in batches of that size, padding the last', async () => {
    const out = path.join(root, 'batch2');
    const data = path.join(root, 'five');
    await writeImages(data, ['a.png', 'b.png', 'c.png', 'd.png', 'e.png']);
    const r = await record({ ...quiet, model: fixtureModel('vit_hf_batch2'), layers: ['-1'], data, out, batch: 4 });
    assert.equal(r.metadata.n_examples, 5);
    const dynamic = path.join(root, 'batch-dynamic');
    await record({ ...quiet, model: fixtureModel('vit_hf'), layers: ['-1'], data, out: dynamic, batch: 2 });
    const a = (await readAll(out)).acts;
    const b = (await readAll(dynamic)).acts;
    assert.equal(a.length, b.length);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    assert.ok(worst < 1e-5, `max difference ${worst}`);
  });

  it('turns a CNN feature map into H*W tokens of C, with no CLS', async () => {
    const out = path.join(root, 'cnn');
    const r = await record({ ...quiet, model: fixtureModel('cnn'), layers: ['/layer2/Relu_1_output_0'], data: classes, out, batch: 3 });
    assert.deepEqual([r.metadata.layers, r.metadata.content_tokens_per_example, r.metadata.cls_token, r.metadata.d_model], [[1], 256, false, 32]);
    const { acts } = await readAll(out);
    assert.equal(Buffer.compare(bytes(acts), bytes(await expectedActs(out, 3))), 0);
  });

  it('stops at a bad file by default, naming it, and --on-error skip logs it and goes on', async () => {
    const flat = path.join(root, 'with-bad');
    await writeImages(flat, ['a.png', 'c.png', 'e.png', 'f.png']);
    for (const f of ['empty.png', 'text.jpg', 'truncated.jpg']) copyFileSync(path.join(fixtureDir(), 'bad', f), path.join(flat, f));
    const stopped = path.join(root, 'stopped');
    await assert.rejects(record({ ...quiet, model: fixtureModel('vit_tv'), layers: ['0'], data: flat, out: stopped, batch: 2 }), {
      message: /^empty\.png: empty file \(in .*; use --on-error skip/,
    });
    assert.ok(!existsSync(path.join(stopped, 'metadata.json')), 'an interrupted directory must not look complete');
    const skipped = path.join(root, 'skipped');
    const r = await record({ ...quiet, model: fixtureModel('vit_tv'), layers: ['0'], data: flat, out: skipped, batch: 2, onError: 'skip' });
    assert.deepEqual([r.recorded, r.skipped, r.metadata.n_examples], [4, 3, 4]);
    const errors = readFileSync(path.join(skipped, 'errors.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      errors.map((e) => [Object.keys(e), e.file]),
      [
        [['file', 'error'], 'empty.png'],
        [['file', 'error'], 'text.jpg'],
        [['file', 'error'], 'truncated.jpg'],
      ],
    );
    assert.match(errors[2].error, /^not a readable image \(.*premature end of JPEG/);
    const { acts, examples } = await readAll(skipped);
    assert.deepEqual(
      examples.map((l) => JSON.parse(l).file),
      ['a.png', 'c.png', 'e.png', 'f.png'],
    );
    assert.equal(Buffer.compare(bytes(acts), bytes(await expectedActs(skipped, 4))), 0);
  });

  it('resumes an interrupted run, keeping complete shards, to the same bytes as an uninterrupted one', async () => {
    const data = path.join(root, 'resume-data');
    const names = Array.from({ length: 11 }, (_, i) => `img${String(i).padStart(2, '0')}.png`);
    await writeImages(data, names);
    const good = readFileSync(path.join(data, names[9]));
    writeFileSync(path.join(data, names[9]), 'broken');
    const opts = { ...quiet, model: fixtureModel('vit_hf'), layers: ['-2', '-1'], data, batch: 4, maxTokensPerShard: shard4 };
    const out = path.join(root, 'resumed');
    await assert.rejects(record({ ...opts, out }), { message: /^img09\.png: not a readable image/ });
    // Two full shards survive the interruption.
    assert.deepEqual(JSON.parse(readFileSync(path.join(out, 'progress.json'), 'utf8')).shards.length, 2);
    await assert.rejects(record({ ...opts, out, layers: ['0'] }), { message: /different settings \(layers, .*data/ });
    writeFileSync(path.join(data, names[9]), good);
    const r = await record({ ...opts, out });
    assert.deepEqual([r.resumed, r.recorded, r.metadata.n_examples], [true, 3, 11]);
    const fresh = path.join(root, 'fresh');
    await record({ ...opts, out: fresh });
    const a = await readAll(out);
    const b = await readAll(fresh);
    assert.deepEqual(a.examples, b.examples);
    assert.equal(Buffer.compare(bytes(a.acts), bytes(b.acts)), 0);
    await assert.rejects(record({ ...opts, out }), { message: /already holds a finished recording/ });
  });

  it('splits across workers on shard boundaries and merges by hard-linking full shards', async () => {
    const parts = [0, 1, 2].map((w) => path.join(root, `part${w}`));
    for (const [w, out] of parts.entries())
      await record({ ...quiet, model: fixtureModel('vit_hf'), layers: ['-2', '-1'], data: classes, out, batch: 4, maxTokensPerShard: shard4, worker: w, workers: 3 });
    const merged = path.join(root, 'merged');
    const r = await mergeShards([parts[2], parts[0], parts[1]], merged);
    assert.deepEqual([r.linked, r.rewritten], [2, 2]);
    const a = await readAll(merged);
    const b = await readAll(single);
    assert.deepEqual(a.examples, b.examples);
    assert.deepEqual(a.ds.metadata, b.ds.metadata);
    assert.equal(Buffer.compare(bytes(a.acts), bytes(b.acts)), 0);
    assert.equal(statSync(path.join(merged, 'acts000001.bin')).ino, statSync(path.join(parts[1], 'acts000000.bin')).ino);
    await assert.rejects(mergeShards(parts.slice(0, 2), path.join(root, 'merged2')), { message: /2 parts of a recording split across 3 workers/ });
    await assert.rejects(mergeShards(parts, merged), { message: /is not empty/ });
    await assert.rejects(record({ ...quiet, model: fixtureModel('vit_hf'), layers: ['-2', '-1'], data: classes, out: path.join(root, 'x'), maxTokensPerShard: shard4, worker: 0, workers: 4 }), {
      message: /--workers 4 is more than the 3 shards/,
    });
  });

  it('sizes shards for the workers when no shard size is given, and the merge equals one machine with that size', async () => {
    const opts = { ...quiet, model: fixtureModel('vit_hf'), layers: ['-2', '-1'], data: classes, batch: 4 };
    // At the default size the dataset is one shard; for 4 workers, shards of floor(size / 4) examples.
    const parts = [0, 1, 2, 3].map((w) => path.join(root, `auto${w}`));
    for (const [w, out] of parts.entries()) await record({ ...opts, out, worker: w, workers: 4 });
    const merged = await mergeShards(parts, path.join(root, 'auto-merged'));
    const one = path.join(root, 'auto-one');
    await record({ ...opts, out: one, maxTokensPerShard: merged.metadata.max_tokens_per_shard });
    const [a, b] = [await readAll(path.join(root, 'auto-merged')), await readAll(one)];
    assert.ok(merged.metadata.max_tokens_per_shard < DEFAULT_MAX_TOKENS_PER_SHARD);
    assert.equal(a.ds.shards.length >= 4, true, `${a.ds.shards.length} shards`);
    assert.deepEqual(a.examples, b.examples);
    assert.equal(Buffer.compare(bytes(a.acts), bytes(b.acts)), 0);
  });

  it('merges skip-run parts with short shards: full shards linked, the rest rewritten at the end', async () => {
    const data = path.join(root, 'merge-skip');
    const names = Array.from({ length: 12 }, (_, i) => `img${String(i).padStart(2, '0')}.png`);
    await writeImages(data, names);
    writeFileSync(path.join(data, 'img01.png'), '');
    const opts = { ...quiet, model: fixtureModel('vit_tv'), layers: ['1'], data, batch: 4, maxTokensPerShard: 17 * 3, onError: 'skip' as const };
    const whole = path.join(root, 'merge-skip-whole');
    await record({ ...opts, out: whole });
    const parts = [0, 1].map((w) => path.join(root, `merge-skip-${w}`));
    for (const [w, out] of parts.entries()) await record({ ...opts, out, worker: w, workers: 2 });
    const merged = path.join(root, 'merge-skip-merged');
    const r = await mergeShards(parts, merged);
    // 3 examples per shard. Worker 0 records images 0-5 without img01: shards of 3 and 2. Worker 1 records 6-11:
    // two full shards. The three full shards are linked, worker 0's short one is rewritten at the end.
    assert.deepEqual([r.linked, r.rewritten, r.metadata.n_examples], [3, 2, 11]);
    const a = await readAll(merged);
    const b = await readAll(whole);
    assert.deepEqual(
      a.examples.map((l) => JSON.parse(l).file),
      [0, 2, 3, 6, 7, 8, 9, 10, 11, 4, 5].map((i) => names[i]),
    );
    assert.deepEqual(readFileSync(path.join(merged, 'errors.jsonl'), 'utf8'), readFileSync(path.join(whole, 'errors.jsonl'), 'utf8'));
    const E = a.acts.length / 11;
    a.examples.forEach((line, i) => {
      const j = b.examples.indexOf(line);
      assert.equal(Buffer.compare(bytes(a.acts.subarray(i * E, (i + 1) * E)), bytes(b.acts.subarray(j * E, (j + 1) * E))), 0, line);
    });
  });

  it('labels each patch of a segmentation pair with the majority class of its pixels', async () => {
    const seg = path.join(root, 'seg');
    mkdirSync(path.join(seg, 'images'), { recursive: true });
    mkdirSync(path.join(seg, 'masks'));
    // 32x32 masks, patches of 8: class 1 left of column c, class 2 right of it; c = 12 splits patch column 1
    // 4:4 (tie -> 1), c = 13 gives it 5:3 to class 1, c = 11 gives it 3:5 to class 2.
    const cuts = [12, 13, 11];
    for (const [i, c] of cuts.entries()) {
      writeFileSync(path.join(seg, 'images', `${i}.png`), await noisePng(i, 32, 32));
      const m = new Uint8Array(32 * 32).map((_, k) => (k % 32 < c ? 1 : 2));
      await sharp(m, { raw: { width: 32, height: 32, channels: 1 } })
        .toColourspace('b-w')
        .png()
        .toFile(path.join(seg, 'masks', `${i}.png`));
    }
    const model = path.join(root, 'seg-model.onnx');
    copyFileSync(fixtureModel('vit_hf'), model);
    writeFileSync(path.join(root, 'seg-model.json'), JSON.stringify({ preset: 'siglip', family: 'siglip', ckpt: 'test/vit' }));
    const out = path.join(root, 'seg-out');
    const r = await record({ ...quiet, model, layers: ['-1'], data: seg, out });
    assert.deepEqual([r.metadata.pixel_agg, r.metadata.family, r.metadata.ckpt], ['majority', 'siglip', 'test/vit']);
    const labels = readFileSync(path.join(out, 'labels.bin'));
    const row = (second: number) => [1, second, 2, 2];
    assert.deepEqual(
      [...labels],
      [1, 1, 2].flatMap((s) => [0, 1, 2, 3].flatMap(() => row(s))),
    );
  });

  it('records an IDX dataset with its labels, and runs from the command line', async () => {
    const dir = path.join(root, 'idx');
    mkdirSync(dir);
    writeFileSync(
      path.join(dir, 't10k-images-idx3-ubyte.gz'),
      gzipSync(
        idxFile(
          [5, 28, 28],
          new Uint8Array(5 * 784).map((_, i) => (i * 7) % 256),
        ),
      ),
    );
    writeFileSync(path.join(dir, 't10k-labels-idx1-ubyte.gz'), gzipSync(idxFile([5], Buffer.from([9, 2, 1, 1, 6]))));
    const out = path.join(root, 'idx-out');
    const [summary] = await runForJson(recordCommand, [
      '--model',
      fixtureModel('vit_tv'),
      '--layer',
      '-1',
      '--layer',
      '0',
      '--data',
      path.join(dir, 't10k-images-idx3-ubyte.gz'),
      '--out',
      out,
      '--no-progress',
      '--json',
      '--mean',
      '0.5,0.5,0.5',
      '--std',
      '0.25,0.25,0.25',
    ]);
    const [merged] = await runForJson(shardsMergeCommand, ['--out', path.join(root, 'idx-merged'), '--json', out]);
    const { images_per_second, first_batch_seconds, ...rest } = summary as { images_per_second: number; first_batch_seconds: number };
    assert.ok(images_per_second > 0);
    assert.ok(first_batch_seconds > 0);
    assert.deepEqual(rest, { out, n_examples: 5, recorded: 5, skipped: 0, resumed: false });
    assert.deepEqual(merged, { out: path.join(root, 'idx-merged'), n_examples: 5, linked_shards: 0, rewritten_examples: 5 });
    const { ds, examples } = await readAll(out);
    assert.deepEqual(ds.metadata.layers, [2, 0]);
    assert.deepEqual((ds.metadata.data as RecordingData).preprocess.mean, [0.5, 0.5, 0.5]);
    assert.deepEqual(
      examples.map((l) => JSON.parse(l).label),
      [9, 2, 1, 1, 6],
    );
  });
});
