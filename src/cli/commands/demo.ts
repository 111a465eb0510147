import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { defineCommand } from '../command.js';
import { ConfigSpec, defaultsOf } from '../config.js';
import { writeSyntheticShards } from '../../data/synthetic.js';
import { saeSpec, trainSpec } from '../../sae/config.js';
import { train } from '../../sae/train.js';
import { Sae } from '../../sae/model.js';
import { evaluateSae } from '../../sae/evaluate.js';
import { atomRecovery } from '../../analysis/atoms.js';
import { writeFileAtomic } from '../../util/fs.js';

const spec = {
  out: { kind: 'string', default: 'runs', doc: 'directory for the demo runs' },
  tokens: { kind: 'number', int: true, min: 1, default: 3_000_000, doc: 'training tokens' },
  serve: { kind: 'boolean', default: true, doc: 'start the browser app at the end (when it exists); --no-serve stops before' },
  json: { kind: 'boolean', default: false, doc: 'print the summary as JSON' },
} as const satisfies ConfigSpec;

export const demoCommand = defineCommand({
  name: 'demo',
  summary: 'end to end on the embedded default: make data with known features, train an SAE, check it finds them',
  usage: `
Makes synthetic activation shards whose tokens are sparse sums of known unit "atoms" (the ground truth), trains
a TopK SAE on them, evaluates it, and reports how many atoms a decoder row recovers (cosine > 0.9).
Writes OUT/synthetic/{acts,sae} and OUT/synthetic/summary.json.`,
  spec,
  async run(c) {
    const run = path.join(c.out, 'synthetic');
    const acts = path.join(run, 'acts');
    const saeDir = path.join(run, 'sae');
    await fsp.rm(run, { recursive: true, force: true });
    const d = 64;
    process.stderr.write(`1/3 writing synthetic shards to ${acts}\n`);
    const truth = await writeSyntheticShards(acts, { nExamples: 4000, tokensPerExample: 64, d, nAtoms: 256, atomsPerToken: 4, noise: 0.02, seed: 0, clsToken: true });
    process.stderr.write(`2/3 training a TopK SAE into ${saeDir}\n`);
    const sae = { ...defaultsOf(saeSpec), activation: 'topk' as const, k: 4, expansion: 8 };
    const t = { ...defaultsOf(trainSpec), batch: 1024, tokens: c.tokens, lr: 2e-3, lrWarmup: 100, deadWindow: 200_000 };
    const [res] = await train({ shards: acts, out: saeDir, selection: { layer: -1, tokens: 'patches' }, members: [{ name: '', sae, train: t }] });
    process.stderr.write('3/3 evaluating\n');
    const model = await Sae.load(saeDir);
    const metrics = await evaluateSae(model, acts, { selection: { layer: -1, tokens: 'patches' }, batch: 4096, maxTokens: 1_000_000, denseThreshold: 0.1, showProgress: false });
    const summary = {
      run,
      shards: acts,
      sae: saeDir,
      atoms: truth.atoms_AD.length / d,
      atom_recovery: atomRecovery(model.core.getTensor('W_dec'), truth.atoms_AD, d),
      train_tokens_per_s: res.final?.tokens_per_s,
      ...metrics,
    };
    await writeFileAtomic(path.join(run, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    if (c.json) process.stdout.write(JSON.stringify(summary) + '\n');
    else {
      process.stdout.write(`
Demo run: ${run}
  atoms recovered (a decoder row with cosine > 0.9): ${(summary.atom_recovery * 100).toFixed(1)}% of ${summary.atoms}
  nmse ${metrics.nmse.toFixed(4)}   explained variance ${metrics.explained_variance.toFixed(4)}   l0 ${metrics.l0.toFixed(1)}   dead ${(metrics.dead_fraction * 100).toFixed(1)}%
Next: vitsae eval --sae ${saeDir} --json
`);
    }
  },
});
