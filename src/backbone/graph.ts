/**
 * Graph surgery: an index of who produces and consumes each tensor, and extraction of the sub-model that computes
 * given tensors from given tensors (the front and the back of a split). Nodes with subgraphs (If, Loop, Scan) count
 * the outer tensors their bodies read as inputs, so a split never strands a body's outer reference.
 */
import { UserError } from '../util/errors.js';
import { ElemType, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto, int } from './onnx.js';

export interface GraphIndex {
  graph: GraphProto;
  nodes: NodeProto[];
  /** Inputs of each node, explicit ones first, then outer tensors read inside its subgraphs. */
  nodeInputs: string[][];
  /** Tensor name -> index of the node that produces it. */
  producer: Map<string, number>;
  consumers: Map<string, number[]>;
  initializers: Map<string, TensorProto>;
  /** Graph inputs that are fed at run time (inputs with an initializer of the same name are defaults, not fed). */
  runtimeInputs: string[];
}

export function indexGraph(graph: GraphProto): GraphIndex {
  const nodes = graph.node ?? [];
  const initializers = new Map<string, TensorProto>();
  for (const t of graph.initializer ?? []) initializers.set(t.name ?? '', t);
  for (const s of graph.sparse_initializer ?? []) if (s.values) initializers.set(s.values.name ?? '', s.values);
  const producer = new Map<string, number>();
  const consumers = new Map<string, number[]>();
  const nodeInputs = nodes.map((n) => [...(n.input ?? []), ...outerReads(n)].filter((t) => t !== ''));
  nodes.forEach((n, i) => {
    for (const t of n.output ?? []) if (t !== '') producer.set(t, i);
    for (const t of new Set(nodeInputs[i])) {
      const list = consumers.get(t);
      if (list) list.push(i);
      else consumers.set(t, [i]);
    }
  });
  const runtimeInputs = (graph.input ?? []).map((v) => v.name ?? '').filter((n) => !initializers.has(n));
  return { graph, nodes, nodeInputs, producer, consumers, initializers, runtimeInputs };
}

/** Tensors a node's subgraphs read from enclosing scopes: names used in a body but not defined in it. */
function outerReads(node: NodeProto): string[] {
  const reads = new Set<string>();
  for (const a of node.attribute ?? [])
    for (const g of a.g ? [a.g] : (a.graphs ?? [])) {
      const defined = new Set<string>([...(g.input ?? []).map((v) => v.name ?? ''), ...(g.initializer ?? []).map((t) => t.name ?? ''), ...(g.node ?? []).flatMap((n) => n.output ?? [])]);
      for (const n of g.node ?? []) for (const t of [...(n.input ?? []), ...outerReads(n)]) if (!defined.has(t)) reads.add(t);
      for (const v of g.output ?? []) if (!defined.has(v.name ?? '')) reads.add(v.name ?? '');
    }
  return [...reads];
}

/**
 * The model that computes `outputs` when fed `inputs`: the nodes needed between them, in the original order, with
 * the initializers they use. Graph inputs that are still needed (a path to an output that bypasses `inputs`) stay
 * inputs, after the given ones. Constants (initializers, Constant nodes, Identity of constants) are kept wherever
 * they are used, so front and back each carry their own weights.
 */
