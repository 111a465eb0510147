/**
 * The JSON Schemas Fastify validates the API's flat option sets with (path parameters, query strings, the
 * annotation body), derived from their config specs as the CLI's flags are, and the type provider that gives
 * route handlers their types: ConfigOf for these, Static for the TypeBox schema of the nested edit body.
 */
import type { Static, TSchema } from '@fastify/type-provider-typebox';
import type { FastifyTypeProvider } from 'fastify';
import type { ConfigOf, ConfigSpec, FieldSpec } from '../util/config.js';

/** Only a type: ties a schema to the spec it was made from, for SpecTypeProvider. */
declare const SPEC: unique symbol;

interface PropertySchema {
  type: 'number' | 'integer' | 'string' | 'boolean' | 'array';
  description: string;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  maxLength?: number;
  pattern?: string;
  enum?: readonly string[];
  items?: PropertySchema;
}

export interface SpecSchema<S extends ConfigSpec> {
  type: 'object';
  properties: Record<string, PropertySchema>;
  required: string[];
  additionalProperties: false;
  readonly [SPEC]: S;
}

function propertyOf(f: FieldSpec): PropertySchema {
  const base = { description: f.doc, ...(f.default !== undefined && !f.required ? { default: f.default } : {}) };
  switch (f.kind) {
    case 'number':
      return { type: f.int ? 'integer' : 'number', ...base, ...(f.min !== undefined ? { minimum: f.min } : {}), ...(f.max !== undefined ? { maximum: f.max } : {}) };
    case 'string':
      return { type: 'string', ...base, ...(f.maxLength !== undefined ? { maxLength: f.maxLength } : {}), ...(f.pattern !== undefined ? { pattern: f.pattern } : {}) };
    case 'boolean':
      return { type: 'boolean', ...base };
    case 'enum':
      return { type: 'string', ...base, enum: f.choices };
    case 'numbers':
      return { type: 'array', ...base, items: { type: 'number', description: f.doc } };
    case 'strings':
      return { type: 'array', ...base, items: { type: 'string', description: f.doc } };
  }
}

/**
 * The JSON Schema of an object of the spec's fields: each field's kind and bounds, required fields listed as such,
 * defaults filled in by the validator (so a handler sees ConfigOf<S>), and no other properties.
 */
export function jsonSchemaOf<S extends ConfigSpec>(spec: S): SpecSchema<S> {
  return {
    type: 'object',
    properties: Object.fromEntries(Object.entries(spec).map(([k, f]) => [k, propertyOf(f)])),
    required: Object.entries(spec).flatMap(([k, f]) => (f.required ? [k] : [])),
    additionalProperties: false,
  } as Omit<SpecSchema<S>, typeof SPEC> as SpecSchema<S>;
}

/** Route types from their schemas: a spec's JSON Schema gives ConfigOf of the spec, a TypeBox schema its Static. */
export interface SpecTypeProvider extends FastifyTypeProvider {
  validator: this['schema'] extends SpecSchema<infer S> ? ConfigOf<S> : this['schema'] extends TSchema ? Static<this['schema']> : unknown;
  serializer: this['schema'] extends SpecSchema<infer S> ? ConfigOf<S> : this['schema'] extends TSchema ? Static<this['schema']> : unknown;
}
