/**
 * The images behind a recording's examples, as the model saw them: example e of the shards is line e of
 * `examples.jsonl` (a dataset key), decoded and resized/cropped with the recording's preprocessing, so patch p
 * of the shards covers exactly cell p of the patch grid on these pixels. Also the highlight overlay of exemplar
 * thumbnails.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import sharp from 'sharp';
import type { RecordingData } from '../backbone/record.js';
import { EXAMPLES_FILE } from '../shards/format.js';
import { type Dataset, openDataset } from '../data/images.js';
import { type ImageInput, loadPixels, type Preprocess } from '../data/preprocess.js';
import type { ShardMetadata } from '../shards/format.js';
import { UserError } from '../util/errors.js';
import { exists } from '../util/fs.js';
import { camelKeys } from '../util/json-keys.js';
import { plasma } from './colormap.js';

/** 8-bit RGB pixels, row-major [height, width, 3]. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

export interface ExampleInfo {
  key: string;
  label: number | null;
}

/**
 * saev and other recorders store no preprocessing: assume the common ImageNet-style view (shorter side to 256/224
 * of the crop, centre crop) at 224 pixels.
 */
const FALLBACK_PREPROCESS: Preprocess = { size: [224, 224], cropRatio: 256 / 224, interpolation: 'bilinear', mean: [0, 0, 0], std: [1, 1, 1], channelOrder: 'rgb', channels: 3 };

function isRecording(data: unknown): data is RecordingData {
  return typeof data === 'object' && data !== null && (data as RecordingData).format === 'vitsae-record';
}

/** The patch grid [rows, cols] of a recording: recorded by vitsae, else the square root of the patch count. */
export function patchGrid(md: ShardMetadata): [number, number] {
  if (isRecording(md.data) && md.data.grid) return md.data.grid;
  const side = Math.round(Math.sqrt(md.content_tokens_per_example));
  if (side * side !== md.content_tokens_per_example)
    throw new UserError(`the shards do not record a patch grid and ${md.content_tokens_per_example} patches are not a square; the patches cannot be placed on the image`);
  return [side, side];
}

export class ExampleImages {
  /** Byte offset of each line of examples.jsonl (plus the file end), read on first use. */
  private lineStarts: Float64Array | null = null;
  private keyIndex: Map<string, number> | null = null;
  private exampleByKey: Map<string, number> | null = null;

  private constructor(
    readonly dataset: Dataset,
    readonly preprocess: Preprocess,
    readonly nExamples: number,
    /** examples.jsonl, or null when examples map to dataset indices one to one (no manifest). */
    private readonly manifest: string | null,
  ) {}

  /** The images of the recording in `shardsDir`: from `images` if given, else the dataset the recording names. */
  static async open(shardsDir: string, md: ShardMetadata, images?: string): Promise<ExampleImages> {
    const source = images ?? md.dataset;
    let ds: Dataset;
    try {
      ds = await openDataset(source);
    } catch (e) {
      throw new UserError(`the images of ${shardsDir} cannot be opened (${(e as Error).message}); name the dataset with --images`);
    }
    const manifest = path.join(shardsDir, EXAMPLES_FILE);
    const hasManifest = await exists(manifest);
    if (!hasManifest && ds.size < md.n_examples) throw new UserError(`${source} has ${ds.size} images but the shards hold ${md.n_examples} examples and no ${EXAMPLES_FILE} to map them`);
    return new ExampleImages(ds, isRecording(md.data) ? camelKeys<Preprocess>(md.data.preprocess) : FALLBACK_PREPROCESS, md.n_examples, hasManifest ? manifest : null);
  }

  /** The model input size [H, W]. */
  get size(): [number, number] {
    return this.preprocess.size;
  }

