/**
 * `vitsae compare RUN_A RUN_B`: what two SAEs trained on the same images (two models, or two layers of one) have
 * in common and what only one of them has. Per run: its concept-recovery summary, the frequency spectrum of its
 * latents and each latent's abstraction scores (abstraction.ts); across the runs: the correlation of every pair of
 * latents over the same patches (streamed, stream.ts), each latent's best match, the Hungarian assignment, and
 * the latents whose best match stays below a threshold. Writes OUT/compare.json (format.ts) and OUT/report.html.
 *
 * Shape letters: S latents of run A, T latents of run B.
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ConfigOf, ConfigSpec } from '../../util/config.js';
import { openSae } from '../../interop/index.js';
import { ShardDataset } from '../../shards/index.js';
import { UserError } from '../../util/errors.js';
import { readJson, writeFileAtomic } from '../../util/fs.js';
import { progress } from '../../util/progress.js';
import { CONCEPT_REPORT_FILE, type ConceptReport } from '../concepts.js';
import { readRun, type Run } from '../run.js';
import { VisualsIndex } from '../visuals-index.js';
import { abstractionScores } from './abstraction.js';
import { StreamingCorrelation } from './correlation.js';
import { BEST_MATCH_EDGES, binOf, COMPARE_FILE, type CompareJson, type CompareSide, type ConceptSummary, type LatentComparison, REPORT_FILE, SPECTRUM_EDGES } from './format.js';
import { findConceptWorld, type ImageLabels, imageLabels } from './labels.js';
import { distribution, matchLatents, type SideMatches } from './matching.js';
import { writeReport } from './report.js';
import { checkSameImages, correlateRecordings, type RecordingSide } from './stream.js';

/** The comparison's settings, with their defaults and docs (the CLI's options are generated from them). */
export const compareSpec = {
  threshold: { kind: 'number', min: -1, max: 1, default: 0.5, doc: 'a latent whose best correlation with the other run is below this is unmatched' },
  concepts: { kind: 'string', default: '', doc: 'a concept world (directory or its concepts.json) for image classes and patch concepts; default: the recorded dataset, if it is one' },
  batch: { kind: 'number', int: true, min: 1, default: 4096, doc: 'patch tokens per encoder batch' },
  maxImages: { kind: 'number', int: true, min: 0, default: 0, doc: 'correlate the patches of the first N images only (0: all)' },
  minExemplars: { kind: 'number', int: true, min: 1, default: 5, doc: 'latents with fewer exemplars get no abstraction scores' },
  maxMemoryGb: { kind: 'number', min: 0, default: 4, doc: 'refuse when the correlation sums (d_sae_A x d_sae_B x 8 bytes, plus batch buffers) need more GiB' },
  examples: { kind: 'number', int: true, min: 0, max: 100, default: 8, doc: 'rows per example table in the report (matched pairs, unmatched latents of each run)' },
} as const satisfies ConfigSpec;

export interface CompareOptions extends ConfigOf<typeof compareSpec> {
  runs: [string, string];
  out: string;
  showProgress?: boolean;
}

/** Numbers in compare.json keep 6 significant digits. */
const sig = (x: number) => Number(x.toPrecision(6));

