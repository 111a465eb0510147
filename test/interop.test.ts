/**
 * Interop with saev and SAELens, against fixtures written by real PyTorch (test/fixtures/interop/make_fixtures.py,
 * run once into a temp dir): every saev header version, dtype/stride/byte-order variants, SAELens 6.x and pre-6
 * directories, and files that must be refused. Values are compared bit for bit where vitsae copies them, and
 * through the source library's own forward pass (computed by the script) where a fold changes them.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type LoadedSae, readAnySae, readSaeLensDir, readSaevFile, readVitsaeDir, unpickle, writeSaeLensDir, writeVitsaeDir } from '../src/interop/index.js';
import { readSafetensors, toFloat32 } from '../src/sae/safetensors.js';
import { runCommand } from '../src/cli/command.js';
import { convertCommand } from '../src/cli/commands/convert.js';

const PYTHON = '/usr/bin/python3';
const SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test/fixtures/interop/make_fixtures.py');
const noTorch = spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status !== 0;
const NATIVE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../build/Release/vitsae_native.node');

interface Fixture {
  file?: string;
  dir?: string;
  activation: string;
  d_sae: number;
  k?: number;
  threshold?: number | null;
  prefixes?: number[];
  approx?: boolean;
  message?: string;
}
type Manifest = Record<'saev' | 'saelens' | 'refuse', Record<string, Fixture>>;

function bin(file: string, kind: 'f32' | 'f64'): Float32Array | Float64Array {
  const b = readFileSync(file);
  const copy = b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
  return kind === 'f32' ? new Float32Array(copy) : new Float64Array(copy);
}

function sameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  assert.ok(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength)), `${what}: bits differ`);
}

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tol = 1e-5): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol * (1 + Math.abs(expected[i])), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

/** Our pre-activations in float64: (x * s - b_dec) W_enc + b_enc. */
function preacts(sae: LoadedSae, x: ArrayLike<number>): Float64Array {
  const { d_model: D, d_sae: S, input_scale: s } = sae.config;
  const n = x.length / D;
  const h = new Float64Array(n * S);
  for (let t = 0; t < n; t++) {
    for (let j = 0; j < S; j++) {
      let acc = sae.b_enc[j];
      for (let i = 0; i < D; i++) acc += (x[t * D + i] * s - sae.b_dec[i]) * sae.W_enc[i * S + j];
      h[t * S + j] = acc;
    }
  }
  return h;
}

/** Our reconstruction in float64: (f W_dec + b_dec) / s. */
function decode(sae: LoadedSae, f: ArrayLike<number>): Float64Array {
  const { d_model: D, d_sae: S, input_scale: s } = sae.config;
  const n = f.length / S;
  const out = new Float64Array(n * D);
  for (let t = 0; t < n; t++) {
    for (let i = 0; i < D; i++) {
      let acc = sae.b_dec[i];
      for (let j = 0; j < S; j++) acc += f[t * S + j] * sae.W_dec[j * D + i];
      out[t * D + i] = acc / s;
    }
  }
  return out;
}

