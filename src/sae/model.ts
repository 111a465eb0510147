/**
 * An SAE: its architecture config, its weights in the native core, encode/decode of raw (unscaled) activations,
 * and checkpoints. Shape letters: B tokens, D d_model, S d_sae.
 *
 * Checkpoint directory (see src/sae/README.md):
 *   sae.safetensors        W_enc [D,S], b_enc [S], W_dec [S,D], b_dec [D], float32, in the scaled input space
 *   config.json            SaeCheckpointConfig (architecture, input_scale, threshold, training config, progress)
 *   optimizer.safetensors  Adam moments, per-latent tokens-since-fired, for `train --resume` (optional)
 */
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { writeFilesTogether } from '../util/fs.js';
import { drawNormals, drawNormalsOffThread } from '../util/normals.js';
import { nativeIdOf, traitsOf } from './activations.js';
import { type SaeCheckpointConfig, type SaeConfig, type TrainConfig, dSaeOf, prefixesOf } from './config.js';
import { type LoadedSae, type Weights, VITSAE_WEIGHTS, readVitsaeDir, vitsaeWeightsLayout, writeVitsaeConfig } from './checkpoint.js';
import { type NativeCore, type SparseActs, native } from './native.js';
import { type TensorEntry, readSafetensors, safetensorsHeader, toFloat32 } from './safetensors.js';

const PARAMS = ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const;
const OPTIMIZER_FILE = 'optimizer.safetensors';

/** Transposes a row-major [rows, cols] matrix, in 64 x 64 blocks (a row at a time was 4x slower at 12288 x 768). */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  const BLOCK = 64;
  for (let r0 = 0; r0 < rows; r0 += BLOCK) {
    const r1 = Math.min(rows, r0 + BLOCK);
    for (let c0 = 0; c0 < cols; c0 += BLOCK) {
      const c1 = Math.min(cols, c0 + BLOCK);
      for (let r = r0; r < r1; r++) for (let c = c0, o = c0 * rows + r; c < c1; c++, o += rows) out[o] = a[r * cols + c];
    }
  }
  return out;
}

export interface SaeInit {
  /** Data mean in raw units [D]: b_dec starts there (after scaling). */
  mean: Float64Array | Float32Array;
  /** Multiplier that makes mean ||x - mean|| = sqrt(D); 1 when normalisation is off. */
  inputScale: number;
  seed: number;
  /** The decoder's random draws for `seed`, made ahead by `initialDraws` (else `create` draws them). */
  draws?: Float32Array;
}

/** The Rng stream of an SAE's initial decoder. */
const initKeys = (seed: number) => [seed, 0x5ae];

/** The random draws `Sae.create` makes for `seed` and this size, on a worker thread (the same values). */
export function initialDraws(seed: number, dModel: number, dSae: number): Promise<Float32Array> {
  return drawNormalsOffThread(initKeys(seed), dModel * dSae);
}

export class Sae {
  private constructor(
    public config: SaeCheckpointConfig,
    public readonly core: NativeCore<Float32Array>,
  ) {}

  get dModel(): number {
    return this.config.d_model;
  }
  get dSae(): number {
    return this.config.d_sae;
  }

  private static makeCore(cfg: SaeCheckpointConfig, train?: TrainConfig): NativeCore<Float32Array> {
    const sae = cfg.sae;
    return new (native().SaeF32)({
      d: cfg.d_model,
      s: cfg.d_sae,
      activation: nativeIdOf(sae.activation),
      k: Math.min(sae.k, cfg.d_sae),
      prefixes: prefixesOf(sae, cfg.d_sae),
      kAux: traitsOf(sae.activation).auxK ? Math.min(train?.kAux || Math.floor(cfg.d_model / 2), cfg.d_sae) : 0,
      auxCoeff: traitsOf(sae.activation).auxK ? (train?.auxCoeff ?? 0) : 0,
      deadWindow: train?.deadWindow ?? 10_000_000,
      thresholdMomentum: train?.thresholdMomentum ?? 0.99,
    });
  }

