/**
 * vitsae's own SAE checkpoint: the weights every format is brought to, and the directory `Sae.save` writes and
 * `Sae.load` reads: `config.json` (SaeCheckpointConfig) and `sae.safetensors` (float32 W_enc, b_enc, W_dec,
 * b_dec). Read and written in plain TypeScript, so that conversions (src/interop) need no native core.
 * The parametrisation, whatever the source format:
 *   f = act((x * input_scale - b_dec) W_enc + b_enc),   x_hat = (f W_dec + b_dec) / input_scale
 * with W_enc [d_model, d_sae], W_dec [d_sae, d_model], row-major float32.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { readJson, settleFiles, writeFileAtomic } from '../util/fs.js';
import { validateConfig } from '../util/config.js';
import { camelKeys, snakeKeys } from '../util/json-keys.js';
import { type SaeCheckpointConfig, dSaeOf, saeSpec } from './config.js';
import { type Tensor, readSafetensors, tensor, toFloat32, writeSafetensors } from './safetensors.js';

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

export const VITSAE_CONFIG = 'config.json';
export const VITSAE_WEIGHTS = 'sae.safetensors';

export async function readVitsaeDir(dir: string): Promise<LoadedSae> {
  // A checkpoint write cut short by a crash is finished (or discarded) first, so the files read belong together.
  await settleFiles(dir);
  const cfgFile = path.join(dir, VITSAE_CONFIG);
  const raw = await readJson<Record<string, unknown>>(cfgFile, 'a vitsae SAE directory holds config.json and sae.safetensors');
  if (raw.format !== 'vitsae-sae' || raw.version !== 1) throw new UserError(`${cfgFile}: not a vitsae SAE config (format "vitsae-sae", version 1)`);
  const config = {
    ...raw,
    sae: validateConfig(saeSpec, camelKeys((raw.sae ?? {}) as object), `${cfgFile} sae`),
    ...(raw.train ? { train: camelKeys(raw.train as object) } : {}),
  } as unknown as SaeCheckpointConfig;
  for (const k of ['d_model', 'd_sae', 'input_scale', 'threshold'] as const) {
    if (typeof config[k] !== 'number' || !Number.isFinite(config[k])) throw new UserError(`${cfgFile}: "${k}" should be a number`);
  }
  if (dSaeOf(config.sae, config.d_model) !== config.d_sae) throw new UserError(`${cfgFile}: d_sae ${config.d_sae} disagrees with the sae expansion/dSae`);
  const file = path.join(dir, VITSAE_WEIGHTS);
  const w = sae4((await readSafetensors(file)).tensors, [], file);
  if (w.dModel !== config.d_model || w.dSae !== config.d_sae) {
    throw new UserError(`${file}: W_enc is [${w.dModel}, ${w.dSae}] but config.json says d_model ${config.d_model}, d_sae ${config.d_sae}`);
  }
  return { config, W_enc: w.W_enc, b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec, notes: [] };
}

/** config.json as written: the sae and train configs with snake_case keys, like the rest of the file. */
function checkpointConfigJson(config: SaeCheckpointConfig): object {
  return { ...config, sae: snakeKeys(config.sae), ...(config.train ? { train: snakeKeys(config.train) } : {}) };
}

/** sae.safetensors' tensors (float32, W_enc in the checkpoint layout [D, S]) and metadata, for every writer. */
export function vitsaeWeightsLayout(config: SaeCheckpointConfig): { shapes: Record<keyof Weights, number[]>; metadata: Record<string, string> } {
  const { d_model: m, d_sae: s } = config;
  return { shapes: { W_enc: [m, s], b_enc: [s], W_dec: [s, m], b_dec: [m] }, metadata: { format: 'vitsae-sae', step: String(config.step ?? 0) } };
}

export async function writeVitsaeConfig(dir: string, config: SaeCheckpointConfig): Promise<void> {
  await writeFileAtomic(path.join(dir, VITSAE_CONFIG), JSON.stringify(checkpointConfigJson(config), null, 2) + '\n');
}

export async function writeVitsaeDir(dir: string, sae: LoadedSae): Promise<void> {
  const { shapes, metadata } = vitsaeWeightsLayout(sae.config);
  await fsp.mkdir(dir, { recursive: true });
  await writeSafetensors(
    path.join(dir, VITSAE_WEIGHTS),
    {
      W_enc: tensor(sae.W_enc, shapes.W_enc),
      b_enc: tensor(sae.b_enc, shapes.b_enc),
      W_dec: tensor(sae.W_dec, shapes.W_dec),
      b_dec: tensor(sae.b_dec, shapes.b_dec),
    },
    metadata,
  );
  await writeVitsaeConfig(dir, sae.config);
}
