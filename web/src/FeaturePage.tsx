/**
 * A feature: its exemplars with the firing patches highlighted, statistics, best-matching concepts, histogram,
 * co-firing features, name.
 */
import { type FormEvent, useEffect, useState } from 'react';
import type { ConceptMatch, FeaturePage as Page, RunInfo } from '../../src/server/api.js';
import { thumbUrl } from './data.js';
import { EditLinks } from './EditLinks.js';
import { useApp, useLoad } from './app.js';
import { featureTitle, num, pct } from './format.js';
import { href } from './routes.js';
import { Histogram, LatentCard, Status } from './widgets.js';

function NameEditor({ run, page, onSaved }: { run: RunInfo; page: Page; onSaved: () => void }) {
  const { source } = useApp();
  const [name, setName] = useState(page.name);
  const [notes, setNotes] = useState(page.notes);
  const [status, setStatus] = useState('');
  useEffect(() => {
    setName(page.name);
    setNotes(page.notes);
  }, [page.latent, page.name, page.notes]);
  useEffect(() => setStatus(''), [page.latent]);
  const save = async (e: FormEvent) => {
    e.preventDefault();
    setStatus('saving…');
    try {
      await source.annotate(run.id, page.latent, name, notes);
      setStatus('saved');
      onSaved();
    } catch (err) {
      setStatus((err as Error).message);
    }
  };
  const dirty = name !== page.name || notes !== page.notes;
  return (
    <form className="annotation" onSubmit={save}>
      <input value={name} onChange={(e) => setName(e.target.value)} placeholder="name this feature" maxLength={200} aria-label="feature name" data-testid="name-input" />
      <textarea value={notes} onChange={(e) => setNotes(e.target.value)} placeholder="notes" rows={2} maxLength={20000} aria-label="notes" />
      <div>
        <button type="submit" disabled={!dirty} data-testid="save-name">
          Save
        </button>{' '}
        <span className="muted" role="status">
          {status}
        </span>
      </div>
    </form>
  );
}

const scores = (m: ConceptMatch) => `F1 ${m.f1.toFixed(2)}, P ${m.precision.toFixed(2)}, R ${m.recall.toFixed(2)}`;

/** The ground-truth concepts whose presence this feature's firing matches best (the run's concept report). */
function ConceptMatches({ matches }: { matches: ConceptMatch[] }) {
  if (!matches.length) return <p className="muted">No ground-truth concept matches this feature.</p>;
  const [best, ...next] = matches;
  return (
    <p data-testid="concept-match">
      best-matching concept: <b>{best.concept}</b> ({scores(best)}){next.length > 0 && <span className="muted">; then {next.map((m) => `${m.concept} (${scores(m)})`).join(', ')}</span>}
    </p>
  );
}

/** The body of a feature page; `compact` leaves out editing and co-firing (for side-by-side views). */
export function FeatureDetail({ run, page, compact = false, onSaved }: { run: RunInfo; page: Page; compact?: boolean; onSaved?: () => void }) {
  const [th, tw] = run.thumb_size;
  const size = compact ? Math.min(tw, 96) : Math.max(tw, 112);
  return (
    <div className="feature">
      <h2 data-testid="feature-title">{compact ? <a href={href.feature(run.id, page.latent)}>{featureTitle(page.latent, page.name)}</a> : featureTitle(page.latent, page.name)}</h2>
      {page.notes && compact && <p className="notes">{page.notes}</p>}
      <div className="stats">
        <span>
          fires on <b>{pct(page.frequency)}</b> of patches
        </span>
        <span>
          <b>{pct(page.image_frequency)}</b> of images
        </span>
        <span>
          mean <b>{num(page.mean)}</b>
        </span>
        <span>
          max <b>{num(page.max)}</b>
        </span>
      </div>
      {run.concepts.length > 0 && <ConceptMatches matches={page.concepts} />}
      {!compact && run.editable && <NameEditor run={run} page={page} onSaved={onSaved ?? (() => {})} />}
      {!compact && !run.editable && page.notes && <p className="notes">{page.notes}</p>}
      <h3>Top images</h3>
      {page.exemplars.length === 0 && <p className="muted">This feature never fires on these images.</p>}
      <div className="exemplars" data-testid="exemplars">
        {page.exemplars.map((e, rank) => (
          <a key={rank} className="exemplar" href={href.image(run.id, e.image)} title={`${e.key}: max ${num(e.max)}`}>
            <img src={thumbUrl(run, page.latent, rank)} width={size} height={Math.round((size * th) / tw)} alt={`example ${e.image}`} data-testid="exemplar-img" />
            <span className="small">
              {e.label !== null ? `class ${e.label} · ` : ''}
              {num(e.max)}
            </span>
          </a>
        ))}
      </div>
      <h3>Values where it fires</h3>
      <Histogram {...page.histogram} width={compact ? 300 : 420} />
      {!compact && page.cofire.length > 0 && (
        <>
          <h3>Fires together with</h3>
          <p className="muted small">Features that also fire at the strongest patch of this feature's top images (in how many of them).</p>
          <div className="cards">
            {page.cofire.map((c) => (
              <LatentCard key={c.latent} run={run} refd={c} detail={`${c.count}/${page.exemplars.length}`} />
            ))}
          </div>
        </>
      )}
    </div>
  );
}

export function FeaturePage({ run, latent }: { run: RunInfo; latent: number }) {
  const { source, runs } = useApp();
  const [version, setVersion] = useState(0);
  const state = useLoad(() => source.feature(run.id, latent), [run.id, latent, version]);
  const other = runs.find((r) => r.id !== run.id);
  return (
    <section>
      <nav className="crumbs">
        <a href={href.list(run.id)}>features</a>
        {latent > 0 && <a href={href.feature(run.id, latent - 1)}>← #{latent - 1}</a>}
        {latent + 1 < run.d_sae && <a href={href.feature(run.id, latent + 1)}>#{latent + 1} →</a>}
        {other && !source.isStatic && <a href={href.compare(run.id, latent, other.id)}>compare with {other.id}</a>}
        <EditLinks run={run} latent={latent} image={state.data?.exemplars[0]?.image} />
      </nav>
      <Status state={state} />
      {state.data && <FeatureDetail run={run} page={state.data} onSaved={() => setVersion((v) => v + 1)} />}
    </section>
  );
}
