import * as path from 'node:path';
import { defineCommand, UsageError, UserError } from '../command.js';
import type { ConfigSpec } from '../../util/config.js';
import { openSae } from '../../interop/index.js';
import { addConceptReportToRun, conceptWorldLabels, evaluateConcepts } from '../../analysis/concepts.js';
import { readRun } from '../../analysis/run.js';

const spec = {
  run: { kind: 'string', default: '', doc: 'a run directory (run.json): the default SAE and shards; the report goes to RUN/concepts.json, which the browser shows' },
  sae: { kind: 'string', default: '', doc: 'SAE: a vitsae checkpoint directory, a saev checkpoint file, or a SAELens directory' },
  shards: { kind: 'string', default: '', doc: 'activation shards recorded from the labelled images; default: the SAE training shards' },
  concepts: { kind: 'string', required: true, default: '', doc: 'ground truth: a concept-world directory (or its concepts.json) whose images were recorded' },
  layer: { kind: 'number', int: true, default: -1, doc: 'recorded layer (a metadata.json layers value or a negative index); default: the SAE training layer' },
  maxPatches: { kind: 'number', int: true, min: 1, default: 2_000_000, doc: 'patches scanned for the latent F1 scores' },
  probeExamples: { kind: 'number', int: true, min: 2, default: 2000, doc: 'images whose patches fit (80%) and test (20%) the latent thresholds, probes and baselines' },
  seed: { kind: 'number', int: true, default: 0, doc: 'seed of the random-direction baseline' },
  progress: { kind: 'boolean', default: true, doc: 'show a progress bar on stderr' },
  json: { kind: 'boolean', default: false, doc: 'print the report as JSON on stdout' },
} as const satisfies ConfigSpec;

export const evalConceptsCommand = defineCommand({
  name: 'eval concepts',
  summary: 'how well SAE latents match ground-truth patch concepts, against a linear probe and baselines',
  usage: `
For every concept, each fit on 80% of the probe images and scored on the rest: the best latent with its activation
threshold, a logistic-regression probe on the raw activations (the ceiling), the best raw neuron and the best
random direction; over all scanned patches, the latent whose firing matches best and the best OR of up to 3
latents' firing. recovery_ratio = mean over concepts the probe decodes at F1 >= 0.8 of (latent F1 / probe F1). For
every latent, the report also lists its best-matching concepts; with --run DIR it is written to DIR/concepts.json
and recorded in DIR/run.json, so that vitsae serve --run DIR shows each feature's concept.

  vitsae eval concepts --sae runs/sae --concepts runs/world --json
  vitsae eval concepts --run runs/world-run --concepts runs/world`,
  spec,
  async run(c, _pos, given) {
    const run = c.run ? await readRun(c.run) : null;
    if (run && c.sae && path.resolve(c.sae) !== run.sae) throw new UserError(`--sae ${c.sae} is not the SAE of ${run.dir} (${run.sae}); the run records reports of its own SAE only`);
    const saePath = c.sae || run?.sae;
    if (!saePath) throw new UsageError('--sae is required (or --run DIR with a run.json)');
    const sae = await openSae(saePath);
    const shards = c.shards || run?.shards || sae.config.data?.shards;
    if (!shards) throw new UsageError('--shards DIR is required (the SAE does not name its training shards)');
    const layer = given.has('layer') || !sae.config.data ? c.layer : sae.config.data.layer;
    const world = c.concepts.endsWith('.json') ? path.dirname(c.concepts) : c.concepts;
    const labels = await conceptWorldLabels(world, shards);
    const r = await evaluateConcepts(sae, shards, labels, { selection: { layer }, maxPatches: c.maxPatches, probeExamples: c.probeExamples, seed: c.seed, showProgress: c.progress });
    if (run) process.stderr.write(`wrote ${await addConceptReportToRun(run.dir, r)}\n`);
    if (c.json) {
      process.stdout.write(JSON.stringify(r) + '\n');
      return;
    }
    const f = (v: number) => v.toFixed(3);
    const rows = r.concepts.map(
      (s) => `| ${s.concept} | ${s.latent} >= ${f(s.threshold)} | ${f(s.f1)} | ${f(s.fires_f1)} | ${f(s.group_f1)} | ${f(s.probe_f1)} | ${f(s.neuron_f1)} | ${f(s.random_f1)} |`,
    );
    process.stdout.write(
      [
        '| concept | latent | F1 | firing F1 | group-3 F1 | probe F1 | neuron F1 | random F1 |',
        '| --- | --- | --- | --- | --- | --- | --- | --- |',
        ...rows,
        '',
        `mean best F1 ${f(r.mean_best_f1)}, group-3 ${f(r.mean_group_f1)}, probe ${f(r.mean_probe_f1)}, neuron ${f(r.mean_neuron_f1)}, random ${f(r.mean_random_f1)}`,
        `recovery ratio ${f(r.recovery_ratio)} (firing ${f(r.recovery_ratio_fires)}, group-3 ${f(r.recovery_ratio_group3)}) over ${r.n_decodable} concepts the probe decodes at F1 >= 0.8; detectors fit on ${r.n_fit_patches} patches, scored on ${r.n_scored_patches}; firing over ${r.n_patches} patches`,
        '',
      ].join('\n'),
    );
  },
});
