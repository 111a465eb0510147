/**
 * Ground-truth check for synthetic data: how many true atoms some SAE decoder row matches.
 * Shape letters: A atoms, S latents, D d_model.
 */

/** Best cosine of each atom with any decoder row (rows and atoms are unit norm, so a dot product is a cosine). */
export function bestAtomCosines(W_dec_SD: Float32Array, atoms_AD: Float32Array, d: number): Float32Array {
  const S = W_dec_SD.length / d,
    A = atoms_AD.length / d;
  const best_A = new Float32Array(A).fill(-1);
  for (let a = 0; a < A; a++) {
    for (let s = 0; s < S; s++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += W_dec_SD[s * d + k] * atoms_AD[a * d + k];
      if (dot > best_A[a]) best_A[a] = dot;
    }
  }
  return best_A;
}

/** Fraction of atoms matched by a decoder row with cosine above `threshold` (0.9 by convention). */
export function atomRecovery(W_dec_SD: Float32Array, atoms_AD: Float32Array, d: number, threshold = 0.9): number {
  const best = bestAtomCosines(W_dec_SD, atoms_AD, d);
  return best.filter((c) => c > threshold).length / best.length;
}
