/** The feature list: sort, filter by frequency, name or notes, annotation and concept match, page, jump to an id. */
import { type FormEvent, useState } from 'react';
import type { FeatureQuery, RunInfo, SortKey } from '../../src/server/api.js';
import { useApp, useLoad } from './app.js';
import { num, pct } from './format.js';
import { href } from './routes.js';
import { ConceptBadge, Status, Thumbs } from './widgets.js';

const PAGE = 50;
const SORTS: [SortKey, string][] = [
  ['latent', 'id'],
  ['frequency', 'frequency'],
  ['image_frequency', 'image frequency'],
  ['max', 'max value'],
  ['mean', 'mean value'],
  ['name', 'name'],
  ['concept_f1', 'concept match'],
];

/** Minimum F1 of a feature's best concept match: [label, min]. */
const MATCHES: [string, number | undefined][] = [
  ['any match', undefined],
  ['F1 ≥ 0.25', 0.25],
  ['F1 ≥ 0.5', 0.5],
  ['F1 ≥ 0.75', 0.75],
];

/** Frequency bands: [label, min, max] (fractions of patch tokens). */
const BANDS: [string, number | undefined, number | undefined][] = [
  ['any frequency', undefined, undefined],
  ['rare (< 0.1%)', undefined, 1e-3],
  ['0.1–1%', 1e-3, 1e-2],
  ['1–10%', 1e-2, 0.1],
  ['dense (> 10%)', 0.1, undefined],
];

/** List state lives in the URL, so that back, reload and links keep it. */
function queryOf(params: URLSearchParams): FeatureQuery & { page: number; alive: boolean } {
  const sort = (SORTS.find(([k]) => k === params.get('sort'))?.[0] ?? 'frequency') as SortKey;
  const page = Math.max(0, Number(params.get('page') ?? 0) | 0);
  const alive = params.get('alive') !== '0';
  const annotated = params.get('annotated');
  const band = BANDS[Number(params.get('band') ?? 0)] ?? BANDS[0];
  const match = MATCHES[Number(params.get('match') ?? 0)] ?? MATCHES[0];
  return {
    sort,
    order: params.get('order') === 'asc' ? 'asc' : params.get('order') === 'desc' ? 'desc' : sort === 'latent' || sort === 'name' ? 'asc' : 'desc',
    offset: page * PAGE,
    limit: PAGE,
    q: params.get('q') ?? undefined,
    annotated: annotated === 'named' || annotated === 'unnamed' ? annotated : 'any',
    min_frequency: band[1] ?? (alive ? Number.MIN_VALUE : undefined),
    max_frequency: band[2],
    concept: params.get('concept') || undefined,
    min_concept_f1: match[1],
    page,
    alive,
  };
}

