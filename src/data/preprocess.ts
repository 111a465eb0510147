/**
 * Image preprocessing per model: resize, centre crop, scale to [0, 1], normalise with mean/std, channel order.
 * Settings come from a preset (CLIP, DINOv2, SigLIP, ImageNet) overridden by a JSON model card next to the .onnx
 * file (`model.onnx` -> `model.json`) and then by command-line flags. Decoding runs in sharp (libvips), whose
 * work happens on libuv's worker threads, so images decode while the recorder's onnxruntime worker computes.
 *
 * Array names carry their shape: pixels_CHW is [channels, height, width], px_HWC decoded bytes [height, width,
 * channels], mask_HW [height, width].
 */
import { readFileSync, existsSync } from 'node:fs';
import sharp, { type KernelEnum, type Metadata, type Sharp } from 'sharp';
import type { ConfigOf, ConfigSpec } from '../util/config.js';
import { UserError } from '../util/errors.js';

export type Interpolation = 'nearest' | 'bilinear' | 'bicubic' | 'lanczos';

export interface Preprocess {
  /** Model input [H, W]. */
  size: [number, number];
  /**
   * The image is resized to cover size × cropRatio and centre-cropped to size (resize 256 then crop 224 is 256/224);
   * null resizes it to size exactly, ignoring its aspect ratio.
   */
  cropRatio: number | null;
  interpolation: Interpolation;
  /** One value per input channel, applied to pixels scaled to [0, 1]. */
  mean: number[];
  std: number[];
  channelOrder: 'rgb' | 'bgr';
  /** Input channels: 3 (colour) or 1 (grey). */
  channels: 1 | 3;
}

/** The JSON model card. Every field is optional; `preset` picks the defaults. */
export interface ModelCard {
  preset?: PresetName;
  /** Model family and checkpoint recorded in shard metadata. */
  family?: string;
  ckpt?: string;
  input_size?: number | [number, number];
  /** Shorter side before the centre crop, at input_size; null for a plain resize to input_size. */
  resize?: number | null;
  interpolation?: Interpolation;
  mean?: number[];
  std?: number[];
  channel_order?: 'rgb' | 'bgr';
  /** CLS and register tokens before the patches, when the model has no patch-embedding convolution to count them. */
  prefix_tokens?: number;
}

export type PresetName = 'clip' | 'dinov2' | 'siglip' | 'imagenet';

const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];

/** The conventions of the original preprocessing code of each family, at 224 pixels. */
export const PRESETS: Record<PresetName, Required<Pick<ModelCard, 'input_size' | 'resize' | 'interpolation' | 'mean' | 'std'>>> = {
  clip: { input_size: 224, resize: 224, interpolation: 'bicubic', mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711] },
  dinov2: { input_size: 224, resize: 256, interpolation: 'bicubic', mean: IMAGENET_MEAN, std: IMAGENET_STD },
  siglip: { input_size: 224, resize: null, interpolation: 'bicubic', mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
  imagenet: { input_size: 224, resize: 256, interpolation: 'bilinear', mean: IMAGENET_MEAN, std: IMAGENET_STD },
};

/** `224` or `224x320` (height x width). */
export function parseSize(text: string, what = '--input-size'): [number, number] {
  const m = /^\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?$/.exec(text);
  const hw = m ? [Number(m[1]), Number(m[2] ?? m[1])] : [];
  if (hw.length !== 2 || hw.some((v) => v < 1)) throw new UserError(`${what} ${JSON.stringify(text)}: expected N or HxW, e.g. 224 or 224x320`);
  return hw as [number, number];
}

export function modelCardPath(modelFile: string): string {
  return modelFile.replace(/\.onnx$/i, '') + '.json';
}

