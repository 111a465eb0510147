/**
 * saev activation shards, protocol 2.1: read, validate and write them so that data moves between vitsae and saev.
 * The byte layout is documented in README.md next to this file.
 */
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../util/errors.js';
import { readJson, writeFileAtomic } from '../util/fs.js';

export const PROTOCOL = '2.1';
export const METADATA_FILE = 'metadata.json';
export const SHARDS_FILE = 'shards.json';
export const LABELS_FILE = 'labels.bin';
/** One JSON line per recorded example, in order, naming its image (written by `vitsae record`; optional). */
export const EXAMPLES_FILE = 'examples.jsonl';
/**
 * vitsae's own details of a directory (the true model family, the recording's `data` object, `pixel_agg` null when
 * there are no masks), where they differ from what saev accepts in metadata.json. See README.md, "vitsae.json".
 */
export const DETAILS_FILE = 'vitsae.json';
const DETAILS_FORMAT = 'vitsae-shard-details';
/** Written by ShardWriter while recording and removed by close(); lets ShardWriter.resume continue after a crash. */
export const PROGRESS_FILE = 'progress.json';
const PROGRESS_FORMAT = 'vitsae-shard-progress';
const PROGRESS_VERSION = 1;
const TMP = '.tmp';
const F32 = 4;

/**
 * A shard directory's metadata as vitsae uses it: metadata.json (field names and order of saev's `Metadata`
 * dataclass) with `family`, `data` and `pixel_agg` taken from vitsae.json when there is one. On disk,
 * metadata.json always holds the values saev accepts (`saevMetadata`).
 */
export interface ShardMetadata {
  family: string;
  ckpt: string;
  layers: number[];
  content_tokens_per_example: number;
  cls_token: boolean;
  d_model: number;
  n_examples: number;
  max_tokens_per_shard: number;
  /** saev stores a base64 pickle of its dataset config here; vitsae's recordings an object (RecordingData). */
  data: unknown;
  dataset: string;
  pixel_agg: string | null;
  dtype: 'float32';
  protocol: '2.1';
}

/** What a writer needs up front: n_examples is only known at close, dtype and protocol are fixed. */
export type NewShardMetadata = Omit<ShardMetadata, 'n_examples' | 'dtype' | 'protocol'>;

/** One entry of shards.json. */
export interface ShardEntry {
  name: string;
  n_examples: number;
}

type Shape = Pick<ShardMetadata, 'layers' | 'content_tokens_per_example' | 'cls_token' | 'd_model' | 'max_tokens_per_shard'>;

/** Tokens stored per example and layer: the content tokens plus the CLS token (stored first) if any. */
export function tokensPerExample(md: Pick<ShardMetadata, 'content_tokens_per_example' | 'cls_token'>): number {
  return md.content_tokens_per_example + (md.cls_token ? 1 : 0);
}

/** saev's rule: max_tokens_per_shard counts tokens over all layers, and a shard holds only whole examples. */
export function examplesPerShard(md: Shape): number {
  return Math.floor(md.max_tokens_per_shard / (tokensPerExample(md) * md.layers.length));
}

/** float32 values per example: [n_layers, tokens_per_example, d_model]. */
export function floatsPerExample(md: Shape): number {
  return md.layers.length * tokensPerExample(md) * md.d_model;
}

/** `acts000003.bin`: saev derives the file name from the shard index, so names are not free. */
export function shardFileName(i: number): string {
  return `acts${String(i).padStart(6, '0')}.bin`;
}

let endiannessChecked = false;
/** The files are little-endian and we read them straight into Float32Arrays, which use the host's byte order. */
function assertLittleEndian(): void {
  if (endiannessChecked) return;
  if (os.endianness() !== 'LE') throw new UserError('vitsae shards are little-endian float32 and this host is big-endian; byte swapping is not implemented');
  endiannessChecked = true;
}

// ---------------------------------------------------------------------------------------------------------------
// Validation

const isInt = (v: unknown, min: number): boolean => typeof v === 'number' && Number.isSafeInteger(v) && v >= min;

const FIELD_CHECKS: Record<keyof ShardMetadata, [(v: unknown) => boolean, string]> = {
  family: [(v) => typeof v === 'string' && v !== '', 'must be a non-empty string (the model family, e.g. "dinov2")'],
  ckpt: [(v) => typeof v === 'string', 'must be a string (the model checkpoint)'],
  layers: [(v) => Array.isArray(v) && v.length > 0 && v.every((x) => Number.isSafeInteger(x)) && new Set(v).size === v.length, 'must be a non-empty list of distinct integers (the recorded layers)'],
  content_tokens_per_example: [(v) => isInt(v, 1), 'must be a positive integer (patch tokens per example)'],
  cls_token: [(v) => typeof v === 'boolean', 'must be true or false'],
  d_model: [(v) => isInt(v, 1), 'must be a positive integer'],
  n_examples: [(v) => isInt(v, 1), 'must be a positive integer'],
  max_tokens_per_shard: [(v) => isInt(v, 1), 'must be a positive integer'],
  data: [(v) => v !== undefined, 'must be present (any JSON value)'],
  dataset: [(v) => typeof v === 'string', 'must be a string (where the examples came from)'],
  pixel_agg: [(v) => v === null || typeof v === 'string', 'must be a string or null'],
  dtype: [(v) => v === 'float32', 'must be "float32" (the only dtype of protocol 2.1)'],
  protocol: [(v) => v === PROTOCOL, `must be "${PROTOCOL}"; vitsae reads saev protocol ${PROTOCOL} shards, re-record older ones with a current saev or vitsae`],
};

