/**
 * report.html: a comparison as one self-contained page that opens from file://. Chart.js (its UMD build, read
 * from node_modules) and the page's data are inlined as scripts, exemplar thumbnails as data URIs, so the page
 * loads nothing from anywhere. Plots: the frequency spectra, the best-match histograms and the abstraction
 * scatter of both runs; then tables of the best matched pairs and of each run's unmatched latents with their
 * exemplars.
 */
import { existsSync, promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { writeFileAtomic } from '../../util/fs.js';
import { thumbPath } from '../layout.js';
import type { CompareJson, CompareSide, LatentComparison } from './format.js';

/** Thumbnails shown per latent. */
const THUMBS_PER_LATENT = 4;
const COLOURS = ['#6a00a8', '#e16462'];

/** Chart.js's UMD build: one script that defines the global `Chart`. */
export async function chartJsSource(): Promise<string> {
  const main = createRequire(import.meta.url).resolve('chart.js');
  const src = await fsp.readFile(path.join(path.dirname(main), 'chart.umd.min.js'), 'utf8');
  if (/<\/script/i.test(src)) throw new Error('chart.umd.min.js contains "</script" and cannot be inlined');
  return src;
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const fixed = (x: number | null | undefined, digits = 3) => (x === null || x === undefined ? '–' : x.toFixed(digits));
const percent = (x: number) => (x === 0 ? '0%' : x < 1e-4 ? '<0.01%' : `${(x * 100).toPrecision(2)}%`);

/** JSON that is safe inside a <script> element. */
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');

async function thumbs(visuals: string, l: LatentComparison): Promise<string> {
  const imgs: string[] = [];
  for (let r = 0; r < Math.min(THUMBS_PER_LATENT, l.n_exemplars); r++) {
    const file = path.join(visuals, thumbPath(l.latent, r));
    if (existsSync(file)) imgs.push(`<img alt="" src="data:image/webp;base64,${(await fsp.readFile(file)).toString('base64')}">`);
  }
  return imgs.length ? `<div class="thumbs">${imgs.join('')}</div>` : '<div class="muted">no exemplars</div>';
}

async function latentCell(side: CompareSide, visuals: string, latent: number): Promise<string> {
  if (latent < 0) return '<td class="muted">none</td>';
  const l = side.latents[latent];
  const scores = [
    l.class_purity !== undefined ? `class purity ${fixed(l.class_purity, 2)}` : '',
    l.concept_purity !== undefined ? `${escapeHtml(l.concept!)} ${fixed(l.concept_purity, 2)}` : '',
    l.spread !== undefined ? `spread ${fixed(l.spread, 2)}` : '',
  ].filter(Boolean);
  return `<td><b>${escapeHtml(side.name)} #${latent}</b> <span class="muted">fires on ${percent(l.frequency)}${scores.length ? ' · ' + scores.join(' · ') : ''}</span>${await thumbs(visuals, l)}</td>`;
}

/** Rows of (A latent, B latent, r). */
async function pairTable(cmp: CompareJson, visuals: [string, string], rows: [number, number, number][], swap: boolean): Promise<string> {
  if (!rows.length) return '<p class="muted">None.</p>';
  const [a, b] = cmp.runs;
  const body: string[] = [];
  for (const [x, y, r] of rows) {
    const cells = [await latentCell(a, visuals[0], x), await latentCell(b, visuals[1], y)];
    body.push(`<tr><td class="num">${fixed(r)}</td>${(swap ? cells.reverse() : cells).join('')}</tr>`);
  }
  const heads = swap ? [b.name, a.name] : [a.name, b.name];
  return `<table class="pairs"><thead><tr><th>r</th><th>${escapeHtml(heads[0])}</th><th>${escapeHtml(heads[1])}</th></tr></thead><tbody>${body.join('')}</tbody></table>`;
}

function summaryTable(cmp: CompareJson): string {
  const [a, b] = cmp.runs;
  const row = (label: string, f: (s: CompareSide) => string) => `<tr><th>${label}</th><td>${f(a)}</td><td>${f(b)}</td></tr>`;
  return `<table class="summary"><thead><tr><th></th><th>${escapeHtml(a.name)}</th><th>${escapeHtml(b.name)}</th></tr></thead><tbody>
${row('model, layer', (s) => `${escapeHtml(s.model ?? '?')}, layer ${s.layer}`)}
${row('latents (firing on the compared patches)', (s) => `${s.d_sae} (${s.live})`)}
${row('dead in the visuals', (s) => String(s.spectrum.dead))}
${row('best match r: mean, median', (s) => `${fixed(s.best_match.mean)}, ${fixed(s.best_match.median)}`)}
${row(`matched (best r &ge; ${cmp.threshold})`, (s) => `${s.best_match.above_threshold} of ${s.live}`)}
${row('unmatched', (s) => String(s.unmatched.length))}
${row('concepts: mean best latent F1', (s) => fixed(s.concepts?.mean_best_f1))}
${row('concepts: recovery ratio (group of 3)', (s) => (s.concepts ? `${fixed(s.concepts.recovery_ratio)} (${fixed(s.concepts.recovery_ratio_group3)})` : '–'))}
${row(`abstraction: latents scored (&ge; ${a.abstraction.min_exemplars} exemplars)`, (s) => String(s.abstraction.scored))}
${row('mean class purity', (s) => fixed(s.abstraction.mean_class_purity))}
${row('mean concept purity', (s) => fixed(s.abstraction.mean_concept_purity))}
${row('mean spread', (s) => fixed(s.abstraction.mean_spread))}
</tbody></table>`;
}

function conceptTable(cmp: CompareJson): string {
  const [a, b] = cmp.runs;
  if (!a.concepts || !b.concepts) return '';
  const fb = new Map(b.concepts.concepts.map((c) => [c.concept, c]));
  const rows = a.concepts.concepts.map((c) => {
    const o = fb.get(c.concept);
    return `<tr><td>${escapeHtml(c.concept)}</td><td class="num">${fixed(c.f1)} (#${c.latent})</td><td class="num">${o ? `${fixed(o.f1)} (#${o.latent})` : '–'}</td><td class="num">${fixed(c.probe_f1)}</td><td class="num">${o ? fixed(o.probe_f1) : '–'}</td></tr>`;
  });
  return `<h2>Concept recovery</h2><p class="muted">Per ground-truth concept: the F1 of each run's best single latent, and of a linear probe on its layer.</p>
<table class="pairs"><thead><tr><th>concept</th><th>${escapeHtml(a.name)} latent F1</th><th>${escapeHtml(b.name)} latent F1</th><th>${escapeHtml(a.name)} probe F1</th><th>${escapeHtml(b.name)} probe F1</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

/** What the plots draw, as the page's data. */
function chartData(cmp: CompareJson) {
  // Bars from the first to the last bin that either run fills.
  const histogram = (edges: number[], counts: number[][], digits: number) => {
    const filled = counts[0].map((_, b) => counts.some((c) => c[b] > 0));
    const lo = Math.max(0, filled.indexOf(true)),
      hi = Math.max(lo, filled.lastIndexOf(true));
    const labels = edges.slice(lo, hi + 1).map((e, i) => ((e + edges[lo + i + 1]) / 2).toFixed(digits));
    return { labels, counts: counts.map((c) => c.slice(lo, hi + 1)) };
  };
  const scatter = (s: CompareSide) =>
    s.latents.filter((l) => l.class_purity !== undefined && l.concept_purity !== undefined).map((l) => ({ x: l.class_purity, y: l.concept_purity, latent: l.latent }));
  const points = cmp.runs.map(scatter);
  return {
    names: cmp.runs.map((s) => s.name),
    colours: COLOURS,
    spectrum: histogram(
      cmp.spectrum_edges,
      cmp.runs.map((s) => s.spectrum.counts),
      2,
    ),
    best: histogram(
      cmp.best_match_edges,
      cmp.runs.map((s) => s.best_match.counts),
      3,
    ),
    scatter: points.some((p) => p.length) ? points : null,
  };
}

/** The page's own script: draws the plots from DATA with Chart.js. */
const PLOTS = `
const axes = (x, y, extra = {}) => ({ animation: false, responsive: true, maintainAspectRatio: false,
  scales: { x: { title: { display: true, text: x }, ...extra.x }, y: { title: { display: true, text: y }, beginAtZero: true, ...extra.y } } });
const bars = (id, labels, counts, x, y) => new Chart(document.getElementById(id), { type: 'bar',
  data: { labels, datasets: counts.map((c, i) => ({ label: DATA.names[i], data: c, backgroundColor: DATA.colours[i] + 'b0' })) },
  options: axes(x, y) });
bars('spectrum', DATA.spectrum.labels, DATA.spectrum.counts, 'log10 firing frequency (bin centre)', 'latents');
bars('best', DATA.best.labels, DATA.best.counts, 'best correlation with any latent of the other run (bin centre)', 'latents');
if (DATA.scatter) {
  new Chart(document.getElementById('scatter'), { type: 'scatter',
    data: { datasets: DATA.scatter.map((p, i) => ({ label: DATA.names[i], data: p, pointRadius: 2.5, backgroundColor: DATA.colours[i] + '90' })) },
    options: { ...axes('class purity', 'concept purity', { x: { min: 0, max: 1 }, y: { min: 0, max: 1 } }),
      plugins: { tooltip: { callbacks: { label: (c) => c.dataset.label + ' #' + c.raw.latent + ': class ' + c.raw.x.toFixed(2) + ', concept ' + c.raw.y.toFixed(2) } } } } });
}
`;

const STYLE = `
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px; color: #1d1d1f; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.muted { color: #6b6b70; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { padding: 0.3rem 0.6rem; border-bottom: 1px solid #e2e2de; text-align: left; vertical-align: top; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.plot { position: relative; height: 300px; margin: 0.5rem 0 1rem; }
.plot.square { height: 480px; max-width: 560px; }
.thumbs { display: flex; gap: 3px; margin-top: 0.25rem; }
.thumbs img { width: 64px; height: 64px; image-rendering: pixelated; border-radius: 3px; }
`;

export interface ReportOptions {
  /** Rows per example table. */
  examples: number;
}

/** Writes the report of `cmp`; `visuals` are the two runs' visuals directories (for thumbnails). */
export async function writeReport(file: string, cmp: CompareJson, visuals: [string, string], opts: ReportOptions): Promise<void> {
  const [a, b] = cmp.runs;
  const n = opts.examples;
  const matched = a.latents
    .filter((l) => l.partner >= 0 && l.n_exemplars > 0 && b.latents[l.partner].n_exemplars > 0)
    .sort((x, y) => y.partner_r - x.partner_r || x.latent - y.latent)
    .slice(0, n)
    .map((l): [number, number, number] => [l.latent, l.partner, l.partner_r]);
  const onlyA = a.unmatched.slice(0, n).map((j): [number, number, number] => [j, a.latents[j].best, a.latents[j].best_r]);
  const onlyB = b.unmatched.slice(0, n).map((j): [number, number, number] => [b.latents[j].best, j, b.latents[j].best_r]);
  const missing = (s: CompareSide) => [s.abstraction.class_labels ? '' : 'no image classes', s.abstraction.concept_names ? '' : 'no per-patch concepts'].filter(Boolean).join(' and ');
  const noScatter = [a, b].map((s) => `${escapeHtml(s.name)}: ${missing(s) || 'no latent with enough exemplars'}`).join('; ');
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(a.name)} vs ${escapeHtml(b.name)}: vitsae compare</title>
<style>${STYLE}</style></head><body>
<h1>${escapeHtml(a.name)} vs ${escapeHtml(b.name)}</h1>
<p class="muted">vitsae compare, ${escapeHtml(cmp.created)}: correlations of every pair of latents over ${cmp.n_patches} patches of ${cmp.n_images} images.
Hungarian assignment: ${cmp.assignment.pairs} pairs of firing latents, mean r ${fixed(cmp.assignment.mean_r)}, median ${fixed(cmp.assignment.median_r)}, ${cmp.assignment.above_threshold} at r &ge; ${cmp.threshold}.</p>
${summaryTable(cmp)}
<h2>Frequency spectrum</h2><p class="muted">Latents by the log10 of the fraction of patches they fire on (dead latents are counted in the table above).</p>
<div class="plot"><canvas id="spectrum"></canvas></div>
<h2>Best-match correlations</h2><p class="muted">Each firing latent's highest correlation with any firing latent of the other run. Below ${cmp.threshold} it counts as unmatched: the other run has no latent for it.</p>
<div class="plot"><canvas id="best"></canvas></div>
<h2>Abstraction</h2><p class="muted">Per latent with at least ${a.abstraction.min_exemplars} exemplars: class purity (the share of its exemplar images in their most common class) against concept purity (the average share of its firing, within each exemplar, on patches showing its most common low-level concept). High class purity with low concept purity is a latent for a whole-image category; the reverse, a low-level one.</p>
${cmp.runs.some((s) => s.abstraction.class_labels && s.abstraction.concept_names) ? '<div class="plot square"><canvas id="scatter"></canvas></div>' : `<p class="muted">No scatter: it needs both image classes and per-patch concepts (${noScatter}).</p>`}
${conceptTable(cmp)}
<h2>Best matched pairs</h2><p class="muted">The pairs of the Hungarian assignment with the highest correlation, with their strongest exemplars.</p>
${await pairTable(cmp, visuals, matched, false)}
<h2>Only in ${escapeHtml(a.name)}</h2><p class="muted">${a.unmatched.length} firing latents of ${escapeHtml(a.name)} whose best match in ${escapeHtml(b.name)} is below r = ${cmp.threshold}; the most frequent ${Math.min(n, a.unmatched.length)}, beside that best match.</p>
${await pairTable(cmp, visuals, onlyA, false)}
<h2>Only in ${escapeHtml(b.name)}</h2><p class="muted">${b.unmatched.length} firing latents of ${escapeHtml(b.name)} whose best match in ${escapeHtml(a.name)} is below r = ${cmp.threshold}; the most frequent ${Math.min(n, b.unmatched.length)}, beside that best match.</p>
${await pairTable(cmp, visuals, onlyB, true)}
<script>${await chartJsSource()}</script>
<script>const DATA = ${scriptJson(chartData(cmp))};
${PLOTS}</script>
</body></html>
`;
  await writeFileAtomic(file, html);
}
