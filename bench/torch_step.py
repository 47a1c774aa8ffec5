#!/usr/bin/env python3
"""PyTorch's side of bench/bench_step.cu: whole training and inference steps of the same four ViTs,
eager and torch.compile, on the same GPU, printing the same fields (img/s, step ms, TFLOP/s, MFU).

  python3 bench/torch_step.py --json torch_step.json                    # all four, eager + compile
  python3 bench/torch_step.py --models vit_fmnist --device cpu --no-compile --steps 2   # self-check

Models (default batch as bench_step):
  vit_fmnist B128, vit_keras_cifar100 B256   a small torch module built here that follows vitcuda's
      graph op for op (LocalViT below: Conv2d patch embedding, cls token / none, pos embed, pre-norm
      blocks with fused qkv and F.scaled_dot_product_attention, final LayerNorm, token / avg /
      flatten pooling, head MLP with GELU, pre-logits, classifier), from the presets' values
      (host/config.cpp, mirrored in PRESETS). timm's VisionTransformer cannot express the Keras
      preset (head dim 64 != 64/4, GELU after fc2, Flatten + 2048/1024 head MLP), so both small
      ones use LocalViT.
  vit_small_patch16_224, vit_base_patch16_224 B128   timm.create_model(name) (needs timm), or
      LocalViT with --impl local.
Each step: the same host uint8 batch is uploaded (as vitcuda uploads its batch every step), then
  train: forward under torch.autocast(bf16) (fp32 weights: autocast's bf16 copies, as vitcuda's
         bf16 weight copy of fp32 masters), CrossEntropyLoss(label_smoothing=0.1) on fp32 logits,
         zero_grad, backward, torch.optim.AdamW(fused=True, lr 1e-3, betas 0.9/0.999, eps 1e-8,
         weight decay 0.05; none on biases, norms, cls token, pos embed), dropout/drop-path as the
         preset sets them;
  infer: eval(), torch.no_grad(), forward under autocast + the loss without smoothing.
  vitcuda's step also computes the global gradient norm and reads the losses back every step
  (blocking waits); torch does neither unless --sync-loss (loss.item() every step).
Timing: CUDA events around --steps steps after --warmup steps (torch.compile compiles during the
  warm-up; its seconds are reported as compile_s); time.perf_counter on the CPU.
FLOPs (the same convention as bench_step): per image 2·MACs forward (infer), 6·MACs (train), where
  MACs = Np·(C·P²)·D + depth·(T·D·3A + 2·T²·A + T·A·D + 2·T·D·Hm) + head Linear layers
  (Np patches, T tokens, D width, A = heads·head_dim, Hm MLP hidden), as Model::macs_per_image.
MFU = TFLOP/s / peak, the peak measured here (torch.mm bf16 8192³ on the GPU, as bench_step's
  peak/gemm_bf16_8192 with cuBLASLt) or given with --peak-tflops (gpu_session.sh passes
  bench_step's, so both sides share one denominator).
Exit status: 77 (ctest's skip) with one line saying why when torch, timm (for a timm model with
  the default --impl timm) or CUDA (--device cuda) is missing; 1 when a run failed; 0 otherwise.
"""
import argparse
import json
import os
import sys
import time

SKIP = 77

