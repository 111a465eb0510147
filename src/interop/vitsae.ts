/**
 * vitsae's own checkpoint directory: `config.json` (SaeCheckpointConfig) and `sae.safetensors` (float32 W_enc,
 * b_enc, W_dec, b_dec). The layout is the one `Sae.save` in src/sae/model.ts writes; it is read and written here
 * in plain TypeScript so that conversions do not need the native training core.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { readJson, settleFiles, writeFileAtomic } from '../util/fs.js';
import { validateConfig } from '../util/config.js';
import { SaeCheckpointConfig, dSaeOf, saeSpec } from '../sae/config.js';
import { readSafetensors, tensor, writeSafetensors } from '../sae/safetensors.js';
import { LoadedSae, sae4 } from './sae.js';

export const VITSAE_CONFIG = 'config.json';
export const VITSAE_WEIGHTS = 'sae.safetensors';

export async function readVitsaeDir(dir: string): Promise<LoadedSae> {
  // A checkpoint write cut short by a crash is finished (or discarded) first, so the files read belong together.
  await settleFiles(dir);
  const cfgFile = path.join(dir, VITSAE_CONFIG);
  const raw = await readJson<Record<string, unknown>>(cfgFile, 'a vitsae SAE directory holds config.json and sae.safetensors');
  if (raw.format !== 'vitsae-sae' || raw.version !== 1) throw new UserError(`${cfgFile}: not a vitsae SAE config (format "vitsae-sae", version 1)`);
  const config = { ...raw, sae: validateConfig(saeSpec, (raw.sae ?? {}) as Record<string, unknown>, `${cfgFile} sae`) } as unknown as SaeCheckpointConfig;
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

export async function writeVitsaeDir(dir: string, sae: LoadedSae): Promise<void> {
  const { d_model: m, d_sae: s } = sae.config;
  await fsp.mkdir(dir, { recursive: true });
  await writeSafetensors(path.join(dir, VITSAE_WEIGHTS), {
    W_enc: tensor(sae.W_enc, [m, s]),
    b_enc: tensor(sae.b_enc, [s]),
    W_dec: tensor(sae.W_dec, [s, m]),
    b_dec: tensor(sae.b_dec, [m]),
  }, { format: 'vitsae-sae', step: String(sae.config.step ?? 0) });
  await writeFileAtomic(path.join(dir, VITSAE_CONFIG), JSON.stringify(sae.config, null, 2) + '\n');
}
