/**
 * How abstract a latent is, judged from its exemplars (its top images by maximum over patches, with the value at
 * every patch): are they pure by image class or by a low-level per-patch concept, and how much of each image does
 * it cover? Definitions (also in src/analysis/README.md), for a latent with exemplars i = 1..n and stored patch
 * values q_ip >= 0 (proportional to the latent's value at patch p of exemplar i):
 *
 *   spread          = mean_i |{p : q_ip > 0}| / P
 *   class purity    = max_c mean_i [class(i) = c]                        (every exemplar has a class)
 *   concept purity  = max_c mean_i sum_p (q_ip / sum_p' q_ip') [concept c present at patch p of i]
 *
 * Concept purity is the share of the latent's firing mass on patches that show the concept, averaged over
 * exemplars so that each exemplar weighs the same, as in class purity. A score is left out (undefined) when its
 * labels are missing, never guessed.
 *
 * Shape letters: P patches per image, C concepts.
 */

export interface ExemplarPatches {
  /** The class of the exemplar's image, or null when unknown. */
  label: number | null;
  /** Shard example index, for the per-patch concept labels. */
  example: number;
  /** uint8 [P]: the latent's value at each patch, relative to the exemplar's maximum. */
  patches_P: Uint8Array;
}

export interface PatchLabels {
  concepts: string[];
  /** uint8 [P, C], 1 where concept c is present at patch p of shard example `example`. */
  labels(example: number): Uint8Array;
}

export interface AbstractionScores {
  spread: number;
  class_purity?: number;
  class?: number;
  concept_purity?: number;
  concept?: string;
}

/** The scores of one latent from its exemplars (at least one); `concepts` absent means no concept labels. */
export function abstractionScores(exemplars: readonly ExemplarPatches[], concepts?: PatchLabels): AbstractionScores {
  const n = exemplars.length;
  if (n === 0) throw new Error('abstraction scores need at least one exemplar');
  const P = exemplars[0].patches_P.length;
  let spread = 0;
  for (const e of exemplars) {
    let on = 0;
    for (let p = 0; p < P; p++) if (e.patches_P[p] > 0) on++;
    spread += on / P / n;
  }
  const out: AbstractionScores = { spread };

  if (exemplars.every((e) => e.label !== null)) {
    const counts = new Map<number, number>();
    for (const e of exemplars) counts.set(e.label!, (counts.get(e.label!) ?? 0) + 1);
    // The most common class; ties go to the smaller class index.
    const [cls, count] = [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0];
    out.class_purity = count / n;
    out.class = cls;
  }

  if (concepts) {
    const C = concepts.concepts.length;
    const share_C = new Float64Array(C);
    for (const e of exemplars) {
      const y_PC = concepts.labels(e.example);
      if (y_PC.length !== P * C) throw new Error(`concept labels of example ${e.example} cover ${y_PC.length / C} patches, the exemplars ${P}`);
      let mass = 0;
      for (let p = 0; p < P; p++) mass += e.patches_P[p];
      if (mass === 0) continue; // a value too small to store: this exemplar shows nothing to score
      for (let p = 0; p < P; p++) {
        const w = e.patches_P[p] / mass / n;
        if (w > 0) for (let c = 0; c < C; c++) if (y_PC[p * C + c]) share_C[c] += w;
      }
    }
    let best = 0;
    for (let c = 1; c < C; c++) if (share_C[c] > share_C[best]) best = c;
    out.concept_purity = share_C[best];
    out.concept = concepts.concepts[best];
  }
  return out;
}
