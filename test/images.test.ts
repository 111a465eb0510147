import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, describe, it, before } from 'node:test';
import sharp from 'sharp';
import { openDataset, parseCsv } from '../src/data/images.js';
import { loadMask, loadPixels, parseSize, patchMajority, type Preprocess, PRESETS, readModelCard, resizeCropBox, resolvePreprocess } from '../src/data/preprocess.js';
import { idxFile } from './fixtures/helpers.js';
import { fixtureDir } from './fixtures/models.js';
import { fashionMnistPath } from '../src/data/fashion-mnist.js';

const scratch = mkdtempSync(path.join(os.tmpdir(), 'vitsae-images-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const scratchDir = (name: string) => {
  const dir = path.join(scratch, name);
  mkdirSync(dir);
  return dir;
};

/** Identity preprocessing at a given size: pixels/255, so decoded values can be compared with 8-bit ones. */
const plain = (h: number, w: number, over: Partial<Preprocess> = {}): Preprocess => ({
  size: [h, w],
  cropRatio: null,
  interpolation: 'nearest',
  mean: [0, 0, 0],
  std: [1, 1, 1],
  channelOrder: 'rgb',
  channels: 3,
  ...over,
});

/** pixels_CHW (scaled to 0..255) -> pixels_HWC bytes, rounded. */
function toHWC(pixels_CHW: Float32Array, h: number, w: number, c = 3): Uint8Array {
  const out = new Uint8Array(h * w * c);
  for (let k = 0; k < c; k++) for (let i = 0; i < h * w; i++) out[i * c + k] = Math.round(pixels_CHW[k * h * w + i] * 255);
  return out;
}

async function png(pixels: Uint8Array, w: number, h: number, channels: 1 | 3 = 3): Promise<Buffer> {
  return sharp(pixels, { raw: { width: w, height: h, channels } })
    .toColourspace(channels === 1 ? 'b-w' : 'srgb')
    .png()
    .toBuffer();
}

describe('decoding and conversion', () => {
  let dir: string;
  before(() => {
    dir = fixtureDir();
  });

  for (const name of ['grey.png', 'grey16.png', 'rgb16.png', 'palette.png', 'rgba.png', 'grey_alpha.png', 'rgb.jpg'])
    it(`${name} becomes the 8-bit RGB and grey that PIL makes of it`, async () => {
      for (const [ext, channels] of [
        ['.rgb', 3],
        ['.l', 1],
      ] as const) {
        const want = readFileSync(path.join(dir, 'odd', name + ext));
        const out = new Float32Array(channels * 10 * 12);
        await loadPixels(readFileSync(path.join(dir, 'odd', name)), plain(10, 12, { channels, mean: [0, 0, 0].slice(0, channels), std: [1, 1, 1].slice(0, channels) }), out);
        const got = toHWC(out, 10, 12, channels);
        let worst = 0;
        for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
        // 16-bit to 8-bit may round the other way at .5; everything else is exact.
        assert.ok(worst <= (name.includes('16') ? 1 : 0), `${name} as ${ext}: max difference ${worst}`);
      }
    });

  for (const [name, error] of [
    ['empty.png', /^empty file$/],
    ['text.jpg', /^not a readable image \(Input buffer contains unsupported image format\)$/],
    ['truncated.jpg', /^not a readable image \(.*premature end of JPEG image; .*\)$/],
  ] as const)
    it(`${name} fails with a clear message`, async () => {
      await assert.rejects(loadPixels(readFileSync(path.join(dir, 'bad', name)), plain(10, 12), new Float32Array(360)), { message: error });
    });

  it('normalises with mean/std, swaps to BGR and feeds grey models one channel', async () => {
    const rgb = Uint8Array.from([255, 0, 51, 0, 102, 255]);
    const input = await png(rgb, 2, 1);
    const out = new Float32Array(6);
    await loadPixels(input, plain(1, 2, { mean: [0.5, 0.25, 0], std: [0.5, 0.25, 2], channelOrder: 'bgr' }), out);
    // Channel 0 is blue (mean 0.5, std 0.5), channel 2 red (mean 0, std 2).
    const expect = [(51 / 255 - 0.5) / 0.5, (1 - 0.5) / 0.5, (0 - 0.25) / 0.25, (102 / 255 - 0.25) / 0.25, 1 / 2, 0];
    out.forEach((v, i) => assert.ok(Math.abs(v - expect[i]) < 1e-6, `value ${i}: ${v} vs ${expect[i]}`));
    const grey = new Float32Array(2);
    await loadPixels(await png(Uint8Array.from([200, 200, 200, 10, 10, 10]), 2, 1), plain(1, 2, { channels: 1, mean: [0], std: [1] }), grey);
    assert.deepEqual(
      [...grey].map((v) => Math.round(v * 255)),
      [200, 10],
    );
  });

  it('resizes to cover the crop box and crops the centre', async () => {
    // 40x20 image: columns 8..31 white, the rest black. Cover 10x10 at ratio 1 -> 20x10, centre crop 10x10 ->
    // source columns 10..29, all white.
    const w = 40;
    const h = 20;
    const grey = new Uint8Array(w * h).map((_, i) => (i % w >= 8 && i % w < 32 ? 255 : 0));
    const out = new Float32Array(100);
    await loadPixels(await png(grey, w, h, 1), plain(10, 10, { channels: 1, mean: [0], std: [1], cropRatio: 1 }), out);
    assert.deepEqual([...out], new Array(100).fill(1));
    // Squash (no crop) keeps the black borders: 2 of 10 columns on each side.
    await loadPixels(await png(grey, w, h, 1), plain(10, 10, { channels: 1, mean: [0], std: [1] }), out);
    assert.deepEqual([...out.subarray(0, 10)].map(Math.round), [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]);
  });

  it('masks keep class indices under resizing and vote per patch', async () => {
    // 8x4 mask: left half class 3, right half class 7, one stray 9.
    const m = new Uint8Array(32).map((_, i) => (i % 8 < 4 ? 3 : 7));
    m[0] = 9;
    const mask_HW = await loadMask(await png(m, 8, 4, 1), plain(8, 16));
    assert.deepEqual(new Set(mask_HW), new Set([3, 7, 9]));
    assert.deepEqual([...patchMajority(mask_HW, [8, 16], [2, 4])], [3, 3, 7, 7, 3, 3, 7, 7]);
    // Ties go to the smaller class.
    assert.deepEqual([...patchMajority(Uint8Array.from([5, 2, 2, 5]), [2, 2], [1, 1])], [2]);
    await assert.rejects(loadMask(await png(new Uint8Array(96), 8, 4), plain(4, 8)), { message: /one channel of class indices, this one has 3/ });
  });
});

describe('preprocessing settings', () => {
  it('takes the preset, then the model card, then the flags', () => {
    const dinov2 = resolvePreprocess({ preset: 'dinov2' }, {}, undefined, 3);
    assert.deepEqual(dinov2, { size: [224, 224], cropRatio: 256 / 224, interpolation: 'bicubic', mean: PRESETS.dinov2.mean, std: PRESETS.dinov2.std, channelOrder: 'rgb', channels: 3 });
    // A smaller input keeps the resize/crop ratio; a declared model size is used when nothing else gives one.
    assert.deepEqual(resolvePreprocess({ preset: 'clip' }, { inputSize: [32, 48] }, undefined, 3).size, [32, 48]);
    assert.equal(resolvePreprocess({ preset: 'clip' }, {}, undefined, 3).cropRatio, 1);
    assert.deepEqual(resolvePreprocess(null, {}, [64, 64], 3).size, [64, 64]);
    assert.equal(resolvePreprocess({ preset: 'siglip' }, {}, undefined, 3).cropRatio, null);
    const card = resolvePreprocess({ preset: 'siglip', input_size: 32, mean: [0, 0, 0], channel_order: 'bgr' }, { std: [2, 2, 2] }, [224, 224], 3);
    assert.deepEqual([card.size, card.mean, card.std, card.channelOrder], [[32, 32], [0, 0, 0], [2, 2, 2], 'bgr']);
    assert.throws(() => resolvePreprocess(null, { mean: [0.5] }, [8, 8], 3), /mean needs 3 numbers/);
    assert.throws(() => resolvePreprocess(null, { mean: [0.5], std: [0] }, [8, 8], 1), /std must not contain 0/);
  });

  it("resizes and centre-crops with torchvision's integer arithmetic", () => {
    // [width, height] -> [resized width, height, crop left, top], from torchvision 0.14's Resize(256) + CenterCrop(224).
    const torchvision: [number, number, number, number, number, number][] = [
      [300, 257, 298, 256, 37, 16],
      [301, 256, 301, 256, 38, 16], // (301 - 224) / 2 = 38.5 rounds to even
      [640, 480, 341, 256, 58, 16],
      [481, 640, 256, 340, 16, 58],
      [225, 300, 256, 341, 16, 58],
      [1000, 333, 768, 256, 272, 16],
    ];
    for (const [w, h, ...want] of torchvision) {
      const box = resizeCropBox(w, h, [224, 224], 256 / 224);
      assert.deepEqual([box.width, box.height, box.left, box.top], want, `${w}x${h}`);
    }
  });

  it('parses sizes and reads model cards', () => {
    assert.deepEqual(parseSize('224'), [224, 224]);
    assert.deepEqual(parseSize('224x320'), [224, 320]);
    assert.throws(() => parseSize('224x'), /expected N or HxW/);
    const dir = scratchDir('card');
    assert.equal(readModelCard(path.join(dir, 'm.onnx')), null);
    writeFileSync(path.join(dir, 'm.json'), '{"preset": "dinov2", "family": "dinov2"}');
    assert.deepEqual(readModelCard(path.join(dir, 'm.onnx')), { preset: 'dinov2', family: 'dinov2' });
    writeFileSync(path.join(dir, 'm.json'), '{"preset": "vgg"}');
    assert.throws(() => readModelCard(path.join(dir, 'm.onnx')), /preset must be one of/);
    writeFileSync(path.join(dir, 'm.json'), '{"preset": ');
    assert.throws(() => readModelCard(path.join(dir, 'm.onnx')), /not valid JSON/);
  });
});

describe('datasets', () => {
  let root: string;
  const tiny = () => png(new Uint8Array(12), 2, 2);
  before(async () => {
    root = scratchDir('datasets');
    for (const f of [
      'classes/zebra/b.png',
      'classes/zebra/a.jpg',
      'classes/ant/x/deep.png',
      'classes/ant/c.png',
      'flat/2.png',
      'flat/1.png',
      'seg/images/a.jpg',
      'seg/masks/a.png',
      'seg/images/b.jpg',
      'seg/masks/b.png',
    ]) {
      mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
      writeFileSync(path.join(root, f), await tiny());
    }
    for (const f of ['classes/ant/notes.txt', 'classes/ant/.hidden.png', 'flat/readme.md']) writeFileSync(path.join(root, f), 'x');
    mkdirSync(path.join(root, 'flat/sub'));
    writeFileSync(path.join(root, 'flat/sub/ignored.png'), await tiny());
    writeFileSync(path.join(root, 'list.txt'), '# comment\nflat/1.png\n\nclasses/ant/c.png\n');
    writeFileSync(path.join(root, 'list.csv'), 'label,path\ndog,flat/1.png\n"cat, grey","flat/2.png"\ndog,classes/ant/c.png\n');
    writeFileSync(path.join(root, 'nums.csv'), 'file,label\nflat/1.png,7\nflat/2.png,3\n');
  });

  it('class folders: sorted classes, files in order, hidden and non-image files left out', async () => {
    const ds = await openDataset(path.join(root, 'classes'));
    assert.equal(ds.kind, 'folder');
    assert.deepEqual(ds.classes, ['ant', 'zebra']);
    assert.deepEqual(
      Array.from({ length: ds.size }, (_, i) => [ds.key(i), ds.label(i)]),
      [
        ['ant/c.png', 0],
        ['ant/x/deep.png', 0],
        ['zebra/a.jpg', 1],
        ['zebra/b.png', 1],
      ],
    );
    assert.ok(Buffer.isBuffer(await ds.image(2)));
  });

  it('flat folders, text lists and CSV lists', async () => {
    const flat = await openDataset(path.join(root, 'flat'));
    assert.deepEqual([flat.kind, flat.size, flat.key(0), flat.key(1), flat.label(0), flat.classes], ['flat', 2, '1.png', '2.png', null, null]);
    const list = await openDataset(path.join(root, 'list.txt'));
    assert.deepEqual([list.kind, list.size, list.key(1)], ['list', 2, 'classes/ant/c.png']);
    assert.ok(Buffer.isBuffer(await list.image(1)));
    const csv = await openDataset(path.join(root, 'list.csv'));
    assert.deepEqual(csv.classes, ['cat, grey', 'dog']);
    assert.deepEqual(
      [0, 1, 2].map((i) => [csv.key(i), csv.label(i)]),
      [
        ['flat/1.png', 1],
        ['flat/2.png', 0],
        ['classes/ant/c.png', 1],
      ],
    );
    const nums = await openDataset(path.join(root, 'nums.csv'));
    assert.deepEqual([nums.classes, nums.label(0), nums.label(1)], [null, 7, 3]);
    assert.deepEqual(parseCsv('a,"b ""q"", c"\r\n\r\n1,2\n'), [
      ['a', 'b "q", c'],
      ['1', '2'],
    ]);
  });

  it('segmentation pairs, and a clear error for an image without a mask', async () => {
    const seg = await openDataset(path.join(root, 'seg'));
    assert.deepEqual([seg.kind, seg.size, seg.key(1)], ['segmentation', 2, 'images/b.jpg']);
    assert.ok(Buffer.isBuffer(await seg.mask!(1)));
    assert.deepEqual([seg.label(0), seg.classes, seg.maskClasses], [null, null, null]);
    writeFileSync(path.join(root, 'seg/images/c.png'), await tiny());
    await assert.rejects(openDataset(path.join(root, 'seg')), { message: /images\/c.png has no mask/ });
    rmSync(path.join(root, 'seg/images/c.png'));
  });

  it('names numeric labels and mask values from classes.txt and mask_classes.txt; a segmentation labels.csv', async () => {
    const seg = path.join(root, 'seg');
    writeFileSync(path.join(seg, 'labels.csv'), 'path,label\nimages/b.jpg,1\nimages/a.jpg,0\n');
    writeFileSync(path.join(seg, 'classes.txt'), 'cat\ndog\n');
    writeFileSync(path.join(seg, 'mask_classes.txt'), 'background\r\ncircle\n\n');
    const ds = await openDataset(seg);
    assert.deepEqual([ds.label(0), ds.label(1), ds.classes, ds.maskClasses], [0, 1, ['cat', 'dog'], ['background', 'circle']]);
    const list = await openDataset(path.join(seg, 'labels.csv'));
    assert.deepEqual([list.key(0), list.label(0), list.classes], ['images/b.jpg', 1, ['cat', 'dog']]);
    writeFileSync(path.join(seg, 'labels.csv'), 'path,label\nimages/b.jpg,1\n');
    await assert.rejects(openDataset(seg), { message: /labels.csv has no label for images\/a.jpg/ });
    writeFileSync(path.join(seg, 'mask_classes.txt'), 'background\n\ncircle\n');
    rmSync(path.join(seg, 'labels.csv'));
    await assert.rejects(openDataset(seg), { message: /mask_classes.txt: expected one non-empty class name per line/ });
    for (const f of ['classes.txt', 'mask_classes.txt']) rmSync(path.join(seg, f));
  });

  it('IDX files, gzipped, with labels found beside the images', async () => {
    const dir = scratchDir('idx');
    const pixels = new Uint8Array(3 * 2 * 2).map((_, i) => i * 10);
    writeFileSync(path.join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(idxFile([3, 2, 2], pixels)));
    writeFileSync(path.join(dir, 'train-labels-idx1-ubyte'), idxFile([3], Buffer.from([4, 5, 6])));
    const ds = await openDataset(path.join(dir, 'train-images-idx3-ubyte.gz'));
    assert.deepEqual([ds.kind, ds.size, ds.key(2), ds.label(2)], ['idx', 3, 'train-images-idx3-ubyte.gz#2', 6]);
    const img = (await ds.image(1)) as { data: Uint8Array; width: number; height: number };
    assert.deepEqual([...img.data, img.width, img.height], [40, 50, 60, 70, 2, 2]);
    const out = new Float32Array(4);
    await loadPixels(await ds.image(1), plain(2, 2, { channels: 1, mean: [0], std: [1] }), out);
    assert.deepEqual(
      [...out].map((v) => Math.round(v * 255)),
      [40, 50, 60, 70],
    );
    writeFileSync(path.join(dir, 'bad-images-idx3-ubyte'), idxFile([3, 2, 2], pixels.subarray(0, 5)));
    await assert.rejects(openDataset(path.join(dir, 'bad-images-idx3-ubyte')), { message: /need 12 bytes, the file has 5/ });
  });

  it("reads Debian's Fashion-MNIST test set", { skip: !existsSync(fashionMnistPath()) }, async () => {
    const ds = await openDataset(fashionMnistPath());
    // The first test image is an ankle boot (class 9), the second a pullover (2).
    assert.deepEqual([ds.size, ds.label(0), ds.label(1)], [10000, 9, 2]);
  });
});
