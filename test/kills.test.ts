/**
 * Fault injection: `vitsae train` (a checkpoint every step) and `vitsae record` are killed with SIGKILL at random
 * moments, many inside a write, and rerun each time; both must end with the same bytes as a run that was never
 * interrupted. Kill delays scale with this machine's speed (at most a twelfth of a whole run each), so the test
 * kills as often on a loaded CI machine as on an idle one. Before training checkpoints were committed together,
 * 3 kills in 10 left a run that could not resume.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSyntheticShards } from '../src/data/synthetic.js';
import { writeConceptWorld } from '../src/data/concept-world.js';
import { Rng } from '../src/util/random.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'bin/vitsae.js');
let tmp: string;

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-kill-'));
});

after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** Runs the CLI, killed with SIGKILL after `killAfterMs` if given; resolves to its exit code (null when killed). */
function cli(args: string[], killAfterMs?: number): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const timer = killAfterMs === undefined ? null : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

/**
 * Runs `args(out)` once whole into `whole`, then into `killed` under up to 20 random kills and a last run to the
 * end; `args` gets whether the output already holds something to continue. Returns the number of kills.
 */
async function killAndRerun(whole: string, killed: string, args: (out: string, started: boolean) => string[], started: (out: string) => boolean, seed: number): Promise<number> {
  const t0 = Date.now();
  const full = await cli(args(whole, false));
  assert.equal(full.code, 0, full.stderr);
  const wholeMs = Date.now() - t0;
  const rng = new Rng(seed, 0);
  let kills = 0;
  for (let attempt = 0; attempt < 20; attempt++) {
    const { code, stderr } = await cli(args(killed, started(killed)), 200 + rng.nextInt(Math.ceil(wholeMs / 12)));
    if (code === 0) break;
    assert.equal(code, null, `a rerun failed instead of being killed: ${stderr}`);
    kills++;
  }
  const last = await cli(args(killed, started(killed)));
  assert.equal(last.code, 0, `the final rerun failed: ${last.stderr}`);
  return kills;
}

const sameBytes = async (a: string, b: string, files: string[]) => {
  for (const f of files) assert.ok((await fsp.readFile(path.join(a, f))).equals(await fsp.readFile(path.join(b, f))), `${f} differs`);
};

test('training killed at random moments, many inside a checkpoint write, always resumes to the same final SAE', async (t) => {
  const shards = path.join(tmp, 'acts');
  await writeSyntheticShards(shards, { nExamples: 400, tokensPerExample: 32, d: 32, nAtoms: 48, atomsPerToken: 3, noise: 0.01, seed: 5, clsToken: false });
  const args = (out: string, started: boolean) => [
    ...['train', '--shards', shards, '--out', out, '--activation', 'topk', '--k', '3', '--expansion', '4', '--batch', '256', '--tokens', '240000'],
    ...['--lr', '2e-3', '--scale-tokens', '4096', '--checkpoint-every', '1', '--no-progress', ...(started ? ['--resume'] : [])],
  ];
  // A run that exists (or whose first write was committed) is resumed; one killed before any checkpoint starts over.
  const started = (out: string) => existsSync(path.join(out, 'config.json')) || existsSync(path.join(out, '.commit'));
  const [whole, killed] = [path.join(tmp, 'sae-whole'), path.join(tmp, 'sae-killed')];
  const kills = await killAndRerun(whole, killed, args, started, 11);
  t.diagnostic(`${kills} kills`);
  assert.ok(kills >= 10, `only ${kills} kills landed before the run finished`);
  await sameBytes(whole, killed, ['sae.safetensors', 'optimizer.safetensors']);
  assert.deepEqual(JSON.parse(await fsp.readFile(path.join(killed, 'config.json'), 'utf8')).step, JSON.parse(await fsp.readFile(path.join(whole, 'config.json'), 'utf8')).step);
  assert.ok(!existsSync(path.join(killed, '.staging')) && !existsSync(path.join(killed, '.commit')), 'no stale parts are left');
});

test('recording killed at random moments, many inside a shard write, always resumes to the same shards', async (t) => {
  const world = path.join(tmp, 'world');
  await writeConceptWorld(world, { n: 600, seed: 9, progress: false });
  // 40 examples a shard (65 tokens each), so that many kills land between and inside shard writes.
  const args = (out: string) => [
    'record',
    '--model',
    path.join(ROOT, 'models/concept-world-control.onnx'),
    '--layer',
    '2',
    '--data',
    world,
    '--out',
    out,
    '--max-tokens-per-shard',
    '2600',
    '--no-progress',
  ];
  const [whole, killed] = [path.join(tmp, 'rec-whole'), path.join(tmp, 'rec-killed')];
  const kills = await killAndRerun(whole, killed, args, () => true, 12);
  t.diagnostic(`${kills} kills`);
  assert.ok(kills >= 10, `only ${kills} kills landed before the recording finished`);
  const files = (await fsp.readdir(whole)).sort();
  assert.deepEqual((await fsp.readdir(killed)).sort(), files, 'no stale files are left');
  await sameBytes(whole, killed, files);
});
