/**
 * The feature browser in Debian's chromium (driven by playwright-core) on a small real run: a feature page shows
 * its exemplar images (decoded, not broken) and its best-matching concepts, clicking a patch on an image page lists
 * the features firing there, and a renamed feature keeps its name after a reload. Screenshots go to test-artifacts/.
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fastifyStatic from '@fastify/static';
import Fastify, { type FastifyInstance } from 'fastify';
import type { BrowserContext, Page } from 'playwright-core';
import { ARTIFACTS, browserSkip, serveInBrowser } from './fixtures/browser.js';
import { openRuns } from '../src/server/app.js';
import { writeSite } from '../src/server/site.js';
import type { ConceptMatch, FeatureList, ImagePage } from '../src/server/api.js';
import { addClassConcepts, makeRun, type SmallRun } from './fixtures/web/run.js';

const skip = browserSkip;

let tmp: string;
let run: SmallRun;
let app: FastifyInstance;
let base: string;
let browser: BrowserContext;
let page: Page;
/** The most frequent feature, and an image with a patch that some feature fires on. */
let latent: number;
/** Its best-matching concept in the run's concept report. */
let bestConcept: ConceptMatch;
/** Uncaught errors in the page, checked after each test. */
let pageErrors: string[] = [];

afterEach(() => assert.deepEqual(pageErrors.splice(0), [], 'errors in the page'));

before(async () => {
  if (skip) return;
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-browser-'));
  run = await makeRun(path.join(tmp, 'fashion'));
  const concepts = await addClassConcepts(run);
  ({ app, base, browser, page, pageErrors } = await serveInBrowser(tmp, { runs: await openRuns([run.dir, run.dir]) }));
  const list = (await app.inject({ url: '/api/runs/fashion/features?sort=frequency&order=desc&limit=1', headers: { host: '127.0.0.1' } })).json<FeatureList>();
  latent = list.items[0].latent;
  bestConcept = concepts.latents[latent][0];
});