  private async lines(): Promise<Float64Array> {
    if (this.lineStarts) return this.lineStarts;
    const starts = new Float64Array(this.nExamples + 1);
    let n = 0;
    let pos = 0;
    for await (const chunk of createReadStream(this.manifest!)) {
      const buf = chunk as Buffer;
      for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, i + 1)) if (n < this.nExamples) starts[++n] = pos + i + 1;
      pos += buf.length;
    }
    if (n < this.nExamples) throw new UserError(`${this.manifest} lists ${n} examples but the shards hold ${this.nExamples}; the recording is damaged`);
    this.lineStarts = starts;
    return starts;
  }

  /** The dataset key and label of example `e`. */
  async info(e: number): Promise<ExampleInfo> {
    this.check(e);
    if (!this.manifest) return { key: this.dataset.key(e), label: this.dataset.label(e) };
    const starts = await this.lines();
    const fh = await fsp.open(this.manifest, 'r');
    try {
      const buf = Buffer.alloc(starts[e + 1] - starts[e]);
      await fh.read(buf, 0, buf.length, starts[e]);
      const line = JSON.parse(buf.toString('utf8')) as { file: string; label?: number };
      return { key: line.file, label: line.label ?? null };
    } finally {
      await fh.close();
    }
  }

  /** The example recorded from dataset key `key`, or undefined (for matching examples across recordings). */
  async exampleOf(key: string): Promise<number | undefined> {
    if (!this.manifest) return undefined;
    if (!this.exampleByKey) {
      const m = new Map<string, number>();
      let e = 0;
      for await (const line of createInterface({ input: createReadStream(this.manifest), crlfDelay: Infinity }))
        if (line && e < this.nExamples) m.set((JSON.parse(line) as { file: string }).file, e++);
      this.exampleByKey = m;
    }
    return this.exampleByKey.get(key);
  }

  private check(e: number): void {
    if (!(Number.isInteger(e) && e >= 0 && e < this.nExamples)) throw new RangeError(`example ${e} is outside [0, ${this.nExamples})`);
  }

  /** The dataset index of example `e`. */
  private async datasetIndex(e: number): Promise<number> {
    if (!this.manifest) return e;
    const { key } = await this.info(e);
    if (!this.keyIndex) {
      const m = new Map<string, number>();
      for (let i = 0; i < this.dataset.size; i++) m.set(this.dataset.key(i), i);
      this.keyIndex = m;
    }
    const i = this.keyIndex.get(key);
    if (i === undefined) throw new UserError(`${key} (example ${e}) is not in ${this.dataset.source}; the dataset changed since recording, pass the original one with --images`);
    return i;
  }

  /** Example `e`'s image as the dataset holds it (file bytes or raw pixels), before any preprocessing. */
  async image(e: number): Promise<ImageInput> {
    return this.dataset.image(await this.datasetIndex(e));
  }

  /** Example `e` as the model saw it: resized and cropped by the recording's preprocessing, in 8-bit RGB. */
  async modelView(e: number): Promise<RgbImage> {
    return modelViewOf(await this.image(e), this.preprocess);
  }
}

/** Any image as a model with preprocessing `pp` sees it: resized and cropped, in 8-bit RGB. */
export async function modelViewOf(input: ImageInput, pp: Preprocess): Promise<RgbImage> {
  const [H, W] = pp.size;
  const plane = H * W;
  const px_CHW = new Float32Array(pp.channels * plane);
  await loadPixels(input, pp, px_CHW);
  // Undo the normalisation; grey models see one channel, shown as grey.
  const data = new Uint8Array(plane * 3);
  for (let c = 0; c < 3; c++) {
    const src = pp.channels === 1 ? 0 : pp.channelOrder === 'bgr' ? 2 - c : c;
    const m = pp.mean[src],
      s = pp.std[src];
    for (let i = 0; i < plane; i++) data[i * 3 + c] = Math.max(0, Math.min(255, Math.round((px_CHW[src * plane + i] * s + m) * 255)));
  }
  return { data, width: W, height: H };
}

/** Resizes an image so that its longer side is `size` (nearest neighbour when enlarging 2x or more, to stay crisp). */
export async function resizeRgb(img: RgbImage, size: number): Promise<RgbImage> {
  const scale = size / Math.max(img.width, img.height);
  const width = Math.max(1, Math.round(img.width * scale));
  const height = Math.max(1, Math.round(img.height * scale));
  const { data } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(width, height, { fit: 'fill', kernel: scale >= 2 ? 'nearest' : 'lanczos3' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height };
}

/** Highest opacity of a highlight (at the latent's maximum): the image stays visible under the strongest patch. */
const MAX_ALPHA = 0.75;

/**
 * The image with each patch tinted by plasma(value) at opacity proportional to value: `values_P` are per-patch
 * values on `grid` (row-major), scaled by `vmax`; patches with value 0 are left as they are.
 */
export function highlight(img: RgbImage, grid: [number, number], values_P: ArrayLike<number>, vmax: number): RgbImage {
  const [gh, gw] = grid;
  const { width: w, height: h } = img;
  const out = Uint8Array.from(img.data);
  const colours = Array.from(values_P, (v) => (v > 0 && vmax > 0 ? { rgb: plasma(v / vmax), a: MAX_ALPHA * Math.min(1, v / vmax) } : null));
  for (let y = 0; y < h; y++) {
    const row = Math.min(gh - 1, Math.floor((y * gh) / h)) * gw;
    for (let x = 0; x < w; x++) {
      const c = colours[row + Math.min(gw - 1, Math.floor((x * gw) / w))];
      if (!c) continue;
      const o = (y * w + x) * 3;
      for (let ch = 0; ch < 3; ch++) out[o + ch] = Math.round(out[o + ch] * (1 - c.a) + c.rgb[ch] * c.a);
    }
  }
  return { data: out, width: w, height: h };
}

/** Encodes RGB pixels as WebP. */
export function webp(img: RgbImage, quality = 82): Promise<Buffer> {
  // effort 1 (of 0-6) encodes thumbnails about twice as fast as the default 4 at nearly the same size.
  return sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .webp({ quality, effort: 1 })
    .toBuffer();
}
