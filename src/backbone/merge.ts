/**
 * Joins shard directories recorded by `vitsae record --worker I --workers N` into one. Workers record whole shards,
 * so every full shard is hard-linked into place under its new number (no data copied); only examples in partial
 * shards (a worker's last, short when it skipped bad files) are rewritten, at the end. examples.jsonl and
 * labels.bin follow the merged order, so each example keeps its source file and label.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ERRORS_FILE, type RecordingData } from './record.js';
import { UserError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { EXAMPLES_FILE, examplesPerShard, LABELS_FILE, SHARDS_FILE, ShardDataset, type ShardEntry, shardFileName, type ShardMetadata, ShardWriter, writeShardMetadata } from '../shards/format.js';

export interface MergeResult {
  metadata: ShardMetadata;
  /** Shards hard-linked (or, across filesystems, copied) whole. */
  linked: number;
  /** Examples rewritten from partial shards. */
  rewritten: number;
}

interface Part {
  ds: ShardDataset;
  examples: string[] | null;
  errors: string;
  labels: Uint8Array | null;
  slice: RecordingData['slice'] | null;
}

const sliceOf = (md: ShardMetadata) => ((md.data as Partial<RecordingData>)?.format === 'vitsae-record' ? (md.data as RecordingData).slice : null);

/** The metadata with what differs between workers (n_examples and the slice) taken out, for comparison. */
function shared(md: ShardMetadata): string {
  const slice = sliceOf(md);
  return JSON.stringify({ ...md, n_examples: 0, data: slice ? { ...(md.data as RecordingData), slice: null } : md.data });
}

async function readPart(dir: string): Promise<Part> {
  const ds = await ShardDataset.open(dir);
  const text = async (f: string) => fs.readFile(path.join(dir, f), 'utf8').catch(() => null);
  const manifest = await text(EXAMPLES_FILE);
  const examples = manifest === null ? null : manifest.split('\n').filter(Boolean);
  if (examples && examples.length !== ds.nExamples) throw new UserError(`${dir}: ${EXAMPLES_FILE} lists ${examples.length} examples, the shards hold ${ds.nExamples}`);
  return { ds, examples, errors: (await text(ERRORS_FILE)) ?? '', labels: await ds.readLabels(), slice: sliceOf(ds.metadata) };
}

export async function mergeShards(inputs: string[], out: string): Promise<MergeResult> {
  if (!inputs.length) throw new UserError('give the shard directories to merge');
  const parts: Part[] = [];
  try {
    for (const dir of inputs) parts.push(await readPart(dir));
    return await mergeParts(parts, out);
  } finally {
    for (const p of parts) await p.ds.close();
  }
}

async function mergeParts(parts: Part[], out: string): Promise<MergeResult> {
  const first = parts[0];
  for (const p of parts) {
    if (shared(p.ds.metadata) !== shared(first.ds.metadata)) throw new UserError(`${p.ds.dir} was recorded with other settings than ${first.ds.dir}; only parts of one recording can be merged`);
    if (!p.examples !== !first.examples || !p.labels !== !first.labels) throw new UserError(`${p.ds.dir} and ${first.ds.dir} differ in having ${EXAMPLES_FILE} or ${LABELS_FILE}`);
  }
  if (first.slice) {
    parts.sort((a, b) => a.slice!.start - b.slice!.start);
    const workers = first.slice.workers;
    parts.forEach((p, i) => {
      const want = i === 0 ? 0 : parts[i - 1].slice!.end;
      if (p.slice!.workers !== workers || p.slice!.start !== want)
        throw new UserError(`the parts do not cover the dataset without gaps or overlaps: ${p.ds.dir} starts at ${p.slice!.start}, expected ${want} (all ${workers} workers' outputs are needed)`);
    });
    if (parts.length !== workers) throw new UserError(`got ${parts.length} parts of a recording split across ${workers} workers`);
  }
  await fs.mkdir(out, { recursive: true });
  if ((await fs.readdir(out)).length) throw new UserError(`${out} is not empty; merge into a new directory`);

  const md = first.ds.metadata;
  const eps = examplesPerShard(md);
  const P = md.content_tokens_per_example;
  const shards: ShardEntry[] = [];
  const manifest: string[] = [];
  const labels: Uint8Array[] = [];
  const partial: { part: Part; start: number; n: number }[] = [];
  for (const part of parts) {
    for (const [s, entry] of part.ds.shards.entries()) {
      const range = [s * eps, s * eps + entry.n_examples];
      if (entry.n_examples < eps) {
        partial.push({ part, start: range[0], n: entry.n_examples });
        continue;
      }
      const name = shardFileName(shards.length);
      await linkOrCopy(path.join(part.ds.dir, entry.name), path.join(out, name));
      shards.push({ name, n_examples: eps });
      manifest.push(...(part.examples?.slice(range[0], range[1]) ?? []));
      if (part.labels) labels.push(part.labels.subarray(range[0] * P, range[1] * P));
    }
  }
  const linked = shards.length;
  const rewritten = partial.reduce((a, p) => a + p.n, 0);
  if (rewritten) {
    // The partial shards' examples, packed by a ShardWriter in a scratch directory and renamed into place.
    const scratch = path.join(out, '.partial');
    const writer = await ShardWriter.create(scratch, md);
    for (const { part, start, n } of partial) {
      if (part.labels) await writer.appendLabels(part.labels.subarray(start * P, (start + n) * P));
      await writer.append(await part.ds.readExamples(start, n));
      manifest.push(...(part.examples?.slice(start, start + n) ?? []));
    }
    await writer.close();
    const tail = await ShardDataset.open(scratch);
    for (const entry of tail.shards) {
      const name = shardFileName(shards.length);
      await fs.rename(path.join(scratch, entry.name), path.join(out, name));
      shards.push({ name, n_examples: entry.n_examples });
    }
    const tailLabels = await tail.readLabels();
    if (tailLabels) labels.push(tailLabels);
    await tail.close();
    await fs.rm(scratch, { recursive: true });
  }

  const n = parts.reduce((a, p) => a + p.ds.nExamples, 0);
  const data = first.slice ? { ...(md.data as RecordingData), slice: { start: 0, end: parts[parts.length - 1].slice!.end, worker: 0, workers: 1 } } : md.data;
  const metadata: ShardMetadata = { ...md, n_examples: n, data };
  if (first.labels) await writeFileAtomic(path.join(out, LABELS_FILE), labels);
  if (first.examples) await writeFileAtomic(path.join(out, EXAMPLES_FILE), manifest.map((l) => l + '\n').join(''));
  await writeFileAtomic(path.join(out, ERRORS_FILE), parts.map((p) => p.errors).join(''));
  await writeFileAtomic(path.join(out, SHARDS_FILE), JSON.stringify(shards, null, 2) + '\n');
  // metadata.json last: until it exists the directory does not look complete.
  await writeShardMetadata(out, metadata);
  await (await ShardDataset.open(out)).close();
  return { metadata, linked, rewritten };
}

async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await fs.link(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    await fs.copyFile(from, to);
  }
}
