/**
 * The `vitsae` command line: one subcommand per step of the pipeline, each generated from its typed config.
 */
import { readFileSync } from 'node:fs';
import { Command, commandHelp, exitCodeOf, isUserError, runCommand } from './command.js';
import { closest } from '../util/config.js';
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

Usage: vitsae COMMAND [options]      (vitsae COMMAND --help for its options; vitsae --version)
       vitsae COMMAND --config FILE.json [options]      (options from a JSON object; flags override it)
Exit codes: 0 done, 1 failed, 2 usage error (unknown command or option, bad value, missing required option)

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

/** The installed package's version, from its package.json (dist/src/cli -> the package root). */
export function version(): string {
  return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** "unknown command": names the commands closest to what was typed (one word or two, e.g. `eval concept`). */
function unknownCommand(argv: string[]): string {
  const typed = argv.filter((a) => !a.startsWith('-')).slice(0, 2);
  const names = commands.map((c) => c.name);
  const near = [...new Set([...closest(typed.join(' '), names), ...closest(typed[0] ?? '', names)])].slice(0, 3);
  return `vitsae: unknown command "${typed.join(' ') || argv[0]}"${near.length ? ` (did you mean ${near.map((n) => `"vitsae ${n}"`).join(' or ')}?)` : ''}; vitsae --help lists the commands\n`;
}

/** Runs the CLI; returns the exit code: 0 done, 1 failed, 2 usage error (unknown command or option, bad value). */
export async function main(argv: string[]): Promise<number> {
  if (!argv.length || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    process.stdout.write(overview());
    return 0;
  }
  if (argv[0] === '--version' || argv[0] === '-v') {
    process.stdout.write(`vitsae ${version()}\n`);
    return 0;
  }
  const found = findCommand(argv);
  // `eval concept` finds `eval`; a stray word after a command that has subcommands is a mistyped subcommand.
  const word = found?.rest[0];
  const mistypedSub = found && !found.cmd.positionals && word && !word.startsWith('-') && commands.some((c) => c.name.startsWith(found.cmd.name + ' '));
  if (!found || mistypedSub) {
    process.stderr.write(unknownCommand(argv));
    return 2;
  }
  try {
    await runCommand(found.cmd, found.rest);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (isUserError(e)) {
      const code = exitCodeOf(e);
      process.stderr.write(`vitsae ${found.cmd.name}: ${(e as Error).message}${code === 2 ? `; vitsae ${found.cmd.name} --help lists its options` : ''}\n`);
      return code;
    }
    process.stderr.write(`vitsae ${found.cmd.name}: internal error: ${(e as Error).stack ?? e}\n`);
    return 1;
  }
}

export { commandHelp };
