/**
 * vitsae as a library: `import { Sae, record, train } from 'vitsae'`. Each step of the pipeline is the function its
 * CLI command wraps, with the same options (the CLI adds only flag parsing and printing). The README section "As a
 * library" has a runnable example; test/library.test.ts runs it.
 */

// SAEs in any of the three layouts (vitsae directory, saev checkpoint file, SAELens directory): open, encode, decode.
export { Sae } from './sae/model.js';
export type { SaeInit } from './sae/model.js';
export type { SparseActs } from './sae/native.js';
export { ACTIVATIONS, saeSpec, trainSpec, dSaeOf } from './sae/config.js';
export type { Activation, SaeConfig, TrainConfig, SaeCheckpointConfig } from './sae/config.js';

// Converting and reading SAEs made elsewhere.
export {
  OUTPUT_KINDS,
  convertSae,
  detectSaeKind,
  openSae,
  readAnySae,
  readSaeOfKind,
  readSaevFile,
  readSaeLensDir,
  readVitsaeDir,
  writeSae,
  writeSaeLensDir,
  writeVitsaeDir,
} from './interop/index.js';
export type { LoadedSae, OutputKind, SaeKind } from './interop/index.js';

// Models and recording.
export { openBackbone, selectLayers, listLayers, tokenLayout } from './backbone/backbone.js';
export type { Backbone, Layer, LayerInfo, TokenLayout } from './backbone/backbone.js';
export { DEVICES, checkDevice } from './backbone/device.js';
export type { Device } from './backbone/device.js';
export { record } from './backbone/record.js';
export type { RecordOptions, RecordResult } from './backbone/record.js';
export { openDataset } from './data/images.js';
export type { Dataset } from './data/images.js';
export { writeConceptWorld } from './data/concept-world.js';
export { writeSyntheticShards } from './data/synthetic.js';
export type { SyntheticConfig } from './data/synthetic.js';

// Activation shards (saev protocol 2.1): reading, writing, loaders, merging.
export { ShardDataset, ShardWriter, readMetadata } from './shards/format.js';
export { saevRefusals } from './shards/saev.js';
export type { SaevRefusal } from './shards/saev.js';
export type { NewShardMetadata, ShardEntry, ShardMetadata } from './shards/format.js';
export { OrderedTokenLoader, ShuffledTokenLoader } from './shards/loader.js';
export type { TokenSelection } from './shards/loader.js';
export { mergeShards } from './backbone/merge.js';

// Training and evaluation.
export { train } from './sae/train.js';
export type { LogRow, SweepMember, TrainOptions, TrainResult } from './sae/train.js';
export { evaluateSae } from './sae/evaluate.js';
export type { EvalOptions } from './sae/evaluate.js';
export type { SaeMetrics } from './sae/metrics.js';
export { conceptWorldLabels, evaluateConcepts } from './analysis/concepts.js';
export type { ConceptEvalOptions, ConceptReport, PatchConcepts } from './analysis/concepts.js';

// Visuals (exemplars, statistics), run directories and model comparison.
export { computeVisuals } from './analysis/make-visuals.js';
export type { VisualsOptions } from './analysis/make-visuals.js';
export { VisualsIndex } from './analysis/visuals-index.js';
export { readRun, writeRun } from './analysis/run.js';
export type { Run, RunSpec } from './analysis/run.js';
export { exportRun } from './analysis/export.js';
export type { ExportManifest, ExportOptions } from './analysis/export.js';
export { compareRuns, compareSpec } from './analysis/compare/compare.js';
export type { CompareOptions } from './analysis/compare/compare.js';

// Task heads, the edit engine and edit evaluation.
export { loadHead, headTrainSpec, saveHead, trainHead } from './edit/head.js';
export type { Head, HeadTrainConfig, HeadTrainOptions } from './edit/head.js';
export { EditEngine } from './edit/engine.js';
export type { Edit, EditResult, EngineOptions, Predictions, Prepared } from './edit/engine.js';
export { EDIT_MODES, TASKS } from './edit/kinds.js';
export type { EditMode, Task } from './edit/kinds.js';
export { evaluateEdits } from './edit/evaluate.js';
export type { EditEvalOptions, EditEvalReport } from './edit/evaluate.js';

// The demo, configs and errors.
export { runDemo } from './demo.js';
export type { DemoOptions, DemoResult } from './demo.js';
export { defaultsOf } from './util/config.js';
export type { ConfigOf, ConfigSpec } from './util/config.js';
export { UserError } from './util/errors.js';
