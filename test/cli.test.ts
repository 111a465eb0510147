/**
 * CLI habits, through the real `vitsae` binary: --version, exit codes (2 usage, 1 failure), required options in
 * --help, "did you mean", and options from a --config file that flags override (sweeps included).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { closest, type ConfigSpec, parseArgs, UsageError } from '../src/util/config.js';
import { commands } from '../src/cli/main.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = path.join(ROOT, 'bin', 'vitsae.js');

function vitsae(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }));
  });
}

async function tmpdir(): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-cli-'));
}

test('--version prints the package version', async () => {
  const { version } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.deepEqual(await vitsae('--version'), { code: 0, stdout: `vitsae ${version}\n`, stderr: '' });
});

test('usage errors exit 2 and name the nearest command, option or value', async () => {
  const cases: [string[], RegExp][] = [
    [['trian'], /unknown command "trian" \(did you mean "vitsae train"\?\)/],
    [['eval', 'concept'], /unknown command "eval concept" \(did you mean "vitsae eval concepts"/],
    [['xyzzy'], /unknown command "xyzzy"; vitsae --help lists the commands/],
    [['train', '--shard', 'a', '--out', 'b'], /vitsae train: unknown option --shard \(did you mean --shards\?\)/],
    [['train', '--shards', 'a', '--out', 'b', '--activation', 'topkk'], /--activation "topkk": expected one of relu, topk, batchtopk, matryoshka \(did you mean topk\?\)/],
    [['train', '--shards', 'a', '--out', 'b', '--lr', 'fast'], /--lr "fast": expected a number/],
    [['train'], /--shards is required \(activation shard directory[^;]*; --out is required/],
  ];
  for (const [args, message] of cases) {
    const r = await vitsae(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}, ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /internal error/);
  }
  // The suggestions are known answers, and nothing is suggested for a word far from every name.
  assert.deepEqual(closest('--shard', ['--shards', '--out', '--select']), ['--shards']);
  assert.deepEqual(closest('trian', ['train', 'eval', 'demo']), ['train']);
  assert.deepEqual(closest('xyzzy', ['train', 'eval', 'demo']), []);
});

test('a failing command exits 1; --help marks required options and needs none of them', async () => {
  const dir = await tmpdir();
  try {
    const failed = await vitsae('train', '--shards', path.join(dir, 'missing'), '--out', path.join(dir, 'sae'));
    assert.equal(failed.code, 1, failed.stderr);
    assert.match(failed.stderr, /missing\/metadata\.json does not exist/);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
  const help = await vitsae('train', '--help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: vitsae train --shards SHARDS --out OUT \[options\]$/m);
  assert.match(help.stdout, /^ {2}--shards S +activation shard directory .*\(required\)$/m);
  assert.match(help.stdout, /^ {2}--config FILE +options from a JSON file/m);
  assert.doesNotMatch(help.stdout, /--lr N.*\(required\)/);
});

test('the command list, which runs no module, names and summarises each command as its module does', async () => {
  for (const entry of commands) {
    const cmd = await entry.load();
    assert.deepEqual([cmd.name, cmd.summary], [entry.name, entry.summary]);
  }
  const help = await vitsae('--help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^ {2}eval concepts +how well SAE latents match ground-truth patch concepts/m);
  assert.equal(help.stdout.match(/^ {2}\S/gm)?.length, commands.length);
});

const spec = {
  out: { kind: 'string', required: true, default: '', doc: 'output' },
  lr: { kind: 'number', default: 1e-3, doc: 'learning rate' },
  windowTokens: { kind: 'number', int: true, default: 10, doc: 'window' },
  layer: { kind: 'strings', default: ['-1'], doc: 'layers' },
  progress: { kind: 'boolean', default: true, doc: 'bars' },
} as const satisfies ConfigSpec;

test('--config FILE sets options in any spelling; flags override it wherever they stand', async () => {
  const dir = await tmpdir();
  const file = (name: string, obj: unknown) => {
    const p = path.join(dir, name);
    return fsp.writeFile(p, JSON.stringify(obj)).then(() => p);
  };
  try {
    const cfg = await file('a.json', { out: 'runs/x', lr: 0.5, 'window-tokens': 7, layer: [-2, 3], progress: false });
    const fromFile = parseArgs(spec, ['--config', cfg]);
    assert.deepEqual(fromFile.config, { out: 'runs/x', lr: 0.5, windowTokens: 7, layer: ['-2', '3'], progress: false });
    assert.deepEqual([...fromFile.given].sort(), ['layer', 'lr', 'out', 'progress', 'windowTokens']);
    // Flags win whether they come before or after the file; a list flag replaces the file's list, then accumulates.
    const both = parseArgs(spec, ['--lr', '0.25', '--layer', '5', `--config=${cfg}`, '--layer', '6', '--progress']);
    assert.deepEqual(both.config, { out: 'runs/x', lr: 0.25, windowTokens: 7, layer: ['5', '6'], progress: true });
    // The file's values go through the flags' checks and errors name the file.
    const cases: [unknown, RegExp][] = [
      [{ out: 'o', windowTokens: 1.5 }, /b\.json: --window-tokens "1\.5": expected an integer/],
      [{ out: 'o', windowToken: 3 }, /b\.json: unknown option "windowToken" \(did you mean --window-tokens\?\)/],
      [{ out: 'o', lr: { a: 1 } }, /b\.json: "lr" has the value \{"a":1\}; expected a number/],
      [[1, 2], /expected a JSON object of options/],
      [{ lr: 1 }, /--out is required \(output\)/],
    ];
    for (const [obj, message] of cases) {
      const p = await file('b.json', obj);
      assert.throws(
        () => parseArgs(spec, ['--config', p]),
        (e: Error) => e instanceof UsageError && message.test(e.message),
        JSON.stringify(obj),
      );
    }
    assert.throws(() => parseArgs(spec, ['--config', path.join(dir, 'none.json')]), /none\.json: no such file/);
    await fsp.writeFile(path.join(dir, 'bad.json'), '{"lr": 1,}');
    assert.throws(
      () => parseArgs(spec, ['--config', path.join(dir, 'bad.json')]),
      (e: Error) => e instanceof UsageError && /bad\.json: .*JSON/.test(e.message),
    );
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('old names of a renamed command and option still work, with a note on stderr, and no command list shows them', async () => {
  const command = await vitsae('probe', 'train', '--help');
  assert.equal(command.code, 0, command.stderr);
  assert.match(command.stdout, /^vitsae head train: /);
  assert.equal(command.stderr, 'vitsae: "vitsae probe train" is now "vitsae head train"\n');
  assert.doesNotMatch((await vitsae('--help')).stdout, /probe train/);
  for (const name of ['edit', 'eval edits']) {
    const option = await vitsae(...name.split(' '), '--probe', 'dir', '--help');
    assert.equal(option.code, 0, option.stderr);
    assert.equal(option.stderr, `vitsae ${name}: --probe is now --head\n`);
    assert.match(option.stdout, /^ {2}--head S +the task head: .*\(required; formerly --probe\)$/m);
  }
  const renamed = { head: { kind: 'string', required: true, aliases: ['probe'], default: '', doc: 'the head' } } as const satisfies ConfigSpec;
  const flag = parseArgs(renamed, ['--probe', 'a']);
  assert.deepEqual([flag.config, flag.notes], [{ head: 'a' }, ['--probe is now --head']]);
  const dir = await tmpdir();
  try {
    const cfg = path.join(dir, 'old.json');
    await fsp.writeFile(cfg, JSON.stringify({ probe: 'b' }));
    const file = parseArgs(renamed, ['--config', cfg]);
    assert.deepEqual([file.config, file.notes], [{ head: 'b' }, ['probe is now --head']]);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('a training sweep from a config file, with a flag overriding it', async () => {
  const dir = await tmpdir();
  try {
    const shards = path.join(dir, 'acts');
    const made = await vitsae('data', 'synthetic', '--out', shards, '--n-examples', '40', '--tokens-per-example', '16', '--d', '16', '--n-atoms', '32');
    assert.equal(made.code, 0, made.stderr);
    const cfg = path.join(dir, 'sweep.json');
    await fsp.writeFile(cfg, JSON.stringify({ shards, out: path.join(dir, 'sweep'), sweep: 'k=2,4', activation: 'topk', expansion: 2, batch: 64, tokens: 4000, progress: false }));
    const r = await vitsae('train', '--config', cfg, '--tokens', '1280');
    assert.equal(r.code, 0, r.stderr);
    for (const k of [2, 4]) {
      const c = JSON.parse(await fsp.readFile(path.join(dir, 'sweep', `k=${k}`, 'config.json'), 'utf8'));
      assert.equal(c.sae.k, k);
      assert.equal(c.sae.expansion, 2);
      assert.equal(c.train.tokens, 1280);
      assert.equal(c.step, 20);
    }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
