/**
 * Where models run: onnxruntime's execution providers, chosen with `--device` on every command that runs a model
 * (the option is declared once here, in `deviceSpec`). CPU by default. A provider the installed onnxruntime-node
 * lacks is refused before any model is loaded, with how to get it.
 */
import * as os from 'node:os';
import * as ort from 'onnxruntime-node';
import { UserError } from '../util/errors.js';
import type { ConfigOf } from '../util/config.js';
import { encodeModel, type ModelProto } from './onnx.js';

/** `--device` names and the onnxruntime-node execution provider each selects. */
const PROVIDERS = { cpu: 'cpu', cuda: 'cuda', tensorrt: 'tensorrt', coreml: 'coreml', directml: 'dml', webgpu: 'webgpu' } as const;

export type Device = keyof typeof PROVIDERS;

export const DEVICES = Object.keys(PROVIDERS) as Device[];

/** The shared option: commands that run a model spread it into their spec. */
export const deviceSpec = {
  device: {
    kind: 'enum',
    choices: DEVICES,
    default: 'cpu',
    doc: 'onnxruntime execution provider for the model (cuda and tensorrt need onnxruntime-node installed with ONNXRUNTIME_NODE_INSTALL=cuda12)',
  },
} as const;

export type DeviceConfig = ConfigOf<typeof deviceSpec>;

/** How to get each provider that onnxruntime-node does not ship in its package. */
function howToGet(device: Device): string {
  switch (device) {
    case 'cuda':
    case 'tensorrt':
      return (
        `onnxruntime-node ships its CUDA and TensorRT providers separately: on a Linux x64 machine with CUDA 12 and cuDNN 9` +
        `${device === 'tensorrt' ? ' (and TensorRT 10)' : ''}, reinstall it with them: ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node ` +
        `(or npm install --onnxruntime-node-install=cuda12; it downloads Microsoft.ML.OnnxRuntime.Gpu.Linux from NuGet), ` +
        `and check that the CUDA libraries are on LD_LIBRARY_PATH`
      );
    case 'coreml':
      return 'the CoreML provider exists in the macOS builds of onnxruntime-node only';
    case 'directml':
      return 'the DirectML provider exists in the Windows builds of onnxruntime-node only';
    case 'webgpu':
      return 'the WebGPU provider needs a GPU adapter (Dawn found none on this machine: check the Vulkan / Metal / D3D12 drivers)';
    case 'cpu':
      return '';
  }
}

const checked = new Map<Device, Promise<void>>();

/**
 * Refuses a device the installed onnxruntime-node cannot use, before a model is loaded: providers missing from its
 * build for this platform, and those it lists but cannot load (CUDA without its downloaded libraries, WebGPU
 * without an adapter), which a session on a one-node model reveals in milliseconds.
 */
export function checkDevice(device: Device): Promise<void> {
  if (device === 'cpu') return Promise.resolve();
  let done = checked.get(device);
  if (!done) {
    done = probe(device);
    checked.set(device, done);
  }
  return done;
}

async function probe(device: Device): Promise<void> {
  const ep = PROVIDERS[device];
  const builtIn = ort.listSupportedBackends();
  const platform = `${os.platform()}/${os.arch()}`;
  if (!builtIn.some((b) => b.name === ep))
    throw new UserError(`--device ${device}: onnxruntime-node ${ort.env.versions.common} for ${platform} has no ${ep} provider (it has ${builtIn.map((b) => b.name).join(', ')}); ${howToGet(device)}`);
  try {
    const session = await ort.InferenceSession.create(encodeModel(identityModel()), { executionProviders: [ep], logSeverityLevel: 4 });
    await session.release();
  } catch (e) {
    throw new UserError(`--device ${device}: onnxruntime could not start its ${ep} provider (${(e as Error).message.trim()}); ${howToGet(device)}`);
  }
}

/** y = Identity(x) on a float vector: the smallest model a provider can be tried on. */
function identityModel(): ModelProto {
  const value = (name: string) => ({ name, type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_value: 1 }] } } } });
  return {
    ir_version: 8,
    opset_import: [{ domain: '', version: 17 }],
    graph: { name: 'probe', node: [{ op_type: 'Identity', input: ['x'], output: ['y'] }], input: [value('x')], output: [value('y')] },
  };
}

/** Session options that run on `device` (onnxruntime places the operators a provider lacks on the CPU). */
export function deviceOptions(device: Device = 'cpu'): { executionProviders: string[] } {
  return { executionProviders: [PROVIDERS[device]] };
}
