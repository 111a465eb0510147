/**
 * ONNX models as protobuf messages, read and written with protobufjs from the official schema (onnx.proto next to
 * this module). Field names keep the schema's snake_case. The interfaces below type the part of the schema that
 * vitsae reads; every other field survives a decode/encode round trip untouched.
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { UserError } from '../util/errors.js';

/** int64 fields decode as `Long` objects; numbers are accepted when encoding. */
export type Int64 = number | { toNumber(): number };

export interface TensorShapeDim {
  dim_value?: Int64;
  dim_param?: string;
}

export interface TypeProto {
  tensor_type?: { elem_type?: number; shape?: { dim?: TensorShapeDim[] } };
}

export interface ValueInfoProto {
  name?: string;
  type?: TypeProto;
  doc_string?: string;
}

export interface StringStringEntryProto {
  key?: string;
  value?: string;
}

export interface TensorProto {
  name?: string;
  dims?: Int64[];
  data_type?: number;
  raw_data?: Uint8Array;
  data_location?: number;
  external_data?: StringStringEntryProto[];
}

export interface AttributeProto {
  name?: string;
  type?: number;
  i?: Int64;
  ints?: Int64[];
  t?: TensorProto;
  g?: GraphProto;
  graphs?: GraphProto[];
}

export interface NodeProto {
  input?: string[];
  output?: string[];
  name?: string;
  op_type?: string;
  domain?: string;
  attribute?: AttributeProto[];
}

export interface GraphProto {
  name?: string;
  node?: NodeProto[];
  initializer?: TensorProto[];
  sparse_initializer?: { values?: TensorProto }[];
  input?: ValueInfoProto[];
  output?: ValueInfoProto[];
  value_info?: ValueInfoProto[];
  doc_string?: string;
}

export interface ModelProto {
  ir_version?: Int64;
  opset_import?: { domain?: string; version?: Int64 }[];
  producer_name?: string;
  graph?: GraphProto;
  [field: string]: unknown;
}

/** TensorProto.DataType values used here. */
export const ElemType = { FLOAT: 1, INT64: 7, BOOL: 9 } as const;

let schema: protobuf.Root | undefined;

/** The parsed onnx.proto. The .proto file sits beside the compiled module's source, two levels above dist/. */
export function onnxSchema(): protobuf.Root {
  if (schema) return schema;
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.join(here, 'onnx.proto'), path.resolve(here, '../../../src/backbone/onnx.proto')];
  const file = candidates.find((f) => existsSync(f));
  if (!file) throw new Error(`onnx.proto not found (looked in ${candidates.join(', ')})`);
  schema = protobuf.parse(readFileSync(file, 'utf8'), { keepCase: true }).root;
  return schema;
}

export function onnxType(name: 'ModelProto' | 'GraphProto' | 'NodeProto' | 'TensorProto'): protobuf.Type {
  return onnxSchema().lookupType(`onnx.${name}`);
}

export function decodeModel(bytes: Uint8Array, source = 'model'): ModelProto {
  try {
    const model = onnxType('ModelProto').decode(bytes) as unknown as ModelProto;
    if (!model.graph) throw new Error('it has no graph');
    return model;
  } catch (e) {
    throw new UserError(`${source} is not an ONNX model: ${(e as Error).message}`);
  }
}

export function encodeModel(model: ModelProto): Uint8Array {
  return onnxType('ModelProto')
    .encode(model as object)
    .finish();
}

export function int(v: Int64 | undefined): number {
  return v === undefined ? 0 : typeof v === 'number' ? v : v.toNumber();
}

/** Every graph of a model: the main graph first, then the bodies of If/Loop/Scan nodes, recursively. */
export function* allGraphs(graph: GraphProto): Generator<GraphProto> {
  yield graph;
  for (const node of graph.node ?? []) for (const a of node.attribute ?? []) for (const g of a.g ? [a.g] : (a.graphs ?? [])) yield* allGraphs(g);
}

const EXTERNAL = 1;

/** Location of the in-memory external data that holds the weights stored inside the .onnx file. */
export const INLINE_WEIGHTS = 'vitsae-inline-weights.bin';
/** Initializers smaller than this stay in the graph (shape constants that graph optimisations read). */
const MIN_EXTERNAL_BYTES = 1024;

/**
 * Where the weights of a loaded model live, so that the graph protobuf handed to onnxruntime holds none of them:
 * encoding a split is then cheap, and no split meets protobuf's 2 GB limit. A model saved in one file has its large
 * initializers turned into external data handed to onnxruntime from memory as `INLINE_WEIGHTS` (the file's bytes,
 * never copied). A model saved with external data files keeps them: onnxruntime reads them from `folder` itself.
 * (onnxruntime takes no mix: once given external data from memory, it looks up every external file there.)
 */
