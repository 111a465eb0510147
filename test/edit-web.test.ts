/**
 * The edit demos' HTTP API on a small real run with a classification and a segmentation head: an empty edit
 * answers the unedited prediction (after == before to 1e-5), a strong edit changes it, uploads answer exactly as
 * the same image from the run does, every bad request is a 4xx with a message (never a 500), a decompression bomb
 * is refused from its header before any decoding, and a burst of 50 edits gets answers or 503s from the bounded
 * queue, nothing else.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import { readRun, RUN_FILE, writeRun } from '../src/analysis/run.js';
import { headTrainCommand } from '../src/cli/commands/head.js';
import { createServer, openRuns } from '../src/server/app.js';
import type { EditAnswer, EditRequest, HeadList, Upload } from '../src/server/edit-api.js';
import { runForJson } from './fixtures/helpers.js';
import { makeEditRun, type EditRun } from './fixtures/web/edit-run.js';

let tmp: string;
let run: EditRun;
let app: FastifyInstance;
const UPLOAD_BYTES = 1 << 20;
const host = { host: '127.0.0.1' };

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-edit-web-'));
  run = await makeEditRun(path.join(tmp, 'world'));
  // The same run without heads: no demos.
  await writeRun(path.join(tmp, 'plain'), { model: path.join(tmp, 'x.onnx'), shards: run.shards, sae: run.sae, visuals: run.visuals });
  app = await createServer({ runs: await openRuns([run.dir, path.join(tmp, 'plain')]), loopbackOnly: true, editLimits: { uploadBytes: UPLOAD_BYTES } });
  await app.ready();
});

after(async () => {
  await app?.close();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

const edit = (body: unknown, server = app) => server.inject({ method: 'POST', url: '/api/runs/world/edit', headers: host, payload: body as object });
const upload = (bytes: Buffer, type = 'image/png') => app.inject({ method: 'POST', url: '/api/uploads', headers: { ...host, 'content-type': type }, payload: bytes });
const worldImage = (i: number) => fsp.readFile(path.join(run.dir, 'world', 'images', `${String(i).padStart(6, '0')}.png`));

async function answer(body: EditRequest): Promise<EditAnswer> {
  const res = await edit(body);
  assert.equal(res.statusCode, 200, res.body);
  return res.json<EditAnswer>();
}

/** Probabilities by class name of a classification answer's before or after list. */
const probs = (list: { name: string; prob: number }[]) => new Map(list.map((c) => [c.name, c.prob]));

test('a run lists its heads; a run without heads none', async () => {
  const { heads } = (await app.inject({ url: '/api/runs/world/heads', headers: host })).json<HeadList>();
  assert.deepEqual(
    heads.map((p) => [p.id, p.name, p.task]),
    [
      [0, 'head-classify', 'classify'],
      [1, 'head-segment', 'segment'],
    ],
  );
  assert.equal(heads[0].classes.length, 12);
  assert.ok(heads[1].miou! > 0 && heads[1].miou! <= 1);
  assert.deepEqual((await app.inject({ url: '/api/runs/plain/heads', headers: host })).json<HeadList>(), { heads: [] });
  const none = await app.inject({ method: 'POST', url: '/api/runs/plain/edit', headers: host, payload: { head: 0, image: 0, edits: [] } });
  assert.equal(none.statusCode, 404);
  assert.match(none.json<{ message: string }>().message, /no heads/);
});

test('an empty edit answers the unedited prediction; the requested patches list their latents', async () => {
  const cls = await answer({ head: 0, image: 3, edits: [], patches: [0, 5] });
  assert.equal(cls.task, 'classify');
  assert.deepEqual(cls.grid, [4, 4]);
  if (cls.task !== 'classify') return;
  assert.equal(cls.before.length, 5);
  for (const [name, p] of probs(cls.before)) assert.ok(Math.abs(probs(cls.after).get(name)! - p) < 1e-5, name);
  assert.equal(cls.changed, false);
  assert.deepEqual(Object.keys(cls.patches), ['0', '5']);
  for (const row of Object.values(cls.patches)) {
    assert.ok(row.length > 0 && row.length <= 4, 'TopK k 4');
    assert.deepEqual(
      row.map(([, v]) => v),
      row.map(([, v]) => v).sort((a, b) => b - a),
      'strongest first',
    );
    for (const [j] of row) assert.ok(cls.latents[j].max > 0 && cls.latents[j].latent === j);
  }
  const seg = await answer({ head: 1, image: 3, edits: [] });
  if (seg.task !== 'segment') return assert.fail('a segmentation answer');
  assert.equal(seg.before.length, 16);
  assert.deepEqual(seg.after, seg.before);
  assert.deepEqual(seg.changed, []);
  assert.deepEqual(seg.patches, {});
});