export async function compareRuns(opts: CompareOptions): Promise<CompareJson> {
  const runs = await Promise.all(opts.runs.map((d) => readRun(d)));
  if (runs[0].dir === runs[1].dir) throw new UserError(`${runs[0].dir} is given twice; compare two different runs`);
  const indexes = await Promise.all(runs.map((r) => VisualsIndex.open(r.visuals)));
  const saes = await Promise.all(runs.map((r) => openSae(r.sae)));
  runs.forEach((r, i) => {
    if (indexes[i].nLatents !== saes[i].dSae) throw new UserError(`${r.dir}: the visuals have ${indexes[i].nLatents} latents but the SAE has ${saes[i].dSae}; run vitsae visuals --run ${r.dir} again`);
  });
  const [S, T] = saes.map((s) => s.dSae);
  const need = StreamingCorrelation.bytes(S, T, opts.batch);
  if (need > opts.maxMemoryGb * 2 ** 30) {
    throw new UserError(
      `correlating ${S} x ${T} latents needs about ${(need / 2 ** 30).toFixed(1)} GiB (8 bytes per pair of latents, d_sae_A x d_sae_B x 8, plus the batch buffers), more than --max-memory-gb ${opts.maxMemoryGb}; raise it if the machine has the memory (a smaller --batch saves a little)`,
    );
  }
  const dss = await Promise.all(runs.map((r) => ShardDataset.open(r.shards)));
  try {
    const sides: RecordingSide[] = runs.map((r, i) => ({ name: r.dir, sae: saes[i], ds: dss[i], layer: indexes[i].meta.source.layer, dataset: r.images ?? dss[i].metadata.dataset }));
    for (const s of sides) if (s.ds.d !== s.sae.dModel) throw new UserError(`${s.name}: the shards have d_model ${s.ds.d} but the SAE expects ${s.sae.dModel}`);
    await checkSameImages(sides[0], sides[1]);
    const acc = await correlateRecordings(sides[0], sides[1], { batch: opts.batch, maxImages: opts.maxImages || Infinity, showProgress: opts.showProgress });
    const live = [acc.sqA_S, acc.sqB_T].map((sq) => Uint8Array.from(sq, (v) => (v > 0 ? 1 : 0)));
    const nPatches = acc.n;
    const r_ST = acc.correlations();
    const matches = matchLatents(r_ST, S, T, live[0], live[1]);

    const world = findConceptWorld(opts.concepts, sides[0].dataset);
    const described: CompareSide[] = [];
    for (let i = 0; i < 2; i++) {
      const labels = await imageLabels(world, runs[i].shards, dss[i].metadata, indexes[i].meta.patches);
      described.push(await describeSide(runs[i], indexes[i], sides[i], matches[i], live[i], labels, opts));
    }
    const pairs: number[] = [];
    for (let s = 0; s < S; s++) if (live[0][s] && matches[0].partner[s] >= 0 && live[1][matches[0].partner[s]]) pairs.push(matches[0].partnerR[s]);
    const assigned = distribution(pairs, BEST_MATCH_EDGES);
    const result: CompareJson = {
      format: 'vitsae-compare',
      version: 1,
      created: new Date().toISOString(),
      threshold: opts.threshold,
      n_images: nPatches / dss[0].metadata.content_tokens_per_example,
      n_patches: nPatches,
      spectrum_edges: SPECTRUM_EDGES,
      best_match_edges: BEST_MATCH_EDGES,
      assignment: { pairs: pairs.length, mean_r: sig(assigned.mean), median_r: sig(assigned.median), above_threshold: pairs.filter((r) => r >= opts.threshold).length },
      runs: [described[0], described[1]],
    };
    await fsp.mkdir(opts.out, { recursive: true });
    await writeFileAtomic(path.join(opts.out, COMPARE_FILE), JSON.stringify(result) + '\n');
    await writeReport(path.join(opts.out, REPORT_FILE), result, [runs[0].visuals, runs[1].visuals], { examples: opts.examples });
    return result;
  } finally {
    for (const ds of dss) await ds.close();
  }
}

