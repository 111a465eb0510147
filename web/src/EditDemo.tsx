/** An edit demo page: the run's probe by id, the image chooser, then the demo of the probe's task. */
import type { RunInfo } from '../../src/server/api.js';
import { EditClassify } from './EditClassify.js';
import { ImageChooser } from './EditParts.js';
import { EditSegment } from './EditSegment.js';
import { useProbes } from './edits.js';
import { num } from './format.js';
import { type DemoImage, href } from './routes.js';

export function EditDemo({ run, probe: id, image = 0, latent }: { run: RunInfo; probe: number; image?: DemoImage; latent?: number }) {
  const probes = useProbes(run);
  const probe = probes?.find((p) => p.id === id);
  const Demo = probe?.task === 'segment' ? EditSegment : EditClassify;
  return (
    <section>
      <nav className="crumbs">
        <a href={href.list(run.id)}>features</a>
        {latent !== undefined && <a href={href.feature(run.id, latent)}>feature #{latent}</a>}
        {(probes ?? [])
          .filter((p) => p.id !== id)
          .map((p) => (
            <a key={p.id} href={href.edit(run.id, p.id, image, latent)}>
              {p.task === 'classify' ? 'classification' : 'segmentation'} demo
            </a>
          ))}
      </nav>
      {!probe && <p className="muted">{probes ? `This run has no probe ${id}.` : 'Loading the task heads…'}</p>}
      {probe && (
        <>
          <h2 data-testid="demo-title">
            {probe.task === 'classify' ? 'Classification' : 'Segmentation'} edits{' '}
            <span className="muted small">
              head {probe.name} on {probe.features} · {probe.classes.length} classes · held-out accuracy {num(probe.accuracy)}
              {probe.miou !== undefined ? ` · mIoU ${num(probe.miou)}` : ''}
            </span>
          </h2>
          <ImageChooser run={run} probe={id} image={image} latent={latent} />
          {/* A new probe starts a new demo; a new image keeps the chosen features and sliders. */}
          <Demo key={id} run={run} probe={probe} image={image} latent={latent} />
        </>
      )}
    </section>
  );
}
