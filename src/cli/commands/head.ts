import * as path from 'node:path';
import { defineCommand, UsageError } from '../command.js';
import { deviceSpec } from '../../backbone/device.js';
import { readRun, writeRun } from '../../analysis/run.js';
import { overridesOf, preprocessSpec } from '../../data/preprocess.js';
import { HEAD_FILE, headTrainSpec, saveHead, trainHead } from '../../edit/head.js';
import { TASKS } from '../../edit/kinds.js';

export const headTrainCommand = defineCommand({
  name: 'head train',
  summary: "train a linear task head (classification or segmentation) on a frozen model's final representation",
  usage: `
vitsae head train --task classify|segment --model M.onnx --data DATASET --out DIR [--features TENSOR]

classify: one row per image, the final CLS token (the mean of the patch tokens for models without one), labelled
by the image's class (class folders, a .csv with a label column, IDX with labels). segment: every final patch
token, labelled by the majority class of its pixels (a dataset folder with images/ and masks/). The features are
the last residual-stream tensor unless --features names another (a block index or a tensor, e.g. a final
LayerNorm's output). They are recorded into a temporary directory, or read from --shards (a vitsae record of
that tensor). The head is fit with AdamW on the training images and measured on the held-out ones (accuracy;
mIoU for segmentation); DIR gets head.safetensors (W [D, classes], b [classes]) and head.json. With --run RUN
the model defaults to the run's and the head is added to RUN/run.json, so vitsae serve offers edit demos on it.
Formerly vitsae probe train, which still runs.

Example: vitsae head train --task classify --model models/fashion-mnist-supervised.onnx \\
           --data /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz --out runs/fashion/head`,
  spec: {
    task: { kind: 'enum', choices: TASKS, default: 'classify', doc: 'classify images, or segment: a class per patch' },
    model: { kind: 'string', default: '', doc: 'the ONNX model' },
    run: { kind: 'string', default: '', doc: "a run directory: its model is the default, and the head is added to its run.json's heads" },
    data: { kind: 'string', default: '', doc: 'the labelled dataset' },
    shards: { kind: 'string', default: '', doc: 'a finished recording of the feature tensor to train on instead of recording --data' },
    out: { kind: 'string', required: true, default: '', doc: 'output directory for the head' },
    features: { kind: 'string', default: '', doc: 'feature tensor: block index or tensor name (default: the last residual-stream tensor)' },
    classes: { kind: 'strings', default: [], doc: "class names in label order (default: the dataset's, or the numbers)" },
    ...headTrainSpec,
    recordBatch: { kind: 'number', int: true, min: 1, default: 16, doc: 'images per onnxruntime run while recording the features' },
    ...preprocessSpec,
    ...deviceSpec,
    progress: { kind: 'boolean', default: true, doc: 'show progress bars on stderr' },
    json: { kind: 'boolean', default: false, doc: 'print head.json on stdout' },
  },
  async run(c) {
    const run = c.run ? await readRun(c.run) : null;
    const model = c.model || run?.model;
    if (!model) throw new UsageError(c.run ? `--model is required: ${c.run}/run.json names no model` : '--model is required');
    const head = await trainHead({
      task: c.task,
      model,
      data: c.data || undefined,
      shards: c.shards || undefined,
      features: c.features || undefined,
      classes: c.classes,
      train: { epochs: c.epochs, batch: c.batch, lr: c.lr, weightDecay: c.weightDecay, testFraction: c.testFraction, seed: c.seed },
      recordBatch: c.recordBatch,
      ...overridesOf(c),
      device: c.device,
      progress: c.progress,
    });
    await saveHead(c.out, head);
    if (run) {
      // Read again: run.json may have changed while the head trained.
      const now = await readRun(run.dir);
      const out = path.resolve(c.out);
      await writeRun(now.dir, { ...now, heads: [...(now.heads ?? []).filter((p) => p !== out), out] });
    }
    const m = head.info.metrics;
    process.stdout.write(
      c.json
        ? JSON.stringify(head.info) + '\n'
        : `${head.info.task} head on ${head.info.features} (${head.info.pooling}, ${head.info.classes.length} classes): held-out accuracy ${m.accuracy.toFixed(4)}${m.miou !== undefined ? `, mIoU ${m.miou.toFixed(4)}` : ''} on ${m.test_images} images (trained on ${m.train_images}); wrote ${c.out}/${HEAD_FILE}\n`,
    );
  },
});
