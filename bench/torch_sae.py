"""PyTorch reference SAE training step for `npm run bench` (Debian python3-torch; never used by the toolkit).

A plain, idiomatic implementation: dense encoder, torch.topk (or ReLU + L1), dense decoder, autograd, Adam,
decoder rows renormalised after each step with the parallel gradient component removed. Reads the same raw
float32 [tokens, d] activations as vitsae and prints one JSON line with the measured tokens/s.

With --tokens it is a whole run as a user would start one: read the data, train that many tokens (the first step
included), save the weights and Adam state with torch.save to --out; the caller times the whole process.
"""
import argparse
import json
import resource
import time

import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("--acts", required=True)
p.add_argument("--d", type=int, required=True)
p.add_argument("--s", type=int, required=True)
p.add_argument("--k", type=int, default=32)
p.add_argument("--batch", type=int, default=4096)
p.add_argument("--steps", type=int, default=4)
p.add_argument("--activation", choices=["topk", "relu"], default="topk")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--b-enc", type=float, default=0.0, help="initial encoder bias (negative: sparser ReLU)")
p.add_argument("--tokens", type=int, default=0, help="whole run: train this many tokens, then save to --out")
p.add_argument("--out", default="", help="whole run: checkpoint file")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

x_all = torch.from_numpy(np.fromfile(a.acts, dtype="<f4").reshape(-1, a.d))
W_dec = torch.nn.functional.normalize(torch.randn(a.s, a.d), dim=1)
params = {
    "W_enc": torch.nn.Parameter(W_dec.T.clone()),
    "b_enc": torch.nn.Parameter(torch.full((a.s,), a.b_enc)),
    "W_dec": torch.nn.Parameter(W_dec),
    "b_dec": torch.nn.Parameter(x_all[: a.batch].mean(0)),
}
opt = torch.optim.Adam(params.values(), lr=4e-4)


def step(x):
    pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
    if a.activation == "topk":
        v, i = torch.topk(pre, a.k, dim=-1)
        f = torch.zeros_like(pre).scatter_(-1, i, torch.relu(v))
        extra = 0.0
    else:
        f = torch.relu(pre)
        extra = 2.0 * f.sum(-1).mean()
    x_hat = f @ params["W_dec"] + params["b_dec"]
    loss = (x_hat - x).pow(2).sum(-1).mean() + extra
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        W, g = params["W_dec"], params["W_dec"].grad
        g -= (g * W).sum(-1, keepdim=True) * W
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
    opt.step()
    with torch.no_grad():
        params["W_dec"] /= params["W_dec"].norm(dim=-1, keepdim=True)


n_batches = x_all.shape[0] // a.batch
steps = -(-a.tokens // a.batch) - 1 if a.tokens else a.steps
step(x_all[: a.batch])  # warm-up, not timed
t0 = time.perf_counter()
for s in range(steps):
    b = (s + 1) % n_batches
    step(x_all[b * a.batch : (b + 1) * a.batch])
dt = time.perf_counter() - t0
if a.out:
    torch.save({"params": {k: v.detach() for k, v in params.items()}, "adam": opt.state_dict()}, a.out)
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"tokens_per_s": steps * a.batch / dt, "seconds_per_step": dt / steps, "threads": a.threads, "peak_mb": peak_mb}))
