"""``raddiag train`` and ``raddiag finetune``."""
from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DIR",
                   help="prepared dataset (raddiag data prepare) or shard folder (raddiag data shard)")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--max-scans", action="append", default=[], metavar="[MODALITY=]N",
                   help="scan caps (README 'Scan caps'): N scans a case, MODALITY=N scans of one modality "
                        "(Ultrasound=8, US=8), other=N for every modality not listed (repeatable)")
    p.add_argument("--granularity", choices=["disorder", "icd10"], default=None,
                   help="label granularity (default: data.granularity of the config)")
    emb = p.add_mutually_exclusive_group()
    emb.add_argument("--knowledge-encoder", metavar="DIR", default=None,
                     help="knowledge encoder folder for model.head=knowledge (default: the bundled text encoder)")
    emb.add_argument("--label-embeddings", metavar="FILE", default=None,
                     help="precomputed label embeddings (safetensors with key 'embeddings')")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="train afresh into an --out that already holds a run (weights or a checkpoint)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N", help="stop after N optimiser steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model on a prepared dataset (torchrun for DDP)",
                              description="Train RadDiag. Under `torchrun --nproc_per_node K -m raddiag train ...` "
                                          "the same command trains with DistributedDataParallel.")
    from raddiag.config import PRESETS

    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="the recipe (README 'Which preset for which job'; `raddiag describe --preset X` shows its "
                        "settings): cpu for a CPU try-out, gpu for a real set on one GPU, paper for the paper's "
                        "model (default paper; with --resume the run's own config.yaml)")
    p.add_argument("--pretrained", metavar="FILE", default=None,
                   help="torchvision/timm ResNet-18/34/50 state dict (.pth, .bin, .safetensors) to start the "
                        "per-slice ResNet from, or 'imagenet' (sets model.pretrained; read once, at the start)")
    p.add_argument("--download-weights", action="store_true",
                   help="model.pretrained=imagenet (the paper preset's): download torchvision's ImageNet ResNet "
                        "file into the torch hub cache if it is not there (SHA-256 checked); never without this")
    _common(p)
    p.set_defaults(func=_train)

    f = subparsers.add_parser("finetune", help="fine-tune a pre-trained run on another dataset",
                              description="Keep the visual encoder (and the fusion module for multi-scan data), "
                                          "train a new classification layer on a stratified fraction of the data.")
    f.add_argument("run", metavar="RUN", help="pre-trained run folder")
    f.add_argument("--fraction", type=float, default=1.0, help="fraction of the training split (0.01, 0.1, 0.3, 1.0)")
    f.add_argument("--scratch", action="store_true", help="same model from random weights (baseline)")
    f.add_argument("--seed", type=int, default=0, help="seed of the subset and the training")
    f.add_argument("--epochs", type=int, default=None, help="epochs (default: the pre-trained run's)")
    f.add_argument("--pretrained", metavar="FILE", default=None,
                   help="with --scratch: start the baseline's per-slice ResNet from this torchvision/timm file")
    f.add_argument("--encoder-lr-scale", type=float, default=None, metavar="F",
                   help="learning rate of the pre-trained encoder and fusion = F x that of the new head "
                        "(train.encoder_lr_scale; default 1)")
    f.add_argument("--linear-probe", action="store_true",
                   help="freeze the pre-trained encoder and fusion; train only the new head (train.linear_probe)")
    _common(f)
    f.set_defaults(func=_finetune)


def _train(args) -> int:
    from pathlib import Path

    from raddiag.config import RunConfig, preset, scan_cap_overrides
    from raddiag.run import RunFolder
    from raddiag.training import train

    run = RunFolder(Path(args.out))
    overrides = scan_cap_overrides(args.max_scans) + args.overrides
    if args.resume and run.config.exists() and args.preset is None:
        cfg = RunConfig.load(run.config).override(overrides)
    else:
        cfg = preset(args.preset or "paper", overrides)
    if args.pretrained:
        cfg.model.pretrained = args.pretrained
        cfg.validate()
    if args.download_weights and cfg.model.pretrained == "imagenet" and not args.resume:
        from raddiag.models.pretrained import fetch_imagenet

        fetch_imagenet(cfg.model.resnet_depth, progress=not args.no_progress)
    result = train(args.data, args.out, cfg, granularity=args.granularity,
                   label_embeddings=args.label_embeddings, knowledge_encoder=args.knowledge_encoder,
                   resume=args.resume, progress=not args.no_progress, max_steps=args.max_steps,
                   overwrite=args.overwrite, summary=True)
    _report(result)
    return 0


def _finetune(args) -> int:
    from raddiag.config import scan_cap_overrides
    from raddiag.transfer.finetune import finetune

    result = finetune(args.run, args.data, args.out, args.fraction, scratch=args.scratch, seed=args.seed,
                      epochs=args.epochs, overrides=scan_cap_overrides(args.max_scans) + args.overrides, granularity=args.granularity,
                      label_embeddings=args.label_embeddings, knowledge_encoder=args.knowledge_encoder,
                      resume=args.resume, progress=not args.no_progress, max_steps=args.max_steps,
                      pretrained=args.pretrained, overwrite=args.overwrite,
                      encoder_lr_scale=args.encoder_lr_scale, linear_probe=args.linear_probe, summary=True)
    _report(result)
    return 0


def _report(result) -> None:
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(report_line(result))


def report_line(result) -> str:
    """The run's one-line summary; a run stopped (``--max-steps``) before any epoch validated says
    so, where it printed a best AUC of nan at epoch 0."""
    head = (f"{result.run.root}: {result.epochs_run} epoch{'s' * (result.epochs_run != 1)}, "
            f"{result.steps} step{'s' * (result.steps != 1)}, ")
    if result.best_epoch < 1:
        return (head + f"stopped inside epoch {result.epochs_run + 1} before any validation: no best epoch yet; "
                f"{result.run.weights.name} holds the weights at the stop (--resume goes on)")
    return (head + f"best val macro AUC {result.best_val_auc:.4f} (epoch {result.best_epoch})"
            + (", stopped early" if result.stopped_early else ""))
