/**
 * Typed configs with defaults and one-line docs. Every config in vitsae is declared once as a `ConfigSpec`
 * (src/util/spec.ts); its TypeScript type, its defaults, its CLI flags and its `--help` text are all derived from
 * that one object, and for the server's parameters its JSON Schema (src/server/schema.ts).
 */

import { readFileSync } from 'node:fs';
import type { ConfigOf, ConfigSpec, FieldSpec } from './spec.js';

export type { ConfigOf, ConfigSpec, FieldSpec } from './spec.js';

export class ConfigError extends Error {}

/** A mistake in how a command was called (unknown or missing option, bad value): the CLI exits 2, not 1. */
export class UsageError extends ConfigError {}

/** The option every command takes: values from a JSON file, which flags given beside it override. */
export const CONFIG_FLAG = '--config';

/** Edit distance (insert, delete, substitute; a swap of neighbours counts 1), for "did you mean". */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The candidates closest to a mistyped word: within about a third of its length in edits, or starting with it
 * (an abbreviation), best first, at most three. Empty when nothing is close, so a wild guess gets no suggestion.
 */
export function closest(word: string, candidates: Iterable<string>): string[] {
  const limit = Math.max(1, Math.floor(word.length / 3));
  return [...new Set(candidates)]
    .map((c) => ({ c, d: c.startsWith(word) && word.length >= 3 ? 0.5 : distance(word, c) }))
    .filter((x) => x.d <= limit)
    .sort((x, y) => x.d - y.d || x.c.localeCompare(y.c))
    .slice(0, 3)
    .map((x) => x.c);
}

/** " (did you mean --a or --b?)" or "". */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  const near = closest(word, candidates);
  return near.length ? ` (did you mean ${near.join(' or ')}?)` : '';
}

/** Kebab-case flag for a camelCase or snake_case field name: `expansionFactor` -> `--expansion-factor`. */
export function flagOf(field: string): string {
  return '--' + field.replace(/_/g, '-').replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

export function defaultsOf<S extends ConfigSpec>(spec: S): ConfigOf<S> {
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(spec)) if (f.default !== undefined) out[k] = Array.isArray(f.default) ? [...f.default] : f.default;
  return out as ConfigOf<S>;
}

function parseValue(field: string, f: FieldSpec, raw: string): unknown {
  const where = `${flagOf(field)} ${JSON.stringify(raw)}`;
  switch (f.kind) {
    case 'number': {
      const v = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(v)) throw new UsageError(`${where}: expected a number`);
      if (f.int && !Number.isInteger(v)) throw new UsageError(`${where}: expected an integer`);
      if (f.min !== undefined && v < f.min) throw new UsageError(`${where}: must be >= ${f.min}`);
      if (f.max !== undefined && v > f.max) throw new UsageError(`${where}: must be <= ${f.max}`);
      return v;
    }
    case 'boolean':
      if (['true', '1', 'yes'].includes(raw)) return true;
      if (['false', '0', 'no'].includes(raw)) return false;
      throw new UsageError(`${where}: expected true or false`);
    case 'enum':
      if (!f.choices.includes(raw)) throw new UsageError(`${where}: expected one of ${f.choices.join(', ')}${didYouMean(raw, f.choices)}`);
      return raw;
    case 'numbers':
      return raw.split(',').map((s) => parseValue(field, { kind: 'number', default: 0, doc: '' }, s));
    case 'strings':
      return raw.split(',');
    case 'string':
      if (f.maxLength !== undefined && [...raw].length > f.maxLength) throw new UsageError(`${where}: longer than ${f.maxLength} characters`);
      if (f.pattern !== undefined && !new RegExp(f.pattern).test(raw)) throw new UsageError(`${where}: must match ${f.pattern}`);
      return raw;
  }
}

/**
 * A value from a config file, through the same checks as a flag's: JSON numbers and booleans are taken as their
 * flag text, lists as arrays (or one comma-separated string), so `"layer": -2` and `"layer": "-2"` agree.
 */
