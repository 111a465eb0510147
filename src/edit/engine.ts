/**
 * The edit engine: does the model's frozen task head change its answer when an SAE latent is changed on chosen
 * patches? The model is split at the SAE's layer: the front (image -> layer tensor) runs once per image and is
 * cached; an edit changes the layer's patch tokens and reruns only the back (layer tensor -> the head's feature
 * tensor) and the head, so a slider costs one back run.
 *
 * For an edited patch token x with SAE latents f, reconstruction x_hat = decode(f) and edited latents f':
 *   x' = x - x_hat + decode(f') = x + (f' - f) @ W_dec / input_scale
 * (b_dec cancels), so the reconstruction error is kept and only the changed latents' decoder rows are summed; an
 * empty edit leaves x bit for bit. Prefix (CLS, register) tokens and unedited patches are never touched.
 *
 * Shape letters: N images, P patches per image, D layer width, S latents, R head rows per image, K classes.
 */
import { createHash } from 'node:crypto';
import * as ort from 'onnxruntime-node';
import type { Device } from '../backbone/device.js';
import { type Backbone, createSession, declaredSize, fixedBatch, inputChannels, inputSize, type Layer, openBackbone, selectLayers, type TokenLayout, tokenLayout } from '../backbone/backbone.js';
import { extractModel, frontModel, indexGraph } from '../backbone/graph.js';
import { ImageError, type ImageInput, loadPixels, type Preprocess, readModelCard, resolvePreprocess } from '../data/preprocess.js';
import type { Sae } from '../sae/model.js';
import { openSae } from '../interop/index.js';
import type { SparseActs } from '../sae/native.js';
import { OrderedTokenLoader, ShardDataset } from '../shards/index.js';
import { UserError } from '../util/errors.js';
import type { EditMode, Task } from './kinds.js';
import { argmaxRows, loadHead, type Head, headProbabilities } from './head.js';
import { addToPatches, readPatches, rowsPerImage, taskRows } from './tokens.js';

/** One intervention on one latent: f'[latent] = value (set), f + value (add) or f * value (scale) on `patches`. */
export interface Edit {
  latent: number;
  /** Patch indices (row-major over the patch grid), or every patch. */
  patches: number[] | 'all';
  value: number;
  mode: EditMode;
  /** The value is a multiple of the latent's maximum observed activation (the engine's `maxima`). */
  relative?: boolean;
}

export interface EngineOptions {
  model: string;
  /** An SAE (or its path) trained on the layer's patch tokens. */
  sae: string | Sae;
  /** A head (or its directory) on a tensor computed from the layer. */
  head: string | Head;
  /** The SAE's layer: block index or tensor name; default the layer of the shards the SAE was trained on. */
  layer?: string;
  inputSize?: [number, number];
  mean?: number[];
  std?: number[];
  /** Each latent's maximum observed activation, for relative edits (see latentMaxima). */
  maxima?: ArrayLike<number>;
  /** Prepared image batches kept for repeated edits (least recently used dropped); default 32. */
  cacheSize?: number;
  /** Execution provider (default cpu). */
  device?: Device;
}

/** The task head's answer for a batch: one row per image (classify) or per patch (segment). */
export interface Predictions {
  rows: number;
  /** probs_NRK. */
  probs: Float32Array;
  /** labels_NR: the most probable class of each row. */
  labels: Int32Array;
}

/** A batch of images through the front: what every edit of them starts from. */
export interface Prepared {
  readonly n: number;
  /** The layer tensor of the N images in the model's layout (the back's input). */
  readonly acts: Float32Array;
  /** The preprocessed images, for backs that also read the model input (a path bypassing the layer). */
  readonly pixels: Float32Array;
  /** SAE latents of the patch tokens: CSR row n * P + p is patch p of image n. */
  readonly latents: SparseActs<Float32Array>;
  readonly before: Predictions;
}

/** A class of a head row and its probability. */
export interface RankedClass {
  class: number;
  name: string;
  prob: number;
}

/** The k most probable classes of head row `row`, most probable first. */
export function topClasses(p: Predictions, row: number, classes: string[], k: number): RankedClass[] {
  const K = classes.length;
  const probs = p.probs.subarray(row * K, (row + 1) * K);
  return Array.from(probs.keys())
    .sort((a, b) => probs[b] - probs[a])
    .slice(0, k)
    .map((c) => ({ class: c, name: classes[c], prob: probs[c] }));
}

export interface EditResult {
  before: Predictions;
  after: Predictions;
  /** The change of the layer's patch tokens, delta_NPD = decode(f') - decode(f) (zero on unedited patches). */
  delta: Float32Array;
}

/** Images per onnxruntime run when the export does not fix the batch. */
const CHUNK = 64;

