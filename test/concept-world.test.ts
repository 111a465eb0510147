import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { runCommand } from '../src/cli/command.js';
import { dataConceptWorldCommand } from '../src/cli/commands/data-concept-world.js';
import {
  CLASSES,
  COLOURS,
  type CONCEPT_GROUPS,
  CONCEPTS,
  type ConceptWorldInfo,
  classAfterSwap,
  classOf,
  COVERAGE_THRESHOLD,
  generateImage,
  GRID,
  IMAGE_SIZE,
  PATCH_SIZE,
  PATCHES,
  SHAPES,
  withoutConcept,
  writeConceptWorld,
} from '../src/data/concept-world.js';
import { openDataset } from '../src/data/images.js';
import { patchMajority } from '../src/data/preprocess.js';

const C = CONCEPTS.length;
const S = IMAGE_SIZE;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'vitsae-world-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Concept indices of a family, e.g. the 6 shape concepts. */
const family = (g: keyof typeof CONCEPT_GROUPS) => CONCEPTS.flatMap((c, k) => (c.startsWith(g + ':') ? [k] : []));

describe('concept world images', () => {
  const images = Array.from({ length: 300 }, (_, i) => generateImage(3, i));

  it('is a pure function of (seed, index)', () => {
    for (const i of [0, 7, 299]) assert.deepEqual(generateImage(3, i), images[i]);
    assert.notDeepEqual(generateImage(4, 0).rgb_HWC, images[0].rgb_HWC);
  });

  it('draws 1-3 objects of distinct shapes, each mostly visible, and shows every concept', () => {
    const seen = new Set<string>();
    for (const img of images) {
      assert.ok(img.objects.length >= 1 && img.objects.length <= 3);
      assert.equal(new Set(img.objects.map((o) => o.shape)).size, img.objects.length);
      for (const o of img.objects) {
        for (const c of [`shape:${o.shape}`, `colour:${o.colour}`, `texture:${o.texture}`, `size:${o.size}`]) seen.add(c);
        // 60% of the area is visible; the smallest shape (a star of half-extent 8) has ~100 pixels.
        assert.ok(o.pixels >= 55, `object ${JSON.stringify(o)} has ${o.pixels} visible pixels`);
      }
      seen.add(`background:${img.background}`);
    }
    assert.deepEqual([...seen].sort(), [...CONCEPTS].sort());
  });

  it('has masks that agree with the objects', () => {
    for (const img of images) {
      const counts = new Array(SHAPES.length + 1).fill(0);
      for (const v of img.mask_HW) counts[v]++;
      const expected = new Array(SHAPES.length + 1).fill(0);
      for (const o of img.objects) expected[1 + SHAPES.indexOf(o.shape)] = o.pixels;
      expected[0] = S * S - img.objects.reduce((a, o) => a + o.pixels, 0);
      assert.deepEqual(counts, expected);
      // The mask value at an object's centre is that object's shape or one drawn over it.
      for (const [k, o] of img.objects.entries()) {
        const v = img.mask_HW[Math.min(S - 1, Math.floor(o.y)) * S + Math.min(S - 1, Math.floor(o.x))];
        const later = img.objects.slice(k).map((q) => 1 + SHAPES.indexOf(q.shape));
        assert.ok(later.includes(v), `centre of ${o.shape} shows mask ${v}`);
      }
    }
  });

  it('has per-patch concept coverage that agrees with the mask', () => {
    const shapes = family('shape');
    const backgrounds = family('background');
    for (const img of images) {
      const majority = patchMajority(img.mask_HW, [S, S], [GRID, GRID]);
      for (let p = 0; p < PATCHES; p++) {
        const row = img.coverage_PC.subarray(p * C, (p + 1) * C);
        const hist = new Array(SHAPES.length + 1).fill(0);
        const [r, c] = [Math.floor(p / GRID), p % GRID];
        for (let y = r * PATCH_SIZE; y < (r + 1) * PATCH_SIZE; y++) for (let x = c * PATCH_SIZE; x < (c + 1) * PATCH_SIZE; x++) hist[img.mask_HW[y * S + x]]++;
        assert.deepEqual(
          shapes.map((k) => row[k]),
          hist.slice(1),
        );
        assert.equal(
          backgrounds.reduce((a, k) => a + row[k], 0),
          hist[0],
        );
        assert.equal(row[CONCEPTS.indexOf(`background:${img.background}`)], hist[0]);
        // Every object pixel counts once in each object family.
        const objectPixels = 64 - hist[0];
        for (const g of ['colour', 'texture', 'size'] as const)
          assert.equal(
            family(g).reduce((a, k) => a + row[k], 0),
            objectPixels,
          );
        const top = hist.indexOf(Math.max(...hist));
        assert.equal(majority[p], top);
      }
    }
  });

  it('labels each image with the class rule', () => {
    const classes = new Set<number>();
    for (const img of images) {
      assert.equal(img.label, classOf(img.objects));
      classes.add(img.label);
    }
    assert.equal(classes.size, CLASSES.length, 'every class occurs in 300 images');
  });
});

