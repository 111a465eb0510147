"""Trains vitsae's demo ViTs, exports them to ONNX (opset 17, dynamic batch) and writes their model cards.

    /usr/bin/python3 models/train_demo.py MODEL [MODEL ...] --world DIR [--out models] [--smoke]

MODEL is one of (trained one after another, each with the same architecture and seed; --stem picks the patch
embedding, --lr the peak learning rate of the concept-world models):
  control     the positive control: as supervised, but the per-patch head is a linear map of the residual stream
              after block 2 (the layer the demo's SAE reads), so every concept is linear there; with --late-cls,
              CLS joins the patches only after block 2, so the class head decides from the patch tokens there
  supervised  the concept world (`vitsae data concept-world`), with a class head, an image-level head for every
              concept and a per-patch head for every concept, so that the patch tokens must carry them all
  simclr      the same images, self-supervised (SimCLR: two augmented views, NT-Xent loss), no labels
  fashion     Fashion-MNIST from Debian's gzipped IDX files (28x28 grey, resized to 64x64 nearest, as RGB)

--smoke runs one step of each on a few examples, exports to memory and writes nothing (a test runs it).

Array names carry their shape: x_NCHW is a batch of images, tokens_NTD the token stream (T = 1 CLS + 64 patches),
patches_NPC per-patch values over concepts.
"""
import argparse
import gzip
import hashlib
import io
import json
import math
import os
import platform
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

CHANNELS = 3
# Fashion-MNIST's geometry; a concept-world model takes its image and patch size from the world's concepts.json.
FASHION_SIZE, FASHION_PATCH = 64, 8
WIDTH, DEPTH, HEADS, MLP = 128, 4, 4, 512
# The block whose residual stream the demo's SAE reads (`vitsae demo --layer -2`): the positive control's patch
# head reads it, so every concept is linear there by construction.
SAE_BLOCK = DEPTH - 2
MEAN, STD = [0.5] * 3, [0.5] * 3
LICENCE = "MIT (vitsae's own)"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

