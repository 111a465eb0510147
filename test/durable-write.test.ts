/**
 * The native durable writer that checkpoints go through (NativeCore.writeFile, src/sae/native/direct_io.h): with
 * O_DIRECT (through an aligned buffer, the last block padded and cut off again) and without, any parts at any
 * offsets land byte for byte; a file it cannot create is named in the error; the core's tensors by name are its
 * own bytes, "W_enc.T" transposed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../src/sae/native.js';
import { transpose } from '../src/sae/model.js';
import { Rng } from '../src/util/random.js';

const S = 300,
  D = 70;
/** A small core (its tensors are the named parts). */
const core = () => new (native().SaeF32)({ d: D, s: S, activation: 1, k: 4, prefixes: [S], kAux: 0, auxCoeff: 0, deadWindow: 1e12, thresholdMomentum: 0.99 });

let tmp: string;
before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-durable-'));
});
after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

function randomBytes(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed, 0);
  return Uint8Array.from({ length: n }, () => rng.nextInt(256));
}

/** Parts that straddle the 8 MB buffer and the 4096-byte blocks: a 13-byte head, a view at an odd offset, a tail. */
function parts(): Uint8Array[] {
  const big = randomBytes(9 * 2 ** 20 + 5, 1);
  const floats = new Float32Array(1000).map((_, i) => i * 0.5);
  return [randomBytes(13, 2), big.subarray(3), new Uint8Array(floats.buffer, 4, 3000), new Uint8Array(0), randomBytes(4097, 3)];
}

const concat = (ps: Uint8Array[]) => Buffer.concat(ps.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));

function withDirectIo<R>(value: string | undefined, f: () => Promise<R>): Promise<R> {
  const old = process.env.VITSAE_DIRECT_IO;
  if (value === undefined) delete process.env.VITSAE_DIRECT_IO;
  else process.env.VITSAE_DIRECT_IO = value;
  return f().finally(() => {
    if (old === undefined) delete process.env.VITSAE_DIRECT_IO;
    else process.env.VITSAE_DIRECT_IO = old;
  });
}

for (const [mode, env] of [
  ['O_DIRECT', undefined],
  ['the page cache (VITSAE_DIRECT_IO=off)', 'off'],
] as const) {
  test(`writeFile through ${mode}: every byte lands, and the file is exactly as long as the parts`, async () => {
    const ps = parts();
    const want = concat(ps);
    // /dev/shm is tmpfs, whose O_DIRECT support depends on the kernel: either way the bytes must be right.
    for (const dir of [tmp, ...(existsSync('/dev/shm') ? ['/dev/shm'] : [])]) {
      const file = path.join(dir, `vitsae-durable-${process.pid}-${env ?? 'direct'}.bin`);
      try {
        await withDirectIo(env, () => core().writeFile(file, ps));
        const got = await fsp.readFile(file);
        assert.equal(got.length, want.length, `${file}: length`);
        assert.ok(got.equals(want), `${file}: bytes differ`);
        // Overwriting a longer file leaves no stale bytes behind.
        await withDirectIo(env, () => core().writeFile(file, [ps[0]]));
        assert.ok((await fsp.readFile(file)).equals(concat([ps[0]])));
      } finally {
        await fsp.rm(file, { force: true });
      }
    }
  });
}

test('writeFile names the file it cannot create', async () => {
  const file = path.join(tmp, 'no-such-dir', 'x.bin');
  await assert.rejects(core().writeFile(file, [new Uint8Array(10)]), (e: Error) => e.message.includes(file) && /No such file/.test(e.message));
});

test("the core's tensors by name are its own bytes, W_enc.T transposed to [D, S], since_fired in float64", async () => {
  const c = core();
  const rng = new Rng(5, 0);
  for (const name of ['W_enc', 'b_enc', 'adam_v.W_dec'])
    c.setTensor(
      name,
      Float32Array.from({ length: name === 'b_enc' ? S : S * D }, () => rng.normal()),
    );
  c.setTensor(
    'since_fired',
    Float64Array.from({ length: S }, (_, i) => i * 1.5),
  );
  const head = randomBytes(5, 4);
  const file = path.join(tmp, 'tensors.bin');
  await c.writeFile(file, [head, 'W_enc.T', 'b_enc', 'since_fired', 'adam_v.W_dec']);
  const bytes = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const want = Buffer.concat([bytes(head), bytes(transpose(c.getTensor('W_enc'), S, D)), bytes(c.getTensor('b_enc')), bytes(c.getTensor('since_fired')), bytes(c.getTensor('adam_v.W_dec'))]);
  assert.ok((await fsp.readFile(file)).equals(want));
  assert.throws(() => c.writeFile(file, ['b_enc.T']), /only \[S, D\] tensors/);
  assert.throws(() => c.writeFile(file, ['no_such_tensor']), /unknown tensor/);
});
