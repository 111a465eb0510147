import { defineCommand, UserError } from '../command.js';
import { readMetadata, readProgress, saevFamily, ShardDataset, type ShardMetadata } from '../../shards/format.js';
import { type SaevRefusal, saevLayerNote, saevRefusals } from '../../shards/saev.js';
import { progress } from '../../util/progress.js';

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Everything `shards info` reports; also the --json output. */
interface Info {
  dir: string;
  valid: boolean;
  error?: string;
  /** Set when the directory is a recording that has not finished (progress.json, no metadata.json). */
  unfinished?: { n_examples_written: number; complete_shards: number };
  metadata?: ShardMetadata;
  n_shards?: number;
  examples_per_shard?: number;
  tokens_per_example?: number;
  tokens?: { per_layer: number; all_layers: number; patches_per_layer: number };
  labels?: boolean;
  bytes?: { files: number; data: number };
  /** saev's loading rules this directory fails, each named (empty: saev loads it as is). */
  saev: { loadable: boolean; refusals: SaevRefusal[]; layers?: string };
  /** With --verify: every stored value was read and is finite. */
  values_verified?: boolean;
}

/** Floats read at a time by --verify, so memory stays bounded on any dataset. */
const VERIFY_FLOATS = 1 << 22;

async function inspect(dir: string, verify: boolean, showProgress: boolean): Promise<Info> {
  const refusals = await saevRefusals(dir);
  const saev = { loadable: refusals.length === 0, refusals };
  let ds: ShardDataset;
  try {
    ds = await ShardDataset.open(dir);
  } catch (e) {
    const info: Info = { dir, valid: false, error: errorMessage(e), saev };
    const progress = await readProgress(dir).catch(() => null);
    if (progress) {
      const written = progress.shards.reduce((a, s) => a + s.n_examples, 0);
      info.unfinished = { n_examples_written: written, complete_shards: progress.shards.length };
    }
    info.metadata = await readMetadata(dir).catch(() => undefined);
    return info;
  }
  try {
    const md = ds.metadata;
    if (verify) {
      const chunk = Math.max(1, Math.floor(VERIFY_FLOATS / ds.exampleFloats));
      const bar = progress('verify values', ds.nExamples, { enabled: showProgress, unit: 'examples' });
      try {
        for (let start = 0; start < ds.nExamples; start += chunk) {
          await ds.readExamples(start, Math.min(chunk, ds.nExamples - start));
          bar.update(Math.min(ds.nExamples, start + chunk));
        }
      } catch (e) {
        return { dir, valid: false, error: errorMessage(e), metadata: md, saev };
      } finally {
        bar.stop();
      }
    }
    const exampleBytes = ds.exampleFloats * 4;
    return {
      dir,
      valid: true,
      metadata: md,
      n_shards: ds.shards.length,
      examples_per_shard: ds.examplesPerShard,
      tokens_per_example: ds.tokensPerExample,
      tokens: {
        per_layer: ds.nExamples * ds.tokensPerExample,
        all_layers: ds.nExamples * ds.tokensPerExample * ds.nLayers,
        patches_per_layer: ds.nExamples * md.content_tokens_per_example,
      },
      labels: ds.hasLabels,
      bytes: { files: ds.shards.reduce((a, s) => a + s.bytes, 0) + (ds.labelsBytes ?? 0), data: ds.nExamples * exampleBytes + (ds.labelsBytes ?? 0) },
      saev: { ...saev, layers: saevLayerNote(md.layers) },
      ...(verify ? { values_verified: true } : {}),
    };
  } finally {
    await ds.close();
  }
}

function render(info: Info): string {
  const lines = [`shards: ${info.dir}`];
  const md = info.metadata;
  if (md) {
    const family = saevFamily(md) === md.family ? md.family : `${md.family} (saev family ${saevFamily(md)})`;
    lines.push(`  model:      ${family} ${md.ckpt}, layers [${md.layers.join(', ')}], d_model ${md.d_model}`);
    lines.push(`  dataset:    ${md.dataset}${md.pixel_agg === null ? '' : ` (pixel_agg ${md.pixel_agg})`}`);
    lines.push(`  examples:   ${md.n_examples}, ${md.content_tokens_per_example} patch tokens${md.cls_token ? ' + CLS' : ''} each`);
  }
  if (info.valid && info.tokens && info.bytes) {
    lines.push(`  tokens:     ${info.tokens.per_layer} per layer (${info.tokens.patches_per_layer} patches), ${info.tokens.all_layers} over all layers`);
    lines.push(`  shards:     ${info.n_shards} × up to ${info.examples_per_shard} examples (max_tokens_per_shard ${md?.max_tokens_per_shard})`);
    lines.push(`  labels:     ${info.labels ? 'labels.bin (uint8 patch labels)' : 'none'}`);
    lines.push(`  size:       ${formatBytes(info.bytes.files)} in files, ${formatBytes(info.bytes.data)} of data (the rest is last-shard padding)`);
    lines.push(`  validation: ok${info.values_verified ? ', every value finite (--verify)' : ' (sizes and names; --verify reads every value)'}`);
  } else {
    if (info.unfinished) lines.push(`  unfinished: ${info.unfinished.n_examples_written} examples in ${info.unfinished.complete_shards} complete shards; resume the recording or delete the directory`);
    lines.push(`  validation: FAILED: ${info.error}`);
  }
  if (info.saev.loadable) lines.push(`  saev:       loadable as is${info.saev.layers ? `; ${info.saev.layers}` : ''}`);
  else lines.push(`  saev:       saev would refuse it:`, ...info.saev.refusals.map((r) => `    - ${r.rule}: ${r.message}`));
  return lines.join('\n');
}

export const shardsInfoCommand = defineCommand({
  name: 'shards info',
  positionals: true,
  summary: 'describe and validate a shard directory (saev protocol 2.1)',
  usage: `
vitsae shards info DIR [--verify] [--json]

Prints the metadata, token counts and sizes of the activation shards in DIR, and checks every file against
metadata.json and shards.json (sizes, names, labels). --verify also reads every stored value (streamed, in
bounded memory) and fails on the first NaN or Inf, naming its file, example, layer, token and dim. Exits with
status 1 if the directory is invalid. Also says whether saev would load the directory as is, and if not, each
of saev's rules it fails (its folder rule .../saev/shards/<name>, its metadata.json fields, shard sizes).

Example: vitsae shards info runs/shards/synthetic --json`,
  spec: {
    verify: { kind: 'boolean', default: false, doc: 'read every stored value and check that it is finite' },
    progress: { kind: 'boolean', default: true, doc: 'show a progress bar on stderr while verifying' },
    json: { kind: 'boolean', default: false, doc: 'print a JSON object instead of text' },
  },
  async run(config, positionals) {
    if (positionals.length !== 1) throw new UserError(`expected one shard directory, got ${positionals.length} arguments; usage: vitsae shards info DIR [--verify] [--json]`);
    const info = await inspect(positionals[0], config.verify, config.progress);
    process.stdout.write((config.json ? JSON.stringify(info, null, 2) : render(info)) + '\n');
    if (!info.valid) process.exitCode = 1;
  },
});