# vitcuda's presets (host/config.cpp), the fields LocalViT and the FLOP count need.
_TIMM_MEAN = [0.5, 0.5, 0.5]
PRESETS = {
    "vit_fmnist": dict(batch=128, timm=False, img_size=28, in_chans=1, patch=7, dim=64, depth=6, heads=2, head_dim=0,
                       mlp_hidden=128, mlp_gelu_out=False, qkv_bias=True, class_token=True, pool="token",
                       drop_rate=0.0, attn_drop=0.0, drop_path=0.05, head_mlp=[], head_drop=0.0, pre_logits=0,
                       num_classes=10, mean=[0.2860], std=[0.3530]),
    "vit_keras_cifar100": dict(batch=256, timm=False, img_size=72, in_chans=3, patch=6, dim=64, depth=8, heads=4,
                               head_dim=64, mlp_hidden=128, mlp_gelu_out=True, qkv_bias=True, class_token=False,
                               pool="flatten", drop_rate=0.1, attn_drop=0.1, drop_path=0.0, head_mlp=[2048, 1024],
                               head_drop=0.5, pre_logits=0, num_classes=100, mean=[0.5071, 0.4865, 0.4409],
                               std=[0.2673, 0.2564, 0.2762]),
    "vit_small_patch16_224": dict(batch=128, timm=True, img_size=224, in_chans=3, patch=16, dim=384, depth=12,
                                  heads=6, head_dim=0, mlp_hidden=1536, mlp_gelu_out=False, qkv_bias=True,
                                  class_token=True, pool="token", drop_rate=0.0, attn_drop=0.0, drop_path=0.0,
                                  head_mlp=[], head_drop=0.0, pre_logits=0, num_classes=1000, mean=_TIMM_MEAN,
                                  std=_TIMM_MEAN),
    "vit_base_patch16_224": dict(batch=128, timm=True, img_size=224, in_chans=3, patch=16, dim=768, depth=12,
                                 heads=12, head_dim=0, mlp_hidden=3072, mlp_gelu_out=False, qkv_bias=True,
                                 class_token=True, pool="token", drop_rate=0.0, attn_drop=0.0, drop_path=0.0,
                                 head_mlp=[], head_drop=0.0, pre_logits=0, num_classes=1000, mean=_TIMM_MEAN,
                                 std=_TIMM_MEAN),
}
LN_EPS = 1e-6
LR, BETAS, EPS, WEIGHT_DECAY, SMOOTHING = 1e-3, (0.9, 0.999), 1e-8, 0.05, 0.1
FLOPS_FORMULA = ("GFLOP/img = 2*MACs (infer) or 6*MACs (train); MACs = Np*C*P^2*D + depth*(T*D*3A + 2*T^2*A + "
                 "T*A*D + 2*T*D*Hm) + head Linear layers (Model::macs_per_image)")


def head_dim(c):
    return c["head_dim"] or c["dim"] // c["heads"]


def macs_per_image(c):
    """Model::macs_per_image (host/model.cpp): GEMMs and the two attention matmuls."""
    grid = c["img_size"] // c["patch"]
    n_patches = grid * grid
    t = n_patches + (1 if c["class_token"] else 0)
    d, a, hm = c["dim"], c["heads"] * head_dim(c), c["mlp_hidden"]
    macs = n_patches * c["in_chans"] * c["patch"] ** 2 * d
    macs += c["depth"] * (t * d * 3 * a + 2 * t * t * a + t * a * d + 2 * t * d * hm)
    feat = t * d if c["pool"] == "flatten" else d
    for h in c["head_mlp"]:
        macs += feat * h
        feat = h
    if c["pre_logits"]:
        macs += feat * c["pre_logits"]
        feat = c["pre_logits"]
    return macs + feat * c["num_classes"]


