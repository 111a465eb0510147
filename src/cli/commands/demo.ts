import { defineCommand, runCommand } from '../command.js';
import type { ConfigSpec } from '../../util/config.js';
import { deviceSpec } from '../../backbone/device.js';
import { DEMO_MODELS, demoRunMarkdown, runDemo } from '../../demo.js';
import { DEBIAN_FASHION_MNIST, FASHION_MNIST_ENV } from '../../data/fashion-mnist.js';
import { serveCommand } from './serve.js';

const spec = {
  out: { kind: 'string', default: 'runs', doc: 'directory for the concept world and one run directory per demo model' },
  worldSize: { kind: 'number', int: true, min: 10, default: 2000, doc: 'concept-world images to generate and record (SAE training, exemplars, task heads)' },
  testSize: { kind: 'number', int: true, min: 10, default: 1000, doc: 'images of a second concept world, unseen by models, SAEs and heads, that every test number is measured on' },
  tokens: { kind: 'number', int: true, min: 1, default: 1_500_000, doc: 'SAE training tokens per model' },
  layer: { kind: 'string', default: '-2', doc: 'layer to record: block index (negative from the end) or tensor name' },
  only: { kind: 'strings', default: [], doc: `only these models (${DEMO_MODELS.map((m) => m.stem).join(', ')})` },
  seed: { kind: 'number', int: true, min: 0, default: 0, doc: 'seed of the world and the SAE training' },
  fashionMnist: { kind: 'string', default: '', doc: `Fashion-MNIST test images (IDX, labels file beside it) for the Fashion-MNIST model; default $${FASHION_MNIST_ENV}, else ${DEBIAN_FASHION_MNIST}` },
  serve: { kind: 'boolean', default: true, doc: 'start the browser app on the runs at the end; --no-serve stops before' },
  port: { kind: 'number', int: true, min: 0, max: 65535, default: 8770, doc: 'port of the browser app' },
  ...deviceSpec,
  progress: { kind: 'boolean', default: true, doc: 'show progress bars on stderr' },
  json: { kind: 'boolean', default: false, doc: 'print the summary as JSON' },
} as const satisfies ConfigSpec;

export const demoCommand = defineCommand({
  name: 'demo',
  summary: 'the whole pipeline on the shipped demo models and a generated concept world, then the browser',
  usage: `
Generates a concept world (images whose shapes, colours, textures, sizes and backgrounds are known per patch),
and for each shipped demo model (a positive control whose patches are trained to carry every concept at the layer
the SAE reads, a supervised and a self-supervised (SimCLR) ViT on that world, a supervised ViT on Fashion-MNIST's
real photos) records a layer (and the last block, for task heads), trains a BatchTopK SAE, evaluates it, computes every
feature's exemplars and trains linear task heads (classification; on the world also segmentation) for the edit
demos. On a second world with a seed none of them saw, it then tests each concept-world SAE: its latents against
the ground-truth concepts beside a linear probe's ceiling, and causal edits (segmentation, classification by class
and by concept) against random-latent and random-direction edits of the same size. Writes OUT/world,
OUT/test-world and OUT/<model>/ (run.json, acts, sae, visuals, eval.json, concepts.json, edits.json, head-*),
compares the two objectives (vitsae compare: OUT/compare/report.html), prints one table per model and opens the
browser app on the runs and the comparison (unless --no-serve); its edit demos open on the first run.`,
  spec,
  async run(c) {
    const { runs, comparison } = await runDemo({
      out: c.out,
      worldSize: c.worldSize,
      testSize: c.testSize,
      tokens: c.tokens,
      layer: c.layer,
      only: c.only,
      seed: c.seed,
      fashionMnist: c.fashionMnist,
      device: c.device,
      showProgress: c.progress,
    });
    if (c.json) {
      const summary = runs.map((r) => ({
        model: r.model,
        run: r.dir,
        nmse: r.metrics.nmse,
        l0: r.metrics.l0,
        dead_fraction: r.metrics.dead_fraction,
        ...(r.concepts
          ? {
              mean_best_f1: r.concepts.mean_best_f1,
              mean_probe_f1: r.concepts.mean_probe_f1,
              mean_random_f1: r.concepts.mean_random_f1,
              recovery_ratio: r.concepts.recovery_ratio,
              recovery_ratio_group3: r.concepts.recovery_ratio_group3,
            }
          : {}),
        ...(r.edits
          ? {
              segment: {
                target: r.edits.segment.target_change_rate,
                other: r.edits.segment.other_change_rate,
                random_latent: r.edits.segment.random_latent,
                random_direction: r.edits.segment.random_direction,
              },
              rule_consistent_rate: r.edits.classify.rule_consistent_rate,
              rule_random_latent_consistent_rate: r.edits.classify.rule_random_latent_consistent_rate,
              swap_consistent_rate: r.edits.classify.swap_consistent_rate,
              swap_random_latent_consistent_rate: r.edits.classify.swap_random_latent_consistent_rate,
            }
          : {}),
      }));
      process.stdout.write(JSON.stringify(summary) + '\n');
    } else {
      process.stdout.write(
        [
          '',
          ...runs.map(demoRunMarkdown),
          `Runs: ${runs.map((r) => r.dir).join(', ')} (each has run.json; vitsae serve --run DIR browses one)`,
          ...(comparison ? [`Comparison of the two objectives: ${comparison}/report.html (vitsae serve --compare ${comparison})`] : []),
          '',
        ].join('\n'),
      );
    }
    if (c.serve) await runCommand(serveCommand, [...runs.flatMap((r) => ['--run', r.dir]), ...(comparison ? ['--compare', comparison] : []), '--port', String(c.port), '--device', c.device]);
  },
});
