"""``raddiag data prepare | stats | shard | synth``: thin handlers over the data library."""
from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="prepare datasets, show their statistics, make synthetic cases")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data.set_defaults(func=lambda args: data.print_help() or 2)

    from raddiag.data.adapters import ADAPTERS  # light: adapters import nothing heavy at module level

    p = sub.add_parser("prepare", help="read a source, preprocess and cache its cases (with a report of every skip)",
                       description="Read SOURCE with the adapter --format, resize / resample / scale every scan, and "
                                   "write a prepared dataset to --out. Unusable scans are skipped and listed in "
                                   "OUT/report.txt (--strict stops at the first).")
    p.add_argument("source", help="the dataset folder or file (JSON, manifest .jsonl or .csv, .npz)")
    p.add_argument("--format", required=True, choices=sorted(ADAPTERS), help="source layout")
    p.add_argument("--out", required=True, help="output folder of the prepared dataset")
    p.add_argument("--size", type=int, default=256, help="slice size in pixels (default 256)")
    p.add_argument("--depth", type=int, default=32, help="max slices per 3D scan (default 32)")
    add_window_option(p, "before min-max scaling (default: none, the raw values)")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable scan instead of skipping it")
    p.add_argument("--overwrite", action="store_true", help="replace a prepared dataset already in --out")
    add_limit_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of generated splits (default 0)")
    p.add_argument("--split-by", choices=["patient", "label"], default="patient",
                   help="cases without a split: patients cut at random 7:1:2 (default), or 'label': stratified "
                        "by label, each class of 3 patients or more in every split")
    p.add_argument("--workers", type=int, default=None, help="reader processes (default min(4, CPUs))")
    p.add_argument("--limit", type=int, default=None, help="only the first N cases (quick trials)")
    p.add_argument("--images", help="rp3d: folder holding the scan files (default: the JSON's folder)")
    p.add_argument("--split-files", help="rp3d: train=a.json,val=b.json,test=c.json")
    p.add_argument("--npz", help="medmnist3d: the .npz file (default: the one in SOURCE)")
    p.add_argument("--modality", help="folders: the images' modality (e.g. Ultrasound, MRI, X-ray; DICOM: its tag)")
    p.add_argument("--anatomy", help="folders: the images' anatomy (e.g. Breast), optional")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of official-train patients moved to val where the source has no val (default 1/8)")
    p.add_argument("--label-space", help="check labels against this label space (release disorder_label_dict.json "
                                         "or a labels_*.json); unknown labels are listed (--strict: an error)")
    p.set_defaults(func=cmd_prepare)

    s = sub.add_parser("stats", help="the dataset's Figure 2: modality / anatomy / scans-per-case / class counts + PNGs")
    s.add_argument("dir", help="a prepared dataset folder")
    s.add_argument("--out", help="output folder (default DIR/stats)")
    s.add_argument("--no-plots", action="store_true", help="numbers only")
    s.set_defaults(func=cmd_stats)

    sh = sub.add_parser("shard", help="write a prepared dataset as WebDataset tar shards (for streaming, multi-node)",
                        description="Write PREPARED as tar shards, one sample per case (its scans as float16 .npy, its "
                                    "record, both label encodings), per split, plus OUT/shards.json (shard names, case "
                                    "counts, sizes, sha256, label spaces, geometry). Each shard is written under a "
                                    "temporary name and renamed when complete.")
    sh.add_argument("prepared", help="a prepared dataset folder")
    sh.add_argument("--out", required=True, help="output folder of the shards")
    sh.add_argument("--shard-size", default="1GB", metavar="BYTES",
                    help="largest shard (default 1GB; K, M, G suffixes, powers of 1024)")
    sh.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    sh.set_defaults(func=cmd_shard)

    # --- hook for `data synth` (owned by raddiag.data.synth, written separately) ----------------
    # synth.py registers its own sub-command with add_synth_parser(sub) (or register_synth(sub)).
    try:
        synth = importlib.import_module("raddiag.data.synth")
    except ModuleNotFoundError as exc:
        if exc.name != "raddiag.data.synth":
            raise
        synth = None
    if synth is not None:
        hook = getattr(synth, "add_synth_parser", None) or getattr(synth, "register_synth", None)
        if hook is not None:
            hook(sub)


def add_limit_options(p) -> None:
    """--max-pixels / --max-voxels: the size bound of every scan (raddiag.data.volume.Limits)."""
    from raddiag.data.volume import MAX_PIXELS, MAX_VOXELS

    p.add_argument("--max-pixels", default=None, metavar="N",
                   help=f"refuse a scan whose header declares more pixels per slice (default {MAX_PIXELS // 2**20}M; "
                        "K, M, G suffixes)")
    p.add_argument("--max-voxels", default=None, metavar="N",
                   help=f"refuse a scan whose header declares more voxels in all (default {MAX_VOXELS // 2**30}G)")