describe('class rule', () => {
  const o = (shape: string, colour: string, texture: string, size = 'small') => ({ shape, colour, texture, size }) as Parameters<typeof classOf>[0][number] & { size: 'small' };
  const cls = (name: string) => CLASSES.indexOf(name);

  it('reads the colour and texture of the object whose shape comes first in the salience order', () => {
    assert.equal(classOf([o('circle', 'red', 'solid'), o('star', 'blue', 'dots')]), cls('blue-patterned'));
    assert.equal(classOf([o('square', 'green', 'solid'), o('triangle', 'cyan', 'solid'), o('circle', 'red', 'stripes')]), cls('cyan-solid'));
    assert.equal(classOf([o('heart', 'magenta', 'checker'), o('cross', 'yellow', 'solid')]), cls('magenta-patterned'));
    assert.equal(classOf([]), null);
    assert.equal(CLASSES.length, 2 * COLOURS.length);
  });

  it('predicts the class without a concept', () => {
    const objects = [o('circle', 'red', 'solid', 'large'), o('star', 'blue', 'dots'), o('square', 'blue', 'solid')];
    const without = (c: string) => classOf(withoutConcept(objects, c));
    assert.equal(classOf(objects), cls('blue-patterned'));
    assert.equal(without('shape:star'), cls('blue-solid'));
    assert.equal(without('colour:blue'), cls('red-solid'));
    assert.equal(without('texture:dots'), cls('blue-solid'));
    assert.equal(without('size:small'), cls('red-solid'));
    assert.equal(without('shape:heart'), classOf(objects));
    assert.equal(without('background:noise'), classOf(objects));
    assert.equal(classOf(withoutConcept(withoutConcept(objects, 'colour:blue'), 'colour:red')), null);
    assert.throws(() => withoutConcept(objects, 'colour:purple'), /unknown concept/);
  });

  it("predicts the class after the salient object's colour or texture is swapped", () => {
    const objects = [o('circle', 'red', 'solid', 'large'), o('star', 'blue', 'dots'), o('square', 'blue', 'solid')];
    assert.equal(classAfterSwap(objects, 'colour:blue', 'colour:yellow'), cls('yellow-patterned'), 'only the star (salient) changes');
    assert.equal(classAfterSwap(objects, 'texture:dots', 'texture:solid'), cls('blue-solid'));
    assert.equal(classAfterSwap(objects, 'texture:dots', 'texture:stripes'), cls('blue-patterned'), 'a pattern for a pattern keeps the class');
    assert.equal(classAfterSwap(objects, 'colour:red', 'colour:green'), null, 'the circle is not salient');
    assert.equal(classAfterSwap([], 'colour:red', 'colour:green'), null);
    assert.throws(() => classAfterSwap(objects, 'colour:blue', 'texture:solid'), /same family/);
    assert.deepEqual(objects[1], o('star', 'blue', 'dots'), 'the objects are not changed');
  });
});

describe('written layout', () => {
  const dir = path.join(tmp, 'world');
  const n = 24;
  let info: ConceptWorldInfo;
  before(async () => {
    await runCommand(dataConceptWorldCommand, ['--n', String(n), '--out', dir, '--seed', '5']);
    info = JSON.parse(readFileSync(path.join(dir, 'concepts.json'), 'utf8'));
  });

  it('describes itself in concepts.json', () => {
    assert.equal(info.format, 'vitsae-concept-world');
    assert.equal(info.n, n);
    assert.deepEqual(info.concepts, CONCEPTS);
    assert.deepEqual(info.coverage_shape, [n, PATCHES, C]);
    assert.equal(info.threshold, COVERAGE_THRESHOLD);
    assert.deepEqual(info.classes, CLASSES);
    assert.deepEqual(info.grid, [GRID, GRID]);
  });

  it('opens as segmentation pairs and as a labelled list, in index order, matching the generator', async () => {
    const seg = await openDataset(dir);
    const list = await openDataset(path.join(dir, 'labels.csv'));
    assert.equal(seg.kind, 'segmentation');
    assert.equal(list.kind, 'list');
    assert.equal(seg.size, n);
    assert.equal(list.size, n);
    const coverage = readFileSync(path.join(dir, 'patch_concepts.u8'));
    assert.equal(coverage.length, n * PATCHES * C);
    const objects = readFileSync(path.join(dir, 'objects.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    for (let i = 0; i < n; i++) {
      const img = generateImage(5, i);
      assert.equal(seg.key(i), path.join('images', `${String(i).padStart(6, '0')}.png`));
      assert.equal(list.key(i), `images/${String(i).padStart(6, '0')}.png`);
      assert.equal(list.label(i), img.label);
      assert.equal(objects[i].label, img.label);
      assert.deepEqual(
        objects[i].objects.map((q: { shape: string; pixels: number }) => [q.shape, q.pixels]),
        img.objects.map((q) => [q.shape, q.pixels]),
      );
      assert.deepEqual(new Uint8Array(coverage.subarray(i * PATCHES * C, (i + 1) * PATCHES * C)), img.coverage_PC);
      const rgb = await sharp((await seg.image(i)) as Buffer)
        .raw()
        .toBuffer({ resolveWithObject: true });
      assert.deepEqual([rgb.info.width, rgb.info.height, rgb.info.channels], [S, S, 3]);
      assert.deepEqual(new Uint8Array(rgb.data), img.rgb_HWC);
      const maskPng = (await seg.mask!(i)) as Buffer;
      assert.equal((await sharp(maskPng).metadata()).channels, 1);
      assert.deepEqual(new Uint8Array(await sharp(maskPng).extractChannel(0).raw().toBuffer()), img.mask_HW);
    }
  });

  it('writes the same bytes for the same seed and refuses a non-empty directory', async () => {
    const again = path.join(tmp, 'again');
    await writeConceptWorld(again, { n, seed: 5, progress: false });
    for (const f of ['labels.csv', 'objects.jsonl', 'patch_concepts.u8', 'concepts.json', 'images/000013.png', 'masks/000013.png'])
      assert.ok(readFileSync(path.join(dir, f)).equals(readFileSync(path.join(again, f))), f);
    await assert.rejects(writeConceptWorld(again, { n, seed: 5, progress: false }), /not empty/);
  });
});
