"""Peak memory (RSS) of one training step of the ``paper`` preset on CPU.

One case of 4 scans x 32 slices x 256 px (the paper's geometry) through the full
ResNet-50 + slice-ViT + fusion model: forward, BCE, backward, AdamW step, as the trainer does.
Goal: under 16 GiB with activation checkpointing over slice chunks (the paper reports 46 GB
of GPU memory at batch 1 without it). Each setting runs in its own process so that peaks
do not mix; the figure is ``ru_maxrss`` of that process.

    python benchmarks/train_memory.py                     # paper geometry, checkpointing on
    python benchmarks/train_memory.py --both              # ... and off (needs far more memory)
    python benchmarks/train_memory.py --slices 8          # a cheaper run (same model)
    python benchmarks/train_memory.py --device cuda --amp bf16 --both   # on a GPU: torch.cuda.max_memory_allocated

The optimiser is the trainer's (:func:`raddiag.training.optim.make_optimizer`, fused AdamW).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def one_step(args) -> dict:
    import torch

    from raddiag.config import preset
    from raddiag.models import build_model, stand_in_label_embeddings
    from raddiag.training.optim import make_optimizer

    torch.set_num_threads(args.threads)
    over = [f"data.depth={args.slices}", f"data.size={args.size}", f"data.max_scans={args.scans}",
            f"model.grad_checkpoint={'true' if args.checkpoint else 'false'}", f"model.slice_chunk={args.chunk}"]
    cfg = preset(args.preset, over)
    torch.manual_seed(0)
    model = build_model(cfg, args.classes, stand_in_label_embeddings(cfg, args.classes))
    dev = torch.device(args.device)
    model.to(dev).train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = make_optimizer(model, cfg.train)
    B, N, D, S = 1, args.scans, args.slices, args.size
    batch = {"images": torch.rand(B, N, 1, D, S, S), "scan_mask": torch.ones(B, N, dtype=torch.bool),
             "slice_mask": torch.ones(B, N, D, dtype=torch.bool), "modality": torch.ones(B, N, dtype=torch.long)}
    labels = torch.zeros(B, args.classes, device=dev)
    labels[:, 1] = 1
    batch = {k: v.to(dev) for k, v in batch.items()}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu_before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    t0 = time.time()
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
        logits = model(**batch)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_norm)
    opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    secs = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if dev.type == "cuda":   # the GPU's figures in the same fields (bytes -> KiB)
        peak, rss_before = torch.cuda.max_memory_allocated(dev) // 1024, gpu_before // 1024
    return {"preset": args.preset, "scans": N, "slices": D, "size": S, "classes": args.classes,
            "grad_checkpoint": args.checkpoint, "slice_chunk": args.chunk, "amp": args.amp,
            "params_M": round(n_params / 1e6, 1), "peak_rss_GiB": round(peak / 2**20, 2),
            "rss_before_step_GiB": round(rss_before / 2**20, 2), "step_seconds": round(secs, 1),
            "threads": args.threads, "device": args.device}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper")
    p.add_argument("--scans", type=int, default=4)
    p.add_argument("--slices", type=int, default=32)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--classes", type=int, default=5569, help="disorders + Normal, as in RP3D-DiagDS")
    p.add_argument("--chunk", type=int, default=8, help="model.slice_chunk: slices per checkpointed chunk")
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--device", default="cpu", help="cpu or cuda (then peak = torch.cuda.max_memory_allocated)")
    p.add_argument("--no-checkpoint", dest="checkpoint", action="store_false")
    p.add_argument("--both", action="store_true", help="measure with and without checkpointing")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(one_step(args)))
        return 0
    settings = [args.checkpoint] if not args.both else [True, False]
    for ck in settings:
        cmd = [sys.executable, __file__, "--child", "--preset", args.preset, "--scans", str(args.scans),
               "--slices", str(args.slices), "--size", str(args.size), "--classes", str(args.classes),
               "--chunk", str(args.chunk), "--amp", args.amp, "--threads", str(args.threads),
               "--device", args.device]
        if not ck:
            cmd.append("--no-checkpoint")
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"grad_checkpoint={ck}: failed (rc {res.returncode}; killed for memory?)\n{res.stderr[-1500:]}")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{r['preset']} preset, 1 case of {r['scans']} scans x {r['slices']} slices x {r['size']} px, "
              f"{r['classes']} classes, {r['params_M']} M parameters, grad_checkpoint={ck} "
              f"(slice_chunk={r['slice_chunk']}), amp={r['amp']}: peak {'RSS' if r['device'] == 'cpu' else 'GPU memory'} "
              f"{r['peak_rss_GiB']} GiB "
              f"(model+optimiser before the step {r['rss_before_step_GiB']} GiB), one step {r['step_seconds']} s "
              f"on {r['device']} ({r['threads']} CPU threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
