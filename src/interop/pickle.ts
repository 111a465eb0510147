/**
 * A strict unpickler for the `data.pkl` record of a `torch.save` archive of a state dict. It understands exactly
 * the pickle protocol 2 opcodes torch.save emits for an (Ordered)dict of tensors, builds plain values, and never
 * calls anything: the few globals torch needs (OrderedDict, the tensor rebuild functions, the storage classes) are
 * interpreted here, and any other global or opcode stops the read with an error naming it. This is the whole point
 * of not using Python's pickle: a checkpoint from elsewhere cannot run code on the reader's machine.
 */
import { UserError } from '../util/errors.js';

/** Torch's legacy storage classes, which name the element type of a tensor's storage in the pickle. */
export const STORAGE_TYPES = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
} as const;

type StorageType = keyof typeof STORAGE_TYPES;

/** A persistent id of torch.save: the storage's element type and the archive record (`data/<key>`) holding it. */
export interface StorageRef {
  kind: 'storage';
  type: StorageType;
  key: string;
  /** Number of elements, as recorded in the pickle. */
  numel: number;
}

/** A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage (offset and strides in elements). */
export interface TensorRef {
  kind: 'tensor';
  storage: StorageRef;
  offset: number;
  shape: number[];
  stride: number[];
}

interface GlobalRef {
  kind: 'global';
  name: AllowedGlobal;
}

export type PickleValue = null | boolean | number | string | PickleValue[] | PickleDict | TensorRef | StorageRef | GlobalRef;
type PickleDict = Map<string | number, PickleValue>;

type AllowedGlobal = 'collections.OrderedDict' | 'torch._utils._rebuild_tensor_v2' | 'torch._utils._rebuild_parameter' | `torch.${StorageType}`;

const ALLOWED_GLOBALS = new Set<string>(['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter', ...Object.keys(STORAGE_TYPES).map((t) => `torch.${t}`)]);

/** Names of every pickle opcode (protocols 0-5), so that a refusal names what it found. */
const OPCODE_NAMES: Record<number, string> = Object.fromEntries(
  (
    [
      ['(', 'MARK'],
      ['.', 'STOP'],
      ['0', 'POP'],
      ['1', 'POP_MARK'],
      ['2', 'DUP'],
      ['F', 'FLOAT'],
      ['I', 'INT'],
      ['J', 'BININT'],
      ['K', 'BININT1'],
      ['L', 'LONG'],
      ['M', 'BININT2'],
      ['N', 'NONE'],
      ['P', 'PERSID'],
      ['Q', 'BINPERSID'],
      ['R', 'REDUCE'],
      ['S', 'STRING'],
      ['T', 'BINSTRING'],
      ['U', 'SHORT_BINSTRING'],
      ['V', 'UNICODE'],
      ['X', 'BINUNICODE'],
      ['a', 'APPEND'],
      ['b', 'BUILD'],
      ['c', 'GLOBAL'],
      ['d', 'DICT'],
      ['}', 'EMPTY_DICT'],
      ['e', 'APPENDS'],
      ['g', 'GET'],
      ['h', 'BINGET'],
      ['i', 'INST'],
      ['j', 'LONG_BINGET'],
      ['l', 'LIST'],
      [']', 'EMPTY_LIST'],
      ['o', 'OBJ'],
      ['p', 'PUT'],
      ['q', 'BINPUT'],
      ['r', 'LONG_BINPUT'],
      ['s', 'SETITEM'],
      ['t', 'TUPLE'],
      [')', 'EMPTY_TUPLE'],
      ['u', 'SETITEMS'],
      ['G', 'BINFLOAT'],
      ['\x80', 'PROTO'],
      ['\x81', 'NEWOBJ'],
      ['\x82', 'EXT1'],
      ['\x83', 'EXT2'],
      ['\x84', 'EXT4'],
      ['\x85', 'TUPLE1'],
      ['\x86', 'TUPLE2'],
      ['\x87', 'TUPLE3'],
      ['\x88', 'NEWTRUE'],
      ['\x89', 'NEWFALSE'],
      ['\x8a', 'LONG1'],
      ['\x8b', 'LONG4'],
      ['B', 'BINBYTES'],
      ['C', 'SHORT_BINBYTES'],
      ['\x8c', 'SHORT_BINUNICODE'],
      ['\x8d', 'BINUNICODE8'],
      ['\x8e', 'BINBYTES8'],
      ['\x8f', 'EMPTY_SET'],
      ['\x90', 'ADDITEMS'],
      ['\x91', 'FROZENSET'],
      ['\x92', 'NEWOBJ_EX'],
      ['\x93', 'STACK_GLOBAL'],
      ['\x94', 'MEMOIZE'],
      ['\x95', 'FRAME'],
      ['\x96', 'BYTEARRAY8'],
      ['\x97', 'NEXT_BUFFER'],
      ['\x98', 'READONLY_BUFFER'],
    ] as const
  ).map(([c, n]) => [c.charCodeAt(0), n]),
);

