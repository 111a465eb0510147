import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { type SyntheticConfig, writeSyntheticShards } from '../src/data/synthetic.js';
import { ShardDataset } from '../src/shards/format.js';

const CFG: SyntheticConfig = { nExamples: 50, tokensPerExample: 6, d: 24, nAtoms: 12, atomsPerToken: 3, noise: 0, seed: 7, clsToken: true, maxTokensPerShard: 70 };

const tmpDirs: string[] = [];
after(() => Promise.all(tmpDirs.map((d) => fs.rm(d, { recursive: true, force: true }))));

async function tmpDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vitsae-synth-'));
  tmpDirs.push(dir);
  return dir;
}

/** Solves the square system M x = b (n×n, row-major) by Gaussian elimination with partial pivoting. */
function solve(M: Float64Array, b: Float64Array, n: number): Float64Array {
  const A = Float64Array.from(M);
  const x = Float64Array.from(b);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(A[r * n + c]) > Math.abs(A[p * n + c])) p = r;
    for (let k = 0; k < n; k++) [A[c * n + k], A[p * n + k]] = [A[p * n + k], A[c * n + k]];
    [x[c], x[p]] = [x[p], x[c]];
    for (let r = c + 1; r < n; r++) {
      const f = A[r * n + c] / A[c * n + c];
      for (let k = c; k < n; k++) A[r * n + k] -= f * A[c * n + k];
      x[r] -= f * x[c];
    }
  }
  for (let c = n - 1; c >= 0; c--) {
    for (let k = c + 1; k < n; k++) x[c] -= A[c * n + k] * x[k];
    x[c] /= A[c * n + c];
  }
  return x;
}

/** Least-squares coefficients of each token (minus the offset) on the atoms, and the residual norms. */
function decompose(acts: Float32Array, rows: number[], atoms: Float32Array, offset: Float32Array, nAtoms: number, d: number) {
  const G = new Float64Array(nAtoms * nAtoms);
  for (let i = 0; i < nAtoms; i++) for (let j = 0; j < nAtoms; j++) for (let k = 0; k < d; k++) G[i * nAtoms + j] += atoms[i * d + k] * atoms[j * d + k];
  return rows.map((row) => {
    const y = Float64Array.from({ length: d }, (_, k) => acts[row * d + k] - offset[k]);
    const rhs = Float64Array.from({ length: nAtoms }, (_, i) => y.reduce((a, v, k) => a + v * atoms[i * d + k], 0));
    const coef = solve(G, rhs, nAtoms);
    const residual = Math.hypot(...y.map((v, k) => v - coef.reduce((a, c, i) => a + c * atoms[i * d + k], 0)));
    return { coef, residual };
  });
}

