/**
 * Token access in a model tensor of either layout the recorder knows (see TokenLayout): transformer tokens
 * [N, T, D] (T = prefix tokens, CLS first, then P patches) or a feature map [N, C, H, W] (D = C channels, P = H*W
 * patches, no prefix). Edits and task heads work on patch tokens as rows of D values, so these helpers hide where
 * a value lives.
 *
 * Shape letters: N images, P patches, D width, R task-head rows per image.
 */
import type { TokenLayout } from '../backbone/backbone.js';

/** How the task head reads a feature tensor: the CLS token, the mean of the patch tokens, or every patch token. */
export type Pooling = 'cls' | 'mean' | 'patches';

/** float32 values per image in a tensor of this layout. */
export function floatsPerImage(layout: TokenLayout): number {
  return (layout.prefixTokens + layout.patchTokens) * layout.dModel;
}

/** Offset and step between the D values of patch p of image n (D consecutive values, or a channel plane apart). */
function patchAddress(layout: TokenLayout, n: number, p: number): { at: number; step: number } {
  const base = n * floatsPerImage(layout);
  if (layout.layout === 'nchw') return { at: base + p, step: layout.patchTokens };
  return { at: base + (layout.prefixTokens + p) * layout.dModel, step: 1 };
}

/** The patch tokens of images [0, N) as acts_NPD. */
export function readPatches(data: Float32Array, layout: TokenLayout, N: number): Float32Array {
  const { patchTokens: P, dModel: D } = layout;
  const out = new Float32Array(N * P * D);
  for (let n = 0; n < N; n++)
    for (let p = 0; p < P; p++) {
      const { at, step } = patchAddress(layout, n, p);
      const o = (n * P + p) * D;
      for (let d = 0; d < D; d++) out[o + d] = data[at + d * step];
    }
  return out;
}

/** Adds delta_NPD to the patch tokens of images [0, N) in place; prefix tokens are not touched. */
export function addToPatches(data: Float32Array, layout: TokenLayout, N: number, delta_NPD: Float32Array): void {
  const { patchTokens: P, dModel: D } = layout;
  for (let n = 0; n < N; n++)
    for (let p = 0; p < P; p++) {
      const o = (n * P + p) * D;
      const { at, step } = patchAddress(layout, n, p);
      for (let d = 0; d < D; d++) data[at + d * step] += delta_NPD[o + d];
    }
}

/** Task-head rows per image: 1 for a pooled representation, P for per-patch heads. */
export function rowsPerImage(pooling: Pooling, layout: Pick<TokenLayout, 'patchTokens'>): number {
  return pooling === 'patches' ? layout.patchTokens : 1;
}

/** The rows a task head reads from images [0, N) of a feature tensor, as rows_NRD. */
export function taskRows(data: Float32Array, layout: TokenLayout, N: number, pooling: Pooling): Float32Array {
  const { patchTokens: P, dModel: D } = layout;
  if (pooling === 'cls') {
    const out = new Float32Array(N * D);
    for (let n = 0; n < N; n++) out.set(data.subarray(n * floatsPerImage(layout), n * floatsPerImage(layout) + D), n * D);
    return out;
  }
  const patches_NPD = readPatches(data, layout, N);
  if (pooling === 'patches') return patches_NPD;
  const out = new Float32Array(N * D);
  for (let n = 0; n < N; n++) for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) out[n * D + d] += patches_NPD[(n * P + p) * D + d] / P;
  return out;
}