/** The model card beside `modelFile`, or null if there is none. */
export function readModelCard(modelFile: string): ModelCard | null {
  const file = modelCardPath(modelFile);
  if (!existsSync(file)) return null;
  let card: unknown;
  try {
    card = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`model card ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof card !== 'object' || card === null || Array.isArray(card)) throw new UserError(`model card ${file} must be a JSON object`);
  const c = card as ModelCard;
  if (c.preset !== undefined && !(c.preset in PRESETS)) throw new UserError(`model card ${file}: preset must be one of ${Object.keys(PRESETS).join(', ')}`);
  if (c.interpolation !== undefined && !['nearest', 'bilinear', 'bicubic', 'lanczos'].includes(c.interpolation))
    throw new UserError(`model card ${file}: interpolation must be nearest, bilinear, bicubic or lanczos`);
  return c;
}

const hw = (s: number | [number, number]): [number, number] => (typeof s === 'number' ? [s, s] : s);

/** The image size a model is fed: the flag's, else the card's, else the model's declared one, else the preset's. */
export function chooseInputSize(card: ModelCard | null, override: [number, number] | undefined, declared: [number, number] | undefined): [number, number] {
  return override ?? (card?.input_size !== undefined ? hw(card.input_size) : (declared ?? hw(PRESETS[card?.preset ?? 'imagenet'].input_size)));
}

/** The preprocessing flags of every command that runs a model; they override the model card. */
export const preprocessSpec = {
  inputSize: { kind: 'string', default: '', doc: 'model input size N or HxW (overrides the model card)' },
  mean: { kind: 'numbers', default: [], doc: 'per-channel mean on [0, 1] pixels (overrides the model card)' },
  std: { kind: 'numbers', default: [], doc: 'per-channel std (overrides the model card)' },
} as const satisfies ConfigSpec;

/** The overrides those flags give (unset ones left to the model card). */
export function overridesOf(c: ConfigOf<typeof preprocessSpec>): PreprocessOverrides {
  return { inputSize: c.inputSize ? parseSize(c.inputSize) : undefined, mean: c.mean.length ? c.mean : undefined, std: c.std.length ? c.std : undefined };
}

export interface PreprocessOverrides {
  inputSize?: [number, number];
  mean?: number[];
  std?: number[];
}

/**
 * Settings for a model: preset, then card, then overrides. Without a size anywhere the model's declared input
 * size is used; a changed size keeps the preset's resize-to-crop ratio.
 */
export function resolvePreprocess(card: ModelCard | null, overrides: PreprocessOverrides, declared: [number, number] | undefined, channels: number): Preprocess {
  const c = { ...PRESETS[card?.preset ?? 'imagenet'], ...card };
  const size = chooseInputSize(card, overrides.inputSize, declared);
  const mean = overrides.mean ?? c.mean;
  const std = overrides.std ?? c.std;
  if (channels !== 1 && channels !== 3) throw new UserError(`the model takes ${channels}-channel images; vitsae feeds 1 (grey) or 3 (colour)`);
  for (const [name, v] of [
    ['mean', mean],
    ['std', std],
  ] as const)
    if (v.length !== channels || v.some((x) => !Number.isFinite(x))) throw new UserError(`${name} needs ${channels} numbers (one per input channel), got [${v.join(', ')}]`);
  if (std.some((x) => x === 0)) throw new UserError('std must not contain 0');
  return {
    size,
    // `resize` refers to the card's (or preset's) input size.
    cropRatio: c.resize === null ? null : c.resize / Math.min(...hw(c.input_size)),
    interpolation: c.interpolation,
    mean,
    std,
    channelOrder: c.channel_order ?? 'rgb',
    channels,
  };
}

/** An encoded image file, or raw 8-bit pixels (IDX datasets). */
export type ImageInput = Buffer | { data: Uint8Array; width: number; height: number; channels: 1 | 3 };

const KERNEL: Record<Interpolation, keyof KernelEnum> = { nearest: 'nearest', bilinear: 'linear', bicubic: 'cubic', lanczos: 'lanczos3' };

/** An image's decode failure, worded for a per-file error message. */
export class ImageError extends Error {}

interface Opened {
  img: Sharp;
  width: number;
  height: number;
  /** Colour channels, alpha excluded. */
  colours: number;
  palette: boolean;
}

async function open(input: ImageInput): Promise<Opened> {
  if (!Buffer.isBuffer(input)) {
    const { data, width, height, channels } = input;
    return { img: sharp(data, { raw: { width, height, channels } }), width, height, colours: channels, palette: false };
  }
  if (input.length === 0) throw new ImageError('empty file');
  let m: Metadata;
  // failOn 'error' rejects truncated files instead of returning a half-grey image.
  const img = sharp(input, { failOn: 'error' });
  try {
    m = await img.metadata();
  } catch (e) {
    throw unreadable(e);
  }
  if (!m.width || !m.height) throw new ImageError('image has no pixels');
  return { img, width: m.width, height: m.height, colours: (m.channels ?? 1) - (m.hasAlpha ? 1 : 0), palette: m.isPalette ?? false };
}

/** Resize and centre crop as `pp` says; the result is exactly pp.size. */
function geometry(img: Sharp, width: number, height: number, pp: Preprocess, kernel: keyof KernelEnum): Sharp {
  const [H, W] = pp.size;
  if (pp.cropRatio === null) return img.resize(W, H, { fit: 'fill', kernel });
  const box = resizeCropBox(width, height, pp.size, pp.cropRatio);
  return img.resize(box.width, box.height, { fit: 'fill', kernel }).extract({ left: box.left, top: box.top, width: W, height: H });
}

/**
 * The resized size and crop offset of a resize-then-centre-crop, with torchvision's (and Hugging Face's) integer
 * arithmetic, so that a recording sees the pixels the model was trained on: the side that sets the scale gets its
 * target exactly, the other is truncated (`int(target * long / short)`), and the crop offset is Python's
 * `round((resized - crop) / 2)`, which rounds halves to even.
 */
export function resizeCropBox(width: number, height: number, [H, W]: [number, number], cropRatio: number): { width: number; height: number; left: number; top: number } {
  const byHeight = (H * cropRatio) / height >= (W * cropRatio) / width;
  const rh = byHeight ? Math.round(H * cropRatio) : Math.floor((Math.round(W * cropRatio) * height) / width);
  const rw = byHeight ? Math.floor((Math.round(H * cropRatio) * width) / height) : Math.round(W * cropRatio);
  const [fw, fh] = [Math.max(W, rw), Math.max(H, rh)];
  return { width: fw, height: fh, left: roundHalfEven((fw - W) / 2), top: roundHalfEven((fh - H) / 2) };
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

async function rawPixels(img: Sharp): Promise<Buffer> {
  try {
    return await img.raw().toBuffer();
  } catch (e) {
    throw unreadable(e);
  }
}

/** libvips repeats its warnings line by line; one mention of each reads better. */
function unreadable(e: unknown): ImageError {
  const lines = [
    ...new Set(
      (e as Error).message
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean),
    ),
  ];
  return new ImageError(`not a readable image (${lines.join('; ')})`);
}

/**
 * Decodes, converts (grey, palette, alpha and 16-bit images become 8-bit RGB or grey), resizes, crops and
 * normalises one image into `out` (pixels_CHW, float32 of pp.channels × H × W).
 */
export async function loadPixels(input: ImageInput, pp: Preprocess, out: Float32Array): Promise<void> {
  const { img, width, height } = await open(input);
  const px_HWC = await rawPixels(geometry(img.removeAlpha().toColourspace('srgb'), width, height, pp, KERNEL[pp.interpolation]));
  const [H, W] = pp.size;
  const plane = H * W;
  if (px_HWC.length !== plane * 3) throw new ImageError(`decoded to ${px_HWC.length} bytes, expected ${plane * 3}`);
  if (pp.channels === 1) {
    // Grey as PIL's convert("L") computes it (ITU-R 601-2 luma, fixed point).
    const scale = 1 / (255 * pp.std[0]);
    const shift = pp.mean[0] / pp.std[0];
    for (let i = 0; i < plane; i++) out[i] = ((px_HWC[3 * i] * 19595 + px_HWC[3 * i + 1] * 38470 + px_HWC[3 * i + 2] * 7471 + 0x8000) >> 16) * scale - shift;
    return;
  }
  for (let c = 0; c < 3; c++) {
    const src = pp.channelOrder === 'bgr' ? 2 - c : c;
    const scale = 1 / (255 * pp.std[c]);
    const shift = pp.mean[c] / pp.std[c];
    const o = c * plane;
    for (let i = 0; i < plane; i++) out[o + i] = px_HWC[i * 3 + src] * scale - shift;
  }
}

/**
 * A segmentation mask (single-channel PNG of class indices) under the image's geometry with nearest-neighbour
 * resizing, so class values are never blended: mask_HW, uint8 of H × W.
 */
export async function loadMask(input: ImageInput, pp: Preprocess): Promise<Uint8Array> {
  const { img, width, height, colours, palette } = await open(input);
  if (palette) throw new ImageError('palette masks are not supported: save masks as 8-bit greyscale class indices');
  if (colours !== 1) throw new ImageError(`a mask must have one channel of class indices, this one has ${colours}`);
  return rawPixels(geometry(img.removeAlpha().extractChannel(0), width, height, pp, 'nearest'));
}

/**
 * Each patch's label: the most frequent class among its pixels (ties go to the smaller class). The H × W input is
 * split into a gh × gw grid of patches; patch_labels is [gh * gw] in row-major order.
 */
export function patchMajority(mask_HW: Uint8Array, size: [number, number], grid: [number, number]): Uint8Array {
  const [H, W] = size;
  const [gh, gw] = grid;
  const labels = new Uint8Array(gh * gw);
  const counts = new Uint32Array(256);
  for (let r = 0; r < gh; r++)
    for (let c = 0; c < gw; c++) {
      counts.fill(0);
      for (let y = Math.floor((r * H) / gh); y < Math.floor(((r + 1) * H) / gh); y++) for (let x = Math.floor((c * W) / gw); x < Math.floor(((c + 1) * W) / gw); x++) counts[mask_HW[y * W + x]]++;
      let best = 0;
      for (let k = 1; k < 256; k++) if (counts[k] > counts[best]) best = k;
      labels[r * gw + c] = best;
    }
  return labels;
}
