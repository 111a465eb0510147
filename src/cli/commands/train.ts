import * as path from 'node:path';
import { defineCommand, UserError } from '../command.js';
import { type ConfigSpec, type ConfigOf, parseArgs, flagOf } from '../../util/config.js';
import { saeSpec, trainSpec, type SaeConfig, type TrainConfig } from '../../sae/config.js';
import { type SweepMember, train } from '../../sae/train.js';
import { readAnySae } from '../../interop/index.js';
import { exists, readJson } from '../../util/fs.js';
import { camelKeys } from '../../util/json-keys.js';
import { gracefulInterrupt } from '../../util/interrupt.js';

export const selectionSpec = {
  layer: { kind: 'number', int: true, default: -1, doc: 'recorded layer to use: a value from metadata.json layers, or a negative index into them' },
  select: { kind: 'enum', choices: ['patches', 'cls', 'all'], default: 'patches', doc: 'which tokens of each example: patch tokens, the CLS token, or all' },
} as const satisfies ConfigSpec;

const runSpec = {
  shards: { kind: 'string', required: true, default: '', doc: 'activation shard directory (from `vitsae record` or saev)' },
  out: { kind: 'string', required: true, default: '', doc: 'output directory for sae.safetensors, config.json, metrics.jsonl' },
  ...selectionSpec,
  resume: { kind: 'boolean', default: false, doc: 'continue the checkpoint in --out (optimizer state and data order included); flags given now override its training config, e.g. a larger --tokens' },
  init: { kind: 'string', default: '', doc: 'start from these weights: a vitsae checkpoint directory, a saev checkpoint file, or a SAELens directory' },
  sweep: { kind: 'string', default: '', doc: 'train several SAEs on the same batches: "lr=1e-4,4e-4 k=16,32" trains every combination into --out/NAME' },
  logEvery: { kind: 'number', int: true, min: 0, default: 0, doc: 'steps between metric log lines; 0 picks about 20 per run (at most every 100 steps)' },
  checkpointEvery: { kind: 'number', int: true, min: 1, default: 1000, doc: 'steps between checkpoints (one is always written at the end and on Ctrl-C)' },
  checkpointMinutes: { kind: 'number', min: 0, default: 5, doc: 'minutes between checkpoints by time, the first after 30 s, so any run can resume (0: by steps only)' },
  windowTokens: { kind: 'number', int: true, min: 1, default: 262_144, doc: 'tokens shuffled together in memory (about 2 x windowTokens x d_model x 4 bytes)' },
  progress: { kind: 'boolean', default: true, doc: 'show a progress bar on stderr' },
  json: { kind: 'boolean', default: false, doc: 'print the final metrics of each SAE as JSON on stdout' },
} as const satisfies ConfigSpec;

const spec = { ...runSpec, ...saeSpec, ...trainSpec } as const satisfies ConfigSpec;
type TrainArgs = ConfigOf<typeof spec>;

function split(c: TrainArgs): { sae: SaeConfig; train: TrainConfig } {
  const pick = <S extends ConfigSpec>(s: S) => Object.fromEntries(Object.keys(s).map((k) => [k, (c as Record<string, unknown>)[k]])) as ConfigOf<S>;
  return { sae: pick(saeSpec), train: pick(trainSpec) };
}

function withoutSweep(argv: string[]): string[] {
  return argv.filter((a, i) => a !== '--sweep' && !a.startsWith('--sweep=') && argv[i - 1] !== '--sweep');
}

