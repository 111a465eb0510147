/**
 * Task heads: a linear softmax classifier on a frozen model's final representation, the "frozen task head" whose
 * answer an edit must change. Classification reads one row per image (the final CLS token, or the mean of the
 * patch tokens for models without one); segmentation reads every final patch token and predicts its class.
 *
 * Training records the feature tensor over the dataset with the recorder (its decoding, batching, labels and
 * per-patch mask labels), fits the head with AdamW on standardised features, folds the standardisation into the
 * weights (the saved head works on raw features) and reports held-out accuracy and, for segmentation, mIoU. The
 * head directory format is in README.md.
 *
 * Shape letters: N rows (images or patches), D feature width, K classes, B batch rows.
 */
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Device } from '../backbone/device.js';
import { openBackbone, selectLayers, type TokenLayout } from '../backbone/backbone.js';
import { record, type RecordingData } from '../backbone/record.js';
import { openDataset } from '../data/images.js';
import type { ConfigOf, ConfigSpec } from '../util/config.js';
import { native } from '../sae/native.js';
import { readSafetensors, tensor, toFloat32, writeSafetensors } from '../sae/safetensors.js';
import { EXAMPLES_FILE, ShardDataset } from '../shards/format.js';
import { Adam } from '../util/adam.js';
import { camelKeys, snakeKeys } from '../util/json-keys.js';
import { Rng } from '../util/random.js';
import { UserError } from '../util/errors.js';
import { exists, readJson, writeFileAtomic } from '../util/fs.js';
import { progress } from '../util/progress.js';
import type { Task } from './kinds.js';
import { type Pooling, rowsPerImage, taskRows } from './tokens.js';

export const HEAD_FILE = 'head.json';
export const HEAD_WEIGHTS = 'head.safetensors';
const HEAD_FORMAT = 'vitsae-head';

/** The head's training hyperparameters, declared once for the library, the CLI flags and head.json. */
export const headTrainSpec = {
  epochs: { kind: 'number', int: true, min: 1, default: 30, doc: 'passes over the training rows' },
  batch: { kind: 'number', int: true, min: 1, default: 256, doc: 'rows (images or patches) per AdamW step' },
  lr: { kind: 'number', min: 0, default: 3e-3, doc: 'AdamW learning rate (features are standardised)' },
  weightDecay: { kind: 'number', min: 0, default: 1e-4, doc: 'AdamW decoupled weight decay' },
  testFraction: { kind: 'number', min: 0.01, max: 0.9, default: 0.2, doc: 'share of the images held out for the reported metrics' },
  seed: { kind: 'number', int: true, min: 0, default: 0, doc: 'seed of the train/test split and the batch order' },
} as const satisfies ConfigSpec;
export type HeadTrainConfig = ConfigOf<typeof headTrainSpec>;

export interface ClassMetrics {
  class: string;
  /** Held-out rows of this class. */
  support: number;
  /** Share of them predicted correctly (recall). */
  accuracy: number;
  /** Segmentation: intersection over union of predicted and true patches of the class. */
  iou?: number;
}

export interface HeadMetrics {
  train_images: number;
  test_images: number;
  /** Held-out rows predicted correctly: images (classify) or patches (segment). */
  accuracy: number;
  /** Segmentation: mean IoU over the classes present in the held-out truth or predictions. */
  miou?: number;
  per_class: ClassMetrics[];
}

/** head.json. */
export interface HeadInfo {
  format: typeof HEAD_FORMAT;
  version: 1;
  task: Task;
  /** The ONNX model whose feature tensor the head reads (absolute path when trained). */
  model: string;
  /** Graph tensor the head reads. */
  features: string;
  pooling: Pooling;
  d_model: number;
  classes: string[];
  metrics: HeadMetrics;
  train: HeadTrainConfig & { dataset: string };
}

export interface Head {
  info: HeadInfo;
  /** Weights on raw features [D, K] and bias [K]: logits = x @ W + b. */
  W_DK: Float32Array;
  b_K: Float32Array;
}

