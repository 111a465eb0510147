/**
 * The demo: the whole pipeline on the embedded default. A concept world (images with known concepts) is generated,
 * and for each shipped demo model (models/*.onnx) a run directory is built: record one layer's patch activations,
 * train a BatchTopK SAE, evaluate it, compute the exemplars that the browser shows, and fit the task heads that its edit
 * demos run. On the concept-world models the SAE is then tested on a second world with a seed that neither the
 * models, the SAE nor the heads saw: its latents against the ground-truth concepts, and causal edits against
 * random baselines. Each step is the library call its CLI command wraps.
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeConceptWorld, CONCEPTS_FILE, readConceptWorldInfo } from './data/concept-world.js';
import { record } from './backbone/record.js';
import { openBackbone, selectLayers } from './backbone/backbone.js';
import type { Device } from './backbone/device.js';
import type { Task } from './edit/kinds.js';
import { headTrainSpec, saveHead, trainHead } from './edit/head.js';
import { readModelCard } from './data/preprocess.js';
import { defaultsOf } from './util/config.js';
import { saeSpec, trainSpec } from './sae/config.js';
import { train } from './sae/train.js';
import { Sae } from './sae/model.js';
import { evaluateSae } from './sae/evaluate.js';
import type { SaeMetrics } from './sae/metrics.js';
import { CONCEPT_REPORT_FILE, type ConceptReport, conceptWorldLabels, evaluateConcepts, writeConceptReport } from './analysis/concepts.js';
import { computeVisuals } from './analysis/make-visuals.js';
import { compareRuns, compareSpec } from './analysis/compare/compare.js';
import { writeRun } from './analysis/run.js';
import { EditEngine } from './edit/engine.js';
import { type EditEvalReport, evaluateEdits } from './edit/evaluate.js';
import { writeFileAtomic } from './util/fs.js';
import { UserError } from './util/errors.js';
import { FASHION_MNIST_ENV, fashionMnistPath } from './data/fashion-mnist.js';

export const MODELS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'models');

/**
 * The shipped models and the data each is recorded on ('world' = the generated concept world). The positive
 * control comes first: its patches carry every concept at the layer the SAE reads, so it shows what the method
 * finds where the ground truth says it should (the browser's edit demos open on the first run).
 */
export const DEMO_MODELS = [
  { stem: 'concept-world-control', data: 'world' },
  { stem: 'concept-world-supervised', data: 'world' },
  { stem: 'concept-world-simclr', data: 'world' },
  { stem: 'fashion-mnist-supervised', data: 'fashion-mnist' },
] as const;

/**
 * World seeds, offset from the demo's seed: the demo models were trained on the world with seed 0, the SAEs and
 * heads see the first world and every test number is measured on the second.
 */
export const worldSeeds = (seed: number) => ({ train: seed + 1, test: seed + 2 });

