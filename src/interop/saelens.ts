/**
 * SAELens directories (github.com/jbloomAus/SAELens): `cfg.json` and `sae_weights.safetensors` with W_enc
 * [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec, plus `threshold` [d_sae] for JumpReLU and `topk_threshold`
 * for BatchTopK training saves. SAELens encodes (x - b_dec * apply_b_dec_to_input) W_enc + b_enc.
 *
 * Read: 6.x configs (architecture standard | topk | jumprelu | batchtopk | matryoshka_batchtopk, k,
 * rescale_acts_by_decoder_norm, matryoshka_widths, normalize_activations, metadata) and pre-6 configs
 * (activation_fn_str relu | topk with activation_fn_kwargs.k, boolean normalize_activations, scaling_factor).
 * Refused: other architectures (gated, transcoders), per-latent JumpReLU thresholds, and input normalisations
 * whose constants are not in the directory.
 *
 * Written: the 6.x layout. Our input scale is folded into the weights (as SAELens's own
 * fold_activation_norm_scaling_factor does), BatchTopK and Matryoshka become JumpReLU with a uniform threshold (as
 * SAELens saves its own BatchTopK SAEs for inference), and our whole config goes into metadata.vitsae so that
 * reading the directory back restores it.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { readJson, writeFileAtomic } from '../util/fs.js';
import { validateConfig } from '../util/config.js';
import { type Activation, type SaeCheckpointConfig, saeSpec } from '../sae/config.js';
import { type Tensor, readSafetensors, tensor, writeSafetensors } from '../sae/safetensors.js';
import { type LoadedSae, type Weights, floatValues, sae4 } from '../sae/checkpoint.js';
import { foldDecoderBias, foreignConfig, isObject, scalarOf } from './sae.js';

export const SAELENS_CONFIG = 'cfg.json';
export const SAELENS_WEIGHTS = 'sae_weights.safetensors';
/** The cfg.json layout we write; SAELens sends files without a version, or below 6, through its pre-6 converter. */
const LAYOUT_VERSION = '6.0.0';

/**
 * SAELens architecture -> our activation, and the threshold tensor it carries: JumpReLU is how SAELens saves a
 * BatchTopK SAE for inference (one threshold per latent), the BatchTopK training classes keep a scalar.
 */
const ARCHITECTURES: Record<string, { activation: Activation; threshold?: 'threshold' | 'topk_threshold' }> = {
  standard: { activation: 'relu' },
  topk: { activation: 'topk' },
  jumprelu: { activation: 'batchtopk', threshold: 'threshold' },
  batchtopk: { activation: 'batchtopk', threshold: 'topk_threshold' },
  matryoshka_batchtopk: { activation: 'matryoshka', threshold: 'topk_threshold' },
};