/** Expands "--sweep 'lr=1e-4,4e-4 k=16,32'" into one member per combination, each parsed and validated like flags. */
function sweepMembers(sweep: string, argv: string[]): SweepMember[] {
  const axes = sweep
    .split(/[\s;]+/)
    .filter(Boolean)
    .map((term) => {
      const eq = term.indexOf('=');
      if (eq < 1) throw new UserError(`--sweep term "${term}" is not FIELD=V1,V2`);
      const field = term.slice(0, eq);
      const flag = field.startsWith('--') ? field : flagOf(field);
      return { name: flag.slice(2), flag, values: term.slice(eq + 1).split(',') };
    });
  let combos: string[][] = [[]];
  for (const a of axes) combos = combos.flatMap((c) => a.values.map((v) => [...c, a.flag, v]));
  return combos.map((extra) => {
    const { config } = parseArgs(spec, [...argv, ...extra]);
    const name = extra.length ? axes.map((a, i) => `${a.name}=${extra[2 * i + 1]}`).join('_') : 'default';
    return { name, ...split(config) };
  });
}

/** On --resume, the stored configs win except for flags given now. */
async function resumedMembers(out: string, argv: string[], given: Set<string>): Promise<SweepMember[]> {
  const sweepFile = path.join(out, 'sweep.json');
  const hasSweep = await exists(sweepFile);
  const stored = hasSweep
    ? (await readJson<{ members: SweepMember[] }>(sweepFile, 'the sweep index')).members
    : [{ name: '', ...(await readJson<{ sae: SaeConfig; train: TrainConfig }>(path.join(out, 'config.json'), `nothing to resume in ${out}`)) }];
  const { config } = parseArgs(spec, argv);
  return stored.map((m) => {
    // Stored configs have snake_case keys (or camelCase, written before the convention).
    const trainCfg = camelKeys<Record<string, unknown>>(m.train);
    for (const k of Object.keys(trainSpec)) if (given.has(k)) trainCfg[k] = (config as Record<string, unknown>)[k];
    return { name: m.name, sae: camelKeys<SaeConfig>(m.sae), train: trainCfg as TrainConfig };
  });
}

export const trainCommand = defineCommand({
  name: 'train',
  summary: 'train a sparse autoencoder (or a sweep of them) on activation shards',
  usage: `
Trains on the tokens of one recorded layer, shuffled with bounded memory, and writes OUT/sae.safetensors
(W_enc [d_model, d_sae], b_enc, W_dec [d_sae, d_model], b_dec) and OUT/config.json, checkpointing as it goes.
Ctrl-C checkpoints and stops; --resume continues exactly where it stopped.

Examples:
  vitsae train --shards runs/acts --out runs/sae --activation topk --k 32 --expansion 16
  vitsae train --shards runs/acts --out runs/sae --activation relu --l1 2              (the paper's recipe)
  vitsae train --shards runs/acts --out runs/sweep --sweep "lr=1e-4,4e-4 k=16,32"`,
  spec,
  async run(c, _pos, given, argv) {
    const members = c.resume ? await resumedMembers(c.out, argv, given as Set<string>) : c.sweep ? sweepMembers(c.sweep, withoutSweep(argv)) : [{ name: '', ...split(c) }];
    const interrupt = gracefulInterrupt('step');
    try {
      const results = await train({
        shards: c.shards,
        out: c.out,
        selection: { layer: c.layer, tokens: c.select },
        members,
        resume: c.resume,
        init: c.init ? { source: c.init, ...(await readAnySae(c.init)) } : undefined,
        logEvery: c.logEvery || undefined,
        checkpointEvery: c.checkpointEvery,
        checkpointMinutes: c.checkpointMinutes,
        windowTokens: c.windowTokens,
        showProgress: c.progress,
        shouldStop: interrupt.requested,
      });
      if (c.json)
        process.stdout.write(
          JSON.stringify(
            results.map((r) => ({ dir: r.dir, ...r.final, stopped: r.stopped })),
            null,
            2,
          ) + '\n',
        );
      else
        for (const r of results)
          process.stderr.write(
            `${r.stopped ? 'stopped' : 'trained'}: ${r.dir}  nmse ${r.final?.nmse.toFixed(4)}  l0 ${r.final?.l0.toFixed(1)}  dead ${((r.final?.dead_fraction ?? 0) * 100).toFixed(1)}%\n`,
          );
      if (results.some((r) => r.stopped)) process.exitCode = 130;
    } finally {
      interrupt.dispose();
    }
  },
});
