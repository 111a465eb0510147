import { CONFIG_FLAG, type ConfigSpec, type ConfigOf, parseArgs, helpText, ConfigError, UsageError, flagOf } from '../util/config.js';
import { UserError } from '../util/errors.js';

/** One `vitsae` subcommand: its options are a config spec, so flags and help come from one declaration. */
export interface Command<S extends ConfigSpec = ConfigSpec> {
  /** Words after `vitsae`, e.g. `train` or `eval concepts`. */
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Extra help: what the command does, positional arguments, an example. */
  usage?: string;
  spec: S;
  /** Whether the command takes arguments that are not options (its run checks how many); others refuse them. */
  positionals?: boolean;
  /** `argv` is the command's own arguments, for commands that re-parse them (sweeps). */
  run(config: ConfigOf<S>, positionals: string[], given: Set<keyof S>, argv: string[]): Promise<void>;
}

/** A command as the CLI lists it: enough to find it and print the list; `load` imports its module to run it. */
export interface CommandEntry {
  name: string;
  summary: string;
  /** Old names of a renamed command, still run with a note on stderr and listed in no command list. */
  aliases?: string[];
  load(): Promise<Command>;
}

export function defineCommand<S extends ConfigSpec>(c: Command<S>): Command<ConfigSpec> {
  return c as unknown as Command<ConfigSpec>;
}

export { UserError, UsageError };

export async function runCommand(cmd: Command, argv: string[]): Promise<void> {
  const parsed = parseArgs(cmd.spec, argv);
  for (const note of parsed.notes) process.stderr.write(`vitsae ${cmd.name}: ${note}\n`);
  if (parsed.help) {
    process.stdout.write(commandHelp(cmd) + '\n');
    return;
  }
  if (!cmd.positionals && parsed.positionals.length)
    throw new UsageError(`unexpected argument "${parsed.positionals[0]}": vitsae ${cmd.name} takes only options (a boolean option is --flag or --no-flag)`);
  await cmd.run(parsed.config, parsed.positionals, parsed.given, argv);
}

export function commandHelp(cmd: Command): string {
  const required = Object.entries(cmd.spec)
    .filter(([, f]) => f.required)
    .map(([k]) => `${flagOf(k)} ${flagOf(k).slice(2).toUpperCase().replace(/-/g, '_')}`);
  const synopsis = ['vitsae', cmd.name, ...required, '[options]', ...(cmd.positionals ? ['[ARGS]'] : [])].join(' ');
  return [
    `vitsae ${cmd.name}: ${cmd.summary}`,
    '',
    `Usage: ${synopsis}`,
    ...(cmd.usage ? ['', cmd.usage.trim()] : []),
    '',
    'Options:',
    helpText(cmd.spec, [
      [`${CONFIG_FLAG} FILE`, 'options from a JSON file: an object such as {"lr": 0.0004, "k": 32}; flags given beside it override'],
      ['--help', 'this text'],
    ]),
  ].join('\n');
}

export function isUserError(e: unknown): e is Error {
  return e instanceof UserError || e instanceof ConfigError;
}

/** The exit code of an error a command threw: 2 for a usage mistake, 1 for any other failure. */
export function exitCodeOf(e: unknown): number {
  return e instanceof UsageError ? 2 : 1;
}