/**
 * Checks `fields` of `obj` and the derived shard geometry; `where` names the source and `fix` tells the user what
 * to do, so every message is actionable on its own.
 */
function checkMetadata(obj: unknown, fields: (keyof ShardMetadata)[], where: string, fix: string): void {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new UserError(`${where}: expected a JSON object; ${fix}`);
  const rec = obj as Record<string, unknown>;
  for (const k of fields) {
    const [ok, doc] = FIELD_CHECKS[k];
    if (!(k in rec)) throw new UserError(`${where}: field "${k}" is missing (it ${doc}); ${fix}`);
    if (!ok(rec[k])) throw new UserError(`${where}: field "${k}" ${doc}, got ${JSON.stringify(rec[k])}; ${fix}`);
  }
  const md = rec as unknown as Shape;
  const perExample = tokensPerExample(md) * md.layers.length;
  if (examplesPerShard(md) < 1)
    throw new UserError(
      `${where}: max_tokens_per_shard=${md.max_tokens_per_shard} cannot hold one example of ${perExample} tokens (tokens_per_example × n_layers); raise it to at least ${perExample}`,
    );
  const shardBytes = examplesPerShard(md) * floatsPerExample(md) * F32;
  if (!Number.isSafeInteger(shardBytes)) throw new UserError(`${where}: a shard would have ${shardBytes} bytes; lower max_tokens_per_shard`);
}

const WRITER_FIELDS = (Object.keys(FIELD_CHECKS) as (keyof ShardMetadata)[]).filter((k) => k !== 'n_examples' && k !== 'dtype' && k !== 'protocol');

/** Reads and validates metadata.json of a shard directory. */
export async function readMetadata(dir: string): Promise<ShardMetadata> {
  const file = path.join(dir, METADATA_FILE);
  const unfinished = (await fileSize(path.join(dir, PROGRESS_FILE))) !== null;
  const obj = await readJson(
    file,
    unfinished ? `${dir} holds an unfinished recording (${PROGRESS_FILE} exists); resume it or re-record` : `${dir} is not a complete shard directory (metadata.json is written last); re-record it`,
  );
  const fix = 'fix the file or re-record the shards';
  checkMetadata(obj, Object.keys(FIELD_CHECKS) as (keyof ShardMetadata)[], file, fix);
  const details = await readDetails(dir);
  if (!details) return obj as ShardMetadata;
  const md = { ...(obj as ShardMetadata), family: details.family, data: details.data, pixel_agg: details.pixel_agg };
  checkMetadata(md, ['family', 'data', 'pixel_agg'], path.join(dir, DETAILS_FILE), fix);
  return md;
}

/** vitsae.json: the fields of metadata.json that vitsae keeps apart so that saev can load metadata.json. */
interface ShardDetails {
  format: typeof DETAILS_FORMAT;
  version: 1;
  family: string;
  data: unknown;
  pixel_agg: string | null;
}

/** Reads vitsae.json, or null if there is none (saev's own directories, and vitsae's written before it existed). */
async function readDetails(dir: string): Promise<ShardDetails | null> {
  const file = path.join(dir, DETAILS_FILE);
  if ((await fileSize(file)) === null) return null;
  const d = await readJson<Partial<ShardDetails> | null>(file, `${dir}: ${DETAILS_FILE} is unreadable; re-record the shards`);
  if (typeof d !== 'object' || d === null || d.format !== DETAILS_FORMAT || d.version !== 1)
    throw new UserError(`${file}: not a ${DETAILS_FORMAT} version 1 file; delete it if the directory was not written by vitsae, else re-record`);
  return d as ShardDetails;
}

/** saev's model families (`Metadata.family` in saev's src/saev/data/shards.py); saev's loader refuses any other. */
export const SAEV_FAMILIES = ['bird-mae', 'clip', 'dinov2', 'dinov3', 'fake-clip', 'pe-core', 'pe-spatial', 'siglip'] as const;
/** saev's `PixelAgg` values; `"majority"` is what saev writes for every dataset without masks too. */
export const SAEV_PIXEL_AGGS = ['majority', 'prefer-fg'] as const;

/** A protocol-2 pickle of one str: PROTO 2, BINUNICODE (uint32 length, UTF-8), STOP. */
function pickleString(s: string): Uint8Array {
  const text = Buffer.from(s, 'utf8');
  const out = Buffer.alloc(2 + 5 + text.length + 1);
  out.set([0x80, 2, 0x58]);
  out.writeUInt32LE(text.length, 3);
  out.set(text, 7);
  out[out.length - 1] = 0x2e;
  return out;
}

