import { defineCommand } from '../command.js';
import { CLASSES, CONCEPTS, writeConceptWorld } from '../../data/concept-world.js';

export const dataConceptWorldCommand = defineCommand({
  name: 'data concept-world',
  summary: 'write the concept world: images of objects with known concepts, masks, per-patch labels and classes',
  usage: `
vitsae data concept-world --n 20000 --out DIR [--seed N]

Draws 64x64 images of 1-3 objects (shape, colour, texture, size) on varied backgrounds and writes them with
their shape masks (DIR/images, DIR/masks: the segmentation layout the recorder reads), image classes
(DIR/labels.csv), the objects (DIR/objects.jsonl), per-patch concept coverage (DIR/patch_concepts.u8) and
DIR/concepts.json describing it all (see src/data/README.md). The same seed always gives the same images.

Example: vitsae data concept-world --n 20000 --out data/world`,
  spec: {
    n: { kind: 'number', int: true, min: 1, default: 20000, doc: 'images to generate' },
    out: { kind: 'string', required: true, default: '', doc: 'output directory (created; must be empty or absent)' },
    seed: { kind: 'number', int: true, min: 0, default: 0, doc: 'random seed (image i depends only on seed and i)' },
  },
  async run(config) {
    const info = await writeConceptWorld(config.out, { n: config.n, seed: config.seed });
    process.stdout.write(`wrote ${info.n} images (${CLASSES.length} classes, ${CONCEPTS.length} concepts on an ${info.grid.join('x')} patch grid) to ${config.out}\n`);
  },
});
