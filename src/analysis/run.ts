/**
 * A run directory: one model, layer, dataset and SAE, with its visuals (see README.md, "run.json"). Commands that
 * work on a trained SAE take `--run DIR` and find everything through this file, so a run can be moved or
 * published as one directory while still naming shards and datasets that live elsewhere.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { exists, readJson, writeFileAtomic } from '../util/fs.js';

export const RUN_FILE = 'run.json';

/** run.json's fields; paths are relative to the run directory (or absolute). */
export interface RunSpec {
  /** The ONNX model the shards were recorded from, when known. */
  model?: string;
  shards: string;
  sae: string;
  /** The image dataset the shards' examples come from, when it is not the one the recording names. */
  images?: string;
  visuals: string;
  /** The SAE's concept report (src/analysis/concepts.ts), when its latents were checked against known concepts. */
  concepts?: string;
  /**
   * Task heads trained on the run's model (directories written by `vitsae head train`): with a model, they make
   * the browser offer edit demos.
   */
  heads?: string[];
}

/** A run as read: every path absolute. */
export interface Run extends RunSpec {
  dir: string;
}

interface RunFile extends RunSpec {
  format: 'vitsae-run';
  version: 1;
  /** The old name of `heads`, read but not written. */
  probes?: string[];
}

/** Reads DIR/run.json and resolves its paths against DIR. */
export async function readRun(dir: string): Promise<Run> {
  const file = path.join(dir, RUN_FILE);
  const raw = await readJson<Partial<RunFile>>(file, `${dir} is not a run directory (write one with vitsae visuals --run ${dir})`);
  if (typeof raw !== 'object' || raw === null || raw.format !== 'vitsae-run') throw new UserError(`${file}: not a vitsae run file (format must be "vitsae-run")`);
  if (raw.version !== 1) throw new UserError(`${file}: version ${raw.version} is not supported (this vitsae reads version 1)`);
  const abs = (p: string) => path.resolve(dir, p);
  for (const k of ['shards', 'sae', 'visuals'] as const) if (typeof raw[k] !== 'string' || !raw[k]) throw new UserError(`${file}: "${k}" must name a directory`);
  for (const k of ['model', 'images', 'concepts'] as const) if (raw[k] !== undefined && typeof raw[k] !== 'string') throw new UserError(`${file}: "${k}" must be a path`);
  // Compatibility: run.json files written before the task head's rename list the heads as "probes" (writeRun
  // writes them back as "heads").
  const [headsKey, heads] = raw.heads === undefined && raw.probes !== undefined ? ['probes', raw.probes] : ['heads', raw.heads];
  if (heads !== undefined && !(Array.isArray(heads) && heads.every((p) => typeof p === 'string' && p))) throw new UserError(`${file}: "${headsKey}" must be a list of head directories`);
  return {
    dir: path.resolve(dir),
    ...(raw.model ? { model: abs(raw.model) } : {}),
    shards: abs(raw.shards!),
    sae: abs(raw.sae!),
    ...(raw.images ? { images: abs(raw.images) } : {}),
    visuals: abs(raw.visuals!),
    ...(raw.concepts ? { concepts: abs(raw.concepts) } : {}),
    ...(heads?.length ? { heads: heads.map(abs) } : {}),
  };
}

/** Reads DIR/run.json if there is one. */
export async function readRunIfAny(dir: string): Promise<Run | null> {
  return (await exists(path.join(dir, RUN_FILE))) ? readRun(dir) : null;
}

/**
 * Writes DIR/run.json atomically. Paths inside DIR are stored relative to it (the run stays valid when moved),
 * others absolute.
 */
export async function writeRun(dir: string, spec: RunSpec): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const root = path.resolve(dir);
  const rel = (p: string) => {
    const r = path.relative(root, path.resolve(p));
    return r === '' ? '.' : r.startsWith('..') || path.isAbsolute(r) ? path.resolve(p) : r;
  };
  const out: RunFile = {
    format: 'vitsae-run',
    version: 1,
    ...(spec.model ? { model: rel(spec.model) } : {}),
    shards: rel(spec.shards),
    sae: rel(spec.sae),
    ...(spec.images ? { images: rel(spec.images) } : {}),
    visuals: rel(spec.visuals),
    ...(spec.concepts ? { concepts: rel(spec.concepts) } : {}),
    ...(spec.heads?.length ? { heads: spec.heads.map(rel) } : {}),
  };
  await writeFileAtomic(path.join(root, RUN_FILE), JSON.stringify(out, null, 2) + '\n');
}
