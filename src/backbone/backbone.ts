/**
 * A vision model opened for recording: its graph, residual stream and image input, layer selection, and the token
 * geometry of chosen tensors, measured by running the front once on a blank image rather than trusting exported
 * shape annotations (many exports have none).
 */
import * as ort from 'onnxruntime-node';
import { UserError } from '../util/errors.js';
import { type GraphIndex, frontModel, indexGraph } from './graph.js';
import { residualStream, type StreamTensor } from './layers.js';
import { checkDevice, type Device, deviceOptions } from './device.js';
import { type ModelProto, encodeModel, int, loadModel, type Weights, weightOptions } from './onnx.js';

export interface Backbone {
  file: string;
  /** The graph, its large weights external data in `weights` (see Weights). */
  model: ModelProto;
  weights: Weights;
  index: GraphIndex;
  stream: StreamTensor[];
  /** Where its sessions run. */
  device: Device;
  /** The image input [N, C, H, W]; dims the export left dynamic are strings (their dim_param) or null. */
  input: { name: string; dims: (number | string | null)[] };
}

/** Opens a model to run on `device`, checked first: a missing execution provider fails before the model loads. */
export async function openBackbone(file: string, device: Device = 'cpu'): Promise<Backbone> {
  await checkDevice(device);
  const { model, weights } = await loadModel(file);
  const index = indexGraph(model.graph!);
  if (index.runtimeInputs.length !== 1) throw new UserError(`${file}: expected one image input, the model has ${index.runtimeInputs.length} (${index.runtimeInputs.join(', ')})`);
  const name = index.runtimeInputs[0];
  const info = model.graph!.input!.find((v) => v.name === name)!;
  const dims = (info.type?.tensor_type?.shape?.dim ?? []).map((d) => (d.dim_value !== undefined && int(d.dim_value) > 0 ? int(d.dim_value) : (d.dim_param ?? null)));
  if (dims.length !== 4) throw new UserError(`${file}: the input "${name}" has rank ${dims.length}; expected an image batch [N, C, H, W]`);
  return { file, model, weights, device, index, stream: residualStream(index), input: { name, dims } };
}

/** The image size [H, W] the model declares, if its spatial dims are fixed. */
export function declaredSize(bb: Backbone): [number, number] | undefined {
  const [, , h, w] = bb.input.dims;
  return typeof h === 'number' && typeof w === 'number' ? [h, w] : undefined;
}

/** Image size [H, W] the model takes: `size` where given (it must agree with fixed dims), else the declared one. */
export function inputSize(bb: Backbone, size?: [number, number]): [number, number] {
  const declared = declaredSize(bb);
  if (size && declared && (size[0] !== declared[0] || size[1] !== declared[1])) throw new UserError(`${bb.file} takes ${declared.join('x')} images; the requested input size is ${size.join('x')}`);
  const out = size ?? declared;
  if (!out) throw new UserError(`${bb.file} has a dynamic image size: give one with --input-size (or input_size in its model card)`);
  return out;
}

/** The batch size an export fixed (torch.onnx.export without dynamic axes fixes it, usually to 1), or null. */
export function fixedBatch(bb: Backbone): number | null {
  const n = bb.input.dims[0];
  return typeof n === 'number' ? n : null;
}

export function inputChannels(bb: Backbone): number {
  const c = bb.input.dims[1];
  return typeof c === 'number' ? c : 3;
}

export interface Layer {
  /** Tensor name in the graph. */
  name: string;
  /** Block index in the residual stream, or null for a tensor picked by name off the stream. */
  block: number | null;
}

/**
 * Resolves `--layer` values: an integer is a block index (negative counts from the end, as in Python), anything
 * else a tensor name.
 */
export function selectLayers(bb: Backbone, specs: string[]): Layer[] {
  if (!specs.length) throw new UserError('choose at least one layer (--layer -2, --layer 10 or --layer TENSOR_NAME)');
  const layers = specs.map((spec): Layer => {
    if (/^-?\d+$/.test(spec.trim())) {
      const n = bb.stream.length;
      const k = Number(spec);
      if (!n) throw new UserError(`${bb.file}: no residual stream was found, so --layer ${spec} means nothing; pick a tensor by name (vitsae layers lists candidates)`);
      if (k >= n || k < -n) throw new UserError(`--layer ${spec}: the model has ${n} blocks (0..${n - 1}, or -1..-${n})`);
      const block = (k + n) % n;
      return { name: bb.stream[block].tensor, block };
    }
    if (!bb.index.producer.has(spec)) throw new UserError(`--layer ${spec}: no tensor of that name is computed in ${bb.file}`);
    const block = bb.stream.findIndex((s) => s.tensor === spec);
    return { name: spec, block: block >= 0 ? block : null };
  });
  const names = layers.map((l) => l.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new UserError(`layer ${dup} is chosen twice`);
  return layers;
}

/**
 * onnxruntime options for a part of `bb` (a front or back of its graph): its weights and its device, then `extra`.
 * Plain data, so that a worker thread can receive them (the weights are shared memory, not copied).
 */
export function sessionOptions(bb: Pick<Backbone, 'weights' | 'device'>, extra: ort.InferenceSession.SessionOptions = {}): ort.InferenceSession.SessionOptions {
  return { ...weightOptions(bb.weights), ...deviceOptions(bb.device), ...extra };
}

/** A session for `model`: a part of a backbone (its weights and device given by `bb`) or a self-contained model. */
export async function createSession(model: ModelProto, bb?: Pick<Backbone, 'weights' | 'device'>, extra: ort.InferenceSession.SessionOptions = {}): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encodeModel(model), bb ? sessionOptions(bb, extra) : extra);
}

