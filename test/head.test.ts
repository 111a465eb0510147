/**
 * Task heads: trained on the fixture ViT's final tokens over Fashion-MNIST (classification) and the concept world's
 * masks (segmentation), and on recorded features that are linearly separable, where the head must be near
 * perfect with its weights working on raw, unstandardised features.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { EXAMPLES_FILE } from '../src/shards/format.js';
import { headTrainCommand } from '../src/cli/commands/head.js';
import { defaultsOf } from '../src/util/config.js';
import { type Head, headProbabilities, loadHead, type HeadInfo, headTrainSpec, saveHead, trainHead } from '../src/edit/head.js';
import { tensor, writeSafetensors } from '../src/sae/safetensors.js';
import { snakeKeys } from '../src/util/json-keys.js';
import { ShardWriter } from '../src/shards/format.js';
import { Rng } from '../src/util/random.js';
import { runForJson } from './fixtures/helpers.js';
import { cardModel, conceptWorld, fashionSubset } from './fixtures/edit/setup.js';

const quiet = { progress: false, log: () => {} };
let tmp: string;
let model: string;

before(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'vitsae-head-'));
  model = cardModel(tmp);
});

after(() => rmSync(tmp, { recursive: true, force: true }));

test('a classification head on the final CLS token of Fashion-MNIST beats chance; it saves and loads', async () => {
  const data = fashionSubset(tmp, 300);
  const head = await trainHead({ task: 'classify', model, data, train: defaultsOf(headTrainSpec), ...quiet });
  const { info } = head;
  assert.equal(info.features, 'last_hidden_state', 'the last residual-stream tensor by default');
  assert.equal(info.pooling, 'cls');
  assert.deepEqual(info.classes, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  assert.equal(info.metrics.train_images + info.metrics.test_images, 300);
  // Measured 0.48 with random ViT weights (chance is 0.1).
  assert.ok(info.metrics.accuracy > 0.3, `held-out accuracy ${info.metrics.accuracy}`);
  const dir = path.join(tmp, 'fashion-head');
  await saveHead(dir, head);
  const loaded = await loadHead(dir);
  assert.deepEqual(loaded.info, info);
  assert.deepEqual(loaded.W_DK, head.W_DK);
  assert.deepEqual(loaded.b_K, head.b_K);
});

test('a head directory written before the rename (probe.json, probe.safetensors, "vitsae-probe") loads and predicts the same', async () => {
  const [D, K, N] = [8, 3, 5];
  const rng = new Rng(7);
  const head: Head = {
    info: {
      format: 'vitsae-head',
      version: 1,
      task: 'classify',
      model: '/models/m.onnx',
      features: 'last_hidden_state',
      pooling: 'cls',
      d_model: D,
      classes: ['a', 'b', 'c'],
      metrics: { train_images: 8, test_images: 2, accuracy: 0.5, per_class: [] },
      train: { ...defaultsOf(headTrainSpec), dataset: '/data' },
    },
    W_DK: Float32Array.from({ length: D * K }, () => rng.normal()),
    b_K: Float32Array.from({ length: K }, () => rng.normal()),
  };
  // Exactly what vitsae probe train wrote.
  const old = path.join(tmp, 'old-probe');
  mkdirSync(old);
  await writeSafetensors(path.join(old, 'probe.safetensors'), { W: tensor(head.W_DK, [D, K]), b: tensor(head.b_K, [K]) }, { format: 'vitsae-probe' });
  writeFileSync(path.join(old, 'probe.json'), JSON.stringify({ ...head.info, format: 'vitsae-probe', train: snakeKeys(head.info.train) }, null, 2));
  const loaded = await loadHead(old);
  assert.deepEqual(loaded.info, head.info);
  const rows_ND = Float32Array.from({ length: N * D }, () => rng.normal());
  const probs_NK = headProbabilities(loaded, rows_ND, N);
  assert.deepEqual(probs_NK, headProbabilities(head, rows_ND, N));
  assert.ok(probs_NK.every((p) => p > 0 && p < 1));
  // The old name's format is checked as the new one's is.
  writeFileSync(path.join(old, 'probe.json'), JSON.stringify({ ...head.info, format: 'vitsae-sae' }));
  await assert.rejects(loadHead(old), /old-probe\/probe\.json is not a vitsae-probe version 1 file/);
});

test('on separable features of very different scales the head is near perfect on raw features', async () => {
  const D = 32,
    P = 4,
    N = 400,
    K = 3;
  const shards = path.join(tmp, 'separable');
  const rng = new Rng(5);
  const centres = Array.from({ length: K * D }, () => rng.normal());
  // Per-dimension offsets and scales spanning four orders of magnitude: the head standardises internally and
  // must fold that back into weights on the raw values.
  const scale = Array.from({ length: D }, (_, d) => 10 ** ((d % 5) - 2));
  const offset = Array.from({ length: D }, () => 50 * rng.normal());
  const w = await ShardWriter.create(shards, {
    family: 'test',
    ckpt: 'test',
    layers: [2],
    content_tokens_per_example: P,
    cls_token: true,
    d_model: D,
    max_tokens_per_shard: 1 << 16,
    data: { format: 'vitsae-record', tensors: ['last_hidden_state'], classes: ['a', 'b', 'c'] },
    dataset: 'separable',
    pixel_agg: null,
  });
  const acts = new Float32Array(N * (P + 1) * D);
  const labels = Array.from({ length: N }, (_, n) => n % K);
  labels.forEach((k, n) => {
    for (let t = 0; t <= P; t++) for (let d = 0; d < D; d++) acts[(n * (P + 1) + t) * D + d] = offset[d] + scale[d] * (t === 0 ? 2 * centres[k * D + d] + 0.3 * rng.normal() : rng.normal());
  });
  await w.append(acts);
  await w.close();
  writeFileSync(path.join(shards, EXAMPLES_FILE), labels.map((label, n) => JSON.stringify({ file: `x${n}`, label }) + '\n').join(''));
  const head = await trainHead({ task: 'classify', model, shards, train: { ...defaultsOf(headTrainSpec), epochs: 40 }, ...quiet });
  assert.deepEqual(head.info.classes, ['a', 'b', 'c']);
  assert.ok(head.info.metrics.accuracy >= 0.97, `held-out accuracy ${head.info.metrics.accuracy}`);
  await assert.rejects(trainHead({ task: 'classify', model, shards, features: '0', train: defaultsOf(headTrainSpec), ...quiet }), /not a vitsae recording of tensor/);
});

test('a segmentation head on every final patch token reports mIoU (vitsae head train)', async () => {
  const world = await conceptWorld(tmp, 120);
  const out = path.join(tmp, 'seg-head');
  const names = ['background', 'circle', 'square', 'triangle', 'cross', 'star', 'heart'];
  const [info] = (await runForJson(headTrainCommand, [
    '--task',
    'segment',
    '--model',
    model,
    '--data',
    world,
    '--out',
    out,
    '--classes',
    names.join(','),
    '--epochs',
    '10',
    '--no-progress',
    '--json',
  ])) as HeadInfo[];
  assert.equal(info.pooling, 'patches');
  assert.deepEqual(info.classes, names);
  assert.equal(info.metrics.per_class.length, 7);
  const m = info.metrics;
  assert.ok(m.miou! > 0 && m.miou! <= 1, `mIoU ${m.miou}`);
  assert.ok(m.per_class.every((c) => c.iou! >= 0 && c.iou! <= 1));
  // Background covers most patches; measured accuracy 0.84.
  assert.ok(m.accuracy > 0.6, `patch accuracy ${m.accuracy}`);
  assert.deepEqual((await loadHead(out)).info, info);
  // The world's masks/ folder is a flat folder of images: no class labels.
  await assert.rejects(trainHead({ task: 'classify', model, data: path.join(world, 'masks'), train: defaultsOf(headTrainSpec), ...quiet }), /has no class labels/);
  await assert.rejects(trainHead({ task: 'segment', model, data: path.join(world, 'labels.csv'), train: defaultsOf(headTrainSpec), ...quiet }), /has no masks/);
});