export async function saveHead(dir: string, head: Head): Promise<void> {
  const { d_model: D, classes } = head.info;
  await fsp.mkdir(dir, { recursive: true });
  await writeSafetensors(path.join(dir, HEAD_WEIGHTS), { W: tensor(head.W_DK, [D, classes.length]), b: tensor(head.b_K, [classes.length]) }, { format: HEAD_FORMAT });
  await writeFileAtomic(path.join(dir, HEAD_FILE), JSON.stringify({ ...head.info, train: snakeKeys(head.info.train) }, null, 2) + '\n');
}

/**
 * Compatibility: heads written before the task head was renamed from "probe" (by `vitsae probe train`) are
 * probe.json and probe.safetensors with the format "vitsae-probe"; they load as they are.
 */
const OLD_HEAD = { file: 'probe.json', weights: 'probe.safetensors', format: 'vitsae-probe' };

export async function loadHead(dir: string): Promise<Head> {
  const old = !(await exists(path.join(dir, HEAD_FILE))) && (await exists(path.join(dir, OLD_HEAD.file)));
  const { file, weights, format } = old ? OLD_HEAD : { file: HEAD_FILE, weights: HEAD_WEIGHTS, format: HEAD_FORMAT };
  const raw = await readJson<Omit<HeadInfo, 'format'> & { format: string }>(path.join(dir, file), `${dir} is not a head directory (train one with vitsae head train)`);
  if (raw.format !== format || raw.version !== 1) throw new UserError(`${dir}/${file} is not a ${format} version 1 file`);
  const info: HeadInfo = { ...raw, format: HEAD_FORMAT, train: camelKeys(raw.train ?? {}) };
  const { tensors } = await readSafetensors(path.join(dir, weights));
  const K = info.classes.length;
  const W = tensors.W;
  const b = tensors.b;
  if (!W || !b || W.shape.join() !== `${info.d_model},${K}` || b.shape.join() !== `${K}`) throw new UserError(`${dir}/${weights} must hold W [${info.d_model}, ${K}] and b [${K}] as ${file} says`);
  return { info, W_DK: toFloat32(W), b_K: toFloat32(b) };
}

/** Class probabilities of rows_ND under the head, probs_NK (softmax of x @ W + b). */
export function headProbabilities(head: Pick<Head, 'W_DK' | 'b_K'>, rows_ND: Float32Array, N: number): Float32Array {
  const K = head.b_K.length;
  const D = head.W_DK.length / K;
  const probs_NK = new Float32Array(N * K);
  if (N) native().sgemm(false, false, N, K, D, rows_ND, head.W_DK, probs_NK);
  for (let n = 0; n < N; n++) {
    const row = probs_NK.subarray(n * K, (n + 1) * K);
    for (let k = 0; k < K; k++) row[k] += head.b_K[k];
    softmaxInPlace(row);
  }
  return probs_NK;
}

function softmaxInPlace(row: Float32Array): void {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (let k = 0; k < row.length; k++) sum += row[k] = Math.exp(row[k] - max);
  for (let k = 0; k < row.length; k++) row[k] /= sum;
}

/** The most probable class of each row of probs_NK. */
export function argmaxRows(probs_NK: Float32Array, K: number): Int32Array {
  const out = new Int32Array(probs_NK.length / K);
  for (let n = 0; n < out.length; n++) {
    let best = 0;
    for (let k = 1; k < K; k++) if (probs_NK[n * K + k] > probs_NK[n * K + best]) best = k;
    out[n] = best;
  }
  return out;
}

const CLASSIFY_DATA = 'classification heads need a labelled dataset (class folders, a .csv with a label column, IDX with labels)';
const SEGMENT_DATA = 'segmentation heads are trained on a segmentation dataset (a folder with images/ and masks/)';

