/** An edit demo page: the run's head by id, the image chooser, then the demo of the head's task. */
import type { RunInfo } from '../../src/server/api.js';
import { EditClassify } from './EditClassify.js';
import { ImageChooser } from './EditParts.js';
import { EditSegment } from './EditSegment.js';
import { useHeads } from './edits.js';
import { num } from './format.js';
import { type DemoImage, href } from './routes.js';

export function EditDemo({ run, head: id, image = 0, latent }: { run: RunInfo; head: number; image?: DemoImage; latent?: number }) {
  const heads = useHeads(run);
  const head = heads?.find((p) => p.id === id);
  const Demo = head?.task === 'segment' ? EditSegment : EditClassify;
  return (
    <section>
      <nav className="crumbs">
        <a href={href.list(run.id)}>features</a>
        {latent !== undefined && <a href={href.feature(run.id, latent)}>feature #{latent}</a>}
        {(heads ?? [])
          .filter((p) => p.id !== id)
          .map((p) => (
            <a key={p.id} href={href.edit(run.id, p.id, image, latent)}>
              {p.task === 'classify' ? 'classification' : 'segmentation'} demo
            </a>
          ))}
      </nav>
      {!head && <p className="muted">{heads ? `This run has no head ${id}.` : 'Loading the task heads…'}</p>}
      {head && (
        <>
          <h2 data-testid="demo-title">
            {head.task === 'classify' ? 'Classification' : 'Segmentation'} edits{' '}
            <span className="muted small">
              head {head.name} on {head.features} · {head.classes.length} classes · held-out accuracy {num(head.accuracy)}
              {head.miou !== undefined ? ` · mIoU ${num(head.miou)}` : ''}
            </span>
          </h2>
          <ImageChooser run={run} head={id} image={image} latent={latent} />
          {/* A new head starts a new demo; a new image keeps the chosen features and sliders. */}
          <Demo key={id} run={run} head={head} image={image} latent={latent} />
        </>
      )}
    </section>
  );
}