def add_window_option(p, default: str) -> None:
    """--window (repeatable): an intensity window for all scans or per modality (raddiag.data.intensity)."""
    from raddiag.data.intensity import WINDOWS

    p.add_argument("--window", action="append", nargs="+", default=None, metavar="SPEC",
                   help=f"intensity window {default}: LO HI, a name ({', '.join(WINDOWS)}), LEVEL,WIDTH in HU "
                        "(--window=-600,1500), or per modality / anatomy MODALITY[/ANATOMY]=WINDOW "
                        "(--window CT=lung --window CT/Head=brain); repeatable")


def limits_from_args(args):
    from raddiag.data.volume import Limits, parse_count

    for opt in ("max_pixels", "max_voxels"):
        try:
            getattr(args, opt) is None or parse_count(getattr(args, opt))
        except ValueError as exc:
            raise ValueError(f"--{opt.replace('_', '-')}: {exc}") from None
    return Limits.of(args.max_pixels, args.max_voxels)


def _split_files(text: str | None) -> dict | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise ValueError(f"--split-files: expected SPLIT=FILE pairs separated by commas, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _load_label_space(path: str):
    import json

    from raddiag.data.labels import LabelSpace

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: label space file does not exist")
    try:
        d = json.loads(p.read_text(encoding="utf-8-sig"))
    except (ValueError, RecursionError):       # LabelSpace.load names the file and the reason
        d = None
    if d is None or (isinstance(d, dict) and "classes" in d):
        return LabelSpace.load(p)                      # names the file and the reason
    return LabelSpace.from_release(p)


def unknown_labels(cases, label_space) -> dict[str, list[str]]:
    """label -> ids of the cases carrying it, for every label not in ``label_space``."""
    out: dict[str, list[str]] = {}
    for c in cases:
        for name in label_space.case_labels(c):
            if name not in label_space:
                out.setdefault(name, []).append(c.id)
    return out


def cmd_prepare(args: argparse.Namespace) -> int:
    from raddiag.data.adapters import load_source
    from raddiag.data.stats import prepare_summary
    from raddiag.data.store import check_prepare_out, prepare_cases

    check_prepare_out(Path(args.out), args.overwrite)        # before the source is read
    limits = limits_from_args(args)
    opts = {"images": args.images, "split_files": _split_files(args.split_files), "npz": args.npz,
            "seed": args.seed, "val_fraction": args.val_fraction, "modality": args.modality, "anatomy": args.anatomy}
    result = load_source(args.format, args.source, **opts)
    cases = result.cases[: args.limit] if args.limit else result.cases
    notes = list(result.notes)
    if args.limit:
        kept = {c.id for c in cases}
        result.skipped = [s for s in result.skipped if s.get("case") in kept]
        notes.append(f"--limit: only the first {len(cases)} of {len(result.cases)} cases")
    if args.label_space:
        ls = _load_label_space(args.label_space)
        unknown = unknown_labels(cases, ls)
        if unknown:
            desc = "; ".join(f"{k!r} ({len(v)} case(s), e.g. {v[0]})" for k, v in sorted(unknown.items()))
            msg = f"{len(unknown)} label(s) are not in the label space {args.label_space}: {desc}"
            if args.strict:
                raise ValueError(msg)
            notes.append(msg)
    from raddiag.data.intensity import window_options

    if args.split_by == "label":            # before prepare_cases, which then finds every split set
        from raddiag.data.splits import assign_splits

        assign_splits(cases, seed=args.seed, by_label=True)
    window, windows = window_options(args.window)
    report = prepare_cases(cases, args.out, size=args.size, depth=args.depth, window=window, windows=windows,
                           strict=args.strict, seed=args.seed, workers=args.workers, progress=True,
                           pre_skipped=result.skipped, limits=limits, overwrite=args.overwrite,
                           notes=notes, pre_warnings=result.warnings)
    print(prepare_summary(args.out, report, report.notes))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from raddiag.data.stats import stats_text, write_stats

    st, out = write_stats(args.dir, args.out, plots=not args.no_plots)
    print(stats_text(st))
    print(f"written: {out / 'stats.json'}, {out / 'stats.txt'}" + (", " + ", ".join(st.get("plots", [])) if st.get("plots") else ""))
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    from raddiag.data.shards import INDEX, write_shards
    from raddiag.data.volume import parse_count

    text = args.shard_size.strip()
    try:
        size = parse_count(text[:-1] if text[-1:] in "bB" else text)
    except ValueError as exc:
        raise ValueError(f"--shard-size: {exc}") from None
    index = write_shards(args.prepared, args.out, shard_size=size, overwrite=args.overwrite)
    for split, sp in index["splits"].items():
        print(f"{split}: {sp['n_cases']} cases in {len(sp['shards'])} shard(s), "
              f"{sum(s['bytes'] for s in sp['shards']) / 2**20:.1f} MiB")
    print(f"written: {args.out}/{INDEX}")
    return 0