export async function readSaeLensDir(dir: string): Promise<LoadedSae> {
  const cfgFile = path.join(dir, SAELENS_CONFIG);
  const cfg = await readJson<Record<string, unknown>>(cfgFile, 'a SAELens directory holds cfg.json and sae_weights.safetensors');
  const file = path.join(dir, SAELENS_WEIGHTS);
  const tensors = (await readSafetensors(file)).tensors;
  const bad = (why: string) => new UserError(`${cfgFile}: ${why}`);
  const metadata = isObject(cfg.metadata) ? cfg.metadata : {};

  // Pre-6 configs name the activation in activation_fn_str and use architecture "standard" for TopK too.
  const fn = cfg.activation_fn_str ?? cfg.activation_fn ?? 'relu';
  let architecture = typeof cfg.architecture === 'string' ? cfg.architecture : 'standard';
  let k = cfg.k;
  if (fn === 'topk') {
    architecture = 'topk';
    k = isObject(cfg.activation_fn_kwargs) ? cfg.activation_fn_kwargs.k : k;
  } else if (fn !== 'relu') throw bad(`activation_fn_str "${fn}" has no vitsae equivalent (relu and topk are read)`);
  if (!ARCHITECTURES[architecture]) throw bad(`architecture "${architecture}" has no vitsae equivalent (it reads ${Object.keys(ARCHITECTURES).join(', ')})`);

  const norm = cfg.normalize_activations === false || cfg.normalize_activations == null ? 'none' : cfg.normalize_activations;
  if (norm !== 'none') {
    throw bad(
      `normalize_activations is ${JSON.stringify(cfg.normalize_activations)}: ${norm === true || norm === 'expected_average_only_in' ? 'its scaling factor is not stored in the directory; fold it into the weights first (SAE.fold_activation_norm_scaling_factor)' : 'a per-token normalisation vitsae cannot represent'}`,
    );
  }
  if (tensors.scaling_factor && !floatValues(tensors.scaling_factor)?.every((v) => v === 1)) {
    throw bad('sae_weights.safetensors holds a finetuning scaling_factor other than 1, which vitsae cannot represent');
  }

  const { activation, threshold: thresholdName } = ARCHITECTURES[architecture];
  const w = sae4(tensors, thresholdName ? [thresholdName, 'scaling_factor'] : ['scaling_factor'], file);
  if ((cfg.d_in !== undefined && cfg.d_in !== w.dModel) || (cfg.d_sae !== undefined && cfg.d_sae !== w.dSae)) {
    throw bad(`d_in ${cfg.d_in}, d_sae ${cfg.d_sae} disagree with W_enc [${w.dModel}, ${w.dSae}]`);
  }
  const notes: string[] = [`SAELens ${architecture} SAE (cfg.json version ${metadata.sae_lens_version ?? cfg.sae_lens_version ?? 'before 6'}), d_in ${w.dModel}, d_sae ${w.dSae}.`];
  let threshold = -1;
  if (thresholdName === 'threshold') threshold = uniformThreshold(tensors.threshold, bad);
  else if (thresholdName && tensors[thresholdName]) threshold = scalarOf(tensors[thresholdName], thresholdName, file);
  if (cfg.rescale_acts_by_decoder_norm === true) {
    foldDecoderNorms(w, w.dModel, w.dSae);
    notes.push('rescale_acts_by_decoder_norm: the decoder row norms were folded into W_enc and b_enc (W_dec rows now have unit norm), as SAELens does when it saves for inference.');
  }
  if (cfg.apply_b_dec_to_input === false) {
    w.b_enc = foldDecoderBias(w, w.dModel, w.dSae);
    notes.push('apply_b_dec_to_input is false: b_dec W_enc was folded into b_enc so the latents are unchanged.');
  }

  const ours = exportedConfig(metadata.vitsae, activation, threshold, w, cfgFile);
  if (ours) {
    unfoldInputScale(w, ours.input_scale);
    return { config: ours, ...weightsOf(w), notes: [...notes, 'The directory was exported by vitsae: its config (input scale, training settings) was restored from metadata.vitsae.'] };
  }
  const sae: Partial<SaeCheckpointConfig['sae']> = { activation };
  if (activation !== 'relu') {
    if (typeof k === 'number' && k > 0) sae.k = Math.round(k);
    else notes.push(`No k is recorded; k is set to the default ${saeSpec.k.default} (inference uses the threshold).`);
  }
  if (activation === 'matryoshka' && Array.isArray(cfg.matryoshka_widths)) {
    // SAELens appends d_sae when the widths stop short of it; our prefixes always end at d_sae.
    const widths = cfg.matryoshka_widths as number[];
    sae.matryoshkaPrefixes = widths[widths.length - 1] === w.dSae ? widths : [...widths, w.dSae];
  }
  return { config: foreignConfig(w.dModel, w.dSae, sae, threshold), ...weightsOf(w), notes };
}

