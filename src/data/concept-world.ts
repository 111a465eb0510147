/**
 * The concept world: small images of 1-3 objects whose attributes (shape, colour, texture, size) and background
 * kind are known, so that features found in a model trained on it can be checked against the truth. Every image
 * comes with its objects, a per-pixel shape mask, per-patch concept coverage and a class given by a rule over the
 * objects (`classOf`), so an edit can be checked too: "without concept C the class should be classOf(objects
 * without C)". Image i depends only on (seed, i), so any subset can be regenerated exactly.
 *
 * Array names carry their shape: rgb_HWC is [64, 64, 3] uint8, mask_HW [64, 64] (0 = background, 1 + shape index
 * on object pixels), coverage_PC [64 patches, concepts] (pixels of the 8x8 patch showing the concept, 0-64).
 * The on-disk layout is described in src/data/README.md.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { Rng } from '../util/random.js';
import { CLASSES_FILE, MASK_CLASSES_FILE } from './images.js';
import { UserError } from '../util/errors.js';
import { readJson, writeFileAtomic } from '../util/fs.js';
import { progress } from '../util/progress.js';

export const IMAGE_SIZE = 64;
export const PATCH_SIZE = 8;
export const GRID = IMAGE_SIZE / PATCH_SIZE;
export const PATCHES = GRID * GRID;

export const SHAPES = ['circle', 'square', 'triangle', 'cross', 'star', 'heart'] as const;
export const COLOURS = ['red', 'yellow', 'green', 'cyan', 'blue', 'magenta'] as const;
export const TEXTURES = ['solid', 'stripes', 'dots', 'checker'] as const;
export const SIZES = ['small', 'medium', 'large'] as const;
export const BACKGROUNDS = ['noise', 'gradient', 'waves'] as const;

export type Shape = (typeof SHAPES)[number];
export type Colour = (typeof COLOURS)[number];
export type Texture = (typeof TEXTURES)[number];
export type Size = (typeof SIZES)[number];
export type Background = (typeof BACKGROUNDS)[number];

/** The attribute families; a concept is `family:value`, e.g. `shape:star`. */
export const CONCEPT_GROUPS = { shape: SHAPES, colour: COLOURS, texture: TEXTURES, size: SIZES, background: BACKGROUNDS } as const;
export type ConceptGroup = keyof typeof CONCEPT_GROUPS;
export const CONCEPTS: string[] = Object.entries(CONCEPT_GROUPS).flatMap(([g, values]) => values.map((v) => `${g}:${v}`));

/** A patch shows a concept when at least this many of its 64 pixels do (a quarter of the patch). */
export const COVERAGE_THRESHOLD = 16;

/** Salience order of shapes: the rule reads the object whose shape comes first here (shapes in an image differ). */
export const SALIENCE: readonly Shape[] = ['star', 'heart', 'triangle', 'cross', 'square', 'circle'];

/** Class k is colour COLOURS[k >> 1] with a solid (k even) or patterned (k odd) texture: 12 classes. */
export const CLASSES: string[] = COLOURS.flatMap((c) => [`${c}-solid`, `${c}-patterned`]);

/** Half-extents of each size bin in pixels (inclusive); the gaps between bins keep sizes unambiguous. */
const RADII: Record<Size, [number, number]> = { small: [8, 10], medium: [12, 14], large: [16, 18] };

export interface WorldObject {
  shape: Shape;
  colour: Colour;
  texture: Texture;
  size: Size;
  /** Centre in pixels (x right, y down) and half-extent of the shape's [-1, 1] box. */
  x: number;
  y: number;
  radius: number;
  /** Visible pixels (in the image and not covered by a later object). */
  pixels: number;
}

export interface WorldImage {
  /** Back to front: later objects are drawn over earlier ones. */
  objects: WorldObject[];
  background: Background;
  label: number;
  rgb_HWC: Uint8Array;
  mask_HW: Uint8Array;
  coverage_PC: Uint8Array;
}

