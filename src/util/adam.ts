/**
 * Adam for the small models fitted in TypeScript (task heads, concept probes); the SAE's own optimizer runs in the
 * native core. One instance per fit; each parameter brings its own moment buffers, of the parameter's length.
 */

export interface AdamConfig {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
}

/** A parameter, its gradient and its two moment buffers. */
export interface AdamParam {
  w: Float32Array | Float64Array;
  grad: Float32Array | Float64Array;
  m: Float32Array | Float64Array;
  v: Float32Array | Float64Array;
  /** Decoupled weight decay (AdamW), as a fraction of the learning rate's step. */
  weightDecay?: number;
  /** An L2 penalty added to the gradient (classic Adam with L2). */
  l2?: number;
}

export class Adam {
  private t = 0;
  constructor(private readonly cfg: AdamConfig) {}

  /** One step of every parameter, with the bias corrections of the step count so far. */
  step(params: AdamParam[]): void {
    const { lr, beta1: b1 = 0.9, beta2: b2 = 0.999, eps = 1e-8 } = this.cfg;
    this.t++;
    const c1 = 1 - b1 ** this.t,
      c2 = 1 - b2 ** this.t;
    for (const { w, grad, m, v, weightDecay = 0, l2 = 0 } of params) {
      for (let i = 0; i < w.length; i++) {
        const g = grad[i] + l2 * w[i];
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        w[i] -= lr * (m[i] / c1 / (Math.sqrt(v[i] / c2) + eps) + weightDecay * w[i]);
      }
    }
  }
}