function parseFileValue(field: string, f: FieldSpec, v: unknown, source: string): unknown {
  const scalar = (x: unknown) => {
    if (typeof x !== 'string' && typeof x !== 'number' && typeof x !== 'boolean')
      throw new UsageError(
        `${source}: "${field}" has the value ${JSON.stringify(x)}; expected ${f.kind === 'numbers' || f.kind === 'strings' ? 'a list or ' : ''}a ${f.kind === 'boolean' ? 'boolean' : f.kind === 'number' || f.kind === 'numbers' ? 'number' : 'string'} (${f.doc})`,
      );
    return String(x);
  };
  try {
    if (Array.isArray(v) && (f.kind === 'numbers' || f.kind === 'strings')) return v.flatMap((x) => parseValue(field, f, scalar(x)) as unknown[]);
    return parseValue(field, f, scalar(v));
  } catch (e) {
    if (e instanceof UsageError && !e.message.startsWith(source)) throw new UsageError(`${source}: ${e.message}`);
    throw e;
  }
}

/** Flags of the fields' old names (FieldSpec.aliases), each to its field. */
function aliasFlags(spec: ConfigSpec): Map<string, string> {
  return new Map(Object.entries(spec).flatMap(([k, f]) => (f.aliases ?? []).map((a): [string, string] => [flagOf(a), k])));
}

/**
 * The fields a JSON config file sets. Keys are field names in any spelling (`expansionFactor`, `expansion-factor`);
 * an old name adds a note to `notes`.
 */