after(async () => {
  await browser?.close();
  await app?.close();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

/** Waits until every matching image has loaded, then checks each decoded to a real picture. */
async function imagesLoaded(selector: string): Promise<number[]> {
  await page.waitForSelector(selector);
  await page.waitForFunction((sel) => [...document.querySelectorAll<HTMLImageElement>(sel)].every((img) => img.complete), selector);
  return page.$$eval(selector, (imgs) => (imgs as HTMLImageElement[]).map((img) => img.naturalWidth));
}

test('the feature list shows features with their thumbnails', { skip }, async () => {
  await page.goto(base);
  await page.waitForSelector('[data-testid=feature-list] tbody tr');
  const rows = await page.locator('[data-testid=feature-list] tbody tr').count();
  assert.ok(rows > 10, `${rows} rows`);
  assert.ok((await imagesLoaded('[data-testid=feature-list] tbody tr:first-child img')).every((w) => w > 0));
  await page.screenshot({ path: path.join(ARTIFACTS, 'feature-list.png'), fullPage: false });
});

test('a feature page shows its exemplar images, loaded', { skip }, async () => {
  await page.goto(`${base}#/r/fashion/f/${latent}`);
  const widths = await imagesLoaded('[data-testid=exemplar-img]');
  assert.ok(widths.length >= 4, `${widths.length} exemplars`);
  assert.ok(
    widths.every((w) => w > 0),
    `broken exemplar images: ${widths}`,
  );
  assert.match(await page.locator('[data-testid=feature-title]').innerText(), new RegExp(`#${latent}`));
  assert.ok((await page.locator('svg.histogram rect').count()) > 0, 'a histogram');
  const { concept, f1, precision, recall } = bestConcept;
  assert.match(
    await page.locator('[data-testid=concept-match]').innerText(),
    new RegExp(`best-matching concept: ${concept} \\(F1 ${f1.toFixed(2)}, P ${precision.toFixed(2)}, R ${recall.toFixed(2)}\\)`),
  );
  await page.screenshot({ path: path.join(ARTIFACTS, 'feature-page.png'), fullPage: true });
});

test('the feature list sorts and filters by concept match', { skip }, async () => {
  await page.goto(`${base}#/r/fashion?sort=concept_f1&concept=${encodeURIComponent(bestConcept.concept)}`);
  await page.waitForSelector('[data-testid=feature-list] tbody tr');
  const badges = await page.locator('[data-testid=feature-list] [data-testid=concept-badge]').allInnerTexts();
  assert.ok(badges.length > 0 && badges.every((b) => b.startsWith(`${bestConcept.concept} `)), `badges: ${badges}`);
  const f1s = badges.map((b) => Number(b.split(' ').pop()));
  assert.deepEqual(
    f1s,
    [...f1s].sort((a, b) => b - a),
    'best match first',
  );
  assert.equal(await page.locator('[data-testid=concept-filter]').inputValue(), bestConcept.concept);
});

test('clicking a patch on an image page lists the features firing there', { skip }, async () => {
  const image = 5;
  const data = (await app.inject({ url: `/api/runs/fashion/images/${image}`, headers: { host: '127.0.0.1' } })).json<ImagePage>();
  const patch = data.patches.findIndex((p) => p.length > 0);
  await page.goto(`${base}#/r/fashion/i/${image}`);
  await imagesLoaded('[data-testid=patch-view] img');
  await page.locator('[data-testid=patch-cell]').nth(patch).click();
  await page.waitForFunction(() => document.querySelector('[data-testid=selection-title]')?.textContent?.includes('1 selected patch'));
  const cards = page.locator('[data-testid=latent-card]');
  assert.equal(await cards.count(), Math.min(24, data.patches[patch].length));
  assert.match(await cards.first().innerText(), new RegExp(`#${data.patches[patch][0][0]}\\b`), 'the strongest feature first');
  // Dragging over a 2x2 block selects four patches.
  const cell = (p: number) => page.locator('[data-testid=patch-cell]').nth(p).boundingBox();
  const [a, b] = [(await cell(0))!, (await cell(data.grid[1] + 1))!];
  await page.mouse.move(a.x + a.width / 2, a.y + a.height / 2);
  await page.mouse.down();
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2, { steps: 4 });
  await page.mouse.up();
  await page.waitForFunction(() => document.querySelector('[data-testid=selection-title]')?.textContent?.includes('4 selected patches'));
  await cards.first().hover();
  await imagesLoaded('[data-testid=latent-card] img');
  await page.screenshot({ path: path.join(ARTIFACTS, 'image-page.png'), fullPage: true });
});

test('a renamed feature keeps its name after a reload', { skip }, async () => {
  await page.goto(`${base}#/r/fashion/f/${latent}`);
  await page.locator('[data-testid=name-input]').fill('upper garment edge');
  await page.locator('[data-testid=save-name]').click();
  await page.waitForFunction(() => document.querySelector('[role=status]')?.textContent === 'saved');
  await page.reload();
  await page.waitForFunction((l) => document.querySelector('[data-testid=feature-title]')?.textContent === `#${l} upper garment edge`, latent);
  assert.equal(await page.locator('[data-testid=name-input]').inputValue(), 'upper garment edge');
  await page.goto(`${base}#/r/fashion?annotated=named`);
  await page.waitForSelector('[data-testid=feature-list] tbody tr');
  assert.match(await page.locator('[data-testid=feature-list] tbody').innerText(), /upper garment edge/);
  await page.goto(`${base}#/compare/fashion/${latent}/fashion-2`);
  await imagesLoaded('[data-testid=compare-right] [data-testid=exemplar-img]');
  await page.screenshot({ path: path.join(ARTIFACTS, 'compare.png'), fullPage: true });
});

test('a static site shows the same pages without editing', { skip }, async () => {
  const site = path.join(tmp, 'site');
  await writeSite([run.dir], site, { showProgress: false });
  // Any static file server will do; browsers do not let pages fetch file:// URLs.
  const files = Fastify();
  await files.register(fastifyStatic, { root: site });
  const url = (await files.listen({ host: '127.0.0.1', port: 0 })) + '/';
  try {
    await page.goto(`${url}#/r/fashion?sort=name`);
    await page.waitForSelector('[data-testid=feature-list] tbody tr');
    assert.match(await page.locator('[data-testid=feature-list] tbody tr').first().innerText(), /upper garment edge/, 'names from the database, sorted in the page');
    await page.goto(`${url}#/r/fashion/f/${latent}`);
    const widths = await imagesLoaded('[data-testid=exemplar-img]');
    assert.ok(widths.length >= 4 && widths.every((w) => w > 0), `exemplar images: ${widths}`);
    assert.equal(await page.locator('[data-testid=name-input]').count(), 0, 'no editing');
    assert.match(await page.locator('[data-testid=concept-match]').innerText(), new RegExp(`best-matching concept: ${bestConcept.concept} `), 'the concept data is in the site');
    await page.locator('[data-testid=exemplar-img]').first().click();
    await imagesLoaded('[data-testid=patch-view] img');
    await page.locator('[data-testid=patch-cell]').first().click();
    await page.waitForSelector('[data-testid=selection-title]');
    await page.screenshot({ path: path.join(ARTIFACTS, 'static-site-image.png') });
  } finally {
    await files.close();
  }
});
