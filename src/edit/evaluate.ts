/**
 * The quantitative, falsifiable test of edits: if latent s means "class k", suppressing it should change the
 * frozen head's answer on class-k patches (segmentation) or images (classification) far more often than on the
 * others, and far more than an edit of the same size along a random latent or a random direction.
 *
 * The sampled images are split: on the selection part each class gets the latent with the best F1 against its
 * patches (of its rule "activation >= t", t fit there as the concept check fits it; a patch counts as the class's
 * if its mask majority is k, or for classification if its image is of class k) and each latent its maximum activation; on the test part the class's latent is set to factor x that
 * maximum (default -2, saev's scale) and the baselines add, per patch, a vector of the same norm as the latent
 * edit's change of that patch (the decoded delta): along another latent's decoder row (a random latent that fired
 * in the selection, drawn anew for every batch of test images as in saev, so the rate averages over many), along a random direction drawn afresh for every patch (saev's random-vector baseline, there
 * with a fixed norm), or along one random direction shared by all the class's patches (as coherent as the latent
 * edit, which moves every patch along the same decoder row; the harsher baseline). Segmentation edits touch the
 * class's own patches only, as in the paper's protocol (saev's semseg evaluation): the other classes' patches change
 * only through the rest of the model. Classification edits touch every patch (a class belongs to the image, not a patch).
 *
 * On the concept world (src/data/concept-world.ts) the image-class rule is checked too: suppressing the latent of
 * a concept C (best F1 against the patches showing C) on the patches showing C should turn the class into
 * classOf(objects without C). This chooses latents by what they mean, not by the class of the images they fire on.
 * Removal has a weakness as a test: an edit large enough to wreck an object also takes it away, so a random edit of
 * the same size often gives the rule's class too. The swap check asks for one class out of twelve instead: on the
 * salient object's patches its colour latent (or texture latent) is set to 0 and another colour's (texture's)
 * latent to its maximum, and the class should become that colour (texture) of the same object. Its baseline adds,
 * per patch, a change as large along a random latent's decoder row.
 *
 * Shape letters: N images, P patches, D layer width, S latents, K classes, C concepts.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { openDataset } from '../data/images.js';
import { loadMask, patchMajority } from '../data/preprocess.js';
import { COLOURS, OBJECTS_FILE, type WorldObject, classAfterSwap, classOf, readConceptWorld, salientObject, withoutConcept } from '../data/concept-world.js';
import { type ConfigOf, type ConfigSpec, defaultsOf } from '../util/config.js';
import { Rng } from '../util/random.js';
import { UserError } from '../util/errors.js';
import { progress } from '../util/progress.js';
import { f1Of } from '../analysis/concepts.js';
import type { EditEngine, Prepared } from './engine.js';
import type { Task } from './kinds.js';

export const EDIT_SCOPES = ['target', 'all'] as const;
export type EditScope = (typeof EDIT_SCOPES)[number];

/** The edit test's options with their defaults and docs; `vitsae eval edits` generates its flags from them. */
export const editEvalSpec = {
  data: { kind: 'string', required: true, default: '', doc: 'the labelled dataset the edits are measured on' },
  concepts: { kind: 'string', default: '', doc: 'the concept-world directory of the images, for the rule check' },
  images: { kind: 'number', int: true, min: 2, default: 1000, doc: 'images sampled from the dataset' },
  selectFraction: { kind: 'number', min: 0.01, max: 0.99, default: 0.5, doc: 'share of them that choose the latents and their maxima' },
  factor: { kind: 'number', default: -2, doc: 'the edit sets the latent to factor x its maximum' },
  scope: { kind: 'enum', choices: EDIT_SCOPES, default: 'target', doc: "patches a segmentation or concept edit touches: the target's own, or all" },
  seed: { kind: 'number', int: true, min: 0, default: 0, doc: 'seed of the image sample and the baselines' },
  progress: { kind: 'boolean', default: true, doc: 'show a progress bar on stderr' },
} as const satisfies ConfigSpec;

/** Options of evaluateEdits: `data` and any of editEvalSpec (defaults from it); `concepts` adds the rule check. */
export type EditEvalOptions = Partial<ConfigOf<typeof editEvalSpec>> & { data: string };
const DEFAULTS = defaultsOf(editEvalSpec);

export interface ChangeRates {
  /** Share of the target class's units (patches or images) whose predicted class changed. */
  target_change_rate: number;
  /** The same over the units of the other classes. */
  other_change_rate: number;
}

