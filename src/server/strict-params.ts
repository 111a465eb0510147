/**
 * Strict numbers in URLs. The schemas coerce path and query strings to numbers, and coercion is lenient: " " and
 * "%09" become 0, "Infinity" passes an integer check, "1e309" becomes Infinity. This check runs before the schema
 * and accepts only numbers written plainly (decimal digits, an optional sign, fraction and exponent for
 * non-integers) whose value is finite (a safe integer where the schema wants an integer).
 */

interface PropertySchema {
  type?: string;
}

const INTEGER = /^-?(0|[1-9][0-9]*)$/;
const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$/;

/** The first path or query value that a numeric field of the schema would read leniently, as an error message; null if none. */
export function lenientNumber(schema: { params?: unknown; querystring?: unknown } | undefined, params: unknown, query: unknown): string | null {
  for (const [part, values] of [['params', params], ['querystring', query]] as const) {
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
