/**
 * The classification demo: choose patches of an image, see the features firing there, move a slider per chosen
 * feature (edited on the chosen patches, or everywhere when none are chosen), and watch the frozen head's five most
 * probable classes before and after the edit.
 */
import { useState } from 'react';
import type { RunInfo } from '../../src/server/api.js';
import type { ClassProb, EditMode, EditSpec, HeadSummary } from '../../src/server/edit-api.js';
import { type Chosen, FiringList, LatentSlider, ModeSelect } from './EditParts.js';
import { cellsOf, PatchView, type Rect } from './PatchView.js';
import { useEditSession } from './edits.js';
import type { DemoImage } from './routes.js';

/** The classes of a prediction with their probabilities as bars. */
function ClassBars({ title, classes, testid, changed }: { title: string; classes: ClassProb[]; testid: string; changed?: boolean }) {
  return (
    <div className="class-bars" data-testid={testid}>
      <h4>
        {title} {changed && <span className="changed-note">top class changed</span>}
      </h4>
      {classes.map((c) => (
        <div key={c.class} className="class-bar">
          <span className="class-name">{c.name}</span>
          <span className="bar" style={{ width: `${Math.max(1, c.prob * 160)}px` }} />
          <span className="num">{(c.prob * 100).toFixed(1)}%</span>
        </div>
      ))}
    </div>
  );
}

export function EditClassify({ run, head, image, latent }: { run: RunInfo; head: HeadSummary; image: DemoImage; latent?: number }) {
  const [selected, setSelected] = useState<Rect | null>(null);
  const [hover, setHover] = useState<number | null>(null);
  const [chosen, setChosen] = useState<Chosen[]>(latent === undefined ? [] : [{ latent, value: 0 }]);
  const [mode, setMode] = useState<EditMode>('add');
  const cells = cellsOf(selected, run.grid[1]);
  // Adding 0 changes nothing, so such sliders are left out; setting to 0 removes the feature.
  const edits: EditSpec[] = chosen.filter((c) => mode === 'set' || c.value !== 0).map((c) => ({ latent: c.latent, patches: cells.length ? cells : 'all', value: c.value, mode, relative: true }));
  const session = useEditSession(run, head.id, image, edits);
  const { base, edited, page } = session;
  const refs = { ...base?.latents, ...edited?.latents };
  const setValue = (j: number, value: number) => setChosen((cs) => cs.map((c) => (c.latent === j ? { ...c, value } : c)));
  return (
    <div className="image-page">
      <div>
        {page && <PatchView run={run} page={page} selected={selected} onSelect={setSelected} hover={hover} />}
        <p className="muted small">
          Click or drag over patches to edit only there; without a selection the edits apply to every patch.{' '}
          {selected && (
            <button type="button" className="ghost" onClick={() => setSelected(null)}>
              clear selection
            </button>
          )}
        </p>
        <div className="edit-controls">
          <ModeSelect mode={mode} onChange={setMode} />
          {chosen.length === 0 && <p className="muted">Choose a feature below to edit it.</p>}
          {chosen.map((c) => (
            <LatentSlider
              key={c.latent}
              run={run}
              latent={c.latent}
              refd={refs[c.latent]}
              value={c.value}
              onChange={(v) => setValue(c.latent, v)}
              onRemove={() => setChosen((cs) => cs.filter((x) => x.latent !== c.latent))}
            />
          ))}
        </div>
      </div>
      <div className="side">
        {session.error && (
          <p className="error" role="alert">
            {session.error}
          </p>
        )}
        {base?.task === 'classify' && edited?.task === 'classify' && (
          <div className={`predictions${session.pending ? ' pending' : ''}`}>
            <ClassBars title="Before" classes={base.before} testid="prediction-before" />
            <ClassBars
              title={`After ${edits.length ? `${edits.length} edit${edits.length > 1 ? 's' : ''}` : '(no edits)'}`}
              classes={edited.after}
              testid="prediction-after"
              changed={edited.changed}
            />
          </div>
        )}
        {page && <FiringList run={run} page={page} cells={cells} chosen={chosen} onChoose={(j) => setChosen((cs) => [...cs, { latent: j, value: 0 }])} onHover={setHover} />}
      </div>
    </div>
  );
}
