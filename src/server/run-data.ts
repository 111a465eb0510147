/**
 * One run as the feature browser sees it: the exemplar index, the annotations, and (opened on first use) the
 * images, shards and SAE that the image pages need. Both the server and `vitsae site` answer from here, so a
 * static site holds exactly what the server would send; only the URLs differ (`Urls`).
 */
import * as path from 'node:path';
import sharp from 'sharp';
import { type ConceptReport, readConceptReport } from '../analysis/concepts.js';
import { ExampleImages, modelViewOf, resizeRgb, type RgbImage } from '../analysis/images.js';
import { readRun, type Run } from '../analysis/run.js';
import { VisualsIndex } from '../analysis/visuals-index.js';
import type { Sae } from '../sae/model.js';
import { openSae } from '../interop/index.js';
import { ShardDataset } from '../shards/format.js';
import type { ImageInput } from '../data/preprocess.js';
import { UserError } from '../util/errors.js';
import type { Comparison, FeatureList, FeaturePage, FeatureQuery, FeatureRow, ImagePage, LatentRef, RunInfo } from './api.js';
import { Annotations } from './annotations.js';
import { FeatureTable } from './query.js';

/** Where the browser finds a run's files. */
export interface Urls {
  /** Base URL of the visuals directory's files (thumbs/...). */
  files(run: string): string;
  /** The image page's picture of example `image`. */
  view(run: string, image: number): string;
}

/** A request for something that does not exist (HTTP 404). */
export class NotFound extends Error {}

/** Image-page pictures are at least this many pixels on their longer side. */
const VIEW_MIN = 256;

/** A model's view enlarged to at least VIEW_MIN pixels, as PNG. */
async function viewPng(img: RgbImage): Promise<Buffer> {
  const big = Math.max(img.width, img.height) < VIEW_MIN ? await resizeRgb(img, VIEW_MIN) : img;
  return sharp(big.data, { raw: { width: big.width, height: big.height, channels: 3 } })
    .png()
    .toBuffer();
}

/** A small least-recently-used cache of promises (failed ones are dropped). */
class Lru<K, V> {
  private readonly map = new Map<K, Promise<V>>();
  constructor(private readonly size: number) {}
  get(key: K, make: () => Promise<V>): Promise<V> {
    let v = this.map.get(key);
    if (v) this.map.delete(key);
    else {
      v = make();
      v.catch(() => this.map.delete(key));
    }
    this.map.set(key, v);
    if (this.map.size > this.size) this.map.delete(this.map.keys().next().value!);
    return v;
  }
}

export class RunData {
  private readonly rows: FeatureRow[];
  private readonly table: FeatureTable;
  private images: Promise<ExampleImages> | null = null;
  private encoder: Promise<{ sae: Sae; ds: ShardDataset }> | null = null;
  private encoding: Promise<unknown> = Promise.resolve();
  private readonly views = new Lru<number, Buffer>(64);
  private readonly imagePages = new Lru<number, ImagePage>(32);

  private constructor(
    readonly id: string,
    readonly run: Run,
    readonly index: VisualsIndex,
    readonly annotations: Annotations,
    private readonly urls: Urls,
    readonly editable: boolean,
    /** The SAE's check against ground-truth concepts, when run.json names one. */
    readonly concepts: ConceptReport | null,
  ) {
    this.rows = Array.from({ length: index.nLatents }, (_, j) => {
      const best = concepts?.latents[j][0];
      return { ...index.summary(j), name: annotations.get(j)?.name ?? '', n_exemplars: index.exemplarCount(j), concept: best?.concept ?? '', concept_f1: best?.f1 ?? 0 };
    });
    this.table = new FeatureTable(this.rows, (j) => annotations.get(j)?.notes ?? '');
  }

  static async open(dir: string, id: string, urls: Urls, opts: { readonly?: boolean } = {}): Promise<RunData> {
    const run = await readRun(dir);
    const index = await VisualsIndex.open(run.visuals);
    const concepts = run.concepts ? await readConceptReport(run.concepts) : null;
    if (concepts && concepts.latents.length !== index.nLatents) {
      throw new UserError(`${run.concepts} matches ${concepts.latents.length} latents but the run's SAE has ${index.nLatents}: it is another SAE's report; rerun vitsae eval concepts --run ${dir}`);
    }
    return new RunData(id, run, index, Annotations.open(run.dir, index.nLatents, opts), urls, !opts.readonly, concepts);
  }

  info(): RunInfo {
    const m = this.index.meta;
    return {
      id: this.id,
      name: path.basename(this.run.dir),
      files: this.urls.files(this.id),
      d_sae: m.d_sae,
      n_images: m.n_images,
      patches: m.patches,
      grid: m.grid,
      image_size: m.image_size,
      thumb_size: m.thumb_size,
      k: m.k,
      model: m.source.model ? path.basename(m.source.model) : null,
      layer: m.source.layer,
      dataset: path.basename(m.source.images),
      sae: path.basename(m.source.sae),
      editable: this.editable,
      concepts: this.concepts?.concepts.map((c) => c.concept) ?? [],
    };
  }

  private checkLatent(latent: number): void {
    if (latent >= this.index.nLatents) throw new NotFound(`latent ${latent} does not exist: run ${this.id} has ${this.index.nLatents} latents (0..${this.index.nLatents - 1})`);
  }

  private checkImage(image: number): void {
    if (image >= this.index.meta.n_images) throw new NotFound(`image ${image} does not exist: run ${this.id} has ${this.index.meta.n_images} images (0..${this.index.meta.n_images - 1})`);
  }

