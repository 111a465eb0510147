/**
 * The types of config specs (src/util/config.ts), apart from their parsing and with no imports, so that the web
 * app can derive types from a spec too (the feature list's query, src/server/api.ts).
 */

/**
 * One option. A field without a default is absent (undefined) unless given. `required`: it must be given (the CLI
 * refuses to run without it, a usage error, and `--help` marks it; a JSON Schema lists it as required).
 * `aliases`: old names of a renamed option, still accepted as flags and config-file keys with a note that the
 * name changed. A string's `maxLength` (in characters) and `pattern` (a regular expression) bound its value.
 */
export type FieldSpec = (
  | { kind: 'number'; default?: number; doc: string; int?: boolean; min?: number; max?: number }
  | { kind: 'string'; default?: string; doc: string; maxLength?: number; pattern?: string }
  | { kind: 'boolean'; default?: boolean; doc: string }
  | { kind: 'enum'; choices: readonly string[]; default?: string; doc: string }
  | { kind: 'numbers'; default?: number[]; doc: string }
  | { kind: 'strings'; default?: string[]; doc: string }
) & { required?: boolean; aliases?: readonly string[] };

export type ConfigSpec = Record<string, FieldSpec>;

type ValueOf<F extends FieldSpec> = F extends { kind: 'number' }
  ? number
  : F extends { kind: 'boolean' }
    ? boolean
    : F extends { kind: 'enum'; choices: readonly (infer C)[] }
      ? C
      : F extends { kind: 'numbers' }
        ? number[]
        : F extends { kind: 'strings' }
          ? string[]
          : string;

/** The fields that may be absent: no default and not required. */
type OptionalKeys<S extends ConfigSpec> = { [K in keyof S]: S[K] extends { default: unknown } | { required: true } ? never : K }[keyof S];

/** The config object type a spec describes. */
export type ConfigOf<S extends ConfigSpec> = { -readonly [K in Exclude<keyof S, OptionalKeys<S>>]: ValueOf<S[K]> } & { -readonly [K in OptionalKeys<S>]?: ValueOf<S[K]> };
