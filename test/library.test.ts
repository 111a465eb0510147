/**
 * vitsae as a library: Sae.decode against the SAE's math in float64, the public entry point, and the README's
 * "As a library" example, extracted from README.md, type-checked against the built declarations and run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Sae } from '../src/sae/model.js';
import { defaultsOf } from '../src/util/config.js';
import { type SaeConfig, saeSpec } from '../src/sae/config.js';

const exec = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const D = 24,
  EXPANSION = 4,
  S = D * EXPANSION,
  B = 7,
  SCALE = 1.7;

/** Deterministic standard-normal-ish numbers (a sum of uniforms from mulberry32), so the test needs no library RNG. */
function normals(seed: number): () => number {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return () => uniform() + uniform() + uniform() - 1.5;
}

/** An SAE with every weight random (b_enc, b_dec included) and a non-trivial input scale. */
function randomSae(sae: Partial<SaeConfig>, seed: number): Sae {
  const model = Sae.create(D, { ...defaultsOf(saeSpec), expansion: EXPANSION, ...sae }, { mean: new Float32Array(D), inputScale: SCALE, seed });
  const normal = normals(seed);
  const rand = (n: number, s: number) => Float32Array.from({ length: n }, () => normal() * s);
  model.setWeights({ W_enc: rand(D * S, 0.3), b_enc: rand(S, 0.2), W_dec: rand(S * D, 0.3), b_dec: rand(D, 0.5) }, 'test');
  return model;
}

/** f = act((x * scale - b_dec) W_enc + b_enc) and x_hat = (f W_dec + b_dec) / scale, in float64. */
function reference(model: Sae, x_BD: Float32Array): { f_BS: Float64Array; xhat_BD: Float64Array } {
  const { W_enc, b_enc, W_dec, b_dec } = model.weights();
  const { activation, k } = model.config.sae;
  const f_BS = new Float64Array(B * S),
    xhat_BD = new Float64Array(B * D);
  for (let b = 0; b < B; b++) {
    const pre = Array.from({ length: S }, (_, s) => {
      let v = b_enc[s];
      for (let d = 0; d < D; d++) v += (x_BD[b * D + d] * SCALE - b_dec[d]) * W_enc[d * S + s];
      return v;
    });
    const keep = activation === 'topk' ? new Set([...pre.keys()].sort((i, j) => pre[j] - pre[i]).slice(0, k)) : null;
    for (let s = 0; s < S; s++) if (!keep || keep.has(s)) f_BS[b * S + s] = Math.max(0, pre[s]);
    for (let d = 0; d < D; d++) {
      let v = b_dec[d];
      for (let s = 0; s < S; s++) v += f_BS[b * S + s] * W_dec[s * D + d];
      xhat_BD[b * D + d] = v / SCALE;
    }
  }
  return { f_BS, xhat_BD };
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a, (v, i) => Math.abs(v - b[i])).reduce((m, v) => Math.max(m, v), 0);
const maxAbs = (a: ArrayLike<number>) => Array.from(a, Math.abs).reduce((m, v) => Math.max(m, v), 0);

for (const sae of [{ activation: 'topk' as const, k: 5 }, { activation: 'relu' as const }]) {
  test(`Sae.decode(encode(x)) equals the float64 math (${sae.activation})`, async () => {
    const model = randomSae(sae, 11);
    const normal = normals(5);
    const x_BD = Float32Array.from({ length: B * D }, () => normal() * 2);
    const ref = reference(model, x_BD);
    const f = await model.encode(x_BD, true);
    // The same latents fire, with the same values.
    const dense_BS = new Float32Array(B * S);
    for (let b = 0; b < B; b++) for (let j = f.rowptr[b]; j < f.rowptr[b + 1]; j++) dense_BS[b * S + f.idx[j]] = f.val[j];
    assert.ok(maxDiff(dense_BS, ref.f_BS) < 1e-5 * maxAbs(ref.f_BS), `latents differ by ${maxDiff(dense_BS, ref.f_BS)}`);
    if (sae.activation === 'topk') assert.equal(f.idx.length, B * 5);
    const xhat = model.decode(f);
    assert.equal(xhat.length, B * D);
    assert.ok(maxDiff(xhat, ref.xhat_BD) < 1e-5 * maxAbs(ref.xhat_BD), `decode differs from float64 by ${maxDiff(xhat, ref.xhat_BD)} (scale ${maxAbs(ref.xhat_BD)})`);
    // Dense latents decode alike, and the native core's own reconstruction agrees.
    assert.ok(maxDiff(model.decode(dense_BS), xhat) < 1e-5 * maxAbs(xhat));
    assert.ok(maxDiff(f.xhat!, xhat) < 1e-5 * maxAbs(xhat));
  });
}

