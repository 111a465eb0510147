/**
 * saev checkpoints (github.com/OSU-NLP-Group/saev, `saev.nn.modeling.dump`): one line of JSON, "\n", then a
 * torch.save zip of the SAE's state dict (W_enc [d_model, d_sae], b_enc, W_dec [d_sae, d_model], b_dec, and for
 * BatchTopK since Nov 2025 the scalar `activation.threshold`). The header has changed shape several times:
 *
 *   pre-schema (Oct 2024 - Apr 2025, the paper's released checkpoints): the config itself, always ReLU:
 *     {d_vit, d_sae, l1_coeff, use_ghost_grads}, then {d_vit, exp_factor, l1_coeff, use_ghost_grads}, then
 *     {d_vit, exp_factor, sparsity_coeff, n_reinit_samples, ghost_grads, remove_parallel_grads, normalize_w_dec, seed}
 *   schema 1 (Apr - Jul 2025): {schema, cfg, cls, commit, lib}; `cls` names the activation (Relu, TopK, BatchTopK,
 *     JumpRelu) with top_k inside cfg, or is "SparseAutoencoderConfig" with cfg.activation = {cls, params}
 *   schema 2 (Jul 2025): cfg.activation = {cls, params}; d_vit + exp_factor
 *   schema 3 (Oct 2025): d_model replaces d_vit
 *   schema 4 (Nov 2025): d_sae replaces exp_factor; AbsBatchTopK appears briefly
 *   schema 5 (Nov 2025 -): params also carry key/sparsity/aux (training-only)
 *
 * Encoding: up to schema 1 saev computed (x - b_dec) W_enc + b_enc, as we do. From schema 2 it computes
 * x W_enc + b_enc, so b_dec W_enc is folded into b_enc on import to give the same latents.
 */
import { promises as fsp } from 'node:fs';
import { UserError } from '../util/errors.js';
import { type Activation, traitsOf } from '../sae/activations.js';
import { readTorchStateDict } from './torchzip.js';
import { type LoadedSae, sae4 } from '../sae/checkpoint.js';
import { foldDecoderBias, foreignConfig, isObject, scalarOf } from './sae.js';

const THRESHOLD = 'activation.threshold';
const HEADER_LIMIT = 1 << 20;

/** saev activation class -> ours. Other classes (JumpRelu, AbsBatchTopK) have no equivalent and are refused. */
const ACTIVATIONS: Record<string, Activation> = { Relu: 'relu', TopK: 'topk', BatchTopK: 'batchtopk' };

interface SaevSpec {
  /** "pre-schema" or "schema N", for messages. */
  version: string;
  dModel: number;
  dSae: number;
  activation: Activation;
  k?: number;
  /** Whether saev subtracted b_dec from the input before encoding (schema <= 1). */
  subtractsDecoderBias: boolean;
}

export async function readSaevFile(file: string): Promise<LoadedSae> {
  let bytes: Buffer;
  try {
    bytes = await fsp.readFile(file);
  } catch (e) {
    throw new UserError(`cannot read ${file}: ${(e as Error).message}`);
  }
  return decodeSaev(bytes, file);
}

