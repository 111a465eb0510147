/**
 * compare.json, what `vitsae compare` writes (described in src/analysis/README.md, "Comparing two runs"): types
 * and bin edges only, with no Node imports, so that the web app reads the same types.
 */

export const COMPARE_FILE = 'compare.json';
export const REPORT_FILE = 'report.html';

/** Frequency spectrum bins: log10 of the firing frequency, [-8, 0] in steps of 1/4; lower values go to bin 0. */
export const SPECTRUM_EDGES: number[] = Array.from({ length: 33 }, (_, i) => -8 + i / 4);
/** Best-match histogram bins: correlation [-1, 1] in steps of 1/20; r = 1 goes to the last bin. */
export const BEST_MATCH_EDGES: number[] = Array.from({ length: 41 }, (_, i) => -1 + i / 20);

/** The bin of `x` among `edges` (ascending): values outside go to the first or last bin. */
export function binOf(edges: readonly number[], x: number): number {
  let lo = 0,
    hi = edges.length - 2;
  if (x < edges[1]) return 0;
  if (x >= edges[hi]) return hi;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (edges[mid] <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export interface CompareJson {
  format: 'vitsae-compare';
  version: 1;
  created: string;
  /** Correlations below it make a latent "unmatched". */
  threshold: number;
  /** Images and patch tokens the correlations were computed on. */
  n_images: number;
  n_patches: number;
  spectrum_edges: number[];
  best_match_edges: number[];
  /** The Hungarian assignment between the latents of A and B, over its pairs of latents that both fire. */
  assignment: { pairs: number; mean_r: number; median_r: number; above_threshold: number };
  /** Run A, then run B. */
  runs: [CompareSide, CompareSide];
}

export interface CompareSide {
  /** The run directory (absolute) and its name. */
  dir: string;
  name: string;
  model: string | null;
  layer: number;
  d_sae: number;
  /** Latents that fire at least once on the compared patches. */
  live: number;
  /** The concept-recovery summary of the run's concept report, when it has one. */
  concepts: ConceptSummary | null;
  /** Latents by log10 firing frequency over the run's visuals (counts per spectrum_edges bin); dead ones apart. */
  spectrum: { counts: number[]; dead: number };
  /** Live latents by their best correlation with any latent of the other run (counts per best_match_edges bin). */
  best_match: { counts: number[]; mean: number; median: number; above_threshold: number };
  /** Live latents whose best match is below the threshold, most frequent first. */
  unmatched: number[];
  abstraction: AbstractionSummary;
  /** One entry per latent, by latent index. */
  latents: LatentComparison[];
}

export interface ConceptSummary {
  mean_best_f1: number;
  mean_group_f1: number;
  mean_probe_f1: number;
  recovery_ratio: number;
  recovery_ratio_group3: number;
  n_decodable: number;
  n_patches: number;
  concepts: { concept: string; latent: number; f1: number; probe_f1: number }[];
}

export interface AbstractionSummary {
  /** Whether the exemplar images have classes, and their names when known. */
  class_labels: boolean;
  class_names: string[] | null;
  /** The per-patch concepts the exemplars were scored against (null: no concept labels). */
  concept_names: string[] | null;
  /** Latents with at least min_exemplars exemplars, which get scores. */
  min_exemplars: number;
  scored: number;
  /** Means over the scored latents; null where the score is not defined. */
  mean_spread: number | null;
  mean_class_purity: number | null;
  mean_concept_purity: number | null;
}

export interface LatentComparison {
  latent: number;
  /** Firing frequency over the run's visuals. */
  frequency: number;
  /** The most correlated latent of the other run and the correlation (-1 and 0 for a latent that never fires). */
  best: number;
  best_r: number;
  /** Its partner in the Hungarian assignment and their correlation (-1 and 0 when left out: the other run is smaller). */
  partner: number;
  partner_r: number;
  n_exemplars: number;
  /** Abstraction scores (README.md), only for latents with enough exemplars and only where labels exist. */
  spread?: number;
  class_purity?: number;
  /** The modal class of the exemplars (an index into class_names when they are known). */
  class?: number;
  concept_purity?: number;
  concept?: string;
}