/**
 * The image class: the colour of the salient object (the one whose shape is first in SALIENCE) and whether it is
 * solid or patterned. Null when no object is left, which can only happen after concepts are removed.
 */
export function classOf(objects: readonly Pick<WorldObject, 'shape' | 'colour' | 'texture'>[]): number | null {
  const salient = salientObject(objects);
  if (!salient) return null;
  return 2 * COLOURS.indexOf(salient.colour) + (salient.texture === 'solid' ? 0 : 1);
}

/** The concepts an object shows, as `family:value` names. */
export function conceptsOf(o: Pick<WorldObject, 'shape' | 'colour' | 'texture' | 'size'>): string[] {
  return [`shape:${o.shape}`, `colour:${o.colour}`, `texture:${o.texture}`, `size:${o.size}`];
}

/**
 * The objects as a model that no longer sees `concept` would: those showing it removed. The edit evaluation asks
 * `classOf(withoutConcept(objects, c))` for the class it should get after suppressing c. Background concepts
 * remove no object.
 */
export function withoutConcept<T extends Pick<WorldObject, 'shape' | 'colour' | 'texture' | 'size'>>(objects: readonly T[], concept: string): T[] {
  if (!CONCEPTS.includes(concept)) throw new UserError(`unknown concept ${concept}; concepts are ${CONCEPTS.join(', ')}`);
  return objects.filter((o) => !conceptsOf(o).includes(concept));
}

/** The salient object: the one whose shape comes first in SALIENCE, which the class rule reads. */
export function salientObject<T extends Pick<WorldObject, 'shape'>>(objects: readonly T[]): T | null {
  let salient: T | null = null;
  for (const o of objects) if (!salient || SALIENCE.indexOf(o.shape) < SALIENCE.indexOf(salient.shape)) salient = o;
  return salient;
}

/**
 * The class the rule gives when the salient object's colour or texture `from` (a concept such as `colour:red`)
 * becomes `to` (`colour:yellow`), or null when the salient object does not show `from`. The edit evaluation's
 * swap check asks for it.
 */
export function classAfterSwap(objects: readonly Pick<WorldObject, 'shape' | 'colour' | 'texture'>[], from: string, to: string): number | null {
  const [family, fromValue] = from.split(':');
  const [toFamily, toValue] = to.split(':');
  if (family !== toFamily || (family !== 'colour' && family !== 'texture')) throw new UserError(`a swap changes a colour or a texture into another of the same family, not ${from} into ${to}`);
  const salient = salientObject(objects);
  if (!salient || salient[family] !== fromValue) return null;
  return classOf(objects.map((o) => (o === salient ? { ...o, [family]: toValue } : o)));
}

const pick = <T>(rng: Rng, values: readonly T[]): T => values[rng.nextInt(values.length)];
const uniform = (rng: Rng, lo: number, hi: number) => lo + (hi - lo) * rng.nextFloat();

/** Five-pointed star, point up, as polygon vertices in the shape's [-1, 1] box. */
const STAR = Array.from({ length: 10 }, (_, k) => {
  const r = k % 2 ? 0.48 : 1.08;
  const a = -Math.PI / 2 + (k * Math.PI) / 5;
  return [r * Math.cos(a), r * Math.sin(a) + 0.08];
});

