import { defineCommand, UsageError } from '../command.js';
import type { ConfigSpec } from '../../util/config.js';
import { openSae } from '../../interop/index.js';
import { evaluateSae } from '../../sae/evaluate.js';
import { selectionSpec } from './train.js';

const spec = {
  sae: { kind: 'string', required: true, default: '', doc: 'SAE: a vitsae checkpoint directory, a saev checkpoint file, or a SAELens directory' },
  shards: { kind: 'string', default: '', doc: 'activation shard directory; default: the shards the SAE was trained on' },
  ...selectionSpec,
  batch: { kind: 'number', int: true, min: 1, default: 4096, doc: 'tokens per batch' },
  maxTokens: { kind: 'number', int: true, min: 1, default: 10_000_000, doc: 'evaluate at most this many tokens; a latent that fires on none of them is dead' },
  denseThreshold: { kind: 'number', min: 0, max: 1, default: 0.1, doc: 'a latent is dense when it fires on more than this fraction of tokens' },
  progress: { kind: 'boolean', default: true, doc: 'show a progress bar on stderr' },
  json: { kind: 'boolean', default: false, doc: 'print one JSON object on stdout' },
} as const satisfies ConfigSpec;

export const evalCommand = defineCommand({
  name: 'eval',
  summary: 'reconstruction and sparsity metrics of an SAE on activation shards (nmse, explained variance, l0, dead, dense)',
  usage: `
  vitsae eval --sae runs/sae --shards runs/acts --json`,
  spec,
  async run(c, _pos, given) {
    const sae = await openSae(c.sae);
    const data = sae.config.data;
    const shards = c.shards || data?.shards;
    if (!shards) throw new UsageError('--shards DIR is required (the checkpoint does not name its training shards)');
    const selection = {
      layer: given.has('layer') || !data ? c.layer : data.layer,
      tokens: given.has('select') || !data ? c.select : (data.tokens as 'patches' | 'cls' | 'all'),
    };
    const m = await evaluateSae(sae, shards, { selection, batch: c.batch, maxTokens: c.maxTokens, denseThreshold: c.denseThreshold, showProgress: c.progress });
    if (c.json) process.stdout.write(JSON.stringify(m) + '\n');
    else {
      for (const [k, v] of Object.entries(m)) process.stdout.write(`${k.padEnd(20)} ${typeof v === 'number' && !Number.isInteger(v) ? v.toPrecision(5) : v}\n`);
    }
  },
});