const MARK = Symbol('mark');

/**
 * Unpickles a torch.save `data.pkl`. `source` names the file in errors. Tensors come back as `TensorRef`s (the caller
 * reads their storages from the archive); dicts as Maps; tuples as arrays.
 */
export function unpickle(bytes: Uint8Array, source: string): PickleValue {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: (PickleValue | typeof MARK)[] = [];
  const memo = new Map<number, PickleValue>();
  let pos = 0;
  let opAt = 0;

  const fail = (why: string) => new UserError(`${source}: ${why} (pickle byte ${opAt}); vitsae reads only the state dicts torch.save writes`);
  const need = (n: number) => {
    if (pos + n > bytes.length) throw fail('the pickle ends in the middle of an opcode (truncated?)');
    const at = pos;
    pos += n;
    return at;
  };
  const pop = (): PickleValue => {
    const v = stack.pop();
    if (v === undefined || v === MARK) throw fail('the pickle stack is malformed');
    return v;
  };
  const top = (): PickleValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) throw fail('the pickle stack is malformed');
    return v;
  };
  const popMark = (): PickleValue[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) throw fail('no MARK on the pickle stack');
    const items = stack.splice(i) as PickleValue[];
    items.shift();
    return items;
  };
  const readLine = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) throw fail('the pickle ends in the middle of a GLOBAL (truncated?)');
    const s = Buffer.from(bytes.buffer, bytes.byteOffset + pos, end - pos).toString('utf8');
    pos = end + 1;
    return s;
  };
  const getMemo = (i: number): PickleValue => {
    const v = memo.get(i);
    if (v === undefined) throw fail(`memo entry ${i} is used before it is set`);
    return v;
  };
  const setItem = (dict: PickleValue, key: PickleValue, value: PickleValue) => {
    if (!(dict instanceof Map)) throw fail('SETITEM on something that is not a dict');
    if (typeof key !== 'string' && typeof key !== 'number') throw fail('a dict key is not a string or an integer');
    dict.set(key, value);
  };

  for (;;) {
    opAt = pos;
    const op = bytes[need(1)];
    switch (op) {
      case 0x80: {
        const proto = bytes[need(1)];
        if (proto > 2) throw fail(`pickle protocol ${proto}: torch.save writes protocol 2 unless told otherwise, and vitsae reads only that`);
        break;
      }
      case 0x63 /* GLOBAL */:
        {
          const name = `${readLine()}.${readLine()}`;
          if (!ALLOWED_GLOBALS.has(name))
            throw fail(`refusing pickle global ${name}: only ${[...ALLOWED_GLOBALS].slice(0, 3).join(', ')} and torch storage types may appear, and nothing is ever executed`);
          stack.push({ kind: 'global', name: name as AllowedGlobal });
          break;
        }
      case 0x71 /* BINPUT */:
        memo.set(bytes[need(1)], top());
        break;
      case 0x72 /* LONG_BINPUT */:
        memo.set(view.getUint32(need(4), true), top());
        break;
      case 0x68 /* BINGET */:
        stack.push(getMemo(bytes[need(1)]));
        break;
      case 0x6a /* LONG_BINGET */:
        stack.push(getMemo(view.getUint32(need(4), true)));
        break;
      case 0x28 /* MARK */:
        stack.push(MARK);
        break;
      case 0x29 /* EMPTY_TUPLE */:
        stack.push([]);
        break;
      case 0x74 /* TUPLE */:
        stack.push(popMark());
        break;
      case 0x85 /* TUPLE1 */:
      case 0x86 /* TUPLE2 */:
      case 0x87 /* TUPLE3 */:
        {
          const n = op - 0x84;
          const items: PickleValue[] = [];
          for (let i = 0; i < n; i++) items.unshift(pop());
          stack.push(items);
          break;
        }
      case 0x7d /* EMPTY_DICT */:
        stack.push(new Map());
        break;
      case 0x73 /* SETITEM */:
        {
          const value = pop();
          const key = pop();
          setItem(top(), key, value);
          break;
        }
      case 0x75 /* SETITEMS */:
        {
          const items = popMark();
          if (items.length % 2) throw fail('SETITEMS with an odd number of items');
          for (let i = 0; i < items.length; i += 2) setItem(top(), items[i], items[i + 1]);
          break;
        }
      case 0x58 /* BINUNICODE */:
        {
          const n = view.getUint32(need(4), true);
          const at = need(n);
          stack.push(Buffer.from(bytes.buffer, bytes.byteOffset + at, n).toString('utf8'));
          break;
        }
      case 0x4b /* BININT1 */:
        stack.push(bytes[need(1)]);
        break;
      case 0x4d /* BININT2 */:
        stack.push(view.getUint16(need(2), true));
        break;
      case 0x4a /* BININT */:
        stack.push(view.getInt32(need(4), true));
        break;
      case 0x8a /* LONG1 */:
        {
          const n = bytes[need(1)];
          const at = need(n);
          let v = 0n;
          for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i]);
          if (n > 0 && bytes[at + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
          if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw fail(`integer ${v} is too large`);
          stack.push(Number(v));
          break;
        }
      case 0x4e /* NONE */:
        stack.push(null);
        break;
      case 0x88 /* NEWTRUE */:
        stack.push(true);
        break;
      case 0x89 /* NEWFALSE */:
        stack.push(false);
        break;
      case 0x51 /* BINPERSID */:
        stack.push(storageRef(pop(), fail));
        break;
      case 0x52 /* REDUCE */:
        {
          const args = pop();
          const fn = pop();
          stack.push(reduce(fn, args, fail));
          break;
        }
      case 0x62 /* BUILD */:
        {
          // torch attaches `_metadata` (per-module version numbers) to a state dict; nothing in it changes the weights.
          const state = pop();
          if (!(top() instanceof Map) || !(state instanceof Map)) throw fail('BUILD of something other than a dict with dict state');
          break;
        }
      case 0x2e /* STOP */:
        {
          const result = pop();
          if (stack.length) throw fail('values are left on the pickle stack at STOP');
          return result;
        }
      default:
        throw fail(`unexpected pickle opcode 0x${op.toString(16).padStart(2, '0')} (${OPCODE_NAMES[op] ?? 'not a pickle opcode'})`);
    }
  }
}