export interface DemoOptions {
  out: string;
  /** Concept-world images to generate and record. */
  worldSize: number;
  /** Images of the test world: concept evaluation and edit tests. */
  testSize: number;
  /** SAE training tokens per model. */
  tokens: number;
  /** Recorded layer (block index, negative from the end). */
  layer: string;
  /** Only these model stems (default all). */
  only?: string[];
  seed: number;
  /** Where the demo models are (default: the shipped models/). */
  modelsDir?: string;
  /** Execution provider for recording and edits (default cpu). */
  device?: Device;
  /** Fashion-MNIST's test images (IDX, labels beside), for the Fashion-MNIST model (default: fashionMnistPath()). */
  fashionMnist?: string;
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
  /** On the test world (concept-world models). */
  concepts: ConceptReport | null;
  edits: { segment: EditEvalReport; classify: EditEvalReport } | null;
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
  const fashion = fashionMnistPath(opts.fashionMnist);
  if (models.some((m) => m.data === 'fashion-mnist') && !existsSync(fashion)) {
    throw new UserError(
      `${fashion} is missing: the fashion-mnist-supervised demo model records Fashion-MNIST's test images (t10k-images-idx3-ubyte.gz, with t10k-labels-idx1-ubyte.gz beside it). ` +
        `Install them (Debian: apt install dataset-fashion-mnist) or point --fashion-mnist or ${FASHION_MNIST_ENV} at the file, or leave that model out with --only ${DEMO_MODELS.filter(
          (m) => m.data === 'world',
        )
          .map((m) => m.stem)
          .join(',')}`,
    );
  }
  const world = path.join(opts.out, 'world');
  const testWorld = path.join(opts.out, 'test-world');
  const seeds = worldSeeds(opts.seed);
  if (models.some((m) => m.data === 'world')) {
    for (const [dir, n, seed] of [
      [world, opts.worldSize, seeds.train],
      [testWorld, opts.testSize, seeds.test],
    ] as const) {
      const info = existsSync(path.join(dir, CONCEPTS_FILE)) ? await readConceptWorldInfo(dir) : null;
      if (info?.n === n && info.seed === seed) continue;
      log(`generating ${n} concept-world images (seed ${seed}) in ${dir}`);
      await fsp.rm(dir, { recursive: true, force: true });
      await writeConceptWorld(dir, { n, seed, progress: opts.showProgress });
    }
  }
  const runs: DemoRun[] = [];
  for (const m of models) {
    const dir = path.join(opts.out, m.stem);
    const model = path.join(modelsDir, `${m.stem}.onnx`);
    const data = m.data === 'world' ? world : fashion;
    const acts = path.join(dir, 'acts');
    const saeDir = path.join(dir, 'sae');
    const visuals = path.join(dir, 'visuals');
    await fsp.rm(dir, { recursive: true, force: true });
    // The SAE's layer and, in the same pass, the last block: the task heads of the edit demos read it.
    const bb = await openBackbone(model, opts.device);
    const [saeTensor, lastTensor] = selectLayers(bb, [opts.layer, '-1']).map((l) => l.name);
    const tensors = saeTensor === lastTensor ? [saeTensor] : [saeTensor, lastTensor];
    log(`${m.stem}: recording ${tensors.join(' and ')} of ${model} on ${data}`);
    const recorded = await record({ model, layers: tensors, data, out: acts, device: opts.device, progress: opts.showProgress, log });
    // The SAE's layer as metadata.json lists it (its block number), so its config names it unambiguously.
    const layer = recorded.metadata.layers[0];
    log(`${m.stem}: training a BatchTopK SAE`);
    // BatchTopK: of the variants on the positive control, its single latents (with fitted thresholds) came closest
    // to the probe at the lowest reconstruction error (README, "SAE variants against the ground truth").
    const sae = { ...defaultsOf(saeSpec), activation: 'batchtopk' as const, k: 16, expansion: 8 };
    const t = { ...defaultsOf(trainSpec), batch: 1024, tokens: opts.tokens, lr: 1e-3, seed: opts.seed };
    await train({ shards: acts, out: saeDir, selection: { layer, tokens: 'patches' }, members: [{ name: '', sae, train: t }], showProgress: opts.showProgress });
    const model_ = await Sae.load(saeDir);
    const metrics = await evaluateSae(model_, acts, { selection: { layer, tokens: 'patches' }, batch: 4096, maxTokens: 10_000_000, denseThreshold: 0.1, showProgress: opts.showProgress });
    await writeFileAtomic(path.join(dir, 'eval.json'), JSON.stringify(metrics, null, 2) + '\n');
    log(`${m.stem}: exemplars for every feature`);
    await computeVisuals({ sae: saeDir, shards: acts, out: visuals, model, showProgress: opts.showProgress });
    const headDir = (task: Task) => path.join(dir, `head-${task}`);
    const heads: string[] = [];
    for (const task of (m.data === 'world' ? ['classify', 'segment'] : ['classify']) as Task[]) {
      log(`${m.stem}: a ${task} head on the last block, for the edit demos`);
      const out = headDir(task);
      // IDX labels are bare numbers; the model card names the classes its own head was trained on (the same ones).
      const classes = task === 'classify' && m.data !== 'world' ? cardClassNames(model) : undefined;
      await saveHead(out, await trainHead({ task, model, shards: acts, features: lastTensor, classes, train: { ...defaultsOf(headTrainSpec), seed: opts.seed }, progress: opts.showProgress }));
      heads.push(out);
    }
    let concepts: ConceptReport | null = null;
    let edits: DemoRun['edits'] = null;
    const conceptsFile = path.join(dir, CONCEPT_REPORT_FILE);
    if (m.data === 'world') {
      log(`${m.stem}: checking latents against the ground-truth concepts of the test world`);
      const testActs = path.join(dir, 'test-acts');
      await record({ model, layers: [saeTensor], data: testWorld, out: testActs, device: opts.device, progress: opts.showProgress, log });
      concepts = await evaluateConcepts(model_, testActs, await conceptWorldLabels(testWorld, testActs), {
        selection: { layer },
        probeExamples: 1000,
        showProgress: opts.showProgress,
        seed: opts.seed,
      });
      await writeConceptReport(conceptsFile, concepts);
      await fsp.rm(testActs, { recursive: true, force: true });
      log(`${m.stem}: causal edits on the test world, against random baselines`);
      const test = async (head: string, data: string, concepts?: string) => {
        const engine = await EditEngine.open({ model, sae: saeDir, head, device: opts.device });
        try {
          return await evaluateEdits(engine, { data, concepts, images: opts.testSize, seed: opts.seed, progress: opts.showProgress });
        } finally {
          await engine.close();
        }
      };
      edits = { segment: await test(headDir('segment'), testWorld), classify: await test(headDir('classify'), path.join(testWorld, 'labels.csv'), testWorld) };
      await writeFileAtomic(path.join(dir, 'edits.json'), JSON.stringify(edits, null, 2) + '\n');
    }
    await writeRun(dir, { model, shards: acts, sae: saeDir, visuals, heads, ...(concepts ? { concepts: conceptsFile } : {}) });
    runs.push({ model: m.stem, dir, metrics, concepts, edits });
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

/** Mean and minimum of a list (0 for none). */
const meanMin = (xs: number[]) => (xs.length ? { mean: xs.reduce((a, b) => a + b, 0) / xs.length, min: Math.min(...xs) } : { mean: 0, min: 0 });

/**
 * One model's results as markdown: the SAE, then (concept-world models, on the test world) what a linear probe
 * decodes and what the SAE's best single latents recover, by concept family, and the edit tests against their
 * random baselines.
 */
export function demoRunMarkdown(r: DemoRun): string {
  const f = (v: number | null | undefined) => (v === null || v === undefined ? '-' : v.toFixed(3));
  const m = r.metrics;
  const lines = [`### ${r.model}`, '', `SAE (${r.dir}/sae): nmse ${f(m.nmse)}, L0 ${m.l0.toFixed(1)}, dead ${(100 * m.dead_fraction).toFixed(1)}%`];
  const c = r.concepts;
  if (c) {
    const families = [...new Set(c.concepts.map((s) => s.concept.split(':')[0]))];
    lines.push(
      '',
      `Concepts on the test world: a linear probe on the layer decodes the family at F1 (mean, lowest); the best single SAE latent reaches F1; the ratio is latent / probe. Each detector (a latent and its threshold, the probe, a random direction) is fit on ${c.n_fit_patches} patches and scored on ${c.n_scored_patches} patches of other images.`,
      '',
      '| family | probe F1 | lowest | best latent F1 | latent / probe |',
      '| --- | --- | --- | --- | --- |',
      ...families.map((fam) => {
        const scores = c.concepts.filter((s) => s.concept.startsWith(fam + ':'));
        const probe = meanMin(scores.map((s) => s.probe_f1));
        const latent = meanMin(scores.map((s) => s.f1));
        const ratio = meanMin(scores.map((s) => (s.probe_f1 > 0 ? s.f1 / s.probe_f1 : 0)));
        return `| ${fam} | ${f(probe.mean)} | ${f(probe.min)} | ${f(latent.mean)} | ${f(ratio.mean)} |`;
      }),
      '',
      `Recovery ratio ${f(c.recovery_ratio)} over the ${c.n_decodable} concepts the probe decodes at F1 >= 0.8 (a latent's firing at all as the rule, over all ${c.n_patches} patches: ${f(c.recovery_ratio_fires)}; OR of 3 latents' firing: ${f(c.recovery_ratio_group3)}); ` +
        `mean best latent F1 ${f(c.mean_best_f1)} against ${f(c.mean_random_f1)} for the best random direction (${f(c.mean_random_f1 > 0 ? c.mean_best_f1 / c.mean_random_f1 : null)}x) and ${f(c.mean_neuron_f1)} for the best raw neuron.`,
    );
  }
  const e = r.edits;
  if (e) {
    const row = (name: string, x: EditEvalReport) =>
      `| ${name} | ${f(x.target_change_rate)} | ${f(x.other_change_rate)} | ${f(x.random_latent.target_change_rate)} / ${f(x.random_latent.other_change_rate)} | ${f(x.random_direction.target_change_rate)} / ${f(x.random_direction.other_change_rate)} | ${f(x.random_shared_direction.target_change_rate)} / ${f(x.random_shared_direction.other_change_rate)} |`;
    lines.push(
      '',
      `Edits on the test world (${e.segment.n_test_images} images; latents set to ${e.segment.factor}x their maximum; baselines move each edited patch as far as the latent edit does, along a random latent's decoder row, a random direction drawn per patch, or one random direction for all): share of predictions that change.`,
      '',
      '| edit | target | other | random latent: target / other | random direction per patch: target / other | one random direction: target / other |',
      '| --- | --- | --- | --- | --- | --- |',
      row("segmentation: a shape's latent on that shape's patches (per patch)", e.segment),
      row("classification: the latent of a class's images on every patch (per image)", e.classify),
      '',
      `Classification by concept: suppressing a concept's latent on its patches gives the class the world's rule gives without that concept in ${f(e.classify.rule_consistent_rate)} of ${e.classify.rule_checked} (image, concept) checks; the same edit size along a random latent in ${f(e.classify.rule_random_latent_consistent_rate)}. ` +
        `Swapping a concept (on the salient object's patches, its colour's or texture's latent set to 0 and another colour's or texture's to its maximum) gives the class of the object so changed in ${f(e.classify.swap_consistent_rate)} of ${e.classify.swap_checked} checks; an edit as large along a random latent in ${f(e.classify.swap_random_latent_consistent_rate)}.`,
    );
  }
  return lines.join('\n') + '\n';
}
