/**
 * Would saev load this directory? saev's rules, read from its source (OSU-NLP-Group/saev, commit 3d73f1f:
 * src/saev/data/shards.py `Metadata`, `Metadata.load`, `ShardInfo.load`/`validate`; src/saev/disk.py
 * `is_shards_dir`; the np.memmap calls of src/saev/data/{indexed,ordered,shuffled}.py), checked on the files as
 * they are on disk, each failure named. test/fixtures/saev/saev_load.py applies the same rules in Python and the
 * tests check that both agree on every rule.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { LABELS_FILE, METADATA_FILE, SAEV_FAMILIES, SAEV_PIXEL_AGGS, SHARDS_FILE, shardFileName } from './format.js';

/** One rule saev's loader would fail on: `rule` is a stable id (the tests compare them), `message` says why and what to do. */
export interface SaevRefusal {
  rule: SaevRule;
  message: string;
}

export type SaevRule =
  | 'path'
  | 'metadata'
  | 'fields'
  | 'family'
  | 'types'
  | 'data'
  | 'pixel_agg'
  | 'dtype'
  | 'protocol'
  | 'examples_per_shard'
  | 'shards_json'
  | 'shard_file'
  | 'shard_size'
  | 'full_shards'
  | 'labels';

/** saev's `Metadata` fields; `dtype` and `protocol` have defaults, `pixel_agg` does too but `Metadata.load` indexes it. */
const REQUIRED = ['family', 'ckpt', 'layers', 'content_tokens_per_example', 'cls_token', 'd_model', 'n_examples', 'max_tokens_per_shard', 'data', 'dataset', 'pixel_agg'];
const OPTIONAL = ['dtype', 'protocol'];
const PROTOCOLS = ['1.0.0', '1.1', '2.1'];

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

async function sizeOf(file: string): Promise<{ size: number; regular: boolean } | null> {
  const st = await fs.stat(file).catch(() => null);
  return st ? { size: st.size, regular: st.isFile() } : null;
}

/**
 * Every rule saev's loaders would refuse `dir` for, in the order saev checks them; empty when saev loads it as is.
 * Later rules that depend on an earlier one (shard sizes on a readable metadata.json) are skipped when it fails.
 */
