/**
 * The demo: the whole pipeline on the embedded default. A concept world (images with known concepts) is generated,
 * and for each shipped demo model (models/*.onnx) a run directory is built: record one layer's patch activations,
 * train a TopK SAE, evaluate it, check its latents against the ground-truth concepts (concept-world models),
 * compute the exemplars that the browser shows, and fit the task heads that its edit demos run. Each step is the
 * library call its CLI command wraps.
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeConceptWorld, CONCEPTS_FILE } from './data/concept-world.js';
import { record } from './backbone/record.js';
import { openBackbone, selectLayers } from './backbone/backbone.js';
import { probeTrainSpec, saveProbe, Task, trainProbe } from './edit/probe.js';
import { readModelCard } from './data/preprocess.js';
import { defaultsOf } from './cli/config.js';
import { saeSpec, trainSpec } from './sae/config.js';
import { train } from './sae/train.js';
import { Sae } from './sae/model.js';
import { evaluateSae } from './sae/evaluate.js';
import { SaeMetrics } from './sae/metrics.js';
import { CONCEPT_REPORT_FILE, ConceptReport, conceptWorldLabels, evaluateConcepts, writeConceptReport } from './analysis/concepts.js';
import { computeVisuals } from './analysis/exemplars.js';
import { compareRuns, compareSpec } from './analysis/compare/compare.js';
import { writeRun } from './analysis/run.js';
import { writeFileAtomic } from './util/fs.js';
import { UserError } from './util/errors.js';

export const MODELS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'models');
export const FASHION_MNIST = '/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz';

/** The shipped models and the data each is recorded on ('world' = the generated concept world). */
export const DEMO_MODELS = [
  { stem: 'concept-world-supervised', data: 'world' },
  { stem: 'concept-world-simclr', data: 'world' },
  { stem: 'fashion-mnist-supervised', data: FASHION_MNIST },
] as const;

export interface DemoOptions {
  out: string;
  /** Concept-world images to generate and record. */
  worldSize: number;
  /** SAE training tokens per model. */
  tokens: number;
  /** Recorded layer (block index, negative from the end). */
  layer: string;
  /** Only these model stems (default all). */
  only?: string[];
  seed: number;
  /** Where the demo models are (default: the shipped models/). */
  modelsDir?: string;
  showProgress?: boolean;
  log?: (line: string) => void;
}

/** The two objectives on the same world, compared at the end of the demo (vitsae compare). */
export const COMPARED = ['concept-world-supervised', 'concept-world-simclr'] as const;

export interface DemoResult {
  runs: DemoRun[];
  /** OUT/compare, when both compared models ran. */
  comparison: string | null;
}

export interface DemoRun {
  model: string;
  dir: string;
  metrics: SaeMetrics;
  concepts: ConceptReport | null;
}

