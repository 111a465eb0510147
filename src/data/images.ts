/**
 * Image datasets, in a fixed order so that a recording can be resumed and split across machines by index:
 * - a folder of class subfolders (labels are the sorted folder names' indices, as torchvision's ImageFolder),
 * - a flat folder of images (no labels),
 * - a list file: .txt with one path per line, or .csv with a header naming a path column and optionally a label,
 * - IDX files (MNIST, Fashion-MNIST; gzipped or not): the images file, with the labels file found beside it,
 * - segmentation pairs: a folder with images/ and masks/ (same file stem, masks single-channel PNG class indices),
 *   with image classes from a labels.csv beside them when there is one.
 * Numeric labels take their names from a classes.txt beside the data (one name per line, line k names label k), and
 * mask values from mask_classes.txt, so heads and reports say "circle" rather than "1".
 */
import { existsSync, promises as fs, readFileSync, type Stats, statSync } from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { UserError } from '../util/errors.js';
import type { ImageInput } from './preprocess.js';

export type DatasetKind = 'folder' | 'flat' | 'list' | 'idx' | 'segmentation';

export interface Dataset {
  kind: DatasetKind;
  /** The --data path, absolute. */
  source: string;
  size: number;
  /** Class names: from folder or CSV label names, or classes.txt for numeric labels; null when unnamed or absent. */
  classes: string[] | null;
  /** Names of mask values (segmentation), from mask_classes.txt; null when absent. */
  maskClasses?: string[] | null;
  /** Identifies example i in messages and manifests: a path relative to the dataset, or `file#index` for IDX. */
  key(i: number): string;
  /** Class index of example i, or null. */
  label(i: number): number | null;
  image(i: number): Promise<ImageInput>;
  /** The segmentation mask of example i (segmentation datasets only). */
  mask?(i: number): Promise<ImageInput>;
}

export const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif']);

const isImage = (name: string) => !name.startsWith('.') && IMAGE_EXTENSIONS.has(path.extname(name).toLowerCase());
const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Opens `spec` as whichever dataset layout it has (see the module comment). */
export async function openDataset(spec: string): Promise<Dataset> {
  const source = path.resolve(spec);
  let stat: Stats;
  try {
    stat = statSync(source);
  } catch {
    throw new UserError(`dataset ${spec} does not exist`);
  }
  if (stat.isFile()) {
    const name = path.basename(source).toLowerCase();
    if (/\.(csv|txt|lst)$/.test(name)) return listDataset(source);
    if (/idx\d-ubyte(\.gz)?$/.test(name) || name.endsWith('.idx')) return idxDataset(source);
    throw new UserError(`dataset ${spec}: a file dataset must be a list (.txt, .csv) or IDX images (*-idx3-ubyte[.gz])`);
  }
  const entries = await fs.readdir(source, { withFileTypes: true });
  const dirs = entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name);
  if (dirs.includes('images') && dirs.includes('masks')) return segmentationDataset(source);
  const files = entries.filter((e) => e.isFile() && isImage(e.name)).map((e) => e.name);
  if (files.length) return fileDataset('flat', source, files.sort(byName), null, null);
  if (dirs.length) return folderDataset(source, dirs.sort(byName));
  throw new UserError(`dataset ${spec} has no images (${[...IMAGE_EXTENSIONS].join(' ')}) and no class subfolders`);
}

async function walk(dir: string, rel: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of (await fs.readdir(dir, { withFileTypes: true })).sort((a, b) => byName(a.name, b.name))) {
    if (e.name.startsWith('.')) continue;
    if (e.isDirectory()) out.push(...(await walk(path.join(dir, e.name), path.join(rel, e.name))));
    else if (isImage(e.name)) out.push(path.join(rel, e.name));
  }
  return out;
}

async function folderDataset(root: string, classes: string[]): Promise<Dataset> {
  const files: string[] = [];
  const labels: number[] = [];
  for (const [k, cls] of classes.entries()) {
    const found = await walk(path.join(root, cls), cls);
    files.push(...found);
    labels.push(...found.map(() => k));
  }
  if (!files.length) throw new UserError(`dataset ${root}: its class folders hold no images`);
  return fileDataset('folder', root, files, labels, classes);
}

/** Files given relative to `root` (or absolute), read whole and decoded by sharp. */
function fileDataset(kind: DatasetKind, root: string, files: string[], labels: number[] | null, classes: string[] | null): Dataset {
  return {
    kind,
    source: root,
    size: files.length,
    classes,
    key: (i) => files[i],
    label: (i) => (labels ? labels[i] : null),
    image: (i) => readImageFile(path.resolve(root, files[i])),
  };
}

async function readImageFile(file: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(err.code === 'ENOENT' ? 'file not found' : err.code === 'EISDIR' ? 'is a directory' : err.message);
  }
}

function listDataset(file: string): Dataset {
  const root = path.dirname(file);
  const text = readFileSync(file, 'utf8');
  if (!file.toLowerCase().endsWith('.csv')) {
    const files = text
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    if (!files.length) throw new UserError(`dataset ${file} lists no files`);
    return { ...fileDataset('list', root, files, null, null), source: file };
  }
  const [header, ...rows] = parseCsv(text);
  if (!header || !rows.length) throw new UserError(`dataset ${file}: expected a header row and at least one row`);
  const col = (names: string[]) => header.findIndex((h) => names.includes(h.trim().toLowerCase()));
  const p = col(['path', 'file', 'filename', 'image']);
  if (p < 0) throw new UserError(`dataset ${file}: the header needs a path column (path, file, filename or image), got ${header.join(',')}`);
  const l = col(['label', 'class', 'target']);
  rows.forEach((r, i) => {
    if (!r[p]) throw new UserError(`dataset ${file}, row ${i + 2}: no path`);
  });
  const files = rows.map((r) => r[p]);
  if (l < 0) return { ...fileDataset('list', root, files, null, null), source: file };
  const raw = rows.map((r) => (r[l] ?? '').trim());
  if (raw.every((v) => /^\d+$/.test(v))) return { ...fileDataset('list', root, files, raw.map(Number), classNames(root, CLASSES_FILE)), source: file };
  const classes = [...new Set(raw)].sort(byName);
  return {
    ...fileDataset(
      'list',
      root,
      files,
      raw.map((v) => classes.indexOf(v)),
      classes,
    ),
    source: file,
  };
}

