import { defineCommand, UserError } from '../command.js';
import { deviceSpec } from '../../backbone/device.js';
import { declaredSize, listLayers, openBackbone } from '../../backbone/backbone.js';
import { chooseInputSize, parseSize, readModelCard } from '../../data/preprocess.js';

export const layersCommand = defineCommand({
  name: 'layers',
  positionals: true,
  summary: "list a model's residual-stream tensors, one per block",
  usage: `
vitsae layers MODEL.onnx [--json] [--input-size N|HxW]

Finds the residual stream of an ONNX vision model from its graph's structure (the chain of residual Add nodes), so
it works whatever the exporter named things, and prints each block's output tensor with its shape for one image.
Pick layers for \`vitsae record --layer\` by block (10, or -2 for the second to last) or by tensor name.

Example: vitsae layers dinov2-small.onnx --json`,
  spec: {
    json: { kind: 'boolean', default: false, doc: 'print a JSON list of {name, shape, block}' },
    inputSize: { kind: 'string', default: '', doc: "image size N or HxW (default: the model card's, else the model's own)" },
    ...deviceSpec,
  },
  async run(config, positionals) {
    if (positionals.length !== 1) throw new UserError('usage: vitsae layers MODEL.onnx [--json]');
    const bb = await openBackbone(positionals[0], config.device);
    const size = chooseInputSize(readModelCard(positionals[0]), config.inputSize ? parseSize(config.inputSize) : undefined, declaredSize(bb));
    const layers = await listLayers(bb, size);
    if (config.json) {
      process.stdout.write(JSON.stringify(layers) + '\n');
      return;
    }
    if (!layers.length) {
      process.stdout.write(`no residual stream found in ${positionals[0]}; record a tensor by name (--layer TENSOR_NAME)\n`);
      return;
    }
    const rows = layers.map((l, i) => [String(l.block), `[${l.shape.join(', ')}]`, l.name, bb.stream[i].node]);
    const width = (k: number) => Math.max(...rows.map((r) => r[k].length), ['block', 'shape', 'tensor'][k].length);
    const line = (r: string[]) => `${r[0].padStart(width(0))}  ${r[1].padEnd(width(1))}  ${r[2].padEnd(width(2))}  ${r[3]}`;
    process.stdout.write([line(['block', 'shape', 'tensor', 'Add node']), ...rows.map(line)].join('\n') + '\n');
  },
});
