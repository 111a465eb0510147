/**
 * The segmentation demo: choose a feature of an image, suppress or boost it on every patch or on chosen ones, and
 * see the frozen head's mask before and after side by side, with the patches whose class changed outlined.
 */
import { useState } from 'react';
import type { RunInfo } from '../../src/server/api.js';
import type { EditMode, EditSpec, HeadSummary } from '../../src/server/edit-api.js';
import { FiringList, LatentSlider, ModeSelect } from './EditParts.js';
import { cellsOf, PatchView, type Rect } from './PatchView.js';
import { imageView } from './data.js';
import { useEditSession } from './edits.js';
import type { DemoImage } from './routes.js';

const MASK = 300;
/** Class colours (Tableau 10); a class named "background" is left clear. */
const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
const colourOf = (classes: string[], k: number) => (classes[k] === 'background' ? 'transparent' : PALETTE[k % PALETTE.length]);

/** The image with each patch tinted by its predicted class; changed patches outlined. */
function MaskView({ run, view, labels, classes, changed, title, testid }: { run: RunInfo; view: string; labels: number[]; classes: string[]; changed: Set<number>; title: string; testid: string }) {
  const [gh, gw] = run.grid;
  const [h, w] = run.image_size;
  return (
    <figure className="mask" data-testid={testid}>
      <figcaption>{title}</figcaption>
      <div className="patch-view" style={{ width: MASK, height: Math.round((MASK * h) / w) }}>
        <img src={view} width={MASK} height={Math.round((MASK * h) / w)} alt="" draggable={false} />
        <div className="patch-grid" style={{ gridTemplateColumns: `repeat(${gw}, 1fr)`, gridTemplateRows: `repeat(${gh}, 1fr)` }}>
          {labels.map((k, p) => (
            <div key={p} className={`mask-cell${changed.has(p) ? ' changed' : ''}`} style={{ background: colourOf(classes, k) }} title={`patch ${p}: ${classes[k]}`} data-class={k} />
          ))}
        </div>
      </div>
    </figure>
  );
}

export function EditSegment({ run, head, image, latent }: { run: RunInfo; head: HeadSummary; image: DemoImage; latent?: number }) {
  const [selected, setSelected] = useState<Rect | null>(null);
  const [hover, setHover] = useState<number | null>(null);
  const [chosen, setChosen] = useState<number | undefined>(latent);
  const [value, setValue] = useState(0);
  const [mode, setMode] = useState<EditMode>('add');
  const cells = cellsOf(selected, run.grid[1]);
  const edits: EditSpec[] = chosen === undefined || (mode === 'add' && value === 0) ? [] : [{ latent: chosen, patches: cells.length ? cells : 'all', value, mode, relative: true }];
  const session = useEditSession(run, head.id, image, edits);
  const { base, edited, page } = session;
  const refs = { ...base?.latents, ...edited?.latents };
  const changed = new Set(edited?.task === 'segment' ? edited.changed : []);
  const present = base?.task === 'segment' && edited?.task === 'segment' ? [...new Set([...base.before, ...edited.after])].sort((a, b) => a - b) : [];
  return (
    <div className="image-page">
      <div>
        {page && <PatchView run={run} page={page} selected={selected} onSelect={setSelected} hover={hover} />}
        <p className="muted small">
          {cells.length ? `Editing ${cells.length} selected patch${cells.length > 1 ? 'es' : ''}. ` : 'Editing every patch; click or drag to edit only some. '}
          {selected && (
            <button type="button" className="ghost" onClick={() => setSelected(null)}>
              edit every patch
            </button>
          )}
        </p>
        <div className="edit-controls">
          <ModeSelect mode={mode} onChange={setMode} />
          {chosen === undefined ? (
            <p className="muted">Choose a feature to suppress (slide left) or boost (slide right).</p>
          ) : (
            <LatentSlider run={run} latent={chosen} refd={refs[chosen]} value={value} onChange={setValue} onRemove={() => setChosen(undefined)} />
          )}
        </div>
      </div>
      <div className="side">
        {session.error && (
          <p className="error" role="alert">
            {session.error}
          </p>
        )}
        {base?.task === 'segment' && edited?.task === 'segment' && (
          <>
            <div className={`masks${session.pending ? ' pending' : ''}`}>
              <MaskView run={run} view={imageView(run.id, image)} labels={base.before} classes={base.classes} changed={changed} title="Before" testid="mask-before" />
              <MaskView run={run} view={imageView(run.id, image)} labels={edited.after} classes={base.classes} changed={changed} title="After" testid="mask-after" />
            </div>
            <p data-testid="changed-count">
              {changed.size} of {base.before.length} patches changed class
            </p>
            <p className="legend small">
              {present.map((k) => (
                <span key={k}>
                  <i style={{ background: colourOf(base.classes, k) }} /> {base.classes[k]}
                </span>
              ))}
            </p>
          </>
        )}
        {page && (
          <FiringList
            run={run}
            page={page}
            cells={cells}
            chosen={chosen === undefined ? [] : [{ latent: chosen, value }]}
            onChoose={(j) => {
              setChosen(j);
              setValue(0);
            }}
            onHover={setHover}
          />
        )}
      </div>
    </div>
  );
}
