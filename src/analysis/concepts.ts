/**
 * Concept recovery: do an SAE's latents match ground-truth patch concepts, and how close do they come to what the
 * layer linearly encodes? Every detector below is fit on the same training images and scored on the same held-out
 * ones (whole images, so neighbouring patches never sit on both sides). Per concept:
 *   - the best single latent: the latent and the activation threshold with the best training F1 (as saev's semseg
 *     latent lookup scans thresholds), its held-out F1,
 *   - the ceiling: a logistic-regression probe on the raw activations (its logit > 0),
 *   - baselines: the best raw neuron and the best random direction (threshold and sign fit alike).
 * Besides, over all scanned patches (chosen and scored on the same patches): the latent with the best F1 of "fires
 * at all" and the best OR of up to 3 latents, chosen greedily (features split: "red" may be three latents).
 * The recovery ratio is the mean over concepts that the probe decodes at F1 >= 0.8 of (latent F1 / probe F1).
 * Per latent, the report also lists the concepts it matches best (concept-matches.ts), for the feature browser.
 *
 * Shape letters: N patches, D d_model, C concepts, S latents, M candidate latents.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { native } from '../sae/native.js';
import { readJson, writeFileAtomic } from '../util/fs.js';
import { parseCsv } from '../data/images.js';
import { LABELS_FILE, readConceptWorld } from '../data/concept-world.js';
import { EXAMPLES_FILE } from '../shards/format.js';
import type { Sae } from '../sae/model.js';
import { Adam } from '../util/adam.js';
import { Rng } from '../util/random.js';
import { OrderedTokenLoader, ShardDataset } from '../shards/index.js';
import { UserError } from '../util/errors.js';
import { progress } from '../util/progress.js';
import { bestConceptMatches, type ConceptMatch } from './concept-matches.js';
import { readRun, writeRun } from './run.js';

/** Binary per-patch concept labels for the examples of a shard directory. */
export interface PatchConcepts {
  concepts: string[];
  /** Patches per example (the shard's content tokens). */
  patches: number;
  /** [patches, C] 0/1 labels of shard example `example`. */
  labels(example: number): Uint8Array;
}

export interface ConceptScore {
  concept: string;
  /** Patches where the concept is present. */
  support: number;
  /** The latent and threshold (it detects the concept where its activation >= threshold) fit on the training images. */
  latent: number;
  threshold: number;
  /** Held-out F1 of that rule. */
  f1: number;
  /** Over all scanned patches: the latent whose firing (> 0) matches the concept best, and that F1. */
  fires_latent: number;
  fires_f1: number;
  /** Over all scanned patches: a greedy OR of up to 3 latents' firing (it contains fires_latent). */
  group: number[];
  group_f1: number;
  probe_f1: number;
  neuron_f1: number;
  random_f1: number;
}

export interface ConceptReport {
  /** Mean held-out F1 of the best single latent with its fitted threshold. */
  mean_best_f1: number;
  mean_fires_f1: number;
  mean_group_f1: number;
  mean_probe_f1: number;
  mean_neuron_f1: number;
  mean_random_f1: number;
  /** Mean over concepts with probe F1 >= 0.8 of best latent F1 / probe F1. */
  recovery_ratio: number;
  /** The same with fires_f1 and group_f1 (all scanned patches, no threshold fit). */
  recovery_ratio_fires: number;
  recovery_ratio_group3: number;
  /** Concepts counted in the ratios. */
  n_decodable: number;
  /** Patches scanned for fires_f1 and the OR-groups. */
  n_patches: number;
  /** Patches the detectors (latent thresholds, probe, baselines) were fit on, and scored on. */
  n_fit_patches: number;
  n_scored_patches: number;
  concepts: ConceptScore[];
  /** latents[s]: latent s's best-matching concepts, best F1 first (at most 3, only F1 > 0). */
  latents: ConceptMatch[][];
}