/**
 * What metadata.json's `data` holds when vitsae's is not a string: saev wants the base64 of a pickled dataset
 * config. vitsae's datasets have no saev config (saev's image folders order files differently, and skipped files
 * would shift every index), so this is the pickle of a str pointing to vitsae.json; saev's `make_data_cfg` (used
 * only by its interactive browser) refuses it, its loaders and trainer never read it.
 */
export const SAEV_DATA_NOTE = 'recorded by vitsae: the dataset and recording details are in vitsae.json beside metadata.json';
const SAEV_DATA = Buffer.from(pickleString(SAEV_DATA_NOTE)).toString('base64');

/**
 * The saev family for a model whose family saev does not know. saev reads `family` only to load a model for
 * recording; nothing that trains on or reads shards uses it. So the rule is the token layout: `clip` (a
 * pre-LN ViT storing CLS + patches, the paper's first model) when a CLS token is stored, `siglip` (the one saev
 * family without one) when not.
 */
export function saevFamily(md: Pick<ShardMetadata, 'family' | 'cls_token'>): string {
  return (SAEV_FAMILIES as readonly string[]).includes(md.family) ? md.family : md.cls_token ? 'clip' : 'siglip';
}

/** metadata.json as written to disk: saev's family, a string `data` and a valid `pixel_agg`. */
export function saevMetadata(md: ShardMetadata): ShardMetadata {
  return {
    ...md,
    family: saevFamily(md),
    data: typeof md.data === 'string' ? md.data : SAEV_DATA,
    pixel_agg: md.pixel_agg !== null && (SAEV_PIXEL_AGGS as readonly string[]).includes(md.pixel_agg) ? md.pixel_agg : 'majority',
  };
}

/**
 * Writes a finished directory's metadata: vitsae.json when vitsae's family, data or pixel_agg differ from what
 * saev accepts, then metadata.json (saev's values, saev's key order), each atomically, metadata.json last.
 */
export async function writeShardMetadata(dir: string, md: ShardMetadata): Promise<void> {
  const disk = pick(saevMetadata(md), Object.keys(FIELD_CHECKS) as (keyof ShardMetadata)[]);
  const own = (['family', 'data', 'pixel_agg'] as const).some((k) => JSON.stringify(md[k]) !== JSON.stringify(disk[k]));
  const details: ShardDetails = { format: DETAILS_FORMAT, version: 1, family: md.family, data: md.data, pixel_agg: md.pixel_agg };
  if (own) await writeFileAtomic(path.join(dir, DETAILS_FILE), JSON.stringify(details, null, 2) + '\n');
  else await fs.rm(path.join(dir, DETAILS_FILE), { force: true });
  await writeFileAtomic(path.join(dir, METADATA_FILE), JSON.stringify(disk, null, 2) + '\n');
}

/** Checks a list of shard entries: saev's names, every shard but the last full, and the total if given. */
function checkShardEntries(list: unknown, md: Shape, where: string, total: number | null): ShardEntry[] {
  const fix = 're-record the shards';
  if (!Array.isArray(list)) throw new UserError(`${where}: expected a list of {name, n_examples}; ${fix}`);
  const eps = examplesPerShard(md);
  let sum = 0;
  list.forEach((e: unknown, i) => {
    const entry = e as Partial<ShardEntry> | null;
    if (typeof entry !== 'object' || entry === null || typeof entry.name !== 'string' || !isInt(entry.n_examples, 1))
      throw new UserError(`${where}: entry ${i} must be {"name": string, "n_examples": positive integer}, got ${JSON.stringify(e)}; ${fix}`);
    if (entry.name !== shardFileName(i)) throw new UserError(`${where}: entry ${i} is named "${entry.name}" but must be "${shardFileName(i)}" (saev derives file names from the shard index); ${fix}`);
    const n = entry.n_examples as number;
    if (n > eps) throw new UserError(`${where}: ${entry.name} claims ${n} examples but a shard holds at most ${eps} (max_tokens_per_shard); ${fix}`);
    if (n !== eps && i < list.length - 1)
      throw new UserError(`${where}: ${entry.name} holds ${n} examples but every shard except the last must hold ${eps} (saev locates examples by division); ${fix}`);
    sum += n;
  });
  if (total !== null && sum !== total) throw new UserError(`${where}: shards hold ${sum} examples in total but metadata.json says n_examples=${total}; ${fix}`);
  return list as ShardEntry[];
}

