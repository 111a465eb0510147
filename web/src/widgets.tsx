/** Small components used on several pages: load status, concept badges, thumbnails, latent cards, the histogram. */
import type { LatentRef, RunInfo } from '../../src/server/api.js';
import type { Loaded } from './app.js';
import { thumbUrl } from './data.js';
import { num, pct } from './format.js';
import { href } from './routes.js';

export function Status({ state }: { state: Loaded<unknown> }) {
  if (state.error)
    return (
      <p className="error" role="alert">
        {state.error}
      </p>
    );
  if (state.loading && !state.data) return <p className="muted">Loading…</p>;
  return null;
}

/** A feature's best-matching ground-truth concept and the F1 of the match. */
export function ConceptBadge({ concept, f1 }: { concept: string; f1: number }) {
  return (
    <span className="concept-badge" title={`best-matching ground-truth concept, F1 ${f1.toFixed(3)}`} data-testid="concept-badge">
      {concept} <b>{f1.toFixed(2)}</b>
    </span>
  );
}

/** A latent's first exemplar thumbnails. */
export function Thumbs({ run, latent, count, size = 48 }: { run: RunInfo; latent: number; count: number; size?: number }) {
  return (
    <span className="thumbs">
      {Array.from({ length: count }, (_, r) => (
        <img key={r} src={thumbUrl(run, latent, r)} width={size} height={Math.round((size * run.thumb_size[0]) / run.thumb_size[1])} alt="" loading="lazy" />
      ))}
    </span>
  );
}

/** A linked feature with its name, frequency and first thumbnails. */
export function LatentCard({ run, refd, detail, onHover }: { run: RunInfo; refd: LatentRef; detail?: string; onHover?: (latent: number | null) => void }) {
  return (
    <a className="latent-card" data-testid="latent-card" href={href.feature(run.id, refd.latent)} onMouseEnter={() => onHover?.(refd.latent)} onMouseLeave={() => onHover?.(null)}>
      <span className="latent-title">
        <b>#{refd.latent}</b> {refd.name || <span className="muted">unnamed</span>}
      </span>
      <span className="muted small">
        {detail ? `${detail} · ` : ''}fires on {pct(refd.frequency)}
      </span>
      <Thumbs run={run} latent={refd.latent} count={Math.min(4, refd.n_exemplars)} />
    </a>
  );
}

/** Bars of a log-binned histogram: counts[b] of values in [lo * ratio^b, lo * ratio^(b+1)). */
export function Histogram({ lo, ratio, counts, width = 420, height = 120 }: { lo: number; ratio: number; counts: number[]; width?: number; height?: number }) {
  if (!counts.length) return <p className="muted">Never fires.</p>;
  const max = Math.max(...counts);
  const pad = 18;
  const bw = (width - 8) / counts.length;
  const edge = (b: number) => lo * ratio ** b;
  const ticks = [0, Math.floor(counts.length / 2), counts.length];
  return (
    <svg className="histogram" width={width} height={height + pad} role="img" aria-label="value histogram, log scale">
      {counts.map((c, b) => {
        const h = max ? (c / max) * (height - 4) : 0;
        return (
          <rect key={b} x={4 + b * bw} y={height - h} width={Math.max(1, bw - 1)} height={h}>
            <title>{`${num(edge(b))}–${num(edge(b + 1))}: ${c}`}</title>
          </rect>
        );
      })}
      {ticks.map((b) => (
        <text key={b} x={Math.min(width - 4, Math.max(4, 4 + b * bw))} y={height + 13} textAnchor={b === 0 ? 'start' : b === counts.length ? 'end' : 'middle'}>
          {num(edge(b))}
        </text>
      ))}
    </svg>
  );
}