test('synthetic shards: unit atoms saved, right shape and metadata, tokens are sparse non-negative atom combinations', async () => {
  const dir = await tmpDir();
  const { atoms_AD, offset_D, metadata } = await writeSyntheticShards(dir, CFG);
  const { nAtoms, d } = CFG;
  assert.equal(atoms_AD.length, nAtoms * d);
  for (let a = 0; a < nAtoms; a++) assert.ok(Math.abs(Math.hypot(...atoms_AD.subarray(a * d, (a + 1) * d)) - 1) < 1e-6, `atom ${a} has unit norm`);
  assert.ok(Buffer.from(atoms_AD.buffer).equals(await fs.readFile(path.join(dir, 'atoms.f32'))), 'atoms.f32 holds the returned atoms');
  assert.ok(Math.abs(Math.hypot(...offset_D) - 2) < 1e-5);

  const ds = await ShardDataset.open(dir);
  assert.deepEqual(ds.metadata, metadata);
  assert.equal(ds.nExamples, 50);
  assert.equal(ds.tokensPerExample, 7);
  assert.equal(ds.d, 24);
  assert.equal(ds.shards.length, 5); // 70 // 7 = 10 examples per shard
  assert.equal(metadata.family, 'synthetic');
  assert.equal(metadata.dataset, 'synthetic-sparse-atoms');
  const data = metadata.data as { config: Record<string, unknown>; atoms_file: string; atoms_shape: number[]; offset: number[] };
  assert.deepEqual(data.config, { ...CFG, offsetNorm: 2 });
  assert.equal(data.atoms_file, 'atoms.f32');
  assert.deepEqual(data.atoms_shape, [nAtoms, d]);
  assert.deepEqual(Float32Array.from(data.offset), offset_D);

  // With noise 0 and independent atoms, least squares recovers each token's code exactly.
  const acts = await ds.readExamples(0, 50);
  const T = 7;
  const patchRows = Array.from({ length: 50 * 6 }, (_, i) => Math.floor(i / 6) * T + 1 + (i % 6));
  const activeCounts = new Array(nAtoms).fill(0);
  for (const { coef, residual } of decompose(acts, patchRows, atoms_AD, offset_D, nAtoms, d)) {
    assert.ok(residual < 1e-4, `residual ${residual}`);
    const active = [...coef.keys()].filter((i) => Math.abs(coef[i]) > 1e-3);
    assert.equal(active.length, 3, 'exactly atomsPerToken atoms are active');
    for (const i of active) {
      assert.ok(coef[i] > 0.5 - 1e-4 && coef[i] < 1.5 + 1e-4, `magnitude ${coef[i]} in [0.5, 1.5]`);
      activeCounts[i]++;
    }
  }
  assert.ok(
    activeCounts.every((c) => c > 30),
    'every atom is used',
  ); // expected 300 * 3 / 12 = 75 each
  for (let e = 0; e < 50; e++)
    for (let k = 0; k < d; k++) {
      let mean = 0;
      for (let t = 1; t < T; t++) mean += acts[(e * T + t) * d + k] / 6;
      assert.ok(Math.abs(acts[e * T * d + k] - mean) < 1e-5, 'CLS is the mean of the patches');
    }
  await ds.close();
});

test('synthetic shards: noise has the configured scale', async () => {
  const dir = await tmpDir();
  const cfg = { ...CFG, noise: 0.1, clsToken: false, d: 64, nExamples: 30 };
  const { atoms_AD, offset_D } = await writeSyntheticShards(dir, cfg);
  const ds = await ShardDataset.open(dir);
  const acts = await ds.readExamples(0, 30);
  const rows = Array.from({ length: 30 * 6 }, (_, i) => i);
  // The residual off the atoms' span is pure noise in d - nAtoms dimensions: E||r||^2 = (64 - 12) * 0.1^2.
  const res = decompose(acts, rows, atoms_AD, offset_D, cfg.nAtoms, cfg.d);
  const meanSq = res.reduce((a, r) => a + r.residual ** 2, 0) / rows.length;
  assert.ok(Math.abs(meanSq / (52 * 0.01) - 1) < 0.1, `residual mean square ${meanSq}`);
  await ds.close();
});

test('synthetic shards: byte-identical for a seed, different for another seed, bad configs rejected', async () => {
  const [a, b, c] = await Promise.all([tmpDir(), tmpDir(), tmpDir()]);
  await writeSyntheticShards(a, CFG);
  await writeSyntheticShards(b, CFG);
  await writeSyntheticShards(c, { ...CFG, seed: 8 });
  const names = (await fs.readdir(a)).sort();
  assert.deepEqual((await fs.readdir(b)).sort(), names);
  for (const name of names) assert.ok((await fs.readFile(path.join(a, name))).equals(await fs.readFile(path.join(b, name))), `${name} is identical`);
  assert.ok(!(await fs.readFile(path.join(a, 'acts000000.bin'))).equals(await fs.readFile(path.join(c, 'acts000000.bin'))));
  assert.ok(!(await fs.readFile(path.join(a, 'atoms.f32'))).equals(await fs.readFile(path.join(c, 'atoms.f32'))));
  await assert.rejects(writeSyntheticShards(await tmpDir(), { ...CFG, atomsPerToken: 13 }), /atomsPerToken=13 exceeds nAtoms=12/);
  await assert.rejects(writeSyntheticShards(await tmpDir(), { ...CFG, d: 0 }), /d must be an integer >= 1, got 0/);
  await assert.rejects(writeSyntheticShards(a, CFG), /already holds a shard directory/);
});

