/**
 * The reverse view of concept recovery: for each latent, the ground-truth concepts its firing matches best. The
 * concept check (concepts.ts) stores these in its report and the feature browser shows them, so this module has no
 * Node imports.
 */

/** How well a latent's firing (value > 0) matches one concept's presence, over the scanned patches. */
export interface ConceptMatch {
  concept: string;
  f1: number;
  /** Of the patches it fires on, the fraction showing the concept. */
  precision: number;
  /** Of the patches showing the concept, the fraction it fires on. */
  recall: number;
}

/** Matches kept per latent. */
export const MATCHES_PER_LATENT = 3;

/**
 * Each latent's best concepts by F1 (ties to the earlier concept), at most `top`, only those with F1 > 0, from the
 * counts of the concept pass: tp_SC[s * C + c] patches where latent s fires and concept c is present, fires_S[s]
 * patches where s fires, positives_C[c] patches where c is present.
 */
export function bestConceptMatches(tp_SC: ArrayLike<number>, fires_S: ArrayLike<number>, positives_C: ArrayLike<number>, concepts: readonly string[], top = MATCHES_PER_LATENT): ConceptMatch[][] {
  const C = concepts.length;
  return Array.from({ length: fires_S.length }, (_, s) => {
    const best: ConceptMatch[] = [];
    for (let c = 0; c < C; c++) {
      const tp = tp_SC[s * C + c];
      if (tp === 0) continue;
      const f1 = (2 * tp) / (fires_S[s] + positives_C[c]);
      // Insertion into a list of at most `top`, best first.
      let at = best.length;
      while (at > 0 && best[at - 1].f1 < f1) at--;
      if (at >= top) continue;
      best.splice(at, 0, { concept: concepts[c], f1, precision: tp / fires_S[s], recall: tp / positives_C[c] });
      if (best.length > top) best.pop();
    }
    return best;
  });
}