def build_local(torch, c):
    """vitcuda's graph (host/model.cpp Model::forward) as a torch module."""
    nn, F = torch.nn, torch.nn.functional

    def drop_path(x, p, training):
        if not training or p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)
        return x * keep / (1.0 - p)

    class Block(nn.Module):
        def __init__(self, dpr):
            super().__init__()
            d, self.h, self.hd = c["dim"], c["heads"], head_dim(c)
            a = self.h * self.hd
            self.dpr = dpr
            self.norm1 = nn.LayerNorm(d, eps=LN_EPS)
            self.qkv = nn.Linear(d, 3 * a, bias=c["qkv_bias"])
            self.proj = nn.Linear(a, d)
            self.norm2 = nn.LayerNorm(d, eps=LN_EPS)
            self.fc1 = nn.Linear(d, c["mlp_hidden"])
            self.fc2 = nn.Linear(c["mlp_hidden"], d)
            self.drop = nn.Dropout(c["drop_rate"])

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.h, self.hd).permute(2, 0, 3, 1, 4).unbind(0)
            att = F.scaled_dot_product_attention(q, k, v, dropout_p=c["attn_drop"] if self.training else 0.0)
            att = att.transpose(1, 2).reshape(b, t, self.h * self.hd)
            x = x + drop_path(self.drop(self.proj(att)), self.dpr, self.training)
            y = self.drop(F.gelu(self.fc1(self.norm2(x))))
            y = self.fc2(y)
            if c["mlp_gelu_out"]:
                y = F.gelu(y)
            return x + drop_path(self.drop(y), self.dpr, self.training)

    class LocalViT(nn.Module):
        def __init__(self):
            super().__init__()
            d, depth = c["dim"], c["depth"]
            grid = c["img_size"] // c["patch"]
            t = grid * grid + (1 if c["class_token"] else 0)
            self.patch_embed = nn.Conv2d(c["in_chans"], d, c["patch"], stride=c["patch"])
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if c["class_token"] else None
            self.pos_embed = nn.Parameter(torch.randn(1, t, d) * 0.02)
            self.pos_drop = nn.Dropout(c["drop_rate"])
            rates = [c["drop_path"] * i / (depth - 1) if depth > 1 else c["drop_path"] for i in range(depth)]
            self.blocks = nn.ModuleList(Block(r) for r in rates)
            self.norm = nn.LayerNorm(d, eps=LN_EPS)  # "fc_norm" after avg pooling, "norm" before the others
            feat = t * d if c["pool"] == "flatten" else d
            mlp = []
            for h in c["head_mlp"]:
                mlp.append(nn.Linear(feat, h))
                feat = h
            self.head_mlp = nn.ModuleList(mlp)
            self.pre_logits = nn.Linear(feat, c["pre_logits"]) if c["pre_logits"] else None
            self.head = nn.Linear(c["pre_logits"] or feat, c["num_classes"])
            self.head_drop = nn.Dropout(c["head_drop"])

        def forward(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)
            if self.cls_token is not None:
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = self.pos_drop(x + self.pos_embed)
            for blk in self.blocks:
                x = blk(x)
            if c["pool"] == "avg":
                x = self.norm(x[:, 1 if c["class_token"] else 0:].mean(dim=1))
            else:
                x = self.norm(x)
                x = x[:, 0] if c["pool"] == "token" else x.flatten(1)
            x = self.head_drop(x)
            for lin in self.head_mlp:
                x = self.head_drop(F.gelu(lin(x)))
            if self.pre_logits is not None:
                x = torch.tanh(self.pre_logits(x))
            return self.head(x)

    return LocalViT()


def with_input_normalisation(torch, net, c):
    """uint8 NCHW images -> (x/255 - mean) / std -> net, as vitcuda's patch extraction."""
    class Normalised(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(c["mean"]).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(c["std"]).view(1, -1, 1, 1))

        def forward(self, images):
            return self.net((images.float() / 255.0 - self.mean) / self.std)

    return Normalised()


