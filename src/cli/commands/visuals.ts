import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { defineCommand, UsageError, UserError } from '../command.js';
import { computeVisuals } from '../../analysis/make-visuals.js';
import { readRunIfAny, type RunSpec, writeRun } from '../../analysis/run.js';
import type { SaeCheckpointConfig } from '../../sae/config.js';
import { readJson } from '../../util/fs.js';
import { readMetadata } from '../../shards/format.js';
import type { RecordingData } from '../../backbone/record.js';
import { gracefulInterrupt } from '../../util/interrupt.js';

export const visualsCommand = defineCommand({
  name: 'visuals',
  summary: "compute every feature's top exemplar images, statistics and highlighted thumbnails for the browser",
  usage: `
vitsae visuals --sae SAE [--shards SHARDS] [--images DATASET] (--out DIR | --run DIR)

One pass over the recording through the SAE: per latent the top-k images by its maximum over their patches (with
per-patch values), firing frequency, mean and max value and a log-scale histogram; per image its top latents.
Then thumbnails with the firing patches highlighted, and an index the browser loads lazily. --shards defaults to
the shards the SAE was trained on, --images to the dataset the recording names. Ctrl-C checkpoints and stops; the
same command resumes.

The run directory (--run, else --out) gets a run.json naming the shards, the SAE, the images and the visuals, which
vitsae serve --run DIR and vitsae site --run DIR read. With --run DIR and an existing run.json, its paths are the
defaults and the visuals go to the directory it names (DIR/visuals for a new run).

Example: vitsae visuals --sae runs/fmnist/sae --run runs/fmnist && vitsae serve --run runs/fmnist`,
  spec: {
    run: { kind: 'string', default: '', doc: 'run directory: read its run.json for defaults, write run.json there at the end' },
    sae: { kind: 'string', default: '', doc: 'the SAE (vitsae checkpoint directory, saev file or SAELens directory)' },
    shards: { kind: 'string', default: '', doc: 'activation shards (default: those the SAE was trained on)' },
    images: { kind: 'string', default: '', doc: 'the image dataset of the shards (default: the one the recording names)' },
    out: { kind: 'string', default: '', doc: 'directory for the visuals (default: RUN/visuals)' },
    layer: { kind: 'string', default: '', doc: 'recorded layer: a metadata.json layers value or a negative index (default: the one the SAE was trained on, else -1)' },
    k: { kind: 'number', int: true, min: 1, max: 1000, default: 20, doc: 'exemplar images per latent' },
    imageTop: { kind: 'number', int: true, min: 1, default: 16, doc: 'top latents stored per image' },
    batchTokens: { kind: 'number', int: true, min: 1, default: 4096, doc: 'tokens per encoder batch (rounded down to whole images)' },
    checkpointEvery: { kind: 'number', int: true, min: 1, default: 200, doc: 'batches between checkpoints of the pass' },
    thumbSize: { kind: 'number', int: true, min: 16, max: 1024, default: 128, doc: 'longer side of exemplar thumbnails in pixels (at most the model input size; the browser scales up)' },
    progress: { kind: 'boolean', default: true, doc: 'show progress bars on stderr' },
    json: { kind: 'boolean', default: false, doc: 'print the index metadata as JSON' },
  },
  async run(c) {
    const run = c.run ? await readRunIfAny(c.run) : null;
    const sae = c.sae || run?.sae;
    if (!sae) throw new UsageError('--sae DIR is required (or --run DIR with a run.json)');
    if (!existsSync(sae)) throw new UserError(`the SAE ${sae} does not exist`);
    if (c.layer && !/^-?\d+$/.test(c.layer)) throw new UserError(`--layer ${c.layer}: expected an integer`);
    const shards = c.shards || run?.shards || (await readJson<SaeCheckpointConfig>(path.join(sae, 'config.json'), '').catch(() => null))?.data?.shards;
    if (!shards) throw new UsageError(`--shards DIR is required: ${sae} does not name the shards it was trained on`);
    const out = c.out || run?.visuals || (c.run ? path.join(c.run, 'visuals') : '');
    if (!out) throw new UsageError('--out DIR or --run DIR is required');
    const md = await readMetadata(shards);
    const recorded = (md.data as Partial<RecordingData> | null)?.format === 'vitsae-record' ? (md.data as RecordingData) : null;
    const images = c.images || run?.images;
    const interrupt = gracefulInterrupt('batch');
    try {
      const meta = await computeVisuals({
        sae,
        shards,
        images: images || undefined,
        out,
        layer: c.layer ? Number(c.layer) : undefined,
        k: c.k,
        imageTop: c.imageTop,
        batchTokens: c.batchTokens,
        checkpointEvery: c.checkpointEvery,
        thumbSize: c.thumbSize,
        model: run?.model ?? recorded?.model,
        showProgress: c.progress,
        shouldStop: interrupt.requested,
      });
      if (!meta) {
        process.stderr.write(`stopped; run the same command to resume ${out}\n`);
        process.exitCode = 130;
        return;
      }
      const runDir = c.run || out;
      // A concept report stays valid as long as the SAE is the same one.
      const concepts = run?.concepts && run.sae === path.resolve(sae) ? { concepts: run.concepts } : {};
      // Task heads belong to the model, so they stay while it does.
      const heads = run?.heads && run.model === meta.source.model ? { heads: run.heads } : {};
      const spec: RunSpec = { shards, sae, visuals: out, ...(images ? { images } : {}), ...(meta.source.model ? { model: meta.source.model } : {}), ...concepts, ...heads };
      await writeRun(runDir, spec);
      if (c.json) process.stdout.write(JSON.stringify(meta) + '\n');
      else process.stderr.write(`visuals of ${meta.d_sae} latents over ${meta.n_images} images in ${out}\nNext: vitsae serve --run ${runDir}\n`);
    } finally {
      interrupt.dispose();
    }
  },
});
