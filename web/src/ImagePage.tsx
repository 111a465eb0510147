/**
 * An image page: the image with its patch grid; click or drag over patches to list the features firing there
 * (strongest first); hovering a feature paints its value on every patch of the image.
 */
import { useState } from 'react';
import type { RunInfo } from '../../src/server/api.js';
import { useApp, useLoad } from './app.js';
import { EditLinks } from './EditLinks.js';
import { num } from './format.js';
import { cellsOf, firing, PatchView, type Rect } from './PatchView.js';
import { href } from './routes.js';
import { LatentCard, Status } from './widgets.js';

export function ImagePage({ run, image }: { run: RunInfo; image: number }) {
  const { source } = useApp();
  const state = useLoad(() => source.image(run.id, image), [run.id, image]);
  const [selected, setSelected] = useState<Rect | null>(null);
  const [hover, setHover] = useState<number | null>(null);
  const page = state.data;
  const cells = page ? cellsOf(selected, page.grid[1]) : [];
  const listed = page ? (cells.length ? firing(page, cells) : page.top.map((t) => ({ ref: page.latents[t.latent], max: t.value, count: 0 }))) : [];
  return (
    <section>
      <nav className="crumbs">
        <a href={href.list(run.id)}>features</a>
        {/* A static site has pages for exemplar images only, so there is no stepping through all images. */}
        {!source.isStatic && image > 0 && <a href={href.image(run.id, image - 1)}>← image {image - 1}</a>}
        {!source.isStatic && image + 1 < run.n_images && <a href={href.image(run.id, image + 1)}>image {image + 1} →</a>}
        <EditLinks run={run} image={image} />
      </nav>
      <Status state={state} />
      {page && (
        <div className="image-page">
          <div>
            <h2>
              Image {page.image}{' '}
              <span className="muted small">
                {page.key}
                {page.label !== null ? ` · class ${page.label}` : ''}
              </span>
            </h2>
            <PatchView run={run} page={page} selected={selected} onSelect={setSelected} hover={hover} />
            <p className="muted small">
              Click or drag over patches to see what fires there; hover a feature to see where it fires.{' '}
              {selected && (
                <button type="button" className="ghost" onClick={() => setSelected(null)}>
                  clear selection
                </button>
              )}
            </p>
          </div>
          <div className="side">
            <h3 data-testid="selection-title">{cells.length ? `Firing on ${cells.length} selected patch${cells.length > 1 ? 'es' : ''}` : 'Strongest on the whole image'}</h3>
            {listed.length === 0 && <p className="muted">No feature fires here.</p>}
            <div className="cards">
              {listed.map((l) => (
                <LatentCard key={l.ref.latent} run={run} refd={l.ref} detail={`max ${num(l.max)}${l.count ? ` on ${l.count}` : ''}`} onHover={setHover} />
              ))}
            </div>
          </div>
        </div>
      )}
    </section>
  );
}