# Per model: the training time budget in minutes and the file stem. The machine is shared, so its speed varies:
# the number of steps is fixed after TIMING_STEPS steps to fill the budget, and recorded; --steps N repeats a run
# exactly (the learning rate of the first steps does not depend on the total).
PLAN = {
    "control": {"minutes": 70, "stem": "concept-world-control"},
    "supervised": {"minutes": 70, "stem": "concept-world-supervised"},
    "simclr": {"minutes": 30, "stem": "concept-world-simclr"},
    "fashion": {"minutes": 10, "stem": "fashion-mnist-supervised"},
}
BATCH = 128
WARMUP_STEPS = 100
TIMING_STEPS = 50


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)

    def forward(self, x, mask_TT=None):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        logits = q @ k.transpose(-1, -2) * (d // HEADS) ** -0.5
        w = torch.softmax(logits if mask_TT is None else logits + mask_TT, dim=-1)
        return self.proj((w @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LN: x + attn(ln1(x)), then + mlp(ln2(x)); the second Add is the block's residual-stream output."""

    def __init__(self):
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(WIDTH), Attention(), nn.LayerNorm(WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, MLP), nn.GELU(), nn.Linear(MLP, WIDTH))

    def forward(self, x, mask_TT=None):
        x = x + self.attn(self.ln1(x), mask_TT)
        return x + self.mlp(self.ln2(x))


def conv_stem(patch):
    """Stride-2 3x3 convolutions down to one token per patch (Xiao et al. 2021, "Early convolutions help
    transformers see better"): each token sees 15 pixels across instead of its own 8, so edges that cross a patch
    border are seen whole."""
    layers, channels = [], CHANNELS
    for out in [WIDTH // 2 ** k for k in reversed(range(int(math.log2(patch))))]:
        layers += [nn.Conv2d(channels, out, 3, 2, 1), nn.BatchNorm2d(out), nn.GELU()]
        channels = out
    return nn.Sequential(*layers[:-2])


class ViT(nn.Module):
    """CLS token, learned positions, pre-LN blocks, final LayerNorm: tokens_NTD of the last block, normalised.
    With `tap`, also returns the residual stream after block `tap` (what the recorder reads there). With
    `cls_after`, blocks up to that one keep CLS and the patches apart (CLS attends to itself only, no patch attends
    to CLS), as in CaiT's late class attention: CLS is the same for every image there, and whatever a head on the
    final CLS decides, it reads from the patch tokens after block `cls_after`."""

    def __init__(self, size, patch, stem="patch", cls_after=None):
        super().__init__()
        self.cls_after = cls_after
        tokens = 1 + (size // patch) ** 2
        apart = torch.zeros(tokens, tokens)
        apart[0, 1:] = apart[1:, 0] = float("-inf")
        self.register_buffer("apart_TT", apart, persistent=False)
        self.size, self.patch = size, patch
        self.patch_embed = nn.Conv2d(CHANNELS, WIDTH, patch, patch) if stem == "patch" else conv_stem(patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.pos = nn.Parameter(torch.randn(1, 1 + (size // patch) ** 2, WIDTH) * 0.02)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH)

    def forward(self, x_NCHW, tap=None):
        patches = self.patch_embed(x_NCHW).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(patches.shape[0], -1, -1), patches], dim=1) + self.pos
        tapped = None
        for k, block in enumerate(self.blocks):
            x = block(x, self.apart_TT if self.cls_after is not None and k <= self.cls_after else None)
            if k == tap:
                tapped = x
        return self.norm(x) if tap is None else (self.norm(x), tapped)


class WorldSupervised(nn.Module):
    """Outputs class_logits [N, classes], concept_logits [N, concepts] (present in the image) and
    patch_concept_logits [N, patches, concepts] (shown by the patch). The patch head reads the normalised last
    block, or with `patch_block` a linear map of that block's raw residual stream (the positive control: what the
    head reads there, a linear probe can); with `late_cls` CLS is also kept apart from the patches up to that
    block, so the class and image-level heads read only what the patches carry there."""

    outputs = ["class_logits", "concept_logits", "patch_concept_logits"]

    def __init__(self, size, patch, stem, classes, concepts, patch_block=None, late_cls=False):
        super().__init__()
        self.vit, self.patch_block = ViT(size, patch, stem, cls_after=patch_block if late_cls else None), patch_block
        self.class_head, self.concept_head, self.patch_head = nn.Linear(WIDTH, classes), nn.Linear(WIDTH, concepts), nn.Linear(WIDTH, concepts)

    def forward(self, x_NCHW):
        if self.patch_block is None:
            t = patch_t = self.vit(x_NCHW)
        else:
            t, patch_t = self.vit(x_NCHW, tap=self.patch_block)
        return self.class_head(t[:, 0]), self.concept_head(t[:, 0]), self.patch_head(patch_t[:, 1:])


class SimClr(nn.Module):
    """Outputs embedding [N, width] (the normalised CLS token); the projection head is used in training only."""

    outputs = ["embedding"]

    def __init__(self, size, patch, stem):
        super().__init__()
        self.vit = ViT(size, patch, stem)
        self.projector = nn.Sequential(nn.Linear(WIDTH, 256), nn.GELU(), nn.Linear(256, 128))

    def forward(self, x_NCHW):
        return self.vit(x_NCHW)[:, 0]


class Classifier(nn.Module):
    outputs = ["class_logits"]

    def __init__(self, classes):
        super().__init__()
        self.vit = ViT(FASHION_SIZE, FASHION_PATCH)
        self.class_head = nn.Linear(WIDTH, classes)

    def forward(self, x_NCHW):
        return self.class_head(self.vit(x_NCHW)[:, 0])


# ---------------------------------------------------------------------------------------------------------- data

def load_world(root, limit=None):
    """The concept world as written by `vitsae data concept-world` (layout in src/data/README.md)."""
    info = json.load(open(os.path.join(root, "concepts.json")))
    n = info["n"] if limit is None else min(limit, info["n"])
    concepts = info["concepts"]
    records = [json.loads(line) for line, _ in zip(open(os.path.join(root, "objects.jsonl")), range(n))]
    images_NHWC = np.stack([np.asarray(Image.open(os.path.join(root, r["file"])).convert("RGB")) for r in records])
    coverage = np.fromfile(os.path.join(root, info["coverage_file"]), np.uint8).reshape(info["coverage_shape"])[:n]
    present_NC = np.zeros((n, len(concepts)), np.float32)
    for i, r in enumerate(records):
        names = [f"background:{r['background']}"] + [f"{k}:{o[k]}" for o in r["objects"] for k in ("shape", "colour", "texture", "size")]
        present_NC[i, [concepts.index(c) for c in names]] = 1
    return {
        "info": info,
        "x": torch.from_numpy(images_NHWC).permute(0, 3, 1, 2).contiguous(),
        "label": torch.tensor([r["label"] for r in records]),
        "present": torch.from_numpy(present_NC),
        "patches": torch.from_numpy((coverage >= info["threshold"]).astype(np.float32)),
    }


def read_idx(path):
    with gzip.open(path) as f:
        data = f.read()
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(dims)


def load_fashion(root, split, limit=None):
    """28x28 grey images resized to 64x64 by nearest neighbour (as the model card tells the recorder) as RGB."""
    x = torch.from_numpy(read_idx(os.path.join(root, f"{split}-images-idx3-ubyte.gz"))[:limit].copy())
    y = torch.from_numpy(read_idx(os.path.join(root, f"{split}-labels-idx1-ubyte.gz"))[:limit].astype(np.int64))
    x = F.interpolate(x[:, None].float(), size=FASHION_SIZE, mode="nearest").round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return x, y


def normalise(x_NCHW):
    """uint8 images to the model's input, as the recorder computes it from the card's mean and std."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x_NCHW.float() / 255 - mean) / std


# ---------------------------------------------------------------------------------------------------- training

def lr_at(step, steps, peak):
    """Linear warm-up over WARMUP_STEPS, then cosine decay to zero at `steps`."""
    if step < WARMUP_STEPS:
        return peak * (step + 1) / WARMUP_STEPS
    return peak * 0.5 * (1 + math.cos(math.pi * (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)))


def batches(n, gen):
    """Indices of batches drawn epoch by epoch from seeded permutations, without end."""
    while True:
        order = torch.randperm(n, generator=gen)
        for pos in range(0, n - min(n, BATCH) + 1, BATCH):
            yield order[pos: pos + BATCH]


def train(model, loss_fn, n, seed, steps, minutes, lr=1e-3, log=print, checkpoint=None, every=200):
    """AdamW with weight decay on matrices. With steps None, the count is fixed after TIMING_STEPS steps so that
    training takes about `minutes`. `checkpoint()`, if given, measures the model every `every` steps and at
    the end (its time is not counted). Returns (steps, seconds, history)."""
    history = []

    def measure(step, loss):
        nonlocal start
        t = time.time()
        model.eval()
        row = {"step": step, "seconds": round(t - start), "loss": round(loss, 4), **checkpoint()}
        model.train()
        history.append(row)
        log(json.dumps(row))
        start += time.time() - t
    gen = torch.Generator().manual_seed(seed)
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "pos" not in name]
    rest = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and "pos" not in name)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    model.train()
    start = time.time()
    for step, idx in enumerate(batches(n, gen)):
        if steps is None and step == TIMING_STEPS:
            steps = max(2 * WARMUP_STEPS, round(minutes * 60 / ((time.time() - start) / step)))
            log(f"{(time.time() - start) / step:.2f} s per step: training {steps} steps")
        if step == steps:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps or TIMING_STEPS, lr)
        loss = loss_fn(idx, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps or '?'} loss {loss.item():.4f} {time.time() - start:.0f} s")
        if checkpoint and ((step + 1) % every == 0 or step + 1 == steps):
            measure(step + 1, loss.item())
    model.eval()
    return steps, time.time() - start, history


def hflip(world, idx, gen):
    """Images and per-patch targets mirrored left-right for a random half of the batch (every shape is
    left-right symmetric, so labels do not change)."""
    x = world["x"][idx]
    grid = world["info"]["grid"][0]
    patches = world["patches"][idx].view(len(idx), grid, grid, -1)
    flip = torch.rand(len(idx), generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    patches = torch.where(flip.view(-1, 1, 1, 1), patches.flip(2), patches)
    return x, patches.reshape(len(idx), grid * grid, -1)


def balance(targets_NC):
    """Positive weights sqrt((1 - p) / p) per concept (p its rate), so rare concepts (a shape on 4% of the patches)
    are not learnt last."""
    p = targets_NC.mean(0).clamp(1e-3, 1 - 1e-3)
    return ((1 - p) / p).sqrt()


def concept_loss(logits, targets, pos_weight):
    """Binary cross-entropy summed over concepts and averaged over the rest. Averaging over concepts as well made
    the 6 shape terms ~5% of the loss; the first training run then learnt colours only (patch shape F1 0)."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    return bce.sum(-1).mean()


def augment_views(x_NCHW, gen):
    """A SimCLR view per image, batched: random resized crop (scale 0.35-1, aspect 3/4-4/3) and flip by an affine
    grid, brightness, contrast and saturation jitter (x0.6-1.4), greyscale with p 0.2, and pixel noise. There is no
    hue jitter, so colour stays learnable."""
    n = x_NCHW.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)
    area, logr = u(0.35, 1.0), u(math.log(3 / 4), math.log(4 / 3))
    sx, sy = (area * logr.exp()).sqrt().clamp(max=1), (area / logr.exp()).sqrt().clamp(max=1)
    tx, ty = u(-1, 1) * (1 - sx), u(-1, 1) * (1 - sy)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, tx, sy, ty
    grid = F.affine_grid(theta, x_NCHW.shape, align_corners=False)
    v = F.grid_sample(x_NCHW.float() / 255, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    v = v * u(0.6, 1.4).view(-1, 1, 1, 1)
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    v = mean + (v - mean) * u(0.6, 1.4).view(-1, 1, 1, 1)
    grey = (0.299 * v[:, :1] + 0.587 * v[:, 1:2] + 0.114 * v[:, 2:]).expand(-1, 3, -1, -1)
    sat = torch.where(torch.rand(n, generator=gen) < 0.2, torch.zeros(n), u(0.6, 1.4)).view(-1, 1, 1, 1)
    v = grey + (v - grey) * sat
    v = v + 0.02 * torch.randn(v.shape, generator=gen)
    return (v.clamp(0, 1) - 0.5) / 0.5


def nt_xent(z1, z2, temperature=0.2):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


# -------------------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def run(model, x_NCHW, fn=None, batch=512):
    """Applies fn (default: the model) to normalised images in batches, concatenating each output."""
    fn = fn or model
    outs = [fn(normalise(x_NCHW[i: i + batch])) for i in range(0, len(x_NCHW), batch)]
    outs = [o if isinstance(o, tuple) else (o,) for o in outs]
    return [torch.cat(parts) for parts in zip(*outs)]


def f1_per_column(pred, target):
    tp = (pred & target).sum(0).float()
    return (2 * tp / (pred.sum(0) + target.sum(0)).clamp(min=1)).tolist()


def block_tokens(model, block):
    """The residual stream after block `block` (0-based): tokens_NTD, as the recorder reads it."""
    def fn(x_NCHW):
        out = {}
        handle = model.vit.blocks[block].register_forward_hook(lambda m, i, o: out.setdefault("t", o))
        model.vit(x_NCHW)
        handle.remove()
        return out["t"]
    return fn


def fit_probe(train_X, train_Y, loss, steps=200):
    """A linear probe on standardised features, fitted by full-batch Adam; returns features -> logits."""
    mu, sd = train_X.mean(0), train_X.std(0) + 1e-6
    lin = nn.Linear(train_X.shape[1], train_Y.shape[1] if train_Y.ndim == 2 else int(train_Y.max()) + 1)
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss(lin((train_X - mu) / sd), train_Y).backward()
            opt.step()
    return lambda X: lin((X - mu) / sd).detach()


def multilabel_probe_f1(train_X, train_Y, test_X, test_Y):
    """Held-out F1 per column of a logistic-regression probe per column (positives weighted to balance them)."""
    pos = train_Y.mean(0).clamp(1e-3, 1 - 1e-3)
    probe = fit_probe(train_X, train_Y, lambda z, y: F.binary_cross_entropy_with_logits(z, y, pos_weight=(1 - pos) / pos))
    return f1_per_column(probe(test_X) > 0, test_Y > 0.5)


def patch_probe(model, world, train_idx, test_idx, block, images=1000):
    """Per-concept F1 of a linear probe on the patch tokens after `block` (fitted on the patches of `images`
    images, tested on as many): can the concept be read off a patch?"""
    train_idx, test_idx = train_idx[:images], test_idx[:images]
    fn = block_tokens(model, block)
    feats = lambda idx: run(model, world["x"][idx], fn)[0][:, 1:].reshape(-1, WIDTH)
    labels = lambda idx: world["patches"][idx].reshape(-1, world["patches"].shape[-1])
    return multilabel_probe_f1(feats(train_idx), labels(train_idx), feats(test_idx), labels(test_idx))


def world_probes(model, world, train_idx, test_idx):
    """Linear probes of a concept-world model: per-patch concepts at the middle and last block, image-level
    concepts and the class from the CLS token. Comparable across objectives."""
    concepts = world["info"]["concepts"]
    named = lambda f1: {c: round(v, 4) for c, v in zip(concepts, f1)}
    out = {}
    for block in (SAE_BLOCK, DEPTH - 1):
        f1 = patch_probe(model, world, train_idx, test_idx, block)
        out[f"patch_probe_f1_block{block}"] = named(f1)
        out[f"patch_probe_mean_f1_block{block}"] = round(float(np.mean(f1)), 4)
    cls = lambda idx: run(model, world["x"][idx], block_tokens(model, DEPTH - 1))[0][:, 0]
    train_X, test_X = cls(train_idx), cls(test_idx)
    f1 = multilabel_probe_f1(train_X, world["present"][train_idx], test_X, world["present"][test_idx])
    out["cls_probe_concept_mean_f1"] = round(float(np.mean(f1)), 4)
    probe = fit_probe(train_X, world["label"][train_idx], F.cross_entropy)
    out["cls_probe_class_accuracy"] = round((probe(test_X).argmax(1) == world["label"][test_idx]).float().mean().item(), 4)
    return out


# ------------------------------------------------------------------------------------------------------ export

def export(model, path_or_buffer):
    """ONNX, opset 17, input pixel_values [N, 3, 64, 64] with a dynamic batch axis."""
    x = torch.zeros(2, CHANNELS, model.vit.size, model.vit.size)
    axes = {name: {0: "N"} for name in ["pixel_values"] + model.outputs}
    torch.onnx.export(model, x, path_or_buffer, opset_version=17, input_names=["pixel_values"], output_names=model.outputs, dynamic_axes=axes, do_constant_folding=True)


def block_tensors(onnx_path):
    """The residual-stream tensor after each block: the output of the block's second Add (`/vit/blocks.K/Add_1`)."""
    graph = onnx.load(onnx_path).graph
    names = {node.name: node.output[0] for node in graph.node}
    return [{"block": k, "tensor": names[f"/vit/blocks.{k}/Add_1"]} for k in range(DEPTH)]


def output_shapes(model, x_NCHW):
    with torch.no_grad():
        outs = model(normalise(x_NCHW[:2]))
    outs = outs if isinstance(outs, tuple) else (outs,)
    return {name: ["N"] + list(o.shape[1:]) for name, o in zip(model.outputs, outs)}


def write_card(out, stem, model, sample_x, card):
    onnx_path = os.path.join(out, stem + ".onnx")
    export(model, onnx_path)
    card = {
        "family": "vitsae-demo-vit",
        "ckpt": stem,
        "input_size": model.vit.size,
        "resize": None,
        "interpolation": "nearest",
        "mean": MEAN,
        "std": STD,
        "channel_order": "rgb",
        "prefix_tokens": 1,
        "licence": LICENCE,
        "architecture": {"kind": "ViT, pre-LN, CLS token, learned positions, final LayerNorm" + (
                             f"; CLS kept apart from the patches up to block {model.vit.cls_after}" if model.vit.cls_after is not None else ""), "patch_size": model.vit.patch, "patches": (model.vit.size // model.vit.patch) ** 2,
                         "width": WIDTH, "depth": DEPTH, "heads": HEADS, "mlp": MLP, "parameters": sum(p.numel() for p in model.parameters())},
        "inputs": {"pixel_values": ["N", CHANNELS, model.vit.size, model.vit.size]},
        "outputs": output_shapes(model, sample_x),
        "layers": block_tensors(onnx_path),
        **card,
    }
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.1f} MB) and its card", flush=True)


def environment(args, model_name, steps, seconds):
    return {
        "seed": args.seed,
        "steps": steps,
        "batch": BATCH,
        "seconds": round(seconds),
        "command": f"/usr/bin/python3 models/train_demo.py {model_name}{'' if model_name == 'fashion' else f' --world DIR --stem {args.stem} --lr {args.lr:g}'}"
                   f"{' --late-cls' if model_name == 'control' and args.late_cls else ''} --seed {args.seed} --steps {steps}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


# ------------------------------------------------------------------------------------------------------ models

def train_world(args, kind, log):
    limit = 64 if args.smoke else None
    world = load_world(args.world, limit)
    info = world["info"]
    n = len(world["x"])
    val = 16 if args.smoke else args.val
    train_n = n - val
    train_idx, test_idx = torch.arange(min(train_n, 2000)), torch.arange(train_n, n)
    torch.manual_seed(args.seed)
    steps = 1 if args.smoke else args.steps
    world_digest = hashlib.sha256(open(os.path.join(args.world, "concepts.json"), "rb").read()).hexdigest()[:16]
    data = {"dataset": "concept world (vitsae data concept-world)", "n": info["n"], "seed": info["seed"], "train": train_n, "held_out": val,
            "concepts_json_sha256_16": world_digest}
    size, patch = info["image_size"][0], info["patch_size"]
    if kind in ("supervised", "control"):
        model = WorldSupervised(size, patch, args.stem, len(info["classes"]), len(info["concepts"]), patch_block=SAE_BLOCK if kind == "control" else None,
                                late_cls=kind == "control" and args.late_cls)

        present_w, patch_w = balance(world["present"][:train_n]), balance(world["patches"][:train_n].reshape(-1, len(info["concepts"])))

        def loss_fn(idx, gen):
            x, patches = hflip(world, idx, gen)
            logits, concepts, patch_logits = model(normalise(x))
            return (F.cross_entropy(logits, world["label"][idx]) + concept_loss(concepts, world["present"][idx], present_w)
                    + concept_loss(patch_logits, patches, patch_w))

        def heads(idx):
            """The heads' held-out results: class accuracy, image-level and per-patch concept F1."""
            logits, concepts, patch_logits = run(model, world["x"][idx])
            label, present, patches = world["label"][idx], world["present"][idx] > 0.5, world["patches"][idx] > 0.5
            f1_img, f1_patch = f1_per_column(concepts > 0, present), f1_per_column(patch_logits.reshape(-1, patches.shape[-1]) > 0, patches.reshape(-1, patches.shape[-1]))
            return {
                "class_accuracy": round((logits.argmax(1) == label).float().mean().item(), 4),
                "concept_head_mean_f1": round(float(np.mean(f1_img)), 4),
                "patch_head_mean_f1": round(float(np.mean(f1_patch)), 4),
                "patch_head_f1": {c: round(v, 4) for c, v in zip(info["concepts"], f1_patch)},
            }

        def checkpoint():
            r = heads(test_idx[:500])
            f1 = r.pop("patch_head_f1")
            return {**r, "patch_head_min_f1_by_family": {g: min(f1[c] for c in names) for g, names in info["groups"].items()}}
        steps, seconds, history = train(model, loss_fn, train_n, args.seed, steps, args.minutes or PLAN[kind]["minutes"], lr=args.lr, log=log, checkpoint=checkpoint)
        accuracy = heads(test_idx)
        where = f"the raw residual stream after block {SAE_BLOCK} (the layer the demo's SAE reads)" if kind == "control" else "the normalised last block"
        if model.vit.cls_after is not None:
            where += f"; CLS attends to no patch and no patch to CLS up to block {SAE_BLOCK}"
        objective = ("cross-entropy on the class + binary cross-entropy (summed over the 22 concepts, positives weighted sqrt((1-p)/p)) "
                     f"on image-level concepts (CLS) and per-patch concepts (a linear head on {where}), left-right flips")
        labels = {"class_logits": info["classes"], "concept_logits": info["concepts"], "patch_concept_logits": info["concepts"]}
    else:
        model = SimClr(size, patch, args.stem)

        def loss_fn(idx, gen):
            x = world["x"][idx]
            embed = lambda v: model.projector(model.vit(v)[:, 0])
            return nt_xent(embed(augment_views(x, gen)), embed(augment_views(x, gen)))
        steps, seconds, history = train(model, loss_fn, train_n, args.seed, steps, args.minutes or PLAN[kind]["minutes"], lr=args.lr, log=log)
        accuracy = {}
        objective = "SimCLR NT-Xent (temperature 0.2) on two augmented views: resized crop 0.35-1, flip, brightness/contrast/saturation jitter, greyscale p 0.2, noise"
        labels = {}
    if not args.smoke:
        log("probing")
        accuracy.update(world_probes(model, world, train_idx, test_idx))
    accuracy["measured_on"] = f"the last {val} images of the training world (held out)"
    card = {"training": {**environment(args, kind, steps, seconds), "objective": objective, "data": data, "history": history}, "accuracy": accuracy,
            "output_labels": labels}
    return model, world["x"], card


def train_fashion(args, log):
    limit = 256 if args.smoke else None
    x, y = load_fashion(args.fashion, "train", limit)
    tx, ty = load_fashion(args.fashion, "t10k", 64 if args.smoke else None)
    torch.manual_seed(args.seed)
    model = Classifier(10)
    steps = 1 if args.smoke else args.steps

    def loss_fn(idx, gen):
        # Random flips per image and a shift of up to 4 pixels (under 2 source pixels) per batch, against overfitting.
        b = x[idx]
        b = torch.where((torch.rand(len(idx), generator=gen) < 0.5).view(-1, 1, 1, 1), b.flip(3), b)
        dx, dy = (int(v) for v in torch.randint(-4, 5, (2,), generator=gen))
        b = torch.roll(b, shifts=(dy, dx), dims=(2, 3))
        return F.cross_entropy(model(normalise(b)), y[idx])
    steps, seconds, _ = train(model, loss_fn, len(x), args.seed, steps, args.minutes or PLAN["fashion"]["minutes"], log=log)
    (logits,) = run(model, tx)
    accuracy = {"test_accuracy": round((logits.argmax(1) == ty).float().mean().item(), 4), "measured_on": f"Fashion-MNIST t10k ({len(tx)} images)"}
    data = {"dataset": "Fashion-MNIST (Zalando, MIT licence), Debian dataset-fashion-mnist", "train": len(x), "resize": "28x28 -> 64x64 nearest, grey as RGB"}
    objective = "cross-entropy on the 10 classes, flips and shifts"
    card = {"training": {**environment(args, "fashion", steps, seconds), "objective": objective, "data": data}, "accuracy": accuracy,
            "output_labels": {"class_logits": FASHION_CLASSES}}
    return model, tx, card


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", choices=sorted(PLAN))
    p.add_argument("--world", help="concept world directory (vitsae data concept-world)")
    p.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="optimiser steps (default: as many as fit the model's time budget)")
    p.add_argument("--minutes", type=float, help="time budget per model (default: " + ", ".join(f"{k} {v['minutes']}" for k, v in PLAN.items()) + ")")
    p.add_argument("--stem", choices=["patch", "conv"], default="patch", help="patch embedding of the concept-world models: one linear map per patch, or stride-2 convolutions")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the concept-world models")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 was the fastest for these small models)")
    p.add_argument("--val", type=int, default=2000, help="concept-world images held out (the last ones)")
    p.add_argument("--late-cls", action="store_true", help="control only: CLS joins the patches after the SAE's block (CaiT-style), so its heads read the patches there")
    p.add_argument("--smoke", action="store_true", help="one step on a few examples; export to memory, write nothing")
    args = p.parse_args()
    if any(m != "fashion" for m in args.models) and not args.world:
        p.error("--world DIR is needed for the concept-world models")
    torch.set_num_threads(args.threads)
    for name in args.models:
        log = lambda m, name=name: print(f"[{name}] {m}", flush=True)
        torch.manual_seed(args.seed)
        model, sample_x, card = train_fashion(args, log) if name == "fashion" else train_world(args, name, log)
        log(json.dumps({k: v for k, v in card["accuracy"].items() if not isinstance(v, dict)}))
        if args.smoke:
            buf = io.BytesIO()
            export(model, buf)
            log(f"exported {len(buf.getvalue())} bytes to memory; outputs {output_shapes(model, sample_x)}")
        else:
            write_card(args.out, PLAN[name]["stem"], model, sample_x, card)


if __name__ == "__main__":
    main()
