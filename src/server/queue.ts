/**
 * A bounded work queue: at most `concurrency` jobs run and at most `maxWaiting` wait; a job beyond that is refused
 * at once (QueueFull) instead of waiting, so that a burst of requests cannot pile up images, activations and
 * model runs in memory. The server answers a refusal with 503 and Retry-After.
 */

/** The queue is full: try again later. */
export class QueueFull extends Error {
  constructor(readonly waiting: number) {
    super(`the server is busy with ${waiting} waiting edits; try again in a moment`);
  }
}

export class BoundedQueue {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    readonly concurrency: number,
    readonly maxWaiting: number,
  ) {
    if (!(Number.isInteger(concurrency) && concurrency >= 1)) throw new RangeError(`concurrency ${concurrency} must be a positive integer`);
    if (!(Number.isInteger(maxWaiting) && maxWaiting >= 0)) throw new RangeError(`maxWaiting ${maxWaiting} must be a non-negative integer`);
  }

  /** Jobs running and waiting. */
  get size(): number {
    return this.running + this.waiting.length;
  }

  /** Runs `job` when a slot is free; rejects with QueueFull at once when `maxWaiting` jobs already wait. */
  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.running < this.concurrency) this.running++;
    else {
      if (this.waiting.length >= this.maxWaiting) throw new QueueFull(this.waiting.length);
      // A finishing job hands its slot over directly, so no newcomer can slip in between.
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    try {
      return await job();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
