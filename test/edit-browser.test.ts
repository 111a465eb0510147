/**
 * The edit demos in Debian's chromium (driven by playwright-core) on a small real run with a classification and a
 * segmentation head: reached from a feature page, moving a slider changes the prediction shown (the classes'
 * probabilities; the mask, with the changed patches outlined), an uploaded image gets the same demo, and a static
 * site offers no demos. Screenshots go to test-artifacts/.
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
import type { EditAnswer, EditSpec } from '../src/server/edit-api.js';
import { makeEditRun, type EditRun } from './fixtures/web/edit-run.js';

const skip = browserSkip;
const IMAGE = 3;

let tmp: string;
let run: EditRun;
let app: FastifyInstance;
let base: string;
let browser: BrowserContext;
let page: Page;
let pageErrors: string[] = [];

afterEach(() => assert.deepEqual(pageErrors.splice(0), [], 'errors in the page'));

before(async () => {
  if (skip) return;
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vitsae-edit-browser-'));
  run = await makeEditRun(path.join(tmp, 'world'));
  ({ app, base, browser, page, pageErrors } = await serveInBrowser(tmp, { runs: await openRuns([run.dir]) }, { width: 1280, height: 1000 }));
});

after(async () => {
  await browser?.close();
  await app?.close();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

async function answer(head: number, edits: EditSpec[], patches?: 'all'): Promise<EditAnswer> {
  const res = await app.inject({ method: 'POST', url: '/api/runs/world/edit', headers: { host: '127.0.0.1' }, payload: { head, image: IMAGE, edits, patches } });
  assert.equal(res.statusCode, 200, res.body);
  return res.json<EditAnswer>();
}

/**
 * Of the latents firing on the test image, the one whose edit to `value` x its maximum everywhere changes `head`'s
 * answer most (by `change`), so that the slider's effect must show.
 */
async function mostEffective(head: number, value: number, change: (a: EditAnswer) => number): Promise<number> {
  const unedited = await answer(head, [], 'all');
  let best = { latent: -1, change: 0 };
  for (const latent of new Set(Object.values(unedited.patches).flatMap((row) => row.map(([j]) => j)))) {
    const c = change(await answer(head, [{ latent, patches: 'all', value, mode: 'add', relative: true }]));
    if (c > best.change) best = { latent, change: c };
  }
  assert.ok(best.latent >= 0, 'some latent changes the answer');
  return best.latent;
}

const text = (testid: string) => page.locator(`[data-testid=${testid}]`).innerText();
/** The class bars of a prediction as text, one bar per item. */
const bars = (testid: string) => page.$$eval(`[data-testid=${testid}] .class-bar`, (els) => els.map((b) => b.textContent).join(' | '));
/** Waits until no edit is on its way and the after bars are (or are not) the before bars. */
const settled = (same: boolean) =>
  page.waitForFunction((same) => {
    const of = (testid: string) => [...document.querySelectorAll(`[data-testid=${testid}] .class-bar`)].map((b) => b.textContent).join(' | ');
    return !document.querySelector('.pending') && of('prediction-before') !== '' && of('prediction-after') !== '' && (of('prediction-after') === of('prediction-before')) === same;
  }, same);

test('the classification demo: from a feature page, a slider changes the class probabilities shown', { skip }, async () => {
  const latent = await mostEffective(0, 20, (a) => (a.task === 'classify' ? Math.max(...a.before.map((c, i) => Math.abs(c.prob - a.after[i].prob))) : 0));
  const feature = (await app.inject({ url: `/api/runs/world/features/${latent}`, headers: { host: '127.0.0.1' } })).json<{ exemplars: { image: number }[] }>();
  await page.goto(`${base}#/r/world/f/${latent}`);
  await page.locator('[data-testid=edit-links] a', { hasText: 'classification' }).click();
  await page.waitForSelector('[data-testid=prediction-after] .class-bar');
  assert.match(page.url(), new RegExp(`#/r/world/edit/0/${feature.exemplars[0].image}\\?latent=${latent}$`), "the feature's top image, the feature chosen");
  // The chosen feature on another image: the test image, reached through the image box.
  await page.locator('[data-testid=image-index]').fill(String(IMAGE));
  await page.locator('[data-testid=image-index]').press('Enter');
  await page.waitForFunction((i) => location.hash.startsWith(`#/r/world/edit/0/${i}?`), IMAGE);
  await settled(true);
  const unedited = await bars('prediction-after');
  assert.equal(await page.locator('[data-testid=latent-slider]').count(), 1, 'the feature from the link has a slider');

  const slider = page.locator('[data-testid=edit-slider]');
  await slider.focus();
  await page.keyboard.press('End');
  assert.match(await text('slider-value'), /^\+20× max = /);
  await settled(false);
  assert.notEqual(await bars('prediction-after'), unedited, 'the prediction shown changed');
  await page.screenshot({ path: path.join(ARTIFACTS, 'edit-classify.png'), fullPage: true });

  // Back to 0: the unedited prediction again.
  await page.keyboard.press('Home');
  for (let i = 0; i < 40; i++) await page.keyboard.press('ArrowRight'); // steps of 0.5 from -20
  assert.match(await text('slider-value'), /^0× max/);
  await settled(true);
  assert.equal(await bars('prediction-after'), unedited);
});

