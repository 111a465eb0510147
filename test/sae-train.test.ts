/**
 * Training end to end on synthetic shards with known atoms: recovery of the ground truth, exact sparsity of each
 * activation, unit decoder rows, byte-identical checkpoints and resumes, sweeps, and clear errors on bad input.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeSyntheticShards } from '../src/data/synthetic.js';
import { defaultsOf } from '../src/util/config.js';
import { saeSpec, trainSpec, type SaeConfig, type TrainConfig } from '../src/sae/config.js';
import { train } from '../src/sae/train.js';
import { Sae, initialDraws, transpose } from '../src/sae/model.js';
import { evaluateSae } from '../src/sae/evaluate.js';
import { atomRecovery } from '../src/analysis/atoms.js';
import { ShardDataset, OrderedTokenLoader } from '../src/shards/index.js';

const D = 32,
  N_ATOMS = 96;
let tmp: string;
let shards: string;
let atoms_AD: Float32Array;

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-train-'));
  shards = path.join(tmp, 'acts');
  const truth = await writeSyntheticShards(shards, { nExamples: 1500, tokensPerExample: 32, d: D, nAtoms: N_ATOMS, atomsPerToken: 3, noise: 0.01, seed: 3, clsToken: true });
  atoms_AD = truth.atoms_AD;
});

after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

function configs(sae: Partial<SaeConfig>, t: Partial<TrainConfig>): { sae: SaeConfig; train: TrainConfig } {
  return {
    sae: { ...defaultsOf(saeSpec), expansion: 4, k: 3, ...sae },
    train: { ...defaultsOf(trainSpec), batch: 512, tokens: 600_000, lr: 2e-3, lrWarmup: 50, deadWindow: 50_000, scaleTokens: 20_000, ...t },
  };
}

async function run(out: string, sae: Partial<SaeConfig>, t: Partial<TrainConfig> = {}, extra: { shouldStop?: () => boolean; resume?: boolean } = {}) {
  return train({ shards, out, selection: { layer: -1, tokens: 'patches' }, members: [{ name: '', ...configs(sae, t) }], showProgress: false, checkpointEvery: 200, windowTokens: 16_384, ...extra });
}

for (const activation of ['topk', 'batchtopk', 'matryoshka', 'relu'] as const) {
  test(`${activation} SAE recovers the known atoms of synthetic data`, async () => {
    const out = path.join(tmp, `sae-${activation}`);
    const t = activation === 'relu' ? { l1: 2, l1Warmup: 100 } : {};
    const [res] = await run(out, { activation }, t);
    const sae = await Sae.load(out);
    const frac = atomRecovery(sae.core.getTensor('W_dec'), atoms_AD, D);
    // Measured: topk 0.94, batchtopk 0.79, matryoshka 0.50 (its small prefixes must learn mixtures), relu 1.0;
    // random directions match none.
    const floor = { topk: 0.85, batchtopk: 0.7, matryoshka: 0.4, relu: 0.9 }[activation];
    assert.ok(frac >= floor, `${activation}: only ${(frac * 100).toFixed(0)}% of atoms have a decoder row with cosine > 0.9`);
    // Measured nmse: topk 0.09, batchtopk 0.15, matryoshka 0.22, relu 0.20 (a constant reconstruction scores 1).
    const ceiling = { topk: 0.15, batchtopk: 0.2, matryoshka: 0.3, relu: 0.3 }[activation];
    assert.ok(res.final!.nmse < ceiling, `nmse ${res.final!.nmse}`);
    // Decoder rows stay unit norm through training.
    const W = sae.core.getTensor('W_dec');
    for (let s = 0; s < sae.dSae; s++) {
      let n = 0;
      for (let d = 0; d < D; d++) n += W[s * D + d] ** 2;
      assert.ok(Math.abs(Math.sqrt(n) - 1) < 1e-5, `row ${s} has norm ${Math.sqrt(n)}`);
    }
    // The evaluation pass agrees with the training log on the same data.
    const m = await evaluateSae(sae, shards, { selection: { layer: -1, tokens: 'patches' }, batch: 4096, maxTokens: 50_000, denseThreshold: 0.1, showProgress: false });
    assert.ok(Math.abs(m.nmse - res.final!.nmse) < 0.05, `eval nmse ${m.nmse} vs training ${res.final!.nmse}`);
    if (activation === 'topk') assert.equal(m.l0, 3);
    if (activation === 'relu') assert.ok(m.l0 > 1 && m.l0 < 20, `relu l0 ${m.l0}`);
  });
}

test('a short TopK run with the default schedule recovers the atoms (warmup and dead window scale with the run)', async () => {
  const out = path.join(tmp, 'sae-defaults');
  // Every schedule setting at its default; the learning rate is this problem's (as in the tests above).
  // fp32: at d 32 a run's recovery moves by two atoms from one trajectory to another (bf16's choices of latents
  // start another one), so the floor below is fp32's; bf16 against fp32 is tested at d 64 in sae-bf16.test.ts.
  const t = { ...defaultsOf(trainSpec), batch: 512, tokens: 1_024_000, lr: 2e-3, compute: 'fp32' as const };
  await train({ shards, out, selection: { layer: -1, tokens: 'patches' }, members: [{ name: '', sae: configs({ activation: 'topk' }, {}).sae, train: t }], showProgress: false });
  const sae = await Sae.load(out);
  // 2,000 steps: a warmup of 100 and a latent dead after 102,400 silent tokens.
  assert.equal(sae.config.train!.lrWarmup, 100);
  assert.equal(sae.config.train!.deadWindow, 102_400);
  // Measured 0.98; the former fixed defaults (500 warmup steps, a 10M-token window) gave 0.95 here, and 0.86
  // against 0.94 on a run half as long.
  const frac = atomRecovery(sae.core.getTensor('W_dec'), atoms_AD, D);
  assert.ok(frac >= 0.96, `only ${(frac * 100).toFixed(1)}% of atoms have a decoder row with cosine > 0.9`);
});

test('topk keeps exactly k nonzeros per token; batchtopk keeps exactly k x batch per training batch', async () => {
  const ds = await ShardDataset.open(shards);
  const batch = (await new OrderedTokenLoader(ds, { layer: -1, tokens: 'patches' }, 256).batches().next()).value!.acts_BD;
  await ds.close();
  for (const k of [1, 5, 17]) {
    const topk = Sae.create(D, { ...configs({ activation: 'topk', k }, {}).sae }, { mean: new Float32Array(D), inputScale: 1, seed: 1 });
    const acts = await topk.encode(batch);
    for (let b = 0; b < 256; b++) {
      let nz = 0;
      for (let e = acts.rowptr[b]; e < acts.rowptr[b + 1]; e++) nz += acts.val[e] > 0 ? 1 : 0;
      assert.equal(nz, k, `token ${b}`);
    }
    const btk = Sae.create(D, { ...configs({ activation: 'batchtopk', k }, {}).sae }, { mean: new Float32Array(D), inputScale: 1, seed: 1 });
    const st = btk.core.forwardBackward(batch, 0);
    assert.equal(st.l0 * 256, k * 256);
  }
});

test('transpose (in blocks) matches the definition on shapes that are not multiples of the block', () => {
  for (const [rows, cols] of [
    [70, 130],
    [1, 65],
    [129, 1],
  ]) {
    const a = Float32Array.from({ length: rows * cols }, (_, i) => i);
    const t = transpose(a, rows, cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) assert.equal(t[c * rows + r], a[r * cols + c], `[${r}, ${c}] of ${rows} x ${cols}`);
  }
});

test('the initial draws made on a worker thread are the ones create makes itself, and depend on the seed', async () => {
  const sae = { ...defaultsOf(saeSpec), expansion: 4 };
  const init = { mean: new Float32Array(D), inputScale: 1, seed: 5 };
  const own = Sae.create(D, sae, init).core.getTensor('W_dec');
  assert.deepEqual(Sae.create(D, sae, { ...init, draws: await initialDraws(5, D, 4 * D) }).core.getTensor('W_dec'), own);
  assert.notDeepEqual(Sae.create(D, sae, { ...init, draws: await initialDraws(6, D, 4 * D) }).core.getTensor('W_dec'), own);
});

test('checkpoints round-trip byte for byte, and a resumed run ends identical to an uninterrupted one', async () => {
  const t = { tokens: 200_000 };
  const whole = path.join(tmp, 'whole');
  await run(whole, { activation: 'topk' }, t);
  const part = path.join(tmp, 'part');
  let steps = 0;
  const [stopped] = await run(part, { activation: 'topk' }, t, { shouldStop: () => ++steps === 150 });
  assert.equal(stopped.stopped, true);
  const mid = JSON.parse(await fsp.readFile(path.join(part, 'config.json'), 'utf8'));
  assert.equal(mid.step, 150);
  await run(part, { activation: 'topk' }, t, { resume: true });
  for (const f of ['sae.safetensors', 'optimizer.safetensors']) {
    assert.ok((await fsp.readFile(path.join(whole, f))).equals(await fsp.readFile(path.join(part, f))), `${f} differs after resume`);
  }
  // load + save reproduces the weight file exactly
  const copy = path.join(tmp, 'copy');
  const sae = await Sae.load(whole);
  await sae.save(copy);
  assert.ok((await fsp.readFile(path.join(whole, 'sae.safetensors'))).equals(await fsp.readFile(path.join(copy, 'sae.safetensors'))));
  // config.json spells every key in snake_case; one written with the old camelCase keys still loads the same.
  const written = await fsp.readFile(path.join(whole, 'config.json'), 'utf8');
  assert.deepEqual(written.match(/"[a-z]+[A-Z]\w*":/g), null);
  assert.ok(JSON.parse(written).train.lr_warmup !== undefined && JSON.parse(written).sae.d_sae !== undefined);
  const old = path.join(tmp, 'old-keys');
  await fsp.cp(whole, old, { recursive: true });
  const camel = (o: object) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()), v]));
  const cfg = JSON.parse(written);
  await fsp.writeFile(path.join(old, 'config.json'), JSON.stringify({ ...cfg, sae: camel(cfg.sae), train: camel(cfg.train) }));
  assert.deepEqual((await Sae.load(old)).config, sae.config);
});

test('checkpoints also come by time, so a run with a long step interval can resume before its end', async () => {
  const out = path.join(tmp, 'by-time');
  const seen: number[] = [];
  const onLog = (_m: string, row: { step: number }) => {
    if (row.step >= 200 && !seen.length) seen.push(JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')).step);
  };
  const { sae, train: t } = configs({ activation: 'topk' }, { tokens: 200_000 });
  await train({
    shards,
    out,
    selection: { layer: -1, tokens: 'patches' },
    members: [{ name: '', sae, train: t }],
    showProgress: false,
    checkpointEvery: 1_000_000,
    checkpointMinutes: 1e-4,
    logEvery: 10,
    onLog,
  });
  assert.ok(seen[0] > 0 && seen[0] <= 200, `the checkpoint at step ${seen[0]} was written by time`);
});

test('a sweep trains several SAEs on the same batches in one pass', async () => {
  const out = path.join(tmp, 'sweep');
  const base = configs({ activation: 'topk' }, { tokens: 100_000 });
  const members = [2, 4].map((k) => ({ name: `k=${k}`, sae: { ...base.sae, k }, train: base.train }));
  const res = await train({ shards, out, selection: { layer: -1, tokens: 'patches' }, members, showProgress: false, windowTokens: 16_384 });
  assert.deepEqual(
    res.map((r) => r.final!.l0),
    [2, 4],
  );
  assert.ok(res[1].final!.nmse < res[0].final!.nmse, 'more latents per token reconstruct better');
  const index = JSON.parse(await fsp.readFile(path.join(out, 'sweep.json'), 'utf8'));
  assert.deepEqual(
    index.members.map((m: { name: string }) => m.name),
    ['k=2', 'k=4'],
  );
  await assert.rejects(
    train({
      shards,
      out: path.join(tmp, 'bad-sweep'),
      selection: { layer: -1, tokens: 'patches' },
      members: [members[0], { ...members[1], train: { ...base.train, batch: 256 } }],
      showProgress: false,
    }),
    /share their batches, so batch must be the same/,
  );
});

test('bad input gets a clear error and never damages an existing checkpoint', async () => {
  // NaN in a shard file: refused, naming the file, example and token.
  const bad = path.join(tmp, 'nan-acts');
  await fsp.cp(shards, bad, { recursive: true });
  const f = path.join(bad, 'acts000000.bin');
  const bytes = await fsp.readFile(f);
  for (let i = 0; i < bytes.length; i += 4 * 97) bytes.writeFloatLE(NaN, i);
  await fsp.writeFile(f, bytes);
  await assert.rejects(
    train({
      shards: bad,
      out: path.join(tmp, 'nan-sae'),
      selection: { layer: -1, tokens: 'patches' },
      members: [{ name: '', ...configs({}, { tokens: 20_000, scaleTokens: 1000 }) }],
      showProgress: false,
    }),
    /nan-acts\/acts000000\.bin: example \d+.* has a non-finite value \(NaN\) at layer -?\d+, token \d+/,
  );
  // Training into a directory that holds a checkpoint, without --resume, is refused.
  const out = path.join(tmp, 'sae-topk');
  const before = await fsp.readFile(path.join(out, 'sae.safetensors'));
  await assert.rejects(run(out, { activation: 'topk' }), /already holds a checkpoint/);
  assert.ok(before.equals(await fsp.readFile(path.join(out, 'sae.safetensors'))));
  // A truncated checkpoint names its file.
  const trunc = path.join(tmp, 'trunc');
  await fsp.cp(out, trunc, { recursive: true });
  await fsp.truncate(path.join(trunc, 'sae.safetensors'), before.length - 100);
  await assert.rejects(Sae.load(trunc), /sae\.safetensors.*truncated/);
});
