import { defineCommand, UserError } from '../command.js';
import { record, recordSpec } from '../../backbone/record.js';
import { overridesOf } from '../../data/preprocess.js';
import { mergeShards } from '../../backbone/merge.js';

export const recordCommand = defineCommand({
  name: 'record',
  summary: "record patch activations of a model's layers over an image dataset into shards",
  usage: `
vitsae record --model MODEL.onnx --layer L [--layer L2] --data DATASET --out DIR [--batch N]
              [--on-error stop|skip] [--worker I --workers N] [--input-size N|HxW] [--mean a,b,c] [--std a,b,c]

L is a block index (negative counts from the end) or a tensor name (see vitsae layers). DATASET is a folder of
class subfolders, a flat folder, a .txt/.csv list, an IDX images file (MNIST, Fashion-MNIST) or a folder with
images/ and masks/ (segmentation: each patch gets the majority class of its pixels in labels.bin).
Preprocessing comes from MODEL.json (a model card: {"preset": "clip"|"dinov2"|"siglip"|"imagenet", ...}); the
flags override it. An interrupted run resumes when started again with the same options. With --workers N, run
workers 0..N-1 (one per machine) into separate directories and join them with vitsae shards merge.

Example: vitsae record --model dinov2-small.onnx --layer -2 --data imagenet/val --out runs/shards/val`,
  spec: {
    ...recordSpec,
    json: { kind: 'boolean', default: false, doc: 'print a JSON summary' },
  },
  async run(config) {
    if (config.worker >= config.workers) throw new UserError(`--worker ${config.worker} must be below --workers ${config.workers}`);
    const result = await record({
      model: config.model,
      layers: config.layer,
      data: config.data,
      out: config.out,
      batch: config.batch,
      onError: config.onError,
      worker: config.worker,
      workers: config.workers,
      ...overridesOf(config),
      maxTokensPerShard: config.maxTokensPerShard,
      device: config.device,
      progress: config.progress,
    });
    const md = result.metadata;
    const summary = {
      out: config.out,
      n_examples: md.n_examples,
      recorded: result.recorded,
      skipped: result.skipped,
      resumed: result.resumed,
      images_per_second: result.imagesPerSecond,
      first_batch_seconds: result.firstBatchSeconds,
    };
    process.stdout.write(
      config.json
        ? JSON.stringify(summary) + '\n'
        : `recorded ${result.recorded} images (${md.n_examples} in ${config.out}, layers [${md.layers.join(', ')}], ${md.content_tokens_per_example} patches${md.cls_token ? ' + CLS' : ''} × d=${md.d_model}) at ${result.imagesPerSecond.toFixed(1)} images/s${result.skipped ? `; ${result.skipped} files skipped, see ${config.out}/errors.jsonl` : ''}\n`,
    );
  },
});

export const shardsMergeCommand = defineCommand({
  name: 'shards merge',
  positionals: true,
  summary: 'join the shard directories of a recording split across workers',
  usage: `
vitsae shards merge --out DIR PART_DIR...

Joins the outputs of vitsae record --worker I --workers N (all N of them, in any order) into DIR. Full shards are
hard-linked, not copied (the parts stay valid; delete them afterwards to free nothing but names); only the few
examples of partial shards are rewritten. examples.jsonl, labels.bin and errors.jsonl are joined in the same order.

Example: vitsae shards merge --out runs/shards/val runs/shards/val-part-*`,
  spec: {
    out: { kind: 'string', required: true, default: '', doc: 'the merged directory (new or empty)' },
    json: { kind: 'boolean', default: false, doc: 'print a JSON summary' },
  },
  async run(config, positionals) {
    const r = await mergeShards(positionals, config.out);
    const summary = { out: config.out, n_examples: r.metadata.n_examples, linked_shards: r.linked, rewritten_examples: r.rewritten };
    process.stdout.write(
      config.json
        ? JSON.stringify(summary) + '\n'
        : `merged ${positionals.length} parts into ${config.out}: ${r.metadata.n_examples} examples, ${r.linked} shards linked, ${r.rewritten} examples rewritten\n`,
    );
  },
});
