/** The feature browser: loads the runs, then routes by the URL hash. */
import { useEffect, useState } from 'react';
import { openSource } from './data.js';
import { Compare } from './Compare.js';
import { EditDemo } from './EditDemo.js';
import { parseDemoImage } from './edits.js';
import { CompareRuns } from './CompareRuns.js';
import { FeatureList } from './FeatureList.js';
import { FeaturePage } from './FeaturePage.js';
import { ImagePage } from './ImagePage.js';
import { AppContext, AppData, href } from './ui.js';

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function Routes({ app, hash }: { app: AppData; hash: string }) {
  const [route, query = ''] = hash.replace(/^#/, '').split('?');
  const parts = route.split('/').filter(Boolean);
  const run = (id: string) => app.runs.find((r) => r.id === id);
  const int = (s: string | undefined) => (s !== undefined && /^\d+$/.test(s) ? Number(s) : undefined);
  if (parts[0] === 'matches') return <CompareRuns params={new URLSearchParams(query)} />;
  if (parts[0] === 'compare') {
    const [a, b, latent] = [run(parts[1]), run(parts[3]), int(parts[2])];
    if (a && b && latent !== undefined && latent < a.d_sae) return <Compare a={a} b={b} latent={latent} other={int(parts[4])} />;
  }
  if (parts[0] === 'r') {
    const r = run(parts[1]);
    const n = int(parts[3]);
    if (r && parts.length === 2) return <FeatureList run={r} params={new URLSearchParams(query)} />;
    if (r && parts[2] === 'f' && n !== undefined && n < r.d_sae) return <FeaturePage run={r} latent={n} />;
    if (r && parts[2] === 'i' && n !== undefined && n < r.n_images) return <ImagePage run={r} image={n} />;
    if (r && parts[2] === 'edit' && n !== undefined) {
      const image = parseDemoImage(parts[4]);
      const latent = int(new URLSearchParams(query).get('latent') ?? undefined);
      if ((parts[4] === undefined || image !== undefined) && (latent === undefined || latent < r.d_sae)) return <EditDemo run={r} probe={n} image={image} latent={latent} />;
    }
  }
  if (parts.length === 0 && app.runs.length) {
    location.replace(href.list(app.runs[0].id));
    return null;
  }
  return (
    <p className="error" role="alert">
      Nothing here ({hash}). <a href={app.runs.length ? href.list(app.runs[0].id) : '#/'}>Back to the features</a>
    </p>
  );
}

export function App() {
  const [app, setApp] = useState<AppData | null>(null);
  const [error, setError] = useState('');
  const hash = useHash();
  useEffect(() => {
    openSource().then(setApp, (e: Error) => setError(e.message));
  }, []);
  const current = app?.runs.find((r) => hash.startsWith(`#/r/${r.id}`) || hash.startsWith(`#/compare/${r.id}/`)) ?? app?.runs[0];
  return (
    <>
      <header>
        <a className="brand" href="#/">
          vitsae
        </a>
        {app && current && (
          <nav>
            {app.runs.map((r) => (
              <a key={r.id} href={href.list(r.id)} className={r === current ? 'active' : ''} title={`${r.model ?? ''} layer ${r.layer} · ${r.dataset} · ${r.d_sae} features`}>
                {r.id}
              </a>
            ))}
            {app.runs.length > 1 && !app.source.isStatic && <a href={href.compare(current.id, 0, app.runs.find((r) => r !== current)!.id)}>compare</a>}
            {app.runs.length > 1 && (
              <a href={href.matches()} className={hash.startsWith('#/matches') ? 'active' : ''}>
                matches
              </a>
            )}
          </nav>
        )}
        {current && (
          <span className="muted small run-meta">
            {current.model ?? 'model'} · layer {current.layer} · {current.dataset} · {current.d_sae} features · {current.n_images} images
          </span>
        )}
      </header>
      <main>
        {error && <p className="error" role="alert">{error}</p>}
        {app && (
          <AppContext.Provider value={app}>
            <Routes app={app} hash={hash} />
          </AppContext.Provider>
        )}
      </main>
    </>
  );
}
