/**
 * Every SAE activation vitsae trains, declared once with the traits the rest of the code reads. The order is the
 * native core's id (the `Act` enum of native/sae_core.h, whose names the addon exports and native.ts checks
 * against this table when it loads). Adding an activation: an entry here, its case in sae_core.h (the enum, its
 * name, its selection), and a test.
 */
export const ACTIVATION_TRAITS = {
  relu: { doc: 'relu (+L1, the paper recipe)', l1: true, auxK: false, learnedThreshold: false, prefixes: false },
  topk: { doc: 'topk (k per token)', l1: false, auxK: true, learnedThreshold: false, prefixes: false },
  batchtopk: { doc: 'batchtopk (k*batch per batch, learned threshold at inference)', l1: false, auxK: true, learnedThreshold: true, prefixes: false },
  matryoshka: { doc: 'matryoshka (batchtopk with nested prefix losses)', l1: false, auxK: true, learnedThreshold: true, prefixes: true },
} as const satisfies Record<string, { doc: string; l1: boolean; auxK: boolean; learnedThreshold: boolean; prefixes: boolean }>;

export type Activation = keyof typeof ACTIVATION_TRAITS;
/** The activations in native id order. */
export const ACTIVATIONS = Object.keys(ACTIVATION_TRAITS) as Activation[];

export const traitsOf = (a: Activation) => ACTIVATION_TRAITS[a];
export const nativeIdOf = (a: Activation) => ACTIVATIONS.indexOf(a);
