/** The TypeScript Adam (task heads, concept probes) against PyTorch's Adam (L2 in the gradient) and AdamW. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { Adam } from '../src/util/adam.js';

const STEPS = 6;
const w0 = [0.5, -1.25, 2, 0.01, -0.3];
/** The gradient at each step: a fixed function of the step and the weights, the same on both sides. */
const gradOf = (t: number, w: ArrayLike<number>) => Array.from(w, (x, i) => Math.sin(t + i) + 0.5 * x);

function ours(opts: { weightDecay?: number; l2?: number }): number[] {
  const w = Float64Array.from(w0),
    grad = new Float64Array(w.length),
    m = new Float64Array(w.length),
    v = new Float64Array(w.length);
  const adam = new Adam({ lr: 0.05 });
  for (let t = 0; t < STEPS; t++) {
    grad.set(gradOf(t, w));
    adam.step([{ w, grad, m, v, ...opts }]);
  }
  return [...w];
}

function torch(kind: 'Adam' | 'AdamW', decay: number): number[] {
  const py = `
import json, math, torch
torch.set_num_threads(1)
w = torch.tensor(${JSON.stringify(w0)}, dtype=torch.float64, requires_grad=True)
opt = torch.optim.${kind}([w], lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=${decay})
for t in range(${STEPS}):
    opt.zero_grad()
    w.grad = torch.tensor([math.sin(t + i) + 0.5 * x for i, x in enumerate(w.detach().tolist())], dtype=torch.float64)
    opt.step()
print(json.dumps(w.detach().tolist()))
`;
  return JSON.parse(execFileSync('/usr/bin/python3', ['-c', py], { encoding: 'utf8' })) as number[];
}

test('Adam with an L2 penalty and AdamW match PyTorch step for step (float64)', () => {
  for (const [got, want] of [
    [ours({ l2: 0.1 }), torch('Adam', 0.1)],
    [ours({ weightDecay: 0.1 }), torch('AdamW', 0.1)],
    [ours({}), torch('Adam', 0)],
  ]) {
    for (let i = 0; i < w0.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-12, `w[${i}]: ${got[i]} vs PyTorch ${want[i]}`);
    assert.ok(
      got.some((x, i) => Math.abs(x - w0[i]) > 0.1),
      'the weights moved',
    );
  }
});
