import { defineCommand, UsageError } from '../command.js';
import { writeSite } from '../../server/site.js';
import { readComparison, withComparedRuns } from '../../server/comparison.js';

export const siteCommand = defineCommand({
  name: 'site',
  summary: 'write the feature browser of a run as a static site (no server, no editing) to publish its features',
  usage: `
vitsae site --run DIR [--run DIR2] [--compare CMP] --out SITE

Writes SITE/index.html with every feature page, the image pages of all exemplar images, thumbnails and the names
and notes from DIR/annotations.sqlite, as plain files: serve SITE with any web server (browsers do not let
pages read files from file:// URLs), e.g. python3 -m http.server -d SITE. With --compare CMP (a vitsae compare
output) the site also has its matches page, and the two compared runs.`,
  spec: {
    run: { kind: 'strings', default: [], doc: 'run directory with a run.json (repeatable)' },
    out: { kind: 'string', required: true, default: '', doc: 'directory for the site' },
    progress: { kind: 'boolean', default: true, doc: 'show progress bars on stderr' },
    compare: { kind: 'string', default: '', doc: 'a vitsae compare output (DIR or DIR/compare.json) to include; its two runs are included too' },
  },
  async run(c) {
    if (!c.run.length && !c.compare) throw new UsageError('--run DIR is required (a run directory written by vitsae visuals)');
    const comparison = c.compare ? await readComparison(c.compare) : undefined;
    await writeSite(withComparedRuns(c.run, comparison ?? null), c.out, { showProgress: c.progress, comparison });
    process.stderr.write(`site written to ${c.out}; serve it with any web server, e.g. python3 -m http.server -d ${c.out}\n`);
  },
});
