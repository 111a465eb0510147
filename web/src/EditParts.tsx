/**
 * What the two edit demos share: choosing an image (the run's or an upload), the features firing on the chosen
 * patches with a button to edit each, a slider per edited feature, and the edit mode.
 */
import { type ChangeEvent, useState } from 'react';
import type { LatentRef, RunInfo } from '../../src/server/api.js';
import type { EditMode } from '../../src/server/edit-api.js';
import { firing, type PatchData } from './PatchView.js';
import { useApp } from './app.js';
import { num } from './format.js';
import { type DemoImage, href } from './routes.js';
import { LatentCard, Thumbs } from './widgets.js';

/** Slider range, in multiples of a feature's largest observed value. */
export const SLIDER_RANGE = 20;

/** A feature being edited: its slider value, in multiples of its largest observed value. */
export interface Chosen {
  latent: number;
  value: number;
}

/** Step through the run's images, jump to one, or upload one. */
export function ImageChooser({ run, head, image, latent }: { run: RunInfo; head: number; image: DemoImage; latent?: number }) {
  const { source } = useApp();
  const [status, setStatus] = useState('');
  const go = (img: DemoImage) => (location.hash = href.edit(run.id, head, img, latent));
  const upload = async (e: ChangeEvent<HTMLInputElement>) => {
    const file = e.target.files?.[0];
    if (!file) return;
    setStatus('uploading…');
    try {
      const { upload } = await source.upload(file);
      setStatus('');
      go({ upload });
    } catch (err) {
      setStatus((err as Error).message);
    }
  };
  const index = typeof image === 'number' ? image : undefined;
  return (
    <div className="toolbar">
      {index !== undefined && index > 0 && <a href={href.edit(run.id, head, index - 1, latent)}>← image {index - 1}</a>}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          const i = Number(new FormData(e.currentTarget).get('image'));
          if (Number.isInteger(i) && i >= 0 && i < run.n_images) go(i);
        }}
      >
        <label>
          image <input key={String(index)} name="image" className="narrow" type="number" min={0} max={run.n_images - 1} defaultValue={index} placeholder="upload" data-testid="image-index" />
        </label>
      </form>
      {index !== undefined && index + 1 < run.n_images && <a href={href.edit(run.id, head, index + 1, latent)}>image {index + 1} →</a>}
      {index !== undefined && <a href={href.image(run.id, index)}>image page</a>}
      <label className="upload">
        or upload an image <input type="file" accept="image/png,image/jpeg,image/webp,image/gif,image/tiff,image/avif" onChange={upload} data-testid="upload" />
      </label>
      <span className="muted small" role="status">
        {status}
      </span>
    </div>
  );
}

/** The features firing on the chosen patches (the whole image if none), each with a button to edit it. */
export function FiringList({
  run,
  page,
  cells,
  chosen,
  onChoose,
  onHover,
}: {
  run: RunInfo;
  page: PatchData;
  cells: number[];
  chosen: Chosen[];
  onChoose: (latent: number) => void;
  onHover: (latent: number | null) => void;
}) {
  const all = cells.length ? cells : page.patches.map((_, p) => p);
  const listed = firing(page, all);
  return (
    <>
      <h3 data-testid="selection-title">{cells.length ? `Firing on ${cells.length} selected patch${cells.length > 1 ? 'es' : ''}` : 'Firing on the image'}</h3>
      {listed.length === 0 && <p className="muted">No feature fires here.</p>}
      <div className="cards">
        {listed.map((l) => (
          <div key={l.ref.latent} className={`edit-card${chosen.some((c) => c.latent === l.ref.latent) ? ' chosen' : ''}`}>
            <LatentCard run={run} refd={l.ref} detail={`max ${num(l.max)}${l.count ? ` on ${l.count}` : ''}`} onHover={onHover} />
            <button type="button" className="ghost" onClick={() => onChoose(l.ref.latent)} disabled={chosen.some((c) => c.latent === l.ref.latent)} data-testid="choose-latent">
              edit
            </button>
          </div>
        ))}
      </div>
    </>
  );
}

/** A slider from -SLIDER_RANGE to +SLIDER_RANGE times a feature's largest observed value. */
export function LatentSlider({
  run,
  latent,
  refd,
  value,
  onChange,
  onRemove,
}: {
  run: RunInfo;
  latent: number;
  refd?: LatentRef & { max: number };
  value: number;
  onChange: (v: number) => void;
  onRemove: () => void;
}) {
  return (
    <div className="latent-slider" data-testid="latent-slider">
      <div className="row">
        <a href={href.feature(run.id, latent)} className="latent-title">
          <b>#{latent}</b> {refd ? refd.name : <span className="muted">does not fire on this image</span>}
        </a>
        {refd && <Thumbs run={run} latent={latent} count={Math.min(3, refd.n_exemplars)} size={32} />}
        <button type="button" className="ghost" onClick={onRemove} aria-label={`stop editing feature ${latent}`}>
          ×
        </button>
      </div>
      <div className="row">
        <input
          type="range"
          min={-SLIDER_RANGE}
          max={SLIDER_RANGE}
          step={0.5}
          value={value}
          onChange={(e) => onChange(Number(e.target.value))}
          aria-label={`value of feature ${latent}`}
          data-testid="edit-slider"
        />
        <span className="num" data-testid="slider-value">
          {value > 0 ? '+' : ''}
          {value}× max{refd ? ` = ${num(value * refd.max)}` : ''}
        </span>
      </div>
    </div>
  );
}

/** `add` moves a feature by the slider's value (0 leaves it), `set` replaces it (0 removes it). */
export function ModeSelect({ mode, onChange }: { mode: EditMode; onChange: (m: EditMode) => void }) {
  return (
    <label>
      the sliders{' '}
      <select value={mode} onChange={(e) => onChange(e.target.value as EditMode)} data-testid="edit-mode">
        <option value="add">add to the feature</option>
        <option value="set">set the feature to</option>
      </select>
    </label>
  );
}
