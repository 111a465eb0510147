import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { defineCommand, UsageError, UserError } from '../command.js';
import { deviceSpec } from '../../backbone/device.js';
import type { ConfigOf, ConfigSpec } from '../../util/config.js';
import { exists } from '../../util/fs.js';
import { readRun, type Run } from '../../analysis/run.js';
import { INDEX_FILE, VisualsIndex } from '../../analysis/visuals-index.js';
import { overridesOf, preprocessSpec } from '../../data/preprocess.js';
import { type Edit, EditEngine, latentMaxima, type Predictions, type RankedClass, topClasses } from '../../edit/engine.js';
import { EDIT_MODES, isEditMode } from '../../edit/kinds.js';

/** Options shared by the commands that run the edit engine. */
export const engineSpec = {
  run: { kind: 'string', default: '', doc: 'a run directory (run.json): the default model and SAE (and, for edit, latent maxima from its visuals)' },
  model: { kind: 'string', default: '', doc: 'the ONNX model' },
  layer: { kind: 'string', default: '', doc: "the SAE's layer: block index or tensor name (default: the layer the SAE was trained on)" },
  sae: { kind: 'string', default: '', doc: 'the SAE: a vitsae checkpoint directory, a saev checkpoint file, or a SAELens directory' },
  head: { kind: 'string', required: true, aliases: ['probe'], default: '', doc: 'the task head: a directory written by vitsae head train' },
  ...preprocessSpec,
  ...deviceSpec,
} as const satisfies ConfigSpec;

type EngineConfig = ConfigOf<typeof engineSpec>;

/** Opens the engine the flags describe; --run fills in the model and SAE. */
export async function openEngine(c: EngineConfig): Promise<{ engine: EditEngine; run: Run | null }> {
  const run = c.run ? await readRun(c.run) : null;
  const model = c.model || run?.model;
  const sae = c.sae || run?.sae;
  if (!model) throw new UsageError('--model is required (or a --run whose run.json names the model)');
  if (!sae) throw new UsageError('--sae is required (or --run)');
  const engine = await EditEngine.open({
    model,
    sae,
    head: c.head,
    layer: c.layer || undefined,
    ...overridesOf(c),
    device: c.device,
  });
  return { engine, run };
}

/**
 * `latent:patches:value[:mode]`: patches is `all` or indices and ranges joined by `+` (`3+4+10-12`); a value
 * ending in `x` is relative to the latent's maximum (`-2x`); mode is set (default), add or scale.
 */
export function parseEdit(text: string): Edit {
  const bad = (why: string) => new UserError(`--edit ${JSON.stringify(text)}: ${why}; expected latent:patches:value[:mode], e.g. 12:all:-2x:set or 7:3+4+10-12:5:add`);
  const parts = text.split(':');
  if (parts.length < 3 || parts.length > 4) throw bad('wrong number of fields');
  const [latentText, patchText, valueText, mode = 'set'] = parts;
  if (!/^\d+$/.test(latentText)) throw bad('the latent must be a non-negative integer');
  if (!isEditMode(mode)) throw bad(`mode ${mode} is not ${EDIT_MODES.join(', ')}`);
  const relative = /x$/i.test(valueText);
  const value = Number(relative ? valueText.slice(0, -1) : valueText);
  if (valueText.trim() === '' || !Number.isFinite(value)) throw bad(`${valueText} is not a number`);
  let patches: number[] | 'all' = 'all';
  if (patchText !== 'all') {
    patches = patchText.split('+').flatMap((item) => {
      const m = /^(\d+)(?:-(\d+))?$/.exec(item);
      if (!m) throw bad(`${item} is not a patch index or range`);
      const [a, b] = [Number(m[1]), Number(m[2] ?? m[1])];
      if (b < a) throw bad(`range ${item} is empty`);
      return Array.from({ length: b - a + 1 }, (_, i) => a + i);
    });
  }
  return { latent: Number(latentText), patches, value, mode, relative };
}

/** Latent maxima for relative edits: the run's visuals if there are any, else a pass over the SAE's shards. */
async function maximaFor(engine: EditEngine, run: Run | null, shards: string, maxTokens: number): Promise<Float32Array> {
  if (run && (await exists(path.join(run.visuals, INDEX_FILE)))) {
    const vis = await VisualsIndex.open(run.visuals);
    return Float32Array.from({ length: engine.sae.dSae }, (_, s) => vis.summary(s).max);
  }
  const dir = shards || run?.shards || engine.sae.config.data?.shards;
  if (!dir) throw new UserError("relative edits (values like -2x) need the latents' maxima: give --shards DIR (activations the SAE reads) or --run");
  return latentMaxima(engine.sae, dir, engine.sae.config.data?.layer ?? -1, maxTokens);
}