function storageRef(pid: PickleValue, fail: (why: string) => Error): StorageRef {
  if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== 'storage') throw fail(`persistent id ${JSON.stringify(pid)} is not a torch storage`);
  const [, type, key, , numel] = pid;
  const typeName = isGlobal(type) ? type.name.slice('torch.'.length) : '';
  if (!(typeName in STORAGE_TYPES)) throw fail('a storage persistent id does not name a torch storage type');
  if (typeof key !== 'string' || typeof numel !== 'number') throw fail('a storage persistent id has a malformed key or size');
  return { kind: 'storage', type: typeName as StorageType, key, numel };
}

/** The only "calls" a torch state dict needs, interpreted rather than executed. */
function reduce(fn: PickleValue, args: PickleValue, fail: (why: string) => Error): PickleValue {
  if (!isGlobal(fn) || !Array.isArray(args)) throw fail('REDUCE of something that is not an allowed global');
  switch (fn.name) {
    case 'collections.OrderedDict':
      if (args.length) throw fail('OrderedDict with arguments');
      return new Map();
    case 'torch._utils._rebuild_tensor_v2': {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      const [storage, offset, shape, stride] = args;
      const ints = (v: PickleValue) => Array.isArray(v) && v.every((x) => typeof x === 'number');
      if (args.length < 6 || !isStorage(storage) || typeof offset !== 'number' || !ints(shape) || !ints(stride) || (shape as number[]).length !== (stride as number[]).length) {
        throw fail('_rebuild_tensor_v2 with malformed arguments');
      }
      return { kind: 'tensor', storage, offset, shape: shape as number[], stride: stride as number[] };
    }
    case 'torch._utils._rebuild_parameter': {
      // (data, requires_grad, backward_hooks): an nn.Parameter saved directly is just its tensor here.
      const data = args[0];
      if (!isTensor(data)) throw fail('_rebuild_parameter of something that is not a tensor');
      return data;
    }
    default:
      throw fail(`${fn.name} cannot be called`);
  }
}

function isGlobal(v: PickleValue | undefined): v is GlobalRef {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Map) && v.kind === 'global';
}

function isStorage(v: PickleValue | undefined): v is StorageRef {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Map) && v.kind === 'storage';
}

export function isTensor(v: PickleValue | undefined): v is TensorRef {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Map) && v.kind === 'tensor';
}