export interface ConceptEvalOptions {
  selection: { layer: number };
  batch?: number;
  /** Patches scanned for the SAE's F1 scores. */
  maxPatches?: number;
  /** Examples whose raw activations train and test the latent thresholds, probes and baselines (the last 20% are held out). */
  probeExamples?: number;
  candidates?: number;
  randomDirections?: number;
  seed?: number;
  showProgress?: boolean;
}

/** F1 from true positives, predicted positives and actual positives (0 when both are empty). */
export const f1Of = (tp: number, predicted: number, actual: number) => (predicted + actual > 0 ? (2 * tp) / (predicted + actual) : 0);

/**
 * Pass 1 counts, per (latent, concept), the patches where the latent fires and the concept is present, which
 * gives every latent's F1 at once; pass 2 keeps, per patch, which of each concept's best candidates fire, for
 * the greedy OR-groups. Raw activations of the first `probeExamples` examples are kept for the probes.
 */
export async function evaluateConcepts(sae: Sae, shards: string, labels: PatchConcepts, opts: ConceptEvalOptions): Promise<ConceptReport> {
  const C = labels.concepts.length;
  const S = sae.dSae;
  const M = opts.candidates ?? 16;
  const ds = await ShardDataset.open(shards);
  try {
    if (ds.d !== sae.dModel) throw new UserError(`${shards} has d_model ${ds.d} but the SAE expects ${sae.dModel}`);
    if (ds.metadata.content_tokens_per_example !== labels.patches) {
      throw new UserError(`${shards} has ${ds.metadata.content_tokens_per_example} patches per example but the concept labels have ${labels.patches}`);
    }
    const D = ds.d;
    const loader = new OrderedTokenLoader(ds, { layer: opts.selection.layer, tokens: 'patches' }, opts.batch ?? 4096);
    const total = Math.min(loader.nTokens, opts.maxPatches ?? Infinity);
    const probeExamples = Math.min(ds.nExamples, opts.probeExamples ?? 2000);
    const probeN = Math.min(total, probeExamples * labels.patches);
    const probeX_ND = new Float32Array(probeN * D);
    const probeY_NC = new Uint8Array(probeN * C);
    const fires_S = new Float64Array(S);
    const positives_C = new Float64Array(C);
    const tp_SC = new Float64Array(S * C);
    const bar = progress('concepts', 2 * total, { enabled: opts.showProgress !== false, unit: 'patches' });

    // Pass 1.
    let seen = 0;
    const rowLabels = (example: number, patch: number) => labels.labels(example).subarray(patch * C, (patch + 1) * C);
    for await (const b of loader.batches()) {
      const rows = Math.min(b.acts_BD.length / D, total - seen);
      const acts = await sae.encode(b.acts_BD.subarray(0, rows * D));
      for (let r = 0; r < rows; r++) {
        const y_C = rowLabels(b.example_B[r], b.patch_B[r]);
        const n = seen + r;
        if (n < probeN) {
          probeX_ND.set(b.acts_BD.subarray(r * D, (r + 1) * D), n * D);
          probeY_NC.set(y_C, n * C);
        }
        for (let c = 0; c < C; c++) positives_C[c] += y_C[c];
        for (let e = acts.rowptr[r]; e < acts.rowptr[r + 1]; e++) {
          if (!(acts.val[e] > 0)) continue;
          const s = acts.idx[e];
          fires_S[s]++;
          for (let c = 0; c < C; c++) if (y_C[c]) tp_SC[s * C + c]++;
        }
      }
      seen += rows;
      bar.update(seen);
      if (seen >= total) break;
    }

    // The M best latents per concept by single-latent F1.
    const cand_CM: number[][] = [];
    for (let c = 0; c < C; c++) {
      const order = Array.from({ length: S }, (_, s) => s)
        .map((s) => [s, f1Of(tp_SC[s * C + c], fires_S[s], positives_C[c])] as const)
        .sort((a, b) => b[1] - a[1] || a[0] - b[0]);
      cand_CM.push(order.slice(0, M).map(([s]) => s));
    }

    // Pass 2: per patch, a bitmask over each concept's candidates (M <= 32) of those that fire.
    const slot = new Map<number, { c: number; m: number }[]>();
    cand_CM.forEach((list, c) => list.forEach((s, m) => slot.set(s, [...(slot.get(s) ?? []), { c, m }])));
    const fired_NC = new Uint32Array(total * C);
    const present_NC = new Uint8Array(total * C);
    seen = 0;
    for await (const b of loader.batches()) {
      const rows = Math.min(b.acts_BD.length / D, total - seen);
      const acts = await sae.encode(b.acts_BD.subarray(0, rows * D));
      for (let r = 0; r < rows; r++) {
        const n = seen + r;
        present_NC.set(rowLabels(b.example_B[r], b.patch_B[r]), n * C);
        for (let e = acts.rowptr[r]; e < acts.rowptr[r + 1]; e++) {
          if (!(acts.val[e] > 0)) continue;
          for (const { c, m } of slot.get(acts.idx[e]) ?? []) fired_NC[n * C + c] |= 1 << m;
        }
      }
      seen += rows;
      bar.update(total + seen);
      if (seen >= total) break;
    }
    bar.stop();

    const probe = probeScores(probeX_ND, probeY_NC, probeN, D, C, labels.patches, opts);
    const latent = await latentScores(sae, probeX_ND, probeY_NC, probeN, D, C, probe.nTrain);
    const scores: ConceptScore[] = labels.concepts.map((concept, c) => {
      const single = cand_CM[c][0];
      const group = greedyGroup(fired_NC, present_NC, total, C, c, 3);
      return {
        concept,
        support: positives_C[c],
        latent: latent[c].feature,
        threshold: latent[c].threshold,
        f1: latent[c].test,
        fires_latent: single,
        fires_f1: f1Of(tp_SC[single * C + c], fires_S[single], positives_C[c]),
        group: group.members.map((m) => cand_CM[c][m]),
        group_f1: group.f1,
        probe_f1: probe.probe[c],
        neuron_f1: probe.neuron[c],
        random_f1: probe.random[c],
      };
    });
    const mean = (f: (s: ConceptScore) => number, list = scores) => (list.length ? list.reduce((a, s) => a + f(s), 0) / list.length : 0);
    const decodable = scores.filter((s) => s.probe_f1 >= 0.8);
    return {
      mean_best_f1: mean((s) => s.f1),
      mean_fires_f1: mean((s) => s.fires_f1),
      mean_group_f1: mean((s) => s.group_f1),
      mean_probe_f1: mean((s) => s.probe_f1),
      mean_neuron_f1: mean((s) => s.neuron_f1),
      mean_random_f1: mean((s) => s.random_f1),
      recovery_ratio: mean((s) => s.f1 / s.probe_f1, decodable),
      recovery_ratio_fires: mean((s) => s.fires_f1 / s.probe_f1, decodable),
      recovery_ratio_group3: mean((s) => s.group_f1 / s.probe_f1, decodable),
      n_decodable: decodable.length,
      n_patches: total,
      n_fit_patches: probe.nTrain,
      n_scored_patches: probeN - probe.nTrain,
      concepts: scores,
      latents: bestConceptMatches(tp_SC, fires_S, positives_C, labels.concepts),
    };
  } finally {
    await ds.close();
  }
}

