/**
 * Every route of the app, built and parsed in this one place. Routes live in the URL hash, so that the same build
 * works on a server and as static files.
 */

/** A demo's image: one of the run's (its index) or an upload (its id). */
export type DemoImage = number | { upload: string };

const UPLOAD_PREFIX = 'upload-';

const withParams = (route: string, params?: Record<string, string>) => (params && Object.keys(params).length ? `${route}?${new URLSearchParams(params)}` : route);

export const href = {
  list: (run: string, params?: Record<string, string>) => withParams(`#/r/${run}`, params),
  feature: (run: string, latent: number) => `#/r/${run}/f/${latent}`,
  image: (run: string, image: number) => `#/r/${run}/i/${image}`,
  compare: (a: string, latent: number, b: string, other?: number) => `#/compare/${a}/${latent}/${b}${other === undefined ? '' : `/${other}`}`,
  /** The matched and unmatched latents of the comparison the server or site was given. */
  matches: (params?: Record<string, string>) => withParams('#/matches', params),
  /** The demo of `head`, on an image, with a latent chosen; the image is an index or `upload-<id>` in the route. */
  edit: (run: string, head: number, image?: DemoImage, latent?: number) => {
    const img = image === undefined ? '' : `/${typeof image === 'number' ? image : UPLOAD_PREFIX + image.upload}`;
    return withParams(`#/r/${run}/edit/${head}${img}`, latent === undefined ? undefined : { latent: String(latent) });
  },
};

/** The image named by a route part, if it names one. */
function parseDemoImage(part: string | undefined): DemoImage | undefined {
  if (part === undefined) return undefined;
  if (/^\d+$/.test(part)) return Number(part);
  return part.startsWith(UPLOAD_PREFIX) && /^[0-9a-f]{64}$/.test(part.slice(UPLOAD_PREFIX.length)) ? { upload: part.slice(UPLOAD_PREFIX.length) } : undefined;
}

/** What a hash names; numbers are syntactically valid here, their ranges are the caller's to check. */
export type Route =
  | { page: 'home' }
  | { page: 'matches'; params: URLSearchParams }
  | { page: 'compare'; a: string; latent: number; b: string; other?: number }
  | { page: 'list'; run: string; params: URLSearchParams }
  | { page: 'feature'; run: string; latent: number }
  | { page: 'image'; run: string; image: number }
  | { page: 'edit'; run: string; head: number; image?: DemoImage; latent?: number }
  | { page: 'unknown' };

export function parseRoute(hash: string): Route {
  const [route, query = ''] = hash.replace(/^#/, '').split('?');
  const parts = route.split('/').filter(Boolean);
  const params = new URLSearchParams(query);
  const int = (s: string | null | undefined) => (s !== undefined && s !== null && /^\d+$/.test(s) ? Number(s) : undefined);
  const n = int(parts[3]);
  if (parts.length === 0) return { page: 'home' };
  if (parts[0] === 'matches') return { page: 'matches', params };
  if (parts[0] === 'compare') {
    const latent = int(parts[2]);
    if (parts[1] && parts[3] && latent !== undefined) return { page: 'compare', a: parts[1], latent, b: parts[3], other: int(parts[4]) };
  }
  if (parts[0] === 'r' && parts[1]) {
    const run = parts[1];
    if (parts.length === 2) return { page: 'list', run, params };
    if (parts[2] === 'f' && n !== undefined) return { page: 'feature', run, latent: n };
    if (parts[2] === 'i' && n !== undefined) return { page: 'image', run, image: n };
    if (parts[2] === 'edit' && n !== undefined) {
      const image = parseDemoImage(parts[4]);
      const latent = params.has('latent') ? int(params.get('latent')) : undefined;
      if ((parts[4] === undefined || image !== undefined) && (latent !== undefined || !params.has('latent'))) return { page: 'edit', run, head: n, image, latent };
    }
  }
  return { page: 'unknown' };
}
