import { defineCommand } from '../command.js';
import { EDIT_SCOPES, editEvalMarkdown, evaluateEdits } from '../../edit/evaluate.js';
import { engineSpec, openEngine } from './edit.js';

export const evalEditsCommand = defineCommand({
  name: 'eval edits',
  summary: "do SAE latents causally drive a frozen task head? Suppression edits against random-latent and random-direction baselines",
  usage: `
vitsae eval edits --model M.onnx --sae DIR --probe DIR --data DATASET [--concepts WORLD] [--json]

Samples --images images of DATASET and splits them. On the selection part each class gets the SAE latent with the
best F1 against its patches (segmentation: the patches of that class; classification: the patches of images of
that class) and its maximum activation. On the test part that latent is set to --factor (default -2) x its
maximum: on the class's own patches (segmentation, the paper's protocol; --scope all: every patch) or on every
patch (classification); target_change_rate is the share of the class's patches (segmentation) or images
(classification) whose predicted class changes, other_change_rate the same for the other classes. Baselines add,
per patch, a change of the same norm along a random latent's decoder row or a random direction. With --concepts
(the concept world the images come from, classification heads) each concept's latent (best F1 against the
patches showing it) is suppressed too, on the patches showing it: rule_consistent_rate is how often the class
becomes the one the world's rule gives without that concept, rule_random_latent_consistent_rate the same for an
edit of the same norm along a random latent. This tests that a concept's latent means the concept to the model.

Example: vitsae eval edits --model models/concept-world-supervised.onnx --sae runs/world/sae \\
           --probe runs/world/probe --data data/world/labels.csv --concepts data/world`,
  spec: {
    ...engineSpec,
    data: { kind: 'string', required: true, default: '', doc: 'the labelled dataset the edits are measured on' },
    concepts: { kind: 'string', default: '', doc: 'the concept-world directory of the images, for the rule check' },
    images: { kind: 'number', int: true, min: 2, default: 1000, doc: 'images sampled from the dataset' },
    selectFraction: { kind: 'number', min: 0.01, max: 0.99, default: 0.5, doc: 'share of them that choose the latents and their maxima' },
    factor: { kind: 'number', default: -2, doc: 'the edit sets the latent to factor x its maximum' },
    scope: { kind: 'enum', choices: EDIT_SCOPES, default: 'target', doc: "patches a segmentation or concept edit touches: the target's own, or all" },
    seed: { kind: 'number', int: true, min: 0, default: 0, doc: 'seed of the image sample and the baselines' },
    progress: { kind: 'boolean', default: true, doc: 'show a progress bar on stderr' },
    json: { kind: 'boolean', default: false, doc: 'print the report as JSON' },
  },
  async run(c) {
    const { engine } = await openEngine(c);
    try {
      const report = await evaluateEdits(engine, { data: c.data, concepts: c.concepts || undefined, images: c.images, selectFraction: c.selectFraction, factor: c.factor, scope: c.scope, seed: c.seed, progress: c.progress });
      process.stdout.write(c.json ? JSON.stringify(report) + '\n' : editEvalMarkdown(report));
    } finally {
      await engine.close();
    }
  },
});
