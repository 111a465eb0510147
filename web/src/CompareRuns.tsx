/**
 * The matches of a `vitsae compare` output: the latents two runs share (pairs of the Hungarian assignment, most
 * correlated first) and those only one of them has (best match below the threshold, most frequent first). Each
 * row opens both feature pages side by side (Compare).
 */
import type { CompareSide, LatentComparison } from '../../src/analysis/compare/format.js';
import type { RunComparison, RunInfo } from '../../src/server/api.js';
import { useApp, useLoad } from './app.js';
import { href } from './routes.js';
import { LatentCard, Status } from './widgets.js';

const PAGE = 50;
const LISTS = ['pairs', 'only-a', 'only-b'] as const;
type ListName = (typeof LISTS)[number];

/** A row: a latent of A, a latent of B (-1: none) and their correlation. */
type Row = [number, number, number];

const fixed = (x: number | null | undefined) => (x === null || x === undefined ? '–' : x.toFixed(3));

/** A latent fired on the compared patches when it has a best match. */
const fired = (l: LatentComparison) => l.best >= 0;

function rowsOf(cmp: RunComparison, list: ListName): Row[] {
  const [a, b] = cmp.runs;
  if (list === 'only-a') return a.unmatched.map((s) => [s, a.latents[s].best, a.latents[s].best_r]);
  if (list === 'only-b') return b.unmatched.map((t) => [b.latents[t].best, t, b.latents[t].best_r]);
  return a.latents
    .filter((l) => l.partner >= 0 && fired(l) && fired(b.latents[l.partner]))
    .sort((x, y) => y.partner_r - x.partner_r || x.latent - y.latent)
    .map((l) => [l.latent, l.partner, l.partner_r]);
}

/** What the exemplars say about a latent's abstraction (scores that exist only). */
function scores(l: LatentComparison): string {
  return [
    l.class_purity !== undefined ? `class ${l.class_purity.toFixed(2)}` : '',
    l.concept_purity !== undefined ? `${l.concept} ${l.concept_purity.toFixed(2)}` : '',
    l.spread !== undefined ? `spread ${l.spread.toFixed(2)}` : '',
  ]
    .filter(Boolean)
    .join(' · ');
}

function Card({ run, side, latent }: { run: RunInfo; side: CompareSide; latent: number }) {
  if (latent < 0) return <span className="muted">none</span>;
  const l = side.latents[latent];
  return <LatentCard run={run} refd={{ latent, name: '', frequency: l.frequency, n_exemplars: l.n_exemplars }} detail={scores(l)} />;
}

function Summary({ cmp }: { cmp: RunComparison }) {
  const [a, b] = cmp.runs;
  const row = (label: string, f: (s: CompareSide) => string) => (
    <tr>
      <th>{label}</th>
      <td className="num">{f(a)}</td>
      <td className="num">{f(b)}</td>
    </tr>
  );
  return (
    <table className="features summary" data-testid="compare-summary">
      <thead>
        <tr>
          <th></th>
          <th className="num">{a.name}</th>
          <th className="num">{b.name}</th>
        </tr>
      </thead>
      <tbody>
        {row('model, layer', (s) => `${s.model ?? 'model'}, layer ${s.layer}`)}
        {row('latents (firing)', (s) => `${s.d_sae} (${s.live})`)}
        {row('best match r, mean', (s) => fixed(s.best_match.mean))}
        {row(`matched (r ≥ ${cmp.threshold})`, (s) => String(s.best_match.above_threshold))}
        {row('unmatched', (s) => String(s.unmatched.length))}
        {row('concepts: mean best latent F1', (s) => fixed(s.concepts?.mean_best_f1))}
        {row('mean class purity', (s) => fixed(s.abstraction.mean_class_purity))}
        {row('mean concept purity', (s) => fixed(s.abstraction.mean_concept_purity))}
        {row('mean spread', (s) => fixed(s.abstraction.mean_spread))}
      </tbody>
    </table>
  );
}

export function CompareRuns({ params }: { params: URLSearchParams }) {
  const { source, runs } = useApp();
  const state = useLoad(() => source.comparison(), []);
  const cmp = state.data;
  if (!cmp) return <Status state={state} />;
  const [ra, rb] = cmp.ids.map((id) => runs.find((r) => r.id === id));
  if (!ra || !rb)
    return (
      <p className="error" role="alert">
        The comparison's runs ({cmp.ids.join(', ')}) are not served.
      </p>
    );
  const [a, b] = cmp.runs;
  const list = (LISTS as readonly string[]).includes(params.get('list') ?? '') ? (params.get('list') as ListName) : 'pairs';
  const rows = rowsOf(cmp, list);
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  const page = Math.min(pages - 1, Math.max(0, Number(params.get('page')) || 0));
  const tabs: [ListName, string][] = [
    ['pairs', `matched pairs (${rowsOf(cmp, 'pairs').length})`],
    ['only-a', `only in ${a.name} (${a.unmatched.length})`],
    ['only-b', `only in ${b.name} (${b.unmatched.length})`],
  ];
  return (
    <section>
      <h2>
        {a.name} vs {b.name}
      </h2>
      <p className="muted small">
        Correlations of every pair of latents over {cmp.n_patches} patches of {cmp.n_images} images. Hungarian assignment: {cmp.assignment.pairs} pairs of firing latents, mean r{' '}
        {fixed(cmp.assignment.mean_r)}, {cmp.assignment.above_threshold} at r ≥ {cmp.threshold}. A latent is unmatched when its best correlation with the other run is below {cmp.threshold}.
      </p>
      <Summary cmp={cmp} />
      <nav className="toolbar tabs">
        {tabs.map(([k, label]) => (
          <a key={k} href={href.matches({ list: k })} className={k === list ? 'active' : ''} data-testid={`matches-${k}`}>
            {label}
          </a>
        ))}
      </nav>
      <table className="features matches" data-testid="matches">
        <thead>
          <tr>
            <th className="num">r</th>
            <th>{list === 'only-b' ? `best match in ${a.name}` : a.name}</th>
            <th>{list === 'only-a' ? `best match in ${b.name}` : b.name}</th>
            <th></th>
          </tr>
        </thead>
        <tbody>
          {rows.slice(page * PAGE, (page + 1) * PAGE).map(([s, t, r]) => (
            <tr key={`${s}-${t}`}>
              <td className="num">{r.toFixed(3)}</td>
              <td>
                <Card run={ra} side={a} latent={s} />
              </td>
              <td>
                <Card run={rb} side={b} latent={t} />
              </td>
              <td>{s >= 0 && t >= 0 && <a href={href.compare(ra.id, s, rb.id, t)}>side by side</a>}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {!rows.length && <p className="muted">None.</p>}
      {pages > 1 && (
        <div className="pager">
          <a href={href.matches({ list, page: String(page - 1) })} hidden={page === 0}>
            ← previous
          </a>
          <span className="muted">
            page {page + 1} of {pages}
          </span>
          <a href={href.matches({ list, page: String(page + 1) })} hidden={page + 1 >= pages}>
            next →
          </a>
        </div>
      )}
    </section>
  );
}
