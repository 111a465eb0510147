"""PyTorch reference recording for `npm run bench` (Debian python3-torch and python3-torchvision; never used by the
toolkit): the eager way to record a ViT's activations. ImageFolder + PIL + torchvision transforms (torchvision's
ImageNet preprocessing, as vitsae's "imagenet" preset) in a DataLoader, a forward hook on one encoder block that
copies its output to a float32 file, under inference_mode. Prints one JSON line with the measured images/s,
timed from the first batch requested to the last written, like `vitsae record`.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from torchvision import datasets, transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vit_b16 import build  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--data", required=True, help="an image folder with class subfolders")
p.add_argument("--out", required=True, help="file the activations [images, tokens, 768] are appended to")
p.add_argument("--layer", type=int, default=-1, help="encoder block (negative counts from the end)")
p.add_argument("--batch", type=int, default=16)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
a = p.parse_args()
torch.set_num_threads(a.threads)

model = build()
preprocess = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
loader = torch.utils.data.DataLoader(datasets.ImageFolder(a.data, preprocess), batch_size=a.batch, num_workers=a.workers)
out = open(a.out, "wb")
model.encoder.layers[a.layer].register_forward_hook(lambda _module, _inputs, output: output.numpy().astype(np.float32, copy=False).tofile(out))

n = 0
start = time.perf_counter()
with torch.inference_mode():
    for x, _labels in loader:
        model(x)
        n += len(x)
out.close()
print(json.dumps({"images": n, "images_per_s": n / (time.perf_counter() - start)}))
