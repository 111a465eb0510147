/**
 * The committed demo models (models/): their bytes match checksums.sha256, they load in onnxruntime-node with
 * the outputs and layers their cards state, they still score above stated floors on fresh data read through
 * vitsae's own image path (so the export and the card's preprocessing are checked too), and the training script
 * still runs. CI never retrains.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as ort from 'onnxruntime-node';
import { listLayers, openBackbone } from '../src/backbone/backbone.js';
import { type ConceptWorldInfo, writeConceptWorld } from '../src/data/concept-world.js';
import { type Dataset, openDataset } from '../src/data/images.js';
import { loadPixels, type ModelCard, readModelCard, resolvePreprocess } from '../src/data/preprocess.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const modelsDir = path.join(root, 'models');
/** The committed models: every .onnx in models/ (each with its card). */
const MODELS = readdirSync(modelsDir).flatMap((f) => (f.endsWith('.onnx') ? [f.slice(0, -5)] : []));
const FASHION_T10K = '/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz';

/**
 * Floors a few points under the results measured at training time (models/README.md), for noise in small samples:
 * Fashion-MNIST 0.665; per concept-world model with class and per-patch concept heads, its class accuracy and the
 * mean and lowest per-concept F1 of its patch head.
 */
const FLOORS = { fashion: 0.6, simclrMirror: 0.9, simclrNeighbour: 0.2 };
const WORLD_FLOORS = {
  'concept-world-control': { class: 0.93, patchF1: 0.93, patchF1Min: 0.85 },
  'concept-world-supervised': { class: 0.93, patchF1: 0.93, patchF1Min: 0.85 },
};

/** The fields of the demo cards beyond what the recorder reads. */
interface DemoCard extends ModelCard {
  inputs: Record<string, (number | 'N')[]>;
  outputs: Record<string, (number | 'N')[]>;
  layers: { block: number; tensor: string }[];
  licence: string;
  accuracy: Record<string, unknown>;
  training: { seed: number; steps: number; seconds: number };
}

const modelFile = (stem: string) => path.join(modelsDir, stem + '.onnx');
const card = (stem: string) => readModelCard(modelFile(stem)) as DemoCard;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'vitsae-models-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function checksums(): Map<string, string> {
  const lines = readFileSync(path.join(modelsDir, 'checksums.sha256'), 'utf8').trim().split('\n');
  return new Map(
    lines.map((l) => {
      const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(l);
      assert.ok(m, `checksums.sha256: not a sha256sum line: ${l}`);
      return [m[2], m[1]];
    }),
  );
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/**
 * Runs a model on examples [0, n) of a dataset, decoded by vitsae's preprocessing with the model's card, and
 * returns the outputs of each batch in order.
 */
async function runOn(stem: string, ds: Dataset, n: number, mirror = false): Promise<ort.InferenceSession.OnnxValueMapType[]> {
  const c = card(stem);
  const pp = resolvePreprocess(c, {}, undefined, 3);
  const session = await ort.InferenceSession.create(modelFile(stem));
  const [H, W] = pp.size;
  const out: ort.InferenceSession.OnnxValueMapType[] = [];
  for (let start = 0; start < n; start += 64) {
    const b = Math.min(64, n - start);
    const pixels_NCHW = new Float32Array(b * 3 * H * W);
    for (let j = 0; j < b; j++) await loadPixels(await ds.image(start + j), pp, pixels_NCHW.subarray(j * 3 * H * W, (j + 1) * 3 * H * W));
    if (mirror) for (let row = 0; row < b * 3 * H; row++) pixels_NCHW.subarray(row * W, (row + 1) * W).reverse();
    out.push(await session.run({ pixel_values: new ort.Tensor('float32', pixels_NCHW, [b, 3, H, W]) }));
  }
  return out;
}

/** Index of the largest of each row of a [rows, k] tensor. */
function argmaxRows(t: ort.Tensor): number[] {
  const [rows, k] = t.dims;
  const v = t.data as Float32Array;
  return Array.from({ length: rows }, (_, r) => {
    let best = 0;
    for (let j = 1; j < k; j++) if (v[r * k + j] > v[r * k + best]) best = j;
    return best;
  });
}