function inPolygon(u: number, v: number, poly: number[][]): boolean {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i];
    const [xj, yj] = poly[j];
    if (yi > v !== yj > v && u < ((xj - xi) * (v - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** Whether point (u, v) of the shape's box (v down) is inside. Areas range from 1.5 (star) to 3.1 (circle) box units. */
function inside(shape: Shape, u: number, v: number): boolean {
  switch (shape) {
    case 'circle':
      return u * u + v * v <= 1;
    case 'square':
      return Math.max(Math.abs(u), Math.abs(v)) <= 0.82;
    case 'triangle':
      return v <= 0.85 && v >= -1.05 && Math.abs(u) <= (1.1 * (v + 1.05)) / 1.9;
    case 'cross':
      return (Math.abs(u) <= 0.34 && Math.abs(v) <= 1) || (Math.abs(v) <= 0.34 && Math.abs(u) <= 1);
    case 'star':
      return inPolygon(u, v, STAR);
    case 'heart': {
      const X = 1.15 * u;
      const Y = -1.15 * v + 0.12;
      const a = X * X + Y * Y - 1;
      return a * a * a - X * X * Y * Y * Y <= 0;
    }
  }
}

/** Pixels of the object's shape, image clipping ignored: [x, y] pairs of pixel centres inside. */
function rasterize(shape: Shape, cx: number, cy: number, r: number): number[] {
  const out: number[] = [];
  for (let y = Math.floor(cy - r - 1); y <= Math.ceil(cy + r + 1); y++)
    for (let x = Math.floor(cx - r - 1); x <= Math.ceil(cx + r + 1); x++) if (inside(shape, (x + 0.5 - cx) / r, (y + 0.5 - cy) / r)) out.push(x, y);
  return out;
}

function hsvToRgb(h: number, s: number, v: number): [number, number, number] {
  const f = (n: number) => {
    const k = (n + h / 60) % 6;
    return 255 * (v - v * s * Math.max(0, Math.min(k, 4 - k, 1)));
  };
  return [f(5), f(3), f(1)];
}

/** Hue of each colour in degrees; objects are saturated, backgrounds are not, so the two never look alike. */
const HUES: Record<Colour, number> = { red: 0, yellow: 60, green: 120, cyan: 180, blue: 240, magenta: 300 };

/** A texture as a function of the pixel: true where the object shows its dark second tone. */
function texturePattern(rng: Rng, texture: Texture): (x: number, y: number) => boolean {
  const phase = uniform(rng, 0, 12);
  switch (texture) {
    case 'solid':
      return () => false;
    case 'stripes': {
      const period = uniform(rng, 5, 7);
      const a = (pick(rng, [0, 45, 90, 135]) * Math.PI) / 180;
      return (x, y) => (x * Math.cos(a) + y * Math.sin(a) + phase) % period < period / 2;
    }
    case 'dots': {
      const spacing = uniform(rng, 5, 6.5);
      return (x, y) => {
        const dx = ((x + phase) % spacing) - spacing / 2;
        const dy = ((y + phase) % spacing) - spacing / 2;
        return dx * dx + dy * dy <= 2.6;
      };
    }
    case 'checker': {
      const cell = pick(rng, [3, 4]);
      return (x, y) => (Math.floor((x + phase) / cell) + Math.floor((y + phase) / cell)) % 2 === 1;
    }
  }
}

/** A background as float RGB per pixel: muted (saturation <= 0.3) so that objects stand out by colour. */
function paintBackground(rng: Rng, kind: Background, out_HWC: Float32Array): void {
  const muted = () => hsvToRgb(uniform(rng, 0, 360), uniform(rng, 0, 0.3), uniform(rng, 0.25, 0.75));
  const a = muted();
  const S = IMAGE_SIZE;
  if (kind === 'noise') {
    const sigma = uniform(rng, 10, 25);
    for (let i = 0; i < S * S; i++) {
      const n = sigma * rng.normal();
      for (let c = 0; c < 3; c++) out_HWC[3 * i + c] = a[c] + n;
    }
    return;
  }
  const angle = uniform(rng, 0, 2 * Math.PI);
  const [dx, dy] = [Math.cos(angle), Math.sin(angle)];
  if (kind === 'gradient') {
    const b = muted();
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++) {
        const t = Math.min(1, Math.max(0, 0.5 + ((x - S / 2) * dx + (y - S / 2) * dy) / (S * 1.2)));
        for (let c = 0; c < 3; c++) out_HWC[3 * (y * S + x) + c] = a[c] + t * (b[c] - a[c]);
      }
    return;
  }
  const period = uniform(rng, 10, 20);
  const amplitude = uniform(rng, 15, 30);
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      const w = amplitude * Math.sin((2 * Math.PI * (x * dx + y * dy)) / period);
      for (let c = 0; c < 3; c++) out_HWC[3 * (y * S + x) + c] = a[c] + w;
    }
}

/** An object's two tones (its colour, and a dark shade of it) and where its texture shows the dark one. */
interface Tone {
  light: number[];
  dark: number[];
  dark_at: (x: number, y: number) => boolean;
}

function objectTone(rng: Rng, colour: Colour, texture: Texture): Tone {
  const h = (HUES[colour] + uniform(rng, -10, 10) + 360) % 360;
  const [s, v] = [uniform(rng, 0.75, 1), uniform(rng, 0.75, 1)];
  return { light: hsvToRgb(h, s, v), dark: hsvToRgb(h, s, v * 0.4), dark_at: texturePattern(rng, texture) };
}

/** Each object must keep this share of its full area visible, so every object in the labels can be seen. */
const MIN_VISIBLE = 0.6;
const PLACEMENT_TRIES = 40;

/** Image `index` of the world with `seed`: a pure function of the two. */
export function generateImage(seed: number, index: number): WorldImage {
  const rng = new Rng(seed, index);
  const S = IMAGE_SIZE;
  const background = pick(rng, BACKGROUNDS);
  const bg_HWC = new Float32Array(S * S * 3);
  paintBackground(rng, background, bg_HWC);

  // owner_HW: index of the object on top at each pixel, -1 for background.
  const owner_HW = new Int16Array(S * S).fill(-1);
  const placed: { obj: WorldObject; area: number }[] = [];
  const wanted = 1 + rng.nextInt(3);
  const shapes = rng.shuffle([...SHAPES]).slice(0, wanted);
  const tones: Tone[] = [];
  for (const shape of shapes) {
    const size = pick(rng, SIZES);
    const radius = uniform(rng, ...RADII[size]);
    const colour = pick(rng, COLOURS);
    const texture = rng.nextFloat() < 0.4 ? 'solid' : pick(rng, TEXTURES.slice(1));
    const tone = objectTone(rng, colour, texture);
    for (let t = 0; t < PLACEMENT_TRIES; t++) {
      const m = 0.7 * radius;
      const x = uniform(rng, m, S - m);
      const y = uniform(rng, m, S - m);
      const pixels = rasterize(shape, x, y, radius);
      const trial = owner_HW.slice();
      for (let p = 0; p < pixels.length; p += 2) {
        const [px, py] = [pixels[p], pixels[p + 1]];
        if (px >= 0 && px < S && py >= 0 && py < S) trial[py * S + px] = placed.length;
      }
      const counts = new Int32Array(placed.length + 1);
      for (const o of trial) if (o >= 0) counts[o]++;
      const areas = [...placed.map((q) => q.area), pixels.length / 2];
      if (areas.every((a, k) => counts[k] >= MIN_VISIBLE * a)) {
        owner_HW.set(trial);
        placed.push({ obj: { shape, colour, texture, size, x, y, radius, pixels: 0 }, area: pixels.length / 2 });
        tones.push(tone);
        break;
      }
    }
  }

  const rgb_HWC = new Uint8Array(S * S * 3);
  const mask_HW = new Uint8Array(S * S);
  const coverage_PC = new Uint8Array(PATCHES * CONCEPTS.length);
  const conceptIndex = placed.map(({ obj }) => conceptsOf(obj).map((c) => CONCEPTS.indexOf(c)));
  const backgroundConcept = CONCEPTS.indexOf(`background:${background}`);
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      const i = y * S + x;
      const o = owner_HW[i];
      const patch = Math.floor(y / PATCH_SIZE) * GRID + Math.floor(x / PATCH_SIZE);
      // Mild pixel noise everywhere, so that no colour is a single exact RGB value.
      const grain = 3 * rng.normal();
      if (o < 0) {
        for (let c = 0; c < 3; c++) rgb_HWC[3 * i + c] = clampByte(bg_HWC[3 * i + c] + grain);
        coverage_PC[patch * CONCEPTS.length + backgroundConcept]++;
        continue;
      }
      const t = tones[o];
      const tone = t.dark_at(x - placed[o].obj.x, y - placed[o].obj.y) ? t.dark : t.light;
      for (let c = 0; c < 3; c++) rgb_HWC[3 * i + c] = clampByte(tone[c] + grain);
      mask_HW[i] = 1 + SHAPES.indexOf(placed[o].obj.shape);
      placed[o].obj.pixels++;
      for (const k of conceptIndex[o]) coverage_PC[patch * CONCEPTS.length + k]++;
    }
  const objects = placed.map((p) => p.obj);
  return { objects, background, label: classOf(objects)!, rgb_HWC, mask_HW, coverage_PC };
}

