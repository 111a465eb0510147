/**
 * Where files live inside a visuals directory, for the writer, the server and the web app alike (no Node imports).
 */

/** Latents per exemplar chunk file and per thumbnail directory. */
export const CHUNK_SIZE = 64;
export const FEATURES_DIR = 'features';
export const THUMBS_DIR = 'thumbs';

/** The thumbnail of a latent's exemplar of rank `rank` (0 = strongest), relative to the visuals directory. */
export function thumbPath(latent: number, rank: number): string {
  return `${THUMBS_DIR}/${Math.floor(latent / CHUNK_SIZE)}/${latent}-${rank}.webp`;
}
