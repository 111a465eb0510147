/**
 * The edit engine on the fixture ViT (CLS + 2 registers, 16 patches) split at block 1, a tiny SAE trained on that
 * block over Fashion-MNIST, and a linear head on the last block: an empty edit is the unedited model, an edit of
 * one patch changes exactly that patch of the back's input by decode(f') - decode(f), fixed-batch exports agree
 * with dynamic ones, and the edit evaluation (with the concept-world rule) reports what it promises.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { createSession, type TokenLayout } from '../src/backbone/backbone.js';
import { frontModel } from '../src/backbone/graph.js';
import { editCommand, parseEdit } from '../src/cli/commands/edit.js';
import { evalEditsCommand } from '../src/cli/commands/eval-edits.js';
import { defaultsOf } from '../src/util/config.js';
import { openDataset } from '../src/data/images.js';
import { loadPixels } from '../src/data/preprocess.js';
import { EditEngine, latentMaxima, type Prepared } from '../src/edit/engine.js';
import { alongRows, type EditEvalReport, evaluateEdits } from '../src/edit/evaluate.js';
import { type Head, headProbabilities, headTrainSpec, saveHead, trainHead } from '../src/edit/head.js';
import { addToPatches, readPatches, taskRows } from '../src/edit/tokens.js';
import type { Sae } from '../src/sae/model.js';
import { runForJson } from './fixtures/helpers.js';
import { cardModel, conceptWorld, fashionSubset, tinySae } from './fixtures/edit/setup.js';

const quiet = { progress: false, log: () => {} };
const train = { ...defaultsOf(headTrainSpec), epochs: 10 };
let tmp: string;
let model: string;
let fashion: string;
let shards: string;
let saeDir: string;
let headDir: string;
let head: Head;
let engine: EditEngine;
let images: Buffer[];

before(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'vitsae-edit-'));
  model = cardModel(tmp);
  fashion = fashionSubset(tmp, 240);
  ({ shards, sae: saeDir } = await tinySae(tmp, model, fashion, '1'));
  head = await trainHead({ task: 'classify', model, data: fashion, train, ...quiet });
  headDir = path.join(tmp, 'head');
  await saveHead(headDir, head);
  engine = await EditEngine.open({ model, sae: saeDir, head: headDir });
  const ds = await openDataset(fashion);
  images = await Promise.all(
    Array.from({ length: 5 }, async (_, i) => {
      const { data, width, height } = (await ds.image(i)) as { data: Uint8Array; width: number; height: number };
      return sharp(data, { raw: { width, height, channels: 1 } })
        .png()
        .toBuffer();
    }),
  );
});

after(async () => {
  await engine?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

test("the engine splits the model at the SAE's training layer, found from its shards", () => {
  assert.equal(engine.layer.name, '/vision_model/encoder/layers.1/Add_1_output_0');
  assert.deepEqual(engine.layout, { layout: 'ntd', prefixTokens: 3, patchTokens: 16, dModel: 32, grid: [4, 4] });
  assert.equal(engine.task, 'classify');
});

test('an empty edit reproduces the unedited model and task head to 1e-5', async () => {
  const prepared = await engine.prepare(images);
  const { before, after } = await engine.edit(prepared, []);
  // The reference: the whole model up to the head's tensor, no split, and the head applied by hand.
  const pp = engine.preprocess;
  const pixels = new Float32Array(images.length * 3 * 32 * 32);
  for (const [i, img] of images.entries()) await loadPixels(img, pp, pixels.subarray(i * 3072, (i + 1) * 3072));
  const session = await createSession(frontModel(engine.bb.model, ['last_hidden_state']), engine.bb);
  const out = await session.run({ [engine.bb.input.name]: new ort.Tensor('float32', pixels, [images.length, 3, 32, 32]) });
  await session.release();
  const reference = headProbabilities(head, taskRows(out.last_hidden_state.data as Float32Array, engine.featureLayout, images.length, 'cls'), images.length);
  assert.ok(maxAbsDiff(after.probs, reference) < 1e-5, `edited-nothing probabilities differ by ${maxAbsDiff(after.probs, reference)}`);
  assert.deepEqual(after.probs, before.probs);
  assert.equal(await engine.prepare(images), prepared, 'the same images reuse their front activations');
});

/** decode(f) of one patch in raw units from the checkpoint's weights: (f @ W_dec + b_dec) / input_scale. */
function decode(sae: Sae, f: Map<number, number>): Float64Array {
  const D = sae.dModel;
  const W = sae.core.getTensor('W_dec');
  const b = sae.core.getTensor('b_dec');
  const out = Float64Array.from(b);
  for (const [s, v] of f) for (let d = 0; d < D; d++) out[d] += v * W[s * D + d];
  return out.map((x) => x / sae.config.input_scale);
}

