/**
 * The JSON of the edit demos' API (`/api/runs/:run/heads`, `/api/uploads`, `/api/runs/:run/edit`). Types only,
 * with no Node imports, so the web app shares them.
 */
import type { EditMode, Task } from '../edit/kinds.js';
import type { LatentRef } from './api.js';

export type { EditMode } from '../edit/kinds.js';

/** A task head of a run (run.json's `heads`), as the demos list it. */
export interface HeadSummary {
  /** Its index in run.json's `heads`: what edit requests name. */
  id: number;
  /** The head directory's name. */
  name: string;
  task: Task;
  classes: string[];
  /** The graph tensor the head reads. */
  features: string;
  /** Held-out accuracy (images or patches) and, for segmentation, mean IoU. */
  accuracy: number;
  miou?: number;
}

export interface HeadList {
  heads: HeadSummary[];
}

/** `POST /api/uploads`: an accepted image, kept by the server under `upload` (its SHA-256) for later edits. */
export interface Upload {
  upload: string;
  width: number;
  height: number;
}

/** One intervention (see src/edit/engine.ts Edit). */
export interface EditSpec {
  latent: number;
  /** Patch indices (row-major over the patch grid), or every patch. */
  patches: number[] | 'all';
  value: number;
  mode: EditMode;
  /** `value` is a multiple of the latent's largest observed value. */
  relative?: boolean;
}

/** `POST /api/runs/:run/edit`. */
export interface EditRequest {
  head: number;
  /** An image of the run (its index) or an upload. */
  image: number | { upload: string };
  /** Applied in order; none gives the unedited prediction. */
  edits: EditSpec[];
  /** Patches whose (unedited) latents to list in the answer. */
  patches?: number[] | 'all';
}

export interface ClassProb {
  class: number;
  name: string;
  prob: number;
}

/** What the head predicts before and after the edits. */
export type EditPrediction =
  /** The 5 most probable classes of the image, before and after, and whether the most probable one changed. */
  | { task: 'classify'; before: ClassProb[]; after: ClassProb[]; changed: boolean }
  /** Each patch's predicted class (row-major), before and after, and the patches whose class changed. */
  | { task: 'segment'; before: number[]; after: number[]; changed: number[] };

export type EditAnswer = EditPrediction & {
  head: number;
  classes: string[];
  grid: [number, number];
  /** For each requested patch, the latents firing there before the edit as [latent, value], strongest first. */
  patches: Record<number, [number, number][]>;
  /** Every latent listed in `patches` or edited, with its largest observed value (the unit of relative edits). */
  latents: Record<number, LatentRef & { max: number }>;
};
