/**
 * Opening SAEs made elsewhere, and writing ours in other layouts. `readAnySae` takes a vitsae checkpoint
 * directory, a saev checkpoint file or a SAELens directory and returns the SAE in vitsae's parametrisation, so other
 * modules can use any of them without a conversion step.
 */
import { promises as fsp, type Stats } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { settleFiles } from '../util/fs.js';
import { type LoadedSae, VITSAE_CONFIG, VITSAE_WEIGHTS, readVitsaeDir, writeVitsaeDir } from '../sae/checkpoint.js';
import { Sae } from '../sae/model.js';
import { readSaevFile } from './saev.js';
import { SAELENS_CONFIG, SAELENS_WEIGHTS, readSaeLensDir, writeSaeLensDir } from './saelens.js';

export type { LoadedSae } from '../sae/checkpoint.js';
export { readSaevFile, decodeSaev } from './saev.js';
export { readSaeLensDir, writeSaeLensDir } from './saelens.js';
export { readVitsaeDir, writeVitsaeDir } from '../sae/checkpoint.js';
export { unpickle } from './pickle.js';

export type SaeKind = 'vitsae' | 'saev' | 'saelens';
export const OUTPUT_KINDS = ['vitsae', 'saelens'] as const;
export type OutputKind = (typeof OUTPUT_KINDS)[number];

/** What a path holds, from the files present: no guessing from names. */
export async function detectSaeKind(p: string): Promise<SaeKind> {
  let stat: Stats;
  try {
    stat = await fsp.stat(p);
  } catch (e) {
    throw new UserError(`cannot read ${p}: ${(e as Error).message}`);
  }
  if (stat.isFile()) return 'saev';
  await settleFiles(p);
  const has = async (f: string) => (await fsp.stat(path.join(p, f)).catch(() => null))?.isFile() ?? false;
  if ((await has(VITSAE_CONFIG)) && (await has(VITSAE_WEIGHTS))) return 'vitsae';
  if ((await has(SAELENS_CONFIG)) && (await has(SAELENS_WEIGHTS))) return 'saelens';
  throw new UserError(`${p} is neither a vitsae SAE directory (${VITSAE_CONFIG} + ${VITSAE_WEIGHTS}), a SAELens directory (${SAELENS_CONFIG} + ${SAELENS_WEIGHTS}) nor a saev checkpoint file`);
}

export async function readAnySae(p: string): Promise<LoadedSae> {
  return readSaeOfKind(p, await detectSaeKind(p));
}

/** Opens any SAE vitsae reads (a vitsae checkpoint directory, a saev checkpoint file, or a SAELens directory) for use. */
export async function openSae(p: string): Promise<Sae> {
  return Sae.fromLoaded(await readAnySae(p), p);
}

export async function readSaeOfKind(p: string, kind: SaeKind): Promise<LoadedSae> {
  return kind === 'saev' ? readSaevFile(p) : kind === 'saelens' ? readSaeLensDir(p) : readVitsaeDir(p);
}

export async function writeSae(dir: string, sae: LoadedSae, kind: OutputKind): Promise<void> {
  await (kind === 'saelens' ? writeSaeLensDir(dir, sae) : writeVitsaeDir(dir, sae));
}

/** Reads any SAE vitsae reads and writes it in `to`'s layout; returns its kind and what the conversion noted. */
export async function convertSae(input: string, out: string, to: OutputKind): Promise<{ kind: SaeKind; sae: LoadedSae }> {
  const kind = await detectSaeKind(input);
  const sae = await readSaeOfKind(input, kind);
  await writeSae(out, sae, to);
  return { kind, sae };
}
