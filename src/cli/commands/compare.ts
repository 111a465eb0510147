import * as path from 'node:path';
import { defineCommand, UserError } from '../command.js';
import type { ConfigSpec } from '../../util/config.js';
import { compareRuns, compareSpec } from '../../analysis/compare/compare.js';
import { COMPARE_FILE, REPORT_FILE } from '../../analysis/compare/format.js';

const spec = {
  out: { kind: 'string', default: '', doc: 'directory for compare.json and report.html (default: compare-A-B in the current directory)' },
  ...compareSpec,
  progress: { kind: 'boolean', default: true, doc: 'show progress bars on stderr' },
  json: { kind: 'boolean', default: false, doc: 'print compare.json on stdout' },
} as const satisfies ConfigSpec;

export const compareCommand = defineCommand({
  name: 'compare',
  positionals: true,
  summary: 'what two SAEs on the same images share and what only one has: matched latents, spectra, abstraction',
  usage: `
vitsae compare RUN_A RUN_B [--out DIR] [--threshold 0.5] [--json]

RUN_A and RUN_B are run directories (run.json, vitsae visuals --run) whose SAEs saw the same images: two models,
or two layers of one. Per run: its concept-recovery summary (RUN/concepts.json, if vitsae eval concepts --run
wrote one), the frequency spectrum of its latents and per latent its abstraction scores from its exemplars (class
purity, concept purity, spread; src/analysis/README.md). Across the runs: the correlation of every pair of
latents over the same patches (streamed in bounded memory), each latent's best match, the Hungarian assignment,
and the latents whose best match is below --threshold. Writes DIR/compare.json and DIR/report.html, a single
page with plots and exemplars that opens from file://. vitsae serve --compare DIR shows the matches in the browser.

The correlation sums need d_sae_A x d_sae_B x 8 bytes (8 GiB for two 32,768-latent SAEs) and the pass costs
2 x patches x d_sae_A x d_sae_B floating-point operations in the native sgemm (--max-images shortens it).

  vitsae compare runs/supervised runs/self-supervised --out runs/compare`,
  spec,
  async run(c, positionals) {
    if (positionals.length !== 2) throw new UserError(`expected two run directories, got ${positionals.length}: vitsae compare RUN_A RUN_B`);
    const [a, b] = positionals;
    const out = c.out || `compare-${path.basename(path.resolve(a))}-${path.basename(path.resolve(b))}`;
    const r = await compareRuns({ ...c, runs: [a, b], out, showProgress: c.progress });
    if (c.json) {
      process.stdout.write(JSON.stringify(r) + '\n');
      return;
    }
    const f = (v: number | null | undefined) => (v === null || v === undefined ? '-' : v.toFixed(3));
    const [x, y] = r.runs;
    const row = (label: string, g: (s: typeof x) => string) => `| ${label} | ${g(x)} | ${g(y)} |`;
    process.stdout.write(
      [
        `| | ${x.name} | ${y.name} |`,
        '| --- | --- | --- |',
        row('latents (firing)', (s) => `${s.d_sae} (${s.live})`),
        row('best match r, mean', (s) => f(s.best_match.mean)),
        row(`matched (r >= ${r.threshold})`, (s) => String(s.best_match.above_threshold)),
        row('unmatched', (s) => String(s.unmatched.length)),
        row('concepts: mean best F1', (s) => f(s.concepts?.mean_best_f1)),
        row('mean class purity', (s) => f(s.abstraction.mean_class_purity)),
        row('mean concept purity', (s) => f(s.abstraction.mean_concept_purity)),
        row('mean spread', (s) => f(s.abstraction.mean_spread)),
        '',
        `Hungarian assignment: ${r.assignment.pairs} pairs, mean r ${f(r.assignment.mean_r)}, ${r.assignment.above_threshold} at r >= ${r.threshold}; ${r.n_patches} patches of ${r.n_images} images`,
        `wrote ${path.join(out, COMPARE_FILE)} and ${path.join(out, REPORT_FILE)}`,
        '',
      ].join('\n'),
    );
  },
});
