/**
 * Preloaded into a benchmarked `vitsae` process (`node --import dist/bench/rss.js bin/vitsae.js ...`): prints its
 * peak resident memory on exit, so whole processes are measured as a user runs them. Worker threads load it too;
 * only the main thread reports.
 */
import { isMainThread } from 'node:worker_threads';

if (isMainThread) {
  process.on('exit', () => {
    process.stderr.write(`\nvitsae-bench peak-rss-kb ${process.resourceUsage().maxRSS}\n`);
  });
}
