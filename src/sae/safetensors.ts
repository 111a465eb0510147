/**
 * The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
 * ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}), then the raw
 * little-endian tensor bytes. Offsets are relative to the end of the header. Tensors are laid out in name order
 * and the header is padded with spaces to a multiple of 8 bytes, as the reference implementation does.
 */
import { promises as fsp } from 'node:fs';
import { UserError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';

export type TypedArray = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Int16Array | Uint16Array;

const DTYPES = {
  F64: { bytes: 8, make: (b: ArrayBuffer, o: number, n: number) => new Float64Array(b, o, n) },
  F32: { bytes: 4, make: (b: ArrayBuffer, o: number, n: number) => new Float32Array(b, o, n) },
  F16: { bytes: 2, make: (b: ArrayBuffer, o: number, n: number) => new Uint16Array(b, o, n) },
  BF16: { bytes: 2, make: (b: ArrayBuffer, o: number, n: number) => new Uint16Array(b, o, n) },
  I64: { bytes: 8, make: (b: ArrayBuffer, o: number, n: number) => new BigInt64Array(b, o, n) },
  I32: { bytes: 4, make: (b: ArrayBuffer, o: number, n: number) => new Int32Array(b, o, n) },
  I16: { bytes: 2, make: (b: ArrayBuffer, o: number, n: number) => new Int16Array(b, o, n) },
  I8: { bytes: 1, make: (b: ArrayBuffer, o: number, n: number) => new Int8Array(b, o, n) },
  U8: { bytes: 1, make: (b: ArrayBuffer, o: number, n: number) => new Uint8Array(b, o, n) },
  BOOL: { bytes: 1, make: (b: ArrayBuffer, o: number, n: number) => new Uint8Array(b, o, n) },
} as const;

export type Dtype = keyof typeof DTYPES;

export interface Tensor {
  dtype: Dtype;
  shape: number[];
  /** F16 and BF16 are returned as their raw 16-bit words (use `toFloat32`). */
  data: TypedArray;
}

export interface SafetensorsFile {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

export function dtypeOf(a: TypedArray): Dtype {
  if (a instanceof Float32Array) return 'F32';
  if (a instanceof Float64Array) return 'F64';
  if (a instanceof Int32Array) return 'I32';
  if (a instanceof BigInt64Array) return 'I64';
  if (a instanceof Int16Array) return 'I16';
  if (a instanceof Int8Array) return 'I8';
  if (a instanceof Uint8Array) return 'U8';
  throw new Error('unsupported typed array for safetensors');
}

/** A tensor from a typed array and its shape; checks that they agree. */
export function tensor(data: TypedArray, shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n !== data.length) throw new Error(`tensor shape [${shape}] needs ${n} values, got ${data.length}`);
  return { dtype: dtypeOf(data), shape, data };
}

/** A tensor's entry in a header: its bytes are laid out in name order after the header. */
export interface TensorEntry {
  dtype: Dtype;
  shape: number[];
}

/** The 8-byte length and the JSON header for tensors given by dtype and shape, and their names in file order. */
export function safetensorsHeader(entries: Record<string, TensorEntry>, metadata: Record<string, string> = {}): { bytes: Uint8Array; names: string[] } {
  const names = Object.keys(entries).sort();
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const { dtype, shape } = entries[name];
    const nbytes = shape.reduce((a, b) => a * b, 1) * DTYPES[dtype].bytes;
    header[name] = { dtype, shape, data_offsets: [offset, offset + nbytes] };
    offset += nbytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const bytes = Buffer.alloc(8 + Buffer.byteLength(json));
  bytes.writeBigUInt64LE(BigInt(bytes.length - 8));
  bytes.write(json, 8, 'utf8');
  return { bytes, names };
}

export function encodeSafetensors(tensors: Record<string, Tensor>, metadata: Record<string, string> = {}): Uint8Array[] {
  const { bytes, names } = safetensorsHeader(tensors, metadata);
  return [bytes, ...names.map((n) => new Uint8Array(tensors[n].data.buffer, tensors[n].data.byteOffset, tensors[n].data.byteLength))];
}

export function decodeSafetensors(bytes: Uint8Array, source: string): SafetensorsFile {
  const bad = (why: string) => new UserError(`${source} is not a valid safetensors file: ${why}`);
  if (bytes.length < 8) throw bad(`it has ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  if (n > bytes.length - 8 || n > 100_000_000) throw bad(`header length ${n} exceeds the file size ${bytes.length} (truncated?)`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] } | Record<string, string>>;
  try {
    header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, n).toString('utf8'));
  } catch (e) {
    throw bad(`header is not JSON (${(e as Error).message})`);
  }
  const base = 8 + n;
  const tensors: Record<string, Tensor> = {};
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = entry as Record<string, string>;
      continue;
    }
    const e = entry as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const spec = DTYPES[e.dtype as Dtype];
    if (!spec) throw bad(`tensor ${name} has unsupported dtype ${e.dtype}`);
    const count = e.shape.reduce((a, b) => a * b, 1);
    const [begin, end] = e.data_offsets;
    if (end - begin !== count * spec.bytes) throw bad(`tensor ${name} shape [${e.shape}] does not match its ${end - begin} bytes`);
    if (base + end > bytes.length) throw bad(`tensor ${name} ends at byte ${base + end} but the file has ${bytes.length} bytes (truncated)`);
    // Copy into an aligned buffer: the header length makes the data offset arbitrary.
    const copy = new ArrayBuffer(end - begin);
    new Uint8Array(copy).set(bytes.subarray(base + begin, base + end));
    tensors[name] = { dtype: e.dtype as Dtype, shape: e.shape, data: spec.make(copy, 0, count) };
  }
  return { tensors, metadata };
}

export async function writeSafetensors(file: string, tensors: Record<string, Tensor>, metadata: Record<string, string> = {}): Promise<void> {
  await writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}

export async function readSafetensors(file: string): Promise<SafetensorsFile> {
  let bytes: Buffer;
  try {
    bytes = await fsp.readFile(file);
  } catch (e) {
    throw new UserError(`cannot read ${file}: ${(e as Error).message}`);
  }
  return decodeSafetensors(bytes, file);
}

/** Converts any floating tensor to float32 (F16/BF16 words are expanded; F64 is rounded). */
export function toFloat32(t: Tensor): Float32Array {
  if (t.dtype === 'F32') return t.data as Float32Array;
  if (t.dtype === 'F64') return Float32Array.from(t.data as Float64Array);
  const words = t.data as Uint16Array;
  const out = new Float32Array(words.length);
  const u32 = new Uint32Array(out.buffer);
  if (t.dtype === 'BF16') {
    for (let i = 0; i < words.length; i++) u32[i] = words[i] << 16;
    return out;
  }
  if (t.dtype === 'F16') {
    for (let i = 0; i < words.length; i++) {
      const h = words[i];
      const s = (h & 0x8000) << 16;
      const e = (h >> 10) & 0x1f;
      const m = h & 0x3ff;
      if (e === 0) out[i] = (s ? -1 : 1) * m * 2 ** -24;
      else if (e === 31) u32[i] = s | 0x7f800000 | (m << 13);
      else u32[i] = s | ((e + 112) << 23) | (m << 13);
    }
    return out;
  }
  throw new Error(`tensor of dtype ${t.dtype} is not floating point`);
}
