import { defineCommand, UsageError, UserError } from '../command.js';
import { deviceSpec } from '../../backbone/device.js';
import { createServer, openRuns } from '../../server/app.js';
import { readComparison, withComparedRuns, withRunIds } from '../../server/comparison.js';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);

export const serveCommand = defineCommand({
  name: 'serve',
  summary: 'browse and name features: the web app over one or more runs (vitsae visuals writes them)',
  usage: `
vitsae serve --run DIR [--run DIR2] [--compare CMP] [--port N] [--host 127.0.0.1]

Serves the feature browser at http://127.0.0.1:PORT/: the feature list (sort, filter, jump by id), feature pages
(exemplars with the firing patches highlighted, histogram, co-firing features, an editable name and notes), image
pages (click or drag over patches to see what fires there) and, with two runs, a side-by-side comparison. Names and
notes are saved in DIR/annotations.sqlite. Binds to 127.0.0.1 unless --host says otherwise.

A run whose run.json lists heads (vitsae head train --run DIR) also gets the edit demos: change features on
chosen patches of an image (the run's, or an upload) and see the task head's classes or mask before and after.

With --compare CMP (a directory written by vitsae compare, or its compare.json) the browser also lists the
latents the two compared runs share and those only one has (the matches page); the two runs are served even
when no --run names them.`,
  spec: {
    run: { kind: 'strings', default: [], doc: 'run directory with a run.json (repeat for a comparison)' },
    port: { kind: 'number', int: true, min: 0, max: 65535, default: 8770, doc: 'TCP port (0 picks a free one)' },
    host: { kind: 'string', default: '127.0.0.1', doc: 'address to bind; anything but loopback exposes editing to the network' },
    log: { kind: 'boolean', default: false, doc: 'log every request' },
    compare: { kind: 'string', default: '', doc: 'a vitsae compare output (DIR or DIR/compare.json) to show; serves its two runs too' },
    ...deviceSpec,
  },
  async run(c) {
    if (!c.run.length && !c.compare) throw new UsageError('--run DIR is required (a run directory written by vitsae visuals)');
    const loopback = LOOPBACK.has(c.host);
    const comparison = c.compare ? await readComparison(c.compare) : null;
    const runs = await openRuns(withComparedRuns(c.run, comparison));
    const app = await createServer({ runs, ...(comparison ? { comparison: withRunIds(comparison, runs) } : {}), loopbackOnly: loopback, logger: c.log, device: c.device });
    const address = await app.listen({ port: c.port, host: c.host }).catch((e: NodeJS.ErrnoException) => {
      throw new UserError(e.code === 'EADDRINUSE' ? `port ${c.port} is in use; pick another with --port` : `cannot listen on ${c.host}:${c.port}: ${e.message}`);
    });
    if (!loopback) process.stderr.write(`warning: serving on ${c.host}, reachable from the network, with editing enabled\n`);
    process.stderr.write(`vitsae serve: ${address.replace('[::1]', 'localhost')}/  (Ctrl-C to stop)\n`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        void app.close().then(resolve);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
  },
});
