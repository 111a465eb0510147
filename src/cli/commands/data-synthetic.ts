import { defineCommand } from '../command.js';
import { SYNTHETIC_DEFAULTS, writeSyntheticShards } from '../../data/synthetic.js';

export const dataSyntheticCommand = defineCommand({
  name: 'data synthetic',
  summary: 'write synthetic activation shards with known ground-truth atoms',
  usage: `
vitsae data synthetic --out DIR [--n-examples N] [--d D] [--n-atoms A] ...

Writes a shard directory (saev protocol 2.1) whose patch tokens are sparse non-negative combinations of random
unit atoms plus a constant offset and Gaussian noise, and saves the atoms to DIR/atoms.f32 (float32 [n_atoms, d]).
An SAE trained on it should recover the atoms. The same options always produce the same bytes.

Example: vitsae data synthetic --out runs/shards/synthetic --n-examples 2000 --d 64 --n-atoms 256`,
  spec: {
    out: { kind: 'string', required: true, default: '', doc: 'output directory (created; must not already hold shards)' },
    nExamples: { kind: 'number', int: true, min: 1, default: 1000, doc: 'examples (images) to generate' },
    tokensPerExample: { kind: 'number', int: true, min: 1, default: 64, doc: 'patch tokens per example' },
    d: { kind: 'number', int: true, min: 1, default: 64, doc: 'activation dimension' },
    nAtoms: { kind: 'number', int: true, min: 1, default: 256, doc: 'ground-truth atoms (unit vectors)' },
    atomsPerToken: { kind: 'number', int: true, min: 1, default: 4, doc: 'active atoms per patch token' },
    noise: { kind: 'number', min: 0, default: 0.01, doc: 'standard deviation of per-coordinate Gaussian noise' },
    seed: { kind: 'number', int: true, min: 0, default: 0, doc: 'random seed' },
    clsToken: { kind: 'boolean', default: true, doc: "add a CLS token (the mean of the example's patches)" },
    maxTokensPerShard: { kind: 'number', int: true, min: 1, default: SYNTHETIC_DEFAULTS.maxTokensPerShard, doc: 'tokens per shard file, over all layers (saev rule)' },
  },
  async run(config) {
    const { metadata } = await writeSyntheticShards(config.out, config);
    process.stdout.write(
      `wrote ${metadata.n_examples} examples × ${metadata.content_tokens_per_example + (metadata.cls_token ? 1 : 0)} tokens × d=${metadata.d_model} to ${config.out} (atoms in ${config.out}/atoms.f32)\n`,
    );
  },
});