  /**
   * A fresh SAE: decoder rows are random unit vectors, the encoder starts as the decoder's transpose, b_enc = 0,
   * b_dec = the (scaled) data mean.
   */
  static create(dModel: number, sae: SaeConfig, init: SaeInit, train?: TrainConfig): Sae {
    const dSae = dSaeOf(sae, dModel);
    const cfg: SaeCheckpointConfig = {
      format: 'vitsae-sae',
      version: 1,
      d_model: dModel,
      d_sae: dSae,
      sae,
      input_scale: init.inputScale,
      threshold: -1,
      ...(train ? { train } : {}),
    };
    const model = new Sae(cfg, Sae.makeCore(cfg, train));
    const w = init.draws ?? drawNormals(initKeys(init.seed), dSae * dModel);
    if (w.length !== dSae * dModel) throw new Error(`Sae.create: ${w.length} initial draws for a ${dSae} x ${dModel} decoder`);
    model.core.setTensor('W_dec', w);
    model.core.normalizeDecoder();
    model.core.setTensor('W_enc', model.core.getTensor('W_dec'));
    model.core.setTensor(
      'b_dec',
      Float32Array.from(init.mean, (m) => m * init.inputScale),
    );
    return model;
  }

  /** An SAE from weights in the checkpoint layout (W_enc [D,S]) and their config, e.g. from interop's `readAnySae`. */
  static fromLoaded(loaded: LoadedSae, source: string, train?: TrainConfig): Sae {
    const model = new Sae(loaded.config, Sae.makeCore(loaded.config, train ?? loaded.config.train));
    model.setWeights(loaded, source);
    model.core.setState({ threshold: loaded.config.threshold });
    return model;
  }

  /** Opens a vitsae checkpoint directory written by `save`, with its optimizer state when asked (for resuming). */
  static async load(dir: string, opts: { train?: TrainConfig; withOptimizer?: boolean } = {}): Promise<Sae> {
    const model = Sae.fromLoaded(await readVitsaeDir(dir), dir, opts.train);
    if (opts.withOptimizer) await model.loadOptimizer(dir);
    return model;
  }