/** A zero image batch for a shape probe: one image, or the batch an export fixed. */
export function probeInput(bb: Backbone, size?: [number, number]): ort.Tensor {
  const [h, w] = inputSize(bb, size);
  const c = inputChannels(bb);
  const n = fixedBatch(bb) ?? 1;
  return new ort.Tensor('float32', new Float32Array(n * c * h * w), [n, c, h, w]);
}

/** Shapes of `tensors` for one image of the given size, or one fixed batch (a single run of the front on zeros). */
export async function probeShapes(bb: Backbone, tensors: string[], size?: [number, number]): Promise<number[][]> {
  const x = probeInput(bb, size);
  const session = await createSession(frontModel(bb.model, tensors, bb.index), bb);
  try {
    const out = await session.run({ [bb.input.name]: x });
    return tensors.map((t) => [...out[t].dims]);
  } finally {
    await session.release();
  }
}

export interface LayerInfo {
  name: string;
  /** Shape for one image (for the fixed batch of a model exported without a dynamic batch axis). */
  shape: number[];
  block: number;
}

export async function listLayers(bb: Backbone, size?: [number, number]): Promise<LayerInfo[]> {
  const names = bb.stream.map((s) => s.tensor);
  const shapes = names.length ? await probeShapes(bb, names, size) : [];
  return names.map((name, block) => ({ name, shape: shapes[block], block }));
}

/**
 * How the chosen tensors become tokens. A [N, T, D] tensor has T tokens of width D, the first `prefixTokens` of
 * them CLS/register tokens; a CNN feature map [N, C, H, W] has H*W tokens of width C and no prefix.
 */
export interface TokenLayout {
  /** Tensor layout: 'ntd' for transformer tokens, 'nchw' for a feature map (transposed when recorded). */
  layout: 'ntd' | 'nchw';
  prefixTokens: number;
  patchTokens: number;
  dModel: number;
  /** Patch grid [rows, cols] over the image (for pixel-to-patch labels), null when it cannot be known. */
  grid: [number, number] | null;
}

/**
 * The tensors whose shapes give the token layout of `layers`: the layers, then the patch embedding's output when
 * the number of prefix tokens is not known (from the model card) and the model has one.
 */
export function layoutTensors(bb: Backbone, layers: Layer[], prefixTokens?: number): string[] {
  const patchify = prefixTokens === undefined ? patchEmbedding(bb) : undefined;
  return [...layers.map((l) => l.name), ...(patchify ? [patchify] : [])];
}

/**
 * Token layout shared by all chosen layers. The number of patches is read off the patch-embedding convolution
 * (kernel = stride > 1) when the model has one, else the caller must say how many prefix tokens there are.
 */
export async function tokenLayout(bb: Backbone, layers: Layer[], size?: [number, number], prefixTokens?: number): Promise<TokenLayout> {
  const tensors = layoutTensors(bb, layers, prefixTokens);
  return layoutFromShapes(layers, await probeShapes(bb, tensors, size), prefixTokens);
}

/** The token layout from the shapes of `layoutTensors(bb, layers, prefixTokens)`, in that order. */
export function layoutFromShapes(layers: Layer[], shapes: number[][], prefixTokens?: number): TokenLayout {
  const patchify = shapes.length > layers.length;
  const layouts = layers.map((l, i): TokenLayout => {
    const s = shapes[i];
    if (s.length === 4) return { layout: 'nchw', prefixTokens: 0, patchTokens: s[2] * s[3], dModel: s[1], grid: [s[2], s[3]] };
    if (s.length !== 3) throw new UserError(`layer ${l.name} has shape [${s}]; expected [N, tokens, width] or [N, C, H, W]`);
    let prefix = prefixTokens;
    let grid: [number, number] | null = null;
    if (patchify) {
      const g = shapes[shapes.length - 1];
      grid = [g[2], g[3]];
      prefix = s[1] - g[2] * g[3];
    } else if (prefix === undefined)
      throw new UserError(`cannot tell the CLS/register tokens of ${l.name} from its patches: no patch-embedding convolution was found; set prefix_tokens in the model card`);
    else if (Number.isInteger(Math.sqrt(s[1] - prefix))) grid = [Math.sqrt(s[1] - prefix), Math.sqrt(s[1] - prefix)];
    if (prefix < 0 || prefix > s[1]) throw new UserError(`layer ${l.name}: ${prefix} prefix tokens do not fit in its ${s[1]} tokens`);
    return { layout: 'ntd', prefixTokens: prefix, patchTokens: s[1] - prefix, dModel: s[2], grid };
  });
  const first = layouts[0];
  layouts.forEach((t, i) => {
    if (JSON.stringify(t) !== JSON.stringify(first)) throw new UserError(`layers ${layers[0].name} and ${layers[i].name} have different token shapes; record them in separate runs`);
  });
  return first;
}

/** Output of the first convolution whose kernel equals its stride (the ViT patch embedding), if any. */
function patchEmbedding(bb: Backbone): string | undefined {
  const ints = (n: (typeof bb.index.nodes)[number], k: string) => (n.attribute?.find((a) => a.name === k)?.ints ?? []).map(int);
  const conv = bb.index.nodes.find((n) => {
    if (n.op_type !== 'Conv') return false;
    const kernel = ints(n, 'kernel_shape');
    const strides = ints(n, 'strides');
    return kernel.length > 0 && kernel.every((k, i) => k > 1 && k === strides[i]);
  });
  return conv?.output?.[0];
}