test('Sae.decode refuses latents that do not fit the SAE', () => {
  const model = randomSae({ activation: 'topk', k: 2 }, 3);
  assert.throws(() => model.decode(new Float32Array(S + 1)), /not a multiple of d_sae 96/);
  assert.throws(() => model.decode({ rowptr: Int32Array.of(0, 1), idx: Int32Array.of(S), val: Float32Array.of(1) }), /latent index 96 of token 0 is outside 0\.\.95/);
});

test("the package entry point exports the pipeline's functions", async () => {
  const api = await import('../src/index.js');
  for (const name of [
    'Sae',
    'openSae',
    'readAnySae',
    'convertSae',
    'record',
    'train',
    'evaluateSae',
    'computeVisuals',
    'compareRuns',
    'EditEngine',
    'ShardDataset',
    'ShardWriter',
    'mergeShards',
    'runDemo',
  ]) {
    assert.equal(typeof (api as Record<string, unknown>)[name], 'function', name);
  }
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  for (const file of [pkg.exports['.'].default, pkg.exports['.'].types]) await fsp.access(path.join(ROOT, file));
});

test("the README's library example type-checks against the built declarations and runs", async () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## As a library'));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(code, 'README.md has a ```ts block under "## As a library"');
  // Inside the package, `import 'vitsae'` resolves to the package itself through its exports map (self-reference).
  const dir = path.join(ROOT, 'test-artifacts', 'readme-example');
  await fsp.mkdir(dir, { recursive: true });
  await fsp.writeFile(path.join(dir, 'example.ts'), code);
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  await exec(process.execPath, [
    tsc,
    '--module',
    'nodenext',
    '--moduleResolution',
    'nodenext',
    '--target',
    'es2022',
    '--strict',
    '--skipLibCheck',
    '--types',
    'node',
    path.join(dir, 'example.ts'),
  ]).catch((e) => {
    throw new Error(`the README example does not type-check:\n${e.stdout}${e.stderr}`);
  });
  const cwd = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-readme-'));
  try {
    const { stdout } = await exec(process.execPath, [path.join(dir, 'example.js')], { cwd });
    const m = /^128 latents, 8 active per token, relative error (\d\.\d+)$/m.exec(stdout);
    assert.ok(m, `unexpected output: ${stdout}`);
    assert.ok(Number(m[1]) < 0.15, `relative error ${m[1]}`);
    await fsp.access(path.join(cwd, 'lib-demo', 'sae-saelens', 'cfg.json'));
  } finally {
    await fsp.rm(cwd, { recursive: true, force: true });
  }
});

test('the demo finds Fashion-MNIST through its option or VITSAE_FASHION_MNIST, and names the fixes when it is missing', async () => {
  const { runDemo } = await import('../src/demo.js');
  const { FASHION_MNIST_ENV, fashionMnistPath, DEBIAN_FASHION_MNIST } = await import('../src/data/fashion-mnist.js');
  const out = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-demo-fmnist-'));
  const saved = process.env[FASHION_MNIST_ENV];
  try {
    const opts = { out, worldSize: 10, testSize: 10, tokens: 1000, layer: '-2', only: ['fashion-mnist-supervised'], seed: 0 };
    await assert.rejects(
      runDemo({ ...opts, fashionMnist: path.join(out, 'given.gz') }),
      (e: Error) =>
        e.message.startsWith(`${path.join(out, 'given.gz')} is missing`) &&
        /apt install dataset-fashion-mnist/.test(e.message) &&
        /--fashion-mnist or VITSAE_FASHION_MNIST/.test(e.message) &&
        /--only concept-world-control,/.test(e.message),
    );
    process.env[FASHION_MNIST_ENV] = path.join(out, 'from-env.gz');
    assert.equal(fashionMnistPath(), path.join(out, 'from-env.gz'));
    assert.equal(fashionMnistPath('x.gz'), 'x.gz');
    await assert.rejects(runDemo(opts), (e: Error) => e.message.startsWith(`${path.join(out, 'from-env.gz')} is missing`));
    delete process.env[FASHION_MNIST_ENV];
    assert.equal(fashionMnistPath(), DEBIAN_FASHION_MNIST);
    // Nothing was generated before the check.
    assert.deepEqual(await fsp.readdir(out), []);
  } finally {
    if (saved === undefined) delete process.env[FASHION_MNIST_ENV];
    else process.env[FASHION_MNIST_ENV] = saved;
    await fsp.rm(out, { recursive: true, force: true });
  }
});
