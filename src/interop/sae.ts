/**
 * What every reader in src/interop returns, and the small pieces of weight arithmetic they share. Whatever the
 * source, an SAE is brought to vitsae's parametrisation:
 *   f = act((x * input_scale - b_dec) W_enc + b_enc),   x_hat = (f W_dec + b_dec) / input_scale
 * with W_enc [d_model, d_sae], W_dec [d_sae, d_model], row-major float32.
 */
import { UserError } from '../util/errors.js';
import { defaultsOf } from '../util/config.js';
import { SaeCheckpointConfig, SaeConfig, saeSpec } from '../sae/config.js';
import { Tensor, toFloat32 } from '../sae/safetensors.js';

export interface LoadedSae {
  config: SaeCheckpointConfig;
  W_enc: Float32Array;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_dec: Float32Array;
  /** What the conversion changed or could not carry over, one sentence each (empty for a vitsae directory). */
  notes: string[];
}

export type Weights = Pick<LoadedSae, 'W_enc' | 'b_enc' | 'W_dec' | 'b_dec'>;

/**
 * Our config for an SAE from elsewhere. d_sae is stored as an expansion factor when d_model divides it (as the
 * trainer would write it), else as an explicit dSae. Inputs are taken as they come (input_scale 1). A threshold of
 * -1 means none was learned, as the trainer writes it; inference then keeps every positive pre-activation.
 */
export function foreignConfig(dModel: number, dSae: number, sae: Partial<SaeConfig>, threshold = -1): SaeCheckpointConfig {
  const defaults = defaultsOf(saeSpec);
  const divides = dSae % dModel === 0;
  return {
    format: 'vitsae-sae',
    version: 1,
    d_model: dModel,
    d_sae: dSae,
    sae: { ...defaults, normalize: false, ...sae, expansion: divides ? dSae / dModel : defaults.expansion, dSae: divides ? 0 : dSae },
    input_scale: 1,
    threshold,
  };
}

/**
 * The four SAE tensors from a name -> tensor map, as float32, with their shapes checked against each other.
 * `extra` lists the other names the format may carry (read by the caller); any other name is refused, since an
 * unknown tensor may change what the SAE computes.
 */
export function sae4(tensors: Record<string, Tensor>, extra: string[], source: string): Weights & { dModel: number; dSae: number } {
  const names = ['W_enc', 'b_enc', 'W_dec', 'b_dec'];
  const unknown = Object.keys(tensors).filter((n) => !names.includes(n) && !extra.includes(n));
  if (unknown.length) throw new UserError(`${source}: unexpected tensors ${unknown.join(', ')}; vitsae reads only ${[...names, ...extra].join(', ')}`);
  const missing = names.filter((n) => !tensors[n]);
  if (missing.length) throw new UserError(`${source}: missing tensors ${missing.join(', ')}`);
  const [dModel, dSae] = tensors.W_enc.shape;
  const want: Record<string, number[]> = { W_enc: [dModel, dSae], b_enc: [dSae], W_dec: [dSae, dModel], b_dec: [dModel] };
  for (const n of names) {
    if (tensors.W_enc.shape.length !== 2 || tensors[n].shape.join() !== want[n].join()) {
      throw new UserError(`${source}: tensor ${n} has shape [${tensors[n].shape}], expected [${want[n]}] (W_enc is [d_model, d_sae])`);
    }
  }
  const f32 = (n: string) => {
    const v = floatValues(tensors[n]);
    if (!v) throw new UserError(`${source}: tensor ${n} has dtype ${tensors[n].dtype}, expected a floating type`);
    return v instanceof Float32Array ? v : Float32Array.from(v);
  };
  return { dModel, dSae, W_enc: f32('W_enc'), b_enc: f32('b_enc'), W_dec: f32('W_dec'), b_dec: f32('b_dec') };
}

/** A floating tensor's values at their stored precision (16-bit floats widened), or undefined for integers. */
export function floatValues(t: Tensor): Float32Array | Float64Array | undefined {
  if (t.dtype === 'F64') return t.data as Float64Array;
  return t.dtype === 'F32' || t.dtype === 'F16' || t.dtype === 'BF16' ? toFloat32(t) : undefined;
}

/** A single number from a one-element floating tensor, such as a stored activation threshold. */
export function scalarOf(t: Tensor, name: string, source: string): number {
  const v = floatValues(t);
  if (!v || v.length !== 1) throw new UserError(`${source}: tensor ${name} should hold one floating-point number, it is ${t.dtype} [${t.shape}]`);
  return v[0];
}

/**
 * For SAEs that encode x W_enc + b_enc without first subtracting b_dec: the b_enc that gives the same
 * pre-activations in our parametrisation, b_enc + b_dec W_enc (summed in float64, rounded once).
 */
export function foldDecoderBias(w: Weights, dModel: number, dSae: number): Float32Array {
  const acc = Float64Array.from(w.b_enc);
  for (let i = 0; i < dModel; i++) {
    const b = w.b_dec[i];
    const row = i * dSae;
    for (let j = 0; j < dSae; j++) acc[j] += b * w.W_enc[row + j];
  }
  return Float32Array.from(acc);
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
