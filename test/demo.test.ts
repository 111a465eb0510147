/**
 * `vitsae demo` end to end on a small concept world with the shipped supervised model: every step of the
 * pipeline runs and leaves a browsable run directory with its evaluation, its concept check and edit tests on a
 * second world; `vitsae eval concepts --run` redoes the check into the run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runDemo } from '../src/demo.js';
import { readRun, writeRun } from '../src/analysis/run.js';
import { readConceptReport } from '../src/analysis/concepts.js';
import { openSae } from '../src/interop/index.js';
import { loadHead } from '../src/edit/head.js';
import { evalConceptsCommand } from '../src/cli/commands/eval-concepts.js';
import { runForJson } from './fixtures/helpers.js';

test('the demo builds a run with an SAE, its evaluation, the concept check and exemplars', async () => {
  const out = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-demo-'));
  try {
    const lines: string[] = [];
    const {
      runs: [run],
      comparison,
    } = await runDemo({ out, worldSize: 150, testSize: 60, tokens: 60_000, layer: '-2', only: ['concept-world-supervised'], seed: 0, showProgress: false, log: (l) => lines.push(l) });
    assert.equal(run.model, 'concept-world-supervised');
    assert.equal(comparison, null, 'one model: nothing to compare');
    // BatchTopK keeps 16 latents per token on average in training; at inference its learned threshold decides.
    assert.ok(run.metrics.nmse < 0.5 && run.metrics.l0 > 4 && run.metrics.l0 < 40, `nmse ${run.metrics.nmse}, l0 ${run.metrics.l0}`);
    const c = run.concepts!;
    assert.equal(c.concepts.length, 22);
    assert.equal(c.n_patches, 60 * 64, 'the concept check runs on the test world');
    assert.deepEqual([c.n_fit_patches, c.n_scored_patches], [48 * 64, 12 * 64], 'latent thresholds, probe and baselines: fit on 80% of the images, scored on the rest');
    // The model's patches carry colour (its per-patch head is trained on it), so a probe decodes it well.
    const colours = c.concepts.filter((s) => s.concept.startsWith('colour:'));
    assert.ok(colours.reduce((a, s) => a + s.probe_f1, 0) / colours.length > 0.7, 'colour is linearly decodable');
    const r = await readRun(run.dir);
    for (const p of [r.sae, r.shards, r.visuals]) assert.ok(existsSync(p), p);
    assert.ok(existsSync(path.join(run.dir, 'eval.json')));
    // Task heads for the edit demos, on the last block (recorded in the same pass), with the world's class names.
    assert.deepEqual(
      r.heads,
      ['classify', 'segment'].map((t) => path.join(run.dir, `head-${t}`)),
    );
    const [classify, segment] = await Promise.all(r.heads!.map(loadHead));
    assert.deepEqual([classify.info.task, classify.info.classes.length, classify.info.classes[0]], ['classify', 12, 'red-solid']);
    assert.deepEqual([segment.info.task, segment.info.classes], ['segment', ['background', 'circle', 'square', 'triangle', 'cross', 'star', 'heart']]);
    assert.equal(classify.info.features, '/vit/blocks.3/Add_1_output_0');
    assert.equal((await openSae(r.sae)).config.data?.layer, 2, 'the SAE is on block 2 of the two recorded');
    assert.ok(segment.info.metrics.accuracy > 0.5, `segmentation accuracy ${segment.info.metrics.accuracy}`);
    // The concept report is recorded in the run, with every latent's best concepts, for the browser.
    assert.equal(r.concepts, path.join(run.dir, 'concepts.json'));
    assert.deepEqual(await readConceptReport(r.concepts), c);
    assert.equal(c.latents.length, (await openSae(r.sae)).dSae);
    // Edit tests on the test world: segmentation on the shapes' own patches, classification with the rule check.
    const { segment: seg, classify: cls } = run.edits!;
    assert.deepEqual([seg.task, seg.scope, seg.n_select_images + seg.n_test_images], ['segment', 'target', 60]);
    assert.equal(cls.rule!.length, 19, 'every shape, colour, texture and size concept');
    assert.equal(cls.swap!.length, 10, 'six colour swaps and four texture swaps');
    assert.deepEqual(JSON.parse(await fsp.readFile(path.join(run.dir, 'edits.json'), 'utf8')), run.edits);
    const worlds = await Promise.all(['world', 'test-world'].map(async (w) => JSON.parse(await fsp.readFile(path.join(out, w, 'concepts.json'), 'utf8')) as { seed: number; n: number }));
    assert.deepEqual(
      worlds.map((w) => [w.seed, w.n]),
      [
        [1, 150],
        [2, 60],
      ],
      'two worlds, neither with the seed the models were trained on',
    );
    // The command, on a run without the report: the per-latent matches on the run's own shards, written and recorded.
    await fsp.rm(r.concepts);
    await writeRun(run.dir, { ...r, concepts: undefined });
    const [printed] = (await runForJson(evalConceptsCommand, ['--run', run.dir, '--concepts', path.join(out, 'world'), '--no-progress', '--json'])) as (typeof c)[];
    assert.equal(printed.n_patches, 150 * 64);
    assert.equal(printed.latents.length, c.latents.length);
    assert.deepEqual(await readConceptReport((await readRun(run.dir)).concepts!), printed);
    assert.ok(existsSync(path.join(r.visuals, 'index.json')), 'the browser index was written');
    assert.ok(
      lines.some((l) => l.includes('exemplars')),
      'progress is reported',
    );
  } finally {
    await fsp.rm(out, { recursive: true, force: true });
  }
});