def param_groups(model):
    """AdamW groups as vitcuda's ParamSpec::decay: no decay on biases, norms, cls token, pos embed."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim <= 1 or name.endswith(("pos_embed", "cls_token")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


class Timer:
    """CUDA events on the GPU, perf_counter on the CPU; milliseconds."""

    def __init__(self, torch, device):
        self.torch, self.cuda = torch, device.type == "cuda"

    def time_ms(self, fn, reps):
        if self.cuda:
            start, stop = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) * 1e3

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()


def measure_peak_tflops(torch, device, timer):
    if device.type == "cuda":
        n, dtype, reps = 8192, torch.bfloat16, 20
    else:  # a rough CPU figure, for the self-check's MFU column only
        n, dtype, reps = 1024, torch.float32, 5
    a = torch.rand(n, n, device=device, dtype=dtype) - 0.5
    b = torch.rand(n, n, device=device, dtype=dtype) - 0.5
    for _ in range(3):
        torch.mm(a, b)
    timer.sync()
    ms = timer.time_ms(lambda: torch.mm(a, b), reps)
    return 2.0 * n ** 3 * reps / (ms / 1e3) / 1e12, f"torch.mm {str(dtype).replace('torch.', '')} {n}^3"


def make_optimizer(torch, model, device, notes):
    groups = param_groups(model)
    try:
        return torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, fused=True)
    except (RuntimeError, TypeError, ValueError) as e:  # old torch, or no fused kernel for this device
        notes.append(f"fused AdamW unavailable on {device.type} ({e}); foreach AdamW instead")
        return torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, foreach=True)


def run_one(torch, args, name, c, net, device, timer, mode, phase, peak, notes):
    """Times one (model, eager|compile, train|infer) pair; returns its result dict."""
    batch = args.batch or c["batch"]
    n_pix = batch * c["in_chans"] * c["img_size"] ** 2
    # The bench_step pattern (i * 37 % 251) as uint8, labels b % classes, on the host.
    images = (torch.arange(n_pix, dtype=torch.int64) * 37 % 251).to(torch.uint8).view(
        batch, c["in_chans"], c["img_size"], c["img_size"])
    labels = torch.arange(batch, dtype=torch.int64) % c["num_classes"]
    if device.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()
    train = phase == "train"
    model = net
    if mode == "compile":
        model = torch.compile(net, mode=None if args.compile_mode == "default" else args.compile_mode)
    net.train(train)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=SMOOTHING if train else 0.0)
    opt = make_optimizer(torch, net, device, notes) if train else None
    amp = dict(device_type=device.type, dtype=torch.bfloat16)

    def step():
        x = images.to(device, non_blocking=True)
        y = labels.to(device, non_blocking=True)
        if train:
            with torch.autocast(**amp):
                logits = model(x)
            loss = crit(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad(), torch.autocast(**amp):
                logits = model(x)
                loss = crit(logits.float(), y)
        if args.sync_loss:
            loss.item()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    timer.sync()
    warm_s = time.perf_counter() - t0
    ms = timer.time_ms(step, args.steps) / args.steps
    flops_img = (6.0 if train else 2.0) * macs_per_image(c)
    tflops = batch * flops_img / (ms / 1e3) / 1e12
    return dict(model=name, impl=args.impl_of[name], batch=batch, mode=mode, phase=phase,
                img_per_s=batch / (ms / 1e3), step_ms=ms, tflops=tflops, mfu=tflops / peak if peak else 0.0,
                gflop_per_img=flops_img / 1e9, params=sum(p.numel() for p in net.parameters()),
                warmup_s=warm_s, compile_s=warm_s if mode == "compile" else 0.0, steps=args.steps,
                warmup=args.warmup)


def ratio_table(bench_step_json, torch_step_json):
    """Markdown: vitcuda (bench_step's JSON) against torch eager / torch.compile (this script's JSON)."""
    def load(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            return {"error": f"{path}: {e}"}

    bs, ts = load(bench_step_json), load(torch_step_json)
    ours = {}  # (model, phase) -> bench_step counters
    for b in bs.get("benchmarks", []):
        parts = b.get("name", "").split("/")  # train/vit_fmnist/B128/manual_time
        if len(parts) >= 3 and parts[0] in ("train", "infer") and b.get("run_type", "iteration") == "iteration":
            ours[(parts[1], parts[0])] = b
    theirs = {(r["model"], r["phase"], r["mode"]): r for r in ts.get("results", [])}
    skipped = {(r["model"], r["phase"], r["mode"]): r.get("reason", "") for r in ts.get("skipped", [])}
    errors = {(r["model"], r["phase"], r["mode"]): r.get("error", "") for r in ts.get("errors", [])}
    peak = next((b.get("peak_TFLOP/s") for b in ours.values() if b.get("peak_TFLOP/s")), None)

    def num(v, fmt):
        if not isinstance(v, (int, float)):
            return "–"
        if fmt == "rate":  # img/s: whole numbers, 3 digits below 100
            return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return format(v, fmt)

    def torch_cell(model, phase, mode, key, fmt):
        r = theirs.get((model, phase, mode))
        if r:
            return num(r.get(key), fmt)
        if (model, phase, mode) in errors:
            return "failed"
        return "skipped" if (model, phase, mode) in skipped else "–"

    def ratio(a, model, phase, mode):
        r = theirs.get((model, phase, mode))
        b = r.get("img_per_s") if r else None
        return f"{a / b:.2f}×" if isinstance(a, (int, float)) and b else "–"

    lines = ["# vitcuda vs PyTorch: whole training / inference steps", ""]
    ctx = bs.get("context", {})
    lines.append(f"vitcuda: bench_step (bf16, CUDA events), {ctx.get('date', '?')}, {ctx.get('host_name', '?')}. "
                 f"PyTorch {ts.get('torch', '?')} (timm {ts.get('timm') or '–'}) on {ts.get('device', '?')}: "
                 f"bf16 autocast, fused AdamW, label smoothing 0.1, torch.compile mode "
                 f"{ts.get('compile_mode', '?')} (torch_step.py).")
    lines.append(f"MFU: model TFLOP/s over the measured dense bf16 GEMM rate, vitcuda {num(peak, '.4g')} TFLOP/s "
                 f"(cuBLASLt 8192³), torch {num(ts.get('peak_tflops'), '.4g')} TFLOP/s ({ts.get('peak_source', '?')}). "
                 f"{ts.get('flops_formula', FLOPS_FORMULA)}. Ratios: vitcuda img/s over torch img/s (> 1: vitcuda "
                 f"faster). launches + GEMMs, syncs: vitcuda's kernel launches, cuBLASLt matmuls and blocking host waits "
                 f"per step.")
    if ctx.get("smoke"):
        lines.append(f"**bench_step is a smoke build ({ctx['smoke']})**")
    for name, d in (("bench_step", bs), ("torch_step", ts)):
        if d.get("error"):
            lines.append(f"**{name}: {d['error']}**")
    lines += ["", "| model | batch | step | vitcuda img/s | eager img/s | compile img/s | vs eager | vs compile | "
                  "MFU vitcuda | MFU eager | MFU compile | launches + GEMMs | syncs |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    checks = []
    for model in PRESETS:
        for phase in ("train", "infer"):
            o = ours.get((model, phase), {})
            if not o and not any(k[0] == model and k[1] == phase for k in list(theirs) + list(skipped) + list(errors)):
                continue
            a = o.get("img/s")
            batches = {int(o["batch"])} if "batch" in o else set()
            batches |= {int(r["batch"]) for k, r in theirs.items() if k[:2] == (model, phase)}
            if len(batches) > 1:
                checks.append(f"{model} {phase}: batches differ: vitcuda {o.get('batch')}, torch "
                              f"{sorted(int(r['batch']) for k, r in theirs.items() if k[:2] == (model, phase))}")
            batch = " / ".join(str(b) for b in sorted(batches)) or str(PRESETS[model]["batch"])
            lines.append(
                f"| {model} | {batch} | {phase} | {num(a, 'rate')} | "
                f"{torch_cell(model, phase, 'eager', 'img_per_s', 'rate')} | "
                f"{torch_cell(model, phase, 'compile', 'img_per_s', 'rate')} | {ratio(a, model, phase, 'eager')} | "
                f"{ratio(a, model, phase, 'compile')} | {num(o.get('MFU'), '.1%')} | "
                f"{torch_cell(model, phase, 'eager', 'mfu', '.1%')} | {torch_cell(model, phase, 'compile', 'mfu', '.1%')} | "
                f"{num(o.get('launches'), '.0f')} + {num(o.get('gemms'), '.0f')} | {num(o.get('syncs'), '.0f')} |")
            # Both sides count the same FLOPs and parameters when they build the same model.
            for r in (theirs.get((model, phase, m)) for m in ("eager", "compile")):
                if not r or not o:
                    continue
                if abs(r["gflop_per_img"] - o.get("GFLOP/img", 0)) > 1e-6 * max(1.0, r["gflop_per_img"]):
                    checks.append(f"{model} {phase}: GFLOP/img vitcuda {o.get('GFLOP/img')} != torch "
                                  f"{r['gflop_per_img']}")
                if int(r["params"]) != int(o.get("params", -1)):
                    checks.append(f"{model}: parameters vitcuda {int(o.get('params', -1))} != torch {r['params']} "
                                  f"({r['impl']})")
    lines.append("")
    for k, reason in skipped.items():
        lines.append(f"* torch {k[2]} {k[0]} {k[1]}: skipped ({reason})")
    for k, err in errors.items():
        lines.append(f"* torch {k[2]} {k[0]} {k[1]}: FAILED: {err}")
    comp = [r for r in theirs.values() if r["mode"] == "compile"]
    if comp:
        lines.append("* torch.compile seconds (compile + warm-up): " +
                     ", ".join(f"{r['model']} {r['phase']} {r['compile_s']:.0f}" for r in comp))
    for n in ts.get("notes", []):
        lines.append(f"* note: {n}")
    for c in sorted(set(checks)):
        lines.append(f"* **MISMATCH** {c}")
    if not checks and theirs and ours:
        lines.append("* GFLOP/img and parameter counts agree between the two sides")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["all"], help=f"'all' or some of: {' '.join(PRESETS)}")
    ap.add_argument("--batch", type=int, default=0, help="batch for every model (default: each model's, as bench_step)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (torch.compile compiles here)")
    ap.add_argument("--phases", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    ap.add_argument("--eager", action=argparse.BooleanOptionalAction, default=True, help="time eager PyTorch")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="time torch.compile")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode: default, reduce-overhead, ...")
    ap.add_argument("--compile-models", nargs="+", default=["all"], help="models to compile ('all')")
    ap.add_argument("--impl", choices=["timm", "local"], default="timm",
                    help="vit_small/base_patch16_224 through timm.create_model (timm) or this file's LocalViT (local)")
    ap.add_argument("--device", choices=["cuda", "cpu", "auto"], default="cuda",
                    help="cuda (exit 77 without a GPU), cpu (a self-check), auto (cuda when present)")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="MFU denominator (default: measured here)")
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="seconds for the whole call (0: no limit): a run starts only when its estimate still fits "
                         "(eager 10 s, compile train --compile-estimate, compile infer half of it), else it is "
                         "skipped and listed; eager runs go first, then compile runs, small models first")
    ap.add_argument("--compile-estimate", type=float, default=60.0,
                    help="seconds a cold torch.compile training run takes, for --time-budget")
    ap.add_argument("--table", nargs=2, metavar=("BENCH_STEP_JSON", "TORCH_STEP_JSON"),
                    help="print the markdown ratio table of the two result files and exit (no torch needed)")
    ap.add_argument("--sync-loss", action="store_true", help="loss.item() every step (vitcuda reads its losses back)")
    ap.add_argument("--json", default="", help="write the results here (rewritten after every run)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t_start = time.perf_counter()
    if args.table:
        print(ratio_table(*args.table), end="")
        return 0

    models = list(PRESETS) if "all" in args.models else args.models
    for m in models:
        if m not in PRESETS:
            ap.error(f"unknown model {m!r} (known: {', '.join(PRESETS)})")
    compile_models = set(models if "all" in args.compile_models else args.compile_models)
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")

    try:
        import torch
    except ImportError as e:
        print(f"torch_step: skipped: PyTorch is not installed ({e})")
        return SKIP
    want_timm = args.impl != "local" and any(PRESETS[m]["timm"] for m in models)
    timm = None
    if want_timm:
        try:
            import timm
        except ImportError as e:
            print(f"torch_step: skipped: timm is not installed ({e}); needed for "
                  f"{', '.join(m for m in models if PRESETS[m]['timm'])} (or use --impl local)")
            return SKIP
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("torch_step: skipped: no CUDA device for PyTorch (torch.cuda.is_available() is False; --device cpu "
              "runs the self-check)")
        return SKIP
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # only fp32 matmuls outside autocast (none in the step)
        torch.backends.cudnn.allow_tf32 = True
    args.impl_of = {m: ("timm" if PRESETS[m]["timm"] and args.impl != "local" else "local") for m in models}

    timer = Timer(torch, device)
    if args.peak_tflops > 0:
        peak, peak_src = args.peak_tflops, "--peak-tflops"
    else:
        peak, peak_src = measure_peak_tflops(torch, device, timer)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch_step: torch {torch.__version__}" + (f", timm {timm.__version__}" if timm else "") +
          f", device {dev_name}, bf16 autocast, peak {peak:.4g} TFLOP/s ({peak_src})")
    print(f"torch_step: {FLOPS_FORMULA}")

    out = dict(tool="torch_step", torch=torch.__version__, timm=timm.__version__ if timm else None,
               device=dev_name, peak_tflops=peak, peak_source=peak_src, flops_formula=FLOPS_FORMULA,
               compile_mode=args.compile_mode, sync_loss=args.sync_loss, results=[], skipped=[], errors=[], notes=[])

    def save():
        if args.json:
            tmp = args.json + ".tmp"
            with open(tmp, "w") as f:
                json.dump(out, f, indent=1)
            os.replace(tmp, args.json)

    plan = []  # eager first (every model), then compile (small models first)
    if args.eager:
        plan += [(m, "eager") for m in models]
    if args.compile:
        plan += [(m, "compile") for m in models if m in compile_models]
    def fits(mode, phase):
        if not args.time_budget:
            return True
        est = 10.0 if mode == "eager" else args.compile_estimate * (1.0 if phase == "train" else 0.5)
        return args.time_budget - (time.perf_counter() - t_start) >= est

    def skip(name, mode, phase):
        out["skipped"].append(dict(model=name, mode=mode, phase=phase, reason="time budget"))
        print(f"torch_step: {name} {mode} {phase}: skipped: would not fit the time budget "
              f"({args.time_budget:.0f}s, {time.perf_counter() - t_start:.0f}s spent)")

    failed = False
    for name, mode in plan:
        c = PRESETS[name]
        if not fits(mode, args.phases[0]):
            for phase in args.phases:
                skip(name, mode, phase)
            save()
            continue
        torch.manual_seed(args.seed)
        if args.impl_of[name] == "timm":
            net = timm.create_model(name, pretrained=False, num_classes=c["num_classes"])
        else:
            net = build_local(torch, c)
        net = with_input_normalisation(torch, net, c).to(device)
        for phase in args.phases:
            if not fits(mode, phase):
                skip(name, mode, phase)
                save()
                continue
            notes = []
            try:
                r = run_one(torch, args, name, c, net, device, timer, mode, phase, peak, notes)
            except Exception as e:  # an OOM or a compile failure: recorded, the other runs go on
                failed = True
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                out["errors"].append(dict(model=name, mode=mode, phase=phase, error=msg))
                print(f"torch_step: {name} {mode} {phase}: FAILED: {msg}")
                save()
                continue
            for n in notes:
                if n not in out["notes"]:
                    out["notes"].append(n)
                    print(f"torch_step: note: {n}")
            out["results"].append(r)
            extra = f", compile+warmup {r['compile_s']:.1f}s" if mode == "compile" else ""
            print(f"torch_step: {name} B{r['batch']} {r['impl']} {mode} {phase}: {r['img_per_s']:.1f} img/s, "
                  f"step {r['step_ms']:.3f} ms, {r['tflops']:.2f} TFLOP/s, MFU {100 * r['mfu']:.1f}%, "
                  f"{r['gflop_per_img']:.4f} GFLOP/img, {r['params']} params{extra}", flush=True)
            save()
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if mode == "compile":
            torch._dynamo.reset()
    save()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
