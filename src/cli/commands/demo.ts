import { defineCommand, runCommand } from '../command.js';
import { ConfigSpec } from '../config.js';
import { DEMO_MODELS, runDemo } from '../../demo.js';
import { serveCommand } from './serve.js';

const spec = {
  out: { kind: 'string', default: 'runs', doc: 'directory for the concept world and one run directory per demo model' },
  worldSize: { kind: 'number', int: true, min: 10, default: 2000, doc: 'concept-world images to generate and record' },
  tokens: { kind: 'number', int: true, min: 1, default: 1_500_000, doc: 'SAE training tokens per model' },
  layer: { kind: 'string', default: '-2', doc: 'layer to record: block index (negative from the end) or tensor name' },
  only: { kind: 'strings', default: [], doc: `only these models (${DEMO_MODELS.map((m) => m.stem).join(', ')})` },
  seed: { kind: 'number', int: true, min: 0, default: 0, doc: 'seed of the world and the SAE training' },
  serve: { kind: 'boolean', default: true, doc: 'start the browser app on the runs at the end; --no-serve stops before' },
  port: { kind: 'number', int: true, min: 0, max: 65535, default: 8770, doc: 'port of the browser app' },
  progress: { kind: 'boolean', default: true, doc: 'show progress bars on stderr' },
  json: { kind: 'boolean', default: false, doc: 'print the summary as JSON' },
} as const satisfies ConfigSpec;

export const demoCommand = defineCommand({
  name: 'demo',
  summary: 'the whole pipeline on the shipped demo models and a generated concept world, then the browser',
  usage: `
Generates a concept world (images whose shapes, colours and textures are known per patch), and for each shipped
demo model (a supervised and a self-supervised (SimCLR) ViT on that world, a supervised ViT on Fashion-MNIST's
real photos) records a layer (and the last block, for task heads), trains a TopK SAE, evaluates it, checks its
latents against the ground-truth concepts, computes every feature's exemplars and trains linear task heads
(classification; on the world also segmentation) for the edit demos. Writes OUT/world and OUT/<model>/ (run.json, acts, sae, visuals,
eval.json, concepts.json, probe-*), compares the two objectives (vitsae compare: OUT/compare/report.html), prints
a summary and opens the browser app on the runs and the comparison (unless --no-serve).`,
  spec,
  async run(c) {
    const { runs, comparison } = await runDemo({ out: c.out, worldSize: c.worldSize, tokens: c.tokens, layer: c.layer, only: c.only, seed: c.seed, showProgress: c.progress });
    const summary = runs.map((r) => ({
      model: r.model,
      run: r.dir,
      nmse: r.metrics.nmse,
      l0: r.metrics.l0,
      dead_fraction: r.metrics.dead_fraction,
      ...(r.concepts
        ? { mean_best_f1: r.concepts.mean_best_f1, mean_probe_f1: r.concepts.mean_probe_f1, recovery_ratio: r.concepts.recovery_ratio, recovery_ratio_group3: r.concepts.recovery_ratio_group3 }
        : {}),
    }));
    if (c.json) process.stdout.write(JSON.stringify(summary) + '\n');
    else {
      const f = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(3));
      process.stdout.write(
        [
          '',
          '| model | nmse | l0 | dead | best latent F1 | probe F1 | recovery ratio | ratio, groups of 3 |',
          '| --- | --- | --- | --- | --- | --- | --- | --- |',
          ...summary.map((s) => `| ${s.model} | ${f(s.nmse)} | ${s.l0.toFixed(1)} | ${(100 * s.dead_fraction).toFixed(1)}% | ${f(s.mean_best_f1)} | ${f(s.mean_probe_f1)} | ${f(s.recovery_ratio)} | ${f(s.recovery_ratio_group3)} |`),
          '',
          `Runs: ${runs.map((r) => r.dir).join(', ')} (each has run.json; vitsae serve --run DIR browses one)`,
          ...(comparison ? [`Comparison of the two objectives: ${comparison}/report.html (vitsae serve --compare ${comparison})`] : []),
          '',
        ].join('\n'),
      );
    }
    if (c.serve) await runCommand(serveCommand, [...runs.flatMap((r) => ['--run', r.dir]), ...(comparison ? ['--compare', comparison] : []), '--port', String(c.port)]);
  },
});
