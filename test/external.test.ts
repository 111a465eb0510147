/**
 * Weights as external data (issue 15.4) and execution providers (issue 15.3). A model saved with external data by
 * the onnx package (test/fixtures/make_external.py) must split, run and record exactly as the same model stored
 * inline; the graph handed to onnxruntime must hold no weights; devices this onnxruntime-node lacks must be refused
 * with how to get them.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { type Backbone, createSession, openBackbone } from '../src/backbone/backbone.js';
import { checkDevice, DEVICES } from '../src/backbone/device.js';
import { frontModel } from '../src/backbone/graph.js';
import { encodeModel } from '../src/backbone/onnx.js';
import { record } from '../src/backbone/record.js';
import { commands } from '../src/cli/main.js';
import { parseArgs } from '../src/util/config.js';
import { idxFile } from './fixtures/helpers.js';
import { fixtureModel } from './fixtures/models.js';

const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test/fixtures/make_external.py');

function noise(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1);
}

function bytesOf(t: ort.Tensor): Buffer {
  const d = t.data as Float32Array;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

describe('weights as external data', () => {
  let root: string;
  const inline = fixtureModel('vit_tv');
  const variants = ['one', 'many'] as const;
  const ext = (v: (typeof variants)[number]) => path.join(root, v, 'model.onnx');

  before(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'vitsae-external-'));
    execFileSync('/usr/bin/python3', [script, inline, root], { stdio: ['ignore', 'ignore', 'pipe'] });
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('the fixture really keeps its weights outside the .onnx file', () => {
    assert.ok(statSync(path.join(root, 'one', 'model.onnx.data')).size > 0.5 * statSync(inline).size);
    assert.ok(readdirSync(path.join(root, 'many')).length > 10);
  });

  it('splits and runs exactly as the inline model: every block front and the whole model, byte for byte', async () => {
    const bbIn = await openBackbone(inline);
    const x = new ort.Tensor('float32', noise(2 * 3 * 32 * 32, 3), [2, 3, 32, 32]);
    // The reference: onnxruntime loading the inline file itself, no vitsae code between.
    const own = await ort.InferenceSession.create(inline);
    const want = await own.run({ [bbIn.input.name]: x });
    for (const v of variants) {
      const bb = await openBackbone(ext(v));
      assert.deepEqual(bb.stream, bbIn.stream);
      for (const { tensor } of bb.stream) {
        const [a, b] = await Promise.all([bb, bbIn].map(async (m: Backbone) => (await (await createSession(frontModel(m.model, [tensor], m.index), m)).run({ [m.input.name]: x }))[tensor]));
        assert.equal(Buffer.compare(bytesOf(a), bytesOf(b)), 0, `${v}: front at ${tensor}`);
      }
      const full = await (await createSession(bb.model, bb)).run({ [bb.input.name]: x });
      for (const name of own.outputNames) assert.equal(Buffer.compare(bytesOf(full[name]), bytesOf(want[name])), 0, `${v}: output ${name}`);
    }
  });

  it('hands onnxruntime a graph without weights, for inline models too', async () => {
    // What the onnx package moved out (every tensor of 1 kB or more) vitsae keeps out of the graph (bar their references).
    const moved = statSync(path.join(root, 'one', 'model.onnx.data')).size;
    for (const file of [inline, ext('one')]) {
      const graph = encodeModel((await openBackbone(file)).model).byteLength;
      assert.ok(graph < statSync(inline).size - 0.95 * moved, `${file}: ${graph} bytes of graph`);
    }
  });

  it('records the same shards from the external-data model as from the inline one', async () => {
    const data = path.join(root, 'images-idx3-ubyte.gz');
    writeFileSync(
      data,
      gzipSync(
        idxFile(
          [5, 20, 20],
          new Uint8Array(5 * 400).map((_, i) => (i * 13) % 256),
        ),
      ),
    );
    const opts = { layers: ['-1', '0'], data, batch: 2, progress: false, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], inputSize: [32, 32] as [number, number], log: () => {} };
    await record({ ...opts, model: inline, out: path.join(root, 'rec-inline') });
    await record({ ...opts, model: ext('one'), out: path.join(root, 'rec-one') });
    const shards = readdirSync(path.join(root, 'rec-inline')).filter((f) => f.startsWith('acts'));
    assert.ok(shards.length > 0);
    for (const f of shards) assert.equal(Buffer.compare(readFileSync(path.join(root, 'rec-inline', f)), readFileSync(path.join(root, 'rec-one', f))), 0, f);
  });

  it('names the tensor and the file when external data is missing or truncated', async () => {
    const dir = path.join(root, 'broken');
    mkdirSync(dir);
    copyFileSync(ext('one'), path.join(dir, 'model.onnx'));
    await assert.rejects(
      openBackbone(path.join(dir, 'model.onnx')),
      /tensor .*external data "model\.onnx\.data": cannot open .*model\.onnx\.data \(ENOENT\); keep the data file beside the \.onnx file/,
    );
    copyFileSync(path.join(root, 'one', 'model.onnx.data'), path.join(dir, 'model.onnx.data'));
    truncateSync(path.join(dir, 'model.onnx.data'), 1000);
    await assert.rejects(openBackbone(path.join(dir, 'model.onnx')), /holds 1000 bytes, the tensor needs bytes \d+\.\.\d+; the data file is truncated/);
  });
});

describe('execution providers', () => {
  const bin = path.join(path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node')), '..', 'bin', 'napi-v6', os.platform(), os.arch());

  it('every command that runs a model takes --device, with cpu the default', async () => {
    const running = ['record', 'layers', 'head train', 'edit', 'eval edits', 'serve', 'demo'];
    for (const name of running) {
      const cmd = await commands.find((c) => c.name === name)?.load();
      assert.ok(cmd, name);
      assert.deepEqual({ ...cmd.spec.device, doc: '' }, { kind: 'enum', choices: DEVICES, default: 'cpu', doc: '' }, name);
    }
  });

  it('refuses a provider missing from this build of onnxruntime-node, saying where it exists', async () => {
    if (os.platform() === 'darwin') return;
    await assert.rejects(
      openBackbone(fixtureModel('vit_tv'), 'coreml'),
      /--device coreml: onnxruntime-node [\d.]+ for \w+\/\w+ has no coreml provider \(it has cpu.*\); the CoreML provider exists in the macOS builds/,
    );
  });

  it('refuses CUDA without its provider libraries, saying how to install them; runs with them', async () => {
    if (os.platform() !== 'linux' || os.arch() !== 'x64') return;
    if (existsSync(path.join(bin, 'libonnxruntime_providers_cuda.so'))) await checkDevice('cuda');
    else await assert.rejects(checkDevice('cuda'), /--device cuda: onnxruntime could not start its cuda provider \(.*\); .*ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node/);
  });

  it('parses --device by its friendly names and refuses others with the list', async () => {
    const layers = await commands.find((c) => c.name === 'layers')!.load();
    assert.equal(parseArgs(layers.spec, ['m.onnx', '--device', 'directml']).config.device, 'directml');
    assert.throws(() => parseArgs(layers.spec, ['m.onnx', '--device', 'gpu']), /--device "gpu": expected one of cpu, cuda, tensorrt, coreml, directml, webgpu/);
  });
});