function readConfigFile(spec: ConfigSpec, file: string, notes: Set<string>): [string, unknown][] {
  let obj: unknown;
  try {
    obj = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message;
    throw new UsageError(`${CONFIG_FLAG} ${file}: ${why} (expected a JSON object of options, e.g. {"lr": 0.0004, "k": 32})`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new UsageError(`${CONFIG_FLAG} ${file}: expected a JSON object of options, e.g. {"lr": 0.0004, "k": 32}`);
  const byFlag = new Map(Object.keys(spec).map((k) => [flagOf(k), k]));
  const aliases = aliasFlags(spec);
  return Object.entries(obj).map(([key, v]) => {
    const flag = flagOf(key.replace(/^-+/, ''));
    const field = byFlag.get(flag) ?? aliases.get(flag);
    if (field && !byFlag.has(flag)) notes.add(renamed(key, field));
    if (!field) throw new UsageError(`${file}: unknown option "${key}"${didYouMean(flag, byFlag.keys())}`);
    return [field, parseFileValue(field, spec[field], v, file)];
  });
}

/** Checks a value of a loaded config (for example from config.json) against its spec. */
export function validateConfig<S extends ConfigSpec>(spec: S, obj: Record<string, unknown>, source: string): ConfigOf<S> {
  const out = defaultsOf(spec) as Record<string, unknown>;
  for (const [k, v] of Object.entries(obj)) {
    const f = spec[k];
    if (!f) continue; // unknown keys are kept by callers that need them; the typed config ignores them
    const ok =
      (f.kind === 'number' && typeof v === 'number' && Number.isFinite(v)) ||
      (f.kind === 'boolean' && typeof v === 'boolean') ||
      (f.kind === 'string' && typeof v === 'string') ||
      (f.kind === 'enum' && typeof v === 'string' && f.choices.includes(v)) ||
      (f.kind === 'numbers' && Array.isArray(v) && v.every((x) => typeof x === 'number')) ||
      (f.kind === 'strings' && Array.isArray(v) && v.every((x) => typeof x === 'string'));
    if (!ok) throw new ConfigError(`${source}: field "${k}" has an invalid value ${JSON.stringify(v)} (${f.doc})`);
    out[k] = v;
  }
  return out as ConfigOf<S>;
}

export interface ParsedArgs<S extends ConfigSpec> {
  config: ConfigOf<S>;
  /** Fields the user set explicitly (by flag or --config file), so that `--resume` can tell overrides from defaults. */
  given: Set<keyof S>;
  positionals: string[];
  /** `--help` was given (required options are then not checked). */
  help: boolean;
  /** One line per old option name used (FieldSpec.aliases), saying its new name. */
  notes: string[];
}

function renamed(old: string, field: string): string {
  return `${old} is now ${flagOf(field)}`;
}

/**
 * Parses `--flag value`, `--flag=value`, `--flag` (booleans) and `--no-flag`. A `strings` or `numbers` field may be
 * repeated (`--layer -2 --layer 10`) or comma separated. `--config FILE` (JSON) sets fields first, wherever it
 * stands; flags override it. Throws a UsageError for an unknown option (with the nearest ones), a bad value or a
 * missing required option (unless --help).
 */
export function parseArgs<S extends ConfigSpec>(spec: S, argv: string[]): ParsedArgs<S> {
  const config = defaultsOf(spec) as Record<string, unknown>;
  const given = new Set<keyof S>();
  const fromFlags = new Set<string>();
  const positionals: string[] = [];
  const byFlag = new Map<string, string>();
  for (const k of Object.keys(spec)) byFlag.set(flagOf(k), k);
  const aliases = aliasFlags(spec);
  const notes = new Set<string>();
  let help = false;
  const flags: [string, string, string | undefined][] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    if (!arg.startsWith('--') || arg === '--') {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    let flag = eq >= 0 ? arg.slice(0, eq) : arg;
    let raw: string | undefined = eq >= 0 ? arg.slice(eq + 1) : undefined;
    if (flag === CONFIG_FLAG) {
      if (raw === undefined && i + 1 >= argv.length) throw new UsageError(`${CONFIG_FLAG} needs a file (a JSON object of options)`);
      for (const [field, v] of readConfigFile(spec, raw ?? argv[++i], notes)) {
        config[field] = v;
        given.add(field);
      }
      continue;
    }
    let field = byFlag.get(flag);
    if (!field && aliases.has(flag)) {
      field = aliases.get(flag)!;
      notes.add(renamed(flag, field));
    }
    if (!field && flag.startsWith('--no-')) {
      const pos = byFlag.get('--' + flag.slice(5));
      if (pos && spec[pos].kind === 'boolean' && raw === undefined) {
        field = pos;
        raw = 'false';
        flag = '--' + flag.slice(5);
      }
    }
    if (!field) throw new UsageError(`unknown option ${flag}${didYouMean(flag, [...byFlag.keys(), CONFIG_FLAG])}`);
    const f = spec[field];
    if (raw === undefined) {
      if (f.kind === 'boolean') raw = 'true';
      else {
        if (i + 1 >= argv.length) throw new UsageError(`${flag} needs a value (${f.doc})`);
        raw = argv[++i];
      }
    }
    flags.push([field, flag, raw]);
  }
  for (const [field, , raw] of flags) {
    const f = spec[field];
    const v = parseValue(field, f, raw!);
    // A repeated list flag accumulates; the first one replaces the default or the config file's value.
    if ((f.kind === 'strings' || f.kind === 'numbers') && fromFlags.has(field)) config[field] = [...(config[field] as unknown[]), ...(v as unknown[])];
    else config[field] = v;
    fromFlags.add(field);
    given.add(field);
  }
  if (!help) {
    const missing = Object.entries(spec).filter(([k, f]) => f.required && (!given.has(k) || config[k] === '' || (Array.isArray(config[k]) && !(config[k] as unknown[]).length)));
    if (missing.length) throw new UsageError(missing.map(([k, f]) => `${flagOf(k)} is required (${f.doc})`).join('; '));
  }
  return { config: config as ConfigOf<S>, given, positionals, help, notes: [...notes] };
}

/** `--help` text: one line per field with its flag, value kind, default and doc, then `extra` [flag, doc] rows. */
export function helpText(spec: ConfigSpec, extra: [string, string][] = []): string {
  const rows = Object.entries(spec).map(([k, f]) => {
    const kind = f.kind === 'boolean' ? '' : f.kind === 'enum' ? ` ${f.choices.join('|')}` : f.kind === 'numbers' ? ' N,N' : f.kind === 'strings' ? ' S,S' : f.kind === 'number' ? ' N' : ' S';
    const def = Array.isArray(f.default) ? f.default.join(',') : String(f.default ?? '');
    const notes = [f.required ? 'required' : def === '' ? '' : `default: ${def}`, ...(f.aliases ?? []).map((a) => `formerly ${flagOf(a)}`)].filter(Boolean);
    return [`  ${flagOf(k)}${kind}`, `${f.doc}${notes.length ? ` (${notes.join('; ')})` : ''}`];
  });
  rows.push(...extra.map(([flag, doc]) => [`  ${flag}`, doc]));
  const w = Math.min(36, Math.max(...rows.map((r) => r[0].length)) + 2);
  return rows.map(([a, b]) => (a.length >= w ? `${a}\n${' '.repeat(w)}${b}` : a.padEnd(w) + b)).join('\n');
}
