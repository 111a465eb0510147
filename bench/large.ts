/**
 * A model over protobuf's 2 GB limit (issue 15.4): test/fixtures/make_large.py writes one 2.56 GB float32 weight as
 * external data; vitsae opens the model, splits a front off it and runs one image, compared with numpy's float64
 * answer. Too slow for the test suite (writing 2.56 GB and onnxruntime reading it take minutes on a loaded disk),
 * so it lives here; the mechanism itself is tested on a small model in test/external.test.ts.
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { createSession, openBackbone } from '../src/backbone/backbone.js';
import { frontModel } from '../src/backbone/graph.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export async function benchLarge(): Promise<string[]> {
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-bench-large-'));
  try {
    let t = performance.now();
    const lap = () => {
      const s = (performance.now() - t) / 1000;
      t = performance.now();
      return s.toFixed(1);
    };
    execFileSync('/usr/bin/python3', [path.join(ROOT, 'test', 'fixtures', 'make_large.py'), tmp], { stdio: ['ignore', 'ignore', 'inherit'] });
    const made = lap();
    const file = path.join(tmp, 'large.onnx');
    const dataBytes = (await fsp.stat(path.join(tmp, 'large.onnx.data'))).size;
    const bb = await openBackbone(file);
    const opened = lap();
    const session = await createSession(frontModel(bb.model, ['projected'], bb.index), bb);
    const loaded = lap();
    const x = Float32Array.from({ length: 3 * 32 * 32 }, (_, k) => (((k * 31) % 17) - 8) / 8);
    const y = (await session.run({ pixel_values: new ort.Tensor('float32', x, [1, 3, 32, 32]) })).projected.data as Float32Array;
    const ran = lap();
    await session.release();
    const buf = await fsp.readFile(path.join(tmp, 'expected.f32'));
    const want = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < want.length; i++) {
      diff = Math.max(diff, Math.abs(y[i] - want[i]));
      scale = Math.max(scale, Math.abs(want[i]));
    }
    return [
      `Model over 2 GB: one ${(dataBytes / 1e9).toFixed(2)} GB float32 weight as external data (test/fixtures/make_large.py), front = Flatten + MatMul, one image, load average ${os.loadavg()[0].toFixed(1)}`,
      '',
      '| step | seconds |',
      '| --- | --- |',
      `| write the model (numpy, chunked) | ${made} |`,
      `| vitsae openBackbone (reads the graph only; checks the data file) | ${opened} |`,
      `| onnxruntime session on the split front (reads the 2.56 GB itself) | ${loaded} |`,
      `| one image | ${ran} |`,
      '',
      `Largest difference from numpy's float64 answer: ${diff.toExponential(2)} (outputs up to ${scale.toFixed(1)}; ${diff / scale < 1e-5 ? 'within' : 'NOT within'} 1e-5 relative). Peak RSS ${(process.resourceUsage().maxRSS / 1e6).toFixed(1)} GB.`,
    ];
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}
