import { ConfigSpec, ConfigOf, parseArgs, helpText, ConfigError } from '../util/config.js';
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

export function defineCommand<S extends ConfigSpec>(c: Command<S>): Command<ConfigSpec> {
  return c as unknown as Command<ConfigSpec>;
}

export { UserError };

export async function runCommand(cmd: Command, argv: string[]): Promise<void> {
  const parsed = parseArgs(cmd.spec, argv);
  if (parsed.help) {
    process.stdout.write(commandHelp(cmd) + '\n');
    return;
  }
  if (!cmd.positionals && parsed.positionals.length)
    throw new ConfigError(`unexpected argument "${parsed.positionals[0]}": vitsae ${cmd.name} takes only options (a boolean option is --flag or --no-flag)`);
  await cmd.run(parsed.config, parsed.positionals, parsed.given, argv);
}

export function commandHelp(cmd: Command): string {
  return `vitsae ${cmd.name}: ${cmd.summary}\n${cmd.usage ? '\n' + cmd.usage.trim() + '\n' : ''}\nOptions:\n${helpText(cmd.spec)}\n  --help                              this text`;
}

export function isUserError(e: unknown): e is Error {
  return e instanceof UserError || e instanceof ConfigError;
}