describe('interop', { skip: noTorch && `${PYTHON} has no torch (install Debian python3-torch)` }, () => {
  let root: string;
  let fx: string;
  let manifest: Manifest;

  before(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'vitsae-interop-'));
    fx = path.join(root, 'fixtures');
    const r = spawnSync(PYTHON, [SCRIPT, fx], { encoding: 'utf8' });
    assert.equal(r.status, 0, `fixture script failed:\n${r.stderr}`);
    manifest = JSON.parse(readFileSync(path.join(fx, 'manifest.json'), 'utf8'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  /** Checks a read SAE against what the fixture script saved and computed. */
  function check(name: string, f: Fixture, sae: LoadedSae): void {
    const e = (what: string, kind: 'f32' | 'f64' = 'f32') => bin(path.join(fx, 'expect', `${name}.${what}.bin`), kind);
    assert.equal(sae.config.format, 'vitsae-sae');
    assert.equal(sae.config.sae.activation, f.activation, `${name}: activation`);
    assert.equal(sae.config.d_model, 8, `${name}: d_model`);
    assert.equal(sae.config.d_sae, f.d_sae, `${name}: d_sae`);
    if (f.k) assert.equal(sae.config.sae.k, f.k, `${name}: k`);
    assert.equal(sae.config.threshold, f.threshold ?? -1, `${name}: threshold`);
    if (f.prefixes) assert.deepEqual(sae.config.sae.matryoshkaPrefixes, f.prefixes, `${name}: prefixes`);
    if (!f.approx) for (const t of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) sameBits(sae[t], e(t) as Float32Array, `${name} ${t}`);
    close(preacts(sae, e('x')), e('h', 'f64'), `${name} pre-activations`);
    close(decode(sae, e('f')), e('xhat', 'f64'), `${name} reconstruction`);
  }

  it('reads every saev header version, dtype, strided view and byte order with the values PyTorch saved', async () => {
    for (const [name, f] of Object.entries(manifest.saev)) check(name, f, await readSaevFile(path.join(fx, f.file!)));
    assert.ok(Object.keys(manifest.saev).length >= 14);
  });

  it('reads SAELens directories (6.x and pre-6), folding what vitsae parametrises differently', async () => {
    for (const [name, f] of Object.entries(manifest.saelens)) check(name, f, await readAnySae(path.join(fx, f.dir!)));
    const rescaled = await readSaeLensDir(path.join(fx, 'saelens/topk_rescale'));
    for (let j = 0; j < 32; j++) {
      const norm = Math.hypot(...rescaled.W_dec.subarray(j * 8, j * 8 + 8));
      assert.ok(Math.abs(norm - 1) < 1e-6, 'decoder rows have unit norm after the fold');
    }
  });

  it('refuses unexpected pickle content, truncated zips and what has no vitsae equivalent, saying why', async () => {
    for (const [name, f] of Object.entries(manifest.refuse)) {
      await assert.rejects(readAnySae(path.join(fx, f.file ?? f.dir!)), (e: Error) => {
        assert.equal(e.name, 'UserError', `${name}: ${e.stack}`);
        assert.ok(e.message.includes(f.message!), `${name}: "${e.message}" should say "${f.message}"`);
        return true;
      });
    }
  });

  it('the unpickler refuses other protocols and truncated pickles', () => {
    assert.throws(() => unpickle(Uint8Array.from([0x80, 4, 0x95]), 'p4'), /pickle protocol 4/);
    assert.throws(() => unpickle(Uint8Array.from([0x80, 2, 0x58, 9, 0, 0, 0, 0x61]), 'cut'), /ends in the middle of an opcode/);
    assert.throws(() => unpickle(Uint8Array.from([0x80, 2, 0x93]), 'sg'), /unexpected pickle opcode 0x93 \(STACK_GLOBAL\)/);
  });

  it('round-trips ours -> SAELens -> ours with byte-identical files', async () => {
    for (const [name, scale] of [
      ['s4_batchtopk', 1],
      ['matryoshka_train', 0.25],
      ['s5_topk', 2],
      ['pre_paper', 1],
    ] as const) {
      const src = (await readAnySae(path.join(fx, manifest.saev[name]?.file ?? manifest.saelens[name].dir!))) as LoadedSae;
      src.config.input_scale = scale;
      const a = path.join(root, `rt-${name}-a`),
        b = path.join(root, `rt-${name}-b`),
        c = path.join(root, `rt-${name}-c`);
      await writeVitsaeDir(a, src);
      await writeSaeLensDir(b, await readVitsaeDir(a));
      const back = await readAnySae(b);
      assert.deepEqual(back.config, src.config, `${name}: config restored from metadata.vitsae`);
      for (const t of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) sameBits(back[t], src[t], `${name} ${t}`);
      await writeVitsaeDir(c, back);
      for (const file of ['sae.safetensors', 'config.json']) {
        assert.ok((await fsp.readFile(path.join(a, file))).equals(await fsp.readFile(path.join(c, file))), `${name}: ${file} differs after the round trip`);
      }
    }
  });

  it('exports SAELens weights that compute the same SAE when the input scale is folded in', async () => {
    const sae = await readSaevFile(path.join(fx, manifest.saev.s4_batchtopk.file!));
    sae.config.input_scale = 0.37;
    const dir = path.join(root, 'export-scaled');
    await writeSaeLensDir(dir, sae);
    const cfg = JSON.parse(await fsp.readFile(path.join(dir, 'cfg.json'), 'utf8'));
    assert.equal(cfg.architecture, 'jumprelu');
    assert.equal(cfg.normalize_activations, 'none');
    assert.equal(cfg.apply_b_dec_to_input, true);
    const raw = (await readSafetensors(path.join(dir, 'sae_weights.safetensors'))).tensors;
    assert.deepEqual([...toFloat32(raw.threshold)], new Array(20).fill(0.375));
    // SAELens's own view of the directory: no scale, weights as stored.
    const asSaeLens: LoadedSae = {
      config: { ...sae.config, input_scale: 1 },
      W_enc: toFloat32(raw.W_enc),
      b_enc: toFloat32(raw.b_enc),
      W_dec: toFloat32(raw.W_dec),
      b_dec: toFloat32(raw.b_dec),
      notes: [],
    };
    const x = bin(path.join(fx, 'expect/s4_batchtopk.x.bin'), 'f32');
    const f = bin(path.join(fx, 'expect/s4_batchtopk.f.bin'), 'f32');
    close(preacts(asSaeLens, x), preacts(sae, x), 'pre-activations');
    close(decode(asSaeLens, f), decode(sae, f), 'reconstruction');
    // Unfolding on the way back is exact up to float32 rounding.
    const back = await readSaeLensDir(dir);
    assert.equal(back.config.input_scale, 0.37);
    close(back.W_enc, sae.W_enc, 'W_enc', 2e-7);
    close(back.W_dec, sae.W_dec, 'W_dec', 2e-7);
  });

  it("converted SAEs run in vitsae's own core with the latents PyTorch computes", { skip: !existsSync(NATIVE) && 'native core not built' }, async () => {
    const { Sae } = await import('../src/sae/model.js');
    for (const name of ['pre_paper', 's2_topk', 's4_batchtopk', 'jumprelu']) {
      const f = manifest.saev[name] ?? manifest.saelens[name];
      const dir = path.join(root, `core-${name}`);
      await writeVitsaeDir(dir, await readAnySae(path.join(fx, f.file ?? f.dir!)));
      const sae = await Sae.load(dir);
      const x = bin(path.join(fx, `expect/${name}.x.bin`), 'f32') as Float32Array;
      const h = bin(path.join(fx, `expect/${name}.h.bin`), 'f64');
      const out = await sae.encode(x);
      for (let t = 0; t < 5; t++) {
        const row = Array.from(h.subarray(t * f.d_sae, (t + 1) * f.d_sae));
        const cut = f.activation === 'topk' ? [...row].sort((a, b) => b - a)[f.k! - 1] : Math.max(0, f.threshold ?? 0);
        const want = row.flatMap((v, j) => ((f.activation === 'topk' ? v >= cut : v > cut) && v > 0 ? [j] : []));
        const active = [];
        for (let q = out.rowptr[t]; q < out.rowptr[t + 1]; q++) if (out.val[q] > 0) active.push({ j: out.idx[q], v: out.val[q] });
        assert.deepEqual(
          active.map((a) => a.j),
          want,
          `${name} token ${t}: active latents`,
        );
        close(
          active.map((a) => a.v),
          want.map((j) => row[j]),
          `${name} token ${t}: values`,
        );
      }
    }
  });

  it('vitsae convert detects the input, writes either layout and keeps a non-empty --out', async () => {
    const write = process.stderr.write;
    const said: string[] = [];
    process.stderr.write = ((s: string) => said.push(s) > 0) as typeof process.stderr.write;
    try {
      const input = path.join(fx, manifest.saev.s2_topk.file!);
      const ours = path.join(root, 'cli-vitsae'),
        lens = path.join(root, 'cli-saelens');
      await runCommand(convertCommand, [input, '--out', ours]);
      await runCommand(convertCommand, [ours, '--out', lens, '--to', 'saelens']);
      const direct = await readSaevFile(input);
      const viaCli = await readSaeLensDir(lens);
      assert.deepEqual(viaCli.config, direct.config);
      for (const t of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) sameBits(viaCli[t], direct[t], `cli ${t}`);
      assert.ok(
        said.some((s) => s.includes('folded into b_enc')),
        'the fold is reported',
      );
      await assert.rejects(runCommand(convertCommand, [input, '--out', ours]), /not empty/);
      await assert.rejects(runCommand(convertCommand, [root, '--out', path.join(root, 'x')]), /neither a vitsae SAE directory/);
    } finally {
      process.stderr.write = write;
    }
  });
});