test('a strong edit changes the prediction', async () => {
  const all = await answer({ head: 0, image: 3, edits: [], patches: 'all' });
  // The image's strongest latents pushed to the slider's end, -20x their maxima, everywhere: on this mostly
  // background image they are background features, and boosting them would only confirm "background".
  const strongest = [
    ...new Set(
      Object.values(all.patches)
        .flat()
        .sort((a, b) => b[1] - a[1])
        .map(([j]) => j),
    ),
  ].slice(0, 3);
  const edits = strongest.map((latent) => ({ latent, patches: 'all' as const, value: -20, mode: 'add' as const, relative: true }));
  const cls = await answer({ head: 0, image: 3, edits });
  if (cls.task !== 'classify') return assert.fail('a classification answer');
  const moved = Math.max(...cls.before.map((c) => Math.abs(c.prob - (probs(cls.after).get(c.name) ?? 0))));
  assert.ok(moved > 0.01, `the top classes moved by ${moved}`);
  const seg = await answer({ head: 1, image: 3, edits });
  if (seg.task !== 'segment') return assert.fail('a segmentation answer');
  assert.ok(seg.changed.length > 0, `some patch changed class: ${JSON.stringify(seg.before)} -> ${JSON.stringify(seg.after)}`);
  assert.deepEqual(
    seg.changed,
    seg.before.flatMap((l, p) => (l !== seg.after[p] ? [p] : [])),
  );
  // Editing only patch 0 can change nothing but what attends to it; the answer names the edited latents.
  const one = await answer({ head: 1, image: 3, edits: [{ latent: strongest[0], patches: [0], value: -20, mode: 'set', relative: true }] });
  assert.ok(one.latents[strongest[0]].max > 0);
});

test('bad requests get a 4xx with a message, never a 500', async () => {
  const ok = { head: 0, image: 0, edits: [] };
  const e = (over: object) => ({ latent: 0, patches: 'all', value: 1, mode: 'set', ...over });
  const cases: [unknown, number, RegExp][] = [
    [{ ...ok, head: 7 }, 404, /head 7 does not exist/],
    [{ ...ok, image: 100_000 }, 404, /image 100000 does not exist/],
    [{ ...ok, image: -1 }, 400, /image/],
    [{ ...ok, edits: [e({ latent: 64 })] }, 400, /latent 64 does not exist/],
    [{ ...ok, edits: [e({ patches: [16] })] }, 400, /patch 16 does not exist/],
    [{ ...ok, edits: [e({ patches: 'some' })] }, 400, /patches/],
    [{ ...ok, edits: [e({ mode: 'multiply' })] }, 400, /mode/],
    [{ ...ok, edits: [e({ value: 1e9 })] }, 400, /value/],
    // Numbers are JSON numbers: a string is not coerced (" " would read as 0).
    [{ ...ok, head: ' ' }, 400, /body\.head must be a JSON number, got the string " "/],
    [{ ...ok, image: '0' }, 400, /body\.image must be a JSON number/],
    [{ ...ok, edits: [e({ latent: '3' })] }, 400, /body\.edits\[0\]\.latent must be a JSON number/],
    [{ ...ok, edits: [e({ patches: ['1'] })] }, 400, /body\.edits\[0\]\.patches\[0\] must be a JSON number/],
    [{ ...ok, edits: [e({ value: ' ' })] }, 400, /value must be a JSON number/],
    [{ ...ok, edits: [e({ colour: 'red' })] }, 400, /additional/],
    [{ ...ok, patches: [99] }, 400, /patch 99 does not exist/],
    [{ ...ok, image: { upload: 'f'.repeat(64) } }, 404, /upload the image again/],
    [{ ...ok, image: { upload: '../../etc/passwd' } }, 400, /upload/],
    [{ head: 0, edits: [] }, 400, /image/],
  ];
  for (const [body, code, message] of cases) {
    const res = await edit(body);
    assert.equal(res.statusCode, code, `${JSON.stringify(body)}: ${res.body}`);
    assert.match(res.json<{ message: string }>().message, message, JSON.stringify(body));
  }
  // Values that JSON turns into Infinity, and bodies that are not JSON.
  for (const payload of ['{"head":0,"image":0,"edits":[{"latent":0,"patches":"all","value":1e999,"mode":"set"}]}', '{"head":0,', 'null']) {
    const res = await app.inject({ method: 'POST', url: '/api/runs/world/edit', headers: { ...host, 'content-type': 'application/json' }, payload });
    assert.equal(res.statusCode, 400, `${payload}: ${res.body}`);
  }
  assert.equal((await app.inject({ method: 'POST', url: '/api/runs/nope/edit', headers: host, payload: ok })).statusCode, 404);
});

