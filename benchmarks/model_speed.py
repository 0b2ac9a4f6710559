"""Model speed: forward and training-step time and peak RSS per case for each preset, and the
achieved GFLOP/s of `paper`-preset inference next to this machine's measured matmul GFLOP/s.

    .venv/bin/python benchmarks/model_speed.py [--threads 2] [--presets tiny small paper]

Inputs (stated in the output): each case has 4 scans -- two 3D scans (all D slices real) and
two 2D scans -- at the preset's H = W = size and depth D. tiny/small: a batch of 2 cases;
paper: 1 case (2 x 32 + 2 = 66 real slices of 256 px through ResNet-50). The `paper`
training step uses grad_checkpoint (as the trainer must, to fit a 4 x 32 x 256 px case in
16 GiB). Each preset runs in its own subprocess so its peak RSS is its own.
FLOPs are counted with torch.utils.flop_counter (convolutions, matmuls, attention; the
element-wise BatchNorm / ReLU / adds are not counted, so the achieved rate is a lower bound).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SETTINGS = {"tiny": 2, "small": 2, "paper": 1}  # cases per batch


def batch(cfg, cases):
    import torch

    D, S = cfg.data.depth, cfg.data.size
    g = torch.Generator().manual_seed(0)
    images = torch.rand(cases, 4, 1, D, S, S, generator=g)
    slice_mask = torch.zeros(cases, 4, D, dtype=torch.bool)
    slice_mask[:, :2] = True
    slice_mask[:, 2:, 0] = True
    images = images * slice_mask[:, :, None, :, None, None]
    return dict(images=images, scan_mask=torch.ones(cases, 4, dtype=torch.bool), slice_mask=slice_mask,
                modality=torch.tensor([[1, 2, 3, 3]] * cases)), int(slice_mask.sum())


def matmul_gflops(n=2048, reps=5):
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def one(name: str, threads: int, reps: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from raddiag.config import preset
    from raddiag.models import build_model, stand_in_label_embeddings

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cases = SETTINGS[name]
    cfg = preset(name, ["model.grad_checkpoint=true"] if name == "paper" else [])
    n_cls = 5569 if name == "paper" else 100
    model = build_model(cfg, n_cls, stand_in_label_embeddings(cfg, n_cls))
    b, n_slices = batch(cfg, cases)
    res = {"preset": name, "threads": threads, "cases": cases,
           "input": f"{cases} case(s) x 4 scans (2 x 3D {cfg.data.depth} slices, 2 x 2D) at {cfg.data.size} px",
           "real_slices": n_slices, "params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    model.eval()
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:  # also the warm-up run
            model(**b)
        flops = fc.get_total_flops()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            model(**b)
            ts.append(time.perf_counter() - t)
    fwd = min(ts)
    res.update(forward_s_per_case=fwd / cases, forward_gflop_per_case=flops / cases / 1e9,
               achieved_gflops=flops / fwd / 1e9)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = torch.zeros(cases, model.num_classes)
    ts = []
    for i in range(reps + (name != "paper")):
        t = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**b), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i or name == "paper":  # the first step warms up (optimizer state); paper: too slow to repeat
            ts.append(time.perf_counter() - t)
    res["train_step_s_per_case"] = min(ts) / cases
    res["peak_rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    res["matmul_gflops"] = matmul_gflops()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", nargs="*", default=list(SETTINGS))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.threads, args.reps)))
        return
    print(f"model speed, {args.threads} thread(s); per case; min of {args.reps} runs")
    for name in args.presets:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--threads", str(args.threads),
                              "--reps", str(args.reps)], capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"\n[{name}] {r['input']}; {r['real_slices']} real slices; {r['params_M']:.1f} M params")
        print(f"  forward       {r['forward_s_per_case']:8.3f} s/case   ({r['forward_gflop_per_case']:.1f} GFLOP/case)")
        print(f"  train step    {r['train_step_s_per_case']:8.3f} s/case"
              + ("   (grad_checkpoint on)" if name == "paper" else ""))
        print(f"  peak RSS      {r['peak_rss_GiB']:8.2f} GiB (process, whole run)")
        print(f"  inference     {r['achieved_gflops']:8.1f} GFLOP/s vs matmul {r['matmul_gflops']:.1f} GFLOP/s "
              f"({100 * r['achieved_gflops'] / r['matmul_gflops']:.0f} %)")


if __name__ == "__main__":
    main()