/** RFC 4180 CSV: quoted fields may hold commas, quotes ("") and newlines. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') (field += '"'), i++;
      else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') row.push(field), (field = '');
    else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(field), (field = '');
      if (row.some((f) => f !== '')) rows.push(row);
      row = [];
    } else field += ch;
  }
  row.push(field);
  if (row.some((f) => f !== '')) rows.push(row);
  return rows;
}

/** An IDX file's payload and dims: magic 0x0000TTNN (TT type code, NN rank), then NN big-endian uint32 dims. */
function readIdx(file: string): { dims: number[]; data: Uint8Array } {
  let buf: Buffer = readFileSync(file);
  if (buf[0] === 0x1f && buf[1] === 0x8b) buf = gunzipSync(buf);
  const rank = buf[3];
  if (buf.length < 4 + 4 * rank || buf[0] !== 0 || buf[1] !== 0 || buf[2] !== 0x08) throw new UserError(`${file} is not an IDX file of unsigned bytes (magic 0x000008NN)`);
  const dims = Array.from({ length: rank }, (_, i) => buf.readUInt32BE(4 + 4 * i));
  const data = buf.subarray(4 + 4 * rank);
  const want = dims.reduce((a, b) => a * b, 1);
  if (data.length !== want) throw new UserError(`${file}: dims [${dims}] need ${want} bytes, the file has ${data.length}`);
  return { dims, data };
}

function idxDataset(file: string): Dataset {
  const { dims, data } = readIdx(file);
  if (dims.length !== 3) throw new UserError(`${file}: expected images [n, rows, cols], got dims [${dims}]`);
  const [n, h, w] = dims;
  const stem = path.join(path.dirname(file), path.basename(file).replace('images-idx3', 'labels-idx1').replace(/\.gz$/, ''));
  const labelsFile = [stem, stem + '.gz'].find((f) => f !== file && existsSync(f));
  let labels: Uint8Array | null = null;
  if (labelsFile) {
    const l = readIdx(labelsFile);
    if (l.dims.length !== 1 || l.dims[0] !== n) throw new UserError(`${labelsFile}: expected ${n} labels, got dims [${l.dims}]`);
    labels = l.data;
  }
  const base = path.basename(file);
  return {
    kind: 'idx',
    source: file,
    size: n,
    classes: labels ? classNames(path.dirname(file), CLASSES_FILE) : null,
    key: (i) => `${base}#${i}`,
    label: (i) => (labels ? labels[i] : null),
    image: async (i) => ({ data: data.subarray(i * h * w, (i + 1) * h * w), width: w, height: h, channels: 1 }),
  };
}

/** Names of numeric labels (line k names label k), when the data has such a file beside it. */
export const CLASSES_FILE = 'classes.txt';
/** Names of a segmentation dataset's mask values. */
export const MASK_CLASSES_FILE = 'mask_classes.txt';

function classNames(dir: string, file: string): string[] | null {
  const p = path.join(dir, file);
  if (!existsSync(p)) return null;
  const names = readFileSync(p, 'utf8')
    .split(/\r?\n/)
    .map((l) => l.trim());
  while (names.length && !names[names.length - 1]) names.pop();
  if (!names.length || names.some((n) => !n)) throw new UserError(`${p}: expected one non-empty class name per line`);
  return names;
}

/** Image labels of a segmentation folder from ROOT/labels.csv (path,label rows naming images/...), or null. */
function segmentationLabels(root: string, images: string[]): number[] | null {
  const file = path.join(root, 'labels.csv');
  if (!existsSync(file)) return null;
  const list = listDataset(file);
  const byKey = new Map(Array.from({ length: list.size }, (_, i) => [path.normalize(list.key(i)), list.label(i)]));
  return images.map((img) => {
    const label = byKey.get(path.join('images', img));
    if (label === undefined || label === null) throw new UserError(`${file} has no label for images/${img}; list every image, or remove the file`);
    return label;
  });
}

async function segmentationDataset(root: string): Promise<Dataset> {
  const images = await walk(path.join(root, 'images'), '');
  const masks = new Map((await walk(path.join(root, 'masks'), '')).map((m) => [m.replace(/\.[^./]+$/, ''), m]));
  if (!images.length) throw new UserError(`dataset ${root}: images/ holds no images`);
  const pairs = images.map((img) => {
    const mask = masks.get(img.replace(/\.[^./]+$/, ''));
    if (!mask) throw new UserError(`dataset ${root}: images/${img} has no mask in masks/ (same name, any image extension)`);
    return mask;
  });
  const labels = segmentationLabels(root, images);
  return {
    kind: 'segmentation',
    source: root,
    size: images.length,
    classes: labels ? classNames(root, CLASSES_FILE) : null,
    maskClasses: classNames(root, MASK_CLASSES_FILE),
    key: (i) => path.join('images', images[i]),
    label: (i) => (labels ? labels[i] : null),
    image: (i) => readImageFile(path.join(root, 'images', images[i])),
    mask: (i) => readImageFile(path.join(root, 'masks', pairs[i])),
  };
}
