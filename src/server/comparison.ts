/**
 * A `vitsae compare` output in the feature browser: compare.json read once, its two run directories tied to the
 * ids of the served runs. The server answers it at /api/comparison and a static site stores it as
 * data/comparison.json.
 */
import * as path from 'node:path';
import { COMPARE_FILE, type CompareJson } from '../analysis/compare/format.js';
import { UserError } from '../util/errors.js';
import { readJson } from '../util/fs.js';
import type { RunComparison } from './api.js';
import type { RunData } from './run-data.js';

/** Reads DIR/compare.json (or the file itself). */
export async function readComparison(dirOrFile: string): Promise<CompareJson> {
  const file = dirOrFile.endsWith('.json') ? dirOrFile : path.join(dirOrFile, COMPARE_FILE);
  const cmp = await readJson<CompareJson>(file, 'vitsae compare RUN_A RUN_B --out DIR writes DIR/compare.json');
  if (cmp?.format !== 'vitsae-compare' || cmp.version !== 1) throw new UserError(`${file} is not a version 1 vitsae-compare file`);
  return cmp;
}

/** `dirs` plus the comparison's runs that are not among them: what to open to show it. */
export function withComparedRuns(dirs: readonly string[], cmp: CompareJson | null): string[] {
  const out = [...dirs];
  for (const side of cmp?.runs ?? []) if (!out.some((d) => path.resolve(d) === side.dir)) out.push(side.dir);
  return out;
}

/** Ties the comparison's runs to the opened runs (matched by directory). */
export function withRunIds(cmp: CompareJson, runs: readonly RunData[]): RunComparison {
  const idOf = (dir: string) => {
    const r = runs.find((x) => x.run.dir === path.resolve(dir));
    if (!r) throw new UserError(`the comparison is of ${dir}, which is not among the runs given (${runs.map((x) => x.run.dir).join(', ')})`);
    return r.id;
  };
  return { ...cmp, ids: [idOf(cmp.runs[0].dir), idOf(cmp.runs[1].dir)] };
}