export interface ClassEditScore {
  class: string;
  /** The class's latent, or null when no latent fired on its patches in the selection images. */
  latent: number | null;
  f1: number;
  /** Its maximum activation in the selection images. */
  max: number;
  n_target: number;
  n_other: number;
  /** Rates are null when there are no units to measure them on. */
  target_change_rate: number | null;
  other_change_rate: number | null;
  /** The random latents drawn (a new one per batch of test images, as saev draws one per batch). */
  random_latent: { latents: number[]; target_change_rate: number | null; other_change_rate: number | null };
  /** A fresh random direction per patch. */
  random_direction: { target_change_rate: number | null; other_change_rate: number | null };
  /** One random direction for all the class's patches. */
  random_shared_direction: { target_change_rate: number | null; other_change_rate: number | null };
}

export interface ConceptRuleScore {
  concept: string;
  latent: number | null;
  f1: number;
  /** Test images where removing the concept changes the rule's class and the head was right before the edit. */
  n: number;
  consistent_rate: number | null;
  /** The same edit norm along a random latent's decoder row instead: how often that gives the rule's class. */
  random_latent: { latents: number[]; consistent_rate: number | null };
}

export interface EditEvalReport extends ChangeRates {
  task: Task;
  unit: 'images' | 'patches';
  factor: number;
  scope: EditScope;
  n_select_images: number;
  n_test_images: number;
  /** Rates are means over the classes that have a latent (and units to measure on). */
  random_latent: ChangeRates;
  random_direction: ChangeRates;
  random_shared_direction: ChangeRates;
  classes: ClassEditScore[];
  /** Concept world only: share of the checked (image, concept) pairs whose edited class is the rule's. */
  rule_consistent_rate?: number;
  /** The same share when each concept's edit moves along a random latent instead (same norm per patch). */
  rule_random_latent_consistent_rate?: number;
  rule_checked?: number;
  rule?: ConceptRuleScore[];
  /** Concept world only: share of the checked (image, swap) pairs whose edited class is the swapped object's. */
  swap_consistent_rate?: number;
  /** The same share when the swap moves each patch as far along a random latent's decoder row instead. */
  swap_random_latent_consistent_rate?: number;
  swap_checked?: number;
  swap?: SwapScore[];
}

export interface SwapScore {
  /** Concept suppressed and concept set, e.g. colour:red -> colour:yellow. */
  from: string;
  to: string;
  latents: [number | null, number | null];
  /** Test images whose salient object shows `from`, where the head was right before the edit. */
  n: number;
  consistent_rate: number | null;
  random_latent: { latents: number[]; consistent_rate: number | null };
}

/** Images run through the head at a time. */
const CHUNK = 64;

/**
 * What chooses latents: every (latent, activation, patch) where a latent fired in the selection images, and each
 * patch's labels. A latent's F1 for a label is that of its best rule "activation >= t" (t fit here), as the concept
 * check scores latents (src/analysis/concepts.ts): a latent that also fires weakly elsewhere is not penalised for it.
 */
export class Firings {
  private readonly values: number[][];
  private readonly rows: number[][];
  /** Labels of each patch seen: row -> 0/1 per label (L per row). */
  private readonly labels: number[] = [];
  readonly positives_L: Float64Array;
  private sorted: Int32Array[] | null = null;

  constructor(
    S: number,
    readonly L: number,
  ) {
    this.values = Array.from({ length: S }, () => []);
    this.rows = Array.from({ length: S }, () => []);
    this.positives_L = new Float64Array(L);
  }

  /** Adds a patch with its 0/1 labels; returns its row. */
  addRow(labels_L: ArrayLike<number>): number {
    for (let l = 0; l < this.L; l++) {
      this.labels.push(labels_L[l]);
      this.positives_L[l] += labels_L[l];
    }
    return this.labels.length / this.L - 1;
  }

  fire(latent: number, value: number, row: number): void {
    this.values[latent].push(value);
    this.rows[latent].push(row);
  }

  fired(latent: number): boolean {
    return this.values[latent].length > 0;
  }

