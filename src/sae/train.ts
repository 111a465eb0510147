/**
 * Training: one pass of shuffled batches from activation shards feeds one SAE or a sweep of SAEs (different lr,
 * L1, k, width, activation; same batches, read once). Shape letters: B batch tokens, D d_model.
 *
 * Per step and SAE: scale the batch (as the native core copies it), forward/backward/Adam in the native core (off the main thread, while the
 * loader reads the next batch), log metrics every `logEvery` steps to metrics.jsonl, checkpoint every
 * `checkpointEvery` steps, every `checkpointMinutes` (the first after 30 s) and at the end. `resume` continues from the checkpoints with their optimizer state and
 * the loader at the same batch, so an interrupted run ends where an uninterrupted one would.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { snakeKeys } from '../util/json-keys.js';
import { progress } from '../util/progress.js';
import { ShardDataset, ShuffledTokenLoader, type TokenSelection, meanAndScale } from '../shards/index.js';
import { traitsOf } from './activations.js';
import type { LoadedSae } from './checkpoint.js';
import { type SaeConfig, type TrainConfig, dSaeOf, resolveRunLength } from './config.js';
import { Sae, initialDraws } from './model.js';
import { type SaeMetrics, summarize } from './metrics.js';
import { type Hyper, type StepStats, native } from './native.js';

export interface SweepMember {
  /** Subdirectory of the output for this SAE ('' when training one SAE into the output directory itself). */
  name: string;
  sae: SaeConfig;
  train: TrainConfig;
}

export interface TrainOptions {
  shards: string;
  out: string;
  selection: TokenSelection;
  members: SweepMember[];
  /** Continue from the checkpoints in `out`. */
  resume?: boolean;
  /** Start from these weights (from `readVitsaeDir`, or interop's `readAnySae` for other formats) instead of a random initialisation; `source` names them in errors. */
  init?: LoadedSae & { source: string };
  logEvery?: number;
  checkpointEvery?: number;
  /** Minutes between checkpoints by time, the first after at most 30 s (default 5; 0: by steps only). */
  checkpointMinutes?: number;
  windowTokens?: number;
  showProgress?: boolean;
  /** Called after each logged interval, e.g. for tests or a live server. */
  onLog?: (member: string, row: LogRow) => void;
  /** Checked between steps; when it returns true the run checkpoints and stops early (Ctrl-C). */
  shouldStop?: () => boolean;
  /** Notices for the user (default: stderr), e.g. that bf16 was asked for on a CPU without a bf16 kernel. */
  log?: (line: string) => void;
}

export interface LogRow extends SaeMetrics {
  step: number;
  tokens_seen: number;
  loss: number;
  aux_loss: number;
  l1_loss: number;
  lr: number;
  l1: number;
  grad_norm: number;
  tokens_per_s: number;
}

export interface TrainResult {
  dir: string;
  name: string;
  final: LogRow | null;
  stopped: boolean;
}

/** Learning rate at `step`: linear warmup, then constant or cosine decay to 0 at the last step. */
export function learningRate(t: TrainConfig, step: number, totalSteps: number): number {
  if (step < t.lrWarmup) return (t.lr * (step + 1)) / t.lrWarmup;
  if (t.lrSchedule === 'constant') return t.lr;
  const span = Math.max(1, totalSteps - t.lrWarmup);
  return 0.5 * t.lr * (1 + Math.cos((Math.PI * (step - t.lrWarmup)) / span));
}

export function l1Coefficient(t: TrainConfig, step: number): number {
  return t.l1Warmup > 0 ? t.l1 * Math.min(1, (step + 1) / t.l1Warmup) : t.l1;
}

function checkShared(members: SweepMember[]): void {
  if (!members.length) throw new UserError('nothing to train: the sweep is empty');
  const first = members[0].train;
  for (const m of members) {
    for (const key of ['batch', 'tokens', 'seed', 'scaleTokens'] as const) {
      if (m.train[key] !== first[key])
        throw new UserError(`sweep member ${m.name} has ${key} = ${m.train[key]} but ${members[0].name} has ${first[key]}: SAEs in one sweep share their batches, so ${key} must be the same`);
    }
  }
}

interface Member extends SweepMember {
  dir: string;
  model: Sae;
  /** Next step this SAE trains; members of a resumed sweep may differ by one checkpoint interval. */
  step: number;
  interval: { loss: number; aux: number; l1: number; gradNorm: number; steps: number };
  last: LogRow | null;
}

const EARLY_CHECKPOINT_MS = 30_000;

/**
 * Puts the member's encoder GEMM in the precision its config asks for. auto means bf16 on AMX tiles only: there it
 * measured faster than fp32 with the same final nmse (README, "The native core"); the AVX512-BF16 kernel is used
 * when bf16 is asked for explicitly.
 */
