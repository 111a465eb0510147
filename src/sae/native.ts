/**
 * The compiled SAE core (src/sae/native/*.cc, built by node-gyp into build/Release). See sae_core.h for the math.
 */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { ACTIVATIONS } from './activations.js';

export interface CoreOptions {
  d: number;
  s: number;
  /** 0 relu, 1 topk, 2 batchtopk, 3 matryoshka */
  activation: number;
  k: number;
  prefixes: number[];
  kAux: number;
  auxCoeff: number;
  deadWindow: number;
  thresholdMomentum: number;
  /** ReLU uses the sparse decoder and backward when at most this fraction of latents fire (default 0.02). */
  sparseReluDensity?: number;
}

export interface StepStats {
  loss: number;
  mse: number;
  prefixMse: number;
  l1Loss: number;
  auxLoss: number;
  l0: number;
  gradNorm: number;
  nDead: number;
}

export interface Hyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  clip: number;
}

/** Sparse activations, CSR by token: latents rowptr[b]..rowptr[b+1] of token b. */
export interface SparseActs<A> {
  rowptr: Int32Array;
  idx: Int32Array;
  val: A;
  xhat?: A;
}

export interface RawMetrics {
  n: number;
  sse: number;
  l0: number;
  sumX2: number;
  sumR2: number;
  sumX: Float64Array;
  sumR: Float64Array;
  fires: Float64Array;
}

/** What a core's encoder GEMM runs in: fp32 (OpenBLAS), bf16 on AMX tiles, or bf16 with AVX512-BF16 dot products. */
export type ComputeKernel = 'fp32' | 'bf16-amx' | 'bf16-avx512';

export type Phase = 'encode' | 'select' | 'decode' | 'backward' | 'update';

export interface NativeCore<A extends Float32Array | Float64Array> {
  getTensor(name: string): A;
  getTensor(name: 'since_fired'): Float64Array;
  setTensor(name: string, data: A | Float64Array): void;
  /**
   * compute: what the encoder GEMM runs in (fp32, bf16-amx or bf16-avx512). phaseSeconds: wall time of each phase
   * of the training steps since the core was made (encode: x - b_dec and the encoder GEMM; select: choosing the
   * active latents; decode: sparse decoder, loss and per-entry gradients; backward: per-latent gradients, or the
   * whole dense ReLU backward; update: clipping, Adam, decoder normalisation).
   */
  getState(): { adamStep: number; threshold: number; compute: ComputeKernel; phaseSeconds: Record<Phase, number> };
  /** bf16: run the encoder GEMM in bf16 where the CPU has a kernel for it (fp32 otherwise; see getState). */
  setState(s: { adamStep?: number; threshold?: number; bf16?: boolean }): void;
  forwardBackward(x: A, l1: number, auxTarget?: A): StepStats;
  update(h: Hyper): number;
  /**
   * One step on x times `scale` (default 1; the input scale, applied while the core copies x into its own rows on
   * its worker). x is read during the step: leave it unchanged until the promise settles.
   */
  trainStep(x: A, l1: number, h: Hyper, scale?: number): Promise<StepStats>;
  infer(x: A, wantXhat?: boolean): Promise<SparseActs<A>>;
  takeMetrics(): RawMetrics;
  normalizeDecoder(): void;
  /**
   * Creates `file` with the parts in order and fsyncs it, off the main thread, bypassing the page cache (O_DIRECT)
   * where the file system allows (native/direct_io.h; VITSAE_DIRECT_IO=off disables it). A part is bytes (left
   * unchanged until the promise settles) or one of the core's tensors by name, straight from its memory:
   * "since_fired", a getTensor name, or "<name>.T" for an [S, D] tensor written as [D, S].
   */
  writeFile(file: string, parts: (ArrayBufferView | string)[]): Promise<void>;
}

interface NativeModule {
  SaeF32: new (o: CoreOptions) => NativeCore<Float32Array>;
  SaeF64: new (o: CoreOptions) => NativeCore<Float64Array>;
  sgemmGflops(m: number, n: number, k: number, reps: number): number;
  /** C[M,N] = op(A) op(B) (+ C when accumulate), row major; op transposes when the flag is set. */
  sgemm(transA: boolean, transB: boolean, m: number, n: number, k: number, a: Float32Array, b: Float32Array, c: Float32Array, accumulate?: boolean): void;
  /** err[n,c] = (sigmoid(logits[n,c] + bias[c]) - targets[n,c]) * scale; biasGrad[c] = sum over n of err[n,c]. */
  logisticResidual(logits_NC: Float32Array, bias_C: Float64Array, targets_NC: Uint8Array, scale: number, err_NC: Float32Array, biasGrad_C: Float64Array): void;
  threads: number;
  /** The activations the core implements, in the order of their ids. */
  activations: string[];
  /** The bf16 kernel this CPU runs (fp32 when it has none). VITSAE_BF16_KERNEL=avx512|none caps it. */
  bf16Kernel(): ComputeKernel;
}

let cached: NativeModule | undefined;

/** Loads the addon once; a clear error tells how to build it when it is missing. */
export function native(): NativeModule {
  if (cached) return cached;
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const file = path.join(root, 'build', 'Release', 'vitsae_native.node');
  if (!existsSync(file)) {
    throw new Error(`the native SAE core is not built (${file} is missing): run \`npm run build:native\` (needs apt libopenblas-dev)`);
  }
  // OpenBLAS's threads spin for 2^28 cycles (~0.1 s) after each GEMM before they sleep, on the cores that the
  // step's sparse phases (OpenMP) need next: a fp32 TopK step measured 7-8% slower (top-k 28 -> 18 ms, decode 34 ->
  // 24). 2^4 cycles puts them to sleep at once; waking them costs microseconds per GEMM. OpenBLAS reads this when it
  // loads, with the addon; a user's own setting wins.
  process.env.OPENBLAS_THREAD_TIMEOUT ??= '4';
  const loaded = createRequire(import.meta.url)(file) as NativeModule;
  // Activations cross to C++ as their index in ACTIVATIONS: the core's own list must be the same.
  if (loaded.activations.join() !== ACTIVATIONS.join())
    throw new Error(
      `the native SAE core (${file}) knows activations [${loaded.activations}] but src/sae/activations.ts declares [${ACTIVATIONS}] in that order: rebuild it (npm run build:native) or align the two`,
    );
  cached = loaded;
  return cached;
}