export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const t0 = Date.now();
  const out = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const log = (l: string) => out(`[${Math.round((Date.now() - t0) / 1000)} s] ${l}`);
  const modelsDir = opts.modelsDir ?? MODELS_DIR;
  const models = DEMO_MODELS.filter((m) => !opts.only?.length || opts.only.includes(m.stem));
  for (const m of models) {
    const file = path.join(modelsDir, `${m.stem}.onnx`);
    if (!existsSync(file)) throw new UserError(`${file} is missing: the demo models ship with vitsae (models/README.md tells how they were trained)`);
  }
  const world = path.join(opts.out, 'world');
  if (models.some((m) => m.data === 'world') && !existsSync(path.join(world, CONCEPTS_FILE))) {
    log(`generating ${opts.worldSize} concept-world images in ${world}`);
    await fsp.rm(world, { recursive: true, force: true });
    await writeConceptWorld(world, { n: opts.worldSize, seed: opts.seed, progress: opts.showProgress });
  }
  const runs: DemoRun[] = [];
  for (const m of models) {
    const dir = path.join(opts.out, m.stem);
    const model = path.join(modelsDir, `${m.stem}.onnx`);
    const data = m.data === 'world' ? world : m.data;
    const acts = path.join(dir, 'acts');
    const saeDir = path.join(dir, 'sae');
    const visuals = path.join(dir, 'visuals');
    await fsp.rm(dir, { recursive: true, force: true });
    // The SAE's layer and, in the same pass, the last block: the task heads of the edit demos read it.
    const bb = await openBackbone(model);
    const [saeTensor, lastTensor] = selectLayers(bb, [opts.layer, '-1']).map((l) => l.name);
    const tensors = saeTensor === lastTensor ? [saeTensor] : [saeTensor, lastTensor];
    log(`${m.stem}: recording ${tensors.join(' and ')} of ${model} on ${data}`);
    const recorded = await record({ model, layers: tensors, data, out: acts, progress: opts.showProgress, log });
    // The SAE's layer as metadata.json lists it (its block number), so its config names it unambiguously.
    const layer = recorded.metadata.layers[0];
    log(`${m.stem}: training a TopK SAE`);
    const sae = { ...defaultsOf(saeSpec), activation: 'topk' as const, k: 16, expansion: 8 };
    const t = { ...defaultsOf(trainSpec), batch: 1024, tokens: opts.tokens, lr: 1e-3, seed: opts.seed };
    await train({ shards: acts, out: saeDir, selection: { layer, tokens: 'patches' }, members: [{ name: '', sae, train: t }], showProgress: opts.showProgress });
    const model_ = await Sae.load(saeDir);
    const metrics = await evaluateSae(model_, acts, { selection: { layer, tokens: 'patches' }, batch: 4096, maxTokens: 10_000_000, denseThreshold: 0.1, showProgress: opts.showProgress });
    await writeFileAtomic(path.join(dir, 'eval.json'), JSON.stringify(metrics, null, 2) + '\n');
    let concepts: ConceptReport | null = null;
    const conceptsFile = path.join(dir, CONCEPT_REPORT_FILE);
    if (m.data === 'world') {
      log(`${m.stem}: checking latents against the ground-truth concepts`);
      concepts = await evaluateConcepts(model_, acts, await conceptWorldLabels(world, acts), { selection: { layer }, probeExamples: 1000, showProgress: opts.showProgress, seed: opts.seed });
      await writeConceptReport(conceptsFile, concepts);
    }
    log(`${m.stem}: exemplars for every feature`);
    await computeVisuals({ sae: saeDir, shards: acts, out: visuals, model, showProgress: opts.showProgress });
    const probes: string[] = [];
    for (const task of (m.data === 'world' ? ['classify', 'segment'] : ['classify']) as Task[]) {
      log(`${m.stem}: a ${task} head on the last block, for the edit demos`);
      const out = path.join(dir, `probe-${task}`);
      // IDX labels are bare numbers; the model card names the classes its own head was trained on (the same ones).
      const classes = task === 'classify' && m.data !== 'world' ? cardClassNames(model) : undefined;
      await saveProbe(out, await trainProbe({ task, model, shards: acts, features: lastTensor, classes, train: { ...defaultsOf(probeTrainSpec), seed: opts.seed }, progress: opts.showProgress }));
      probes.push(out);
    }
    await writeRun(dir, { model, shards: acts, sae: saeDir, visuals, probes, ...(concepts ? { concepts: conceptsFile } : {}) });
    runs.push({ model: m.stem, dir, metrics, concepts });
  }
  const pair = COMPARED.map((stem) => runs.find((r) => r.model === stem));
  if (!pair[0] || !pair[1]) return { runs, comparison: null };
  const comparison = path.join(opts.out, 'compare');
  log(`comparing the two objectives: ${COMPARED.join(' vs ')}`);
  await fsp.rm(comparison, { recursive: true, force: true });
  await compareRuns({ ...defaultsOf(compareSpec), runs: [pair[0].dir, pair[1].dir], out: comparison, showProgress: opts.showProgress });
  return { runs, comparison };
}

function cardClassNames(model: string): string[] | undefined {
  return (readModelCard(model) as { output_labels?: { class_logits?: string[] } } | null)?.output_labels?.class_logits;
}

