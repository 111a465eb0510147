/**
 * numpy's file formats, written without numpy: `.npy` (format version 1.0: magic, a Python-literal header padded
 * to 64 bytes, then the raw little-endian C-order array) and `.npz` (a zip of `.npy` members, stored uncompressed
 * as `np.savez` does). A CSR matrix as `scipy.sparse.save_npz` lays it out (`data`, `indices`, `indptr`, `shape`,
 * `format`) so that `scipy.sparse.load_npz` opens it. numpy's NEP 1 describes the .npy layout.
 */
import { zipSync } from 'fflate';
import { UserError } from '../util/errors.js';

/** An array to write: its values (bytes `|S` strings as a Uint8Array with `descr`) and its shape. */
export interface NpyArray {
  data: Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;
  shape: number[];
  /** Overrides the dtype derived from `data`, e.g. `|S3` for a 3-byte string. */
  descr?: string;
}

function descrOf(a: NpyArray): string {
  if (a.descr) return a.descr;
  if (a.data instanceof Float32Array) return '<f4';
  if (a.data instanceof Float64Array) return '<f8';
  if (a.data instanceof Int32Array) return '<i4';
  if (a.data instanceof BigInt64Array) return '<i8';
  return '|u1';
}

/** One `.npy` file. */
export function npyBytes(a: NpyArray): Uint8Array {
  const shape = a.shape.length === 1 ? `(${a.shape[0]},)` : `(${a.shape.join(', ')})`;
  let header = `{'descr': '${descrOf(a)}', 'fortran_order': False, 'shape': ${shape}, }`;
  // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, ending in \n.
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const body = new Uint8Array(a.data.buffer, a.data.byteOffset, a.data.byteLength);
  const out = new Uint8Array(10 + header.length + body.length);
  out.set([0x93, ...Buffer.from('NUMPY'), 1, 0, header.length & 0xff, header.length >> 8]);
  out.set(Buffer.from(header, 'latin1'), 10);
  out.set(body, 10 + header.length);
  return out;
}

/** zip's classic limits: fflate writes no Zip64 records. */
const ZIP_LIMIT = 0xffffffff;

/** An `.npz` file: `np.load(file)[name]` is each array. */
export function npzBytes(arrays: Record<string, NpyArray>, what: string): Uint8Array {
  const files: Record<string, [Uint8Array, { level: 0 }]> = {};
  let total = 0;
  for (const [name, a] of Object.entries(arrays)) {
    const bytes = npyBytes(a);
    total += bytes.length;
    if (bytes.length >= ZIP_LIMIT || total >= ZIP_LIMIT) throw new UserError(`${what} would be over 4 GiB, more than a zip without Zip64 holds; export fewer images (--max-images)`);
    files[`${name}.npy`] = [bytes, { level: 0 }];
  }
  return zipSync(files);
}

/** A CSR matrix in scipy.sparse.save_npz's layout. */
export function csrNpz(m: { data: Float32Array; indices: Int32Array; indptr: BigInt64Array; shape: [number, number] }, what: string): Uint8Array {
  return npzBytes(
    {
      data: { data: m.data, shape: [m.data.length] },
      indices: { data: m.indices, shape: [m.indices.length] },
      indptr: { data: m.indptr, shape: [m.indptr.length] },
      shape: { data: BigInt64Array.from(m.shape.map(BigInt)), shape: [2] },
      format: { data: Buffer.from('csr'), shape: [], descr: '|S3' },
    },
    what,
  );
}

/** One CSV field: quoted when it holds a comma, quote or line break (RFC 4180). */
export function csvField(v: string | number | null): string {
  if (v === null) return '';
  const s = String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** A CSV file with a header row. */
export function csv(header: string[], rows: (string | number | null)[][]): string {
  return [header, ...rows].map((r) => r.map(csvField).join(',')).join('\n') + '\n';
}