const clampByte = (v: number) => Math.max(0, Math.min(255, Math.round(v)));

/** Lossless PNGs of an image (RGB) and its mask (8-bit grey class indices, as the segmentation layout wants). */
export async function encodePngs(img: WorldImage): Promise<{ image: Buffer; mask: Buffer }> {
  const raw = (data: Uint8Array, channels: 1 | 3) => sharp(data, { raw: { width: IMAGE_SIZE, height: IMAGE_SIZE, channels } });
  // Without the explicit b-w colourspace sharp would save the one-channel mask as RGB.
  const [image, mask] = await Promise.all([raw(img.rgb_HWC, 3).png().toBuffer(), raw(img.mask_HW, 1).toColourspace('b-w').png().toBuffer()]);
  return { image, mask };
}

export const CONCEPTS_FILE = 'concepts.json';
export const COVERAGE_FILE = 'patch_concepts.u8';
export const OBJECTS_FILE = 'objects.jsonl';
export const LABELS_FILE = 'labels.csv';

/** concepts.json: what a consumer needs to read the labels without this module. */
export interface ConceptWorldInfo {
  format: 'vitsae-concept-world';
  version: 1;
  n: number;
  seed: number;
  image_size: [number, number];
  patch_size: number;
  grid: [number, number];
  concepts: string[];
  groups: Record<ConceptGroup, string[]>;
  coverage_file: string;
  coverage_shape: [number, number, number];
  threshold: number;
  mask_classes: string[];
  classes: string[];
  salience: string[];
  class_rule: string;
}