/** Greedily ORs up to `size` of concept c's candidates (bits of fired_NC), each step taking the best F1 gain. */
export function greedyGroup(fired_NC: Uint32Array, present_NC: Uint8Array, N: number, C: number, c: number, size: number): { members: number[]; f1: number } {
  let mask = 0;
  let best = 0;
  const members: number[] = [];
  let actual = 0;
  for (let n = 0; n < N; n++) actual += present_NC[n * C + c];
  for (let step = 0; step < size; step++) {
    let pick = -1;
    for (let m = 0; m < 32; m++) {
      if (mask & (1 << m)) continue;
      const trial = mask | (1 << m);
      let tp = 0,
        predicted = 0;
      for (let n = 0; n < N; n++) {
        if (fired_NC[n * C + c] & trial) {
          predicted++;
          tp += present_NC[n * C + c];
        }
      }
      if (predicted === 0) continue;
      const f1 = f1Of(tp, predicted, actual);
      if (f1 > best + 1e-12) {
        best = f1;
        pick = m;
      }
    }
    if (pick < 0) break;
    mask |= 1 << pick;
    members.push(pick);
  }
  return { members, f1: best };
}

/**
 * Probes and baselines on raw activations: examples are split 80/20 (whole examples, so that neighbouring
 * patches of one image never sit on both sides); every score is fit on the first part and reported on the second.
 */
