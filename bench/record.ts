/**
 * Recording benchmark (issue 5): images/s of `vitsae record` against a bare onnxruntime `session.run` of the same
 * front model on pre-decoded tensors, and against PyTorch eager recording (bench/torch_record.py), on
 * torchvision's ViT-B/16 with random weights (bench/make_vit_b16.py), all in this run on the same JPEGs.
 *
 * The recorded layer is the last block, so vitsae's front is the whole network bar the classifier and PyTorch's
 * full forward does the same work; both records are compared to show that they computed the same activations.
 * Bare runs (with the recorder's session options) come before vitsae's, between it and PyTorch's, and after
 * PyTorch's, so that drift of a noisy machine during the run shows; the full benchmark alternates three rounds.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { createSession, openBackbone, selectLayers } from '../src/backbone/backbone.js';
import { frontModel } from '../src/backbone/graph.js';
import { FRONT_SESSION_OPTIONS } from '../src/backbone/front-worker.js';
import { ShardDataset } from '../src/shards/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const PYTHON = '/usr/bin/python3';
const BATCH = 16;
const LAYER = -1;
const CLASSES = 4;

/** The exported ViT-B/16, built once per version of make_vit_b16.py (the export takes about a minute). */
async function vitB16(): Promise<string> {
  const script = path.join(ROOT, 'bench', 'make_vit_b16.py');
  const hash = createHash('sha256').update(readFileSync(script)).digest('hex').slice(0, 12);
  const dir = path.join(os.tmpdir(), `vitsae-bench-vit_b16-${hash}`);
  const model = path.join(dir, 'vit_b16.onnx');
  if (existsSync(model)) return model;
  const tmp = await fsp.mkdtemp(dir + '.tmp');
  try {
    execFileSync(PYTHON, [script, path.join(tmp, 'vit_b16.onnx')], { stdio: ['ignore', 'ignore', 'pipe'] });
    await fsp.rename(tmp, dir);
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
  return model;
}

/**
 * `n` JPEGs of ImageNet-like sizes and weights (about 500x350, ~110 kB at quality 90) in class subfolders, so both
 * sides decode, resize and crop real files: colour gradients with noise, deterministic in their index. Their
 * sizes resize to whole, even widths at height 256, where torchvision and vitsae agree on the crop to the pixel
 * (elsewhere their rounding of the resized width and crop offset can differ by one), so the records can be compared.
 */
async function writeJpegs(dir: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const [w, h] = i % 2 ? [5 * (80 + ((i * 7) % 40)), 320] : [6 * (70 + ((i * 11) % 30)), 384];
    const px = new Uint8Array(w * h * 3);
    let s = i * 2654435761 + 1;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        s = (s * 1103515245 + 12345) >>> 0;
        const noise = (s >>> 26) - 32;
        const o = 3 * (y * w + x);
        px[o] = ((255 * x) / w + noise + 40 * i) & 255;
        px[o + 1] = (255 * y) / h + noise;
        px[o + 2] = (128 + 100 * Math.sin((x + y + 13 * i) / 40) + noise) & 255;
      }
    const sub = path.join(dir, `class${i % CLASSES}`);
    await fsp.mkdir(sub, { recursive: true });
    await sharp(px, { raw: { width: w, height: h, channels: 3 } })
      .jpeg({ quality: 90 })
      .toFile(path.join(sub, `${String(i).padStart(4, '0')}.jpg`));
  }
}

/** images/s of the front alone on one pre-filled batch, after a warm-up run. */
async function bare(front: ort.InferenceSession, input: string, runs: number): Promise<number> {
  const x = new ort.Tensor(
    'float32',
    Float32Array.from({ length: BATCH * 3 * 224 * 224 }, (_, i) => Math.sin(i)),
    [BATCH, 3, 224, 224],
  );
  await front.run({ [input]: x });
  const t0 = performance.now();
  for (let r = 0; r < runs; r++) await front.run({ [input]: x });
  return (runs * BATCH) / ((performance.now() - t0) / 1000);
}

/** `vitsae record` as a user runs it (the CLI in a child process): its own images/s (after start-up), its first batch, its wall time. */
function vitsaeRecord(model: string, data: string, out: string): { imagesPerS: number; firstBatchS: number; wallS: number } {
  const t0 = performance.now();
  const text = execFileSync(
    process.execPath,
    [path.join(ROOT, 'bin', 'vitsae.js'), 'record', '--model', model, '--layer', String(LAYER), '--data', data, '--out', out, '--batch', String(BATCH), '--no-progress', '--json'],
    { encoding: 'utf8' },
  );
  const summary = JSON.parse(text.trim().split('\n').pop()!);
  return { imagesPerS: summary.images_per_second, firstBatchS: summary.first_batch_seconds, wallS: (performance.now() - t0) / 1000 };
}

/** PyTorch on 2 threads, one DataLoader worker process decoding beside them (more would only oversubscribe 2 cores). */
function torchRecord(data: string, out: string): { imagesPerS: number; wallS: number } {
  const t0 = performance.now();
  const text = execFileSync(
    PYTHON,
    [path.join(ROOT, 'bench', 'torch_record.py'), '--data', data, '--out', out, '--layer', String(LAYER), '--batch', String(BATCH), '--threads', '2', '--workers', '1'],
    { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '2' } },
  );
  return { imagesPerS: JSON.parse(text.trim().split('\n').pop()!).images_per_s, wallS: (performance.now() - t0) / 1000 };
}