type Ranked = RankedClass[];
/** One edited image in the output: the top classes (classify), or the patch labels and the changed patches. */
type ImageResult = { file: string; before: Ranked; after: Ranked; changed: boolean } | { file: string; before: number[]; after: number[]; changed_patches: number[] };

export const editCommand = defineCommand({
  name: 'edit',
  summary: "edit SAE latents on chosen patches of an image and see the frozen task head's answer before and after",
  usage: `
vitsae edit --model M.onnx --sae DIR --head DIR --image FILE --edit LATENT:PATCHES:VALUE[:MODE] ... [--json]

Each edit sets (default), adds to or scales an SAE latent on some patches of the SAE's layer: the patch token x
becomes x - x_hat + decode(f'), keeping the SAE's reconstruction error; the rest of the model and the head run
on the result. PATCHES is all or indices (row-major over the patch grid) and ranges joined by +. A VALUE ending
in x is relative to the latent's maximum activation (from --run's visuals, or a pass over --shards, default the
SAE's training shards). Several --image flags edit a batch; several --edit flags apply in order.

Example: vitsae edit --model models/concept-world-supervised.onnx --sae runs/world/sae --head runs/world/head \\
           --image data/world/images/000017.png --edit 301:all:-2x --edit 88:27+28+35+36:3x`,
  spec: {
    ...engineSpec,
    image: { kind: 'strings', required: true, default: [], doc: 'image file to edit (repeatable)' },
    edit: { kind: 'strings', default: [], doc: 'latent:patches:value[:mode] (repeatable; applied in order)' },
    shards: { kind: 'string', default: '', doc: 'activations the SAE reads, for the maxima of relative edits (default: its training shards)' },
    maxTokens: { kind: 'number', int: true, min: 1, default: 1_000_000, doc: 'patch tokens scanned for the maxima' },
    top: { kind: 'number', int: true, min: 1, default: 5, doc: 'classes listed per image (classification)' },
    json: { kind: 'boolean', default: false, doc: 'print the result as JSON' },
  },
  async run(c) {
    const edits = c.edit.map(parseEdit);
    const { engine, run } = await openEngine(c);
    try {
      if (edits.some((e) => e.relative)) engine.setMaxima(await maximaFor(engine, run, c.shards, c.maxTokens));
      const images = await Promise.all(c.image.map((f) => fsp.readFile(f).catch((e: Error) => Promise.reject(new UserError(`cannot read ${f}: ${e.message}`)))));
      const prepared = await engine.prepare(images);
      const { before, after } = await engine.edit(prepared, edits);
      const R = engine.rows;
      const results = c.image.map((file, n): ImageResult => {
        if (engine.task === 'classify')
          return { file, before: topClasses(before, n, engine.classes, c.top), after: topClasses(after, n, engine.classes, c.top), changed: before.labels[n] !== after.labels[n] };
        const labels = (p: Predictions) => Array.from(p.labels.subarray(n * R, (n + 1) * R));
        const changed = labels(before).flatMap((l, p) => (l !== after.labels[n * R + p] ? [p] : []));
        return { file, before: labels(before), after: labels(after), changed_patches: changed };
      });
      const out = { task: engine.task, layer: engine.layer.name, features: engine.head.info.features, grid: engine.layout.grid, classes: engine.classes, edits, images: results };
      if (c.json) {
        process.stdout.write(JSON.stringify(out) + '\n');
        return;
      }
      const lines: string[] = [];
      const show = (t: Ranked) => t.map((x) => `${x.name} ${x.prob.toFixed(3)}`).join(', ');
      const [gh, gw] = engine.layout.grid ?? [1, R];
      const grid = (labels: number[]) =>
        Array.from(
          { length: gh },
          (_, y) =>
            '    ' +
            labels
              .slice(y * gw, (y + 1) * gw)
              .map((l) => String(l).padStart(3))
              .join(''),
        ).join('\n');
      for (const r of results) {
        lines.push(`${r.file}:`);
        if ('changed' in r) lines.push(`  before: ${show(r.before)}`, `  after:  ${show(r.after)}${r.changed ? '   (prediction changed)' : ''}`);
        else
          lines.push(
            `  before:\n${grid(r.before)}`,
            `  after:\n${grid(r.after)}`,
            `  ${r.changed_patches.length} patches changed${r.changed_patches.length ? ': ' + r.changed_patches.join(' ') : ''}`,
          );
      }
      process.stdout.write(lines.join('\n') + '\n');
    } finally {
      await engine.close();
    }
  },
});
