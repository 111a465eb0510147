/**
 * Edit round-trip latency on a demo-sized model: a 64x64 concept-world image through a ViT of the demo
 * architecture (models/train_demo.py: width 128, 4 blocks, 8x8 patches, CLS token), an SAE of 2048 latents
 * (TopK, k 32) and a linear head. A trained demo model is used when models/ holds one; otherwise the same
 * architecture with random weights (latency does not depend on the weights).
 *
 * "Edit" is what a slider move costs: the cached image's latents are edited and the model's back (the layer -> the
 * head's features) and the head rerun. "Prepare" is a new image: decode, the model's front, the SAE and the
 * unedited back. Target: edit < 100 ms.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openBackbone, probeShapes, selectLayers } from '../src/backbone/backbone.js';
import { defaultsOf } from '../src/util/config.js';
import { encodePngs, generateImage } from '../src/data/concept-world.js';
import { EditEngine } from '../src/edit/engine.js';
import { type Head, headTrainSpec } from '../src/edit/head.js';
import { saeSpec } from '../src/sae/config.js';
import { Sae } from '../src/sae/model.js';
import { Rng } from '../src/util/random.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DEMO = ['concept-world-supervised', 'fashion-mnist-supervised'].map((stem) => path.join(ROOT, 'models', `${stem}.onnx`));
const RUNS = 50;

/** A trained demo model if there is one, else the demo architecture with random weights (exported once). */
async function demoModel(): Promise<{ file: string; trained: boolean }> {
  const trained = DEMO.find((f) => existsSync(f));
  if (trained) return { file: trained, trained: true };
  const script = path.join(ROOT, 'models', 'train_demo.py');
  const hash = createHash('sha256').update(readFileSync(script)).digest('hex').slice(0, 12);
  const dir = path.join(os.tmpdir(), `vitsae-bench-demo-vit-${hash}`);
  const file = path.join(dir, 'demo-vit.onnx');
  if (existsSync(file)) return { file, trained: false };
  const tmp = await fsp.mkdtemp(dir + '.tmp');
  try {
    const code = `import sys, torch; sys.path.insert(0, ${JSON.stringify(path.dirname(script))}); import train_demo as t
torch.manual_seed(0); t.export(t.Classifier(12).eval(), ${JSON.stringify(path.join(tmp, 'demo-vit.onnx'))})`;
    execFileSync('/usr/bin/python3', ['-c', code], { stdio: ['ignore', 'ignore', 'pipe'] });
    await fsp.writeFile(path.join(tmp, 'demo-vit.json'), JSON.stringify({ input_size: 64, resize: null, interpolation: 'nearest', mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], prefix_tokens: 1 }));
    await fsp.rename(tmp, dir);
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
  return { file, trained: false };
}

/** A random linear head on `features` (classes of the concept world, or its 7 mask classes per patch). */
function randomHead(features: string, D: number, task: 'classify' | 'segment'): Head {
  const K = task === 'classify' ? 12 : 7;
  const rng = new Rng(1);
  const metrics = { train_images: 0, test_images: 0, accuracy: 0, per_class: [] };
  return {
    info: {
      format: 'vitsae-head',
      version: 1,
      task,
      model: '',
      features,
      pooling: task === 'classify' ? 'cls' : 'patches',
      d_model: D,
      classes: Array.from({ length: K }, (_, k) => String(k)),
      metrics,
      train: { ...defaultsOf(headTrainSpec), dataset: 'none' },
    },
    W_DK: Float32Array.from({ length: D * K }, () => rng.normal() / Math.sqrt(D)),
    b_K: new Float32Array(K),
  };
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

export async function benchEdit(): Promise<string[]> {
  const { file, trained } = await demoModel();
  const bb = await openBackbone(file);
  const [features] = selectLayers(bb, ['-1']);
  const D = (await probeShapes(bb, [features.name], [64, 64]))[0].at(-1)!;
  const { image } = await encodePngs(generateImage(0, 7));
  const rows: string[] = [];
  for (const layer of ['-2', '0'])
    for (const task of ['classify', 'segment'] as const) {
      const [l] = selectLayers(bb, [layer]);
      const sae = Sae.create(D, { ...defaultsOf(saeSpec), activation: 'topk', k: 32, expansion: 16 }, { mean: new Float32Array(D), inputScale: 1, seed: 0 });
      const engine = await EditEngine.open({ model: file, sae, head: randomHead(features.name, D, task), layer: l.name });
      try {
        const prepare: number[] = [];
        for (let i = 0; i < 10; i++) {
          const t0 = performance.now();
          await engine.prepare([image], false);
          prepare.push(performance.now() - t0);
        }
        const prepared = await engine.prepare([image]);
        const latent = engine.patchLatents(prepared, 0, 27)[0]?.latent ?? 0;
        const edit: number[] = [];
        for (let i = 0; i <= RUNS; i++) {
          const t0 = performance.now();
          await engine.edit(await engine.prepare([image]), [{ latent, patches: 'all', value: -20 + (40 * i) / RUNS, mode: 'set' }]);
          if (i) edit.push(performance.now() - t0); // the first run warms onnxruntime's allocations
        }
        rows.push(`| ${l.block} of ${bb.stream.length} | ${task} | ${quantile(prepare, 0.5).toFixed(1)} | ${quantile(edit, 0.5).toFixed(2)} | ${quantile(edit, 0.95).toFixed(2)} |`);
      } finally {
        await engine.close();
      }
    }
  return [
    `Edit round trip on a 64x64 image, ${trained ? path.basename(file) : 'the demo ViT architecture with random weights'} (width ${D}, ${bb.stream.length} blocks, 64 patches), SAE 2048 latents, ${os.cpus().length} cores; target: edit < 100 ms`,
    '',
    '| SAE layer (block) | head | prepare ms (median) | edit ms (median) | edit ms (p95) |',
    '| --- | --- | --- | --- | --- |',
    ...rows,
  ];
}