function probeScores(X_ND: Float32Array, Y_NC: Uint8Array, N: number, D: number, C: number, patches: number, opts: ConceptEvalOptions) {
  const nTrain = Math.floor((N / patches) * 0.8) * patches;
  if (nTrain < patches || N - nTrain < patches) throw new UserError(`too few examples (${N / patches}) to fit and test the probes; use more data`);
  // Standardise features (statistics of the training part) so one learning rate fits every layer.
  const mu_D = new Float64Array(D),
    sd_D = new Float64Array(D);
  for (let n = 0; n < nTrain; n++) for (let d = 0; d < D; d++) mu_D[d] += X_ND[n * D + d] / nTrain;
  for (let n = 0; n < nTrain; n++) for (let d = 0; d < D; d++) sd_D[d] += (X_ND[n * D + d] - mu_D[d]) ** 2 / nTrain;
  const Z_ND = new Float32Array(N * D);
  for (let n = 0; n < N; n++) for (let d = 0; d < D; d++) Z_ND[n * D + d] = (X_ND[n * D + d] - mu_D[d]) / Math.sqrt(sd_D[d] + 1e-12);

  // Logistic regression for all concepts at once (independent sigmoids), full-batch Adam.
  const W_DC = new Float32Array(D * C),
    b_C = new Float64Array(C);
  const logits_NC = new Float32Array(N * C),
    grad_DC = new Float32Array(D * C),
    err_NC = new Float32Array(nTrain * C);
  const m_DC = new Float64Array(D * C),
    v_DC = new Float64Array(D * C),
    mb = new Float64Array(C),
    vb = new Float64Array(C),
    gb = new Float64Array(C);
  const { sgemm, logisticResidual } = native();
  const Ztrain = Z_ND.subarray(0, nTrain * D);
  const adam = new Adam({ lr: 0.05 });
  for (let t = 1; t <= 300; t++) {
    sgemm(false, false, nTrain, C, D, Ztrain, W_DC, logits_NC.subarray(0, nTrain * C));
    logisticResidual(logits_NC.subarray(0, nTrain * C), b_C, Y_NC.subarray(0, nTrain * C), 1 / nTrain, err_NC, gb);
    sgemm(true, false, D, C, nTrain, Ztrain, err_NC, grad_DC);
    adam.step([
      { w: W_DC, grad: grad_DC, m: m_DC, v: v_DC, l2: 1e-4 },
      { w: b_C, grad: gb, m: mb, v: vb },
    ]);
  }
  sgemm(false, false, N, C, D, Z_ND, W_DC, logits_NC);
  for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) logits_NC[n * C + c] += b_C[c];

  // Every scored feature is a column: the probe's logit for its concept, each raw neuron, R random directions.
  const R = opts.randomDirections ?? 16;
  const rng = new Rng(opts.seed ?? 0, 0xc0de);
  const dirs_DR = new Float32Array(D * R);
  for (let r = 0; r < R; r++) {
    let norm = 0;
    for (let d = 0; d < D; d++) norm += (dirs_DR[d * R + r] = rng.normal()) ** 2;
    for (let d = 0; d < D; d++) dirs_DR[d * R + r] /= Math.sqrt(norm);
  }
  const proj_NR = new Float32Array(N * R);
  sgemm(false, false, N, R, D, X_ND.subarray(0, N * D), dirs_DR, proj_NR);
  const column = (src: Float32Array, width: number, j: number) => Float32Array.from({ length: N }, (_, n) => src[n * width + j]);
  // The probe's logit gets a fitted threshold too (and features a sign as well): every detector is fit alike.
  const probe = Float64Array.from({ length: C }, (_, c) => detectorScores(column(logits_NC, C, c), Y_NC, C, nTrain, [1]).test[c]);
  const heldOut = (best: Detector[]) => Float64Array.from(best, (b) => b.test);
  /** The columns of a row-major [N, width] matrix as detectors' inputs. */
  const columnsOf = function* (src: Float32Array, width: number) {
    for (let j = 0; j < width; j++) yield { x: column(src, width, j) };
  };
  const neuron = heldOut(bestDetectors(columnsOf(X_ND, D), Y_NC, C, nTrain, [1, -1]));
  const random = heldOut(bestDetectors(columnsOf(proj_NR, R), Y_NC, C, nTrain, [1, -1]));
  return { probe, neuron, random, nTrain };
}