function setCompute(m: Member, log: (line: string) => void): void {
  const want = m.train.compute ?? 'auto';
  const bf16 = want === 'bf16' || (want === 'auto' && native().bf16Kernel() === 'bf16-amx');
  m.model.core.setState({ bf16 });
  if (want === 'bf16' && m.model.core.getState().compute === 'fp32') {
    log(`${m.dir}: --compute bf16 needs a CPU with AMX-BF16 or AVX512-BF16 (and, for AMX, Linux); this one has neither, so this SAE trains in fp32`);
  }
}

const emptyInterval = () => ({ loss: 0, aux: 0, l1: 0, gradNorm: 0, steps: 0 });

async function prepare(opts: TrainOptions, ds: ShardDataset, loader: ShuffledTokenLoader): Promise<Member[]> {
  const { members } = opts;
  const single = members.length === 1 && members[0].name === '';
  const dirOf = (m: SweepMember) => (single ? opts.out : path.join(opts.out, m.name));
  if (opts.resume) {
    return Promise.all(
      members.map(async (m) => {
        const dir = dirOf(m);
        const model = await Sae.load(dir, { train: m.train, withOptimizer: true }).catch((e: Error) => {
          throw new UserError(`cannot resume from ${dir}: ${e.message}`);
        });
        if (model.dModel !== ds.d) throw new UserError(`${dir} has d_model ${model.dModel} but ${opts.shards} has ${ds.d}`);
        model.config.train = m.train;
        return { ...m, dir, model, step: model.config.step ?? 0, interval: emptyInterval(), last: null };
      }),
    );
  }
  for (const m of members) {
    const taken = await fsp.access(path.join(dirOf(m), 'config.json')).then(
      () => true,
      () => false,
    );
    if (taken) throw new UserError(`${dirOf(m)} already holds a checkpoint: pass --resume to continue it, or choose another --out`);
  }
  const first = members[0].train;
  const initial = opts.init;
  if (initial && initial.config.d_model !== ds.d) throw new UserError(`--init ${initial.source} has d_model ${initial.config.d_model} but ${opts.shards} has ${ds.d}`);
  // The estimate reads its sample twice through the training's own shuffler (the first tokens of the run, whose
  // first window the loader then keeps for the steps): a sample larger than the run itself only costs start-up time
  // (an 81,920-token run read 262,144 tokens twice before its first step).
  const scaleTokens = Math.min(first.scaleTokens, first.tokens);
  // The decoders' random draws run on worker threads meanwhile (the other core).
  const draws = initial ? [] : members.map((m) => initialDraws(m.train.seed, ds.d, dSaeOf(m.sae, ds.d)));
  for (const d of draws) d.catch(() => undefined); // awaited below, unless the estimate fails first
  const stats = initial ? null : await meanAndScale(loader, scaleTokens);
  const drawn = await Promise.all(draws);
  return members.map((m, i) => {
    let model: Sae;
    if (initial) {
      model = Sae.create(ds.d, m.sae, { mean: new Float32Array(ds.d), inputScale: initial.config.input_scale, seed: m.train.seed }, m.train);
      if (model.dSae !== initial.config.d_sae) throw new UserError(`--init ${initial.source} has d_sae ${initial.config.d_sae} but the config asks for ${model.dSae}`);
      model.setWeights(initial, initial.source);
      model.core.setState({ threshold: initial.config.threshold });
    } else {
      const s = stats!;
      model = Sae.create(ds.d, m.sae, { mean: s.mean_D, inputScale: m.sae.normalize ? s.scale : 1, seed: m.train.seed, draws: drawn[i] }, m.train);
    }
    model.config.data = { shards: path.resolve(opts.shards), layer: opts.selection.layer, tokens: opts.selection.tokens };
    model.config.step = 0;
    model.config.tokens_seen = 0;
    return { ...m, dir: dirOf(m), model, step: 0, interval: emptyInterval(), last: null };
  });
}

