/**
 * Standard normals of an Rng stream drawn on a worker thread, so that a caller can overlap them with other work: the
 * trainer draws its SAEs' initial decoders (~9.4M values at d_sae 12288, ~0.3 s in JS) during its scale estimate.
 * The values are exactly those of drawing them on the calling thread. This module imports only the Rng, so that the
 * worker starts fast.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Rng } from './random.js';

/** Marks the worker threads that draw normals, in their workerData. */
const NORMALS_WORKER = 'vitsae-normals';

interface NormalsJob {
  role: typeof NORMALS_WORKER;
  keys: number[];
  n: number;
}

/** `n` draws of `new Rng(...keys).normal()` as float32, in order. */
export function drawNormals(keys: number[], n: number): Float32Array {
  const rng = new Rng(...keys);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal();
  return out;
}

/** drawNormals on a worker thread; the result's buffer is moved here, not copied. */
export function drawNormalsOffThread(keys: number[], n: number): Promise<Float32Array> {
  return new Promise((resolve, reject) => {
    const job: NormalsJob = { role: NORMALS_WORKER, keys, n };
    const worker = new Worker(new URL(import.meta.url), { workerData: job });
    worker.once('message', (out: Float32Array) => resolve(out));
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the normals worker thread exited (code ${code}) before answering`)));
  });
}

if (!isMainThread && (workerData as Partial<NormalsJob> | null)?.role === NORMALS_WORKER) {
  const { keys, n } = workerData as NormalsJob;
  const out = drawNormals(keys, n);
  parentPort!.postMessage(out, [out.buffer as ArrayBuffer]);
}