export async function writeSaeLensDir(dir: string, sae: LoadedSae): Promise<void> {
  const { config } = sae;
  const { d_model: m, d_sae: s, input_scale: scale } = config;
  const activation = config.sae.activation;
  const architecture = activation === 'relu' ? 'standard' : activation === 'topk' ? 'topk' : 'jumprelu';
  const tensors: Record<string, Tensor> = {
    W_enc: tensor(
      sae.W_enc.map((v) => v * scale),
      [m, s],
    ),
    b_enc: tensor(sae.b_enc, [s]),
    W_dec: tensor(
      sae.W_dec.map((v) => v / scale),
      [s, m],
    ),
    b_dec: tensor(
      sae.b_dec.map((v) => v / scale),
      [m],
    ),
  };
  // JumpReLU keeps h when h > threshold and h > 0, as our BatchTopK inference does; -1 (none learned) acts as 0.
  if (architecture === 'jumprelu') tensors.threshold = tensor(new Float32Array(s).fill(Math.max(0, config.threshold)), [s]);
  const cfg = {
    architecture,
    d_in: m,
    d_sae: s,
    dtype: 'float32',
    device: 'cpu',
    apply_b_dec_to_input: true,
    normalize_activations: 'none',
    reshape_activations: 'none',
    ...(architecture === 'topk' ? { k: config.sae.k, rescale_acts_by_decoder_norm: false } : {}),
    metadata: { sae_lens_version: LAYOUT_VERSION, vitsae: config },
  };
  await fsp.mkdir(dir, { recursive: true });
  await writeSafetensors(path.join(dir, SAELENS_WEIGHTS), tensors);
  await writeFileAtomic(path.join(dir, SAELENS_CONFIG), JSON.stringify(cfg, null, 2) + '\n');
}

/**
 * Our config from metadata.vitsae, if the directory is one we exported and its weights still fit that config
 * (same sizes, activation family and threshold); otherwise undefined and the SAE is read as any SAELens SAE.
 */
function exportedConfig(raw: unknown, activation: Activation, threshold: number, w: { dModel: number; dSae: number }, source: string): SaeCheckpointConfig | undefined {
  if (!isObject(raw) || raw.format !== 'vitsae-sae') return undefined;
  const config = { ...raw, sae: validateConfig(saeSpec, isObject(raw.sae) ? raw.sae : {}, `${source} metadata.vitsae.sae`) } as unknown as SaeCheckpointConfig;
  const family = (a: Activation) => (a === 'matryoshka' ? 'batchtopk' : a);
  const fits =
    config.d_model === w.dModel &&
    config.d_sae === w.dSae &&
    family(config.sae.activation) === family(activation) &&
    (activation === 'relu' || activation === 'topk' || Math.max(0, config.threshold) === Math.max(0, threshold)) &&
    typeof config.input_scale === 'number' &&
    config.input_scale > 0;
  return fits ? config : undefined;
}

/** Undoes the export's folding of the input scale s (W_enc * s, W_dec / s, b_dec / s). */
function unfoldInputScale(w: Weights, scale: number): void {
  if (scale === 1) return;
  for (let i = 0; i < w.W_enc.length; i++) w.W_enc[i] /= scale;
  for (let i = 0; i < w.W_dec.length; i++) w.W_dec[i] *= scale;
  for (let i = 0; i < w.b_dec.length; i++) w.b_dec[i] *= scale;
}

/** Gives W_dec unit rows, moving each row norm into the matching W_enc column and b_enc entry. */
function foldDecoderNorms(w: Weights, dModel: number, dSae: number): void {
  for (let j = 0; j < dSae; j++) {
    let sq = 0;
    for (let i = 0; i < dModel; i++) sq += w.W_dec[j * dModel + i] ** 2;
    const n = Math.sqrt(sq);
    if (n === 0) continue;
    for (let i = 0; i < dModel; i++) {
      w.W_dec[j * dModel + i] /= n;
      w.W_enc[i * dSae + j] *= n;
    }
    w.b_enc[j] *= n;
  }
}

/**
 * A JumpReLU threshold vector that is one number, as SAELens writes for BatchTopK SAEs. JumpReLU also applies a
 * ReLU, so a negative threshold acts as 0.
 */
function uniformThreshold(t: Tensor | undefined, bad: (why: string) => Error): number {
  const v = t && floatValues(t)?.map((x) => Math.max(0, x));
  if (!v || v.some((x) => x !== v[0])) throw bad('the JumpReLU thresholds are missing or differ between latents; vitsae has one threshold for all latents');
  return v[0];
}

function weightsOf(w: Weights): Weights {
  return { W_enc: w.W_enc, b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec };
}