export async function train(opts: TrainOptions): Promise<TrainResult[]> {
  opts = { ...opts, members: opts.members.map((m) => ({ ...m, train: resolveRunLength(m.train) })) };
  checkShared(opts.members);
  const t0 = opts.members[0].train;
  const totalSteps = Math.ceil(t0.tokens / t0.batch);
  const logEvery = opts.logEvery ?? Math.max(1, Math.min(100, Math.floor(totalSteps / 20)));
  const checkpointEvery = opts.checkpointEvery ?? 1000;
  const checkpointMs = (opts.checkpointMinutes ?? 5) * 60_000;
  // The first checkpoint by time comes early, so that even a short run killed in its first minute can resume.
  let checkpointAt = Date.now() + Math.min(EARLY_CHECKPOINT_MS, checkpointMs);
  const ds = await ShardDataset.open(opts.shards);
  try {
    const loader = new ShuffledTokenLoader(ds, opts.selection, { seed: t0.seed, batchSize: t0.batch, windowTokens: opts.windowTokens });
    const members = await prepare(opts, ds, loader);
    const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
    for (const m of members) setCompute(m, log);
    for (const m of members) await fsp.mkdir(m.dir, { recursive: true });
    if (members.length > 1 || members[0].name !== '') {
      await writeFileAtomic(path.join(opts.out, 'sweep.json'), JSON.stringify({ members: members.map((m) => ({ name: m.name, sae: snakeKeys(m.sae), train: snakeKeys(m.train) })) }, null, 2) + '\n');
    }
    const startStep = Math.min(...members.map((m) => m.step));
    const bar = progress(members.length > 1 ? `train ${members.length} SAEs` : 'train', totalSteps, { enabled: opts.showProgress !== false, unit: 'steps' });
    bar.update(startStep);
    const it = loader.batches(startStep, totalSteps)[Symbol.asyncIterator]();
    let next = it.next();
    let stopped = false;
    let intervalStart = Date.now();
    let intervalTokens = 0;
    for (let step = startStep; step < totalSteps; step++) {
      const { value: batch } = await next;
      if (!batch) throw new Error('the shuffled loader ended');
      next = step + 1 < totalSteps ? it.next() : next;
      for (const m of members) {
        if (step < m.step) continue;
        const hyper: Hyper = { lr: learningRate(m.train, step, totalSteps), beta1: m.train.adamBeta1, beta2: m.train.adamBeta2, eps: m.train.adamEps, clip: m.train.gradClip };
        const l1 = traitsOf(m.sae.activation).l1 ? l1Coefficient(m.train, step) : 0;
        const st: StepStats = await m.model.core.trainStep(batch.acts_BD, l1, hyper, m.model.config.input_scale);
        if (!Number.isFinite(st.loss)) {
          throw new UserError(`${m.dir}: the loss became ${st.loss} at step ${step}; lower --lr (now ${m.train.lr}) or check the shards; the last checkpoint is kept`);
        }
        m.step = step + 1;
        m.interval.loss += st.loss;
        m.interval.aux += st.auxLoss;
        m.interval.l1 += st.l1Loss;
        m.interval.gradNorm += st.gradNorm;
        m.interval.steps++;
      }
      intervalTokens += batch.acts_BD.length / ds.d;
      const last = step + 1 === totalSteps;
      stopped = !last && (opts.shouldStop?.() ?? false);
      if ((step + 1) % logEvery === 0 || last || stopped) {
        const elapsed = (Date.now() - intervalStart) / 1000;
        for (const m of members) {
          if (!m.interval.steps) continue;
          const raw = m.model.core.takeMetrics();
          const metrics = summarize(raw, {
            inputScale: m.model.config.input_scale,
            denseThreshold: m.train.denseThreshold,
            sinceFired: m.model.core.getTensor('since_fired'),
            deadWindow: Math.min(m.train.deadWindow, (step + 1) * t0.batch),
          });
          const k = m.interval.steps;
          const row: LogRow = {
            step: step + 1,
            tokens_seen: (step + 1) * t0.batch,
            loss: m.interval.loss / k,
            aux_loss: m.interval.aux / k,
            l1_loss: m.interval.l1 / k,
            lr: learningRate(m.train, step, totalSteps),
            l1: traitsOf(m.sae.activation).l1 ? l1Coefficient(m.train, step) : 0,
            grad_norm: m.interval.gradNorm / k,
            tokens_per_s: intervalTokens / Math.max(1e-9, elapsed),
            ...metrics,
          };
          m.last = row;
          m.interval = emptyInterval();
          await fsp.appendFile(path.join(m.dir, 'metrics.jsonl'), JSON.stringify(row) + '\n');
          opts.onLog?.(m.name, row);
        }
        const head = members[0].last;
        if (head) bar.update(step + 1, `nmse ${head.nmse.toFixed(4)} l0 ${head.l0.toFixed(1)} dead ${(100 * head.dead_fraction).toFixed(1)}% ${Math.round(head.tokens_per_s)} tok/s`);
        intervalStart = Date.now();
        intervalTokens = 0;
      }
      if ((step + 1) % checkpointEvery === 0 || last || stopped || (checkpointMs > 0 && Date.now() >= checkpointAt)) {
        checkpointAt = Date.now() + checkpointMs;
        for (const m of members) {
          m.model.config.step = m.step;
          m.model.config.tokens_seen = m.step * t0.batch;
          await m.model.save(m.dir, { withOptimizer: true });
        }
      }
      if (stopped) break;
    }
    await it.return?.(undefined);
    bar.stop();
    return members.map((m) => ({ dir: m.dir, name: m.name, final: m.last, stopped }));
  } finally {
    await ds.close();
  }
}