  /** The latent with the best thresholded F1 for label l (lowest index on ties), null if none fired on it. */
  best(l: number): { latent: number | null; f1: number } {
    this.sorted ??= this.values.map((v) => Int32Array.from(v.keys()).sort((i, j) => v[j] - v[i]));
    let latent: number | null = null;
    let f1 = 0;
    for (let s = 0; s < this.values.length; s++) {
      const v = this.values[s];
      const order = this.sorted[s];
      let tp = 0;
      for (let i = 0; i < order.length; i++) {
        tp += this.labels[this.rows[s][order[i]] * this.L + l];
        // A threshold lies between distinct values only.
        if (i + 1 < order.length && v[order[i + 1]] === v[order[i]]) continue;
        const score = f1Of(tp, i + 1, this.positives_L[l]);
        if (score > f1) [latent, f1] = [s, score];
      }
    }
    return { latent, f1 };
  }
}

/** The concept world's objects and per-patch concept labels of dataset images, on the model's patch grid. */
interface WorldLabels {
  concepts: string[];
  /** World image index of a dataset key, or undefined. */
  indexOf: Map<string, number>;
  objects: WorldObject[][];
  /** 0/1 [P, C] labels of world image i on the model grid. */
  patchConcepts(i: number): Uint8Array;
}

async function readWorld(dir: string, grid: [number, number]): Promise<WorldLabels> {
  const { info, coverage_NPC } = await readConceptWorld(dir);
  const [n, WP, C] = info.coverage_shape;
  const [wh, ww] = info.grid;
  const [gh, gw] = grid;
  if (wh % gh || ww % gw) throw new UserError(`the model's ${gh}x${gw} patch grid does not divide the concept world's ${wh}x${ww} patches`);
  const [bh, bw] = [wh / gh, ww / gw];
  const lines = (await fsp.readFile(path.join(dir, OBJECTS_FILE), 'utf8')).split('\n').filter(Boolean);
  if (lines.length !== n) throw new UserError(`${path.join(dir, OBJECTS_FILE)} has ${lines.length} lines but concepts.json says ${n} images; regenerate the concept world`);
  const records = lines.map((l) => JSON.parse(l) as { file: string; objects: WorldObject[] });
  return {
    concepts: info.concepts,
    indexOf: new Map(records.map((r, i) => [path.normalize(r.file), i])),
    objects: records.map((r) => r.objects),
    // A model patch shows a concept when its block of world patches covers at least threshold pixels per world patch.
    patchConcepts(i) {
      const out = new Uint8Array(gh * gw * C);
      for (let r = 0; r < gh; r++)
        for (let c = 0; c < gw; c++)
          for (let k = 0; k < C; k++) {
            let sum = 0;
            for (let y = r * bh; y < (r + 1) * bh; y++) for (let x = c * bw; x < (c + 1) * bw; x++) sum += coverage_NPC[(i * WP + y * ww + x) * C + k];
            out[(r * gw + c) * C + k] = sum >= info.threshold * bh * bw ? 1 : 0;
          }
      return out;
    },
  };
}

/** Rates from counts; null where there is nothing to measure. */
const rate = (changed: number, n: number) => (n ? changed / n : null);
const meanOf = (xs: (number | null)[]) => {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0;
};

/** What the three phases share: the engine, the data, the world, and how a batch of images is loaded. */
interface EvalContext {
  engine: EditEngine;
  task: Task;
  /** Classes K, patches per image P, layer width D, latents S. */
  K: number;
  P: number;
  D: number;
  S: number;
  factor: number;
  scope: EditScope;
  seed: number;
  world: WorldLabels | null;
  /** The batch's images through the engine, with patch labels [n, P], the world index and patch concepts [n, P, C]. */
  load(indices: Int32Array): Promise<{ prepared: Prepared; labels_NP: Uint8Array; worldIndex: number[]; concepts_NPC: Uint8Array }>;
  /** Counts images done, for the progress bar. */
  advance(n: number): void;
}