/** RMS of the difference between vitsae's and PyTorch's activations over the RMS of PyTorch's. */
async function relativeRms(shards: string, torchFile: string): Promise<number> {
  const ds = await ShardDataset.open(shards);
  const ours = await ds.readExamples(0, ds.nExamples);
  await ds.close();
  const buf = await fsp.readFile(torchFile);
  const theirs = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  if (theirs.length !== ours.length) throw new Error(`PyTorch recorded ${theirs.length} floats, vitsae ${ours.length}`);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < ours.length; i++) {
    diff += (ours[i] - theirs[i]) ** 2;
    norm += theirs[i] ** 2;
  }
  return Math.sqrt(diff / norm);
}

/** Images of the whole-process comparison (start-up weighs most here) and of the steady-rate one. */
const SHORT = 3 * BATCH;
const LONG = 10 * BATCH;

export async function benchRecord(opts: { quick: boolean }): Promise<string[]> {
  const bareRuns = opts.quick ? 2 : 3;
  const reps = opts.quick ? 1 : 2;
  const model = await vitB16();
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-bench-record-'));
  try {
    const sets = opts.quick ? [SHORT] : [SHORT, LONG];
    for (const n of sets) await writeJpegs(path.join(tmp, `images${n}`), n);
    const bb = await openBackbone(model);
    const front = await createSession(
      frontModel(
        bb.model,
        selectLayers(bb, [String(LAYER)]).map((l) => l.name),
        bb.index,
      ),
      bb,
      FRONT_SESSION_OPTIONS,
    );
    // bare, then per repetition and image set (vitsae, bare, PyTorch, bare): each recorder is compared with its neighbours.
    const bares = [await bare(front, bb.input.name, bareRuns)];
    type Round = { images: number; vitsae: ReturnType<typeof vitsaeRecord>; torch: ReturnType<typeof torchRecord>; bare: number };
    const rounds: Round[] = [];
    for (let r = 0; r < reps; r++)
      for (const n of sets) {
        const data = path.join(tmp, `images${n}`);
        const vitsae = vitsaeRecord(model, data, path.join(tmp, `shards${n}-${r}`));
        bares.push(await bare(front, bb.input.name, bareRuns));
        const torch = torchRecord(data, path.join(tmp, `torch${n}.f32`));
        bares.push(await bare(front, bb.input.name, bareRuns));
        rounds.push({ images: n, vitsae, torch, bare: (bares.at(-3)! + bares.at(-1)!) / 2 });
      }
    await front.release();
    const drift = (Math.max(...bares) - Math.min(...bares)) / Math.min(...bares);
    const rms = await relativeRms(path.join(tmp, `shards${SHORT}-0`), path.join(tmp, `torch${SHORT}.f32`));
    const steadyN = sets.at(-1)!;
    const of = (n: number) => rounds.filter((r) => r.images === n);
    const mean = (rs: Round[], f: (r: Round) => number) => rs.reduce((a, r) => a + f(r), 0) / rs.length;
    const each = (rs: Round[], f: (r: Round) => number) => (rs.length > 1 ? ` (${rs.map((r) => f(r).toFixed(2)).join(' / ')})` : '');
    const cell = (rs: Round[], f: (r: Round) => number, unit = '') => `${mean(rs, f).toFixed(2)}${unit}${each(rs, f)}`;
    const short = of(SHORT);
    const steady = of(steadyN);
    return [
      `Recording, torchvision ViT-B/16 (random weights, ONNX opset 17), last block (197 tokens x 768), batch ${BATCH}, JPEGs of ~500x350, ${os.cpus().length} cores, load average ${os.loadavg()[0].toFixed(1)} at the end, ${reps} round(s)`,
      '',
      '| measure | vitsae | reference | vitsae / reference | target |',
      '| --- | --- | --- | --- | --- |',
      `| first batch handed to onnxruntime, s from process start (${SHORT} images) | ${cell(short, (r) => r.vitsae.firstBatchS)} | - | - | <= 3 s |`,
      `| whole process, ${SHORT} images, s (PyTorch eager: python start to exit) | ${cell(short, (r) => r.vitsae.wallS)} | ${cell(short, (r) => r.torch.wallS)} | ${cell(short, (r) => r.torch.wallS / r.vitsae.wallS, 'x')} | >= 1.2x |`,
      `| steady images/s, ${steadyN} images, vs PyTorch eager (forward hook, ImageFolder + DataLoader) | ${cell(steady, (r) => r.vitsae.imagesPerS)} | ${cell(steady, (r) => r.torch.imagesPerS)} | ${cell(steady, (r) => r.vitsae.imagesPerS / r.torch.imagesPerS, 'x')} | >= 1.3x |`,
      `| steady images/s, ${steadyN} images, vs bare onnxruntime session.run on pre-decoded tensors | ${cell(steady, (r) => r.vitsae.imagesPerS)} | ${cell(steady, (r) => r.bare)} | ${cell(steady, (r) => r.vitsae.imagesPerS / r.bare, 'x')} | >= 0.9x |`,
      '',
      `Order: bare, then per round and image set vitsae, bare, PyTorch, bare (${bares.map((b) => b.toFixed(2)).join(', ')} images/s bare)${reps > 1 ? '; values are means over the rounds, each round in brackets' : ''}. The bare runs differ by up to ${(100 * drift).toFixed(0)}%: that much did the machine's load move, and the ratios are no more precise.`,
      "vitsae's images/s, as it reports it, starts at its first batch; PyTorch's at its DataLoader's first batch. Whole-process times include starting the interpreter, loading and (vitsae) splitting the model.",
      `vitsae's and PyTorch's activations differ by ${(100 * rms).toFixed(1)}% relative RMS (same weights and layer; libvips and PIL resample slightly differently).`,
    ];
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}