/** An input of a batched run: the values of all N images and one image's dims. */
interface Feed {
  name: string;
  data: Float32Array;
  dims: number[];
}

export class EditEngine {
  private readonly cache = new Map<string, Promise<Prepared>>();

  private constructor(
    readonly bb: Backbone,
    readonly preprocess: Preprocess,
    /** The SAE's layer and its token layout. */
    readonly layer: Layer,
    readonly layout: TokenLayout,
    readonly featureLayout: TokenLayout,
    readonly sae: Sae,
    readonly head: Head,
    private readonly front: ort.InferenceSession,
    /** Layer tensor (+ model input) -> feature tensor; null when the head reads the layer itself. */
    private readonly back: ort.InferenceSession | null,
    private readonly backReadsPixels: boolean,
    /** Decoder rows in raw units: W_dec / input_scale, [S, D]. */
    private readonly decoder_SD: Float32Array,
    private maxima: Float32Array | null,
    private readonly cacheSize: number,
  ) {}

  static async open(opts: EngineOptions): Promise<EditEngine> {
    const bb = await openBackbone(opts.model, opts.device);
    const sae = typeof opts.sae === 'string' ? await openSae(opts.sae) : opts.sae;
    const head = typeof opts.head === 'string' ? await loadHead(opts.head) : opts.head;
    const card = readModelCard(opts.model);
    const pp = resolvePreprocess(card, opts, declaredSize(bb), inputChannels(bb));
    inputSize(bb, pp.size);
    const layerSpec = opts.layer ?? (await saeLayerTensor(sae));
    if (!layerSpec) throw new UserError('the SAE does not name the layer it was trained on (its shards are gone or were not recorded by vitsae); give --layer');
    const [layer] = selectLayers(bb, [layerSpec]);
    const [features] = selectLayers(bb, [head.info.features]);
    const layout = await tokenLayout(bb, [layer], pp.size, card?.prefix_tokens);
    const featureLayout = await tokenLayout(bb, [features], pp.size, card?.prefix_tokens);
    if (sae.dModel !== layout.dModel) throw new UserError(`the SAE reads ${sae.dModel} values per token but layer ${layer.name} has ${layout.dModel}`);
    if (head.info.d_model !== featureLayout.dModel) throw new UserError(`the head reads ${head.info.d_model} values per row but ${features.name} has ${featureLayout.dModel}`);
    if (head.info.pooling === 'cls' && featureLayout.prefixTokens === 0) throw new UserError(`the head reads a CLS token but ${features.name} has none`);
    if (head.info.pooling === 'patches' && featureLayout.patchTokens !== layout.patchTokens)
      throw new UserError(`the head labels ${featureLayout.patchTokens} patches of ${features.name} but the SAE's layer has ${layout.patchTokens}; edits and patch predictions must share a grid`);

    let back: ort.InferenceSession | null = null;
    let backReadsPixels = false;
    if (features.name !== layer.name) {
      const model = extractModel(bb.model, [layer.name], [features.name], bb.index);
      if (!indexGraph(model.graph!).consumers.has(layer.name))
        throw new UserError(`${features.name} (the head's features) is not computed from ${layer.name}: an edit there cannot change the head's answer`);
      backReadsPixels = (model.graph!.input ?? []).some((v) => v.name === bb.input.name);
      back = await createSession(model, bb);
    }
    const front = await createSession(frontModel(bb.model, [layer.name], bb.index), bb);
    const decoder_SD = sae.core.getTensor('W_dec').slice();
    const inv = 1 / sae.config.input_scale;
    for (let i = 0; i < decoder_SD.length; i++) decoder_SD[i] *= inv;
    const engine = new EditEngine(bb, pp, layer, layout, featureLayout, sae, head, front, back, backReadsPixels, decoder_SD, null, opts.cacheSize ?? 32);
    if (opts.maxima) engine.setMaxima(opts.maxima);
    return engine;
  }

  get task(): Task {
    return this.head.info.task;
  }

  get classes(): string[] {
    return this.head.info.classes;
  }

  /** Head rows per image: 1 (classify) or the patch count (segment). */
  get rows(): number {
    return rowsPerImage(this.head.info.pooling, this.featureLayout);
  }

  /** The maxima relative edits scale by, one per latent. */
  setMaxima(maxima: ArrayLike<number>): void {
    if (maxima.length !== this.sae.dSae) throw new UserError(`${maxima.length} latent maxima given for an SAE of ${this.sae.dSae} latents`);
    this.maxima = Float32Array.from(maxima);
  }

