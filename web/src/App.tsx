/** The feature browser: loads the runs, then routes by the URL hash. */
import { useEffect, useState } from 'react';
import { openSource } from './data.js';
import { Compare } from './Compare.js';
import { EditDemo } from './EditDemo.js';
import { CompareRuns } from './CompareRuns.js';
import { FeatureList } from './FeatureList.js';
import { FeaturePage } from './FeaturePage.js';
import { ImagePage } from './ImagePage.js';
import { AppContext, type AppData } from './app.js';
import { href, parseRoute } from './routes.js';

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
  const route = parseRoute(hash);
  const run = (id: string) => app.runs.find((r) => r.id === id);
  switch (route.page) {
    case 'home':
      if (!app.runs.length) break;
      location.replace(href.list(app.runs[0].id));
      return null;
    case 'matches':
      return <CompareRuns params={route.params} />;
    case 'compare': {
      const [a, b] = [run(route.a), run(route.b)];
      if (a && b && route.latent < a.d_sae) return <Compare a={a} b={b} latent={route.latent} other={route.other} />;
      break;
    }
    case 'list': {
      const r = run(route.run);
      if (r) return <FeatureList run={r} params={route.params} />;
      break;
    }
    case 'feature': {
      const r = run(route.run);
      if (r && route.latent < r.d_sae) return <FeaturePage run={r} latent={route.latent} />;
      break;
    }
    case 'image': {
      const r = run(route.run);
      if (r && route.image < r.n_images) return <ImagePage run={r} image={route.image} />;
      break;
    }
    case 'edit': {
      const r = run(route.run);
      if (r && (route.latent === undefined || route.latent < r.d_sae)) return <EditDemo run={r} head={route.head} image={route.image} latent={route.latent} />;
      break;
    }
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
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        {app && (
          <AppContext.Provider value={app}>
            <Routes app={app} hash={hash} />
          </AppContext.Provider>
        )}
      </main>
    </>
  );
}
