/**
 * The package as a user installs it: `npm pack`, `npm install` of the tarball into an empty folder outside the
 * repository (npm resolves the dependencies afresh, our install script builds the native core), then
 * `import('vitsae')` by name, its types, its bin and its shipped models. CI also runs the installed demo (.ci/run).
 *
 * better-sqlite3 has no prebuilt binary reachable offline and compiles for one to several minutes; a user online
 * downloads its prebuild instead. So does this test, from a local prebuild directory (prebuild-install's
 * `npm_config_better_sqlite3_local_prebuilds`) holding this machine's own build of the same version. If npm
 * resolves another version, it finds none and compiles: slower, not wrong.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

/** A prebuild-install archive of the repository's better-sqlite3 binary, named as its release assets are. */
async function localPrebuild(dir: string): Promise<string> {
  const bs = path.join(ROOT, 'node_modules', 'better-sqlite3');
  const { version } = JSON.parse(await fsp.readFile(path.join(bs, 'package.json'), 'utf8'));
  const out = path.join(dir, 'prebuilds');
  await fsp.mkdir(out, { recursive: true });
  const name = `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`;
  await exec('tar', ['-czf', path.join(out, name), '-C', bs, 'build/Release/better_sqlite3.node']);
  return out;
}

test('npm pack + npm install into an empty folder: import("vitsae") works, with types, bin and models', { timeout: 15 * 60_000 }, async () => {
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-package-'));
  try {
    // dist/ is built by `npm test`; --ignore-scripts skips `prepare`, which would build it again.
    const packed = JSON.parse((await exec('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], { cwd: ROOT, maxBuffer: 64 << 20 })).stdout)[0];
    const files: string[] = packed.files.map((f: { path: string }) => f.path);
    for (const f of [
      'dist/src/index.js',
      'dist/src/index.d.ts',
      'dist/app/index.html',
      'bin/vitsae.js',
      'binding.gyp',
      'models/concept-world-control.onnx',
      'models/fashion-mnist-supervised.onnx',
      'models/fashion-mnist-supervised.json',
    ]) {
      assert.ok(files.includes(f), `the package lacks ${f}`);
    }
    assert.ok(
      files.some((f) => f.startsWith('src/sae/native/')),
      'the package lacks the native sources',
    );
    assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('dist/test/')), 'the package carries the tests');

    const app = path.join(tmp, 'app');
    await fsp.mkdir(app);
    await fsp.writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    const env = {
      ...process.env,
      ONNXRUNTIME_NODE_INSTALL: 'skip',
      npm_config_nodedir: '/usr',
      npm_config_better_sqlite3_local_prebuilds: await localPrebuild(tmp),
    };
    await exec('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', path.join(tmp, packed.filename)], { cwd: app, env, maxBuffer: 64 << 20 }).catch((e) => {
      throw new Error(`npm install of the tarball failed:\n${e.stdout}\n${e.stderr}`);
    });

    // Imported by name from the installed copy (not the repository): open an SAE, encode, decode.
    await fsp.writeFile(
      path.join(app, 'use.js'),
      `import { Sae, defaultsOf, openSae, saeSpec } from 'vitsae';
const sae = Sae.create(8, { ...defaultsOf(saeSpec), activation: 'topk', k: 2, expansion: 2 }, { mean: new Float32Array(8), inputScale: 1, seed: 1 });
await sae.save('sae');
const opened = await openSae('sae');
const x = Float32Array.from({ length: 24 }, (_, i) => Math.sin(i));
const f = await opened.encode(x, true);
const xhat = opened.decode(f);
console.log(JSON.stringify({ resolved: import.meta.resolve('vitsae'), dSae: opened.dSae, active: f.idx.length, diff: Math.max(...xhat.map((v, i) => Math.abs(v - f.xhat[i]))) }));
`,
    );
    const used = JSON.parse((await exec(process.execPath, ['use.js'], { cwd: app })).stdout);
    assert.equal(fileURLToPath(used.resolved), path.join(app, 'node_modules', 'vitsae', 'dist', 'src', 'index.js'));
    assert.equal(used.dSae, 16);
    assert.equal(used.active, 3 * 2);
    assert.ok(used.diff < 1e-6, `decode and the core's reconstruction differ by ${used.diff}`);

    // The declarations resolve through the exports map: a consumer's TypeScript checks against them.
    await fsp.writeFile(
      path.join(app, 'check.ts'),
      `import { openSae, type Sae, type SaeConfig, type TrainOptions } from 'vitsae';\nconst k: SaeConfig['k'] = 4;\nconst open: (p: string) => Promise<Sae> = openSae;\nexport const t: Partial<TrainOptions> = { out: 'x' };\nexport { k, open };\n`,
    );
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    await exec(
      process.execPath,
      [
        tsc,
        '--noEmit',
        '--strict',
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
        '--skipLibCheck',
        '--typeRoots',
        path.join(ROOT, 'node_modules', '@types'),
        '--types',
        'node',
        'check.ts',
      ],
      { cwd: app },
    ).catch((e) => {
      throw new Error(`a consumer's TypeScript does not accept the package's types:\n${e.stdout}${e.stderr}`);
    });

    const bin = await exec(path.join(app, 'node_modules', '.bin', 'vitsae'), ['--version'], { cwd: app });
    assert.equal(bin.stdout, `vitsae ${pkg.version}\n`);
    for (const m of ['concept-world-control.onnx', 'fashion-mnist-supervised.onnx']) {
      assert.equal((await fsp.stat(path.join(app, 'node_modules', 'vitsae', 'models', m))).size, (await fsp.stat(path.join(ROOT, 'models', m))).size, m);
    }
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
});

/** The newest Node major line released when this was written; an open range is checked up to it. */
const NEWEST_NODE = 26;

/**
 * The lowest Node version of each major line a range admits: "^20.19.0 || >=22.12.0" -> {20: [20,19,0],
 * 22: [22,12,0]} and every later major up to NEWEST_NODE from the `>=` term on. Covers the forms in engines fields.
 */
function floors(range: string): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const term of range.split('||')) {
    const m = /(>=)?\s*[\^~]?(\d+)(?:\.(\d+|x))?(?:\.(\d+|x))?/.exec(term.trim());
    if (!m) continue;
    const v = [Number(m[2]), Number(m[3]) || 0, Number(m[4]) || 0];
    for (let major = v[0]; major <= (m[1] ? NEWEST_NODE : v[0]); major++) if (!out.has(major)) out.set(major, major === v[0] ? v : [major, 0, 0]);
  }
  return out;
}

const older = (a: number[], b: number[]) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];

test('engines admits no Node that the build or an install script refuses, and this Node', () => {
  const ours = floors(pkg.engines.node);
  // vite and rolldown build the web app (prepare); node-gyp runs our install script; sharp and better-sqlite3 load.
  for (const dep of ['vite', 'rolldown', '@vitejs/plugin-react', 'node-gyp', 'sharp', 'better-sqlite3']) {
    const theirs = floors(JSON.parse(readFileSync(path.join(ROOT, 'node_modules', dep, 'package.json'), 'utf8')).engines.node);
    for (const [major, floor] of ours) {
      const need = theirs.get(major);
      assert.ok(need, `${dep} does not support Node ${major}, which engines admits`);
      assert.ok(older(floor, need) >= 0, `engines admits Node ${floor.join('.')}, ${dep} needs ${need.join('.')}`);
    }
  }
  const here = process.versions.node.split('.').map(Number);
  assert.ok(ours.has(here[0]) && older(here, ours.get(here[0])!) >= 0, `this Node ${process.version} is outside engines ${pkg.engines.node}`);
});
