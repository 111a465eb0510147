/**
 * The small pieces of weight arithmetic the foreign readers share, bringing an SAE from elsewhere to vitsae's
 * parametrisation (src/sae/checkpoint.ts).
 */
import { UserError } from '../util/errors.js';
import { defaultsOf } from '../util/config.js';
import { type SaeCheckpointConfig, type SaeConfig, saeSpec } from '../sae/config.js';
import { floatValues, type Weights } from '../sae/checkpoint.js';
import type { Tensor } from '../sae/safetensors.js';

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

/** A single number from a one-element floating tensor, such as a stored activation threshold. */
export function scalarOf(t: Tensor, name: string, source: string): number {
  const v = floatValues(t);
  if (v?.length !== 1) throw new UserError(`${source}: tensor ${name} should hold one floating-point number, it is ${t.dtype} [${t.shape}]`);
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
