/**
 * Checkpoints survive any kill: `vitsae train` with a checkpoint every step is killed with SIGKILL at random
 * moments (many land inside a checkpoint write), resumed each time, and must end with the same bytes as a run that
 * was never interrupted. Before checkpoints were written together, 3 kills in 10 left a run that could not resume.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSyntheticShards } from '../src/data/synthetic.js';
import { Rng } from '../src/shards/random.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/vitsae.js');
let tmp: string;
let shards: string;

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-kill-'));
  shards = path.join(tmp, 'acts');
  await writeSyntheticShards(shards, { nExamples: 400, tokensPerExample: 32, d: 32, nAtoms: 48, atomsPerToken: 3, noise: 0.01, seed: 5, clsToken: false });
});

after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** Runs `vitsae train` into `out`, killed with SIGKILL after `killAfterMs` if given; resolves to its exit code, or null when killed. */
function trainProcess(out: string, resume: boolean, killAfterMs?: number): Promise<{ code: number | null; stderr: string }> {
  const args = [CLI, 'train', '--shards', shards, '--out', out, '--activation', 'topk', '--k', '3', '--expansion', '4', '--batch', '256', '--tokens', '240000'];
  args.push('--lr', '2e-3', '--scale-tokens', '4096', '--checkpoint-every', '1', '--no-progress', ...(resume ? ['--resume'] : []));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
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

test('training killed at random moments, many inside a checkpoint write, always resumes to the same final SAE', async (t) => {
  const whole = path.join(tmp, 'whole');
  const t0 = Date.now();
  const full = await trainProcess(whole, false);
  assert.equal(full.code, 0, full.stderr);
  // Kill delays scale with this machine's speed: each attempt gets at most a twelfth of a whole run.
  const wholeMs = Date.now() - t0;

  const killed = path.join(tmp, 'killed');
  const rng = new Rng(11, 0);
  let kills = 0;
  // A run that exists (or whose first write was committed) is resumed; one killed before any checkpoint starts over.
  const started = () => existsSync(path.join(killed, 'config.json')) || existsSync(path.join(killed, '.commit'));
  for (let attempt = 0; attempt < 20; attempt++) {
    const { code, stderr } = await trainProcess(killed, started(), 200 + rng.nextInt(Math.ceil(wholeMs / 12)));
    if (code === 0) break;
    assert.equal(code, null, `a resume failed instead of being killed: ${stderr}`);
    kills++;
  }
  const last = await trainProcess(killed, started());
  assert.equal(last.code, 0, `the final resume failed: ${last.stderr}`);
  t.diagnostic(`${kills} kills; an uninterrupted run takes ${wholeMs} ms`);
  assert.ok(kills >= 10, `only ${kills} kills landed before the run finished; the test needs a longer run`);
  for (const f of ['sae.safetensors', 'optimizer.safetensors']) {
    assert.ok((await fsp.readFile(path.join(whole, f))).equals(await fsp.readFile(path.join(killed, f))), `${f} differs after ${kills} kills`);
  }
  assert.deepEqual(JSON.parse(await fsp.readFile(path.join(killed, 'config.json'), 'utf8')).step, JSON.parse(await fsp.readFile(path.join(whole, 'config.json'), 'utf8')).step);
  assert.ok(!existsSync(path.join(killed, '.staging')) && !existsSync(path.join(killed, '.commit')), 'no stale parts are left');
});
