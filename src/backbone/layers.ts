/**
 * Finds the residual stream of a model from its graph's structure alone, so that it works whatever the exporter
 * named things. A residual Add adds a branch back onto the tensor the branch started from: its two inputs share a
 * latest common ancestor, the fork. Residual Adds chain when one's fork is the previous one's output (seen through
 * pass-through ops such as a ResNet's ReLU); the longest chain is the residual stream. In a transformer each block
 * contributes an attention Add (its branch holds a Softmax) and an MLP Add; the block's output is the Add just
 * before the next attention Add, and the last one. Without attention (a CNN) every residual Add ends a block.
 */
import type { GraphIndex } from './graph.js';

export interface StreamTensor {
  /** The residual-stream tensor after the block. */
  tensor: string;
  /** Name of the Add node that closes the block (a hint for people, not used for finding it). */
  node: string;
}

const PASS_THROUGH = new Set(['Relu', 'LeakyRelu', 'Clip', 'Identity']);
const ATTENTION = new Set(['Softmax', 'Attention', 'MultiHeadAttention']);

/** Block outputs along the residual stream, first block first; empty when the graph has no residual chain. */
export function residualStream(idx: GraphIndex): StreamTensor[] {
  const { nodes, nodeInputs, producer } = idx;
  const n = nodes.length;
  const order = topologicalOrder(idx);
  const rank = new Int32Array(n);
  order.forEach((node, r) => (rank[node] = r));
  const words = (n + 31) >>> 5;
  // anc_NW: per node, a bitset of `words` 32-bit words over the ranks of its ancestors, itself included.
  const anc_NW = new Uint32Array(n * words);
  const dynamic = new Uint8Array(n);
  const runtime = new Set(idx.runtimeInputs);
  for (const i of order) {
    const row = anc_NW.subarray(i * words, (i + 1) * words);
    row[rank[i] >>> 5] |= 1 << (rank[i] & 31);
    for (const t of nodeInputs[i]) {
      const p = producer.get(t);
      if (p === undefined) {
        if (runtime.has(t)) dynamic[i] = 1;
        continue;
      }
      dynamic[i] |= dynamic[p];
      const prow = anc_NW.subarray(p * words, (p + 1) * words);
      for (let w = 0; w < words; w++) row[w] |= prow[w];
    }
  }
  const has = (i: number, j: number) => (anc_NW[i * words + (rank[j] >>> 5)] >>> (rank[j] & 31)) & 1;
  const latestCommon = (a: number, b: number): number => {
    for (let w = words - 1; w >= 0; w--) {
      const m = anc_NW[a * words + w] & anc_NW[b * words + w];
      if (m) return order[w * 32 + 31 - Math.clz32(m)];
    }
    return -1;
  };
  const passBack = (i: number): number => {
    while (PASS_THROUGH.has(nodes[i].op_type ?? '')) {
      const p = producer.get(nodes[i].input?.[0] ?? '');
      if (p === undefined) break;
      i = p;
    }
    return i;
  };

  // Residual Adds, each with its fork, linked to the residual Add that produced its fork (or -1).
  const prev = new Map<number, number>();
  const fork = new Map<number, number>();
  for (const i of order) {
    const node = nodes[i];
    if (node.op_type !== 'Add' || (node.domain ?? '') !== '' || node.input?.length !== 2) continue;
    const [a, b] = node.input.map((t) => producer.get(t));
    if (a === undefined || b === undefined || a === b || !dynamic[a] || !dynamic[b]) continue;
    const f = latestCommon(a, b);
    if (f < 0) continue;
    fork.set(i, f);
    const p = passBack(f);
    prev.set(i, fork.has(p) ? p : -1);
  }
  const depth = new Map<number, number>();
  let last = -1;
  for (const i of order) {
    if (!fork.has(i)) continue;
    const p = prev.get(i)!;
    depth.set(i, p < 0 ? 1 : depth.get(p)! + 1);
    if (last < 0 || depth.get(i)! > depth.get(last)!) last = i;
  }
  const chain: number[] = [];
  for (let i = last; i >= 0; i = prev.get(i)!) chain.unshift(i);

  const attention = chain.map((add) => order.some((s) => ATTENTION.has(nodes[s].op_type ?? '') && has(s, fork.get(add)!) && s !== fork.get(add) && has(add, s)));
  const transformer = attention.some(Boolean);
  return chain.filter((_, k) => !transformer || k === chain.length - 1 || attention[k + 1]).map((add) => ({ tensor: streamOutput(idx, add), node: nodes[add].name ?? '' }));
}

/** The Add's output, or the output of the pass-through op (ReLU) that is its only consumer. */
function streamOutput(idx: GraphIndex, add: number): string {
  let t = idx.nodes[add].output![0];
  for (;;) {
    const c = idx.consumers.get(t) ?? [];
    if (c.length !== 1 || !PASS_THROUGH.has(idx.nodes[c[0]].op_type ?? '')) return t;
    t = idx.nodes[c[0]].output![0];
  }
}

/** Node indices in an order where producers come first (ONNX requires sorted graphs, but not every tool obeys). */
function topologicalOrder(idx: GraphIndex): number[] {
  const n = idx.nodes.length;
  const missing = new Int32Array(n);
  const ready: number[] = [];
  for (let i = 0; i < n; i++) {
    missing[i] = new Set(idx.nodeInputs[i].filter((t) => idx.producer.has(t))).size;
    if (missing[i] === 0) ready.push(i);
  }
  const order: number[] = [];
  for (let k = 0; k < ready.length; k++) {
    const i = ready[k];
    order.push(i);
    for (const t of idx.nodes[i].output ?? []) for (const c of idx.consumers.get(t) ?? []) if (--missing[c] === 0) ready.push(c);
  }
  if (order.length !== n) throw new Error('the graph has a cycle');
  return order;
}
