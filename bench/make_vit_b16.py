"""The ViT-B/16 of the recording benchmark (`npm run bench`): torchvision's own definition with random weights.

`build()` makes the model (seeded, so bench/torch_record.py rebuilds the same weights); run as a script, it exports
it to ONNX (opset 17, dynamic batch axis) at argv[1] with a model card beside it: torchvision's ImageNet
preprocessing (resize 256 bilinear, centre crop 224), which vitsae's "imagenet" preset matches.
"""
import json
import sys

import torch
import torchvision


def build():
    torch.manual_seed(0)
    return torchvision.models.vit_b_16(weights=None).eval()


def main(out):
    torch.set_num_threads(2)
    x = torch.randn(2, 3, 224, 224)
    axes = {"x": {0: "batch"}, "logits": {0: "batch"}}
    # Exported with autograd on: under no_grad, nn.MultiheadAttention takes a fused fast path ONNX cannot express.
    torch.onnx.export(build(), x, out, opset_version=17, input_names=["x"], output_names=["logits"], dynamic_axes=axes)
    with open(out[: -len(".onnx")] + ".json", "w") as f:
        json.dump({"preset": "imagenet", "family": "torchvision", "ckpt": "vit_b_16 (random weights, seed 0)"}, f)


if __name__ == "__main__":
    main(sys.argv[1])
