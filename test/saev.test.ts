/**
 * The saev round trip and the Python export, end to end on a real recording (the fixture ViT over Fashion-MNIST):
 * saev's loading rules (test/fixtures/saev/saev_load.py, a numpy re-implementation citing saev's lines) accept what
 * vitsae records and read the same numbers; src/shards/saev.ts names the same rule saev fails on for each defect;
 * old recordings (vitsae data in metadata.json) still open. Then the README's GPU path on the CPU: a saev-format
 * checkpoint trained on those shards by a stand-in for saev's trainer, `vitsae convert`, `vitsae visuals`, and
 * `vitsae export`, whose files numpy (and scipy/pandas when installed) load with vitsae's numbers.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { record, type RecordingData } from '../src/backbone/record.js';
import { DETAILS_FILE, METADATA_FILE, readMetadata, saevMetadata, SAEV_DATA_NOTE, ShardDataset, type ShardMetadata, SHARDS_FILE } from '../src/shards/format.js';
import { saevRefusals } from '../src/shards/saev.js';
import { unpickle } from '../src/interop/index.js';
import { runCommand } from '../src/cli/command.js';
import { convertCommand } from '../src/cli/commands/convert.js';
import { visualsCommand } from '../src/cli/commands/visuals.js';
import { exportCommand } from '../src/cli/commands/export.js';
import { shardsInfoCommand } from '../src/cli/commands/shards.js';
import { openSae } from '../src/interop/index.js';
import { readRun } from '../src/analysis/run.js';
import { STATS_COLUMNS, VisualsIndex } from '../src/analysis/visuals-index.js';
import { fixtureModel } from './fixtures/models.js';
import { fashionSubset } from './fixtures/web/run.js';

const PYTHON = '/usr/bin/python3';
const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test/fixtures/saev');
const has = (mod: string) => spawnSync(PYTHON, ['-c', `import ${mod}`], { stdio: 'ignore' }).status === 0;
const noTorch = !has('torch');

function py(args: string[], input = ''): string {
  const r = spawnSync(PYTHON, args, { input, encoding: 'utf8' });
  assert.equal(r.status, 0, `${args[0]} failed:\n${r.stderr}`);
  return r.stdout;
}

interface SaevLoad {
  ok: boolean;
  rule?: string;
  message?: string;
  metadata?: Record<string, unknown>;
  rows?: { idx: number; example_idx: number; content_token_idx: number; act: number[] }[];
}

const saevLoad = (dir: string, query: object = {}): SaevLoad => JSON.parse(py([path.join(FIXTURES, 'saev_load.py'), dir], JSON.stringify(query)));

async function copyDir(from: string, to: string): Promise<void> {
  await fsp.cp(from, to, { recursive: true });
}

async function editJson<T = Record<string, unknown>>(file: string, edit: (v: T) => unknown): Promise<void> {
  await fsp.writeFile(file, JSON.stringify(edit(JSON.parse(await fsp.readFile(file, 'utf8'))), null, 2) + '\n');
}

describe('saev round trip', { skip: noTorch && `${PYTHON} has no torch/numpy (install Debian python3-torch)` }, () => {
  let root: string;
  let shards: string;
  const P = 16; // the fixture ViT's 4x4 patch grid

  before(async () => {
    root = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-saev-'));
    shards = path.join(root, 'saev', 'shards', 'fmnist');
    const data = await fashionSubset(path.join(root, 'data'), 40);
    // Two layers and 3 shards (the last one partial), so positions and values of layers differ and padding matters.
    await record({ model: fixtureModel('vit_hf'), layers: ['1', '-1'], data, out: shards, batch: 8, maxTokensPerShard: 16 * 17 * 2, progress: false, log: () => {} });
  });
  after(() => fsp.rm(root, { recursive: true, force: true }));

  it("records a metadata.json saev loads unchanged, with vitsae's own details in vitsae.json", async () => {
    const disk = JSON.parse(await fsp.readFile(path.join(shards, METADATA_FILE), 'utf8')) as ShardMetadata;
    assert.equal(disk.family, 'clip', "a ViT with a CLS token maps to saev's clip family");
    assert.equal(disk.pixel_agg, 'majority');
    assert.equal(typeof disk.data, 'string');
    // data is the base64 of a pickled str pointing to vitsae.json.
    assert.equal(unpickle(Buffer.from(disk.data as string, 'base64'), 'data'), SAEV_DATA_NOTE);
    const details = JSON.parse(await fsp.readFile(path.join(shards, DETAILS_FILE), 'utf8'));
    assert.equal(details.format, 'vitsae-shard-details');
    assert.equal(details.pixel_agg, null);
    assert.equal(details.data.format, 'vitsae-record');
    // vitsae's readers see the recording's own values.
    const md = await readMetadata(shards);
    assert.equal((md.data as RecordingData).format, 'vitsae-record');
    assert.deepEqual([md.family, md.pixel_agg], [details.family, null]);
    assert.deepEqual(saevMetadata(md), disk);
    assert.deepEqual(md.layers, [1, 2]);

    assert.deepEqual(await saevRefusals(shards), []);
    const loaded = saevLoad(shards);
    assert.ok(loaded.ok, `saev's rules refused it: ${loaded.rule}: ${loaded.message}`);
    assert.deepEqual(loaded.metadata, disk);
  });

  it("saev's reader reads the same float32 values, layers addressed by value", async () => {
    const ds = await ShardDataset.open(shards);
    try {
      assert.equal(ds.shards.length, 3);
      for (const layer of [1, 2]) {
        const n = ds.nExamples * P;
        const indices = Array.from({ length: n }, (_, i) => i);
        const r = saevLoad(shards, { layer, indices });
        assert.ok(r.ok);
        // Every content token of the layer: vitsae's patch p of example e is stored token 1 + p (after the CLS).
        const ours = await ds.readTokens(ds.layerIndex(layer), 0, ds.nExamples, 1, P);
        for (const row of r.rows!) {
          assert.equal(row.example_idx, Math.floor(row.idx / P));
          assert.equal(row.content_token_idx, row.idx % P);
          const at = row.idx * ds.d;
          assert.deepEqual(row.act, Array.from(ours.subarray(at, at + ds.d)), `layer ${layer} token ${row.idx}`);
        }
      }
    } finally {
      await ds.close();
    }
  });

  it('names the rule saev fails on for each defect, as saev_load.py finds it', async () => {
    const defects: [string, (dir: string) => Promise<void>][] = [
      ['fields', (d) => editJson(path.join(d, METADATA_FILE), (m) => ({ ...m, extra: 1 }))],
      ['family', (d) => editJson(path.join(d, METADATA_FILE), (m) => ({ ...m, family: 'vit' }))],
      ['types', (d) => editJson(path.join(d, METADATA_FILE), (m) => ({ ...m, ckpt: 3 }))],
      ['data', (d) => editJson(path.join(d, METADATA_FILE), (m) => ({ ...m, data: { a: 1 } }))],
      ['pixel_agg', (d) => editJson(path.join(d, METADATA_FILE), (m) => ({ ...m, pixel_agg: null }))],
      ['protocol', (d) => editJson(path.join(d, METADATA_FILE), (m) => ({ ...m, protocol: '3.0' }))],
      ['dtype', (d) => editJson(path.join(d, METADATA_FILE), (m) => ({ ...m, dtype: 'float16' }))],
      ['metadata', (d) => fsp.writeFile(path.join(d, METADATA_FILE), '[]')],
      ['labels', (d) => fsp.writeFile(path.join(d, 'labels.bin'), new Uint8Array(40 * P - 1))],
      ['examples_per_shard', (d) => editJson(path.join(d, METADATA_FILE), (m) => ({ ...m, max_tokens_per_shard: 10 }))],
      ['shards_json', (d) => editJson<{ n_examples: number }[]>(path.join(d, SHARDS_FILE), (l) => [{ ...l[0], bytes: 1 }, ...l.slice(1)])],
      ['shard_file', (d) => fsp.rm(path.join(d, 'acts000001.bin'))],
      ['shard_size', (d) => fsp.truncate(path.join(d, 'acts000002.bin'), 100)],
      ['full_shards', (d) => editJson<{ n_examples: number }[]>(path.join(d, SHARDS_FILE), (l) => [{ ...l[0], n_examples: l[0].n_examples - 1 }, ...l.slice(1)])],
    ];
    for (const [rule, spoil] of defects) {
      const dir = path.join(root, 'saev', 'shards', `bad-${rule}`);
      await copyDir(shards, dir);
      await spoil(dir);
      assert.deepEqual(
        (await saevRefusals(dir)).map((r) => r.rule),
        [rule],
        `${rule}: vitsae's check`,
      );
      const r = saevLoad(dir);
      assert.deepEqual([r.ok, r.rule], [false, rule], `${rule}: saev_load.py says ${r.message}`);
    }
    // saev's folder rule: the same files elsewhere.
    const elsewhere = path.join(root, 'elsewhere', 'fmnist');
    await copyDir(shards, elsewhere);
    assert.deepEqual(
      (await saevRefusals(elsewhere)).map((r) => r.rule),
      ['path'],
    );
    assert.equal(saevLoad(elsewhere).rule, 'path');
  });

  it('opens recordings written before vitsae.json, and shards info names each saev rule they fail', async () => {
    const old = path.join(root, 'saev', 'shards', 'old');
    await copyDir(shards, old);
    const md = await readMetadata(shards);
    await fsp.rm(path.join(old, DETAILS_FILE));
    await fsp.writeFile(path.join(old, METADATA_FILE), JSON.stringify({ ...md, family: 'vit' }, null, 2));
    const reopened = await ShardDataset.open(old);
    assert.deepEqual(reopened.metadata, { ...md, family: 'vit' });
    await reopened.close();
    assert.deepEqual(
      (await saevRefusals(old)).map((r) => r.rule),
      ['family', 'data', 'pixel_agg'],
    );
    assert.equal(saevLoad(old).rule, 'pixel_agg', 'saev fails first on PixelAgg(None) in Metadata.load');

    let out = '';
    const write = process.stdout.write;
    process.stdout.write = ((s: string) => ((out += s), true)) as typeof process.stdout.write;
    try {
      await runCommand(shardsInfoCommand, [old, '--json']);
    } finally {
      process.stdout.write = write;
    }
    const info = JSON.parse(out);
    assert.equal(info.valid, true);
    assert.equal(info.saev.loadable, false);
    assert.deepEqual(
      info.saev.refusals.map((r: { rule: string }) => r.rule),
      ['family', 'data', 'pixel_agg'],
    );
    assert.match(info.saev.refusals[0].message, /"vit" is not one of saev's families/);
  });

  it("the GPU path on the CPU: saev's checkpoint converts back, browses and exports for Python", async () => {
    const runDir = path.join(root, 'saev', 'runs', 'abc123');
    const trained = JSON.parse(py([path.join(FIXTURES, 'saev_train.py'), shards, '2', runDir, '48', '4', '150']));
    assert.equal(trained.tokens, 40 * P);
    const sae = path.join(root, 'sae');
    await runCommand(convertCommand, [path.join(runDir, 'checkpoint', 'sae.pt'), '--out', sae]);

    // vitsae's latents of the converted SAE are saev's (vitsae's TopK drops negative values saev would keep).
    const model = await openSae(sae);
    const ds = await ShardDataset.open(shards);
    const x = await ds.readTokens(ds.layerIndex(2), 0, ds.nExamples, 1, P);
    await ds.close();
    const S = 48;
    const expected = new Float32Array(readFileSync(path.join(runDir, 'expect.latents.f32')).buffer.slice(0));
    const ours = await model.encode(x);
    const dense = new Float32Array(40 * P * S);
    for (let r = 0; r < 40 * P; r++) for (let i = ours.rowptr[r]; i < ours.rowptr[r + 1]; i++) dense[r * S + ours.idx[i]] = ours.val[i];
    let compared = 0;
    for (let i = 0; i < dense.length; i++) {
      const want = Math.max(0, expected[i]);
      if (want === 0 && dense[i] === 0) continue;
      assert.ok(Math.abs(dense[i] - want) <= 1e-4 * (1 + want), `latent ${i % S} of token ${Math.floor(i / S)}: ${dense[i]} vs saev ${want}`);
      compared++;
    }
    assert.ok(compared > 40 * P, 'the latents are not all zero');

    // Browse: visuals over the recording, read by the browser's index.
    const run = path.join(root, 'run');
    await runCommand(visualsCommand, ['--sae', sae, '--shards', shards, '--layer', '2', '--run', run, '--k', '5', '--thumb-size', '32', '--no-progress']);
    const vis = await VisualsIndex.open((await readRun(run)).visuals);
    for (let s = 0; s < S; s++) {
      let fires = 0;
      for (let r = 0; r < 40 * P; r++) if (dense[r * S + s] > 0) fires++;
      assert.equal(vis.stats[s * STATS_COLUMNS.length], fires, `latent ${s} fire count`);
    }

    // Export for Python, loaded by numpy (and scipy/pandas if installed) and compared with vitsae's numbers.
    const exp = path.join(root, 'export');
    await runCommand(exportCommand, ['--run', run, '--out', exp, '--no-progress']);
    const loaded = JSON.parse(py([path.join(FIXTURES, 'load_export.py'), exp]));
    assert.deepEqual(loaded.latents_shape, [40 * P, S]);
    assert.deepEqual(loaded.latents_dense, Array.from(dense), "latents.npz holds vitsae's latents");
    for (let s = 0; s < S; s++) {
      const sum = vis.summary(s);
      assert.deepEqual(loaded.features.fire_tokens[s], vis.stats[s * 4]);
      assert.deepEqual(loaded.features.fire_images[s], vis.stats[s * 4 + 1]);
      assert.deepEqual([loaded.features.frequency[s], loaded.features.mean[s], loaded.features.max[s]], [sum.frequency, sum.mean, sum.max]);
      const f = await vis.feature(s);
      assert.deepEqual(
        loaded.exemplars.image[s].slice(0, f.exemplars.length),
        f.exemplars.map((e) => e.image),
      );
      assert.ok(loaded.exemplars.image[s].slice(f.exemplars.length).every((v: number) => v === -1));
      assert.deepEqual(
        loaded.exemplars.max[s].slice(0, f.exemplars.length),
        f.exemplars.map((e) => Math.fround(e.max)),
      );
    }
    assert.equal(loaded.examples_rows, 40);
    assert.equal(loaded.exemplars_csv_rows, loaded.exemplars.image.flat().filter((v: number) => v >= 0).length);
    if (loaded.scipy !== null) assert.deepEqual(loaded.scipy.nnz, ours.val.length);
    if (loaded.pandas !== null) assert.deepEqual(loaded.pandas.fire_tokens, loaded.features.fire_tokens);
  });
});