/** A concept world's concepts.json, checked to be one. */
export async function readConceptWorldInfo(dir: string): Promise<ConceptWorldInfo> {
  const info = await readJson<ConceptWorldInfo>(path.join(dir, CONCEPTS_FILE), `${dir} is not a concept world: it holds concepts.json (written last by \`vitsae data concept-world\`)`);
  if (info?.format !== 'vitsae-concept-world' || info.version !== 1) throw new UserError(`${path.join(dir, CONCEPTS_FILE)} is not a vitsae-concept-world version 1 file; regenerate the concept world`);
  return info;
}

/** concepts.json and the per-patch concept coverage [n, world patches, concepts] it describes, sizes checked. */
export async function readConceptWorld(dir: string): Promise<{ info: ConceptWorldInfo; coverage_NPC: Uint8Array }> {
  const info = await readConceptWorldInfo(dir);
  const [n, patches, C] = info.coverage_shape;
  const file = path.join(dir, info.coverage_file);
  const coverage_NPC = await fs.readFile(file);
  if (coverage_NPC.length !== n * patches * C) throw new UserError(`${file} has ${coverage_NPC.length} bytes, expected ${n * patches * C} as concepts.json says; regenerate the concept world`);
  return { info, coverage_NPC };
}

/** The file name stem of image i: zero-padded so that name order is index order. */
export const stemOf = (i: number, n: number) => String(i).padStart(Math.max(6, String(n - 1).length), '0');

export interface WriteOptions {
  n: number;
  seed: number;
  /** Show a progress bar (default true). */
  progress?: boolean;
}