test("an edit of one patch changes only that patch of the back's input, by decode(f') - decode(f)", async () => {
  const prepared = await engine.prepare(images);
  const p = 5;
  const firing = engine.patchLatents(prepared, 2, p);
  assert.ok(firing.length > 0, 'some latent fires on the patch');
  const silent = [...Array(engine.sae.dSae).keys()].find((s) => !firing.some((f) => f.latent === s))!;
  const edits = [
    { latent: firing[0].latent, patches: [p], value: -3, mode: 'set' as const },
    { latent: silent, patches: [p], value: 1.5, mode: 'add' as const },
    { latent: firing[0].latent, patches: [p], value: 2, mode: 'scale' as const },
  ];
  const x = engine.backInput(prepared, engine.delta(prepared, edits));
  const T = 3 + 16,
    D = 32;
  // Every image of the batch gets the edits, on patch p only.
  for (let img = 0; img < images.length; img++) {
    const f = new Map(engine.patchLatents(prepared, img, p).map((l) => [l.latent, l.value]));
    const fEdited = new Map([...f, [firing[0].latent, -6], [silent, (f.get(silent) ?? 0) + 1.5]]);
    const expected = decode(engine.sae, fEdited).map((v, d) => v - decode(engine.sae, f)[d]);
    for (let t = 0; t < T; t++) {
      const at = (img * T + t) * D;
      const diff = Array.from({ length: D }, (_, d) => x[at + d] - prepared.acts[at + d]);
      if (t === 3 + p) assert.ok(maxAbsDiff(diff, expected) < 1e-5, `image ${img}: the edited patch moved by ${diff.slice(0, 3)}..., expected ${expected.slice(0, 3)}...`);
      else
        assert.ok(
          diff.every((v) => v === 0),
          `image ${img} token ${t} changed`,
        );
    }
  }
  const untouched = engine.delta(prepared, [
    { latent: firing[0].latent, patches: 'all', value: 1, mode: 'scale' },
    { latent: silent, patches: 'all', value: 0, mode: 'add' },
  ]);
  assert.ok(
    untouched.every((v) => v === 0),
    'scaling by 1 and adding 0 change nothing',
  );
});

test("suppressing a latent that fires on a patch moves x' and the head's probabilities", async () => {
  const prepared = await engine.prepare(images);
  assert.throws(() => engine.delta(prepared, [{ latent: 0, patches: 'all', value: -2, mode: 'set', relative: true }]), /maximum activations/);
  engine.setMaxima(await latentMaxima(engine.sae, shards, -1));
  const [{ latent }] = engine.patchLatents(prepared, 0, 6);
  const { before, after, delta } = await engine.edit(prepared, [{ latent, patches: 'all', value: -20, mode: 'set', relative: true }]);
  const D = 32;
  const moved = readPatches(engine.backInput(prepared, delta), engine.layout, prepared.n).subarray(6 * D, 7 * D);
  const original = readPatches(prepared.acts, engine.layout, prepared.n).subarray(6 * D, 7 * D);
  assert.ok(maxAbsDiff(moved, original) > 0.1, 'the patch token moved');
  assert.ok(maxAbsDiff(after.probs.subarray(0, 10), before.probs.subarray(0, 10)) > 1e-3, 'the head answered differently');
});

