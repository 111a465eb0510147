/**
 * The recorder: runs the front of a model (inputs -> chosen layers) over a dataset and writes activation shards.
 * onnxruntime runs on a worker thread (see front-worker.ts), so that the next batch decodes (sharp, on libuv's threads,
 * normalised on the main thread) and the previous one is written while it computes the current one. Beside the
 * shards go `examples.jsonl` (one {file, label?} per recorded example, in shard order, so skipped files never
 * shift the mapping) and, with --on-error skip, `errors.jsonl`.
 *
 * Array names carry their shape: acts_NLTD is [examples, layers, stored tokens, d_model], pixels_NCHW the batch.
 */
import { createReadStream, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import type * as ort from 'onnxruntime-node';
import { type Dataset, openDataset } from '../data/images.js';
import { ImageError, loadMask, loadPixels, patchMajority, type Preprocess, preprocessSpec, readModelCard, resolvePreprocess } from '../data/preprocess.js';
import { EXAMPLES_FILE, examplesPerShard, METADATA_FILE, type NewShardMetadata, PROGRESS_FILE, readProgress, type ShardMetadata, ShardWriter, tokensPerExample } from '../shards/format.js';
import { UserError } from '../util/errors.js';
import { progress } from '../util/progress.js';
import {
  type Backbone,
  declaredSize,
  fixedBatch,
  inputChannels,
  inputSize,
  type Layer,
  layoutFromShapes,
  layoutTensors,
  openBackbone,
  probeInput,
  selectLayers,
  sessionOptions,
  type TokenLayout,
} from './backbone.js';
import { type Device, deviceSpec } from './device.js';
import { frontModel } from './graph.js';
import { FRONT_SESSION_OPTIONS, FrontWorker } from './front-worker.js';
import { encodeModel } from './onnx.js';
import { snakeKeys } from '../util/json-keys.js';
import { type ConfigSpec, defaultsOf } from '../util/config.js';

export const ERRORS_FILE = 'errors.jsonl';
/** saev's default shard budget (~7 GiB per shard at d_model 768). */
export const DEFAULT_MAX_TOKENS_PER_SHARD = 2_400_000;

/** The recorder's options with their defaults and docs; `vitsae record`'s flags are generated from them. */
export const recordSpec = {
  model: { kind: 'string', required: true, default: '', doc: 'the ONNX model' },
  layer: { kind: 'strings', default: [], doc: 'layer to record: block index or tensor name (repeatable)' },
  data: { kind: 'string', required: true, default: '', doc: 'the dataset' },
  out: { kind: 'string', required: true, default: '', doc: 'output shard directory' },
  batch: { kind: 'number', int: true, min: 1, default: 16, doc: 'images per onnxruntime run' },
  onError: { kind: 'enum', choices: ['stop', 'skip'] as const, default: 'stop', doc: 'on a file that cannot be read: stop, or log it to DIR/errors.jsonl and go on' },
  worker: { kind: 'number', int: true, min: 0, default: 0, doc: "this machine's index (Kubernetes JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID)" },
  workers: { kind: 'number', int: true, min: 1, default: 1, doc: 'machines sharing the dataset' },
  ...preprocessSpec,
  maxTokensPerShard: {
    kind: 'number',
    int: true,
    min: 0,
    default: 0,
    doc: `tokens per shard file over all layers (saev rule); 0: ${DEFAULT_MAX_TOKENS_PER_SHARD}, lowered when --workers needs more shards`,
  },
  ...deviceSpec,
  progress: { kind: 'boolean', default: true, doc: 'show a progress bar on stderr' },
} as const satisfies ConfigSpec;

const DEFAULTS = defaultsOf(recordSpec);

export interface RecordOptions {
  model: string;
  /** `--layer` values: block indices (negative from the end) or tensor names. */
  layers: string[];
  data: string;
  out: string;
  batch?: number;
  onError?: 'stop' | 'skip';
  /** This machine's share: worker `worker` of `workers` records a disjoint, shard-aligned slice. */
  worker?: number;
  workers?: number;
  inputSize?: [number, number];
  mean?: number[];
  std?: number[];
  /** Tokens per shard file over all layers; unset or 0: DEFAULT_MAX_TOKENS_PER_SHARD, lowered if the workers need more shards. */
  maxTokensPerShard?: number;
  /** Execution provider (default cpu). */
  device?: Device;
  /** Show a progress bar on stderr (default true). */
  progress?: boolean;
  /** Notes for the user (resuming, the preset in use); default stderr. */
  log?: (message: string) => void;
}

export interface RecordResult {
  metadata: ShardMetadata;
  /** Examples recorded by this run (resumed ones excluded). */
  recorded: number;
  /** Files skipped by this run. */
  skipped: number;
  resumed: boolean;
  imagesPerSecond: number;
  /** Seconds from the start of the process until the first batch went to onnxruntime (start-up cost). */
  firstBatchSeconds: number;
}

/** What `data` in metadata.json holds for a vitsae recording: enough to know where each number came from. */
export interface RecordingData {
  format: 'vitsae-record';
  kind: Dataset['kind'];
  model: string;
  /** Graph tensor of each recorded layer, in the order of metadata.layers. */
  tensors: string[];
  /** CLS and register tokens the model puts before its patches; only the first (CLS) is stored. */
  prefix_tokens: number;
  layout: TokenLayout['layout'];
  grid: [number, number] | null;
  /** The Preprocess the images went through, its keys in snake_case as in every file vitsae writes (camelKeys reads it back). */
  preprocess: Record<string, unknown>;
  classes: string[] | null;
  /** Names of the values in labels.bin (segmentation datasets with a mask_classes.txt), else null. */
  mask_classes: string[] | null;
  /** Dataset indices [start, end) this directory covers, and the split it came from. */
  slice: { start: number; end: number; worker: number; workers: number };
}

/** A recorded layer's number in metadata.layers: its block, or for a tensor off the residual stream its node index. */
function layerNumber(bb: Backbone, layer: Layer): number {
  return layer.block ?? bb.index.producer.get(layer.name)!;
}

/** Dataset indices of worker `w` of `n`: whole shards, so that merged outputs need no repacking. */
function workerSlice(size: number, perShard: number, w: number, n: number): { start: number; end: number } {
  const shards = Math.ceil(size / perShard);
  if (n > shards)
    throw new UserError(
      `--workers ${n} is more than the ${shards} shards of this dataset at the --max-tokens-per-shard given; use at most ${shards} workers, a lower --max-tokens-per-shard, or leave it out to size shards for the workers`,
    );
  if (!(Number.isInteger(w) && w >= 0 && w < n)) throw new UserError(`--worker ${w} must be in 0..${n - 1}`);
  const first = Math.floor((w * shards) / n);
  const last = Math.floor(((w + 1) * shards) / n);
  return { start: first * perShard, end: Math.min(size, last * perShard) };
}

export async function record(opts: RecordOptions): Promise<RecordResult> {
  const log = opts.log ?? ((m: string) => process.stderr.write(m + '\n'));
  const bb = await openBackbone(opts.model, opts.device);
  const fixed = fixedBatch(bb);
  if (fixed !== null && opts.batch !== undefined && opts.batch !== fixed) log(`${opts.model} was exported with a fixed batch of ${fixed}; recording ${fixed} images at a time`);
  const card = readModelCard(opts.model);
  if (!card && !opts.mean) log(`${opts.model} has no model card (${path.basename(opts.model, '.onnx')}.json); using the ImageNet preset`);
  const pp = resolvePreprocess(card, opts, declaredSize(bb), inputChannels(bb));
  inputSize(bb, pp.size);
  const layers = selectLayers(bb, opts.layers);
  // One session serves the layout probe and the recording: its front also computes the tensors the probe needs.
  const probed = layoutTensors(bb, layers, card?.prefix_tokens);
  const front = await FrontWorker.start(encodeModel(frontModel(bb.model, probed, bb.index)), bb.input.name, sessionOptions(bb, FRONT_SESSION_OPTIONS));
  try {
    const x = probeInput(bb, pp.size);
    const shapes = await front.run(x.data as Float32Array, [...x.dims], probed);
    const layout = layoutFromShapes(
      layers,
      probed.map((t) => [...shapes[t].dims]),
      card?.prefix_tokens,
    );
    return await recordWith(opts, bb, front, layers, layout, pp, card, log);
  } finally {
    await front.close();
  }
}

/** Records with a started front session, once the token layout is known. */
async function recordWith(
  opts: RecordOptions,
  bb: Backbone,
  front: FrontWorker,
  layers: Layer[],
  layout: TokenLayout,
  pp: Preprocess,
  card: ReturnType<typeof readModelCard>,
  log: (message: string) => void,
): Promise<RecordResult> {
  const onError = opts.onError ?? DEFAULTS.onError;
  // A model exported with a fixed batch runs that many images at a time, the last batch padded with zeros.
  const fixed = fixedBatch(bb);
  const batch = fixed ?? opts.batch ?? DEFAULTS.batch;
  const names = layers.map((l) => l.name);
  const ds = await openDataset(opts.data);
  if (ds.kind === 'segmentation' && !layout.grid) throw new UserError('the patch grid of this model is unknown, so mask pixels cannot be assigned to patches');
  const numbers = layers.map((l) => layerNumber(bb, l));
  if (new Set(numbers).size !== numbers.length) throw new UserError(`layers ${opts.layers.join(', ')} map to the same layer numbers [${numbers}]; record them in separate runs`);

  const shape = {
    layers: numbers,
    content_tokens_per_example: layout.patchTokens,
    cls_token: layout.prefixTokens > 0,
    d_model: layout.dModel,
    max_tokens_per_shard: opts.maxTokensPerShard || DEFAULT_MAX_TOKENS_PER_SHARD,
  };
  const workers = opts.workers ?? DEFAULTS.workers;
  const worker = opts.worker ?? DEFAULTS.worker;
  // Workers record whole shards, so each needs one: without a chosen shard size, shards shrink until they suffice.
  // Every worker computes the same size from the dataset, and one machine recording with it gives the same bytes.
  if (!opts.maxTokensPerShard && Math.ceil(ds.size / examplesPerShard(shape)) < workers) {
    const perShard = Math.floor(ds.size / workers);
    if (perShard < 1) throw new UserError(`--workers ${workers} is more than the ${ds.size} examples of ${opts.data}`);
    shape.max_tokens_per_shard = perShard * tokensPerExample(shape) * numbers.length;
    log(`shards of ${perShard} examples (--max-tokens-per-shard ${shape.max_tokens_per_shard}), so that each of the ${workers} workers records at least one`);
  }
  const slice = workerSlice(ds.size, examplesPerShard(shape), worker, workers);
  const data: RecordingData = {
    format: 'vitsae-record',
    kind: ds.kind,
    model: path.resolve(opts.model),
    tensors: layers.map((l) => l.name),
    prefix_tokens: layout.prefixTokens,
    layout: layout.layout,
    grid: layout.grid,
    preprocess: snakeKeys(pp),
    classes: ds.classes,
    mask_classes: ds.maskClasses ?? null,
    slice: { ...slice, worker, workers },
  };
  const metadata: NewShardMetadata = {
    family: card?.family ?? card?.preset ?? 'vit',
    ckpt: card?.ckpt ?? path.basename(opts.model),
    ...shape,
    data,
    dataset: ds.source,
    pixel_agg: ds.kind === 'segmentation' ? 'majority' : null,
  };

  const { writer, next, resumed } = await openWriter(opts.out, metadata, ds, slice);
  if (resumed) log(`resuming ${opts.out}: ${writer.nExamples} examples kept, continuing at dataset index ${next}`);
  const examples = await fs.open(path.join(opts.out, EXAMPLES_FILE), 'a');
  const errors = await fs.open(path.join(opts.out, ERRORS_FILE), 'a');
  const bar = progress('record', slice.end - next, { enabled: opts.progress ?? DEFAULTS.progress, unit: 'images' });
  const started = Date.now();
  let recorded = 0;
  let skipped = 0;
  let firstBatch = 0;
  try {
    const starts: number[] = [];
    for (let i = next; i < slice.end; i += batch) starts.push(i);
    const decodeAt = (k: number) => decodeBatch(ds, pp, layout, starts[k], Math.min(starts[k] + batch, slice.end), fixed ?? 0);
    let decoding = starts.length ? decodeAt(0) : null;
    let writing = Promise.resolve();
    for (let k = 0; k < starts.length; k++) {
      const cur = await decoding!;
      decoding = k + 1 < starts.length ? decodeAt(k + 1) : null;
      for (const f of cur.failed) {
        if (onError === 'stop') {
          await writing;
          throw new UserError(`${f.file}: ${f.error} (in ${ds.source}; use --on-error skip to log such files to ${ERRORS_FILE} and go on)`);
        }
        await errors.write(JSON.stringify(f) + '\n');
      }
      skipped += cur.failed.length;
      const n = cur.files.length;
      if (n) {
        const rows = fixed ?? n;
        firstBatch ||= performance.now();
        const outs = await front.run(cur.pixels_NCHW.subarray(0, rows * pp.channels * pp.size[0] * pp.size[1]), [rows, pp.channels, ...pp.size], names);
        const acts_NLTD = gatherTokens(
          layers.map((l) => outs[l.name]),
          layout,
          n,
        );
        await writing;
        writing = (async () => {
          // The manifest is durable before the shard that needs it, so a resumed run always finds its lines.
          await examples.write(cur.files.map((file, j) => JSON.stringify(cur.labels[j] === null ? { file } : { file, label: cur.labels[j] }) + '\n').join(''));
          await examples.sync();
          if (cur.patchLabels) await writer.appendLabels(cur.patchLabels.subarray(0, n * layout.patchTokens));
          await writer.append(acts_NLTD);
        })();
        // Awaited before the next write; until then a failure must not count as an unhandled rejection.
        writing.catch(() => {});
        recorded += n;
      }
      bar.update(Math.min(slice.end, starts[k] + batch) - next);
    }
    await writing;
    await examples.sync();
    await errors.sync();
    const final = await writer.close();
    return { metadata: final, recorded, skipped, resumed, imagesPerSecond: (recorded + skipped) / Math.max(1e-3, (Date.now() - started) / 1000), firstBatchSeconds: firstBatch / 1000 };
  } finally {
    bar.stop();
    await examples.close();
    await errors.close();
  }
}

/**
 * A writer for `dir`: a new one, or the unfinished recording there if its metadata matches, with the manifest
 * cut back to the examples the writer kept and the errors of files it will retry dropped. Returns the next
 * dataset index to record.
 */
async function openWriter(dir: string, metadata: NewShardMetadata, ds: Dataset, slice: { start: number; end: number }): Promise<{ writer: ShardWriter; next: number; resumed: boolean }> {
  const has = async (f: string) =>
    fs.access(path.join(dir, f)).then(
      () => true,
      () => false,
    );
  if (await has(METADATA_FILE)) throw new UserError(`${dir} already holds a finished recording; choose another --out`);
  if (!(await has(PROGRESS_FILE))) {
    await fs.mkdir(dir, { recursive: true });
    for (const f of [EXAMPLES_FILE, ERRORS_FILE]) await fs.rm(path.join(dir, f), { force: true });
    return { writer: await ShardWriter.create(dir, metadata), next: slice.start, resumed: false };
  }
  const progressed = await readProgress(dir);
  const old = progressed!.metadata as unknown as Record<string, unknown>;
  const differs = Object.entries(metadata).filter(([k, v]) => JSON.stringify(old[k]) !== JSON.stringify(v));
  if (differs.length)
    throw new UserError(`${dir} holds an unfinished recording with different settings (${differs.map(([k]) => k).join(', ')}); resume it with the same options or choose another --out`);
  const writer = await ShardWriter.resume(dir);
  const kept = writer.nExamples;
  const lines = await readLines(path.join(dir, EXAMPLES_FILE));
  if (lines.length < kept) throw new UserError(`${dir}: ${EXAMPLES_FILE} lists ${lines.length} examples but the shards hold ${kept}; the directory is damaged, delete it and re-record`);
  const index = new Map<string, number>();
  for (let i = slice.start; i < slice.end; i++) index.set(ds.key(i), i);
  const last = kept ? index.get((JSON.parse(lines[kept - 1]) as { file: string }).file) : slice.start - 1;
  if (last === undefined) throw new UserError(`${dir}: the dataset changed since the recording began (${lines[kept - 1]} is no longer in it); delete the directory and re-record`);
  const next = last + 1;
  const errors = (await readLines(path.join(dir, ERRORS_FILE))).filter((l) => (index.get((JSON.parse(l) as { file: string }).file) ?? 0) < next);
  await fs.writeFile(
    path.join(dir, EXAMPLES_FILE),
    lines
      .slice(0, kept)
      .map((l) => l + '\n')
      .join(''),
  );
  await fs.writeFile(path.join(dir, ERRORS_FILE), errors.map((l) => l + '\n').join(''));
  return { writer, next, resumed: true };
}

async function readLines(file: string): Promise<string[]> {
  const lines: string[] = [];
  try {
    for await (const line of createInterface({ input: createReadStream(file), crlfDelay: Infinity })) if (line) lines.push(line);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  return lines;
}

interface DecodedBatch {
  /** Decoded images, packed at the front in dataset order. */
  pixels_NCHW: Float32Array;
  files: string[];
  labels: (number | null)[];
  /** Segmentation: patch labels of the decoded images, [n, patches]. */
  patchLabels: Uint8Array | null;
  failed: { file: string; error: string }[];
}

/**
 * Decodes dataset indices [start, end) concurrently; a file that fails is reported, not thrown. The pixel buffer
 * holds at least `rows` images (padding past the decoded ones) for models with a fixed batch.
 */
async function decodeBatch(ds: Dataset, pp: Preprocess, layout: TokenLayout, start: number, end: number, rows: number): Promise<DecodedBatch> {
  const n = end - start;
  const img = pp.channels * pp.size[0] * pp.size[1];
  const P = layout.patchTokens;
  const pixels_NCHW = new Float32Array(Math.max(n, rows) * img);
  const patchLabels = ds.mask ? new Uint8Array(n * P) : null;
  const results = await Promise.all(
    Array.from({ length: n }, async (_, j) => {
      const i = start + j;
      try {
        await loadPixels(await ds.image(i), pp, pixels_NCHW.subarray(j * img, (j + 1) * img));
        if (patchLabels) {
          const mask_HW = await loadMask(await ds.mask!(i), pp).catch((e: Error) => {
            throw new ImageError(`mask: ${e.message}`);
          });
          patchLabels.set(patchMajority(mask_HW, pp.size, layout.grid!), j * P);
        }
        return null;
      } catch (e) {
        return (e as Error).message;
      }
    }),
  );
  const out: DecodedBatch = { pixels_NCHW, files: [], labels: [], patchLabels, failed: [] };
  results.forEach((error, j) => {
    const i = start + j;
    if (error !== null) return out.failed.push({ file: ds.key(i), error });
    const k = out.files.length;
    if (k !== j) {
      pixels_NCHW.copyWithin(k * img, j * img, (j + 1) * img);
      patchLabels?.copyWithin(k * P, j * P, (j + 1) * P);
    }
    out.files.push(ds.key(i));
    out.labels.push(ds.label(i));
  });
  return out;
}

/**
 * Interleaves the first N examples of the layers' outputs into acts_NLTD: per example and layer, the CLS token
 * (when the model has prefix tokens) then the patch tokens; register tokens are left out. A feature map
 * [N, C, H, W] becomes H*W tokens of C.
 */
function gatherTokens(outputs: ort.Tensor[], layout: TokenLayout, N: number): Float32Array {
  const L = outputs.length;
  const D = layout.dModel;
  const P = layout.patchTokens;
  const cls = layout.prefixTokens > 0 ? 1 : 0;
  const T = cls + P;
  const acts_NLTD = new Float32Array(N * L * T * D);
  outputs.forEach((out, l) => {
    const src = out.data as Float32Array;
    for (let n = 0; n < N; n++) {
      const dst = (n * L + l) * T * D;
      if (layout.layout === 'nchw') {
        const base = n * D * P;
        for (let p = 0; p < P; p++) for (let c = 0; c < D; c++) acts_NLTD[dst + p * D + c] = src[base + c * P + p];
        continue;
      }
      const base = n * (layout.prefixTokens + P) * D;
      if (cls) acts_NLTD.set(src.subarray(base, base + D), dst);
      acts_NLTD.set(src.subarray(base + layout.prefixTokens * D, base + (layout.prefixTokens + P) * D), dst + cls * D);
    }
  });
  return acts_NLTD;
}
