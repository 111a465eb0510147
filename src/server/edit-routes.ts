/**
 * The edit demos' routes (a fastify plugin registered by createServer): a run's task heads, image uploads and
 * edits. Every upload and edit runs through one bounded queue (BoundedQueue): beyond its waiting room a request
 * gets 503 with Retry-After at once, so a burst cannot hold more images and model runs in memory than the queue
 * allows. Uploads are limited in bytes (checked from Content-Length before the body is read, and by the body
 * limit while it is) and in pixels (from the header, before decoding; see uploads.ts).
 */
import { type Static, Type } from '@fastify/type-provider-typebox';
import { EDIT_MODES } from '../edit/kinds.js';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { NotFound, type RunData } from './run-data.js';
import type { EditRequest, HeadList, Upload } from './edit-api.js';
import type { Device } from '../backbone/device.js';
import { BadRequest, RunEdits } from './edits.js';
import { RunParam, SHA256_PATTERN, UploadParams } from './params.js';
import type { SpecTypeProvider } from './schema.js';
import { BoundedQueue, QueueFull } from './queue.js';
import { checkUpload, UploadRejected, UploadStore } from './uploads.js';

export interface EditLimits {
  /** Largest upload in bytes. */
  uploadBytes: number;
  /** Largest upload in decoded pixels (width x height, read from the header). */
  uploadPixels: number;
  /** Uploads and edits computed at once. */
  editConcurrency: number;
  /** Uploads and edits waiting for a slot; more get 503. */
  editQueue: number;
}

export const DEFAULT_EDIT_LIMITS: EditLimits = { uploadBytes: 8 * 1024 * 1024, uploadPixels: 40_000_000, editConcurrency: 1, editQueue: 16 };

/** Accepted uploads kept for edits, in multiples of the largest upload. */
const STORED_UPLOADS = 8;
/** Seconds a client refused by a full queue is asked to wait. */
const RETRY_AFTER = 1;

const SHA256 = Type.String({ pattern: SHA256_PATTERN });
const Patches = Type.Array(Type.Integer({ minimum: 0 }), { maxItems: 65_536 });
const HeadId = Type.Integer({ minimum: 0 });
const EditBody = Type.Object(
  {
    // Required; optional here only because `probe` may stand for it (headOf).
    head: Type.Optional(HeadId),
    probe: Type.Optional(HeadId),
    image: Type.Union([Type.Integer({ minimum: 0 }), Type.Object({ upload: SHA256 }, { additionalProperties: false })]),
    edits: Type.Array(
      Type.Object(
        {
          latent: Type.Integer({ minimum: 0 }),
          patches: Type.Union([Patches, Type.Literal('all')]),
          // Finite and bounded: a value of 1e300 would only overflow the model to NaN.
          value: Type.Number({ minimum: -1e6, maximum: 1e6 }),
          mode: Type.Enum([...EDIT_MODES]),
          relative: Type.Optional(Type.Boolean()),
        },
        { additionalProperties: false },
      ),
      { maxItems: 256 },
    ),
    patches: Type.Optional(Type.Union([Patches, Type.Literal('all')])),
  },
  { additionalProperties: false },
);

/**
 * Compatibility: clients written before the task head was renamed from "probe" name it `probe` in edit requests
 * and list heads at /api/runs/:run/probes (answered below as { probes }).
 */
function headOf({ head, probe, ...rest }: Static<typeof EditBody>): EditRequest {
  if (head !== undefined && probe !== undefined) throw new BadRequest('body names both head and probe (its old name); send head');
  const id = head ?? probe;
  if (id === undefined) throw new BadRequest("body must have required property 'head'");
  return { head: id, ...rest };
}

export interface EditRoutesOptions extends EditLimits {
  runs: RunData[];
  /** The run with this id, or NotFound. */
  runOf: (id: string) => RunData;
  device?: Device;
}

export async function editRoutes(parent: FastifyInstance, opts: EditRoutesOptions): Promise<void> {
  const app = parent.withTypeProvider<SpecTypeProvider>();
  const edits = new Map(opts.runs.map((r) => [r, new RunEdits(r, opts.device)]));
  const editsOf = (id: string) => edits.get(opts.runOf(id))!;
  const queue = new BoundedQueue(opts.editConcurrency, opts.editQueue);
  const uploads = new UploadStore(STORED_UPLOADS * opts.uploadBytes);
  const uploadOf = (id: string) => {
    const bytes = uploads.get(id);
    if (!bytes) throw new NotFound(`upload ${id.slice(0, 12)}… is not (or no longer) on the server; upload the image again`);
    return bytes;
  };
  /** Runs `job` in the queue; a full queue answers 503 with Retry-After. */
  const queued = async <T>(reply: FastifyReply, job: () => Promise<T>): Promise<T | FastifyReply> => {
    try {
      return await queue.run(job);
    } catch (e) {
      if (!(e instanceof QueueFull)) throw e;
      return reply.code(503).header('retry-after', String(RETRY_AFTER)).send({ statusCode: 503, error: 'Service Unavailable', message: e.message });
    }
  };

  for (const type of [/^image\//, 'application/octet-stream']) app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: opts.uploadBytes }, (_req, body, done) => done(null, body));

  app.get('/api/runs/:run/heads', { schema: { params: RunParam } }, async (req): Promise<HeadList> => ({ heads: await editsOf(req.params.run).heads() }));
  // Compatibility: the list's old path and key (headOf).
  app.get('/api/runs/:run/probes', { schema: { params: RunParam } }, async (req) => ({ probes: await editsOf(req.params.run).heads() }));

  app.post(
    '/api/uploads',
    {
      bodyLimit: opts.uploadBytes,
      // Refuse a declared oversize body before reading it; the body limit stops undeclared ones while reading.
      onRequest: async (req, reply) => {
        const declared = Number(req.headers['content-length']);
        if (declared > opts.uploadBytes) return reply.code(413).send({ statusCode: 413, error: 'Payload Too Large', message: `the upload is ${declared} bytes; the limit is ${opts.uploadBytes}` });
      },
    },
    async (req, reply) => {
      if (!Buffer.isBuffer(req.body)) throw new UploadRejected(415, 'send the image file itself as the body, with its image/* content type');
      const bytes = req.body;
      return queued(reply, async (): Promise<Upload> => {
        const size = await checkUpload(bytes, opts.uploadPixels);
        return { upload: uploads.add(bytes), ...size };
      });
    },
  );

  app.get('/api/runs/:run/uploads/:upload/view.png', { schema: { params: UploadParams } }, async (req, reply) => {
    const run = opts.runOf(req.params.run);
    const bytes = uploadOf(req.params.upload);
    const png = await queued(reply, () => run.viewOf(bytes));
    if (!Buffer.isBuffer(png)) return png;
    // The same upload id is always the same image.
    return reply.type('image/png').header('cache-control', 'private, max-age=3600').send(png);
  });

  app.post('/api/runs/:run/edit', { schema: { params: RunParam, body: EditBody } }, async (req, reply) => {
    const run = editsOf(req.params.run);
    const body = headOf(req.body);
    const upload = typeof body.image === 'number' ? undefined : uploadOf(body.image.upload);
    return queued(reply, () => run.edit(body, upload));
  });

  app.addHook('onClose', async () => {
    for (const e of edits.values()) await e.close();
  });
}
