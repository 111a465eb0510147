/**
 * The `vitsae` command line: one subcommand per step of the pipeline, each generated from its typed config.
 */
import { Command, commandHelp, isUserError, runCommand } from './command.js';
import { trainCommand } from './commands/train.js';
import { evalCommand } from './commands/eval.js';
import { evalConceptsCommand } from './commands/eval-concepts.js';
import { demoCommand } from './commands/demo.js';
import { shardsInfoCommand } from './commands/shards.js';
import { dataSyntheticCommand } from './commands/data-synthetic.js';
import { dataConceptWorldCommand } from './commands/data-concept-world.js';
import { convertCommand } from './commands/convert.js';
import { layersCommand } from './commands/layers.js';
import { recordCommand, shardsMergeCommand } from './commands/record.js';
import { probeTrainCommand } from './commands/probe.js';
import { editCommand } from './commands/edit.js';
import { evalEditsCommand } from './commands/eval-edits.js';
import { visualsCommand } from './commands/visuals.js';
import { serveCommand } from './commands/serve.js';
import { siteCommand } from './commands/site.js';
import { compareCommand } from './commands/compare.js';
import { exportCommand } from './commands/export.js';

export const commands: Command[] = [
  demoCommand,
  dataConceptWorldCommand,
  dataSyntheticCommand,
  layersCommand,
  recordCommand,
  shardsInfoCommand,
  shardsMergeCommand,
  trainCommand,
  evalCommand,
  evalConceptsCommand,
  probeTrainCommand,
  editCommand,
  evalEditsCommand,
  convertCommand,
  visualsCommand,
  serveCommand,
  siteCommand,
  compareCommand,
  exportCommand,
];

function overview(): string {
  const w = Math.max(...commands.map((c) => c.name.length)) + 2;
  return `vitsae: interpretable and testable vision features with sparse autoencoders

Usage: vitsae COMMAND [options]      (vitsae COMMAND --help for its options)

Commands:
${commands.map((c) => `  ${c.name.padEnd(w)}${c.summary}`).join('\n')}
`;
}

/** Finds the command whose name words start argv (longest match first, so `eval concepts` beats `eval`). */
function findCommand(argv: string[]): { cmd: Command; rest: string[] } | null {
  const sorted = [...commands].sort((a, b) => b.name.split(' ').length - a.name.split(' ').length);
  for (const cmd of sorted) {
    const words = cmd.name.split(' ');
    if (words.every((w, i) => argv[i] === w)) return { cmd, rest: argv.slice(words.length) };
  }
  return null;
}

export async function main(argv: string[]): Promise<number> {
  if (!argv.length || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    process.stdout.write(overview());
    return 0;
  }
  const found = findCommand(argv);
  if (!found) {
    process.stderr.write(`vitsae: unknown command "${argv.slice(0, 2).join(' ')}"\n\n${overview()}`);
    return 2;
  }
  try {
    await runCommand(found.cmd, found.rest);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (isUserError(e)) {
      process.stderr.write(`vitsae ${found.cmd.name}: ${(e as Error).message}\n`);
      return 1;
    }
    process.stderr.write(`vitsae ${found.cmd.name}: internal error: ${(e as Error).stack ?? e}\n`);
    return 1;
  }
}

export { commandHelp };