export async function saevRefusals(dir: string): Promise<SaevRefusal[]> {
  const out: SaevRefusal[] = [];
  const refuse = (rule: SaevRule, message: string) => out.push({ rule, message });
  const parts = path.resolve(dir).split(path.sep);
  // disk.is_shards_dir: path.parts[-3:-1] == ("saev", "shards").
  if (parts.length < 3 || parts[parts.length - 3] !== 'saev' || parts[parts.length - 2] !== 'shards')
    refuse('path', `the directory is not at .../saev/shards/<name> (saev's disk.is_shards_dir); move or symlink it to $SAEV_SCRATCH/saev/shards/${parts[parts.length - 1]}`);

  let md: Record<string, unknown>;
  try {
    md = JSON.parse(await fs.readFile(path.join(dir, METADATA_FILE), 'utf8'));
    if (typeof md !== 'object' || md === null || Array.isArray(md)) throw new Error('not a JSON object');
  } catch (e) {
    refuse('metadata', `${METADATA_FILE} is missing or not a JSON object (${(e as Error).message})`);
    return out;
  }
  // Metadata(**dct): an unknown or missing keyword is a TypeError.
  const unknown = Object.keys(md).filter((k) => !REQUIRED.includes(k) && !OPTIONAL.includes(k));
  const missing = REQUIRED.filter((k) => !(k in md));
  if (unknown.length || missing.length)
    refuse(
      'fields',
      `${METADATA_FILE} ${[unknown.length ? `has fields saev's Metadata does not take (${unknown.join(', ')})` : '', missing.length ? `lacks ${missing.join(', ')}` : ''].filter(Boolean).join(' and ')}`,
    );
  // The beartype-checked field types.
  if (!(SAEV_FAMILIES as readonly unknown[]).includes(md.family)) refuse('family', `family ${JSON.stringify(md.family)} is not one of saev's families (${SAEV_FAMILIES.join(', ')})`);
  const badTypes = [
    typeof md.ckpt !== 'string' && 'ckpt (a string)',
    !(Array.isArray(md.layers) && md.layers.every(isInt)) && 'layers (a list of ints)',
    ...['content_tokens_per_example', 'd_model', 'n_examples', 'max_tokens_per_shard'].map((k) => !isInt(md[k]) && `${k} (an int)`),
    typeof md.cls_token !== 'boolean' && 'cls_token (a bool)',
    typeof md.dataset !== 'string' && 'dataset (a path string)',
  ].filter(Boolean);
  if (badTypes.length) refuse('types', `wrong types: ${badTypes.join(', ')}`);
  if (typeof md.data !== 'string')
    refuse('data', `data is ${md.data === null ? 'null' : Array.isArray(md.data) ? 'a list' : typeof md.data}, saev requires a string (the base64 of its pickled dataset config)`);
  if (!(SAEV_PIXEL_AGGS as readonly unknown[]).includes(md.pixel_agg))
    refuse('pixel_agg', `pixel_agg ${JSON.stringify(md.pixel_agg)} is not one of ${SAEV_PIXEL_AGGS.map((v) => `"${v}"`).join(', ')} (saev's Metadata.load calls PixelAgg(...) on it)`);
  if ('dtype' in md && md.dtype !== 'float32') refuse('dtype', `dtype ${JSON.stringify(md.dtype)} is not "float32"`);
  if ('protocol' in md && !PROTOCOLS.includes(md.protocol as string)) refuse('protocol', `protocol ${JSON.stringify(md.protocol)} is not one of ${PROTOCOLS.join(', ')}`);
  if (out.some((r) => r.rule === 'types')) return out;

  // Metadata.__post_init__: at least one example per shard.
  const layers = md.layers as number[];
  const T = (md.content_tokens_per_example as number) + (md.cls_token ? 1 : 0);
  const eps = Math.floor((md.max_tokens_per_shard as number) / (T * layers.length));
  if (!(eps >= 1)) {
    refuse('examples_per_shard', `max_tokens_per_shard ${md.max_tokens_per_shard} holds no example of ${T} tokens x ${layers.length} layers`);
    return out;
  }

  // ShardInfo.load: [Shard(**entry) for entry in json.load(shards.json)], each exactly {name: str, n_examples: int}.
  let shards: { name: string; n_examples: number }[];
  try {
    const list = JSON.parse(await fs.readFile(path.join(dir, SHARDS_FILE), 'utf8'));
    const ok = (e: unknown) =>
      typeof e === 'object' &&
      e !== null &&
      Object.keys(e).sort().join() === 'n_examples,name' &&
      typeof (e as { name: unknown }).name === 'string' &&
      isInt((e as { n_examples: unknown }).n_examples);
    if (!Array.isArray(list) || !list.every(ok)) throw new Error('expected a list of {"name": str, "n_examples": int}');
    shards = list;
  } catch (e) {
    refuse('shards_json', `${SHARDS_FILE} is missing or malformed (${(e as Error).message})`);
    return out;
  }
  const shardBytes = eps * layers.length * T * (md.d_model as number) * 4;
  for (const [i, s] of shards.entries()) {
    // The loaders open acts{i:06}.bin by index; ShardInfo.validate wants each listed file regular and non-empty.
    const st = await sizeOf(path.join(dir, s.name));
    if (s.name !== shardFileName(i)) refuse('shard_file', `shards.json entry ${i} is ${s.name}; saev opens ${shardFileName(i)}`);
    else if (!st?.regular || st.size === 0) refuse('shard_file', `${s.name} is ${st ? (st.regular ? 'empty' : 'not a regular file') : 'missing'} (saev's ShardInfo.validate)`);
    // np.memmap(mode="r", shape=md.shard_shape) needs the whole [examples_per_shard, layers, tokens, d_model] file.
    else if (st.size < shardBytes) refuse('shard_size', `${s.name} has ${st.size} bytes; saev maps every shard with its full shape, ${shardBytes} bytes (pad it: vitsae's writer does)`);
    // ordered.py: every shard but the last holds examples_per_shard examples.
    if (i < shards.length - 1 && s.n_examples !== eps) refuse('full_shards', `${s.name} holds ${s.n_examples} examples; every shard but the last must hold ${eps}`);
  }
  const labels = await sizeOf(path.join(dir, LABELS_FILE));
  const labelBytes = (md.n_examples as number) * (md.content_tokens_per_example as number);
  if (labels && labels.size < labelBytes) refuse('labels', `${LABELS_FILE} has ${labels.size} bytes; saev maps it as uint8 [n_examples, content_tokens_per_example] = ${labelBytes} bytes`);
  return out;
}

/**
 * saev addresses a layer by its value in `layers` (IndexMap, ordered.py, shuffled.py: `layer in md.layers`), and its
 * loaders default to -2 (indexed, ordered) and -1 (shuffled), which are values, not positions. Says which value to pass.
 */
export function saevLayerNote(layers: number[]): string {
  const missing = [-1, -2].filter((l) => !layers.includes(l));
  return `saev selects a layer by its value: pass e.g. --train-data.layer ${layers[layers.length - 1]} (one of [${layers.join(', ')}])${missing.length === 2 ? '; its defaults -1/-2 are not recorded values here' : ''}`;
}