export async function evaluateEdits(engine: EditEngine, opts: EditEvalOptions): Promise<EditEvalReport> {
  const task = engine.task;
  const K = engine.classes.length;
  const { patchTokens: P, dModel: D, grid } = engine.layout;
  const ds = await openDataset(opts.data);
  if (task === 'segment' && (!ds.mask || !grid)) throw new UserError(`${opts.data} has no masks (a folder with images/ and masks/), which segmentation edits are measured on`);
  const world = opts.concepts ? await readWorld(opts.concepts, grid ?? [0, 0]) : null;
  if (world && engine.preprocess.cropRatio !== null && engine.preprocess.cropRatio !== 1)
    throw new UserError('the concept world check needs a model that sees the whole image (no centre crop in its model card)');

  const seed = opts.seed ?? DEFAULTS.seed;
  const sample = new Rng(seed, 0xed17).permutation(ds.size).subarray(0, Math.min(ds.size, opts.images ?? DEFAULTS.images));
  const nSelect = Math.round(sample.length * (opts.selectFraction ?? DEFAULTS.selectFraction));
  const select = Int32Array.from(sample.subarray(0, nSelect)).sort();
  const test = Int32Array.from(sample.subarray(nSelect)).sort();
  if (!select.length || !test.length) throw new UserError(`${sample.length} images cannot be split into selection and test images; use more`);

  const bar = progress('eval edits', sample.length, { enabled: opts.progress ?? DEFAULTS.progress, unit: 'images' });
  let done = 0;
  const ctx: EvalContext = {
    engine,
    task,
    K,
    P,
    D,
    S: engine.sae.dSae,
    factor: opts.factor ?? DEFAULTS.factor,
    scope: opts.scope ?? DEFAULTS.scope,
    seed,
    world,
    advance: (n) => bar.update((done += n)),
    load: async (indices) => {
      const images = await Promise.all(Array.from(indices, (i) => ds.image(i)));
      const labels_NP = new Uint8Array(indices.length * P);
      const worldIndex: number[] = [];
      for (const [j, i] of indices.entries()) {
        if (task === 'segment') labels_NP.set(patchMajority(await loadMask(await ds.mask!(i), engine.preprocess), engine.preprocess.size, grid!), j * P);
        else {
          const label = ds.label(i);
          if (label === null) throw new UserError(`${ds.key(i)} has no class label: classification edits are measured on a labelled dataset`);
          labels_NP.fill(label, j * P, (j + 1) * P);
        }
        if (world) {
          const w = world.indexOf.get(path.normalize(ds.key(i)));
          if (w === undefined) throw new UserError(`${ds.key(i)} is not an image of the concept world ${opts.concepts}`);
          worldIndex.push(w);
        }
      }
      for (const y of labels_NP) if (y >= K) throw new UserError(`${opts.data} has label ${y} but the head knows ${K} classes`);
      const C = world?.concepts.length ?? 0;
      const concepts_NPC = new Uint8Array(indices.length * P * C);
      worldIndex.forEach((w, j) => concepts_NPC.set(world!.patchConcepts(w), j * P * C));
      return { prepared: await engine.prepare(images, false), labels_NP, worldIndex, concepts_NPC };
    },
  };
  const { plans, rulePlans, swapPlans, max_S } = await selectLatents(ctx, select);
  const tallies = await testEdits(ctx, test, plans, rulePlans, swapPlans, max_S);
  bar.stop();
  return editReport(ctx, select.length, test.length, plans, rulePlans, swapPlans, max_S, tallies);
}

const chunks = (indices: Int32Array) => Array.from({ length: Math.ceil(indices.length / CHUNK) }, (_, c) => indices.subarray(c * CHUNK, (c + 1) * CHUNK));

/**
 * Selection, on the selection images: F1 of every latent against every class (and concept) and the latents'
 * maxima; each class (concept) gets its best latent, a random direction and a stream of random latents.
 */
