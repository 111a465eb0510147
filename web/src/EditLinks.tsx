/** Links from a feature or image page to the run's edit demos (none without heads, or on a static site). */
import type { RunInfo } from '../../src/server/api.js';
import { useHeads } from './edits.js';
import { num } from './format.js';
import { href } from './routes.js';

/** The demos of one image and/or one feature. */
export function EditLinks({ run, image, latent }: { run: RunInfo; image?: number; latent?: number }) {
  const heads = useHeads(run);
  if (!heads?.length) return null;
  return (
    <span className="edit-links" data-testid="edit-links">
      {latent === undefined ? 'edit this image:' : 'edit this feature:'}
      {heads.map((p) => (
        <a key={p.id} href={href.edit(run.id, p.id, image, latent)} title={`${p.name}: ${p.classes.length} classes, held-out accuracy ${num(p.accuracy)}`}>
          {p.task === 'classify' ? 'classification' : 'segmentation'} demo
        </a>
      ))}
    </span>
  );
}
