/**
 * The JSON files vitsae writes spell keys in snake_case, as saev, SAELens and Python readers do; TypeScript
 * objects (configs generated from specs, preprocessing) use camelCase. These convert the keys of one flat object at
 * the file boundary. Reading accepts either spelling, so files written before the convention still open.
 */

const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const camel = (k: string) => k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** The object with its keys in snake_case, for writing (values are kept as they are). */
export function snakeKeys(o: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [snake(k), v]));
}

/** The object with its keys in camelCase, for reading; a key already in camelCase stays. */
export function camelKeys<T = Record<string, unknown>>(o: object): T {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [camel(k), v])) as T;
}
