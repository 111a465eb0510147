import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it, before } from 'node:test';
import * as ort from 'onnxruntime-node';
import { type Backbone, createSession, listLayers, openBackbone, selectLayers, tokenLayout } from '../src/backbone/backbone.js';
import { frontModel, indexGraph, backModel } from '../src/backbone/graph.js';
import { residualStream } from '../src/backbone/layers.js';
import { decodeModel, encodeModel, type GraphProto, type ModelProto, type NodeProto, type TensorProto } from '../src/backbone/onnx.js';
import { layersCommand } from '../src/cli/commands/layers.js';
import { runForJson } from './fixtures/helpers.js';
import { fixtureModel } from './fixtures/models.js';

/** Deterministic pseudo-random floats in [-1, 1). */
function noise(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  return out;
}

function maxAbsDiff(a: ort.Tensor, b: ort.Tensor): number {
  assert.deepEqual(a.dims, b.dims);
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  return m;
}

/**
 * Runs the full model and back(front(x)) at each cut, and checks that every output agrees to 1e-5 and that the
 * back needs nothing but the cut tensor, unless the cut is listed in `bypassed` (a path from the input to an
 * output goes around it, so the back takes the input as well).
 */
async function assertSplitsAgree(model: ModelProto, input: string, x: ort.Tensor, cuts: string[], bypassed: string[] = [], bb?: Backbone): Promise<void> {
  const full = await createSession(model, bb);
  const want = await full.run({ [input]: x });
  for (const cut of cuts) {
    const front = await createSession(frontModel(model, [cut]), bb);
    const back = await createSession(backModel(model, [cut]), bb);
    const extra = bypassed.includes(cut) ? { [input]: x } : {};
    assert.deepEqual(back.inputNames, [cut, ...Object.keys(extra)], `inputs of the back at ${cut}`);
    const mid = await front.run({ [input]: x });
    const got = await back.run({ [cut]: mid[cut], ...extra });
    assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
    for (const name of full.outputNames) assert.ok(maxAbsDiff(got[name], want[name]) <= 1e-5, `${cut} -> ${name}`);
  }
}

function imageBatch(n: number, seed: number): ort.Tensor {
  return new ort.Tensor('float32', noise(n * 3 * 32 * 32, seed), [n, 3, 32, 32]);
}