/** One run's half of compare.json. */
async function describeSide(run: Run, index: VisualsIndex, side: RecordingSide, m: SideMatches, live_S: Uint8Array, labels: ImageLabels, opts: CompareOptions): Promise<CompareSide> {
  const S = index.nLatents;
  const latents: LatentComparison[] = [];
  const bar = progress(`abstraction ${path.basename(run.dir)}`, S, { enabled: opts.showProgress !== false, unit: 'latents' });
  for (let j = 0; j < S; j++) {
    const n = index.exemplarCount(j);
    const entry: LatentComparison = {
      latent: j,
      frequency: sig(index.summary(j).frequency),
      best: m.best[j],
      best_r: sig(m.bestR[j]),
      partner: m.partner[j],
      partner_r: sig(m.partnerR[j]),
      n_exemplars: n,
    };
    if (n >= opts.minExemplars) {
      const exemplars = (await index.feature(j)).exemplars.map((e) => ({ label: labels.classOf(e.key, e.label), example: e.image, patches_P: Buffer.from(e.patches, 'base64') }));
      const a = abstractionScores(exemplars, labels.concepts ?? undefined);
      entry.spread = sig(a.spread);
      if (a.class_purity !== undefined) Object.assign(entry, { class_purity: sig(a.class_purity), class: a.class });
      if (a.concept_purity !== undefined) Object.assign(entry, { concept_purity: sig(a.concept_purity), concept: a.concept });
    }
    latents.push(entry);
    bar.update(j + 1);
  }
  bar.stop();

  const spectrum = { counts: new Array<number>(SPECTRUM_EDGES.length - 1).fill(0), dead: 0 };
  for (const l of latents) {
    if (l.frequency > 0) spectrum.counts[binOf(SPECTRUM_EDGES, Math.log10(l.frequency))]++;
    else spectrum.dead++;
  }
  const liveLatents = latents.filter((l) => live_S[l.latent]);
  const best = distribution(
    liveLatents.map((l) => l.best_r),
    BEST_MATCH_EDGES,
  );
  const unmatched = liveLatents.filter((l) => l.best_r < opts.threshold).sort((a, b) => b.frequency - a.frequency || a.latent - b.latent);
  const scored = latents.filter((l) => l.spread !== undefined);
  const hasClasses = scored.some((l) => l.class_purity !== undefined);
  const mean = (key: 'spread' | 'class_purity' | 'concept_purity') => {
    const v = scored.filter((l) => l[key] !== undefined).map((l) => l[key]!);
    return v.length ? sig(v.reduce((s, x) => s + x, 0) / v.length) : null;
  };
  return {
    dir: run.dir,
    name: path.basename(run.dir),
    model: run.model ? path.basename(run.model) : index.meta.source.model ? path.basename(index.meta.source.model) : null,
    layer: side.ds.metadata.layers[side.ds.layerIndex(side.layer)],
    d_sae: S,
    live: liveLatents.length,
    concepts: await conceptSummary(run),
    spectrum,
    best_match: { counts: best.counts, mean: sig(best.mean), median: sig(best.median), above_threshold: liveLatents.length - unmatched.length },
    unmatched: unmatched.map((l) => l.latent),
    abstraction: {
      class_labels: hasClasses,
      class_names: hasClasses ? labels.classNames : null,
      concept_names: labels.concepts?.concepts ?? null,
      min_exemplars: opts.minExemplars,
      scored: scored.length,
      mean_spread: mean('spread'),
      mean_class_purity: mean('class_purity'),
      mean_concept_purity: mean('concept_purity'),
    },
    latents,
  };
}

/** The summary of the run's concept report (run.json's `concepts`, else RUN/concepts.json), if there is one. */
async function conceptSummary(run: Run): Promise<ConceptSummary | null> {
  const file = run.concepts ?? path.join(run.dir, CONCEPT_REPORT_FILE);
  if (!existsSync(file)) return null;
  const r = await readJson<ConceptReport>(file, 'the concept report of the run (vitsae eval concepts)');
  return {
    mean_best_f1: r.mean_best_f1,
    mean_group_f1: r.mean_group_f1,
    mean_probe_f1: r.mean_probe_f1,
    recovery_ratio: r.recovery_ratio,
    recovery_ratio_group3: r.recovery_ratio_group3,
    n_decodable: r.n_decodable,
    n_patches: r.n_patches,
    concepts: r.concepts.map((c) => ({ concept: c.concept, latent: c.latent, f1: c.f1, probe_f1: c.probe_f1 })),
  };
}