export function FeatureList({ run, params }: { run: RunInfo; params: URLSearchParams }) {
  const { source } = useApp();
  const q = queryOf(params);
  const { page, alive, ...query } = q;
  const state = useLoad(() => source.list(run.id, query), [run.id, params.toString()]);
  const [jump, setJump] = useState('');
  const set = (changes: Record<string, string>) => {
    const next = new URLSearchParams(params);
    for (const [k, v] of Object.entries(changes)) v === '' ? next.delete(k) : next.set(k, v);
    if (!('page' in changes)) next.delete('page');
    location.hash = href.list(run.id, Object.fromEntries(next));
  };
  const onJump = (e: FormEvent) => {
    e.preventDefault();
    const j = Number(jump);
    if (Number.isInteger(j) && j >= 0 && j < run.d_sae) location.hash = href.feature(run.id, j);
  };
  const list = state.data;
  const hasConcepts = run.concepts.length > 0;
  return (
    <section>
      <form className="toolbar" onSubmit={(e) => e.preventDefault()}>
        <label>
          Sort by{' '}
          <select value={q.sort} onChange={(e) => set({ sort: e.target.value, order: '' })} data-testid="sort">
            {SORTS.filter(([k]) => hasConcepts || k !== 'concept_f1').map(([k, label]) => (
              <option key={k} value={k}>
                {label}
              </option>
            ))}
          </select>
        </label>
        <button type="button" className="ghost" onClick={() => set({ order: q.order === 'asc' ? 'desc' : 'asc' })} title="reverse the order">
          {q.order === 'asc' ? '↑ ascending' : '↓ descending'}
        </button>
        <input type="search" placeholder="name or notes…" defaultValue={q.q ?? ''} onKeyDown={(e) => e.key === 'Enter' && set({ q: e.currentTarget.value })} aria-label="search names and notes" />
        <select value={q.annotated} onChange={(e) => set({ annotated: e.target.value === 'any' ? '' : e.target.value })} aria-label="annotation filter">
          <option value="any">all features</option>
          <option value="named">named</option>
          <option value="unnamed">unnamed</option>
        </select>
        <select value={params.get('band') ?? '0'} onChange={(e) => set({ band: e.target.value === '0' ? '' : e.target.value })} aria-label="frequency filter">
          {BANDS.map(([label], i) => (
            <option key={i} value={i}>
              {label}
            </option>
          ))}
        </select>
        {hasConcepts && (
          <>
            <select value={q.concept ?? ''} onChange={(e) => set({ concept: e.target.value })} aria-label="concept filter" data-testid="concept-filter">
              <option value="">any concept</option>
              {run.concepts.map((c) => (
                <option key={c} value={c}>
                  best match: {c}
                </option>
              ))}
            </select>
            <select value={params.get('match') ?? '0'} onChange={(e) => set({ match: e.target.value === '0' ? '' : e.target.value })} aria-label="concept match filter">
              {MATCHES.map(([label], i) => (
                <option key={i} value={i}>
                  {label}
                </option>
              ))}
            </select>
          </>
        )}
        <label>
          <input type="checkbox" checked={alive} onChange={(e) => set({ alive: e.target.checked ? '' : '0' })} /> hide dead
        </label>
      </form>
      <form className="toolbar" onSubmit={onJump}>
        <label>
          Go to feature{' '}
          <input type="number" min={0} max={run.d_sae - 1} value={jump} onChange={(e) => setJump(e.target.value)} placeholder={`0–${run.d_sae - 1}`} className="narrow" data-testid="jump" />
        </label>
        <button type="submit">Go</button>
        {list && (
          <span className="muted">
            {list.total} of {run.d_sae} features
          </span>
        )}
      </form>
      <Status state={state} />
      {list && (
        <>
          <table className="features" data-testid="feature-list">
            <thead>
              <tr>
                <th>id</th>
                <th>name</th>
                <th>exemplars</th>
                <th className="num">frequency</th>
                <th className="num">images</th>
                <th className="num">mean</th>
                <th className="num">max</th>
                {hasConcepts && <th>best concept</th>}
              </tr>
            </thead>
            <tbody>
              {list.items.map((f) => (
                <tr key={f.latent} onClick={() => (location.hash = href.feature(run.id, f.latent))}>
                  <td>
                    <a href={href.feature(run.id, f.latent)}>#{f.latent}</a>
                  </td>
                  <td>{f.name || <span className="muted">—</span>}</td>
                  <td>
                    <Thumbs run={run} latent={f.latent} count={Math.min(5, f.n_exemplars)} size={40} />
                  </td>
                  <td className="num">
                    <span className="bar" style={{ width: `${Math.max(1, (Math.log10(Math.max(f.frequency, 1e-6)) + 6) * 8)}px` }} />
                    {pct(f.frequency)}
                  </td>
                  <td className="num">{pct(f.image_frequency)}</td>
                  <td className="num">{num(f.mean)}</td>
                  <td className="num">{num(f.max)}</td>
                  {hasConcepts && <td>{f.concept && <ConceptBadge concept={f.concept} f1={f.concept_f1} />}</td>}
                </tr>
              ))}
            </tbody>
          </table>
          <nav className="pager">
            <button type="button" disabled={page === 0} onClick={() => set({ page: String(page - 1) })}>
              ← previous
            </button>
            <span className="muted">{list.total ? `${list.offset + 1}–${list.offset + list.items.length}` : 'none'}</span>
            <button type="button" disabled={list.offset + list.items.length >= list.total} onClick={() => set({ page: String(page + 1) })}>
              next →
            </button>
          </nav>
        </>
      )}
    </section>
  );
}