describe('exported ViTs and a CNN', () => {
  const bbs: Record<string, Backbone> = {};
  before(async () => {
    for (const m of ['vit_hf', 'vit_tv', 'cnn'] as const) bbs[m] = await openBackbone(fixtureModel(m));
  });

  it('finds one residual-stream tensor per block, whatever the names', () => {
    assert.deepEqual(
      bbs.vit_hf.stream.map((s) => s.node),
      [0, 1, 2].map((i) => `/vision_model/encoder/layers.${i}/Add_1`),
    );
    // The last block's Add is the graph output itself.
    assert.equal(bbs.vit_hf.stream[2].tensor, 'last_hidden_state');
    assert.deepEqual(
      bbs.vit_tv.stream.map((s) => s.tensor),
      [0, 1, 2].map((i) => `/encoder/layers/encoder_layer_${i}/Add_1_output_0`),
    );
    // A CNN block ends after the ReLU that follows its Add, across the downsampling block too.
    assert.deepEqual(
      bbs.cnn.stream.map((s) => s.tensor),
      ['/layer1/Relu_1_output_0', '/layer2/Relu_1_output_0'],
    );
  });

  it('lists layers with their shapes for one image', async () => {
    assert.deepEqual(await listLayers(bbs.vit_hf), [
      { name: '/vision_model/encoder/layers.0/Add_1_output_0', shape: [1, 19, 32], block: 0 },
      { name: '/vision_model/encoder/layers.1/Add_1_output_0', shape: [1, 19, 32], block: 1 },
      { name: 'last_hidden_state', shape: [1, 19, 32], block: 2 },
    ]);
    assert.deepEqual(
      (await listLayers(bbs.cnn)).map((l) => l.shape),
      [
        [1, 16, 32, 32],
        [1, 32, 16, 16],
      ],
    );
  });

  it('resolves --layer by block index, negative index and tensor name', () => {
    const bb = bbs.vit_tv;
    assert.deepEqual(selectLayers(bb, ['-2', '0']), [
      { name: '/encoder/layers/encoder_layer_1/Add_1_output_0', block: 1 },
      { name: '/encoder/layers/encoder_layer_0/Add_1_output_0', block: 0 },
    ]);
    assert.deepEqual(selectLayers(bb, ['/encoder/layers/encoder_layer_1/Add_output_0']), [{ name: '/encoder/layers/encoder_layer_1/Add_output_0', block: null }]);
    assert.throws(() => selectLayers(bb, ['3']), /has 3 blocks/);
    assert.throws(() => selectLayers(bb, ['-4']), /has 3 blocks/);
    assert.throws(() => selectLayers(bb, ['nope']), /no tensor of that name/);
    assert.throws(() => selectLayers(bb, ['1', '-2']), /chosen twice/);
  });

  it('tells CLS and register tokens from patches, and turns a feature map into tokens', async () => {
    assert.deepEqual(await tokenLayout(bbs.vit_hf, selectLayers(bbs.vit_hf, ['-2', '-1'])), {
      layout: 'ntd',
      prefixTokens: 3,
      patchTokens: 16,
      dModel: 32,
      grid: [4, 4],
    });
    assert.deepEqual(await tokenLayout(bbs.vit_tv, selectLayers(bbs.vit_tv, ['1'])), { layout: 'ntd', prefixTokens: 1, patchTokens: 16, dModel: 32, grid: [4, 4] });
    assert.deepEqual(await tokenLayout(bbs.cnn, selectLayers(bbs.cnn, ['0'])), { layout: 'nchw', prefixTokens: 0, patchTokens: 1024, dModel: 16, grid: [32, 32] });
    await assert.rejects(tokenLayout(bbs.cnn, selectLayers(bbs.cnn, ['0', '1'])), /different token shapes/);
  });

  it('back(front(x)) equals the full model to 1e-5 at every block and off the stream', async () => {
    for (const [m, extra] of [
      ['vit_hf', '/vision_model/encoder/layers.1/Add_output_0'],
      ['vit_tv', '/encoder/layers/encoder_layer_0/Add_output_0'],
      ['cnn', '/layer1/Add_output_0'],
    ] as const) {
      const bb = bbs[m];
      await assertSplitsAgree(bb.model, bb.input.name, imageBatch(2, 7), [...bb.stream.map((s) => s.tensor), extra], [], bb);
    }
  });

  it('a back cut inside a block, where the skip path goes around the cut, also takes the input', async () => {
    const bb = bbs.cnn;
    await assertSplitsAgree(bb.model, bb.input.name, imageBatch(2, 8), ['/layer2/Relu_output_0'], ['/layer2/Relu_output_0'], bb);
  });

  it('a front with several outputs computes each as a single front does', async () => {
    const bb = bbs.vit_hf;
    const names = selectLayers(bb, ['0', '-1']).map((l) => l.name);
    const x = imageBatch(3, 11);
    const both = await (await createSession(frontModel(bb.model, names), bb)).run({ pixel_values: x });
    for (const n of names) {
      const one = await (await createSession(frontModel(bb.model, [n]), bb)).run({ pixel_values: x });
      assert.equal(maxAbsDiff(both[n], one[n]), 0);
    }
  });

  it('vitsae layers --json prints {name, shape, block} per block', async () => {
    assert.deepEqual(await runForJson(layersCommand, [fixtureModel('vit_tv'), '--json']), [
      [0, 1, 2].map((block) => ({ name: `/encoder/layers/encoder_layer_${block}/Add_1_output_0`, shape: [1, 17, 32], block })),
    ]);
  });

  it('round-trips the protobuf byte for byte', () => {
    const bytes = encodeModel(bbs.vit_tv.model);
    assert.deepEqual(encodeModel(decodeModel(bytes)), bytes);
  });
});

// A graph built here with the ONNX schema: patchify conv, a CLS token expanded to the batch through Shape, two
// pre-LN blocks (Softmax branch, ReLU MLP scaled by a Constant node), block 1 reusing block 0's MLP weight through
// an Identity (as exporters merge equal constants), and an If whose branches read the last block from outer scope.
const D = 8;
function tensor(name: string, dims: number[], data: Float32Array | number[], dataType = 1): TensorProto {
  const bytes = dataType === 7 ? new Uint8Array(new BigInt64Array(data.length).map((_, i) => BigInt(data[i])).buffer) : new Uint8Array(Float32Array.from(data).buffer);
  return { name, dims, data_type: dataType, raw_data: bytes };
}
function node(op_type: string, input: string[], output: string[], attribute: NodeProto['attribute'] = []): NodeProto {
  return { op_type, input, output, name: `${op_type}_${output[0]}`, attribute };
}
const ints = (name: string, v: number[]) => ({ name, type: 7, ints: v });
const tensorAttr = (t: TensorProto) => ({ name: 'value', type: 4, t });
const valueInfo = (name: string, dims: (number | string)[]) => ({
  name,
  type: { tensor_type: { elem_type: 1, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } },
});

