import { promises as fsp } from 'node:fs';
import { defineCommand, UserError } from '../command.js';
import { exportRun } from '../../analysis/export.js';

export const exportCommand = defineCommand({
  name: 'export',
  summary: "write a run's latents, feature statistics and exemplars for numpy, scipy and pandas (npz, CSV)",
  usage: `
vitsae export --run RUN --out DIR [--max-images N]

Encodes the run's recorded patch tokens with its SAE and writes, into DIR:
  latents.npz     sparse latents, CSR float32 [images * patches, d_sae] (scipy.sparse.load_npz);
                  row e * patches + p is patch p of image e
  features.csv    per latent: fire_tokens, fire_images, frequency, image_frequency, mean, max (pandas.read_csv)
  features.npz    the same columns as numpy arrays (numpy.load)
  exemplars.npz   image int64 [d_sae, k] (-1 = none) and max float32 [d_sae, k]: each latent's top images
  exemplars.csv   one row per exemplar: latent, rank, image, max, key, label
  examples.csv    one row per image: image, key (its file), label
  export.json     what was exported (run, SAE, shards, layer, shapes)
Statistics and exemplars are the run's visuals (vitsae visuals --run RUN first). The latents are held in memory
until written: about 8 bytes per non-zero value (k per token for TopK SAEs).

Example: vitsae export --run runs/fmnist --out runs/fmnist/export`,
  spec: {
    run: { kind: 'string', default: '', doc: 'run directory with run.json and finished visuals (required)' },
    out: { kind: 'string', default: '', doc: 'output directory (required; must be empty or new)' },
    maxImages: { kind: 'number', int: true, min: 0, default: 0, doc: 'latents of the first N images only (0: all)' },
    batchTokens: { kind: 'number', int: true, min: 1, default: 4096, doc: 'tokens per encoder batch (rounded down to whole images)' },
    progress: { kind: 'boolean', default: true, doc: 'show a progress bar on stderr' },
  },
  async run(c) {
    if (!c.run) throw new UserError('--run DIR is required (a run directory written by vitsae visuals --run)');
    if (!c.out) throw new UserError('--out DIR is required');
    const entries = await fsp.readdir(c.out).catch(() => []);
    if (entries.length) throw new UserError(`${c.out} is not empty; choose another --out`);
    const m = await exportRun({ run: c.run, out: c.out, maxImages: c.maxImages, batchTokens: c.batchTokens, showProgress: c.progress });
    process.stderr.write(`exported ${m.n_images} images x ${m.patches} patches (${m.nnz} non-zero latents of ${m.d_sae}) to ${c.out}\n`);
  },
});
