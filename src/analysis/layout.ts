/**
 * Where files live inside a visuals directory and what its index.json says, for the writer, the server and the
 * web app alike (no Node imports).
 */

/** Latents per exemplar chunk file and per thumbnail directory. */
export const CHUNK_SIZE = 64;
export const FEATURES_DIR = 'features';
export const THUMBS_DIR = 'thumbs';

/** The thumbnail of a latent's exemplar of rank `rank` (0 = strongest), relative to the visuals directory. */
export function thumbPath(latent: number, rank: number): string {
  return `${THUMBS_DIR}/${Math.floor(latent / CHUNK_SIZE)}/${latent}-${rank}.webp`;
}

/** index.json of a visuals directory (README.md). */
export interface VisualsMeta {
  format: 'vitsae-visuals';
  version: 1;
  d_sae: number;
  n_images: number;
  n_tokens: number;
  /** Patches per image and their grid [rows, cols], row-major. */
  patches: number;
  grid: [number, number];
  /** Model input size [H, W]: the image the grid lies on. */
  image_size: [number, number];
  k: number;
  cofire: number;
  image_top: number;
  chunk_size: number;
  /** Exemplar thumbnails: size [H, W] in pixels, WebP. */
  thumb_size: [number, number];
  histogram: { bins_per_octave: number; min_exp: number; bins: number };
  stats_columns: readonly string[];
  source: { sae: string; shards: string; layer: number; images: string; model?: string };
  created: string;
}