function builtModel(): ModelProto {
  const inits = [
    tensor('patch.w', [D, 3, 4, 4], noise(D * 48, 1)),
    tensor('patch.b', [D], noise(D, 2)),
    tensor('cls', [1, 1, D], noise(D, 3)),
    tensor('ln.g', [D], noise(D, 4)),
    tensor('ln.b', [D], noise(D, 5)),
    tensor('attn0.w', [D, D], noise(D * D, 6)),
    tensor('attn1.w', [D, D], noise(D * D, 7)),
    tensor('mlp.w', [D, D], noise(D * D, 8)),
    tensor('tail', [2], [1, D], 7),
  ];
  const nodes: NodeProto[] = [
    node('Conv', ['x', 'patch.w', 'patch.b'], ['p'], [ints('kernel_shape', [4, 4]), ints('strides', [4, 4])]),
    node('Constant', [], ['shape3'], [tensorAttr(tensor('', [3], [0, D, 4], 7))]),
    node('Reshape', ['p', 'shape3'], ['f']),
    node('Transpose', ['f'], ['t'], [ints('perm', [0, 2, 1])]),
    node('Shape', ['x'], ['xs']),
    node('Constant', [], ['zero'], [tensorAttr(tensor('', [1], [0], 7))]),
    node('Constant', [], ['one'], [tensorAttr(tensor('', [1], [1], 7))]),
    node('Slice', ['xs', 'zero', 'one'], ['n']),
    node('Concat', ['n', 'tail'], ['clsShape'], [{ name: 'axis', type: 2, i: 0 }]),
    node('Expand', ['cls', 'clsShape'], ['c']),
    node('Concat', ['c', 't'], ['h0'], [{ name: 'axis', type: 2, i: 1 }]),
    node('Constant', [], ['scale'], [tensorAttr(tensor('', [], [0.5]))]),
    node('Identity', ['mlp.w'], ['mlp1.w']),
  ];
  let h = 'h0';
  for (const k of [0, 1]) {
    nodes.push(
      node('LayerNormalization', [h, 'ln.g', 'ln.b'], [`a${k}.ln`], [{ name: 'axis', type: 2, i: -1 }]),
      node('MatMul', [`a${k}.ln`, `attn${k}.w`], [`a${k}.mm`]),
      node('Softmax', [`a${k}.mm`], [`a${k}.sm`]),
      node('Add', [h, `a${k}.sm`], [`r${k}a`]),
      node('LayerNormalization', [`r${k}a`, 'ln.g', 'ln.b'], [`m${k}.ln`], [{ name: 'axis', type: 2, i: -1 }]),
      node('MatMul', [`m${k}.ln`, k ? 'mlp1.w' : 'mlp.w'], [`m${k}.mm`]),
      node('Relu', [`m${k}.mm`], [`m${k}.relu`]),
      node('Mul', [`m${k}.relu`, 'scale'], [`m${k}.out`]),
      node('Add', [`r${k}a`, `m${k}.out`], [`r${k}`]),
    );
    h = `r${k}`;
  }
  const branch = (name: string, op: string): GraphProto => ({ name, node: [node(op, [h], [`${name}.y`])], output: [valueInfo(`${name}.y`, ['N', 5, D])] });
  nodes.push(
    node('Constant', [], ['cond'], [tensorAttr({ dims: [], data_type: 9, raw_data: new Uint8Array([1]) })]),
    node(
      'If',
      ['cond'],
      ['branched'],
      [
        { name: 'then_branch', type: 5, g: branch('then', 'Identity') },
        { name: 'else_branch', type: 5, g: branch('else', 'Neg') },
      ],
    ),
    node('ReduceMean', ['branched'], ['logits'], [ints('axes', [1]), { name: 'keepdims', type: 2, i: 0 }]),
  );
  return {
    ir_version: 8,
    opset_import: [{ domain: '', version: 17 }],
    producer_name: 'vitsae test',
    graph: { name: 'built', node: nodes, initializer: inits, input: [valueInfo('x', ['N', 3, 8, 8])], output: [valueInfo('logits', ['N', D])] },
  };
}

/** The same model with every weight in a Constant node and no initializers, as some exporters write it. */
function constantsOnly(model: ModelProto): ModelProto {
  const g = model.graph!;
  const consts = (g.initializer ?? []).map((t) => node('Constant', [], [t.name!], [tensorAttr({ ...t, name: '' })]));
  return { ...model, graph: { ...g, initializer: [], node: [...consts, ...(g.node ?? [])] } };
}

describe('a graph built with protobufjs', () => {
  const x = new ort.Tensor('float32', noise(2 * 3 * 8 * 8, 9), [2, 3, 8, 8]);

  for (const [label, make] of [
    ['with initializers', builtModel],
    ['with weights in Constant nodes', () => constantsOnly(builtModel())],
  ] as const) {
    it(`${label}: finds the two blocks and splits exactly, If body included`, async () => {
      // Through bytes, as a file would be read.
      const model = decodeModel(encodeModel(make()));
      assert.deepEqual(
        residualStream(indexGraph(model.graph!)).map((s) => s.tensor),
        ['r0', 'r1'],
      );
      await assertSplitsAgree(model, 'x', x, ['r0', 'r1', 'r1a', 'h0']);
      // The front keeps only what the cut needs: no If, no second block.
      const front = frontModel(model, ['r0']);
      assert.ok(!front.graph!.node!.some((n) => n.op_type === 'If' || (n.output ?? []).includes('r1a')));
    });
  }

  it('opens as a backbone from a file and reads the patch grid off the conv', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vitsae-built-'));
    const file = path.join(dir, 'built.onnx');
    writeFileSync(file, encodeModel(builtModel()));
    const bb = await openBackbone(file);
    rmSync(dir, { recursive: true });
    assert.deepEqual(bb.input, { name: 'x', dims: ['N', 3, 8, 8] });
    assert.deepEqual(await tokenLayout(bb, selectLayers(bb, ['-1'])), { layout: 'ntd', prefixTokens: 1, patchTokens: 4, dModel: D, grid: [2, 2] });
  });
});
