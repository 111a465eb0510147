/**
 * Whole training steps of the float32 core against PyTorch autograd in float64, step for step: TopK with AuxK on
 * dead latents, the decoder-gradient projection, global-norm clipping, Adam and the decoder-row normalisation.
 * Covers what the finite-difference test cannot: the update's use of the backward's per-row statistics.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { native } from '../src/sae/native.js';
import { Rng } from '../src/util/random.js';

const PYTHON = '/usr/bin/python3';
const noTorch = spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status !== 0;

// d_sae large enough for the grouped top-k search; few tokens, so many latents die after one batch and AuxK runs.
const D = 24,
  S = 300,
  B = 40,
  K = 4,
  K_AUX = 8,
  AUX = 1 / 32,
  STEPS = 3;
// eps 1e-3: Adam's first step is lr * sign(g) for |g| >> eps, which float32 rounding could flip for tiny g.
const HYPER = { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-3, clip: 0.5 };
const NAMES = ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const;

const REFERENCE = `
import json, sys, torch
torch.set_num_threads(1)
a = json.load(sys.stdin)
D, S, B, K, KA, AUX, h = a['D'], a['S'], a['B'], a['K'], a['K_AUX'], a['AUX'], a['hyper']
t = lambda v, *shape: torch.tensor(v, dtype=torch.float64).reshape(*shape)
p = {'W_enc': t(a['W_enc'], S, D), 'b_enc': t(a['b_enc'], S), 'W_dec': t(a['W_dec'], S, D), 'b_dec': t(a['b_dec'], D)}
for v in p.values(): v.requires_grad_(True)
opt = torch.optim.Adam(p.values(), lr=h['lr'], betas=(h['beta1'], h['beta2']), eps=h['eps'])
since = torch.zeros(S, dtype=torch.float64)
stats = []
for x in a['xs']:
    x = t(x, B, D)
    pre = (x - p['b_dec']) @ p['W_enc'].T + p['b_enc']
    v, i = torch.topk(pre, K, dim=1)
    f = torch.zeros_like(pre).scatter(1, i, torch.relu(v))
    xhat = f @ p['W_dec'] + p['b_dec']
    loss = ((xhat - x) ** 2).sum(1).mean()
    dead = since >= B
    aux = torch.zeros((), dtype=torch.float64)
    if dead.any():
        e = (x - xhat).detach()
        pd = pre[:, dead]
        va, ia = torch.topk(pd, min(KA, int(dead.sum())), dim=1)
        fa = torch.zeros_like(pd).scatter(1, ia, torch.relu(va))
        aux = AUX * ((fa @ p['W_dec'][dead] - e) ** 2).sum() / ((e - e.mean(0)) ** 2).sum().clamp(min=1e-12)
    since = torch.where((f > 0).any(0), torch.zeros_like(since), since + B)
    opt.zero_grad()
    (loss + aux).backward()
    with torch.no_grad():
        g, w = p['W_dec'].grad, p['W_dec']
        g -= (g * w).sum(1, keepdim=True) * w
        norm = torch.sqrt(sum((q.grad ** 2).sum() for q in p.values()))
        if norm > h['clip']:
            for q in p.values(): q.grad *= h['clip'] / norm
    opt.step()
    with torch.no_grad():
        p['W_dec'] /= p['W_dec'].norm(dim=1, keepdim=True)
    stats.append({'loss': float(loss + aux), 'aux': float(aux), 'norm': float(norm)})
print(json.dumps({'stats': stats, **{k: v.detach().flatten().tolist() for k, v in p.items()}}))
`;

test('training steps match PyTorch step for step (TopK + AuxK, projection, clipping, Adam, normalisation)', { skip: noTorch && `${PYTHON} has no torch (install Debian python3-torch)` }, async () => {
  const rng = new Rng(21, 0);
  const normal = (n: number, s: number) => Float32Array.from({ length: n }, () => rng.normal() * s);
  const core = new (native().SaeF32)({ d: D, s: S, activation: 1, k: K, prefixes: [S], kAux: K_AUX, auxCoeff: AUX, deadWindow: B, thresholdMomentum: 0.99 });
  core.setTensor('W_dec', normal(S * D, 1));
  core.normalizeDecoder();
  const init = {
    W_enc: core.getTensor('W_dec').map((w) => w + rng.normal() * 0.1),
    b_enc: normal(S, 0.1),
    W_dec: core.getTensor('W_dec'),
    b_dec: normal(D, 0.2),
  };
  for (const name of NAMES) core.setTensor(name, init[name]);
  const xs = Array.from({ length: STEPS }, () => normal(B * D, 1));
  const stats = [];
  for (const x of xs) stats.push(await core.trainStep(x, 0, HYPER));
  const input = { D, S, B, K, K_AUX, AUX, hyper: HYPER, xs: xs.map((x) => Array.from(x)), ...Object.fromEntries(NAMES.map((n) => [n, Array.from(init[n])])) };
  const r = spawnSync(PYTHON, ['-c', REFERENCE], { input: JSON.stringify(input), encoding: 'utf8', maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, r.stderr);
  const want = JSON.parse(r.stdout) as { stats: { loss: number; aux: number; norm: number }[] } & Record<(typeof NAMES)[number], number[]>;
  for (let i = 0; i < STEPS; i++) {
    const close = (a: number, b: number) => Math.abs(a - b) <= 1e-5 * Math.abs(b);
    assert.ok(close(stats[i].loss, want.stats[i].loss), `step ${i} loss ${stats[i].loss} vs PyTorch ${want.stats[i].loss}`);
    assert.ok(close(stats[i].auxLoss, want.stats[i].aux), `step ${i} aux loss ${stats[i].auxLoss} vs PyTorch ${want.stats[i].aux}`);
    assert.ok(close(stats[i].gradNorm, want.stats[i].norm), `step ${i} gradient norm ${stats[i].gradNorm} vs PyTorch ${want.stats[i].norm}`);
  }
  assert.ok(want.stats[0].aux === 0 && want.stats[1].aux > 0, 'AuxK runs from the second step (latents idle in the first batch are dead)');
  assert.ok(
    want.stats.some((s) => s.norm > HYPER.clip),
    'clipping is active in some step',
  );
  for (const name of NAMES) {
    const got = core.getTensor(name),
      ref = want[name];
    let worst = 0,
      moved = 0;
    for (let i = 0; i < got.length; i++) {
      worst = Math.max(worst, Math.abs(got[i] - ref[i]));
      moved = Math.max(moved, Math.abs(ref[i] - init[name][i]));
    }
    assert.ok(worst < 2e-6, `${name}: max |vitsae - PyTorch| = ${worst}`);
    assert.ok(moved > 100 * worst, `${name} moved by ${moved}, far more than the difference`);
  }
});

test("trainStep's scale argument trains exactly as scaling the batch in JS first", async () => {
  const rng = new Rng(22, 0);
  const normal = (n: number, s: number) => Float32Array.from({ length: n }, () => rng.normal() * s);
  const W = normal(S * D, 1),
    x = normal(B * D, 3);
  const scale = 0.37;
  const cores = [0, 1].map(() => {
    const c = new (native().SaeF32)({ d: D, s: S, activation: 1, k: K, prefixes: [S], kAux: 0, auxCoeff: 0, deadWindow: 1e12, thresholdMomentum: 0.99 });
    c.setTensor('W_dec', W);
    c.setTensor('W_enc', W);
    return c;
  });
  const a = await cores[0].trainStep(x, 0, HYPER, scale);
  const b = await cores[1].trainStep(
    x.map((v) => v * scale),
    0,
    HYPER,
  );
  assert.equal(a.loss, b.loss);
  for (const name of NAMES) assert.deepEqual(cores[0].getTensor(name), cores[1].getTensor(name), name);
});
