/** How numbers and names are written in the app. */

/** A fraction as a percentage with two significant digits (tiny ones as "<0.01%"). */
export function pct(f: number): string {
  if (f === 0) return '0%';
  if (f < 1e-4) return '<0.01%';
  return `${(f * 100).toPrecision(2)}%`;
}

export function num(v: number): string {
  return v === 0 ? '0' : Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3);
}

export function featureTitle(latent: number, name: string): string {
  return name ? `#${latent} ${name}` : `#${latent}`;
}