async function selectLatents(ctx: EvalContext, select: Int32Array) {
  const { K, P, D, S, world, seed } = ctx;
  const byClass = new Firings(S, K);
  const byConcept = world ? new Firings(S, world.concepts.length) : null;
  const max_S = new Float32Array(S);
  const oneHot_K = new Uint8Array(K);
  for (const indices of chunks(select)) {
    const { prepared, labels_NP, concepts_NPC } = await ctx.load(indices);
    const { rowptr, idx, val } = prepared.latents;
    const C = world?.concepts.length ?? 0;
    for (let row = 0; row < indices.length * P; row++) {
      oneHot_K.fill(0)[labels_NP[row]] = 1;
      const classRow = byClass.addRow(oneHot_K);
      const conceptRow = byConcept?.addRow(concepts_NPC.subarray(row * C, (row + 1) * C));
      for (let e = rowptr[row]; e < rowptr[row + 1]; e++) {
        if (!(val[e] > 0)) continue;
        const s = idx[e];
        max_S[s] = Math.max(max_S[s], val[e]);
        byClass.fire(s, val[e], classRow);
        byConcept?.fire(s, val[e], conceptRow!);
      }
    }
    ctx.advance(indices.length);
  }

  const alive = Array.from({ length: S }, (_, s) => s).filter((s) => byClass.fired(s));
  /** A latent that fired in the selection, other than `latent`, drawn by `rng`. */
  const randomOther = (rng: Rng, latent: number | null) => {
    const others = alive.filter((s) => s !== latent);
    return others.length ? others[rng.nextInt(others.length)] : null;
  };
  const plans = ctx.engine.classes.map((_, k) => {
    const { latent, f1 } = byClass.best(k);
    const rng = new Rng(seed, 1, k);
    const direction = Float32Array.from({ length: D }, () => rng.normal());
    return { latent, f1, direction: unit(direction), fresh: () => unit(Float32Array.from({ length: D }, () => rng.normal())), randomLatent: () => randomOther(rng, latent), drawn: [] as number[] };
  });
  // Background concepts remove no object, so the rule predicts no change for them.
  const ruleConcepts = world && ctx.task === 'classify' ? world.concepts.filter((c) => !c.startsWith('background:')) : [];
  const rulePlans = ruleConcepts.map((concept, j) => {
    const best = byConcept!.best(world!.concepts.indexOf(concept));
    const rng = new Rng(seed, 2, j);
    return { concept, ...best, randomLatent: () => randomOther(rng, best.latent), drawn: [] as number[] };
  });
  // Each colour becomes the next one; solid becomes stripes and every pattern solid (the class's two textures).
  const swapPairs: [string, string][] =
    world && ctx.task === 'classify'
      ? [
          ...COLOURS.map((c, i): [string, string] => [`colour:${c}`, `colour:${COLOURS[(i + 1) % COLOURS.length]}`]),
          ['texture:solid', 'texture:stripes'],
          ...['stripes', 'dots', 'checker'].map((t): [string, string] => [`texture:${t}`, 'texture:solid']),
        ]
      : [];
  const swapPlans = swapPairs.map(([from, to], j) => {
    const [a, b] = [from, to].map((c) => byConcept!.best(world!.concepts.indexOf(c)).latent);
    const rng = new Rng(seed, 3, j);
    return { from, to, latents: [a, b] as [number | null, number | null], randomLatent: () => randomOther(rng, b), drawn: [] as number[] };
  });
  return { plans, rulePlans, swapPlans, max_S };
}

type ClassPlan = Awaited<ReturnType<typeof selectLatents>>['plans'][number];
type RulePlan = Awaited<ReturnType<typeof selectLatents>>['rulePlans'][number];
type SwapPlan = Awaited<ReturnType<typeof selectLatents>>['swapPlans'][number];
/** Checks of a rule concept or a swap: how many, and how many gave the expected class after the edit and after its baseline. */
type Tally = { n: number; consistent: number; randomConsistent: number };

