/**
 * Two SAEs side by side (two models, two layers, or two trainings): a feature of run A, and the features of run B
 * that fire most on its top images, the best match shown in full next to it.
 */
import type { RunInfo } from '../../src/server/api.js';
import { FeatureDetail } from './FeaturePage.js';
import { useApp, useLoad } from './app.js';
import { num } from './format.js';
import { href } from './routes.js';
import { LatentCard, Status } from './widgets.js';

export function Compare({ a, b, latent, other }: { a: RunInfo; b: RunInfo; latent: number; other?: number }) {
  const { source, runs } = useApp();
  const left = useLoad(() => source.feature(a.id, latent), [a.id, latent]);
  // Co-firing needs the server; a static site shows the pair it is given (from its comparison's matches page).
  const cmp = useLoad(() => (source.isStatic ? Promise.resolve(undefined) : source.compare(a.id, latent, b.id)), [a.id, latent, b.id, source.isStatic]);
  const shown = other ?? cmp.data?.matches[0]?.latent;
  const right = useLoad(() => (shown === undefined ? Promise.resolve(undefined) : source.feature(b.id, shown)), [b.id, shown]);
  const go = (na: string, nl: number, nb: string) => (location.hash = href.compare(na, nl, nb));
  return (
    <section>
      <form className="toolbar" onSubmit={(e) => e.preventDefault()}>
        <select value={a.id} onChange={(e) => go(e.target.value, 0, b.id)} aria-label="left run">
          {runs.map((r) => (
            <option key={r.id} value={r.id}>
              {r.id}
            </option>
          ))}
        </select>
        <label>
          feature{' '}
          <input
            type="number"
            className="narrow"
            min={0}
            max={a.d_sae - 1}
            defaultValue={latent}
            key={latent}
            onKeyDown={(e) => e.key === 'Enter' && go(a.id, Number(e.currentTarget.value) || 0, b.id)}
          />
        </label>
        <span className="muted">against</span>
        <select value={b.id} onChange={(e) => go(a.id, latent, e.target.value)} aria-label="right run">
          {runs.map((r) => (
            <option key={r.id} value={r.id}>
              {r.id}
            </option>
          ))}
        </select>
      </form>
      <div className="compare">
        <div className="pane" data-testid="compare-left">
          <p className="muted small">
            {a.id}: {a.model ?? 'model'} layer {a.layer}, {a.d_sae} features
          </p>
          <Status state={left} />
          {left.data && <FeatureDetail run={a} page={left.data} compact />}
        </div>
        <div className="pane" data-testid="compare-right">
          <p className="muted small">
            {b.id}: {b.model ?? 'model'} layer {b.layer}, {b.d_sae} features
          </p>
          <Status state={cmp} />
          {cmp.data && (
            <>
              <h3>Features of {b.id} firing most on these images</h3>
              {cmp.data.images === 0 && <p className="muted">None of these images were recorded in {b.id}.</p>}
              <div className="cards">
                {cmp.data.matches.map((m) => (
                  <div key={m.latent} className={m.latent === shown ? 'chosen' : ''} onClickCapture={(e) => (e.preventDefault(), (location.hash = href.compare(a.id, latent, b.id, m.latent)))}>
                    <LatentCard run={b} refd={m} detail={`on ${m.count}/${cmp.data!.images} images, mean ${num(m.value)}`} />
                  </div>
                ))}
              </div>
            </>
          )}
          <Status state={right} />
          {right.data && <FeatureDetail run={b} page={right.data} compact />}
        </div>
      </div>
    </section>
  );
}
