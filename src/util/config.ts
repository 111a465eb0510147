/**
 * Typed configs with defaults and one-line docs. Every config in vitsae is declared once as a `ConfigSpec`;
 * its TypeScript type, its defaults, its CLI flags and its `--help` text are all derived from that one object.
 */

export type FieldSpec =
  | { kind: 'number'; default: number; doc: string; int?: boolean; min?: number; max?: number }
  | { kind: 'string'; default: string; doc: string }
  | { kind: 'boolean'; default: boolean; doc: string }
  | { kind: 'enum'; choices: readonly string[]; default: string; doc: string }
  | { kind: 'numbers'; default: number[]; doc: string }
  | { kind: 'strings'; default: string[]; doc: string };

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

/** The config object type a spec describes. */
export type ConfigOf<S extends ConfigSpec> = { -readonly [K in keyof S]: ValueOf<S[K]> };

export class ConfigError extends Error {}

/** Kebab-case flag for a camelCase or snake_case field name: `expansionFactor` -> `--expansion-factor`. */
export function flagOf(field: string): string {
  return '--' + field.replace(/_/g, '-').replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

export function defaultsOf<S extends ConfigSpec>(spec: S): ConfigOf<S> {
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(spec)) out[k] = Array.isArray(f.default) ? [...f.default] : f.default;
  return out as ConfigOf<S>;
}

function parseValue(field: string, f: FieldSpec, raw: string): unknown {
  const where = `${flagOf(field)} ${JSON.stringify(raw)}`;
  switch (f.kind) {
    case 'number': {
      const v = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(v)) throw new ConfigError(`${where}: expected a number`);
      if (f.int && !Number.isInteger(v)) throw new ConfigError(`${where}: expected an integer`);
      if (f.min !== undefined && v < f.min) throw new ConfigError(`${where}: must be >= ${f.min}`);
      if (f.max !== undefined && v > f.max) throw new ConfigError(`${where}: must be <= ${f.max}`);
      return v;
    }
    case 'boolean':
      if (['true', '1', 'yes'].includes(raw)) return true;
      if (['false', '0', 'no'].includes(raw)) return false;
      throw new ConfigError(`${where}: expected true or false`);
    case 'enum':
      if (!f.choices.includes(raw)) throw new ConfigError(`${where}: expected one of ${f.choices.join(', ')}`);
      return raw;
    case 'numbers':
      return raw.split(',').map((s) => parseValue(field, { kind: 'number', default: 0, doc: '' }, s));
    case 'strings':
      return raw.split(',');
    case 'string':
      return raw;
  }
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
  /** Fields the user set explicitly, so that `--resume` can tell overrides from defaults. */
  given: Set<keyof S>;
  positionals: string[];
  /** Repeated flags of `strings`/`numbers` fields accumulate; this records which ones appeared at all. */
  help: boolean;
}

/**
 * Parses `--flag value`, `--flag=value`, `--flag` (booleans) and `--no-flag`. A `strings` or `numbers` field may be
 * repeated (`--layer -2 --layer 10`) or comma separated.
 */
export function parseArgs<S extends ConfigSpec>(spec: S, argv: string[]): ParsedArgs<S> {
  const config = defaultsOf(spec) as Record<string, unknown>;
  const given = new Set<keyof S>();
  const positionals: string[] = [];
  const byFlag = new Map<string, string>();
  for (const k of Object.keys(spec)) byFlag.set(flagOf(k), k);
  let help = false;
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
    let field = byFlag.get(flag);
    if (!field && flag.startsWith('--no-')) {
      const pos = byFlag.get('--' + flag.slice(5));
      if (pos && spec[pos].kind === 'boolean' && raw === undefined) {
        field = pos;
        raw = 'false';
        flag = '--' + flag.slice(5);
      }
    }
    if (!field) {
      const known = [...byFlag.keys()];
      const near = known.filter((k) => k.includes(flag.slice(2, 6)));
      throw new ConfigError(`unknown option ${flag}${near.length ? ` (did you mean ${near.slice(0, 3).join(', ')}?)` : ''}`);
    }
    const f = spec[field];
    if (raw === undefined) {
      if (f.kind === 'boolean') raw = 'true';
      else {
        if (i + 1 >= argv.length) throw new ConfigError(`${flag} needs a value (${f.doc})`);
        raw = argv[++i];
      }
    }
    const v = parseValue(field, f, raw);
    if ((f.kind === 'strings' || f.kind === 'numbers') && given.has(field)) {
      config[field] = [...(config[field] as unknown[]), ...(v as unknown[])];
    } else config[field] = v;
    given.add(field);
  }
  return { config: config as ConfigOf<S>, given, positionals, help };
}

/** `--help` text: one line per field with its flag, value kind, default and doc. */
export function helpText(spec: ConfigSpec): string {
  const rows = Object.entries(spec).map(([k, f]) => {
    const kind =
      f.kind === 'boolean' ? '' : f.kind === 'enum' ? ` ${f.choices.join('|')}` : f.kind === 'numbers' ? ' N,N' : f.kind === 'strings' ? ' S,S' : f.kind === 'number' ? ' N' : ' S';
    const def = Array.isArray(f.default) ? f.default.join(',') : String(f.default);
    return [`  ${flagOf(k)}${kind}`, `${f.doc}${def === '' ? '' : ` (default: ${def})`}`];
  });
  const w = Math.min(36, Math.max(...rows.map((r) => r[0].length)) + 2);
  return rows.map(([a, b]) => (a.length >= w ? `${a}\n${' '.repeat(w)}${b}` : a.padEnd(w) + b)).join('\n');
}
