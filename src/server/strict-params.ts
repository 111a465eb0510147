/**
 * Strict numbers. The schemas coerce path and query strings to numbers, and coercion is lenient: " " and "%09"
 * become 0, "Infinity" passes an integer check, "1e309" becomes Infinity; in a JSON body it turns the string " "
 * into the number 0 as well. These checks run before the schema: in URLs they accept only numbers written plainly
 * (decimal digits, an optional sign, fraction and exponent for non-integers) whose value is finite (a safe integer
 * where the schema wants an integer); in a body, a number must be a JSON number.
 */

interface PropertySchema {
  type?: string;
  const?: unknown;
  anyOf?: PropertySchema[];
  items?: PropertySchema;
  properties?: Record<string, PropertySchema>;
}

const INTEGER = /^-?(0|[1-9][0-9]*)$/;
const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$/;

/** The first path or query value that a numeric field of the schema would read leniently, as an error message; null if none. */
export function lenientNumber(schema: { params?: unknown; querystring?: unknown } | undefined, params: unknown, query: unknown): string | null {
  for (const [part, values] of [
    ['params', params],
    ['querystring', query],
  ] as const) {
    const properties = (schema?.[part] as { properties?: Record<string, PropertySchema> } | undefined)?.properties;
    if (!properties || typeof values !== 'object' || values === null) continue;
    for (const [key, raw] of Object.entries(values as Record<string, unknown>)) {
      const type = properties[key]?.type;
      if ((type !== 'integer' && type !== 'number') || typeof raw !== 'string') continue;
      const v = Number(raw);
      const ok = type === 'integer' ? INTEGER.test(raw) && Number.isSafeInteger(v) : NUMBER.test(raw) && Number.isFinite(v);
      if (!ok) return `${key} must be ${type === 'integer' ? 'an integer in decimal digits' : 'a finite decimal number'}, got ${JSON.stringify(raw)}`;
    }
  }
  return null;
}

/** The first string in a JSON body where the schema wants only a number, as an error message; null if none. */
export function numberAsString(schema: PropertySchema | undefined, value: unknown, where = 'body'): string | null {
  if (!schema) return null;
  const branches = schema.anyOf ?? [schema];
  if (typeof value === 'string') {
    const numeric = branches.some((b) => b.type === 'integer' || b.type === 'number');
    const text = branches.some((b) => b.type === 'string' || typeof b.const === 'string');
    return numeric && !text ? `${where} must be a JSON number, got the string ${JSON.stringify(value)}` : null;
  }
  for (const b of branches) {
    const inner: [PropertySchema | undefined, unknown, string][] =
      Array.isArray(value) && b.items
        ? value.map((v, i) => [b.items, v, `${where}[${i}]`])
        : value !== null && typeof value === 'object' && !Array.isArray(value) && b.properties
          ? Object.entries(value).map(([k, v]) => [b.properties![k], v, `${where}.${k}`])
          : [];
    for (const [s, v, w] of inner) {
      const bad = numberAsString(s, v, w);
      if (bad) return bad;
    }
  }
  return null;
}