const exec = promisify(execFile);
const dist = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);

/** Runs a CLI command in a child process (the commands print to stdout and set the exit code). */
async function cli(exportName: string, file: string, argv: string[]): Promise<{ code: number; stdout: string }> {
  const script = `
    import { runCommand } from ${dist('../src/cli/command.js')};
    import { ${exportName} } from ${dist(file)};
    try { await runCommand(${exportName}, ${JSON.stringify(argv)}); }
    catch (e) { console.log('ERROR ' + e.message); process.exitCode = 2; }`;
  try {
    const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', script]);
    return { code: 0, stdout };
  } catch (e) {
    const err = e as { code: number; stdout: string };
    return { code: err.code, stdout: err.stdout };
  }
}

test('CLI: data synthetic writes shards that shards info --json reports as valid', async () => {
  const out = path.join(await tmpDir(), 'synth');
  const made = await cli('dataSyntheticCommand', '../src/cli/commands/data-synthetic.js', [
    '--out',
    out,
    '--n-examples',
    '12',
    '--d',
    '16',
    '--n-atoms',
    '8',
    '--tokens-per-example',
    '4',
    '--no-cls-token',
  ]);
  assert.equal(made.code, 0, made.stdout);
  assert.match(made.stdout, /wrote 12 examples × 4 tokens × d=16/);
  const info = await cli('shardsInfoCommand', '../src/cli/commands/shards.js', [out, '--json']);
  assert.equal(info.code, 0, info.stdout);
  const j = JSON.parse(info.stdout);
  assert.equal(j.valid, true);
  assert.equal(j.metadata.n_examples, 12);
  assert.equal(j.metadata.cls_token, false);
  assert.deepEqual(j.tokens, { per_layer: 48, all_layers: 48, patches_per_layer: 48 });
  assert.equal(j.bytes.data, 12 * 4 * 16 * 4);
  // saev would load it but for the folder rule (.../saev/shards/<name>); the family is vitsae's own, kept in vitsae.json.
  assert.deepEqual(
    j.saev.refusals.map((r: { rule: string }) => r.rule),
    ['path'],
  );
  assert.equal(j.metadata.family, 'synthetic');

  // --verify reads every value: a NaN that sizes cannot show fails with its place.
  const verified = await cli('shardsInfoCommand', '../src/cli/commands/shards.js', [out, '--verify', '--no-progress']);
  assert.equal(verified.code, 0, verified.stdout);
  assert.match(verified.stdout, /validation: ok, every value finite \(--verify\)/);
  const acts = await fs.readFile(path.join(out, 'acts000000.bin'));
  acts.writeFloatLE(Infinity, 4 * (7 * 4 * 16 + 2 * 16 + 3)); // example 7, token 2, dim 3
  await fs.writeFile(path.join(out, 'acts000000.bin'), acts);
  assert.match((await cli('shardsInfoCommand', '../src/cli/commands/shards.js', [out])).stdout, /validation: ok \(sizes and names/);
  const nan = await cli('shardsInfoCommand', '../src/cli/commands/shards.js', [out, '--verify', '--no-progress']);
  assert.equal(nan.code, 1);
  assert.match(nan.stdout, /validation: FAILED: \S+\/acts000000\.bin: example 7.* has a non-finite value \(Infinity\) at layer -?\d+, token 2, dim 3/);

  await fs.truncate(path.join(out, 'acts000000.bin'), 10);
  const bad = await cli('shardsInfoCommand', '../src/cli/commands/shards.js', [out]);
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, /validation: FAILED: \S+\/acts000000\.bin has 10 bytes, expected/);
  const noOut = await cli('dataSyntheticCommand', '../src/cli/commands/data-synthetic.js', []);
  assert.match(noOut.stdout, /ERROR --out is required \(output directory/);
  // A stray word (here a boolean's value written as a separate argument) is refused, not silently ignored.
  const stray = await cli('dataSyntheticCommand', '../src/cli/commands/data-synthetic.js', ['--out', out + '-2', '--cls-token', 'false']);
  assert.match(stray.stdout, /ERROR unexpected argument "false": vitsae data synthetic takes only options/);
});
