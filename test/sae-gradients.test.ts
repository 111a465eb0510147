/**
 * The native core's gradients, in float64, against central finite differences of the loss it reports, for
 * every activation (and the AuxK term, whose residual target is held fixed as the papers detach it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../src/sae/native.js';
import { Rng } from '../src/util/random.js';

const D = 5,
  S = 12,
  B = 6,
  K = 3;
const NAMES = ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const;

function makeCore(activation: number, opts: { prefixes?: number[]; aux?: boolean; sparseRelu?: boolean } = {}) {
  const core = new (native().SaeF64)({
    d: D,
    s: S,
    activation,
    k: K,
    prefixes: opts.prefixes ?? [S],
    kAux: opts.aux ? 4 : 0,
    auxCoeff: opts.aux ? 0.5 : 0,
    deadWindow: opts.aux ? 1 : 1e12,
    thresholdMomentum: 0.9,
    sparseReluDensity: opts.sparseRelu ? 1 : 0,
  });
  const rng = new Rng(7, activation);
  const rand = (n: number, scale: number) => Float64Array.from({ length: n }, () => rng.normal() * scale);
  core.setTensor('W_enc', rand(S * D, 0.7));
  core.setTensor('b_enc', rand(S, 0.2));
  core.setTensor('W_dec', rand(S * D, 1));
  core.normalizeDecoder();
  core.setTensor('b_dec', rand(D, 0.3));
  return { core, x: rand(B * D, 1), target: rand(B * D, 1) };
}

function checkGradients(activation: number, l1: number, opts: { prefixes?: number[]; aux?: boolean; sparseRelu?: boolean } = {}) {
  const { core, x, target } = makeCore(activation, opts);
  const auxTarget = opts.aux ? target : undefined;
  if (opts.aux) core.forwardBackward(x, l1, auxTarget); // marks the latents that do not fire as dead
  const st = core.forwardBackward(x, l1, auxTarget);
  if (opts.aux) assert.ok(st.nDead > 0 && st.auxLoss > 0, 'the aux test needs dead latents');
  // Read every analytic gradient before any finite-difference call overwrites the gradient buffers.
  const grads = NAMES.map((name) => core.getTensor(`grad.${name}`));
  const eps = 1e-6;
  let worst = 0,
    scale = 0;
  for (const [n, name] of NAMES.entries()) {
    const grad = grads[n];
    const p = core.getTensor(name);
    for (let i = 0; i < p.length; i++) {
      const orig = p[i];
      p[i] = orig + eps;
      core.setTensor(name, p);
      const up = core.forwardBackward(x, l1, auxTarget).loss;
      p[i] = orig - eps;
      core.setTensor(name, p);
      const down = core.forwardBackward(x, l1, auxTarget).loss;
      p[i] = orig;
      core.setTensor(name, p);
      const fd = (up - down) / (2 * eps);
      worst = Math.max(worst, Math.abs(fd - grad[i]));
      scale = Math.max(scale, Math.abs(grad[i]));
    }
  }
  assert.ok(scale > 1e-3, 'gradients are not trivially zero');
  assert.ok(worst < 1e-7 * (1 + scale), `max |finite difference - analytic| = ${worst} (gradient scale ${scale})`);
  return st;
}

test('relu + L1 gradients match finite differences (dense GEMM path)', () => {
  const st = checkGradients(0, 0.05);
  assert.ok(st.l1Loss > 0);
});

test('relu + L1 gradients match finite differences (sparse path)', () => {
  const st = checkGradients(0, 0.05, { sparseRelu: true });
  assert.ok(st.l1Loss > 0);
});

test('topk gradients match finite differences', () => {
  checkGradients(1, 0);
});

test('batchtopk gradients match finite differences', () => {
  checkGradients(2, 0);
});

test('matryoshka gradients (loss summed over nested prefixes) match finite differences', () => {
  const st = checkGradients(3, 0, { prefixes: [2, 5, S] });
  assert.ok(st.prefixMse > st.mse, 'smaller prefixes reconstruct worse, so the summed loss exceeds the full one');
});

test('topk AuxK gradients (dead latents, fixed residual target) match finite differences', () => {
  checkGradients(1, 0, { aux: true });
});

test('batchtopk AuxK gradients match finite differences', () => {
  checkGradients(2, 0, { aux: true });
});
