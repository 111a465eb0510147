// Prints the build flags for the BLAS that the SAE core links, for binding.gyp: `include` (include directories),
// `libs` (linker flags) or `defines`. Order: pkg-config's openblas (Debian/Ubuntu ship openblas.pc), the
// Debian/Ubuntu multiarch layout, Homebrew's prefixes, then Apple's Accelerate on macOS.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';

const what = process.argv[2];
const mac = process.platform === 'darwin';

function pkgConfig() {
  try {
    const run = (flag) => execFileSync('pkg-config', [flag, 'openblas'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const include = run('--cflags-only-I').split(/\s+/).filter(Boolean).map((f) => f.replace(/^-I/, '').replace(/\/$/, ''));
    return { include, libs: run('--libs').split(/\s+/).filter(Boolean), defines: [] };
  } catch {
    return null;
  }
}

function byPath() {
  const multiarch = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu', ppc64: 'powerpc64le-linux-gnu', s390x: 's390x-linux-gnu', riscv64: 'riscv64-linux-gnu' }[process.arch];
  const candidates = [
    ...(multiarch ? ['openblas-pthread', 'openblas-openmp', 'openblas-serial'].map((v) => ({ include: `/usr/include/${multiarch}/${v}`, lib: `/usr/lib/${multiarch}/${v}` })) : []),
    { include: '/usr/include/openblas', lib: null },
    { include: '/opt/homebrew/opt/openblas/include', lib: '/opt/homebrew/opt/openblas/lib' },
    { include: '/usr/local/opt/openblas/include', lib: '/usr/local/opt/openblas/lib' },
  ];
  const hit = candidates.find((c) => existsSync(path.join(c.include, 'cblas.h')));
  if (!hit) return null;
  return { include: [hit.include], libs: [...(hit.lib ? [`-L${hit.lib}`, ...(mac ? [`-Wl,-rpath,${hit.lib}`] : [])] : []), '-lopenblas'], defines: [] };
}

function accelerate() {
  return mac ? { include: [], libs: ['$(SDKROOT)/System/Library/Frameworks/Accelerate.framework'], defines: ['VITSAE_ACCELERATE'] } : null;
}

const found = pkgConfig() ?? byPath() ?? accelerate();
if (!found) {
  process.stderr.write('vitsae: OpenBLAS not found (no `pkg-config openblas`, no cblas.h in the Debian/Ubuntu or Homebrew locations). ' +
    'Install it (Debian/Ubuntu: apt install libopenblas-dev pkgconf; macOS: brew install openblas) or set PKG_CONFIG_PATH to the folder holding openblas.pc.\n');
  process.exit(1);
}
// Apple's clang has no OpenMP runtime of its own: Homebrew's libomp supplies it.
if (mac) {
  const omp = ['/opt/homebrew/opt/libomp', '/usr/local/opt/libomp'].find((p) => existsSync(path.join(p, 'include', 'omp.h')));
  if (omp) {
    found.include.push(path.join(omp, 'include'));
    found.libs.push(`-L${path.join(omp, 'lib')}`, '-lomp');
  }
}
const out = { include: found.include, libs: found.libs, defines: found.defines }[what];
if (!out) {
  process.stderr.write(`usage: node blas-flags.mjs include|libs|defines\n`);
  process.exit(2);
}
process.stdout.write(out.join(' ') + '\n');
