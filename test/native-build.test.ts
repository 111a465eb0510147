/**
 * The addon's build finds OpenBLAS through pkg-config and, without it, in the distribution's folders
 * (src/sae/native/blas-flags.mjs, which binding.gyp runs); a missing OpenBLAS fails with the fix in the message.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SCRIPT = path.join(ROOT, 'src', 'sae', 'native', 'blas-flags.mjs');

function flags(what: string, env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, [SCRIPT, what], { encoding: 'utf8', env });
}

test('with pkg-config, the include folder holds cblas.h and the libraries link -lopenblas', () => {
  const inc = flags('include');
  assert.equal(inc.status, 0, inc.stderr);
  const dirs = inc.stdout.trim().split(/\s+/);
  assert.ok(
    dirs.some((d) => existsSync(path.join(d, 'cblas.h'))),
    `no cblas.h in ${dirs.join(', ')}`,
  );
  assert.ok(flags('libs').stdout.split(/\s+/).includes('-lopenblas'));
});

test('without pkg-config on PATH, the Debian multiarch folder is found', { skip: process.platform !== 'linux' || process.arch !== 'x64' }, () => {
  // A PATH that holds only node: pkg-config cannot run.
  const bin = mkdtempSync(path.join(os.tmpdir(), 'vitsae-nopkg-'));
  try {
    symlinkSync(process.execPath, path.join(bin, 'node'));
    const env = { ...process.env, PATH: bin };
    const inc = flags('include', env);
    assert.equal(inc.status, 0, inc.stderr);
    assert.equal(inc.stdout.trim(), '/usr/include/x86_64-linux-gnu/openblas-pthread');
    assert.equal(flags('libs', env).stdout.trim(), '-L/usr/lib/x86_64-linux-gnu/openblas-pthread -lopenblas');
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});

test('an unknown request is a usage error', () => {
  const r = flags('cflags');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /usage: node blas-flags.mjs include\|libs\|defines/);
});