  /** Sets weights given in the checkpoint layout (W_enc [D,S]); refuses NaN or Inf. */
  setWeights(w: Weights, source: string): void {
    for (const name of PARAMS) {
      const data = w[name];
      for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) throw new UserError(`${source}: ${name} contains NaN or Inf at index ${i}; the checkpoint is corrupt`);
      this.core.setTensor(name, name === 'W_enc' ? transpose(data, this.dModel, this.dSae) : data);
    }
  }

  /** Weights in the checkpoint layout (W_enc [D,S]). */
  weights(): Weights {
    return {
      W_enc: transpose(this.core.getTensor('W_enc'), this.dSae, this.dModel),
      b_enc: this.core.getTensor('b_enc'),
      W_dec: this.core.getTensor('W_dec'),
      b_dec: this.core.getTensor('b_dec'),
    };
  }

  /**
   * Writes the checkpoint: weights, config and optimizer state become visible together, or after a crash the
   * previous checkpoint stays whole (writeFilesTogether), so a run killed at any moment can resume. The tensors go
   * from the core's memory to disk without copies (NativeCore.writeFile).
   */
  async save(dir: string, opts: { withOptimizer?: boolean } = {}): Promise<void> {
    this.config.threshold = this.core.getState().threshold;
    const step = String(this.config.step ?? 0);
    const { shapes, metadata } = vitsaeWeightsLayout(this.config);
    await writeFilesTogether(dir, async (staging) => {
      if (opts.withOptimizer) {
        // The moments are in the core's layout, where W_enc is [S, D] like W_dec.
        const entries: Record<string, TensorEntry> = { since_fired: { dtype: 'F64', shape: [this.dSae] } };
        for (const kind of ['adam_m', 'adam_v']) for (const name of PARAMS) entries[`${kind}.${name}`] = { dtype: 'F32', shape: shapes[name === 'W_enc' ? 'W_dec' : name] };
        await this.writeTensors(path.join(staging, OPTIMIZER_FILE), entries, { step, adam_step: String(this.core.getState().adamStep) }, (name) => name);
      }
      const weights = Object.fromEntries(PARAMS.map((name) => [name, { dtype: 'F32' as const, shape: shapes[name] }]));
      // The core holds W_enc as [S, D]; the file holds [D, S].
      await this.writeTensors(path.join(staging, VITSAE_WEIGHTS), weights, metadata, (name) => (name === 'W_enc' ? 'W_enc.T' : name));
      await writeVitsaeConfig(staging, this.config);
    });
  }

  /** A safetensors file of the core's tensors, `source` naming each one's core tensor (see NativeCore.writeFile). */
  private async writeTensors(file: string, entries: Record<string, TensorEntry>, metadata: Record<string, string>, source: (name: string) => string): Promise<void> {
    const { bytes, names } = safetensorsHeader(entries, metadata);
    await this.core.writeFile(file, [bytes, ...names.map(source)]);
  }

  private async loadOptimizer(dir: string): Promise<void> {
    const file = path.join(dir, OPTIMIZER_FILE);
    const { tensors, metadata } = await readSafetensors(file);
    if (metadata.step !== String(this.config.step ?? 0)) {
      throw new UserError(`${file} is from step ${metadata.step} but config.json says step ${this.config.step}: the checkpoint was interrupted mid-write; resume from a copy or start again`);
    }
    for (const [name, t] of Object.entries(tensors)) {
      if (name === 'since_fired') this.core.setTensor(name, Float64Array.from(t.data as Float64Array));
      else this.core.setTensor(name, toFloat32(t));
    }
    this.core.setState({ adamStep: Number(metadata.adam_step) });
  }

  /** Scales raw activations into the SAE's input space (a copy). */
  scaleInput(x_BD: Float32Array): Float32Array {
    const s = this.config.input_scale;
    const out = new Float32Array(x_BD.length);
    for (let i = 0; i < out.length; i++) out[i] = x_BD[i] * s;
    return out;
  }

  /**
   * Latents of raw activations (inference mode: batchtopk uses its learned threshold) and, when asked, the
   * reconstruction in raw units.
   */
  async encode(x_BD: Float32Array, withReconstruction = false): Promise<SparseActs<Float32Array>> {
    const out = await this.core.infer(this.scaleInput(x_BD), withReconstruction);
    if (out.xhat) {
      const inv = 1 / this.config.input_scale;
      for (let i = 0; i < out.xhat.length; i++) out.xhat[i] *= inv;
    }
    return out;
  }

  /**
   * The reconstruction in raw units from latents: x_hat = (f W_dec + b_dec) / input_scale. `f` is what `encode`
   * returns (sparse rows, any number of tokens) or dense latents f [B, S]; `decode(await encode(x))` equals
   * `encode(x, true).xhat`.
   */
  decode(f: Pick<SparseActs<Float32Array>, 'rowptr' | 'idx' | 'val'> | Float32Array): Float32Array {
    const D = this.dModel,
      S = this.dSae;
    const W_dec = this.core.getTensor('W_dec'),
      b_dec = this.core.getTensor('b_dec');
    const inv = 1 / this.config.input_scale;
    let xhat_BD: Float32Array;
    if (f instanceof Float32Array) {
      if (f.length % S) throw new UserError(`Sae.decode: dense latents have ${f.length} values, not a multiple of d_sae ${S}`);
      xhat_BD = new Float32Array((f.length / S) * D);
      native().sgemm(false, false, f.length / S, D, S, f, W_dec, xhat_BD);
    } else {
      const B = f.rowptr.length - 1;
      xhat_BD = new Float32Array(B * D);
      for (let b = 0; b < B; b++) {
        const row = xhat_BD.subarray(b * D, (b + 1) * D);
        for (let j = f.rowptr[b]; j < f.rowptr[b + 1]; j++) {
          const s = f.idx[j],
            v = f.val[j];
          if (s < 0 || s >= S) throw new UserError(`Sae.decode: latent index ${s} of token ${b} is outside 0..${S - 1}`);
          const w = W_dec.subarray(s * D, (s + 1) * D);
          for (let d = 0; d < D; d++) row[d] += v * w[d];
        }
      }
    }
    for (let i = 0; i < xhat_BD.length; i++) xhat_BD[i] = (xhat_BD[i] + b_dec[i % D]) * inv;
    return xhat_BD;
  }
}