test('clients from before the rename: /probes lists the heads, and an edit may name its head `probe`', async () => {
  const { heads } = (await app.inject({ url: '/api/runs/world/heads', headers: host })).json<HeadList>();
  assert.deepEqual((await app.inject({ url: '/api/runs/world/probes', headers: host })).json(), { probes: heads });
  const edits = [{ latent: 0, patches: [1, 2], value: 5, mode: 'add' as const, relative: true }];
  for (const id of [0, 1]) {
    const old = await edit({ probe: id, image: 3, edits, patches: [1] });
    assert.equal(old.statusCode, 200, old.body);
    assert.deepEqual(old.json(), await answer({ head: id, image: 3, edits, patches: [1] }), `probe ${id} answers as head ${id}`);
  }
  const cases: [unknown, number, RegExp][] = [
    [{ probe: 7, image: 0, edits: [] }, 404, /head 7 does not exist/],
    [{ probe: ' ', image: 0, edits: [] }, 400, /body\.probe must be a JSON number/],
    [{ head: 0, probe: 0, image: 0, edits: [] }, 400, /both head and probe/],
    [{ image: 0, edits: [] }, 400, /required property 'head'/],
  ];
  for (const [body, code, message] of cases) {
    const res = await edit(body);
    assert.equal(res.statusCode, code, `${JSON.stringify(body)}: ${res.body}`);
    assert.match(res.json<{ message: string }>().message, message, JSON.stringify(body));
  }
});

test('an upload answers as the same image from the run does, and has a view', async () => {
  const bytes = await worldImage(3);
  const res = await upload(bytes);
  assert.equal(res.statusCode, 200, res.body);
  const up = res.json<Upload>();
  assert.deepEqual([up.width, up.height], [64, 64]);
  assert.match(up.upload, /^[0-9a-f]{64}$/);
  const edits = [{ latent: 0, patches: [1, 2], value: 5, mode: 'add' as const, relative: true }];
  const fromRun = await answer({ head: 0, image: 3, edits, patches: [1] });
  const fromUpload = await answer({ head: 0, image: { upload: up.upload }, edits, patches: [1] });
  assert.deepEqual(fromUpload, fromRun);
  const view = await app.inject({ url: `/api/runs/world/uploads/${up.upload}/view.png`, headers: host });
  assert.equal(view.statusCode, 200);
  assert.equal(view.headers['content-type'], 'image/png');
  assert.deepEqual(view.rawPayload, (await app.inject({ url: '/api/runs/world/images/3/view.png', headers: host })).rawPayload, 'the same picture as the image page');
});

/** A PNG header promising width x height 1-bit grey pixels, and all of their (zero) rows, deflated. */
function bombPng(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), body.length + 4);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 1; // bit depth 1, colour type 0 (grey), deflate, no filter, no interlace
  const rows = deflateSync(Buffer.alloc(height * (1 + Math.ceil(width / 8))), { level: 9 });
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', rows), chunk('IEND', Buffer.alloc(0))]);
}