export interface HeadTrainOptions {
  task: Task;
  model: string;
  /** The labelled dataset (class labels for classify, images/ + masks/ for segment). */
  data?: string;
  /** A finished recording of the feature tensor to train on instead of recording `data`. */
  shards?: string;
  /** Feature tensor (block index or tensor name, as --layer); default the last residual-stream tensor. */
  features?: string;
  /** Class names; default the dataset's (folder names) or the class numbers. */
  classes?: string[];
  train: HeadTrainConfig;
  /** Recording settings when `data` is given (see RecordOptions). */
  inputSize?: [number, number];
  mean?: number[];
  std?: number[];
  recordBatch?: number;
  /** Execution provider for the recording (default cpu). */
  device?: Device;
  progress?: boolean;
  log?: (message: string) => void;
}

/**
 * Records the feature tensor over the dataset into a temporary directory (unless `shards` is given), fits the head
 * on a split of the images and measures it on the rest.
 */
export async function trainHead(opts: HeadTrainOptions): Promise<Head> {
  const bb = await openBackbone(opts.model, opts.device);
  const [features] = selectLayers(bb, [opts.features ?? '-1']);
  if (!opts.shards && !opts.data) throw new UserError('give the labelled dataset (--data) or a recording of the features (--shards)');
  if (!opts.shards) {
    // Refuse an unlabelled dataset before spending a recording on it.
    const ds = await openDataset(opts.data!);
    if (opts.task === 'segment' && !ds.mask) throw new UserError(`${opts.data} has no masks: ${SEGMENT_DATA}`);
    if (opts.task === 'classify' && ds.label(0) === null) throw new UserError(`${opts.data} has no class labels: ${CLASSIFY_DATA}`);
  }
  const tmp = opts.shards ? null : await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-head-'));
  try {
    const shards = opts.shards ?? path.join(tmp!, 'features');
    if (!opts.shards)
      await record({
        model: opts.model,
        layers: [features.name],
        data: opts.data!,
        out: shards,
        batch: opts.recordBatch,
        inputSize: opts.inputSize,
        mean: opts.mean,
        std: opts.std,
        device: opts.device,
        progress: opts.progress,
        log: opts.log,
      });
    const ds = await ShardDataset.open(shards);
    try {
      const data = ds.metadata.data as Partial<RecordingData>;
      const layerIdx = data.tensors?.indexOf(features.name) ?? -1;
      if (data.format !== 'vitsae-record' || layerIdx < 0) throw new UserError(`${shards} is not a vitsae recording of tensor ${features.name}; record it with vitsae record --layer ${features.name}`);
      const { rows_ND, labels_N, pooling } = await loadRows(ds, layerIdx, opts.task);
      // A loop, not Math.max(...labels_N): segmentation has a label per patch, too many for call arguments.
      const K = labels_N.reduce((max, label) => Math.max(max, label), -1) + 1;
      const named = opts.task === 'segment' ? data.mask_classes : data.classes;
      const classes = opts.classes?.length ? opts.classes : (named ?? Array.from({ length: K }, (_, k) => String(k)));
      if (classes.length < K) throw new UserError(`the labels go up to ${K - 1} but only ${classes.length} class names were given`);
      const R = rowsPerImage(pooling, { patchTokens: ds.metadata.content_tokens_per_example });
      const { train, test } = splitImages(ds.nExamples, opts.train);
      const rowsOf = (images: Int32Array) => Int32Array.from({ length: images.length * R }, (_, i) => images[Math.floor(i / R)] * R + (i % R));
      const { W_DK, b_K } = fitSoftmax(rows_ND, labels_N, rowsOf(train), ds.d, classes.length, opts.train, opts.progress ?? true);
      const testRows = rowsOf(test);
      const X_ND = new Float32Array(testRows.length * ds.d);
      testRows.forEach((r, i) => X_ND.set(rows_ND.subarray(r * ds.d, (r + 1) * ds.d), i * ds.d));
      const predicted = argmaxRows(headProbabilities({ W_DK, b_K }, X_ND, testRows.length), classes.length);
      const truth = Int32Array.from(testRows, (r) => labels_N[r]);
      const info: HeadInfo = {
        format: HEAD_FORMAT,
        version: 1,
        task: opts.task,
        model: path.resolve(opts.model),
        features: features.name,
        pooling,
        d_model: ds.d,
        classes,
        metrics: { train_images: train.length, test_images: test.length, ...heldOutMetrics(opts.task, truth, predicted, classes) },
        train: { ...opts.train, dataset: ds.metadata.dataset },
      };
      return { info, W_DK, b_K };
    } finally {
      await ds.close();
    }
  } finally {
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  }
}

