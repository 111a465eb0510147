import { defineCommand } from '../command.js';
import { editEvalMarkdown, editEvalSpec, evaluateEdits } from '../../edit/evaluate.js';
import { engineSpec, openEngine } from './edit.js';

export const evalEditsCommand = defineCommand({
  name: 'eval edits',
  summary: 'do SAE latents causally drive a frozen task head? Suppression edits against random-latent and random-direction baselines',
  usage: `
vitsae eval edits --model M.onnx --sae DIR --head DIR --data DATASET [--concepts WORLD] [--json]

Samples --images images of DATASET and splits them. On the selection part each class gets the SAE latent with the
best F1 against its patches (of the rule "activation >= t", t fit there; segmentation: the patches of that class;
classification: the patches of images of that class) and its maximum activation. On the test part that latent is set to --factor (default -2) x its
maximum: on the class's own patches (segmentation, the paper's protocol; --scope all: every patch) or on every
patch (classification); target_change_rate is the share of the class's patches (segmentation) or images
(classification) whose predicted class changes, other_change_rate the same for the other classes. Baselines add,
per patch, a change of the same norm along a random latent's decoder row or a random direction. With --concepts
(the concept world the images come from, classification heads) each concept's latent (best F1 against the
patches showing it) is suppressed too, on the patches showing it: rule_consistent_rate is how often the class
becomes the one the world's rule gives without that concept, rule_random_latent_consistent_rate the same for an
edit of the same norm along a random latent; and on the salient object's patches its colour's (texture's) latent
is swapped for another's (the first set to 0, the other to its maximum): swap_consistent_rate is how often the
class becomes that of the object so changed. This tests that a concept's latent means the concept to the model.

Example: vitsae eval edits --model models/concept-world-supervised.onnx --sae runs/world/sae \\
           --head runs/world/head --data data/world/labels.csv --concepts data/world`,
  spec: {
    ...engineSpec,
    ...editEvalSpec,
    json: { kind: 'boolean', default: false, doc: 'print the report as JSON' },
  },
  async run(c) {
    const { engine } = await openEngine(c);
    try {
      const report = await evaluateEdits(engine, { ...c, concepts: c.concepts || undefined });
      process.stdout.write(c.json ? JSON.stringify(report) + '\n' : editEvalMarkdown(report));
    } finally {
      await engine.close();
    }
  },
});