describe('committed demo models', () => {
  it('match models/checksums.sha256, which lists every model and card', () => {
    const sums = checksums();
    const files = readdirSync(modelsDir)
      .filter((f) => /\.(onnx|json)$/.test(f))
      .sort();
    assert.deepEqual([...sums.keys()].sort(), files);
    assert.deepEqual(files, MODELS.flatMap((m) => [m + '.json', m + '.onnx']).sort());
    for (const m of ['concept-world-control', 'concept-world-supervised', 'concept-world-simclr', 'fashion-mnist-supervised']) assert.ok(MODELS.includes(m), `models/${m}.onnx is missing`);
    for (const [file, hash] of sums) assert.equal(sha256(path.join(modelsDir, file)), hash, `${file} does not match its checksum`);
  });

  for (const stem of MODELS) {
    it(`${stem} loads in onnxruntime-node, gives the card's outputs and exposes the card's layers`, async () => {
      const c = card(stem);
      assert.equal(c.licence, "MIT (vitsae's own)");
      assert.ok(c.training.steps > 0 && c.training.seconds > 0);
      const session = await ort.InferenceSession.create(modelFile(stem));
      assert.deepEqual(session.inputNames, Object.keys(c.inputs));
      assert.deepEqual(session.outputNames, Object.keys(c.outputs));
      const dims = c.inputs.pixel_values.map((d) => (d === 'N' ? 2 : d));
      const res = await session.run({ pixel_values: new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims) });
      for (const [name, shape] of Object.entries(c.outputs))
        assert.deepEqual(
          res[name].dims,
          shape.map((d) => (d === 'N' ? 2 : d)),
          name,
        );
      const layers = await listLayers(await openBackbone(modelFile(stem)), [64, 64]);
      assert.deepEqual(
        layers.map((l) => [l.block, l.name, l.shape]),
        c.layers.map((l) => [l.block, l.tensor, [1, 65, 128]]),
      );
    });
  }
});