/**
 * Writes images/, masks/, labels.csv, objects.jsonl, patch_concepts.u8 and concepts.json into `out` (which must
 * not exist or be empty). concepts.json goes last, so its presence means the world is complete.
 */
export async function writeConceptWorld(out: string, opts: WriteOptions): Promise<ConceptWorldInfo> {
  const { n, seed } = opts;
  if (!Number.isSafeInteger(n) || n < 1) throw new UserError(`concept world: n must be an integer >= 1, got ${n}`);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new UserError(`concept world: seed must be an integer >= 0, got ${seed}`);
  const existing = await fs.readdir(out).catch(() => []);
  if (existing.length) throw new UserError(`${out} is not empty; give a new directory for the concept world`);
  await fs.mkdir(path.join(out, 'images'), { recursive: true });
  await fs.mkdir(path.join(out, 'masks'), { recursive: true });

  const coverage_NPC = new Uint8Array(n * PATCHES * CONCEPTS.length);
  const labels = new Array<number>(n);
  const objects = new Array<string>(n);
  const bar = progress('concept world', n, { enabled: opts.progress ?? true, unit: 'images' });
  let next = 0;
  let done = 0;
  // A few images in flight keep sharp's threads busy while this thread draws the next one.
  const worker = async () => {
    for (let i = next++; i < n; i = next++) {
      const img = generateImage(seed, i);
      const stem = stemOf(i, n);
      const { image, mask } = await encodePngs(img);
      await Promise.all([fs.writeFile(path.join(out, 'images', stem + '.png'), image), fs.writeFile(path.join(out, 'masks', stem + '.png'), mask)]);
      coverage_NPC.set(img.coverage_PC, i * img.coverage_PC.length);
      labels[i] = img.label;
      const rounded = img.objects.map((o) => ({ ...o, x: +o.x.toFixed(2), y: +o.y.toFixed(2), radius: +o.radius.toFixed(2) }));
      objects[i] = JSON.stringify({ file: `images/${stem}.png`, label: img.label, class: CLASSES[img.label], background: img.background, objects: rounded });
      bar.update(++done);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  bar.stop();

  await fs.writeFile(path.join(out, LABELS_FILE), 'path,label\n' + labels.map((l, i) => `images/${stemOf(i, n)}.png,${l}\n`).join(''));
  await fs.writeFile(path.join(out, OBJECTS_FILE), objects.join('\n') + '\n');
  await fs.writeFile(path.join(out, COVERAGE_FILE), coverage_NPC);
  const info: ConceptWorldInfo = {
    format: 'vitsae-concept-world',
    version: 1,
    n,
    seed,
    image_size: [IMAGE_SIZE, IMAGE_SIZE],
    patch_size: PATCH_SIZE,
    grid: [GRID, GRID],
    concepts: CONCEPTS,
    groups: Object.fromEntries(Object.entries(CONCEPT_GROUPS).map(([g, v]) => [g, v.map((x) => `${g}:${x}`)])) as Record<ConceptGroup, string[]>,
    coverage_file: COVERAGE_FILE,
    coverage_shape: [n, PATCHES, CONCEPTS.length],
    threshold: COVERAGE_THRESHOLD,
    mask_classes: ['background', ...SHAPES],
    classes: CLASSES,
    salience: [...SALIENCE],
    class_rule:
      'The salient object is the one whose shape comes first in `salience` (the shapes of an image differ). The class is ' +
      '`<colour>-solid` if it is solid, else `<colour>-patterned`: index 2 * colour index + (0 solid, 1 patterned).',
  };
  // Names for the numeric labels of labels.csv and masks/, read by any dataset loader (src/data/images.ts).
  await writeFileAtomic(path.join(out, CLASSES_FILE), info.classes.join('\n') + '\n');
  await writeFileAtomic(path.join(out, MASK_CLASSES_FILE), info.mask_classes.join('\n') + '\n');
  await writeFileAtomic(path.join(out, CONCEPTS_FILE), JSON.stringify(info, null, 2) + '\n');
  return info;
}
