/**
 * The feature browser's HTTP server (fastify): a JSON API over one or more runs, their exemplar thumbnails, and
 * the single-page app built by Vite. Every parameter is validated by a schema (a bad one gets 400 with a message),
 * files are served only from the runs' thumbnail directories and the app directory, and each response carries a
 * Server-Timing header with the time spent in the server.
 */
import fastifyStatic from '@fastify/static';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { existsSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../util/errors.js';
import type { RunComparison } from './api.js';
import { NotFound, RunData, type Urls } from './run-data.js';
import { THUMBS_DIR } from '../analysis/visuals-index.js';
import type { Device } from '../backbone/device.js';
import { DEFAULT_EDIT_LIMITS, type EditLimits, editRoutes } from './edit-routes.js';
import { lenientNumber, numberAsString } from './strict-params.js';
import { AnnotationBody, CompareQuerystring, FeatureQuerystring, ImageParams, LatentParams, RunParam } from './params.js';
import type { SpecTypeProvider } from './schema.js';

/** The built web app: dist/app next to dist/src (see web/vite.config.ts). */
export const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../app');

export const serverUrls: Urls = {
  files: (run) => `/files/${run}/`,
  view: (run, image) => `/api/runs/${run}/images/${image}/view.png`,
};

/** URL-safe, distinct ids from the run directories' names. */
export function runIds(dirs: string[]): string[] {
  const seen = new Set<string>();
  return dirs.map((d) => {
    const base =
      path
        .basename(path.resolve(d))
        .toLowerCase()
        .replace(/[^a-z0-9._-]+/g, '-')
        .replace(/^[.-]+/, '') || 'run';
    let id = base;
    for (let i = 2; seen.has(id); i++) id = `${base}-${i}`;
    seen.add(id);
    return id;
  });
}

export interface ServerOptions {
  runs: RunData[];
  /** The built app; default WEB_DIR. */
  webDir?: string;
  /** Refuse requests whose Host is not a loopback name (against DNS rebinding) — for servers bound to loopback. */
  loopbackOnly?: boolean;
  logger?: boolean;
  /** Limits of the edit demos' uploads and queue; default DEFAULT_EDIT_LIMITS. */
  editLimits?: Partial<EditLimits>;
  /** A `vitsae compare` output over two of the runs (src/server/comparison.ts), answered at /api/comparison. */
  comparison?: RunComparison;
  /** Where the edit demos run their models (default cpu). */
  device?: Device;
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** With the u flag a surrogate pair is one code point, so only unpaired surrogates match. */
const LONE_SURROGATE = /\p{Cs}/u;

export async function createServer(opts: ServerOptions): Promise<FastifyInstance> {
  const app = Fastify({ logger: opts.logger ?? false, ajv: { customOptions: { coerceTypes: 'array', removeAdditional: false } } }).withTypeProvider<SpecTypeProvider>();
  const runs = new Map(opts.runs.map((r) => [r.id, r]));
  const runOf = (id: string): RunData => {
    const r = runs.get(id);
    if (!r) throw new NotFound(`no run "${id}"; this server has ${[...runs.keys()].join(', ')}`);
    return r;
  };

  const started = new WeakMap<object, bigint>();
  app.addHook('onRequest', async (req, reply) => {
    started.set(req, process.hrtime.bigint());
    if (opts.loopbackOnly) {
      const host = (req.headers.host ?? '').replace(/:\d+$/, '').toLowerCase();
      if (!LOOPBACK_HOSTS.has(host)) return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: `host ${host} is not served; open the app at http://127.0.0.1` });
    }
  });
  app.addHook('preValidation', async (req, reply) => {
    const schema = req.routeOptions.schema;
    const bad = lenientNumber(schema, req.params, req.query) ?? numberAsString(schema?.body as Parameters<typeof numberAsString>[0], req.body);
    if (bad) return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: bad });
  });
  app.addHook('onSend', async (req, reply) => {
    const t = started.get(req);
    if (t !== undefined) reply.header('server-timing', `app;dur=${(Number(process.hrtime.bigint() - t) / 1e6).toFixed(2)}`);
    if (req.url.startsWith('/api/') && !reply.hasHeader('cache-control')) reply.header('cache-control', 'no-cache');
  });
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const fail = (code: number, message: string) => reply.code(code).send({ statusCode: code, error: STATUS_CODES[code], message });
    if (err.validation) {
      const allowed = err.validation.map((v) => (v.params as { allowedValues?: unknown[] }).allowedValues).find(Boolean);
      return fail(400, err.message + (allowed ? ` (${allowed.join(', ')})` : ''));
    }
    if (err instanceof NotFound) return fail(404, err.message);
    // A user error here is missing or damaged run data (a moved dataset, an interrupted index): say which.
    if (err instanceof UserError) return fail(503, err.message);
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return fail(err.statusCode, err.message);
    req.log.error(err);
    return fail(500, err.message);
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `nothing at ${req.method} ${req.url.split('?')[0]}` }));

  app.get('/api/runs', async () => ({ runs: opts.runs.map((r) => r.info()) }));

  app.get('/api/comparison', async () => {
    if (!opts.comparison) throw new NotFound('this server has no comparison of runs: write one with vitsae compare RUN_A RUN_B --out DIR and serve it with --compare DIR');
    return opts.comparison;
  });

  app.get('/api/runs/:run/features', { schema: { params: RunParam, querystring: FeatureQuerystring } }, async (req) => runOf(req.params.run).list(req.query));

  app.get('/api/runs/:run/features/:latent', { schema: { params: LatentParams } }, async (req) => runOf(req.params.run).feature(req.params.latent));

  app.put('/api/runs/:run/features/:latent/annotation', { schema: { params: LatentParams, body: AnnotationBody } }, async (req, reply) => {
    const run = runOf(req.params.run);
    if (!run.editable) return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: `run ${run.id} is read-only` });
    // A lone UTF-16 surrogate cannot be stored as valid UTF-8: SQLite would keep bytes other readers reject.
    for (const field of ['name', 'notes'] as const)
      if (LONE_SURROGATE.test(req.body[field])) return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: `${field} holds a lone UTF-16 surrogate (not valid Unicode text)` });
    return run.annotate(req.params.latent, req.body.name, req.body.notes);
  });

  app.get('/api/runs/:run/images/:image', { schema: { params: ImageParams } }, async (req) => runOf(req.params.run).image(req.params.image));

  app.get('/api/runs/:run/images/:image/view.png', { schema: { params: ImageParams } }, async (req, reply) => {
    const run = runOf(req.params.run);
    const etag = `"${run.id}-${req.params.image}-${Date.parse(run.index.meta.created).toString(36)}"`;
    reply.header('etag', etag).header('cache-control', 'public, max-age=86400');
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    const png = await run.view(req.params.image);
    return reply.type('image/png').send(png);
  });

  app.get('/api/runs/:run/compare/:latent', { schema: { params: LatentParams, querystring: CompareQuerystring } }, async (req) =>
    runOf(req.params.run).compare(req.params.latent, runOf(req.query.other)),
  );

  await app.register(editRoutes, { ...DEFAULT_EDIT_LIMITS, ...opts.editLimits, runs: opts.runs, runOf, device: opts.device });

  // Thumbnails: each run's thumbs/ directory and nothing else of it; @fastify/static refuses paths that leave it.
  for (const r of opts.runs) {
    await app.register(fastifyStatic, {
      root: path.join(r.run.visuals, THUMBS_DIR),
      prefix: `/files/${r.id}/${THUMBS_DIR}/`,
      decorateReply: false,
      index: false,
      maxAge: 86_400_000,
    });
  }
  const web = opts.webDir ?? WEB_DIR;
  if (existsSync(path.join(web, 'index.html'))) {
    await app.register(fastifyStatic, {
      root: web,
      prefix: '/',
      decorateReply: false,
      // Vite names built assets by content hash, so they never change; index.html must always be revalidated.
      setHeaders: (res, file) => res.setHeader('cache-control', file.includes(`${path.sep}assets${path.sep}`) ? 'public, max-age=31536000, immutable' : 'no-cache'),
    });
  } else {
    app.get('/', async (_req, reply) => reply.code(503).type('text/plain').send(`the web app is not built (${web} has no index.html); run npm run build`));
  }
  app.addHook('onClose', async () => {
    for (const r of opts.runs) await r.close();
  });
  return app;
}

/** Opens the runs in `dirs` for serving. */
export async function openRuns(dirs: string[], opts: { readonly?: boolean } = {}): Promise<RunData[]> {
  const ids = runIds(dirs);
  return Promise.all(dirs.map((d, i) => RunData.open(d, ids[i], serverUrls, opts)));
}