  /** Every feature's row, for a static site's client-side list. */
  allRows(): readonly FeatureRow[] {
    return this.rows;
  }

  list(q: FeatureQuery): FeatureList {
    return this.table.query(q);
  }

  ref(latent: number): LatentRef {
    const { name, frequency, n_exemplars } = this.rows[latent];
    return { latent, name, frequency, n_exemplars };
  }

  async feature(latent: number): Promise<FeaturePage> {
    this.checkLatent(latent);
    const f = await this.index.feature(latent);
    const P = this.index.meta.patches;
    return {
      run: this.id,
      ...this.rows[latent],
      notes: this.annotations.get(latent)?.notes ?? '',
      histogram: this.index.histogram(latent),
      exemplars: f.exemplars.map((e) => {
        const q = Buffer.from(e.patches, 'base64');
        return {
          image: e.image,
          key: e.key,
          label: e.label,
          max: e.max,
          values: Array.from({ length: P }, (_, p) => (q[p] / 255) * e.max),
        };
      }),
      cofire: f.cofire.map(([j, count]) => ({ ...this.ref(j), count })),
      concepts: this.concepts?.latents[latent] ?? [],
    };
  }

  annotate(latent: number, name: string, notes: string): { latent: number; name: string; notes: string; updated: string } {
    this.checkLatent(latent);
    const a = this.annotations.set(latent, name.trim(), notes.trim());
    this.table.rename(latent, a.name);
    return { latent, ...a };
  }

  private exampleImages(): Promise<ExampleImages> {
    if (!this.images) {
      this.images = (async () => {
        const ds = await ShardDataset.open(this.run.shards);
        await ds.close();
        return ExampleImages.open(this.run.shards, ds.metadata, this.run.images);
      })();
      this.images.catch(() => (this.images = null));
    }
    return this.images;
  }

  /** The picture of an image page: the model's view, enlarged to at least VIEW_MIN pixels, as PNG. */
  view(image: number): Promise<Buffer> {
    this.checkImage(image);
    return this.views.get(image, async () => viewPng(await (await this.exampleImages()).modelView(image)));
  }

  /** Any image (an upload) as the model sees it, drawn like an image page's picture. */
  async viewOf(input: ImageInput): Promise<Buffer> {
    return viewPng(await modelViewOf(input, (await this.exampleImages()).preprocess));
  }

  /** Example `image` as the dataset holds it, before preprocessing: what the edit engine reads. */
  async source(image: number): Promise<ImageInput> {
    this.checkImage(image);
    return (await this.exampleImages()).image(image);
  }

  /** Encodes one image's patches with the SAE: per patch, [latent, value] strongest first. */
  private async patchCodes(image: number): Promise<[number, number][][]> {
    if (!this.encoder) {
      this.encoder = (async () => ({ sae: await openSae(this.run.sae), ds: await ShardDataset.open(this.run.shards) }))();
      this.encoder.catch(() => (this.encoder = null));
    }
    const { sae, ds } = await this.encoder;
    const P = this.index.meta.patches;
    const acts = await ds.readTokens(ds.layerIndex(this.index.meta.source.layer), image, 1, ds.metadata.cls_token ? 1 : 0, P);
    // The SAE core runs one call at a time: queue behind any encode in flight (other image pages).
    const encoded = this.encoding.then(() => sae.encode(acts));
    this.encoding = encoded.catch(() => undefined);
    const z = await encoded;
    return Array.from({ length: P }, (_, p) => {
      const row: [number, number][] = [];
      for (let e = z.rowptr[p]; e < z.rowptr[p + 1]; e++) if (z.val[e] > 0) row.push([z.idx[e], z.val[e]]);
      return row.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
    });
  }

  image(image: number): Promise<ImagePage> {
    this.checkImage(image);
    return this.imagePages.get(image, async () => {
      const [info, top, patches] = await Promise.all([(await this.exampleImages()).info(image), this.index.imageTop(image), this.patchCodes(image)]);
      const latents: Record<number, LatentRef> = {};
      for (const row of patches) for (const [j] of row) latents[j] ??= this.ref(j);
      for (const { latent } of top) latents[latent] ??= this.ref(latent);
      return { run: this.id, image, ...info, view: this.urls.view(this.id, image), grid: this.index.meta.grid, top, patches, latents };
    });
  }

  /** Latents of `other` that fire most on this feature's exemplar images (matched by dataset key). */
  async compare(latent: number, other: RunData): Promise<Comparison> {
    this.checkLatent(latent);
    const f = await this.index.feature(latent);
    const theirs = await other.exampleImages();
    const score = new Map<number, { count: number; value: number }>();
    let found = 0;
    for (const e of f.exemplars) {
      const there = await theirs.exampleOf(e.key);
      if (there === undefined) continue;
      found++;
      for (const { latent: j, value } of await other.index.imageTop(there)) {
        const s = score.get(j) ?? { count: 0, value: 0 };
        score.set(j, { count: s.count + 1, value: s.value + value });
      }
    }
    const matches = [...score]
      .sort((a, b) => b[1].count - a[1].count || b[1].value - a[1].value || a[0] - b[0])
      .slice(0, 12)
      .map(([j, s]) => ({ ...other.ref(j), count: s.count, value: s.value / s.count }));
    return { run: this.id, other: other.id, latent, images: found, matches };
  }

  async close(): Promise<void> {
    this.annotations.close();
    if (this.encoder) await (await this.encoder.catch(() => null))?.ds.close();
  }
}
