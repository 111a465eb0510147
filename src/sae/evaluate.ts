/**
 * `vitsae eval`: reconstruction and sparsity metrics of a checkpoint on activation shards, in one in-order pass
 * over at most `maxTokens` tokens (the dead-latent window: a latent is dead when it fires on none of them).
 */
import { ShardDataset, OrderedTokenLoader, type TokenSelection } from '../shards/index.js';
import { progress } from '../util/progress.js';
import { UserError } from '../util/errors.js';
import type { Sae } from './model.js';
import { type SaeMetrics, summarize } from './metrics.js';

export interface EvalOptions {
  selection: TokenSelection;
  batch: number;
  maxTokens: number;
  denseThreshold: number;
  showProgress?: boolean;
}

export async function evaluateSae(sae: Sae, shards: string, opts: EvalOptions): Promise<SaeMetrics> {
  const ds = await ShardDataset.open(shards);
  try {
    if (ds.d !== sae.dModel) throw new UserError(`${shards} has d_model ${ds.d} but the SAE expects ${sae.dModel}`);
    const loader = new OrderedTokenLoader(ds, opts.selection, opts.batch);
    const total = Math.min(loader.nTokens, opts.maxTokens);
    const bar = progress('eval', total, { enabled: opts.showProgress !== false, unit: 'tokens' });
    sae.core.takeMetrics(); // start from empty sums
    let seen = 0;
    for await (const b of loader.batches()) {
      const rows = Math.min(b.acts_BD.length / ds.d, total - seen);
      await sae.encode(rows * ds.d === b.acts_BD.length ? b.acts_BD : b.acts_BD.subarray(0, rows * ds.d));
      seen += rows;
      bar.update(seen);
      if (seen >= total) break;
    }
    bar.stop();
    return summarize(sae.core.takeMetrics(), { inputScale: sae.config.input_scale, denseThreshold: opts.denseThreshold });
  } finally {
    await ds.close();
  }
}