  /**
   * Runs the front, the SAE and the unedited back on a batch of images. With `cache` (the default) the result is
   * kept, keyed by the images' bytes, so that editing the same images again starts from the back.
   */
  prepare(images: ImageInput[], cache = true): Promise<Prepared> {
    if (!images.length) throw new UserError('no images to edit');
    if (!cache) return this.compute(images);
    const key = imagesKey(images);
    let hit = this.cache.get(key);
    if (hit) this.cache.delete(key);
    else {
      hit = this.compute(images);
      hit.catch(() => this.cache.delete(key));
    }
    this.cache.set(key, hit);
    if (this.cache.size > this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
    return hit;
  }

  private async compute(images: ImageInput[]): Promise<Prepared> {
    const [H, W] = this.preprocess.size;
    const C = this.preprocess.channels;
    const N = images.length;
    const pixels = new Float32Array(N * C * H * W);
    await Promise.all(
      images.map((img, i) =>
        loadPixels(img, this.preprocess, pixels.subarray(i * C * H * W, (i + 1) * C * H * W)).catch((e: Error) => {
          throw e instanceof ImageError ? new UserError(images.length > 1 ? `image ${i}: ${e.message}` : e.message) : e;
        }),
      ),
    );
    const acts = await this.runBatched(this.front, [{ name: this.bb.input.name, data: pixels, dims: [C, H, W] }], this.layer.name, N);
    const latents = await this.sae.encode(readPatches(acts, this.layout, N));
    const partial = { n: N, acts, pixels, latents };
    return { ...partial, before: await this.predict(partial, null) };
  }

  /** The latents firing on patch p of image n, strongest first. */
  patchLatents(prepared: Prepared, n: number, p: number): { latent: number; value: number }[] {
    const { rowptr, idx, val } = prepared.latents;
    const row = n * this.layout.patchTokens + p;
    const out = [];
    for (let e = rowptr[row]; e < rowptr[row + 1]; e++) if (val[e] !== 0) out.push({ latent: idx[e], value: val[e] });
    return out.sort((a, b) => b.value - a.value);
  }

  /** delta_NPD = decode(f') - decode(f) of every patch of the batch under `edits` (applied in order). */
  delta(prepared: Pick<Prepared, 'n' | 'latents'>, edits: Edit[]): Float32Array {
    const { patchTokens: P, dModel: D } = this.layout;
    const S = this.sae.dSae;
    const touched = edits.map((e) => {
      if (!(Number.isInteger(e.latent) && e.latent >= 0 && e.latent < S)) throw new UserError(`latent ${e.latent} is outside the SAE's 0..${S - 1}`);
      if (!Number.isFinite(e.value)) throw new UserError(`the edit of latent ${e.latent} has value ${e.value}`);
      if (e.relative && !this.maxima) throw new UserError("relative edits need the latents' maximum activations (EngineOptions.maxima, or see latentMaxima)");
      const mask = new Uint8Array(P).fill(e.patches === 'all' ? 1 : 0);
      if (e.patches !== 'all')
        for (const p of e.patches) {
          if (!(Number.isInteger(p) && p >= 0 && p < P)) throw new UserError(`patch ${p} is outside the ${P} patches (0..${P - 1})`);
          mask[p] = 1;
        }
      return mask;
    });
    const { rowptr, idx, val } = prepared.latents;
    const delta_NPD = new Float32Array(prepared.n * P * D);
    for (let row = 0; row < prepared.n * P; row++) {
      const p = row % P;
      if (!touched.some((mask) => mask[p])) continue;
      const edited = new Map<number, number>();
      const original = (s: number) => {
        for (let e = rowptr[row]; e < rowptr[row + 1]; e++) if (idx[e] === s) return val[e];
        return 0;
      };
      edits.forEach((e, j) => {
        if (!touched[j][p]) return;
        const cur = edited.get(e.latent) ?? original(e.latent);
        const v = e.value * (e.relative ? this.maxima![e.latent] : 1);
        edited.set(e.latent, e.mode === 'set' ? v : e.mode === 'add' ? cur + v : cur * v);
      });
      for (const [s, v] of edited) {
        const change = v - original(s);
        if (change === 0) continue;
        for (let d = 0; d < D; d++) delta_NPD[row * D + d] += change * this.decoder_SD[s * D + d];
      }
    }
    return delta_NPD;
  }

  /** Latent s's decoder row in raw units ([D], a view): the direction decode moves along as f[s] grows. */
  decoderRow(s: number): Float32Array {
    const D = this.layout.dModel;
    return this.decoder_SD.subarray(s * D, (s + 1) * D);
  }

  /** The layer tensor the back is fed: the batch's activations with delta_NPD added to the patch tokens. */
  backInput(prepared: Pick<Prepared, 'n' | 'acts'>, delta_NPD: Float32Array | null): Float32Array {
    const x = prepared.acts.slice();
    if (delta_NPD) addToPatches(x, this.layout, prepared.n, delta_NPD);
    return x;
  }

  /** The task head's answer after adding delta_NPD (any change of the patch tokens; null for none) at the layer. */
  async predict(prepared: Pick<Prepared, 'n' | 'acts' | 'pixels'>, delta_NPD: Float32Array | null): Promise<Predictions> {
    const N = prepared.n;
    const x = this.backInput(prepared, delta_NPD);
    let features = x;
    if (this.back) {
      const [H, W] = this.preprocess.size;
      const feeds: Feed[] = [{ name: this.layer.name, data: x, dims: layoutDims(this.layout) }];
      if (this.backReadsPixels) feeds.push({ name: this.bb.input.name, data: prepared.pixels, dims: [this.preprocess.channels, H, W] });
      features = await this.runBatched(this.back, feeds, this.head.info.features, N);
    }
    const R = this.rows;
    const probs = headProbabilities(this.head, taskRows(features, this.featureLayout, N, this.head.info.pooling), N * R);
    return { rows: R, probs, labels: argmaxRows(probs, this.classes.length) };
  }

  /** Applies `edits` to every image of the batch and returns the head's answers before and after. */
  async edit(prepared: Prepared, edits: Edit[]): Promise<EditResult> {
    const delta = this.delta(prepared, edits);
    return { before: prepared.before, after: await this.predict(prepared, delta), delta };
  }

  async close(): Promise<void> {
    this.cache.clear();
    await this.front.release();
    await this.back?.release();
  }

  /**
   * Runs `session` over N images in chunks: the export's fixed batch (the last chunk padded with zeros) or up to
   * CHUNK images; returns `output` for the N images.
   */
  private async runBatched(session: ort.InferenceSession, feeds: Feed[], output: string, N: number): Promise<Float32Array> {
    const fixed = fixedBatch(this.bb);
    const step = fixed ?? CHUNK;
    let out: Float32Array | null = null;
    for (let i = 0; i < N; i += step) {
      const m = Math.min(step, N - i);
      const rows = fixed ?? m;
      const inputs: Record<string, ort.Tensor> = {};
      for (const f of feeds) {
        const per = f.dims.reduce((a, b) => a * b, 1);
        const data = new Float32Array(rows * per);
        data.set(f.data.subarray(i * per, (i + m) * per));
        inputs[f.name] = new ort.Tensor('float32', data, [rows, ...f.dims]);
      }
      const result = (await session.run(inputs, [output]))[output].data as Float32Array;
      const per = result.length / rows;
      out ??= new Float32Array(N * per);
      out.set(result.subarray(0, m * per), i * per);
    }
    return out!;
  }
}

/** One image's dims in a tensor of this layout. */
function layoutDims(layout: TokenLayout): number[] {
  return layout.layout === 'nchw' ? [layout.dModel, ...layout.grid!] : [layout.prefixTokens + layout.patchTokens, layout.dModel];
}

/** A cache key for a batch of images: a hash of their bytes (and raw geometry). */
function imagesKey(images: ImageInput[]): string {
  const h = createHash('sha1');
  for (const img of images) {
    if (Buffer.isBuffer(img)) h.update('file').update(img);
    else h.update(`raw ${img.width}x${img.height}x${img.channels}`).update(img.data);
  }
  return h.digest('hex');
}

/** The graph tensor of the layer the SAE was trained on, read from its training shards' metadata, if they exist. */
export async function saeLayerTensor(sae: Sae): Promise<string | undefined> {
  const data = sae.config.data;
  if (!data) return undefined;
  const ds = await ShardDataset.open(data.shards).catch(() => null);
  if (!ds) return undefined;
  try {
    const tensors = (ds.metadata.data as { tensors?: string[] } | null)?.tensors;
    return tensors?.[ds.layerIndex(data.layer)];
  } finally {
    await ds.close();
  }
}

/**
 * Each latent's maximum activation over the patch tokens of a recording (at most `maxTokens` of them), the scale
 * of relative edits. `layer` is a metadata.json layers value or a negative index.
 */
export async function latentMaxima(sae: Sae, shards: string, layer: number, maxTokens = Infinity): Promise<Float32Array> {
  const ds = await ShardDataset.open(shards);
  try {
    if (ds.d !== sae.dModel) throw new UserError(`${shards} has d_model ${ds.d} but the SAE reads ${sae.dModel}`);
    const max_S = new Float32Array(sae.dSae);
    let seen = 0;
    for await (const b of new OrderedTokenLoader(ds, { layer, tokens: 'patches' }, 4096).batches()) {
      const rows = Math.min(b.acts_BD.length / ds.d, maxTokens - seen);
      const { idx, val } = await sae.encode(b.acts_BD.subarray(0, rows * ds.d));
      for (let e = 0; e < idx.length; e++) if (val[e] > max_S[idx[e]]) max_S[idx[e]] = val[e];
      seen += rows;
      if (seen >= maxTokens) break;
    }
    return max_S;
  } finally {
    await ds.close();
  }
}
