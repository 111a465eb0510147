/**
 * The recorder's onnxruntime session on a worker thread. This module imports nothing but onnxruntime, so that the
 * worker starts fast (the recorder's own imports, sharp and the dataset readers, are not loaded again there).
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';

/**
 * The front session's options: onnxruntime's defaults, whose threads spin between operators. Sleeping instead
 * (allow_spinning 0, meant to leave the cores to the decoding beside them) made recording ViT-B/16 on 2 cores
 * 5-17% slower: decoding takes ~2% of the CPU, while every operator paid for waking the pool.
 */
export const FRONT_SESSION_OPTIONS: ort.InferenceSession.SessionOptions = {};

/** Marks the worker threads that serve a front session (see FrontWorker), in their workerData. */
const FRONT_WORKER = 'vitsae-front-session';

interface FrontWorkerData {
  role: typeof FRONT_WORKER;
  /** The encoded front model (its graph; the weights come with `options`, see Weights). */
  model: Uint8Array;
  input: string;
  options: ort.InferenceSession.SessionOptions;
}

/** A message of the front worker: its session is ready (no outputs), a batch's outputs, or an error. */
type FrontReply = { outputs?: { name: string; data: Float32Array; dims: number[] }[] } | { error: string };

/**
 * The front model's onnxruntime session on a worker thread. onnxruntime-node's `session.run` returns a promise but
 * computes synchronously on the calling thread, so on the main thread it would stall the event loop for a whole
 * batch: the next batch's decode (sharp's stages and the normalisation need the loop between them) and the writes
 * of the previous one would wait for it instead of running beside it. Pixels and outputs are transferred, not
 * copied. Requests are answered in order; the first answer says whether the session loaded.
 */
export class FrontWorker {
  private readonly worker: Worker;
  private readonly pending: { resolve: (outputs: Record<string, ort.Tensor>) => void; reject: (e: Error) => void }[] = [];
  private failure: Error | null = null;

  /** Loads `model` on a new worker (its buffer moves there); `input` names its image input. */
  static async start(model: Uint8Array, input: string, options: ort.InferenceSession.SessionOptions): Promise<FrontWorker> {
    const front = new FrontWorker({ role: FRONT_WORKER, model, input, options });
    await front.answer();
    return front;
  }

  private constructor(data: FrontWorkerData) {
    // The model moves to the worker, not a clone of it: a second copy of a large model costs seconds and memory.
    const owned = data.model.byteOffset === 0 && data.model.byteLength === data.model.buffer.byteLength;
    this.worker = new Worker(new URL(import.meta.url), { workerData: data, transferList: owned ? [data.model.buffer as ArrayBuffer] : [] });
    this.worker.on('message', (m: FrontReply) => {
      const p = this.pending.shift()!;
      if ('error' in m) p.reject(new Error(m.error));
      else p.resolve(Object.fromEntries((m.outputs ?? []).map((o) => [o.name, new ort.Tensor('float32', o.data, o.dims)])));
    });
    this.worker.on('error', (e) => this.fail(e));
    this.worker.on('exit', (code) => this.fail(new Error(`the onnxruntime worker thread exited (code ${code})`)));
  }

  /**
   * The front's outputs `fetches` for one batch; `pixels_NCHW`'s buffer moves to the worker (it is unusable
   * afterwards).
   */
  run(pixels_NCHW: Float32Array, dims: number[], fetches: string[]): Promise<Record<string, ort.Tensor>> {
    return this.answer({ pixels_NCHW, dims, fetches }, [pixels_NCHW.buffer as ArrayBuffer]);
  }

  /** Ends the worker, and its session with it. */
  async close(): Promise<void> {
    await this.worker.terminate();
  }

  /** The worker's next answer, to `request` if one is given. */
  private answer(request?: object, transfer: ArrayBuffer[] = []): Promise<Record<string, ort.Tensor>> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      if (request) this.worker.postMessage(request, transfer);
    });
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const p of this.pending.splice(0)) p.reject(e);
  }
}

/** The front worker's side: load the session, then answer each batch with its outputs. */
async function serveFront({ model, input, options }: FrontWorkerData): Promise<void> {
  const port = parentPort!;
  const reply = (m: FrontReply, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(model, options);
  } catch (e) {
    return reply({ error: (e as Error).message });
  }
  reply({});
  port.on('message', async ({ pixels_NCHW, dims, fetches }: { pixels_NCHW: Float32Array; dims: number[]; fetches: string[] }) => {
    try {
      const outs = await session.run({ [input]: new ort.Tensor('float32', pixels_NCHW, dims) }, fetches);
      const outputs = Object.entries(outs).map(([name, t]) => ({ name, data: t.data as Float32Array, dims: [...t.dims] }));
      reply(
        { outputs },
        outputs.map((o) => o.data.buffer as ArrayBuffer),
      );
    } catch (e) {
      reply({ error: (e as Error).message });
    }
  });
}

if (!isMainThread && (workerData as Partial<FrontWorkerData> | null)?.role === FRONT_WORKER) void serveFront(workerData as FrontWorkerData);