/** Test, on the test images: per class [target, other] units changed by the latent edit and each baseline; per rule concept the consistent changes. */
async function testEdits(ctx: EvalContext, test: Int32Array, plans: ClassPlan[], rulePlans: RulePlan[], swapPlans: SwapPlan[], max_S: Float32Array) {
  const { engine, task, P, D, world, factor, scope } = ctx;
  const counts = engine.classes.map(() => ({ nTarget: 0, nOther: 0, edit: [0, 0], randomLatent: [0, 0], randomDirection: [0, 0], sharedDirection: [0, 0] }));
  const rule = rulePlans.map((): Tally => ({ n: 0, consistent: 0, randomConsistent: 0 }));
  const swap = swapPlans.map((): Tally => ({ n: 0, consistent: 0, randomConsistent: 0 }));
  /** The suppression of `latent`, kept on the rows (patches) where `keep` holds when one is given. */
  const suppress = (prepared: Prepared, latent: number, keep?: (row: number) => boolean) => {
    const delta = engine.delta(prepared, [{ latent, patches: 'all', value: factor * max_S[latent], mode: 'set' }]);
    if (keep && scope === 'target') for (let row = 0; row < delta.length / D; row++) if (!keep(row)) delta.fill(0, row * D, (row + 1) * D);
    return delta;
  };
  const along = (edit: Float32Array, dir: Float32Array | (() => Float32Array)) => alongRows(edit, D, dir);
  // The suppressed latent moves along -W_dec[s]; a random latent's edit moves the same way along its own row.
  const againstRow = (latent: number) => scaled(unit(engine.decoderRow(latent).slice()), -1);
  for (const indices of chunks(test)) {
    const { prepared, labels_NP, worldIndex, concepts_NPC } = await ctx.load(indices);
    const R = engine.rows;
    /** The truth label of head row r (an image's class, or a patch's). */
    const truth = (r: number) => (R === 1 ? labels_NP[r * P] : labels_NP[r]);
    const changed = async (delta: Float32Array) => {
      const after = await engine.predict(prepared, delta);
      return (r: number) => after.labels[r] !== prepared.before.labels[r];
    };
    for (const [k, plan] of plans.entries()) {
      if (plan.latent === null) continue;
      const c = counts[k];
      const target = suppress(prepared, plan.latent, task === 'segment' ? (row) => labels_NP[row] === k : undefined);
      const tests: [number[], (r: number) => boolean][] = [
        [c.edit, await changed(target)],
        [c.randomDirection, await changed(along(target, plan.fresh))],
        [c.sharedDirection, await changed(along(target, plan.direction))],
      ];
      const randomLatent = plan.randomLatent();
      if (randomLatent !== null) {
        plan.drawn.push(randomLatent);
        tests.push([c.randomLatent, await changed(along(target, againstRow(randomLatent)))]);
      }
      for (let r = 0; r < indices.length * R; r++) {
        const isTarget = truth(r) === k;
        if (isTarget) c.nTarget++;
        else c.nOther++;
        for (const [tally, didChange] of tests) if (didChange(r)) tally[isTarget ? 0 : 1]++;
      }
    }
    /** Counts the cases whose class is the expected one after `edit`, and after a baseline as large along `randomRow(randomLatent)`. */
    const tallyChecks = async (
      tally: Tally,
      cases: { n: number; expected: number }[],
      edit: Float32Array,
      randomLatent: number | null,
      drawn: number[],
      randomRow: (latent: number) => Float32Array,
    ) => {
      const consistent = async (delta: Float32Array) => {
        const after = await engine.predict(prepared, delta);
        return cases.filter((x) => after.labels[x.n] === x.expected).length;
      };
      tally.n += cases.length;
      tally.consistent += await consistent(edit);
      if (randomLatent === null) return;
      drawn.push(randomLatent);
      tally.randomConsistent += await consistent(along(edit, randomRow(randomLatent)));
    };
    for (const [j, plan] of rulePlans.entries()) {
      if (plan.latent === null) continue;
      const cases = Array.from(indices.keys()).flatMap((n) => {
        const objects = world!.objects[worldIndex[n]];
        const expected = classOf(withoutConcept(objects, plan.concept));
        const now = classOf(objects);
        return expected !== null && expected !== now && prepared.before.labels[n] === now ? [{ n, expected }] : [];
      });
      if (!cases.length) continue;
      const C = world!.concepts.length;
      const c = world!.concepts.indexOf(plan.concept);
      const edit = suppress(prepared, plan.latent, (row) => concepts_NPC[row * C + c] === 1);
      await tallyChecks(rule[j], cases, edit, plan.randomLatent(), plan.drawn, againstRow);
    }
    for (const [j, plan] of swapPlans.entries()) {
      const [from, to] = plan.latents;
      // A pair whose two concepts share their best latent cannot be swapped.
      if (from === null || to === null || from === to) continue;
      const C = world!.concepts.length;
      const fromIndex = world!.concepts.indexOf(plan.from);
      // The salient object's patches: those showing its shape (shapes in an image differ) and the swapped concept.
      const shapeOf = new Map<number, number>();
      const cases = Array.from(indices.keys()).flatMap((n) => {
        const objects = world!.objects[worldIndex[n]];
        const expected = classAfterSwap(objects, plan.from, plan.to);
        if (expected === null || prepared.before.labels[n] !== classOf(objects)) return [];
        shapeOf.set(n, world!.concepts.indexOf(`shape:${salientObject(objects)!.shape}`));
        return [{ n, expected }];
      });
      if (!cases.length) continue;
      const onObject = (row: number) => {
        const shape = shapeOf.get(Math.floor(row / P));
        return shape !== undefined && concepts_NPC[row * C + fromIndex] === 1 && concepts_NPC[row * C + shape] === 1;
      };
      const edit = engine.delta(prepared, [
        { latent: from, patches: 'all', value: 0, mode: 'set' },
        { latent: to, patches: 'all', value: max_S[to], mode: 'set' },
      ]);
      for (let row = 0; row < edit.length / D; row++) if (!onObject(row)) edit.fill(0, row * D, (row + 1) * D);
      // The swap adds the new concept's row; the baseline adds a random latent's row, as far per patch.
      await tallyChecks(swap[j], cases, edit, plan.randomLatent(), plan.drawn, (latent) => unit(engine.decoderRow(latent).slice()));
    }
    ctx.advance(indices.length);
  }
  return { counts, rule, swap };
}