/**
 * The head's rows of every recorded example and their labels: the example's class (classify) or each patch's
 * majority class from labels.bin (segment). Recordings store the CLS token (if any) then the patches, which is the
 * token layout below.
 */
async function loadRows(ds: ShardDataset, layerIdx: number, task: Task): Promise<{ rows_ND: Float32Array; labels_N: Int32Array; pooling: Pooling }> {
  const md = ds.metadata;
  const layout: TokenLayout = { layout: 'ntd', prefixTokens: md.cls_token ? 1 : 0, patchTokens: md.content_tokens_per_example, dModel: md.d_model, grid: null };
  const pooling: Pooling = task === 'segment' ? 'patches' : md.cls_token ? 'cls' : 'mean';
  let labels_N: Int32Array;
  if (task === 'segment') {
    const patchLabels = await ds.readLabels();
    if (!patchLabels) throw new UserError(`${ds.dir} has no patch labels (labels.bin): ${SEGMENT_DATA}`);
    labels_N = Int32Array.from(patchLabels);
  } else {
    const lines = readFileSync(path.join(ds.dir, EXAMPLES_FILE), 'utf8').split('\n').filter(Boolean).slice(0, ds.nExamples);
    labels_N = Int32Array.from(lines, (line, e) => {
      const label = (JSON.parse(line) as { label?: number }).label;
      if (typeof label !== 'number') throw new UserError(`example ${e} of ${ds.dir} has no class label: ${CLASSIFY_DATA}`);
      return label;
    });
  }
  const R = rowsPerImage(pooling, layout);
  const rows_ND = new Float32Array(ds.nExamples * R * ds.d);
  const chunk = 256;
  for (let e = 0; e < ds.nExamples; e += chunk) {
    const n = Math.min(chunk, ds.nExamples - e);
    const tokens = await ds.readTokens(layerIdx, e, n, 0, ds.tokensPerExample);
    rows_ND.set(taskRows(tokens, layout, n, pooling), e * R * ds.d);
  }
  return { rows_ND, labels_N, pooling };
}

/** A seeded split of whole images, so that the patches of one image never sit on both sides. */
function splitImages(n: number, cfg: HeadTrainConfig): { train: Int32Array; test: Int32Array } {
  const order = new Rng(cfg.seed, 0x9b0e).permutation(n);
  const nTest = Math.round(n * cfg.testFraction);
  if (nTest < 1 || n - nTest < 1) throw new UserError(`${n} images cannot be split into training and held-out images (--test-fraction ${cfg.testFraction}); use more data`);
  return { train: Int32Array.from(order.subarray(nTest)).sort(), test: Int32Array.from(order.subarray(0, nTest)).sort() };
}

/**
 * Multinomial logistic regression on rows `train` of X_ND with AdamW (decoupled weight decay) on standardised
 * features; returns the weights on raw features: W_raw[d] = W[d] / sd[d], b_raw = b - sum_d mu[d] W_raw[d].
 */