describe('demo model accuracy on fresh data', () => {
  const world = path.join(tmp, 'world');
  const n = 256;
  before(() => writeConceptWorld(world, { n, seed: 1000, progress: false }));

  for (const [stem, floors] of Object.entries(WORLD_FLOORS)) {
    it(`${stem} classifies a fresh world (class accuracy >= ${floors.class}) and its patch head finds the concepts (per-patch F1 mean >= ${floors.patchF1}, each >= ${floors.patchF1Min})`, async (t) => {
      const ds = await openDataset(path.join(world, 'labels.csv'));
      const outputs = await runOn(stem, ds, n);
      const predicted = outputs.flatMap((o) => argmaxRows(o.class_logits));
      const accuracy = predicted.filter((p, i) => p === ds.label(i)).length / n;
      t.diagnostic(`class accuracy ${accuracy.toFixed(3)}`);
      assert.ok(accuracy >= floors.class, `class accuracy ${accuracy.toFixed(3)} < ${floors.class}`);

      const info: ConceptWorldInfo = JSON.parse(readFileSync(path.join(world, 'concepts.json'), 'utf8'));
      const coverage = readFileSync(path.join(world, info.coverage_file));
      const C = info.concepts.length;
      const logits = Float32Array.from(outputs.flatMap((o) => [...(o.patch_concept_logits.data as Float32Array)]));
      const [tp, fp, fn] = [new Array(C).fill(0), new Array(C).fill(0), new Array(C).fill(0)];
      for (let i = 0; i < logits.length; i++) {
        const [yes, truth] = [logits[i] > 0, coverage[i] >= info.threshold];
        const k = i % C;
        if (yes && truth) tp[k]++;
        else if (yes) fp[k]++;
        else if (truth) fn[k]++;
      }
      const f1 = tp.map((t, k) => (2 * t) / Math.max(1, 2 * t + fp[k] + fn[k]));
      const mean = f1.reduce((a, b) => a + b, 0) / C;
      const lowest = Math.min(...f1);
      t.diagnostic(`per-patch concept F1 mean ${mean.toFixed(3)}, lowest ${lowest.toFixed(3)} (${info.concepts[f1.indexOf(lowest)]})`);
      assert.ok(mean >= floors.patchF1, `mean per-patch F1 ${mean.toFixed(3)} < ${floors.patchF1}`);
      assert.ok(lowest >= floors.patchF1Min, `per-patch F1 of ${info.concepts[f1.indexOf(lowest)]} ${lowest.toFixed(3)} < ${floors.patchF1Min}`);
    });
  }

  it(`the SimCLR model embeds a fresh world: an image's mirror is its nearest embedding (>= ${FLOORS.simclrMirror}), 1-NN finds the class (>= ${FLOORS.simclrNeighbour})`, async (t) => {
    const ds = await openDataset(path.join(world, 'labels.csv'));
    const unit = async (mirror: boolean) => {
      const e = Float32Array.from((await runOn('concept-world-simclr', ds, n, mirror)).flatMap((o) => [...(o.embedding.data as Float32Array)]));
      const d = e.length / n;
      return Array.from({ length: n }, (_, i) => {
        const v = e.subarray(i * d, (i + 1) * d);
        const norm = Math.hypot(...v);
        return v.map((x) => x / norm);
      });
    };
    const [plain, mirrored] = [await unit(false), await unit(true)];
    const cos = (a: Float32Array, b: Float32Array) => a.reduce((s, x, k) => s + x * b[k], 0);
    const nearest = (v: Float32Array, among: Float32Array[], except = -1) => {
      let best = -1;
      for (let j = 0; j < n; j++) if (j !== except && (best < 0 || cos(v, among[j]) > cos(v, among[best]))) best = j;
      return best;
    };
    // Invariance that still tells images apart: among all mirrored images, the closest is the image's own mirror.
    const mirror = plain.filter((v, i) => nearest(v, mirrored) === i).length / n;
    // Leave-one-out nearest neighbour by cosine; chance is about 1/12.
    const hits = plain.filter((v, i) => ds.label(nearest(v, plain, i)) === ds.label(i)).length;
    t.diagnostic(`the mirror is the nearest for ${(100 * mirror).toFixed(1)}% of images; 1-NN class accuracy ${(hits / n).toFixed(3)}`);
    assert.ok(mirror >= FLOORS.simclrMirror, `mirror retrieval ${mirror.toFixed(3)}`);
    assert.ok(hits / n >= FLOORS.simclrNeighbour, `1-NN accuracy ${(hits / n).toFixed(3)}`);
  });

  it(`the Fashion-MNIST model classifies t10k read from its IDX file (accuracy >= ${FLOORS.fashion})`, { skip: !existsSync(FASHION_T10K) && 'no Debian dataset-fashion-mnist' }, async (t) => {
    const ds = await openDataset(FASHION_T10K);
    const m = 500;
    const predicted = (await runOn('fashion-mnist-supervised', ds, m)).flatMap((o) => argmaxRows(o.class_logits));
    const accuracy = predicted.filter((p, i) => p === ds.label(i)).length / m;
    t.diagnostic(`accuracy ${accuracy.toFixed(3)} on the first ${m}`);
    assert.ok(accuracy >= FLOORS.fashion, `accuracy ${accuracy.toFixed(3)} < ${FLOORS.fashion}`);
  });

  it('models/train_demo.py --smoke trains each model one step and writes nothing', { skip: !existsSync('/usr/bin/python3') && 'no /usr/bin/python3' }, async () => {
    const before = readdirSync(modelsDir).map((f) => [f, sha256(path.join(modelsDir, f))]);
    const kinds = ['control', 'supervised', 'simclr', 'fashion'];
    const args = [path.join(modelsDir, 'train_demo.py'), ...kinds, '--world', world, '--stem', 'conv', '--smoke'];
    const { stdout } = await promisify(execFile)('/usr/bin/python3', args, { cwd: tmp });
    for (const m of kinds) assert.match(stdout, new RegExp(`\\[${m}\\] exported \\d+ bytes to memory`));
    assert.deepEqual(
      readdirSync(modelsDir).map((f) => [f, sha256(path.join(modelsDir, f))]),
      before,
    );
  });
});
