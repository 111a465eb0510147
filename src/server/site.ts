/**
 * `vitsae site`: the feature browser without editing, as static files that any web server (or a bucket) can host.
 * The pages are the server's own JSON, precomputed (RunData answers both):
 *
 *   SITE/index.html, assets/             the built app, marked with <meta name="vitsae-data"> so it reads files
 *   SITE/data/runs.json                  { runs: RunInfo[] } (editable false)
 *   SITE/data/comparison.json            RunComparison, when the site is written with a `vitsae compare` output
 *   SITE/data/RUN/features.json          { rows: FeatureRow[], notes: {latent: notes} }: the list, sorted in the browser
 *   SITE/data/RUN/features/LATENT.json   FeaturePage
 *   SITE/data/RUN/images/IMAGE.json      ImagePage, for every image that is some feature's exemplar
 *   SITE/data/RUN/images/IMAGE.png       its picture
 *   SITE/data/RUN/thumbs/...             the exemplar thumbnails (copied from the visuals)
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { THUMBS_DIR } from '../analysis/visuals-index.js';
import { UserError } from '../util/errors.js';
import { progress } from '../util/progress.js';
import { runIds, WEB_DIR } from './app.js';
import { RunData, type Urls } from './run-data.js';
import type { CompareJson } from '../analysis/compare/format.js';
import { withRunIds } from './comparison.js';

export const SITE_DATA = 'data';
/** The marker that tells the app to read SITE_DATA instead of the server's API. */
export const STATIC_MARKER = `<meta name="vitsae-data" content="${SITE_DATA}/">`;

const siteUrls: Urls = {
  files: (run) => `${SITE_DATA}/${run}/`,
  view: (run, image) => `${SITE_DATA}/${run}/images/${image}.png`,
};

/** Pages written at once. */
const CONCURRENCY = 8;

async function forEachLimited<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(CONCURRENCY, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

/** `comparison`: a `vitsae compare` output whose two runs are among `runDirs`. */
export async function writeSite(runDirs: string[], out: string, opts: { webDir?: string; showProgress?: boolean; comparison?: CompareJson } = {}): Promise<void> {
  const web = opts.webDir ?? WEB_DIR;
  const html = await fsp.readFile(path.join(web, 'index.html'), 'utf8').catch(() => {
    throw new UserError(`the web app is not built (${web} has no index.html); run npm run build`);
  });
  const ids = runIds(runDirs);
  const runs = await Promise.all(runDirs.map((d, i) => RunData.open(d, ids[i], siteUrls, { readonly: true })));
  try {
    await fsp.mkdir(out, { recursive: true });
    await fsp.cp(path.join(web, 'assets'), path.join(out, 'assets'), { recursive: true });
    await fsp.writeFile(path.join(out, 'index.html'), html.replace('<head>', `<head>\n    ${STATIC_MARKER}`));
    const json = (file: string, value: unknown) => fsp.writeFile(path.join(out, SITE_DATA, file), JSON.stringify(value));
    await fsp.mkdir(path.join(out, SITE_DATA), { recursive: true });
    await json('runs.json', { runs: runs.map((r) => r.info()) });
    if (opts.comparison) await json('comparison.json', withRunIds(opts.comparison, runs));
    for (const run of runs) await writeRun(run, out, json, opts.showProgress !== false);
  } finally {
    for (const r of runs) await r.close();
  }
}

async function writeRun(run: RunData, out: string, json: (file: string, value: unknown) => Promise<void>, showProgress: boolean): Promise<void> {
  const dir = path.join(out, SITE_DATA, run.id);
  await fsp.mkdir(path.join(dir, 'features'), { recursive: true });
  await fsp.mkdir(path.join(dir, 'images'), { recursive: true });
  await fsp.cp(path.join(run.run.visuals, THUMBS_DIR), path.join(dir, THUMBS_DIR), { recursive: true });
  const rows = run.allRows();
  const notes: Record<number, string> = {};
  for (const r of rows) {
    const n = run.annotations.get(r.latent)?.notes;
    if (n) notes[r.latent] = n;
  }
  await json(`${run.id}/features.json`, { rows, notes });
  const images = new Set<number>();
  const bar = progress(`site ${run.id}: features`, rows.length, { enabled: showProgress, unit: 'pages' });
  let done = 0;
  await forEachLimited([...rows.keys()], async (j) => {
    const page = await run.feature(j);
    for (const e of page.exemplars) images.add(e.image);
    await json(`${run.id}/features/${j}.json`, page);
    bar.update(++done);
  });
  bar.stop();
  const list = [...images].sort((a, b) => a - b);
  const ibar = progress(`site ${run.id}: images`, list.length, { enabled: showProgress && list.length > 0, unit: 'pages' });
  done = 0;
  await forEachLimited(list, async (e) => {
    await json(`${run.id}/images/${e}.json`, await run.image(e));
    await fsp.writeFile(path.join(dir, 'images', `${e}.png`), await run.view(e));
    ibar.update(++done);
  });
  ibar.stop();
}
