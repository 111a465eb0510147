/** How eval edits chooses a label's latent: the best F1 of a rule "activation >= t", t fit on the selection. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Firings } from '../src/edit/evaluate.js';

test('a latent that fires weakly elsewhere but strongly on the label wins by its fitted threshold', () => {
  const firings = new Firings(3, 2);
  // 10 patches: 4 of label 0, 6 of label 1.
  const rows = Array.from({ length: 10 }, (_, i) => firings.addRow(i < 4 ? [1, 0] : [0, 1]));
  // Latent 0: 3 on each label-0 patch, 0.5 on every other one (firing F1 8/14 = 0.571; with t = 3: 1).
  for (const r of rows) firings.fire(0, r < 4 ? 3 : 0.5, r);
  // Latent 1: fires on 3 of the 4 label-0 patches only (firing F1 6/7 = 0.857, its best).
  for (const r of rows.slice(0, 3)) firings.fire(1, 1, r);
  // Latent 2: ties at one value on a label-0 and a label-1 patch: no threshold splits them (F1 2/6 = 0.333).
  firings.fire(2, 2, rows[0]);
  firings.fire(2, 2, rows[9]);
  assert.deepEqual(firings.best(0), { latent: 0, f1: 1 });
  // Label 1: latent 0 with t = 0.5 (fires on all 10: F1 12/16 = 0.75) beats latent 2 (F1 2/8).
  assert.deepEqual(firings.best(1), { latent: 0, f1: 0.75 });
  assert.ok(firings.fired(2) && firings.positives_L[1] === 6);
  assert.deepEqual(new Firings(2, 1).best(0), { latent: null, f1: 0 }, 'nothing fired');
});
