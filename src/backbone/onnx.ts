/**
 * ONNX models as protobuf messages, read and written with protobufjs from the official schema (onnx.proto next to
 * this module). Field names keep the schema's snake_case. The interfaces below type the part of the schema that
 * vitsae reads; every other field survives a decode/encode round trip untouched.
 */
import { existsSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
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
  return onnxType('ModelProto').encode(model as object).finish();
}

export function int(v: Int64 | undefined): number {
  return v === undefined ? 0 : typeof v === 'number' ? v : v.toNumber();
}

/** Every graph of a model: the main graph first, then the bodies of If/Loop/Scan nodes, recursively. */
export function* allGraphs(graph: GraphProto): Generator<GraphProto> {
  yield graph;
  for (const node of graph.node ?? [])
    for (const a of node.attribute ?? []) for (const g of a.g ? [a.g] : (a.graphs ?? [])) yield* allGraphs(g);
}

const EXTERNAL = 1;

/**
 * Reads an .onnx file. Weights kept in external data files (models saved with `save_as_external_data`) are read
 * into the tensors, so that the model can be split and handed to onnxruntime as one buffer.
 */
export async function loadModel(file: string): Promise<ModelProto> {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    throw new UserError(`cannot read model ${file}: ${(e as Error).message}`);
  }
  const model = decodeModel(bytes, file);
  for (const g of allGraphs(model.graph!))
    for (const t of g.initializer ?? []) if (t.data_location === EXTERNAL) await inlineExternal(t, path.dirname(file));
  return model;
}

async function inlineExternal(t: TensorProto, dir: string): Promise<void> {
  const info = new Map((t.external_data ?? []).map((e) => [e.key, e.value ?? '']));
  const file = path.join(dir, info.get('location') ?? '');
  const offset = Number(info.get('offset') ?? 0);
  const fh = await open(file, 'r').catch((e: Error) => {
    throw new UserError(`tensor ${t.name}: cannot open its external data ${file}: ${e.message}`);
  });
  try {
    const length = info.has('length') ? Number(info.get('length')) : (await fh.stat()).size - offset;
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    if (bytesRead !== length) throw new UserError(`tensor ${t.name}: external data ${file} is truncated`);
    t.raw_data = buf;
    t.data_location = 0;
    t.external_data = [];
  } finally {
    await fh.close();
  }
}
