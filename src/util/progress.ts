/**
 * Progress reporting for long work: a live bar on a terminal, and on a pipe or CI log one plain line per
 * `every` seconds so logs stay readable.
 */
import cliProgress from 'cli-progress';

export interface Progress {
  /** Sets the count done and the extra fields shown after the bar (e.g. "nmse 0.05 l0 31"). */
  update(done: number, info?: string): void;
  stop(): void;
}

export function progress(label: string, total: number, opts: { enabled?: boolean; unit?: string; every?: number } = {}): Progress {
  const unit = opts.unit ?? 'items';
  if (opts.enabled === false) return { update() {}, stop() {} };
  const start = Date.now();
  const rate = (done: number) => done / Math.max(1e-3, (Date.now() - start) / 1000);
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {percentage}% | {value}/{total} | {rate} ${unit}/s | ETA {eta_formatted} | {info}`, stream: process.stderr, hideCursor: true, etaBuffer: 50 },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { rate: '0', info: '' });
    return {
      update(done, info = '') {
        bar.update(done, { rate: rate(done).toFixed(1), info });
      },
      stop() {
        bar.stop();
      },
    };
  }
  let last = 0;
  const every = (opts.every ?? 10) * 1000;
  return {
    update(done, info = '') {
      if (Date.now() - last < every && done < total) return;
      last = Date.now();
      const eta = done > 0 ? `${Math.round((total - done) / rate(done))} s` : '?';
      process.stderr.write(`${label}: ${done}/${total} (${((100 * done) / total).toFixed(1)}%), ${rate(done).toFixed(1)} ${unit}/s, ETA ${eta} ${info}\n`);
    },
    stop() {},
  };
}