function fitSoftmax(X_ND: Float32Array, y_N: Int32Array, train: Int32Array, D: number, K: number, cfg: HeadTrainConfig, showProgress: boolean): { W_DK: Float32Array; b_K: Float32Array } {
  const mu_D = new Float64Array(D);
  const sd_D = new Float64Array(D);
  for (const r of train) for (let d = 0; d < D; d++) mu_D[d] += X_ND[r * D + d] / train.length;
  for (const r of train) for (let d = 0; d < D; d++) sd_D[d] += (X_ND[r * D + d] - mu_D[d]) ** 2 / train.length;
  // A constant feature carries nothing; dividing by ~0 would only amplify rounding.
  for (let d = 0; d < D; d++) sd_D[d] = sd_D[d] > 1e-12 ? Math.sqrt(sd_D[d]) : 1;

  const W_DK = new Float32Array(D * K);
  const b_K = new Float32Array(K);
  const m_DK = new Float32Array(D * K),
    v_DK = new Float32Array(D * K),
    mb = new Float32Array(K),
    vb = new Float32Array(K);
  const B = Math.min(cfg.batch, train.length);
  const Z_BD = new Float32Array(B * D),
    p_BK = new Float32Array(B * K),
    g_DK = new Float32Array(D * K);
  const rng = new Rng(cfg.seed, 0xada);
  const adam = new Adam({ lr: cfg.lr });
  const sgemm = native().sgemm;
  const bar = progress('head', cfg.epochs, { enabled: showProgress, unit: 'epochs' });
  for (let epoch = 0; epoch < cfg.epochs; epoch++) {
    const order = rng.shuffle(train.slice());
    for (let s = 0; s + B <= order.length; s += B) {
      for (let i = 0; i < B; i++) {
        const r = order[s + i];
        for (let d = 0; d < D; d++) Z_BD[i * D + d] = (X_ND[r * D + d] - mu_D[d]) / sd_D[d];
      }
      sgemm(false, false, B, K, D, Z_BD, W_DK, p_BK);
      const gb = new Float32Array(K);
      for (let i = 0; i < B; i++) {
        const row = p_BK.subarray(i * K, (i + 1) * K);
        for (let k = 0; k < K; k++) row[k] += b_K[k];
        softmaxInPlace(row);
        row[y_N[order[s + i]]] -= 1;
        for (let k = 0; k < K; k++) gb[k] += row[k] /= B;
      }
      sgemm(true, false, D, K, B, Z_BD, p_BK, g_DK);
      adam.step([
        { w: W_DK, grad: g_DK, m: m_DK, v: v_DK, weightDecay: cfg.weightDecay },
        { w: b_K, grad: gb, m: mb, v: vb },
      ]);
    }
    bar.update(epoch + 1);
  }
  bar.stop();
  for (let d = 0; d < D; d++) for (let k = 0; k < K; k++) W_DK[d * K + k] /= sd_D[d];
  for (let k = 0; k < K; k++) for (let d = 0; d < D; d++) b_K[k] -= mu_D[d] * W_DK[d * K + k];
  return { W_DK, b_K };
}

/** Accuracy and per-class recall; for segmentation also per-class IoU and their mean over classes that occur. */
function heldOutMetrics(task: Task, truth: Int32Array, predicted: Int32Array, classes: string[]): Omit<HeadMetrics, 'train_images' | 'test_images'> {
  const K = classes.length;
  const tp = new Float64Array(K),
    support = new Float64Array(K),
    claimed = new Float64Array(K);
  truth.forEach((y, i) => {
    support[y]++;
    claimed[predicted[i]]++;
    if (predicted[i] === y) tp[y]++;
  });
  const correct = tp.reduce((a, b) => a + b, 0);
  const iou = (k: number) => tp[k] / (support[k] + claimed[k] - tp[k]);
  const per_class = classes.map(
    (name, k): ClassMetrics => ({
      class: name,
      support: support[k],
      accuracy: support[k] ? tp[k] / support[k] : 0,
      ...(task === 'segment' ? { iou: support[k] + claimed[k] ? iou(k) : 0 } : {}),
    }),
  );
  if (task === 'classify') return { accuracy: correct / truth.length, per_class };
  const present = classes.map((_, k) => k).filter((k) => support[k] + claimed[k] > 0);
  return { accuracy: correct / truth.length, miou: present.reduce((a, k) => a + iou(k), 0) / present.length, per_class };
}
