/**
 * The edit demos of one run: its task heads (run.json's `heads`), one EditEngine per head (opened on first use
 * and kept), and the answers to edit requests. Requests are checked against the run here, so that a client gets a
 * 400 or 404 naming its mistake rather than an engine error worded for CLI flags.
 */
import * as path from 'node:path';
import type { ImageInput } from '../data/preprocess.js';
import type { Device } from '../backbone/device.js';
import { EditEngine, type Predictions, topClasses } from '../edit/engine.js';
import { loadHead, type Head } from '../edit/head.js';
import { UserError } from '../util/errors.js';
import type { LatentRef } from './api.js';
import { NotFound, type RunData } from './run-data.js';
import type { EditAnswer, EditPrediction, EditRequest, HeadSummary } from './edit-api.js';

/** A request that the run cannot answer as asked (HTTP 400). */
export class BadRequest extends Error {
  readonly statusCode = 400;
}

/** Classes listed per image by classification answers. */
const TOP_CLASSES = 5;

export class RunEdits {
  private headList: Promise<{ summary: HeadSummary; head: Head }[]> | null = null;
  private readonly engines = new Map<number, Promise<EditEngine>>();
  /** Per engine, the last image preparation: an SAE core takes one call at a time. */
  private readonly preparing = new Map<number, Promise<unknown>>();

  constructor(
    readonly data: RunData,
    private readonly device?: Device,
  ) {}

  /** The run's heads; none without a model, which the engine splits. */
  private loadHeads(): Promise<{ summary: HeadSummary; head: Head }[]> {
    const { model, heads = [] } = this.data.run;
    if (!model) return Promise.resolve([]);
    if (!this.headList) {
      this.headList = Promise.all(
        heads.map(async (dir, id) => {
          const head = await loadHead(dir);
          const { task, classes, features, metrics } = head.info;
          const summary: HeadSummary = { id, name: path.basename(dir), task, classes, features, accuracy: metrics.accuracy, ...(metrics.miou !== undefined ? { miou: metrics.miou } : {}) };
          return { summary, head };
        }),
      );
      this.headList.catch(() => (this.headList = null));
    }
    return this.headList;
  }

  async heads(): Promise<HeadSummary[]> {
    return (await this.loadHeads()).map((p) => p.summary);
  }

  private async head(id: number): Promise<{ summary: HeadSummary; head: Head }> {
    const list = await this.loadHeads();
    if (!list[id])
      throw new NotFound(
        list.length ? `head ${id} does not exist: run ${this.data.id} has ${list.length} (0..${list.length - 1})` : `run ${this.data.id} has no heads (run.json's "heads", and a model)`,
      );
    return list[id];
  }

  private engine(id: number): Promise<EditEngine> {
    let e = this.engines.get(id);
    if (!e) {
      e = (async () => {
        const { head } = await this.head(id);
        const engine = await EditEngine.open({ model: this.data.run.model!, sae: this.data.run.sae, head, device: this.device });
        const { index } = this.data;
        if (engine.layout.patchTokens !== index.meta.patches) {
          await engine.close();
          throw new UserError(`the model splits images into ${engine.layout.patchTokens} patches for head ${id}, but the run's visuals have ${index.meta.patches}`);
        }
        // Relative edits are multiples of each latent's largest value over the run's images.
        engine.setMaxima(Float32Array.from({ length: index.nLatents }, (_, s) => index.summary(s).max));
        return engine;
      })();
      e.catch(() => this.engines.delete(id));
      this.engines.set(id, e);
    }
    return e;
  }

  /** Throws BadRequest unless every latent and patch of the request exists in this run. */
  private check(req: EditRequest): void {
    const S = this.data.index.nLatents;
    const P = this.data.index.meta.patches;
    const checkPatches = (patches: number[] | 'all' | undefined, what: string) => {
      if (patches === undefined || patches === 'all') return;
      const bad = patches.find((p) => p >= P);
      if (bad !== undefined) throw new BadRequest(`${what}: patch ${bad} does not exist; images have ${P} patches (0..${P - 1})`);
    };
    req.edits.forEach((e, i) => {
      if (e.latent >= S) throw new BadRequest(`edit ${i}: latent ${e.latent} does not exist; the SAE has ${S} (0..${S - 1})`);
      checkPatches(e.patches, `edit ${i}`);
    });
    checkPatches(req.patches, 'patches');
  }

  /** The head's answers before and after `req.edits` on `image` (an upload's bytes, or the run's image req.image). */
  async edit(req: EditRequest, upload?: Buffer): Promise<EditAnswer> {
    this.check(req);
    const { summary } = await this.head(req.head);
    const input: ImageInput = upload ?? (await this.data.source(req.image as number));
    const engine = await this.engine(req.head);
    const prepare = (this.preparing.get(req.head) ?? Promise.resolve()).then(() => engine.prepare([input]));
    this.preparing.set(
      req.head,
      prepare.catch(() => undefined),
    );
    const prepared = await prepare;
    const { before, after } = await engine.edit(prepared, req.edits);
    const P = this.data.index.meta.patches;
    const listed = req.patches === 'all' ? Array.from({ length: P }, (_, p) => p) : (req.patches ?? []);
    const patches: Record<number, [number, number][]> = {};
    for (const p of listed) patches[p] = engine.patchLatents(prepared, 0, p).map(({ latent, value }): [number, number] => [latent, value]);
    const latents: Record<number, LatentRef & { max: number }> = {};
    const describe = (j: number) => (latents[j] ??= { ...this.data.ref(j), max: this.data.index.summary(j).max });
    for (const row of Object.values(patches)) for (const [j] of row) describe(j);
    for (const e of req.edits) describe(e.latent);
    return { ...prediction(summary.task, before, after, summary.classes), head: req.head, classes: summary.classes, grid: this.data.index.meta.grid, patches, latents };
  }

  async close(): Promise<void> {
    for (const e of this.engines.values()) await (await e.catch(() => null))?.close();
    this.engines.clear();
  }
}

/** The answer's prediction part for the single image of a batch. */
function prediction(task: HeadSummary['task'], before: Predictions, after: Predictions, classes: string[]): EditPrediction {
  if (task === 'classify') return { task, before: topClasses(before, 0, classes, TOP_CLASSES), after: topClasses(after, 0, classes, TOP_CLASSES), changed: before.labels[0] !== after.labels[0] };
  const b = Array.from(before.labels);
  const a = Array.from(after.labels);
  return { task, before: b, after: a, changed: b.flatMap((l, p) => (l !== a[p] ? [p] : [])) };
}