test('a model exported with a fixed batch of 2 gives the same answers for 3 images', async () => {
  const dir = path.join(tmp, 'batch2');
  mkdirSync(dir);
  const fixed = await EditEngine.open({ model: cardModel(dir, 'vit_hf_batch2'), sae: saeDir, head, layer: '1' });
  try {
    const three = images.slice(0, 3);
    const edits = [{ latent: 3, patches: [0, 7], value: 4, mode: 'add' as const }];
    const a = await fixed.edit(await fixed.prepare(three), edits);
    const b = await engine.edit(await engine.prepare(three), edits);
    assert.ok(maxAbsDiff(a.before.probs, b.before.probs) < 1e-5);
    assert.ok(maxAbsDiff(a.after.probs, b.after.probs) < 1e-5);
  } finally {
    await fixed.close();
  }
});

test('feature-map layouts: patch p of a [N, C, H, W] tensor is read and edited across the channel planes', () => {
  const layout: TokenLayout = { layout: 'nchw', prefixTokens: 0, patchTokens: 4, dModel: 3, grid: [2, 2] };
  const data = Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i);
  const patches = readPatches(data, layout, 2);
  assert.deepEqual(Array.from(patches.subarray(5 * 3, 6 * 3)), [12 + 1, 12 + 5, 12 + 9], 'image 1, patch 1: one value per channel plane');
  const delta = new Float32Array(2 * 4 * 3);
  delta.set([100, 200, 300], 5 * 3);
  addToPatches(data, layout, 2, delta);
  assert.deepEqual([data[13], data[17], data[21]], [113, 217, 321]);
  assert.equal(
    data.reduce((a, b) => a + b, 0),
    (23 * 24) / 2 + 600,
  );
});

test('edits on the command line: latent:patches:value[:mode]', () => {
  assert.deepEqual(parseEdit('12:all:-2x'), { latent: 12, patches: 'all', value: -2, mode: 'set', relative: true });
  assert.deepEqual(parseEdit('7:3+4+10-12:0.5:add'), { latent: 7, patches: [3, 4, 10, 11, 12], value: 0.5, mode: 'add', relative: false });
  assert.throws(() => parseEdit('7:3:5:double'), /mode double/);
  assert.throws(() => parseEdit('7:3-1:5'), /empty/);
  assert.throws(() => parseEdit('x:all:5'), /latent/);
});

test('vitsae edit --json: top classes before and after, relative values from the training shards', async () => {
  const file = path.join(tmp, 'shirt.png');
  await sharp(images[1]).toFile(file);
  const prepared: Prepared = await engine.prepare([images[1]]);
  const [{ latent }] = engine.patchLatents(prepared, 0, 5);
  const [out] = (await runForJson(editCommand, ['--model', model, '--sae', saeDir, '--head', headDir, '--image', file, '--edit', `${latent}:all:-20x`, '--top', '3', '--json'])) as {
    task: string;
    images: { file: string; before: { class: number; prob: number }[]; after: { class: number; prob: number }[]; changed: boolean }[];
  }[];
  assert.equal(out.task, 'classify');
  const [img] = out.images;
  assert.equal(img.before.length, 3);
  assert.ok(img.before[0].prob >= img.before[1].prob);
  assert.equal(img.changed, img.before[0].class !== img.after[0].class);
  assert.ok(Math.abs(img.before[0].prob - prepared.before.probs[img.before[0].class]) < 1e-6);
});

const inUnit = (v: number) => v >= 0 && v <= 1;

test('edit baselines move each patch exactly as far as the latent edit: along one direction, or one per patch', () => {
  const D = 3;
  // Rows: norm 5, untouched, norm 2.
  const edit = Float32Array.from([3, 4, 0, 0, 0, 0, 0, 0, -2]);
  const shared = alongRows(edit, D, Float32Array.from([0, 1, 0]));
  assert.deepEqual([...shared], [0, 5, 0, 0, 0, 0, 0, 2, 0]);
  const draws = [Float32Array.from([1, 0, 0]), Float32Array.from([0, 0, 1])];
  const fresh = alongRows(edit, D, () => draws.shift()!);
  assert.deepEqual([...fresh], [5, 0, 0, 0, 0, 0, 0, 0, 2], 'a direction per edited row, none drawn for the untouched one');
  assert.equal(draws.length, 0);
});