export function extractModel(model: ModelProto, inputs: string[], outputs: string[], idx = indexGraph(model.graph!)): ModelProto {
  const stop = new Set(inputs);
  const keepNode = new Set<number>();
  const keepInit = new Set<string>();
  const reachedInputs = new Set<string>();
  const graphInputs = new Set((idx.graph.input ?? []).map((v) => v.name ?? ''));
  const seen = new Set<string>();
  const todo = [...outputs];
  while (todo.length) {
    const t = todo.pop()!;
    if (seen.has(t)) continue;
    seen.add(t);
    if (stop.has(t)) continue;
    const p = idx.producer.get(t);
    if (p !== undefined) {
      if (!keepNode.has(p)) {
        keepNode.add(p);
        todo.push(...idx.nodeInputs[p]);
      }
    } else if (idx.initializers.has(t)) {
      keepInit.add(t);
      if (graphInputs.has(t)) reachedInputs.add(t);
    } else if (graphInputs.has(t)) reachedInputs.add(t);
    else throw new UserError(`tensor "${t}" is neither produced in the graph nor one of its inputs or initializers`);
  }
  const g = idx.graph;
  const info = valueInfoLookup(g);
  const typeOf = elemTypeResolver(idx);
  const describe = (name: string): ValueInfoProto => info.get(name) ?? { name, type: { tensor_type: { elem_type: typeOf(name) } } };
  const nodes = idx.nodes.filter((_, i) => keepNode.has(i));
  const produced = new Set(nodes.flatMap((n) => n.output ?? []));
  const boundary = new Set([...inputs, ...outputs]);
  const graph: GraphProto = {
    ...g,
    node: nodes,
    initializer: (g.initializer ?? []).filter((t) => keepInit.has(t.name ?? '')),
    sparse_initializer: (g.sparse_initializer ?? []).filter((s) => keepInit.has(s.values?.name ?? '')),
    input: [...inputs.map(describe), ...(g.input ?? []).filter((v) => reachedInputs.has(v.name ?? '') && !stop.has(v.name ?? ''))],
    output: outputs.map(describe),
    value_info: (g.value_info ?? []).filter((v) => produced.has(v.name ?? '') && !boundary.has(v.name ?? '')),
  };
  return { ...model, graph };
}

/** The front of a split: the model's inputs -> `tensors`. */
export function frontModel(model: ModelProto, tensors: string[], idx?: GraphIndex): ModelProto {
  return extractModel(model, [], tensors, idx);
}

/** The back of a split: `tensors` -> the model's outputs (plus any model input still needed on a bypassing path). */
export function backModel(model: ModelProto, tensors: string[], idx?: GraphIndex): ModelProto {
  return extractModel(
    model,
    tensors,
    (model.graph!.output ?? []).map((v) => v.name ?? ''),
    idx,
  );
}

function valueInfoLookup(g: GraphProto): Map<string, ValueInfoProto> {
  const m = new Map<string, ValueInfoProto>();
  for (const v of [...(g.value_info ?? []), ...(g.input ?? []), ...(g.output ?? [])]) if (v.type?.tensor_type) m.set(v.name ?? '', v);
  return m;
}

const INT64_OPS = new Set(['Shape', 'Size', 'NonZero', 'ArgMax', 'ArgMin', 'NonMaxSuppression']);
const BOOL_OPS = new Set(['Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor', 'IsNaN', 'IsInf']);

/**
 * Element type of a tensor without shape inference: declared value infos and initializers first, then the ops
 * whose output type is fixed (Cast, Shape, comparisons, Constant), otherwise the type of the node's first input.
 */
function elemTypeResolver(idx: GraphIndex): (name: string) => number {
  const known = new Map<string, number>();
  for (const [name, v] of valueInfoLookup(idx.graph)) known.set(name, v.type?.tensor_type?.elem_type ?? ElemType.FLOAT);
  for (const [name, t] of idx.initializers) known.set(name, t.data_type ?? ElemType.FLOAT);
  const fixed = (node: NodeProto): number | undefined => {
    const op = node.op_type ?? '';
    const attr = (k: string) => node.attribute?.find((a) => a.name === k);
    if (op === 'Cast') return int(attr('to')?.i);
    if (INT64_OPS.has(op)) return ElemType.INT64;
    if (BOOL_OPS.has(op)) return ElemType.BOOL;
    if (op === 'Constant' || op === 'ConstantOfShape') return attr('value')?.t?.data_type ?? ElemType.FLOAT;
    return undefined;
  };
  return (name: string): number => {
    const chain: string[] = [];
    let t: string | undefined = name;
    let type: number | undefined;
    while (t !== undefined && (type = known.get(t)) === undefined) {
      chain.push(t);
      const p = idx.producer.get(t);
      const node = p === undefined ? undefined : idx.nodes[p];
      type = node && fixed(node);
      if (type !== undefined) break;
      t = node?.input?.[0];
    }
    const result = type ?? ElemType.FLOAT;
    for (const c of chain) known.set(c, result);
    return result;
  };
}
