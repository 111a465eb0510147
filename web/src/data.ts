/**
 * Where the app gets its data, the one place that knows URLs of data: the live server's JSON API, or the files of
 * a static site written by `vitsae site` (the same JSON, precomputed; lists are sorted and filtered here with the
 * server's own query code; no edit demos).
 */
import type { Comparison, FeatureList, FeaturePage, FeatureQuery, FeatureRow, ImagePage, RunComparison, RunInfo } from '../../src/server/api.js';
import type { EditAnswer, EditRequest, HeadList, HeadSummary, Upload } from '../../src/server/edit-api.js';
import { FeatureTable } from '../../src/server/query.js';
import { thumbPath } from '../../src/analysis/layout.js';
import type { DemoImage } from './routes.js';

export interface Source {
  /** A static site: no editing, no co-firing comparison. */
  readonly isStatic: boolean;
  runs(): Promise<RunInfo[]>;
  list(run: string, q: FeatureQuery): Promise<FeatureList>;
  feature(run: string, latent: number): Promise<FeaturePage>;
  image(run: string, image: number): Promise<ImagePage>;
  compare(run: string, latent: number, other: string): Promise<Comparison>;
  /** The `vitsae compare` output the server or site was given (serve/site --compare). */
  comparison(): Promise<RunComparison>;
  annotate(run: string, latent: number, name: string, notes: string): Promise<void>;
  /** The run's task heads for the edit demos (none on a static site). */
  heads(run: string): Promise<HeadSummary[]>;
  edit(run: string, req: EditRequest): Promise<EditAnswer>;
  upload(file: File): Promise<Upload>;
}

async function getJson<T>(url: string, init?: RequestInit): Promise<T> {
  const res = await fetch(url, init);
  if (!res.ok) {
    const body = (await res.json().catch(() => null)) as { message?: string } | null;
    throw new Error(body?.message ?? `${res.status} ${res.statusText} (${url})`);
  }
  return (await res.json()) as T;
}

function queryString(q: FeatureQuery): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') p.set(k, String(v));
  return p.toString();
}

const live: Source = {
  isStatic: false,
  runs: async () => (await getJson<{ runs: RunInfo[] }>('/api/runs')).runs,
  list: (run, q) => getJson(`/api/runs/${run}/features?${queryString(q)}`),
  feature: (run, latent) => getJson(`/api/runs/${run}/features/${latent}`),
  image: (run, image) => getJson(`/api/runs/${run}/images/${image}`),
  compare: (run, latent, other) => getJson(`/api/runs/${run}/compare/${latent}?other=${encodeURIComponent(other)}`),
  comparison: () => getJson('/api/comparison'),
  annotate: async (run, latent, name, notes) => {
    await getJson(`/api/runs/${run}/features/${latent}/annotation`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, notes }) });
  },
  heads: async (run) => (await getJson<HeadList>(`/api/runs/${run}/heads`)).heads,
  edit: (run, req) => getJson(`/api/runs/${run}/edit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(req) }),
  upload: (file) => getJson('/api/uploads', { method: 'POST', headers: { 'content-type': file.type || 'application/octet-stream' }, body: file }),
};

/** A static site's files (layout in src/server/site.ts): only exemplar images have image pages. */
function staticSource(runs: RunInfo[]): Source {
  const tables = new Map<string, Promise<FeatureTable>>();
  return {
    isStatic: true,
    runs: async () => runs,
    list: async (run, q) => {
      let t = tables.get(run);
      if (!t) {
        t = getJson<{ rows: FeatureRow[]; notes: Record<number, string> }>(`data/${run}/features.json`).then(({ rows, notes }) => new FeatureTable(rows, (j) => notes[j] ?? ''));
        tables.set(run, t);
      }
      return (await t).query(q);
    },
    feature: (run, latent) => getJson(`data/${run}/features/${latent}.json`),
    image: (run, image) => getJson(`data/${run}/images/${image}.json`),
    compare: async () => {
      throw new Error('comparisons need the server (vitsae serve)');
    },
    comparison: () =>
      getJson<RunComparison>('data/comparison.json').catch(() => {
        throw new Error('this site has no comparison of runs (vitsae site --compare DIR includes one)');
      }),
    annotate: async () => {
      throw new Error('this is a read-only site');
    },
    heads: async () => [],
    edit: async () => {
      throw new Error('edits need the server (vitsae serve)');
    },
    upload: async () => {
      throw new Error('uploads need the server (vitsae serve)');
    },
  };
}

/** The static site's data if this page is one (`vitsae site` marks it with a meta tag), else the server's API. */
export async function openSource(): Promise<{ source: Source; runs: RunInfo[] }> {
  if (document.querySelector('meta[name="vitsae-data"]')) {
    const runs = (await getJson<{ runs: RunInfo[] }>('data/runs.json')).runs;
    return { source: staticSource(runs), runs };
  }
  return { source: live, runs: await live.runs() };
}

export function thumbUrl(run: RunInfo, latent: number, rank: number): string {
  return run.files + thumbPath(latent, rank);
}

/** The picture of a demo's image: one of the run's, or an upload (the server only). */
export function imageView(run: string, image: DemoImage): string {
  return typeof image === 'number' ? `/api/runs/${run}/images/${image}/view.png` : `/api/runs/${run}/uploads/${image.upload}/view.png`;
}