async function fileSize(file: string): Promise<number | null> {
  try {
    const st = await fs.stat(file);
    if (!st.isFile()) throw new UserError(`${file} is not a regular file; remove it and re-record the shards`);
    return st.size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/**
 * Checks an acts file's size (`file` is its path, which errors name). saev memory-maps every shard with the full [examples_per_shard, ...] shape, so its
 * writer (and ours) pads the last shard to full size; a last shard of exactly its examples is accepted too.
 */
function checkShardSize(name: string, actual: number | null, n: number, md: Shape): void {
  const exampleBytes = floatsPerExample(md) * F32;
  const needed = n * exampleBytes;
  const full = examplesPerShard(md) * exampleBytes;
  if (actual === null) throw new UserError(`${name} is listed in shards.json but missing; re-record it or remove it from shards.json`);
  if (actual < needed)
    throw new UserError(`${name} has ${actual} bytes, expected ${full === needed ? full : `${needed} (or ${full} padded)`}: the shard is truncated; re-record it or remove it from shards.json`);
  if (actual !== needed && actual !== full)
    throw new UserError(`${name} has ${actual} bytes, expected ${needed}${full === needed ? '' : ` or ${full} (padded)`}: the file does not match metadata.json; re-record the shards`);
}

/** Reads a FileHandle until `buf` is full; a short file at this point means it changed after validation. */
async function readFully(h: FileHandle, buf: Uint8Array, position: number, name: string): Promise<void> {
  let done = 0;
  while (done < buf.byteLength) {
    const { bytesRead } = await h.read(buf, done, buf.byteLength - done, position + done);
    if (bytesRead === 0) throw new UserError(`${name} ended at byte ${position + done}, expected at least ${position + buf.byteLength}: the file was truncated while open`);
    done += bytesRead;
  }
}

async function writeFully(h: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.byteLength) {
    const { bytesWritten } = await h.write(buf, done, buf.byteLength - done, position + done);
    done += bytesWritten;
  }
}

function bytesOf(a: Float32Array | Uint8Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

// ---------------------------------------------------------------------------------------------------------------
// Reading

/** A validated shard directory with random access to whole examples or to one layer's token range. */
export class ShardDataset {
  readonly nExamples: number;
  readonly nLayers: number;
  readonly tokensPerExample: number;
  readonly d: number;
  readonly examplesPerShard: number;
  /** float32 values per example. */
  readonly exampleFloats: number;
  private readonly handles = new Map<number, Promise<FileHandle>>();
  /**
   * Per block read ("blockOffset:blockFloats"), a flag per example whose block was found finite: shards are never
   * rewritten in place, and a trainer reads the same tokens several times (scale estimate, read-ahead, epochs).
   */
  private readonly finite = new Map<string, Uint8Array>();

  private constructor(
    readonly dir: string,
    readonly metadata: ShardMetadata,
    /** shards.json with each file's size on disk. */
    readonly shards: readonly (ShardEntry & { bytes: number })[],
    /** Size of labels.bin, or null if there are no patch labels. */
    readonly labelsBytes: number | null,
  ) {
    this.nExamples = metadata.n_examples;
    this.nLayers = metadata.layers.length;
    this.tokensPerExample = tokensPerExample(metadata);
    this.d = metadata.d_model;
    this.examplesPerShard = examplesPerShard(metadata);
    this.exampleFloats = floatsPerExample(metadata);
  }

  /** Validates metadata.json, shards.json and the size of every file; opens acts files lazily on first read. */
  static async open(dir: string): Promise<ShardDataset> {
    assertLittleEndian();
    const md = await readMetadata(dir);
    const shardsFile = path.join(dir, SHARDS_FILE);
    const list = await readJson(shardsFile, `${dir} has metadata.json but shards.json is unreadable; the directory is damaged, re-record the shards`);
    const entries = checkShardEntries(list, md, shardsFile, md.n_examples);
    const shards = [];
    for (const e of entries) {
      const bytes = await fileSize(path.join(dir, e.name));
      checkShardSize(path.join(dir, e.name), bytes, e.n_examples, md);
      shards.push({ name: e.name, n_examples: e.n_examples, bytes: bytes as number });
    }
    const labelsBytes = await fileSize(path.join(dir, LABELS_FILE));
    const labelsExpected = md.n_examples * md.content_tokens_per_example;
    if (labelsBytes !== null && labelsBytes !== labelsExpected)
      throw new UserError(
        `${path.join(dir, LABELS_FILE)} has ${labelsBytes} bytes, expected ${labelsExpected} (uint8 [n_examples=${md.n_examples}, content_tokens_per_example=${md.content_tokens_per_example}]); re-record the labels or delete ${LABELS_FILE}`,
      );
    return new ShardDataset(dir, md, shards, labelsBytes);
  }

  get hasLabels(): boolean {
    return this.labelsBytes !== null;
  }

  /**
   * Position of `layer` in metadata.layers. A recorded layer value wins; otherwise a negative number indexes the
   * list python-style (-1 = last recorded layer), as saev's configs do.
   */
  layerIndex(layer: number): number {
    const layers = this.metadata.layers;
    const i = layers.indexOf(layer);
    if (i >= 0) return i;
    if (Number.isInteger(layer) && layer < 0 && -layer <= layers.length) return layers.length + layer;
    throw new UserError(`layer ${layer} was not recorded in ${this.dir}: recorded layers are [${layers.join(', ')}]; pick one of them or a negative index into that list (-1 = last)`);
  }

  /** Examples [start, start+count) as float32 [count, n_layers, tokens_per_example, d_model]. */
  async readExamples(start: number, count: number): Promise<Float32Array> {
    const out = new Float32Array(count * this.exampleFloats);
    await this.readBlocks(start, count, 0, this.exampleFloats, out);
    return out;
  }

  /**
   * Stored tokens [tokenStart, tokenStart+tokenCount) of layer position `layerIdx` for examples [start, start+count),
   * as float32 [count, tokenCount, d_model], written into `out` if given. Token 0 is the CLS token when cls_token.
   */
  async readTokens(layerIdx: number, start: number, count: number, tokenStart: number, tokenCount: number, out?: Float32Array): Promise<Float32Array> {
    const T = this.tokensPerExample;
    if (!(Number.isInteger(layerIdx) && layerIdx >= 0 && layerIdx < this.nLayers)) throw new RangeError(`readTokens: layer position ${layerIdx} is outside [0, ${this.nLayers})`);
    if (!(Number.isInteger(tokenStart) && Number.isInteger(tokenCount) && tokenStart >= 0 && tokenCount >= 1 && tokenStart + tokenCount <= T))
      throw new RangeError(`readTokens: tokens [${tokenStart}, ${tokenStart + tokenCount}) are outside [0, ${T})`);
    const blockFloats = tokenCount * this.d;
    const dest = out ?? new Float32Array(count * blockFloats);
    if (dest.length !== count * blockFloats) throw new RangeError(`readTokens: out has ${dest.length} floats, expected ${count * blockFloats}`);
    await this.readBlocks(start, count, (layerIdx * T + tokenStart) * this.d, blockFloats, dest);
    return dest;
  }

  /** Patch labels, uint8 [n_examples, content_tokens_per_example], or null without labels.bin. */
  async readLabels(): Promise<Uint8Array | null> {
    if (this.labelsBytes === null) return null;
    const buf = await fs.readFile(path.join(this.dir, LABELS_FILE));
    if (buf.byteLength !== this.labelsBytes)
      throw new UserError(`${path.join(this.dir, LABELS_FILE)} changed size while open (${buf.byteLength} bytes, expected ${this.labelsBytes}); re-open the shards`);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  async close(): Promise<void> {
    const hs = [...this.handles.values()];
    this.handles.clear();
    for (const h of await Promise.allSettled(hs)) if (h.status === 'fulfilled') await h.value.close();
  }

  private handle(shard: number): Promise<FileHandle> {
    let h = this.handles.get(shard);
    if (!h) {
      h = fs.open(path.join(this.dir, this.shards[shard].name), 'r');
      this.handles.set(shard, h);
    }
    return h;
  }

  /**
   * Copies the float range [blockOffset, blockOffset+blockFloats) of each example in [start, start+count) to `dest`.
   * Reads whole spans when at least half of each example is wanted (fewer syscalls), else one read per example.
   */
  private async readBlocks(start: number, count: number, blockOffset: number, blockFloats: number, dest: Float32Array): Promise<void> {
    if (!(Number.isInteger(start) && Number.isInteger(count) && start >= 0 && count >= 0 && start + count <= this.nExamples))
      throw new RangeError(`read: examples [${start}, ${start + count}) are outside [0, ${this.nExamples}) of ${this.dir}`);
    const E = this.exampleFloats;
    const eps = this.examplesPerShard;
    let ex = start;
    while (ex < start + count) {
      const shard = Math.floor(ex / eps);
      const first = ex - shard * eps;
      const n = Math.min(eps - first, start + count - ex);
      const h = await this.handle(shard);
      const name = path.join(this.dir, this.shards[shard].name);
      const destAt = (ex - start) * blockFloats;
      const filePos = (i: number) => ((first + i) * E + blockOffset) * F32;
      if (blockFloats === E) {
        await readFully(h, bytesOf(dest.subarray(destAt, destAt + n * E)), filePos(0), name);
      } else if (2 * blockFloats >= E) {
        const span = new Float32Array((n - 1) * E + blockFloats);
        await readFully(h, bytesOf(span), filePos(0), name);
        for (let i = 0; i < n; i++) dest.set(span.subarray(i * E, i * E + blockFloats), destAt + i * blockFloats);
      } else {
        await Promise.all(Array.from({ length: n }, (_, i) => readFully(h, bytesOf(dest.subarray(destAt + i * blockFloats, destAt + (i + 1) * blockFloats)), filePos(i), name)));
      }
      ex += n;
    }
    await this.checkFinite(start, blockOffset, blockFloats, dest.subarray(0, count * blockFloats));
  }

  /** " (image FILE)" for an example, from examples.jsonl where the recording wrote one; "" otherwise. */
  private async imageOf(example: number): Promise<string> {
    const line = (await fs.readFile(path.join(this.dir, EXAMPLES_FILE), 'utf8').catch(() => '')).split('\n')[example];
    try {
      const file = (JSON.parse(line) as { file?: unknown }).file;
      return typeof file === 'string' ? ` (image ${file})` : '';
    } catch {
      return '';
    }
  }

  /**
   * Refuses a non-finite value in what was read, naming where it lies: every reader (training, evaluation,
   * exemplars, concept checks, comparison, the server) goes through readBlocks, so none can read NaN silently.
   */
  private async checkFinite(start: number, blockOffset: number, blockFloats: number, values: Float32Array): Promise<void> {
    const key = `${blockOffset}:${blockFloats}`;
    const finite = this.finite.get(key) ?? new Uint8Array(this.nExamples);
    this.finite.set(key, finite);
    let bad = false;
    for (let e = 0; e < values.length / blockFloats; e++) {
      if (finite[start + e]) continue;
      if (allFinite(values.subarray(e * blockFloats, (e + 1) * blockFloats))) finite[start + e] = 1;
      else bad = true;
    }
    if (!bad) return;
    for (let i = 0; i < values.length; i++) {
      if (Number.isFinite(values[i])) continue;
      const example = start + Math.floor(i / blockFloats);
      const offset = blockOffset + (i % blockFloats);
      const [T, D] = [this.tokensPerExample, this.d];
      const token = Math.floor((offset % (T * D)) / D);
      const shard = Math.floor(example / this.examplesPerShard);
      const what = this.metadata.cls_token ? (token === 0 ? 'token 0 (CLS)' : `token ${token} (patch ${token - 1})`) : `token ${token}`;
      throw new UserError(
        `${path.join(this.dir, this.shards[shard].name)}: example ${example}${await this.imageOf(example)} ` +
          `has a non-finite value (${values[i]}) at layer ${this.metadata.layers[Math.floor(offset / (T * D))]}, ${what}, dim ${offset % D}: the shards are corrupt; re-record them`,
      );
    }
  }
}

/**
 * Whether every value is finite, fast: a sum in doubles is NaN or infinite iff some value is (float32 values cannot
 * overflow it: 2^32 of them at most 3.4e38 stay far below 1.8e308). Four sums let the additions overlap.
 */
function allFinite(values: Float32Array): boolean {
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0;
  const n4 = values.length - (values.length % 4);
  for (let i = 0; i < n4; i += 4) {
    s0 += values[i];
    s1 += values[i + 1];
    s2 += values[i + 2];
    s3 += values[i + 3];
  }
  for (let i = n4; i < values.length; i++) s0 += values[i];
  return Number.isFinite(s0 + s1 + s2 + s3);
}

// ---------------------------------------------------------------------------------------------------------------
// Writing

/** progress.json: what a crashed recording had made durable. */
interface Progress {
  format: typeof PROGRESS_FORMAT;
  version: number;
  metadata: NewShardMetadata;
  /** Complete shards (each exactly examples_per_shard examples, fsynced and renamed to its final name). */
  shards: ShardEntry[];
  /** Examples whose labels were fsynced in labels.bin.tmp when the progress was written. */
  n_labeled: number;
}

/** Reads progress.json of an unfinished recording, or null if there is none. */
export async function readProgress(dir: string): Promise<{ metadata: NewShardMetadata; shards: ShardEntry[]; nLabeled: number } | null> {
  const file = path.join(dir, PROGRESS_FILE);
  if ((await fileSize(file)) === null) return null;
  const fix = 'the recording cannot be resumed; delete the directory and re-record';
  const p = (await readJson(file, fix)) as Partial<Progress> | null;
  if (typeof p !== 'object' || p === null || p.format !== PROGRESS_FORMAT || p.version !== PROGRESS_VERSION) throw new UserError(`${file}: not a ${PROGRESS_FORMAT} v${PROGRESS_VERSION} file; ${fix}`);
  checkMetadata(p.metadata, WRITER_FIELDS, `${file} (metadata)`, fix);
  const md = p.metadata as NewShardMetadata;
  const shards = checkShardEntries(p.shards, md, `${file} (shards)`, null);
  const eps = examplesPerShard(md);
  const partial = shards.find((s) => s.n_examples !== eps);
  if (partial) throw new UserError(`${file}: ${partial.name} is recorded as complete with ${partial.n_examples} of ${eps} examples; ${fix}`);
  if (!isInt(p.n_labeled, 0)) throw new UserError(`${file}: n_labeled must be a non-negative integer; ${fix}`);
  return { metadata: md, shards, nLabeled: p.n_labeled as number };
}

const SHARD_FILE_RE = /^acts\d{6}\.bin(\.tmp)?$/;

/**
 * Writes a shard directory that saev can read. Each acts file is written as `actsNNNNNN.bin.tmp` and renamed once
 * full (or at close, padded to full size as saev expects); progress.json records completed shards so a crashed
 * recording can resume; shards.json and metadata.json are written last, atomically, so a directory never looks
 * complete while it is not. Calls must not overlap: await each one.
 */
export class ShardWriter {
  private readonly eps: number;
  private readonly exampleFloats: number;
  private current: { handle: FileHandle; n: number } | null = null;
  private labels: FileHandle | null = null;
  private busy = false;
  private closed = false;

  private constructor(
    readonly dir: string,
    readonly metadata: NewShardMetadata,
    private readonly done: ShardEntry[],
    /** Examples [0, labelsEnd) have labels; labels are written without gaps. */
    private labelsEnd: number,
  ) {
    this.eps = examplesPerShard(metadata);
    this.exampleFloats = floatsPerExample(metadata);
  }

  /** Examples appended so far, including those kept by resume(). */
  get nExamples(): number {
    return this.done.length * this.eps + (this.current?.n ?? 0);
  }

  /** Examples with patch labels so far. */
  get nLabeled(): number {
    return this.labelsEnd;
  }

  /** Starts a recording in `dir` (created if needed), which must not already hold shards. */
  static async create(dir: string, meta: NewShardMetadata): Promise<ShardWriter> {
    assertLittleEndian();
    checkMetadata(meta, WRITER_FIELDS, 'ShardWriter.create', 'fix the metadata passed to the writer');
    await fs.mkdir(dir, { recursive: true });
    const names = await fs.readdir(dir);
    if (names.includes(METADATA_FILE)) throw new UserError(`${dir} already holds a shard directory (${METADATA_FILE} exists); choose an empty directory`);
    if (names.includes(PROGRESS_FILE)) throw new UserError(`${dir} holds an unfinished recording (${PROGRESS_FILE} exists); resume it with ShardWriter.resume or delete the directory`);
    const stray = names.find((n) => SHARD_FILE_RE.test(n) || n === LABELS_FILE || n === LABELS_FILE + TMP || n === DETAILS_FILE);
    if (stray) throw new UserError(`${dir} already contains ${stray}; choose an empty directory`);
    const metadata = pick(meta as ShardMetadata, WRITER_FIELDS) as NewShardMetadata;
    const w = new ShardWriter(dir, metadata, [], 0);
    await w.checkpoint();
    return w;
  }

  /**
   * Continues an unfinished recording: keeps the shards progress.json lists as complete (after checking their
   * sizes), deletes the partial shard and anything else not recorded, and truncates labels to the kept examples.
   * The caller continues from example `writer.nExamples`.
   */
  static async resume(dir: string): Promise<ShardWriter> {
    assertLittleEndian();
    if ((await fileSize(path.join(dir, METADATA_FILE))) !== null) throw new UserError(`${dir} is already complete (${METADATA_FILE} exists); there is nothing to resume`);
    const progress = await readProgress(dir);
    if (!progress) throw new UserError(`${dir} has no ${PROGRESS_FILE}, so it is not an unfinished vitsae recording and cannot be resumed; delete it and re-record`);
    const { metadata, shards } = progress;
    for (const s of shards) checkShardSize(path.join(dir, s.name), await fileSize(path.join(dir, s.name)), s.n_examples, metadata);
    const keep = new Set(shards.map((s) => s.name));
    const labelsTmp = path.join(dir, LABELS_FILE + TMP);
    for (const name of await fs.readdir(dir)) {
      // A crash inside close() may have renamed labels.bin already and written shards.json; undo both.
      if (name === LABELS_FILE) await fs.rename(path.join(dir, name), labelsTmp);
      // Also the temp files of an interrupted writeFileAtomic (hidden, ending in .tmp).
      const leftover = (SHARD_FILE_RE.test(name) && !keep.has(name)) || name === SHARDS_FILE || name === DETAILS_FILE || (name.startsWith('.') && name.endsWith(TMP));
      if (leftover) await fs.rm(path.join(dir, name));
    }
    const w = new ShardWriter(dir, metadata, shards, Math.min(progress.nLabeled, shards.length * examplesPerShard(metadata)));
    if (w.labelsEnd > 0) {
      if ((await fileSize(labelsTmp)) === null) throw new UserError(`${labelsTmp} is missing but ${PROGRESS_FILE} records ${progress.nLabeled} labeled examples; delete the directory and re-record`);
      w.labels = await fs.open(labelsTmp, 'r+');
      await w.labels.truncate(w.labelsEnd * metadata.content_tokens_per_example);
    } else await fs.rm(labelsTmp, { force: true });
    await w.checkpoint();
    return w;
  }

  /**
   * Appends whole examples, float32 [n, n_layers, tokens_per_example, d_model]. Every value must be finite; a bad
   * call writes nothing.
   */
  async append(acts: Float32Array): Promise<void> {
    await this.exclusive(async () => {
      const E = this.exampleFloats;
      const md = this.metadata;
      if (acts.length % E !== 0)
        throw new UserError(
          `append: got ${acts.length} floats, not a multiple of one example's n_layers × tokens_per_example × d_model = ${md.layers.length} × ${tokensPerExample(md)} × ${md.d_model} = ${E}`,
        );
      for (let i = 0; i < acts.length; i++) {
        if (Number.isFinite(acts[i])) continue;
        const row = Math.floor(i / E);
        const r = i % E;
        const T = tokensPerExample(md);
        const li = Math.floor(r / (T * md.d_model));
        throw new UserError(
          `append: example ${this.nExamples + row} (row ${row} of this call) has ${acts[i]} at layer ${md.layers[li]}, token ${Math.floor(r / md.d_model) % T}, dim ${r % md.d_model}; activations must be finite, nothing from this call was written`,
        );
      }
      const exampleBytes = E * F32;
      const bytes = bytesOf(acts);
      let row = 0;
      const rows = acts.length / E;
      while (row < rows) {
        if (!this.current) this.current = { handle: await fs.open(this.currentTmp(), 'w'), n: 0 };
        const n = Math.min(this.eps - this.current.n, rows - row);
        await writeFully(this.current.handle, bytes.subarray(row * exampleBytes, (row + n) * exampleBytes), this.current.n * exampleBytes);
        this.current.n += n;
        row += n;
        if (this.current.n === this.eps) {
          await this.finishShard();
          await this.checkpoint();
        }
      }
    });
  }

  /** Writes patch labels, uint8 [n, content_tokens_per_example], for examples [start, start+n); no gaps allowed. */
  async setLabels(start: number, labels: Uint8Array): Promise<void> {
    await this.exclusive(async () => {
      const P = this.metadata.content_tokens_per_example;
      if (labels.length % P !== 0) throw new UserError(`setLabels: got ${labels.length} labels, not a multiple of content_tokens_per_example=${P}`);
      if (!(Number.isInteger(start) && start >= 0 && start <= this.labelsEnd))
        throw new UserError(`setLabels: start=${start} would leave a gap; labels must be written in order, the next unlabeled example is ${this.labelsEnd}`);
      if (!this.labels) this.labels = await fs.open(path.join(this.dir, LABELS_FILE + TMP), 'w+');
      await writeFully(this.labels, labels, start * P);
      this.labelsEnd = Math.max(this.labelsEnd, start + labels.length / P);
    });
  }

  /** Appends patch labels after the last labeled example. */
  appendLabels(labels: Uint8Array): Promise<void> {
    return this.setLabels(this.labelsEnd, labels);
  }

  /**
   * Finishes the directory: pads and renames the last shard, renames labels.bin, then writes shards.json and
   * metadata.json atomically, metadata last, and removes progress.json. Returns the final metadata.
   */
  async close(): Promise<ShardMetadata> {
    return this.exclusive(async () => {
      const n = this.nExamples;
      if (n === 0) throw new UserError(`close: no examples were appended to ${this.dir}; a shard directory needs at least one`);
      if (this.labelsEnd !== 0 && this.labelsEnd !== n) throw new UserError(`close: labels cover ${this.labelsEnd} examples but ${n} examples were appended; label every example or none`);
      if (this.current) await this.finishShard();
      if (this.labels) {
        await this.labels.sync();
        await this.labels.close();
        this.labels = null;
        await fs.rename(path.join(this.dir, LABELS_FILE + TMP), path.join(this.dir, LABELS_FILE));
      }
      // saev's key order, so the files diff cleanly against saev's.
      const md = pick({ ...this.metadata, n_examples: n, dtype: 'float32', protocol: PROTOCOL } as ShardMetadata, Object.keys(FIELD_CHECKS) as (keyof ShardMetadata)[]);
      await writeFileAtomic(path.join(this.dir, SHARDS_FILE), JSON.stringify(this.done, null, 2) + '\n');
      await writeShardMetadata(this.dir, md);
      await fs.rm(path.join(this.dir, PROGRESS_FILE));
      this.closed = true;
      return md;
    });
  }

  private currentTmp(): string {
    return path.join(this.dir, shardFileName(this.done.length) + TMP);
  }

  /** Makes the current shard durable under its final name, padded to full size. */
  private async finishShard(): Promise<void> {
    const cur = this.current as { handle: FileHandle; n: number };
    // Padding is a sparse truncate: saev maps every shard with the full shape, but the zeros cost no disk blocks.
    await cur.handle.truncate(this.eps * this.exampleFloats * F32);
    await cur.handle.sync();
    await cur.handle.close();
    const name = shardFileName(this.done.length);
    await fs.rename(this.currentTmp(), path.join(this.dir, name));
    this.current = null;
    this.done.push({ name, n_examples: cur.n });
  }

  /** Records the complete shards and the labels made durable so far in progress.json. */
  private async checkpoint(): Promise<void> {
    if (this.labels) await this.labels.sync();
    const p: Progress = { format: PROGRESS_FORMAT, version: PROGRESS_VERSION, metadata: this.metadata, shards: this.done, n_labeled: this.labelsEnd };
    await writeFileAtomic(path.join(this.dir, PROGRESS_FILE), JSON.stringify(p, null, 2) + '\n');
  }

  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new UserError(`ShardWriter for ${this.dir} is closed`);
    if (this.busy) throw new UserError(`ShardWriter for ${this.dir}: a previous call is still running; await each call before the next`);
    this.busy = true;
    try {
      return await fn();
    } finally {
      this.busy = false;
    }
  }
}

function pick<T extends object, K extends keyof T>(obj: T, keys: K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const k of keys) out[k] = obj[k];
  return out;
}