test('the segmentation demo: a slider changes the mask, and the changed patches are outlined', { skip }, async () => {
  const latent = await mostEffective(1, -20, (a) => (a.task === 'segment' ? a.changed.length : 0));
  await page.goto(`${base}#/r/world/edit/1/${IMAGE}?latent=${latent}`);
  await page.waitForSelector('[data-testid=mask-after] .mask-cell');
  const classes = (testid: string) => page.$$eval(`[data-testid=${testid}] .mask-cell`, (cells) => cells.map((c) => Number((c as HTMLElement).dataset.class)));
  assert.deepEqual(await classes('mask-after'), await classes('mask-before'));
  assert.match(await text('changed-count'), /^0 of 16 patches changed/);

  await page.locator('[data-testid=edit-slider]').focus();
  await page.keyboard.press('Home');
  await page.waitForFunction(() => !/^0 of/.test(document.querySelector('[data-testid=changed-count]')?.textContent ?? '0 of'));
  const [b, a] = [await classes('mask-before'), await classes('mask-after')];
  const changed = b.flatMap((k, p) => (k !== a[p] ? [p] : []));
  assert.ok(changed.length > 0, 'the mask changed');
  assert.match(await text('changed-count'), new RegExp(`^${changed.length} of 16`));
  const outlined = await page.$$eval('[data-testid=mask-after] .mask-cell', (cells) => cells.flatMap((c, p) => (c.classList.contains('changed') ? [p] : [])));
  assert.deepEqual(outlined, changed);
  await page.screenshot({ path: path.join(ARTIFACTS, 'edit-segment.png'), fullPage: true });

  // Only the chosen patch: click one patch on the picture; the edit then touches that patch's token alone.
  await page.locator('[data-testid=patch-cell]').nth(changed[0]).click();
  await page.waitForFunction(() => document.querySelector('[data-testid=selection-title]')?.textContent?.includes('1 selected patch'));
  await page.waitForFunction(() => !document.querySelector('.masks.pending'));
  await page.screenshot({ path: path.join(ARTIFACTS, 'edit-segment-one-patch.png'), fullPage: true });
});

test('an uploaded image gets the same demo', { skip }, async () => {
  await page.goto(`${base}#/r/world/edit/0/0`);
  await page.waitForSelector('[data-testid=prediction-before] .class-bar');
  await page.locator('[data-testid=upload]').setInputFiles(path.join(run.dir, 'world', 'images', `${String(IMAGE).padStart(6, '0')}.png`));
  await page.waitForFunction(() => /#\/r\/world\/edit\/0\/upload-[0-9a-f]{64}$/.test(location.hash));
  await settled(true);
  const uploaded = await bars('prediction-before');
  await page.waitForFunction(() => [...document.querySelectorAll<HTMLImageElement>('[data-testid=patch-view] img')].every((i) => i.complete && i.naturalWidth > 0));
  await page.screenshot({ path: path.join(ARTIFACTS, 'edit-upload.png'), fullPage: true });
  await page.goto(`${base}#/r/world/edit/0/${IMAGE}`);
  await settled(true);
  assert.equal(await bars('prediction-before'), uploaded, 'the same image uploaded and from the run');
});

test('image pages link the demos; a static site has none', { skip }, async () => {
  await page.goto(`${base}#/r/world/i/${IMAGE}`);
  await page.waitForSelector('[data-testid=edit-links] a');
  assert.equal(await page.locator('[data-testid=edit-links] a').count(), 2);
  const site = path.join(tmp, 'site');
  await writeSite([run.dir], site, { showProgress: false });
  const files = Fastify();
  await files.register(fastifyStatic, { root: site });
  const url = (await files.listen({ host: '127.0.0.1', port: 0 })) + '/';
  try {
    const latent = (JSON.parse(await fsp.readFile(path.join(site, 'data', 'world', 'features.json'), 'utf8')) as { rows: { latent: number; frequency: number }[] }).rows.find(
      (r) => r.frequency > 0,
    )!.latent;
    await page.goto(`${url}#/r/world/f/${latent}`);
    await page.waitForSelector('[data-testid=exemplar-img]');
    await page.locator('[data-testid=exemplar-img]').first().click();
    await page.waitForSelector('[data-testid=patch-view] img');
    assert.equal(await page.locator('[data-testid=edit-links]').count(), 0, 'no demos without the server');
  } finally {
    await files.close();
  }
});