/** The report: per class and on average, the rates of change of the latent edit and its baselines, and the rule check. */
function editReport(
  ctx: EvalContext,
  nSelect: number,
  nTest: number,
  plans: ClassPlan[],
  rulePlans: RulePlan[],
  swapPlans: SwapPlan[],
  max_S: Float32Array,
  tallies: Awaited<ReturnType<typeof testEdits>>,
): EditEvalReport {
  const { counts, rule, swap } = tallies;
  const classes: ClassEditScore[] = ctx.engine.classes.map((name, k) => {
    const { latent, f1, drawn } = plans[k];
    const c = counts[k];
    const rates = (t: number[]) => ({ target_change_rate: rate(t[0], c.nTarget), other_change_rate: rate(t[1], c.nOther) });
    return {
      class: name,
      latent,
      f1,
      max: latent === null ? 0 : max_S[latent],
      n_target: c.nTarget,
      n_other: c.nOther,
      ...rates(c.edit),
      random_latent: { latents: drawn, ...rates(c.randomLatent) },
      random_direction: rates(c.randomDirection),
      random_shared_direction: rates(c.sharedDirection),
    };
  });
  const means = (pick: (s: ClassEditScore) => { target_change_rate: number | null; other_change_rate: number | null }): ChangeRates => ({
    target_change_rate: meanOf(classes.map((s) => pick(s).target_change_rate)),
    other_change_rate: meanOf(classes.map((s) => pick(s).other_change_rate)),
  });
  const report: EditEvalReport = {
    task: ctx.task,
    unit: ctx.task === 'segment' ? 'patches' : 'images',
    factor: ctx.factor,
    scope: ctx.scope,
    n_select_images: nSelect,
    n_test_images: nTest,
    ...means((s) => s),
    random_latent: means((s) => s.random_latent),
    random_direction: means((s) => s.random_direction),
    random_shared_direction: means((s) => s.random_shared_direction),
    classes,
  };
  if (rulePlans.length) {
    const c = consistency(rule);
    report.rule_consistent_rate = c.rate;
    report.rule_random_latent_consistent_rate = c.randomRate;
    report.rule_checked = c.checked;
    report.rule = rulePlans.map((p, j) => ({ concept: p.concept, latent: p.latent, f1: p.f1, ...c.of(j, p.drawn) }));
  }
  if (swapPlans.length) {
    const c = consistency(swap);
    report.swap_consistent_rate = c.rate;
    report.swap_random_latent_consistent_rate = c.randomRate;
    report.swap_checked = c.checked;
    report.swap = swapPlans.map((p, j) => ({ from: p.from, to: p.to, latents: p.latents, ...c.of(j, p.drawn) }));
  }
  return report;
}

/** Shares of consistent answers over all checks and per check (rule or swap), from their tallies. */
function consistency(tallies: Tally[]) {
  const checked = tallies.reduce((a, t) => a + t.n, 0);
  const share = (pick: (t: (typeof tallies)[number]) => number) => (checked ? tallies.reduce((a, t) => a + pick(t), 0) / checked : 0);
  return {
    checked,
    rate: share((t) => t.consistent),
    randomRate: share((t) => t.randomConsistent),
    of: (j: number, drawn: number[]) => ({
      n: tallies[j].n,
      consistent_rate: rate(tallies[j].consistent, tallies[j].n),
      random_latent: { latents: drawn, consistent_rate: rate(tallies[j].randomConsistent, tallies[j].n) },
    }),
  };
}

function unit(v: Float32Array): Float32Array {
  const norm = Math.hypot(...v);
  return norm > 0 ? scaled(v, 1 / norm) : v;
}

function scaled(v: Float32Array, by: number): Float32Array {
  for (let i = 0; i < v.length; i++) v[i] *= by;
  return v;
}