test('vitsae eval edits --json: change rates of the target class, the other classes and both baselines', async () => {
  const [r] = (await runForJson(evalEditsCommand, ['--model', model, '--sae', saeDir, '--head', headDir, '--data', fashion, '--images', '80', '--no-progress', '--json'])) as EditEvalReport[];
  assert.equal(r.unit, 'images');
  assert.equal(r.n_select_images + r.n_test_images, 80);
  for (const rates of [r, r.random_latent, r.random_direction]) assert.ok(inUnit(rates.target_change_rate) && inUnit(rates.other_change_rate));
  assert.equal(r.classes.length, 10);
  for (const c of r.classes) {
    assert.equal(c.n_target + c.n_other, c.latent === null ? 0 : r.n_test_images);
    if (c.latent !== null) assert.ok(c.max > 0 && c.f1 > 0);
  }
  assert.equal(r.rule_consistent_rate, undefined, 'no rule outside the concept world');
});

test('on the concept world: segmentation edits per patch, and the class rule for a classification head', async () => {
  const world = await conceptWorld(tmp, 100);
  const segment = await trainHead({ task: 'segment', model, data: world, train, ...quiet });
  const seg = await EditEngine.open({ model, sae: saeDir, head: segment });
  try {
    const r = await evaluateEdits(seg, { data: world, images: 40, progress: false });
    assert.equal(r.unit, 'patches');
    assert.equal(r.scope, 'target');
    const c = r.classes.find((x) => x.latent !== null)!;
    assert.equal(c.n_target + c.n_other, r.n_test_images * 16);
    // A random latent per batch of (up to 64) test images, never the class's own.
    for (const k of r.classes) if (k.latent !== null) assert.ok(k.random_latent.latents.length === Math.ceil(r.n_test_images / 64) && !k.random_latent.latents.includes(k.latent));
    assert.ok(inUnit(r.target_change_rate) && inUnit(r.random_direction.other_change_rate));
  } finally {
    await seg.close();
  }
  const labels = path.join(world, 'labels.csv');
  const classify = await trainHead({ task: 'classify', model, data: labels, train, ...quiet });
  const cls = await EditEngine.open({ model, sae: saeDir, head: classify });
  try {
    const r = await evaluateEdits(cls, { data: labels, concepts: world, images: 60, progress: false });
    assert.equal(r.rule!.length, 6 + 6 + 4 + 3, 'every shape, colour, texture and size concept');
    assert.ok(inUnit(r.rule_consistent_rate!) && inUnit(r.rule_random_latent_consistent_rate!));
    assert.equal(
      r.rule_checked,
      r.rule!.reduce((a, c) => a + c.n, 0),
    );
    // The baseline's latents are others that fired, never the concept's own, one per batch of test images with a check.
    for (const c of r.rule!) if (c.latent !== null && c.n) assert.ok(c.random_latent.latents.length > 0 && !c.random_latent.latents.includes(c.latent));
    // The swap check: each colour into the next, solid into stripes and each pattern into solid.
    assert.deepEqual(
      r.swap!.map((c) => `${c.from}>${c.to}`),
      [
        ...['red>yellow', 'yellow>green', 'green>cyan', 'cyan>blue', 'blue>magenta', 'magenta>red'].map((p) => p.replace(/(\w+)>(\w+)/, 'colour:$1>colour:$2')),
        'texture:solid>texture:stripes',
        'texture:stripes>texture:solid',
        'texture:dots>texture:solid',
        'texture:checker>texture:solid',
      ],
    );
    assert.ok(inUnit(r.swap_consistent_rate!) && inUnit(r.swap_random_latent_consistent_rate!));
    assert.equal(
      r.swap_checked,
      r.swap!.reduce((a, c) => a + c.n, 0),
    );
    // Every test image whose salient object the head classified right is checked once per family (colour, texture).
    assert.ok(r.swap_checked! > 0 && r.swap_checked! <= 2 * r.n_test_images);
    for (const c of r.swap!) if (c.latents[1] !== null && c.n) assert.ok(c.random_latent.latents.length > 0 && !c.random_latent.latents.includes(c.latents[1]));
  } finally {
    await cls.close();
  }
});