/**
 * Every latent of the SAE as a detector of every concept, on the probes' rows: threshold fit on rows [0, nTrain),
 * F1 on the rest. Latents that never fire on the training rows detect nothing and are skipped.
 */
async function latentScores(sae: Sae, X_ND: Float32Array, Y_NC: Uint8Array, N: number, D: number, C: number, nTrain: number): Promise<Detector[]> {
  // Latent activations column by column: a latent's rows (ascending) and values.
  const rows_S: number[][] = Array.from({ length: sae.dSae }, () => []);
  const vals_S: number[][] = Array.from({ length: sae.dSae }, () => []);
  const CHUNK = 8192;
  for (let start = 0; start < N; start += CHUNK) {
    const n = Math.min(CHUNK, N - start);
    const acts = await sae.encode(X_ND.subarray(start * D, (start + n) * D));
    for (let r = 0; r < n; r++) {
      for (let e = acts.rowptr[r]; e < acts.rowptr[r + 1]; e++) {
        if (!(acts.val[e] > 0)) continue;
        rows_S[acts.idx[e]].push(start + r);
        vals_S[acts.idx[e]].push(acts.val[e]);
      }
    }
  }
  const positives = { train: new Float64Array(C), test: new Float64Array(C) };
  for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) (n < nTrain ? positives.train : positives.test)[c] += Y_NC[n * C + c];
  const features = (function* () {
    for (let s = 0; s < sae.dSae; s++) {
      // A latent silent on the training rows gets no rule (the only one it allows, "always on", detects nothing).
      yield rows_S[s].length && rows_S[s][0] < nTrain ? { x: Float32Array.from(vals_S[s]), sparse: { rows: Int32Array.from(rows_S[s]), N, positives } } : null;
    }
  })();
  return bestDetectors(features, Y_NC, C, nTrain, [1]);
}

/** A feature (column index) as a detector of a concept: its rule is "x >= threshold" (sign 1) or "x <= threshold". */
export interface Detector {
  feature: number;
  sign: number;
  threshold: number;
  /** F1 on the training rows, and of the same rule on the held-out rows. */
  train: number;
  test: number;
}

/** Per concept, the column (null: skipped) whose fitted rule has the best training F1 (lowest index on ties). */
export function bestDetectors(columns: Iterable<{ x: Float32Array; sparse?: SparseRows } | null>, Y_NC: Uint8Array, C: number, nTrain: number, signs: number[]): Detector[] {
  const best: Detector[] = Array.from({ length: C }, () => ({ feature: -1, sign: 1, threshold: 0, train: -1, test: 0 }));
  let j = 0;
  for (const col of columns) {
    if (col) {
      const sc = detectorScores(col.x, Y_NC, C, nTrain, signs, col.sparse);
      for (let c = 0; c < C; c++) if (sc.train[c] > best[c].train) best[c] = { feature: j, ...sc.rule[c], train: sc.train[c], test: sc.test[c] };
    }
    j++;
  }
  return best;
}

