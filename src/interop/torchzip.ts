/**
 * Reads the zip archive `torch.save` writes (PyTorch >= 1.6): `<prefix>/data.pkl` (the pickle), `<prefix>/data/<key>`
 * (one record per storage, raw elements), and since PyTorch 2.1 `<prefix>/byteorder` ("little" or "big"; absent means
 * little). The prefix is "archive" for file objects and was the file stem in some versions, so it is found, not
 * assumed. Tensors are strided views into storages: offsets and strides are honoured, so transposed or sliced
 * tensors (and several tensors sharing one storage) come out as the values PyTorch would show.
 */
import { unzipSync } from 'fflate';
import { UserError } from '../util/errors.js';
import type { Tensor } from '../sae/safetensors.js';
import { STORAGE_TYPES, type TensorRef, isTensor, unpickle } from './pickle.js';

/** Array type per dtype, as `Tensor` holds it (16-bit floats as their raw words). */
const ARRAYS = {
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  F64: Float64Array,
  I64: BigInt64Array,
  I32: Int32Array,
  I16: Int16Array,
  I8: Int8Array,
  U8: Uint8Array,
  BOOL: Uint8Array,
} as const;

/**
 * The state dict (name -> tensor) in a torch.save archive. F16 and BF16 tensors keep their 16-bit words, as in
 * `Tensor` from safetensors.ts (use `toFloat32`).
 */
export function readTorchStateDict(zip: Uint8Array, source: string): Record<string, Tensor> {
  if (zip.length < 4 || zip[0] !== 0x50 || zip[1] !== 0x4b) {
    throw new UserError(`${source}: the PyTorch data is not a zip archive (the pre-1.6 torch.save format is not supported; re-save it with a current PyTorch)`);
  }
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(zip);
  } catch (e) {
    throw new UserError(`${source}: the torch.save zip archive is truncated or corrupt (${(e as Error).message})`);
  }
  const pkls = Object.keys(files).filter((n) => n === 'data.pkl' || n.endsWith('/data.pkl'));
  if (pkls.length !== 1) throw new UserError(`${source}: expected one data.pkl in the torch.save archive, found ${pkls.length} (truncated or not a torch.save file?)`);
  const prefix = pkls[0].slice(0, -'data.pkl'.length);
  const order = files[`${prefix}byteorder`] ? Buffer.from(files[`${prefix}byteorder`]).toString('utf8').trim() : 'little';
  if (order !== 'little' && order !== 'big') throw new UserError(`${source}: unknown byteorder record "${order}"`);

  const root = unpickle(files[pkls[0]], source);
  if (!(root instanceof Map)) throw new UserError(`${source}: the pickle holds no state dict (a dict of tensors)`);
  const out: Record<string, Tensor> = {};
  for (const [name, value] of root) {
    if (typeof name !== 'string' || !isTensor(value)) throw new UserError(`${source}: state dict entry ${JSON.stringify(name)} is not a tensor`);
    const record = files[`${prefix}data/${value.storage.key}`];
    if (!record) throw new UserError(`${source}: storage record data/${value.storage.key} of tensor ${name} is missing (truncated archive?)`);
    out[name] = materialise(value, record, order === 'big', `${source}: tensor ${name}`);
  }
  return out;
}

/** Copies a strided view out of its storage record into a fresh, contiguous, aligned, little-endian array. */
function materialise(t: TensorRef, record: Uint8Array, bigEndian: boolean, where: string): Tensor {
  const dtype = STORAGE_TYPES[t.storage.type];
  const size = ARRAYS[dtype].BYTES_PER_ELEMENT;
  if (record.length !== t.storage.numel * size) {
    throw new UserError(`${where}: its storage has ${record.length} bytes, expected ${t.storage.numel} x ${size} (truncated archive?)`);
  }
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.shape.some((d) => d < 0) || t.stride.some((s) => s < 0) || t.offset < 0) throw new UserError(`${where}: negative shape, stride or offset`);
  const last = n === 0 ? t.offset : t.offset + t.shape.reduce((acc, d, i) => acc + (d - 1) * t.stride[i], 0);
  if (last >= t.storage.numel && n > 0) throw new UserError(`${where}: the view reaches element ${last} of a ${t.storage.numel}-element storage`);

  const out = new Uint8Array(n * size);
  const rank = t.shape.length;
  const contiguous = n === 0 || t.shape.every((d, i) => d === 1 || t.stride[i] === t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
  if (contiguous) {
    out.set(record.subarray(t.offset * size, (t.offset + n) * size));
  } else {
    // Walk the view in row-major order with an odometer over the outer dimensions.
    const inner = rank ? t.shape[rank - 1] : 1;
    const innerStride = rank ? t.stride[rank - 1] : 0;
    const idx = new Array(Math.max(rank - 1, 0)).fill(0);
    for (let row = 0, dst = 0; row < n / inner; row++) {
      let src = t.offset;
      for (let d = 0; d < rank - 1; d++) src += idx[d] * t.stride[d];
      for (let j = 0; j < inner; j++, dst += size) {
        const s = (src + j * innerStride) * size;
        for (let b = 0; b < size; b++) out[dst + b] = record[s + b];
      }
      for (let d = rank - 2; d >= 0 && ++idx[d] === t.shape[d]; d--) idx[d] = 0;
    }
  }
  if (bigEndian && size > 1) for (let i = 0; i < out.length; i += size) out.subarray(i, i + size).reverse();
  return { dtype, shape: [...t.shape], data: new ARRAYS[dtype](out.buffer) };
}
