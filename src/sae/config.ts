/**
 * SAE architecture and training configs. The architecture part is what a checkpoint needs to be used
 * (encode/decode); the training part is kept beside it in config.json so that a run can be reproduced and resumed.
 */
import type { ConfigOf, ConfigSpec } from '../util/config.js';
import { ACTIVATIONS, ACTIVATION_TRAITS, traitsOf } from './activations.js';

export const COMPUTES = ['auto', 'fp32', 'bf16'] as const;

export { ACTIVATIONS } from './activations.js';
export type { Activation } from './activations.js';

export const saeSpec = {
  activation: {
    kind: 'enum',
    choices: ACTIVATIONS,
    default: 'topk',
    doc: Object.values(ACTIVATION_TRAITS)
      .map((t) => t.doc)
      .join(', '),
  },
  expansion: { kind: 'number', int: true, min: 1, default: 16, doc: 'd_sae = expansion * d_model (ignored when --d-sae is set)' },
  dSae: { kind: 'number', int: true, min: 0, default: 0, doc: 'number of latents; 0 means expansion * d_model' },
  k: { kind: 'number', int: true, min: 1, default: 32, doc: 'active latents per token (topk) or mean per token (batchtopk, matryoshka)' },
  matryoshkaPrefixes: {
    kind: 'numbers',
    default: [],
    doc: 'nested prefix sizes for matryoshka, ascending, the last = d_sae; empty means d_sae/16, /8, /4, /2, 1',
  },
  normalize: { kind: 'boolean', default: true, doc: 'scale inputs so that mean ||x - mean|| = sqrt(d_model); the scale is stored and undone on decode' },
} as const satisfies ConfigSpec;

export type SaeConfig = ConfigOf<typeof saeSpec>;

export const trainSpec = {
  lr: { kind: 'number', min: 0, default: 4e-4, doc: 'Adam learning rate after warmup' },
  lrWarmup: { kind: 'number', min: 0, default: 0.05, doc: 'steps of linear learning-rate warmup from 0; below 1, a share of the run (0.05: its first 5%)' },
  lrSchedule: { kind: 'enum', choices: ['constant', 'cosine'], default: 'constant', doc: 'learning rate after warmup: constant, or cosine decay to 0 at the last step' },
  l1: {
    kind: 'number',
    min: 0,
    default: 2,
    doc: 'L1 coefficient (relu only): loss = mean over tokens of ||x - x_hat||^2 + l1 * sum_s f_s (decoder rows are unit norm, inputs scaled to norm sqrt(d_model))',
  },
  l1Warmup: { kind: 'number', min: 0, default: 0.05, doc: 'steps of linear L1-coefficient warmup from 0 (relu only); below 1, a share of the run' },
  auxCoeff: { kind: 'number', min: 0, default: 1 / 32, doc: 'weight of the AuxK loss on dead latents (topk variants; 0 disables)' },
  kAux: { kind: 'number', int: true, min: 0, default: 0, doc: 'dead latents used by the AuxK loss per token; 0 means d_model / 2' },
  deadWindow: { kind: 'number', min: 0, default: 0.1, doc: "a latent is dead when it has not fired in this many tokens; below 1, a share of the run's tokens" },
  denseThreshold: { kind: 'number', min: 0, max: 1, default: 0.1, doc: 'a latent is dense when it fires on more than this fraction of tokens' },
  thresholdMomentum: { kind: 'number', min: 0, max: 1, default: 0.99, doc: 'batchtopk: EMA momentum of the inference threshold (the smallest kept activation per batch)' },
  gradClip: { kind: 'number', min: 0, default: 1, doc: 'clip the global gradient norm to this value (0 disables)' },
  adamBeta1: { kind: 'number', min: 0, max: 1, default: 0.9, doc: 'Adam beta1' },
  adamBeta2: { kind: 'number', min: 0, max: 1, default: 0.999, doc: 'Adam beta2' },
  adamEps: { kind: 'number', min: 0, default: 1e-8, doc: 'Adam epsilon' },
  batch: { kind: 'number', int: true, min: 1, default: 4096, doc: 'tokens per training batch' },
  tokens: { kind: 'number', int: true, min: 1, default: 100_000_000, doc: 'training tokens in total (batches = tokens / batch, rounded up)' },
  seed: { kind: 'number', int: true, default: 0, doc: 'seed for initialisation and the shuffled loader' },
  scaleTokens: { kind: 'number', int: true, min: 1, default: 262_144, doc: "tokens used to estimate the data mean and input scale before training (at most the run's tokens)" },
  compute: {
    kind: 'enum',
    choices: COMPUTES,
    default: 'auto',
    doc: "precision of the encoder GEMM (and of dense ReLU's G W_dec^T): bf16 (fp32 accumulation, fp32 weights and Adam state; needs AMX-BF16 or AVX512-BF16, else fp32 with a message), fp32, or auto (bf16 on AMX, where it measured faster, fp32 elsewhere)",
  },
} as const satisfies ConfigSpec;

export type TrainConfig = ConfigOf<typeof trainSpec>;

/**
 * The config with its run-length shares made absolute: a warmup below 1 becomes that share of the run's steps, a
 * dead window below 1 that share of its tokens. Fixed step counts fit one run length only: a 500-step warmup took
 * half of a 1,000-step run and cost a TopK SAE 15 points of atom recovery.
 */
export function resolveRunLength(t: TrainConfig): TrainConfig {
  const steps = Math.ceil(t.tokens / t.batch);
  const share = (v: number, of: number) => (v > 0 && v < 1 ? Math.max(1, Math.round(v * of)) : Math.round(v));
  return { ...t, lrWarmup: share(t.lrWarmup, steps), l1Warmup: share(t.l1Warmup, steps), deadWindow: Math.max(1, share(t.deadWindow, t.tokens)) };
}

/** What a checkpoint's config.json holds: the architecture, the data constants learned at the start, the training config. */
export interface SaeCheckpointConfig {
  format: 'vitsae-sae';
  version: 1;
  d_model: number;
  d_sae: number;
  sae: SaeConfig;
  /** Inputs are multiplied by this before encoding and outputs divided by it after decoding. */
  input_scale: number;
  /** batchtopk / matryoshka: latents below this pre-activation are zeroed at inference. */
  threshold: number;
  train?: TrainConfig;
  /** Shards the SAE was trained on, with layer and token selection. */
  data?: { shards: string; layer: number; tokens: string };
  /** Training progress when the checkpoint was written. */
  step?: number;
  tokens_seen?: number;
}

export function dSaeOf(sae: SaeConfig, dModel: number): number {
  return sae.dSae > 0 ? sae.dSae : sae.expansion * dModel;
}

/** The nested prefix sizes of a matryoshka SAE, validated; other activations have one prefix (the whole). */
export function prefixesOf(sae: SaeConfig, dSae: number): number[] {
  if (!traitsOf(sae.activation).prefixes) return [dSae];
  const p = sae.matryoshkaPrefixes.length ? [...sae.matryoshkaPrefixes] : [16, 8, 4, 2, 1].map((f) => Math.max(1, Math.floor(dSae / f)));
  for (let i = 0; i < p.length; i++) {
    if (!Number.isInteger(p[i]) || p[i] < 1 || (i > 0 && p[i] <= p[i - 1])) throw new Error(`matryoshka prefixes must be ascending positive integers, got ${p.join(',')}`);
  }
  if (p[p.length - 1] !== dSae) throw new Error(`the last matryoshka prefix must be d_sae = ${dSae}, got ${p[p.length - 1]}`);
  return p;
}
