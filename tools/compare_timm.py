#!/usr/bin/env python3
"""Run timm and vitcuda on the same weights and the same images; report the largest logit
difference, both ways:

  timm -> vitcuda: a timm VisionTransformer's state_dict saved with safetensors is loaded by
                   vit_infer (--model NAME) and both run on the same PNG images;
  vitcuda -> timm: vit_infer --export-weights writes vitcuda's own checkpoint of those weights,
                   which timm loads with load_state_dict(strict=True) and runs again.

Needs torch, timm, safetensors, numpy and Pillow (the lent GPU machine has them; on a CPU
machine: pip install torch timm safetensors pillow). Example:

  python3 tools/compare_timm.py --vit-infer build/tools/vit_infer --model vit_tiny_patch16_224
  python3 tools/compare_timm.py --vit-infer build/tools/vit_infer --model deit_tiny_distilled_patch16_224

DeiT's distilled models (timm's VisionTransformerDistilled: cls and distillation tokens, head and
head_dist) are compared in eval mode, where timm returns the mean of the two heads' logits, as
vitcuda's distilled model does.
"""
import argparse
import os
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vit-infer", default="build/tools/vit_infer", help="path of the vit_infer binary")
    ap.add_argument("--model", default="vit_tiny_patch16_224", help="a timm model name that is also a vitcuda preset")
    ap.add_argument("--images", type=int, default=4, help="number of random images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="vitcuda device: cpu, cuda or auto")
    ap.add_argument("--global-pool", default=None, help="timm global_pool override (token or avg)")
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="allowed max |dlogit| / max |logit| (fp32 on both sides: ~1e-6 is typical)")
    args = ap.parse_args()

    try:
        import numpy as np
        import torch
        import timm
        from PIL import Image
        from safetensors.torch import save_file, load_file
    except ImportError as e:
        print(f"compare_timm: skipped: {e} (needs torch, timm, safetensors, pillow)")
        return 77  # ctest's SKIP_RETURN_CODE

    torch.manual_seed(args.seed)
    kwargs = {"global_pool": args.global_pool} if args.global_pool else {}
    model = timm.create_model(args.model, pretrained=False, **kwargs).eval()
    with torch.no_grad():  # make every tensor matter: timm's init leaves biases at 0, norms at 1
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    cfg = model.pretrained_cfg
    # vitcuda's presets normalise as timm's pretrained configs: mean = std = 0.5 for the augreg
    # ViTs, ImageNet's mean / std for DeiT.
    mean, std = list(cfg.get("mean", (0.5, 0.5, 0.5))), list(cfg.get("std", (0.5, 0.5, 0.5)))
    size = model.patch_embed.img_size[0]

    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "timm.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
        rng = np.random.default_rng(args.seed)
        images = rng.integers(0, 256, size=(args.images, size, size, 3), dtype=np.uint8)
        paths = []
        for i, im in enumerate(images):
            paths.append(os.path.join(tmp, f"img{i}.png"))
            Image.fromarray(im).save(paths[-1])

        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            ref = model(x).numpy()

        logits_path = os.path.join(tmp, "logits.f32")
        exported = os.path.join(tmp, "vitcuda.safetensors")
        cmd = [args.vit_infer, "--checkpoint", weights, "--model", args.model, "--device", args.device,
               "--no-progress", "--save-logits", logits_path, "--export-weights", exported]
        if args.global_pool:
            cmd += ["--global-pool", args.global_pool]
        r = subprocess.run(cmd + paths, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout + r.stderr, file=sys.stderr)
            print("compare_timm: vit_infer failed", file=sys.stderr)
            return 1
        ours = np.fromfile(logits_path, dtype=np.float32).reshape(ref.shape)
        scale = float(np.abs(ref).max())
        d1 = float(np.abs(ours - ref).max())
        print(f"timm -> vitcuda  {args.model}: max |logit| {scale:.4f}, max |difference| {d1:.3e} "
              f"({d1 / scale:.2e} relative), top-1 agree {np.mean(ours.argmax(1) == ref.argmax(1)) * 100:.0f}%")

        back = timm.create_model(args.model, pretrained=False, **kwargs).eval()
        back.load_state_dict(load_file(exported), strict=True)
        with torch.no_grad():
            again = back(x).numpy()
        d2 = float(np.abs(again - ref).max())
        print(f"vitcuda -> timm  {args.model}: strict load ok, max |difference| {d2:.3e}")
        ok = d1 <= args.tol * scale and d2 == 0.0
        print("compare_timm: " + ("PASS" if ok else f"FAIL (tolerance {args.tol} relative)"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