/**
 * A column that is zero except on `rows` (ascending), of `N` rows in all; `positives` counts each concept's
 * positives among the training rows [0, nTrain) and among the rest, so the zeros are counted as one block.
 */
export interface SparseRows {
  rows: Int32Array;
  N: number;
  positives: { train: Float64Array; test: Float64Array };
}

/**
 * One scalar feature x as a detector of every concept: for each concept the threshold (on a grid of 256 bins of
 * the training range) and, among `signs`, the direction with the best F1 on rows [0, nTrain); returns that
 * training F1, the rule (x >= threshold for sign 1, x <= threshold for -1, up to the bin edges) and the F1 of the
 * same rule on the held-out rows. With `sparse`, x holds the values of sparse.rows only (an SAE latent's column)
 * and the result is that of the dense column.
 */
export function detectorScores(
  x: Float32Array,
  Y_NC: Uint8Array,
  C: number,
  nTrain: number,
  signs: number[],
  sparse?: SparseRows,
): { train: Float64Array; test: Float64Array; rule: { sign: number; threshold: number }[] } {
  const BINS = 256;
  const count = x.length;
  const rowOf = sparse ? (i: number) => sparse.rows[i] : (i: number) => i;
  let split = sparse ? 0 : nTrain;
  if (sparse) while (split < count && sparse.rows[split] < nTrain) split++;
  const zerosTrain = sparse ? nTrain - split : 0;
  const zerosTest = sparse ? sparse.N - nTrain - (count - split) : 0;
  let lo = zerosTrain ? 0 : Infinity,
    hi = zerosTrain ? 0 : -Infinity;
  for (let i = 0; i < split; i++) {
    lo = Math.min(lo, x[i]);
    hi = Math.max(hi, x[i]);
  }
  const width = hi > lo ? (hi - lo) / BINS : 1;
  const binOf = (v: number) => Math.min(BINS - 1, Math.max(0, Math.floor((v - lo) / width)));
  const count_B = new Float64Array(BINS),
    pos_BC = new Float64Array(BINS * C),
    actual_C = new Float64Array(C);
  for (let i = 0; i < split; i++) {
    const b = binOf(x[i]),
      n = rowOf(i);
    count_B[b]++;
    for (let c = 0; c < C; c++) pos_BC[b * C + c] += Y_NC[n * C + c];
  }
  if (sparse) {
    // The zero rows: every training positive not counted above.
    const b = binOf(0);
    const counted_C = new Float64Array(C);
    for (let k = 0; k < BINS; k++) for (let c = 0; c < C; c++) counted_C[c] += pos_BC[k * C + c];
    count_B[b] += zerosTrain;
    for (let c = 0; c < C; c++) pos_BC[b * C + c] += sparse.positives.train[c] - counted_C[c];
  }
  for (let b = 0; b < BINS; b++) for (let c = 0; c < C; c++) actual_C[c] += pos_BC[b * C + c];
  const train = new Float64Array(C).fill(0);
  const rule = Array.from({ length: C }, () => ({ sign: 1, cut: BINS }));
  for (const sign of signs) {
    // Predict positive for bins >= cut (sign 1) or bins <= cut (sign -1): sweep cumulative sums from that end.
    const tp_C = new Float64Array(C);
    let predicted = 0;
    for (let k = 0; k < BINS; k++) {
      const b = sign > 0 ? BINS - 1 - k : k;
      predicted += count_B[b];
      for (let c = 0; c < C; c++) {
        tp_C[c] += pos_BC[b * C + c];
        const f1 = f1Of(tp_C[c], predicted, actual_C[c]);
        if (f1 > train[c]) {
          train[c] = f1;
          rule[c] = { sign, cut: b };
        }
      }
    }
  }
  const on = (c: number, b: number) => (rule[c].sign > 0 ? b >= rule[c].cut : b <= rule[c].cut);
  const tp = new Float64Array(C),
    pred = new Float64Array(C),
    act = new Float64Array(C);
  for (let i = split; i < count; i++) {
    const b = binOf(x[i]),
      n = rowOf(i);
    for (let c = 0; c < C; c++) {
      const y = Y_NC[n * C + c];
      if (on(c, b)) {
        pred[c]++;
        tp[c] += y;
      }
      act[c] += y;
    }
  }
  if (sparse) {
    const b = binOf(0);
    for (let c = 0; c < C; c++) {
      if (on(c, b)) {
        pred[c] += zerosTest;
        tp[c] += sparse.positives.test[c] - act[c];
      }
      act[c] = sparse.positives.test[c];
    }
  }
  return {
    train,
    test: Float64Array.from({ length: C }, (_, c) => f1Of(tp[c], pred[c], act[c])),
    rule: rule.map((r) => ({ sign: r.sign, threshold: lo + (r.sign > 0 ? r.cut : r.cut + 1) * width })),
  };
}