/**
 * A change with the per-row (per-patch) norms of edit_ND, each row along the unit vector `dir` or, drawn per
 * edited row, `dir()`; rows the edit leaves alone stay zero.
 */
export function alongRows(edit_ND: Float32Array, D: number, dir: Float32Array | (() => Float32Array)): Float32Array {
  const norms = rowNorms(edit_ND, D);
  const out = new Float32Array(edit_ND.length);
  for (let row = 0; row < norms.length; row++) {
    if (!norms[row]) continue;
    const u = typeof dir === 'function' ? dir() : dir;
    for (let d = 0; d < D; d++) out[row * D + d] = norms[row] * u[d];
  }
  return out;
}

function rowNorms(x_ND: Float32Array, D: number): Float64Array {
  const out = new Float64Array(x_ND.length / D);
  for (let n = 0; n < out.length; n++) {
    let s = 0;
    for (let d = 0; d < D; d++) s += x_ND[n * D + d] ** 2;
    out[n] = Math.sqrt(s);
  }
  return out;
}

/** The report as a markdown table (one row per class, then the means and the concept-world rule). */
export function editEvalMarkdown(r: EditEvalReport): string {
  const f = (v: number | null) => (v === null ? '-' : v.toFixed(3));
  const lines = [
    `Edit: set the class's best-F1 latent to ${r.factor}x its maximum on ${r.task === 'segment' && r.scope === 'target' ? "the class's own patches" : 'every patch'}; change rates of the predicted class per ${r.unit.replace(/s$/, '')} (${r.n_test_images} test images, latents chosen on ${r.n_select_images}).`,
    '',
    '| class | latent | F1 | target | other | random latent: target | other | random direction per patch: target | other | one random direction: target | other |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...r.classes.map(
      (c) =>
        `| ${c.class} | ${c.latent ?? '-'} | ${c.f1.toFixed(3)} | ${f(c.target_change_rate)} | ${f(c.other_change_rate)} | ${f(c.random_latent.target_change_rate)} | ${f(c.random_latent.other_change_rate)} | ${f(c.random_direction.target_change_rate)} | ${f(c.random_direction.other_change_rate)} | ${f(c.random_shared_direction.target_change_rate)} | ${f(c.random_shared_direction.other_change_rate)} |`,
    ),
    `| **mean** | | | **${f(r.target_change_rate)}** | **${f(r.other_change_rate)}** | ${f(r.random_latent.target_change_rate)} | ${f(r.random_latent.other_change_rate)} | ${f(r.random_direction.target_change_rate)} | ${f(r.random_direction.other_change_rate)} | ${f(r.random_shared_direction.target_change_rate)} | ${f(r.random_shared_direction.other_change_rate)} |`,
  ];
  if (r.rule)
    lines.push(
      '',
      `Concept-world rule: suppressing a concept's latent${r.scope === 'target' ? ' on the patches showing the concept' : ''} gives the class of the image without that concept in ${f(r.rule_consistent_rate!)} of ${r.rule_checked} checked (image, concept) pairs; an edit of the same norm along a random latent in ${f(r.rule_random_latent_consistent_rate!)}.`,
      '',
      '| concept | latent | F1 | checked | consistent | random latents | consistent |',
      '| --- | --- | --- | --- | --- | --- | --- |',
      ...r.rule.map((c) => `| ${c.concept} | ${c.latent ?? '-'} | ${c.f1.toFixed(3)} | ${c.n} | ${f(c.consistent_rate)} | ${c.random_latent.latents.length} | ${f(c.random_latent.consistent_rate)} |`),
    );
  if (r.swap)
    lines.push(
      '',
      `Concept-world swap: on the salient object's patches, one colour's (texture's) latent set to 0 and another's to its maximum gives the class of the object with the new colour (texture) in ${f(r.swap_consistent_rate!)} of ${r.swap_checked} checked images; an edit as large along a random latent in ${f(r.swap_random_latent_consistent_rate!)}.`,
      '',
      '| from | to | latents | checked | consistent | random latents | consistent |',
      '| --- | --- | --- | --- | --- | --- | --- |',
      ...r.swap.map(
        (c) =>
          `| ${c.from} | ${c.to} | ${c.latents.map((l) => l ?? '-').join(' -> ')} | ${c.n} | ${f(c.consistent_rate)} | ${c.random_latent.latents.length} | ${f(c.random_latent.consistent_rate)} |`,
      ),
    );
  return lines.join('\n') + '\n';
}
