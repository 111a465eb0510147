/**
 * What a comparison scores exemplars against: each image's class and each patch's concepts. Classes come from
 * the recording (examples.jsonl holds the class of a classification dataset's examples) or from a concept world's
 * labels.csv; per-patch concepts only from a concept world (src/data/README.md) whose patch grid is the
 * recording's. Whatever is missing stays missing.
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CONCEPTS_FILE, type ConceptWorldInfo, LABELS_FILE } from '../../data/concept-world.js';
import { parseCsv } from '../../data/images.js';
import type { ShardMetadata } from '../../shards/format.js';
import { readJson } from '../../util/fs.js';
import { conceptWorldLabels } from '../concepts.js';
import type { PatchLabels } from './abstraction.js';

export interface ImageLabels {
  /** The class of an exemplar from its examples.jsonl label, else from the concept world; null if unknown. */
  classOf(key: string, label: number | null): number | null;
  classNames: string[] | null;
  concepts: PatchLabels | null;
}

/**
 * The concept world behind a recording: `explicit` (a world directory or its concepts.json) if given, else the
 * recorded dataset (or the list file inside a world) when it holds concepts.json.
 */
export function findConceptWorld(explicit: string, dataset: string): string | null {
  if (explicit) return explicit.endsWith('.json') ? path.dirname(explicit) : explicit;
  for (const dir of [dataset, path.dirname(dataset)]) if (existsSync(path.join(dir, CONCEPTS_FILE))) return dir;
  return null;
}

/** The labels for the examples of the recording in `shards` (`patches` per example). */
export async function imageLabels(world: string | null, shards: string, md: ShardMetadata, patches: number): Promise<ImageLabels> {
  const recordedClasses = (md.data as { classes?: string[] | null } | null)?.classes ?? null;
  if (!world) return { classOf: (_key, label) => label, classNames: recordedClasses, concepts: null };
  const info = await readJson<ConceptWorldInfo>(path.join(world, CONCEPTS_FILE), 'a concept world holds concepts.json');
  const csv = parseCsv(await fsp.readFile(path.join(world, LABELS_FILE), 'utf8'));
  const worldClass = new Map(csv.slice(1).map((row) => [path.normalize(row[0]), Number(row[1])]));
  const patchConcepts = await conceptWorldLabels(world, shards);
  return {
    classOf: (key, label) => label ?? worldClass.get(path.normalize(key)) ?? null,
    classNames: recordedClasses ?? info.classes,
    // The world labels 8x8-pixel cells; a recording on another grid has patches that do not line up with them.
    concepts: patchConcepts.patches === patches ? patchConcepts : null,
  };
}