test('uploads: a decompression bomb is refused from its header, oversize and corrupt files too', async () => {
  const bomb = bombPng(20_000, 20_000);
  assert.ok(bomb.length < 200_000, `the bomb is ${bomb.length} bytes`);
  const t0 = performance.now();
  const res = await upload(bomb);
  const ms = performance.now() - t0;
  assert.equal(res.statusCode, 413, res.body);
  assert.match(res.json<{ message: string }>().message, /20000 x 20000 = 400000000 pixels; the limit is 40000000/);
  // Decoding 400 million pixels takes seconds; reading a header does not.
  assert.ok(ms < 500, `answered in ${ms.toFixed(0)} ms`);

  const big = await upload(Buffer.alloc(UPLOAD_BYTES + 1));
  assert.equal(big.statusCode, 413);
  assert.match(big.json<{ message: string }>().message, /limit is 1048576/);

  const png = await worldImage(0);
  const bad: [Buffer, string, number][] = [
    [png.subarray(0, png.length >> 1), 'image/png', 400],
    [Buffer.from('not an image at all'), 'image/png', 400],
    [Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'), 'image/svg+xml', 415],
    [Buffer.alloc(0), 'image/png', 400],
    [png, 'text/plain', 415],
  ];
  for (const [bytes, type, code] of bad) {
    const r = await upload(bytes, type);
    assert.equal(r.statusCode, code, `${type} ${bytes.length} bytes: ${r.body}`);
    assert.ok(r.json<{ message: string }>().message, 'a message');
  }
});

test('run.json lists heads relative to the run when inside it; head train --run adds one, also to an old run.json', async () => {
  const dir = path.join(tmp, 'registered');
  const { model } = await readRun(run.dir);
  await writeRun(dir, { model, shards: run.shards, sae: run.sae, visuals: run.visuals });
  // A run.json from before the task head's rename, which listed the heads as "probes".
  const file = path.join(dir, RUN_FILE);
  await fsp.writeFile(file, JSON.stringify({ ...JSON.parse(await fsp.readFile(file, 'utf8')), probes: [run.heads[0]] }));
  assert.deepEqual((await readRun(dir)).heads, [run.heads[0]]);
  await runForJson(headTrainCommand, ['--run', dir, '--task', 'segment', '--data', path.join(run.dir, 'world'), '--out', path.join(dir, 'seg'), '--epochs', '1', '--no-progress', '--json']);
  const raw = JSON.parse(await fsp.readFile(file, 'utf8')) as { heads: string[]; probes?: string[] };
  assert.deepEqual([raw.heads, raw.probes], [[run.heads[0], 'seg'], undefined], 'written back as "heads"');
  assert.deepEqual((await readRun(dir)).heads, [run.heads[0], path.join(dir, 'seg')]);
});

test('a burst of 50 edits gets answers and 503s from the bounded queue, nothing else', async () => {
  // A fresh server: its first edit opens the engine, so the burst meets a busy queue.
  const server = await createServer({ runs: await openRuns([run.dir]), editLimits: { editConcurrency: 1, editQueue: 4 } });
  try {
    const body = { head: 1, image: 7, edits: [{ latent: 1, patches: 'all', value: -3, mode: 'set', relative: true }] };
    const replies = await Promise.all(Array.from({ length: 50 }, () => edit(body, server)));
    const codes = replies.map((r) => r.statusCode);
    assert.deepEqual([...new Set(codes)].sort(), [200, 503], `codes ${codes}`);
    const ok = replies.filter((r) => r.statusCode === 200);
    assert.ok(ok.length >= 5 && ok.length < 50, `${ok.length} answered`);
    for (const r of ok) assert.deepEqual(r.json(), ok[0].json());
    for (const r of replies.filter((r) => r.statusCode === 503)) {
      assert.equal(r.headers['retry-after'], '1');
      assert.match(r.json<{ message: string }>().message, /busy/);
    }
    // Once the burst is over the queue takes work again.
    assert.equal((await edit(body, server)).statusCode, 200);
  } finally {
    await server.close();
  }
});
