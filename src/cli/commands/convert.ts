import { promises as fsp } from 'node:fs';
import { defineCommand, UserError } from '../command.js';
import { OUTPUT_KINDS, convertSae } from '../../interop/index.js';

const spec = {
  out: { kind: 'string', required: true, default: '', doc: 'output directory' },
  to: { kind: 'enum', choices: OUTPUT_KINDS, default: 'vitsae', doc: 'output layout: vitsae (config.json + sae.safetensors) or saelens (cfg.json + sae_weights.safetensors)' },
  overwrite: { kind: 'boolean', default: false, doc: 'write into an output directory that is not empty' },
} as const;

export const convertCommand = defineCommand({
  name: 'convert',
  positionals: true,
  summary: 'convert an SAE between vitsae, saev and SAELens layouts',
  usage: `
vitsae convert INPUT --out DIR [--to vitsae|saelens]

INPUT is a saev checkpoint file (JSON header line + torch.save zip, any header version), a SAELens directory
(cfg.json + sae_weights.safetensors) or a vitsae SAE directory; the kind is detected from the files. The SAE
is brought to vitsae's parametrisation (see src/interop/README.md) and written in the chosen layout. Every
vitsae command also opens saev and SAELens SAEs directly; converting is for keeping a vitsae copy or for
handing an SAE to SAELens.

Examples:
  vitsae convert checkpoints/abc123/sae.pt --out runs/sae-abc123
  vitsae convert runs/sae --out exports/sae-saelens --to saelens`,
  spec,
  async run(c, positionals) {
    if (positionals.length !== 1) throw new UserError('give exactly one INPUT: a saev checkpoint file, a SAELens directory or a vitsae SAE directory');
    const entries = await fsp.readdir(c.out).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return [];
      throw new UserError(`--out ${c.out} is not a usable directory: ${e.message}`);
    });
    if (entries.length && !c.overwrite) throw new UserError(`${c.out} is not empty; choose another --out or pass --overwrite`);
    const input = positionals[0];
    const { kind, sae } = await convertSae(input, c.out, c.to);
    for (const note of sae.notes) process.stderr.write(`note: ${note}\n`);
    process.stderr.write(`converted ${kind} ${input} -> ${c.to} ${c.out} (${sae.config.sae.activation}, d_model ${sae.config.d_model}, d_sae ${sae.config.d_sae})\n`);
  },
});