/**
 * Patch concept labels of a concept-world directory (src/data/README.md) for the examples of a recording of it:
 * the recording's examples.jsonl names each example's image, which labels.csv orders like the coverage file.
 */
export async function conceptWorldLabels(worldDir: string, shardsDir: string): Promise<PatchConcepts> {
  const { info, coverage_NPC } = await readConceptWorld(worldDir);
  const [, patches, C] = info.coverage_shape;
  const csv = parseCsv(await fsp.readFile(path.join(worldDir, LABELS_FILE), 'utf8'));
  const indexOf = new Map(csv.slice(1).map((row, i) => [path.normalize(row[0]), i]));
  const examples = (await fsp.readFile(path.join(shardsDir, EXAMPLES_FILE), 'utf8')).split('\n').filter(Boolean);
  const image_E = Int32Array.from(examples, (line, e) => {
    const file = path.normalize((JSON.parse(line) as { file: string }).file);
    const i = indexOf.get(file);
    if (i === undefined)
      throw new UserError(`${shardsDir}/${EXAMPLES_FILE} line ${e + 1} names ${file}, which is not in ${worldDir}/${LABELS_FILE}: the shards were not recorded from this concept world`);
    return i;
  });
  return {
    concepts: info.concepts,
    patches,
    labels(example: number): Uint8Array {
      const i = image_E[example];
      const out = new Uint8Array(patches * C);
      for (let j = 0; j < out.length; j++) out[j] = coverage_NPC[i * patches * C + j] >= info.threshold ? 1 : 0;
      return out;
    },
  };
}

/** A run directory's concept report (see run.json's `concepts`). */
export const CONCEPT_REPORT_FILE = 'concepts.json';

/** Writes a report as JSON, readable: the summary indented, then one line per latent. */
export async function writeConceptReport(file: string, report: ConceptReport): Promise<void> {
  const { latents, ...summary } = report;
  const head = JSON.stringify(summary, null, 2).replace(/\n}$/, '');
  await writeFileAtomic(file, `${head},\n  "latents": [\n${latents.map((m) => `    ${JSON.stringify(m)}`).join(',\n')}\n  ]\n}\n`);
}

export async function readConceptReport(file: string): Promise<ConceptReport> {
  const r = await readJson<Partial<ConceptReport>>(file, 'the concept report that run.json names (vitsae eval concepts --run DIR writes it)');
  if (!Array.isArray(r?.concepts) || !Array.isArray(r.latents)) {
    throw new UserError(`${file} is not a concept report with per-latent matches (older vitsae versions wrote none); rerun vitsae eval concepts --run DIR`);
  }
  return r as ConceptReport;
}

/** Writes the report into run directory `dir` and records it in its run.json, for the feature browser. */
export async function addConceptReportToRun(dir: string, report: ConceptReport): Promise<string> {
  const run = await readRun(dir);
  const file = path.join(run.dir, CONCEPT_REPORT_FILE);
  await writeConceptReport(file, report);
  await writeRun(run.dir, { ...run, concepts: file });
  return file;
}