export interface Weights {
  /** The .onnx file's bytes, on a SharedArrayBuffer so that worker threads read them without a copy; null for a model with data files. */
  inline: Uint8Array | null;
  /** Directory the model's external data files are resolved against. */
  folder: string;
}

export interface LoadedModel {
  model: ModelProto;
  weights: Weights;
}

/** onnxruntime session options that supply a model's external weights (see Weights). */
export function weightOptions(w: Weights): { externalData?: { path: string; data: Uint8Array }[]; extra: Record<string, string> } {
  return {
    ...(w.inline ? { externalData: [{ path: INLINE_WEIGHTS, data: w.inline }] } : {}),
    extra: { 'session.model_external_initializers_file_folder_path': w.folder },
  };
}

/** Files over 2 GiB are read in parts: one fs read is limited to 2^31 - 1 bytes. */
const READ_CHUNK = 1 << 30;

/**
 * Reads an .onnx file and keeps its weights out of the graph (see Weights): in a model without data files, large
 * initializers become views of the file's bytes; a model's own data files are checked (they exist, inside the
 * model's folder, long enough) but not read, so that a model of any size loads in the time it takes to read its graph.
 */
export async function loadModel(file: string): Promise<LoadedModel> {
  let bytes: Uint8Array;
  try {
    bytes = readShared(file);
  } catch (e) {
    throw new UserError(`cannot read model ${file}: ${(e as Error).message}`);
  }
  const model = decodeModel(bytes, file);
  const folder = path.dirname(path.resolve(file));
  const sizes = new Map<string, number>();
  const graphs = [...allGraphs(model.graph!)];
  for (const g of graphs)
    for (const t of [...(g.initializer ?? []), ...(g.sparse_initializer ?? []).flatMap((s) => (s.values ? [s.values] : []))]) if (t.data_location === EXTERNAL) checkExternal(t, folder, sizes, file);
  if (sizes.size) return { model, weights: { inline: null, folder } };
  for (const g of graphs) {
    for (const t of g.initializer ?? []) {
      if (t.raw_data && t.raw_data.byteLength >= MIN_EXTERNAL_BYTES) {
        // protobufjs decodes bytes fields as views of the input, so the tensor's offset in the file is its view's.
        if (t.raw_data.buffer !== bytes.buffer) throw new Error('protobufjs copied a tensor; expected a view of the model bytes');
        t.external_data = [
          { key: 'location', value: INLINE_WEIGHTS },
          { key: 'offset', value: String(t.raw_data.byteOffset - bytes.byteOffset) },
          { key: 'length', value: String(t.raw_data.byteLength) },
        ];
        t.data_location = EXTERNAL;
        t.raw_data = new Uint8Array(0);
      }
    }
  }
  return { model, weights: { inline: bytes, folder } };
}

function readShared(file: string): Uint8Array {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const bytes = new Uint8Array(new SharedArrayBuffer(size));
    for (let at = 0; at < size; ) {
      const n = readSync(fd, bytes, at, Math.min(READ_CHUNK, size - at), at);
      if (n === 0) throw new Error('the file shrank while it was read');
      at += n;
    }
    return bytes;
  } finally {
    closeSync(fd);
  }
}

/** A clear error now for external data that onnxruntime would fail on later, naming the tensor and the file. */
function checkExternal(t: TensorProto, folder: string, sizes: Map<string, number>, model: string): void {
  const info = new Map((t.external_data ?? []).map((e) => [e.key, e.value ?? '']));
  const location = info.get('location') ?? '';
  const where = `${model}: tensor ${t.name}'s external data "${location}"`;
  if (!location || path.isAbsolute(location) || path.normalize(location).startsWith('..'))
    throw new UserError(`${where} must be a file name relative to the model's folder (re-save the model with onnx.save_model(..., save_as_external_data=True, location="NAME.data"))`);
  const file = path.join(folder, location);
  let size = sizes.get(file);
  if (size === undefined) {
    try {
      size = statSync(file).size;
    } catch (e) {
      throw new UserError(`${where}: cannot open ${file} (${(e as NodeJS.ErrnoException).code}); keep the data file beside the .onnx file`);
    }
    sizes.set(file, size);
  }
  const offset = Number(info.get('offset') ?? 0);
  const length = info.has('length') ? Number(info.get('length')) : size - offset;
  if (offset + length > size)
    throw new UserError(`${where}: ${file} holds ${size} bytes, the tensor needs bytes ${offset}..${offset + length}; the data file is truncated or belongs to another model`);
}
