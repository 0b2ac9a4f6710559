"""CLI: ``raddiag import-official`` and ``raddiag describe``."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("import-official", help="import the authors' released RadDiag weights into a run folder")
    p.add_argument("ckpt", help="checkpoint folder (pytorch_model.bin or *.safetensors) or file")
    p.add_argument("--labels", required=True, help="the release's disorder_label_dict.json")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--train-file", help="the release's training JSON (release format): head / medium / tail "
                   "by its case counts (default: the release's fixed ranges of its label order)")
    p.add_argument("--slice-heads", type=int, default=1, help="heads of the slice transformer (release: 1)")
    p.add_argument("--fusion-heads", type=int, default=4, help="heads of the fusion transformer (release: 4)")
    p.set_defaults(func=_import_official)

    from raddiag.config import PRESETS

    d = sub.add_parser("describe", help="a preset's model and training settings, parameter counts and shapes")
    d.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="the preset (default: paper)")
    d.add_argument("--classes", type=int, default=5569, help="number of classes (default: 5569)")
    d.add_argument("--scans", type=int, default=2, help="scans in the traced case (default: 2)")
    d.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. model.encoder=vit")
    d.set_defaults(func=_describe)


def _import_official(args) -> int:
    from raddiag.models.official import import_official

    run = import_official(args.ckpt, args.labels, args.out, slice_heads=args.slice_heads,
                          fusion_heads=args.fusion_heads, train_file=args.train_file)
    print(f"imported {args.ckpt} -> {run.root}")
    return 0


def _describe(args) -> int:
    from raddiag.config import preset
    from raddiag.models.describe import describe_model, format_description

    print(format_description(describe_model(preset(args.preset, args.set), args.classes, args.scans)))
    return 0
