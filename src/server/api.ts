/**
 * The JSON the feature browser reads, from the server (`/api/...`) or from a static site's files alike. Types (and
 * the feature list's query spec) with no Node imports, so the web app shares them.
 */
import type { ConceptMatch } from '../analysis/concept-matches.js';
import type { CompareJson } from '../analysis/compare/format.js';
import type { VisualsMeta } from '../analysis/layout.js';
import type { ConfigOf, ConfigSpec } from '../util/spec.js';

export type { ConceptMatch };

/** A run: the geometry of its visuals (index.json) and where it came from. */
export interface RunInfo extends Pick<VisualsMeta, 'd_sae' | 'n_images' | 'patches' | 'grid' | 'image_size' | 'thumb_size' | 'k'> {
  id: string;
  /** The run directory's name. */
  name: string;
  /** Base URL of the run's visuals files: a thumbnail is at files + thumbPath(latent, rank) (src/analysis/layout.ts). */
  files: string;
  model: string | null;
  layer: number;
  dataset: string;
  sae: string;
  /** Whether names and notes can be edited (false on a static site). */
  editable: boolean;
  /** The ground-truth concepts the latents were matched against (run.json's concept report); empty without one. */
  concepts: string[];
}

/** A feature in lists: enough to show it with its first thumbnails. */
export interface LatentRef {
  latent: number;
  name: string;
  /** Fraction of patch tokens it fires on. */
  frequency: number;
  /** Exemplars it has, with thumbnails of ranks 0..n_exemplars-1. */
  n_exemplars: number;
}

export interface FeatureRow extends LatentRef {
  /** Fraction of images it fires on somewhere. */
  image_frequency: number;
  /** Mean value where it fires. */
  mean: number;
  max: number;
  /** The best-matching ground-truth concept ('' when none matches or the run has no concept report), and its F1. */
  concept: string;
  concept_f1: number;
}

export const SORT_KEYS = ['latent', 'frequency', 'image_frequency', 'max', 'mean', 'name', 'concept_f1'] as const;
export type SortKey = (typeof SORT_KEYS)[number];
export const ANNOTATED = ['any', 'named', 'unnamed'] as const;

/** `GET /api/runs/:run/features`'s query string; a static site runs the same query in the browser (query.ts). */
export const featureQuerySpec = {
  sort: { kind: 'enum', choices: SORT_KEYS, default: 'latent', doc: 'the column to sort by' },
  order: { kind: 'enum', choices: ['asc', 'desc'], default: 'asc', doc: 'the sort order' },
  offset: { kind: 'number', int: true, min: 0, default: 0, doc: 'rows to skip' },
  limit: { kind: 'number', int: true, min: 1, max: 500, default: 100, doc: 'rows to answer' },
  q: { kind: 'string', maxLength: 200, doc: 'case-insensitive text in the name or notes' },
  annotated: { kind: 'enum', choices: ANNOTATED, default: 'any', doc: 'named features, unnamed ones, or any' },
  min_frequency: { kind: 'number', min: 0, max: 1, doc: 'the least fraction of patch tokens a feature fires on' },
  max_frequency: { kind: 'number', min: 0, max: 1, doc: 'the largest fraction of patch tokens a feature fires on' },
  concept: { kind: 'string', maxLength: 200, doc: 'only features whose best-matching concept is this one' },
  min_concept_f1: { kind: 'number', min: 0, max: 1, doc: 'only features whose best concept match has at least this F1' },
} as const satisfies ConfigSpec;

export type FeatureQuery = ConfigOf<typeof featureQuerySpec>;

export interface FeatureList {
  total: number;
  offset: number;
  limit: number;
  items: FeatureRow[];
}

export interface ExemplarView {
  image: number;
  key: string;
  label: number | null;
  max: number;
  /** The value at each patch (row-major on the grid), 0 where the latent does not fire. */
  values: number[];
}

export interface FeaturePage extends FeatureRow {
  run: string;
  notes: string;
  /** Best first; exemplar r's thumbnail is thumbPath(latent, r). */
  /** Value histogram: counts[b] of values in [lo * ratio^b, lo * ratio^(b+1)). */
  histogram: { lo: number; ratio: number; counts: number[] };
  exemplars: ExemplarView[];
  /** Latents firing at the peak patch of this feature's exemplars; count = exemplars shared. */
  cofire: (LatentRef & { count: number })[];
  /** Its best-matching ground-truth concepts, best first (at most 3; empty without a concept report). */
  concepts: ConceptMatch[];
}

export interface ImagePage {
  run: string;
  image: number;
  key: string;
  label: number | null;
  /** URL of the image as the model saw it. */
  view: string;
  grid: [number, number];
  /** The strongest latents over the whole image. */
  top: { latent: number; value: number }[];
  /** Per patch (row-major), the latents firing there as [latent, value], strongest first. */
  patches: [number, number][][];
  /** Every latent that fires on the image. */
  latents: Record<number, LatentRef>;
}

/** Features of another run that fire most on a feature's exemplar images. */
export interface Comparison {
  run: string;
  other: string;
  latent: number;
  /** How many of the feature's exemplar images the other run could find. */
  images: number;
  matches: (LatentRef & { count: number; value: number })[];
}

/** A `vitsae compare` output over two of the runs (compare.json, src/analysis/compare/format.ts) with their run ids. */
export interface RunComparison extends CompareJson {
  /** The ids of runs[0] and runs[1]. */
  ids: [string, string];
}
