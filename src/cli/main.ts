/**
 * The `vitsae` command line: one subcommand per step of the pipeline, each generated from its typed config.
 */
import { readFileSync } from 'node:fs';
import { type CommandEntry, exitCodeOf, isUserError, runCommand } from './command.js';
import { closest } from '../util/config.js';
/**
 * Every command, listed by name and summary; its module (and what it imports: onnxruntime, sharp, the trainer...)
 * is loaded only when it runs, so that a command does not wait for all the others' modules to load.
 * test/cli.test.ts checks each entry against the module it loads.
 */
export const commands: CommandEntry[] = [
  { name: 'demo', summary: 'the whole pipeline on the shipped demo models and a generated concept world, then the browser', load: async () => (await import('./commands/demo.js')).demoCommand },
  {
    name: 'data concept-world',
    summary: 'write the concept world: images of objects with known concepts, masks, per-patch labels and classes',
    load: async () => (await import('./commands/data-concept-world.js')).dataConceptWorldCommand,
  },
  { name: 'data synthetic', summary: 'write synthetic activation shards with known ground-truth atoms', load: async () => (await import('./commands/data-synthetic.js')).dataSyntheticCommand },
  { name: 'layers', summary: "list a model's residual-stream tensors, one per block", load: async () => (await import('./commands/layers.js')).layersCommand },
  { name: 'record', summary: "record patch activations of a model's layers over an image dataset into shards", load: async () => (await import('./commands/record.js')).recordCommand },
  { name: 'shards info', summary: 'describe and validate a shard directory (saev protocol 2.1)', load: async () => (await import('./commands/shards.js')).shardsInfoCommand },
  { name: 'shards merge', summary: 'join the shard directories of a recording split across workers', load: async () => (await import('./commands/record.js')).shardsMergeCommand },
  { name: 'train', summary: 'train a sparse autoencoder (or a sweep of them) on activation shards', load: async () => (await import('./commands/train.js')).trainCommand },
  {
    name: 'eval',
    summary: 'reconstruction and sparsity metrics of an SAE on activation shards (nmse, explained variance, l0, dead, dense)',
    load: async () => (await import('./commands/eval.js')).evalCommand,
  },
  {
    name: 'eval concepts',
    summary: 'how well SAE latents match ground-truth patch concepts, against a linear probe and baselines',
    load: async () => (await import('./commands/eval-concepts.js')).evalConceptsCommand,
  },
  {
    name: 'head train',
    aliases: ['probe train'],
    summary: "train a linear task head (classification or segmentation) on a frozen model's final representation",
    load: async () => (await import('./commands/head.js')).headTrainCommand,
  },
  {
    name: 'edit',
    summary: "edit SAE latents on chosen patches of an image and see the frozen task head's answer before and after",
    load: async () => (await import('./commands/edit.js')).editCommand,
  },
  {
    name: 'eval edits',
    summary: 'do SAE latents causally drive a frozen task head? Suppression edits against random-latent and random-direction baselines',
    load: async () => (await import('./commands/eval-edits.js')).evalEditsCommand,
  },
  { name: 'convert', summary: 'convert an SAE between vitsae, saev and SAELens layouts', load: async () => (await import('./commands/convert.js')).convertCommand },
  {
    name: 'visuals',
    summary: "compute every feature's top exemplar images, statistics and highlighted thumbnails for the browser",
    load: async () => (await import('./commands/visuals.js')).visualsCommand,
  },
  { name: 'serve', summary: 'browse and name features: the web app over one or more runs (vitsae visuals writes them)', load: async () => (await import('./commands/serve.js')).serveCommand },
  { name: 'site', summary: 'write the feature browser of a run as a static site (no server, no editing) to publish its features', load: async () => (await import('./commands/site.js')).siteCommand },
  {
    name: 'compare',
    summary: 'what two SAEs on the same images share and what only one has: matched latents, spectra, abstraction',
    load: async () => (await import('./commands/compare.js')).compareCommand,
  },
  { name: 'export', summary: "write a run's latents, feature statistics and exemplars for numpy, scipy and pandas (npz, CSV)", load: async () => (await import('./commands/export.js')).exportCommand },
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

/**
 * Finds the command whose name words start argv (longest match first, so `eval concepts` beats `eval`); `alias` is
 * the old name it was called by, if any.
 */
function findCommand(argv: string[]): { cmd: CommandEntry; rest: string[]; alias?: string } | null {
  const names = commands.flatMap((cmd): { cmd: CommandEntry; name: string; alias?: string }[] => [{ cmd, name: cmd.name }, ...(cmd.aliases ?? []).map((alias) => ({ cmd, name: alias, alias }))]);
  names.sort((a, b) => b.name.split(' ').length - a.name.split(' ').length);
  for (const { cmd, name, alias } of names) {
    const words = name.split(' ');
    if (words.every((w, i) => argv[i] === w)) return { cmd, rest: argv.slice(words.length), alias };
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
  if (!found) {
    process.stderr.write(unknownCommand(argv));
    return 2;
  }
  if (found.alias) process.stderr.write(`vitsae: "vitsae ${found.alias}" is now "vitsae ${found.cmd.name}"\n`);
  const cmd = await found.cmd.load();
  // `eval concept` finds `eval`; a stray word after a command that has subcommands is a mistyped subcommand.
  const word = found.rest[0];
  if (!cmd.positionals && word && !word.startsWith('-') && commands.some((c) => c.name.startsWith(cmd.name + ' '))) {
    process.stderr.write(unknownCommand(argv));
    return 2;
  }
  try {
    await runCommand(cmd, found.rest);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (isUserError(e)) {
      const code = exitCodeOf(e);
      process.stderr.write(`vitsae ${cmd.name}: ${(e as Error).message}${code === 2 ? `; vitsae ${cmd.name} --help lists its options` : ''}\n`);
      return code;
    }
    process.stderr.write(`vitsae ${cmd.name}: internal error: ${(e as Error).stack ?? e}\n`);
    return 1;
  }
}
