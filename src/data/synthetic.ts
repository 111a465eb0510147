/**
 * Synthetic activations with known ground truth: every patch token is a sparse non-negative combination of random
 * unit "atoms" plus a constant offset and a little Gaussian noise. An SAE trained on it should recover the atoms,
 * which makes end-to-end tests and the README's first command meaningful without a ViT.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { type ShardMetadata, ShardWriter } from '../shards/format.js';
import { Rng } from '../util/random.js';
import { UserError } from '../util/errors.js';

export interface SyntheticConfig {
  nExamples: number;
  /** Patch (content) tokens per example; the CLS token, if any, comes on top. */
  tokensPerExample: number;
  d: number;
  nAtoms: number;
  /** Exactly this many distinct atoms are active in each patch token, with magnitudes ~ U[0.5, 1.5]. */
  atomsPerToken: number;
  /** Standard deviation of the Gaussian noise added to every coordinate. */
  noise: number;
  seed: number;
  /** Adds a CLS token (stored first): the mean of the example's patch tokens. */
  clsToken: boolean;
  maxTokensPerShard?: number;
  /** Norm of the constant offset added to every token, so that subtracting the data mean matters. */
  offsetNorm?: number;
}

export const SYNTHETIC_DEFAULTS = { maxTokensPerShard: 262_144, offsetNorm: 2 };
export const ATOMS_FILE = 'atoms.f32';

export interface SyntheticTruth {
  /** Unit-norm atoms, float32 [n_atoms, d]; also saved as atoms.f32. */
  atoms_AD: Float32Array;
  /** The constant offset, float32 [d]; also in metadata.data.offset. */
  offset_D: Float32Array;
  metadata: ShardMetadata;
}

// Independent generator streams per component, so e.g. changing nExamples does not change the atoms.
const ATOMS_STREAM = 1;
const OFFSET_STREAM = 2;
const TOKENS_STREAM = 3;
const EXAMPLES_PER_APPEND = 64;

/** Throws a UserError naming the first invalid field. */
export function checkSyntheticConfig(cfg: SyntheticConfig): void {
  const ints: [keyof SyntheticConfig, number][] = [
    ['nExamples', 1],
    ['tokensPerExample', 1],
    ['d', 1],
    ['nAtoms', 1],
    ['atomsPerToken', 1],
    ['seed', 0],
  ];
  for (const [k, min] of ints) {
    const v = cfg[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new UserError(`synthetic data: ${k} must be an integer >= ${min}, got ${v}`);
  }
  if (cfg.atomsPerToken > cfg.nAtoms) throw new UserError(`synthetic data: atomsPerToken=${cfg.atomsPerToken} exceeds nAtoms=${cfg.nAtoms}`);
  if (!(cfg.noise >= 0) || !Number.isFinite(cfg.noise)) throw new UserError(`synthetic data: noise must be a finite number >= 0, got ${cfg.noise}`);
  const offsetNorm = cfg.offsetNorm ?? SYNTHETIC_DEFAULTS.offsetNorm;
  if (!(offsetNorm >= 0) || !Number.isFinite(offsetNorm)) throw new UserError(`synthetic data: offsetNorm must be a finite number >= 0, got ${offsetNorm}`);
}

/** `n` random unit vectors in R^d (Gaussian directions), float32 [n, d]. */
function unitVectors(rng: Rng, n: number, d: number): Float32Array {
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let norm = 0;
    while (norm === 0) {
      let sq = 0;
      for (let k = 0; k < d; k++) {
        const v = rng.normal();
        out[i * d + k] = v;
        sq += v * v;
      }
      norm = Math.sqrt(sq);
    }
    for (let k = 0; k < d; k++) out[i * d + k] /= norm;
  }
  return out;
}

/**
 * Writes a shard directory of synthetic activations (one layer, 0) with ShardWriter, and atoms.f32 (raw
 * little-endian float32 [n_atoms, d]) next to it. The generator config, the offset and a pointer to atoms.f32 are
 * in metadata.data. The same config always produces the same bytes.
 */
export async function writeSyntheticShards(dir: string, cfg: SyntheticConfig): Promise<SyntheticTruth> {
  checkSyntheticConfig(cfg);
  const { nExamples, tokensPerExample: P, d, nAtoms, atomsPerToken: k, noise, seed, clsToken } = cfg;
  const maxTokensPerShard = cfg.maxTokensPerShard ?? SYNTHETIC_DEFAULTS.maxTokensPerShard;
  const offsetNorm = cfg.offsetNorm ?? SYNTHETIC_DEFAULTS.offsetNorm;
  const atoms_AD = unitVectors(new Rng(seed, ATOMS_STREAM), nAtoms, d);
  const offset_D = unitVectors(new Rng(seed, OFFSET_STREAM), 1, d).map((v) => v * offsetNorm);

  const writer = await ShardWriter.create(dir, {
    family: 'synthetic',
    ckpt: 'synthetic',
    layers: [0],
    content_tokens_per_example: P,
    cls_token: clsToken,
    d_model: d,
    max_tokens_per_shard: maxTokensPerShard,
    data: {
      generator: 'vitsae synthetic-sparse-atoms',
      config: { nExamples, tokensPerExample: P, d, nAtoms, atomsPerToken: k, noise, seed, clsToken, maxTokensPerShard, offsetNorm },
      token: `offset + sum of ${k} distinct atoms with magnitudes ~ U[0.5, 1.5] + N(0, noise^2) per coordinate`,
      cls: clsToken ? "mean of the example's patch tokens" : null,
      atoms_file: ATOMS_FILE,
      atoms_shape: [nAtoms, d],
      atoms_dtype: 'float32, little-endian, C order, unit-norm rows',
      offset: Array.from(offset_D),
    },
    dataset: 'synthetic-sparse-atoms',
    pixel_agg: null,
  });
  await fs.writeFile(path.join(dir, ATOMS_FILE), new Uint8Array(atoms_AD.buffer));

  const rng = new Rng(seed, TOKENS_STREAM);
  const T = P + (clsToken ? 1 : 0);
  const cls = clsToken ? 1 : 0;
  const atomIds = new Uint32Array(nAtoms).map((_, i) => i); // partial Fisher-Yates draws k distinct atoms per token
  for (let ex0 = 0; ex0 < nExamples; ex0 += EXAMPLES_PER_APPEND) {
    const n = Math.min(EXAMPLES_PER_APPEND, nExamples - ex0);
    const acts = new Float32Array(n * T * d);
    for (let e = 0; e < n; e++) {
      const base = e * T * d;
      for (let t = cls; t < T; t++) {
        const row = acts.subarray(base + t * d, base + (t + 1) * d);
        for (let j = 0; j < d; j++) row[j] = offset_D[j] + noise * rng.normal();
        for (let a = 0; a < k; a++) {
          const pick = a + rng.nextInt(nAtoms - a);
          [atomIds[a], atomIds[pick]] = [atomIds[pick], atomIds[a]];
          const mag = 0.5 + rng.nextFloat();
          const atom = atomIds[a] * d;
          for (let j = 0; j < d; j++) row[j] += mag * atoms_AD[atom + j];
        }
      }
      if (clsToken) {
        for (let j = 0; j < d; j++) {
          let sum = 0;
          for (let t = 1; t < T; t++) sum += acts[base + t * d + j];
          acts[base + j] = sum / P;
        }
      }
    }
    await writer.append(acts);
  }
  const metadata = await writer.close();
  return { atoms_AD, offset_D, metadata };
}