export function decodeSaev(bytes: Uint8Array, source: string): LoadedSae {
  const nl = bytes.subarray(0, HEADER_LIMIT).indexOf(0x0a);
  if (bytes[0] !== 0x7b /* { */ || nl < 0) throw new UserError(`${source} is not a saev checkpoint: it should start with a one-line JSON header`);
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, nl).toString('utf8'));
  } catch (e) {
    throw new UserError(`${source}: the saev header line is not JSON (${(e as Error).message})`);
  }
  const spec = parseSaevHeader(header, source);
  const tensors = readTorchStateDict(bytes.subarray(nl + 1), source);
  const w = sae4(tensors, [THRESHOLD], source);
  if (w.dModel !== spec.dModel || w.dSae !== spec.dSae) {
    throw new UserError(`${source}: the header says d_model ${spec.dModel}, d_sae ${spec.dSae} but W_enc is [${w.dModel}, ${w.dSae}]`);
  }
  const notes = [
    `saev ${spec.version} checkpoint: ${spec.activation}${spec.k ? ` k=${spec.k}` : ''}, d_model ${spec.dModel}, d_sae ${spec.dSae}.`,
    'saev may have mean-centred and scaled the activations in its data loader (scale_mean/scale_norm); those constants are not in the checkpoint, so give the SAE activations pre-processed the same way.',
  ];
  let threshold = -1;
  if (tensors[THRESHOLD]) {
    if (!traitsOf(spec.activation).learnedThreshold) throw new UserError(`${source}: ${THRESHOLD} is stored but the activation is ${spec.activation}, which learns none`);
    threshold = scalarOf(tensors[THRESHOLD], THRESHOLD, source);
  } else if (spec.activation === 'batchtopk') {
    notes.push('No BatchTopK threshold is stored (saev before Nov 2025): inference keeps every positive pre-activation, as saev itself does.');
  }
  if (spec.activation === 'topk') {
    notes.push("saev's TopK keeps the k largest pre-activations even when negative; vitsae zeroes negative ones, which matters only for tokens with fewer than k positive pre-activations.");
  }
  let b_enc = w.b_enc;
  if (!spec.subtractsDecoderBias) {
    b_enc = foldDecoderBias(w, w.dModel, w.dSae);
    notes.push(`saev ${spec.version} encodes x W_enc + b_enc without subtracting b_dec; b_dec W_enc was folded into b_enc so the latents are unchanged.`);
  }
  return {
    config: foreignConfig(spec.dModel, spec.dSae, { activation: spec.activation, ...(spec.k ? { k: spec.k } : {}) }, threshold),
    W_enc: w.W_enc,
    b_enc,
    W_dec: w.W_dec,
    b_dec: w.b_dec,
    notes,
  };
}

/** Maps any header saev has written to the fields we need; refuses what has no equivalent. */
function parseSaevHeader(header: unknown, source: string): SaevSpec {
  const bad = (why: string) => new UserError(`${source}: saev header ${why}`);
  if (!isObject(header)) throw bad('is not a JSON object');
  if (!('schema' in header)) {
    if (!('d_vit' in header)) throw bad('has neither "schema" nor "d_vit": not a saev checkpoint');
    return { version: 'pre-schema', ...dims(header, bad), activation: 'relu', subtractsDecoderBias: true };
  }
  const schema = header.schema;
  const cfg = header.cfg;
  if (!isObject(cfg)) throw bad('has no "cfg" object');
  const version = `schema ${schema}`;
  if (schema === 1) {
    const cls = typeof header.cls === 'string' ? header.cls : 'SparseAutoencoderConfig';
    // Format 1A names the activation in `cls` (top_k in cfg); format 1B nests it in cfg.activation like schema 2.
    const act = cls === 'SparseAutoencoderConfig' ? activationOf(cfg.activation ?? { cls: 'Relu', params: {} }, bad) : activationOf({ cls, params: cfg }, bad);
    return { version, ...dims(cfg, bad), ...act, subtractsDecoderBias: true };
  }
  if (schema === 2 || schema === 3 || schema === 4 || schema === 5) {
    return { version, ...dims(cfg, bad), ...activationOf(cfg.activation, bad), subtractsDecoderBias: false };
  }
  throw bad(`has schema ${JSON.stringify(schema)}; vitsae knows saev's pre-schema header and schemas 1-5`);
}

/** d_model (d_vit before schema 3) and d_sae (d_model * exp_factor before schema 4). */
function dims(cfg: Record<string, unknown>, bad: (why: string) => Error): { dModel: number; dSae: number } {
  const dModel = cfg.d_model ?? cfg.d_vit;
  const dSae = cfg.d_sae ?? (typeof dModel === 'number' && typeof cfg.exp_factor === 'number' ? dModel * cfg.exp_factor : undefined);
  if (!isPositiveInt(dModel) || !isPositiveInt(dSae)) throw bad('does not give d_model/d_vit and d_sae/exp_factor as positive integers');
  return { dModel, dSae };
}

function activationOf(payload: unknown, bad: (why: string) => Error): { activation: Activation; k?: number } {
  if (!isObject(payload) || typeof payload.cls !== 'string' || !isObject(payload.params)) throw bad('has no activation {cls, params}');
  const activation = ACTIVATIONS[payload.cls];
  if (!activation) throw bad(`uses activation ${payload.cls}, which vitsae has no equivalent for (it reads ${Object.keys(ACTIVATIONS).join(', ')})`);
  if (activation === 'relu') return { activation };
  // saev's own loader defaults top_k to 32 when a schema-1 header leaves it out.
  const k = payload.params.top_k ?? 32;
  if (!isPositiveInt(k)) throw bad(`has top_k ${JSON.stringify(k)}, expected a positive integer`);
  return { activation, k };
}

function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}
