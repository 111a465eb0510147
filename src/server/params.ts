/**
 * The API's flat option sets: path parameters, query strings and the annotation body, each declared once as a
 * config spec, and the JSON Schemas Fastify validates them with before a handler runs (jsonSchemaOf).
 */
import type { ConfigSpec } from '../util/config.js';
import { featureQuerySpec } from './api.js';
import { jsonSchemaOf } from './schema.js';

/** An upload's id: the SHA-256 of its bytes, in hex. */
export const SHA256_PATTERN = '^[0-9a-f]{64}$';

const run = { kind: 'string', required: true, maxLength: 100, doc: 'the run id (its directory name, made URL-safe)' } as const;

const runParamSpec = { run } as const satisfies ConfigSpec;

const latentParamSpec = { run, latent: { kind: 'number', int: true, min: 0, required: true, doc: "a latent of the run's SAE" } } as const satisfies ConfigSpec;

const imageParamSpec = { run, image: { kind: 'number', int: true, min: 0, required: true, doc: "an image of the run's visuals" } } as const satisfies ConfigSpec;

const uploadParamSpec = { run, upload: { kind: 'string', required: true, pattern: SHA256_PATTERN, doc: 'an upload the server holds' } } as const satisfies ConfigSpec;

/** `GET /api/runs/:run/compare/:latent`'s query string. */
const compareQuerySpec = { other: { kind: 'string', required: true, maxLength: 100, doc: 'the id of the run to compare with' } } as const satisfies ConfigSpec;

/** `PUT /api/runs/:run/features/:latent/annotation`'s body; both empty deletes the annotation. */
const annotationSpec = {
  name: { kind: 'string', required: true, maxLength: 200, doc: "the feature's name" },
  notes: { kind: 'string', maxLength: 20_000, default: '', doc: 'notes on the feature' },
} as const satisfies ConfigSpec;

export const RunParam = jsonSchemaOf(runParamSpec);
export const LatentParams = jsonSchemaOf(latentParamSpec);
export const ImageParams = jsonSchemaOf(imageParamSpec);
export const UploadParams = jsonSchemaOf(uploadParamSpec);
export const FeatureQuerystring = jsonSchemaOf(featureQuerySpec);
export const CompareQuerystring = jsonSchemaOf(compareQuerySpec);
export const AnnotationBody = jsonSchemaOf(annotationSpec);
