"""``raddiag evaluate`` (a run folder on a dataset split) and ``raddiag metrics`` (saved predictions)."""
from __future__ import annotations

import argparse
from typing import Optional

from raddiag.cli import non_negative_int


def n_boot_arg(text: str) -> int:
    """argparse type of ``--n-boot``: 0 (no intervals) or at least ``MIN_BOOT`` resamples."""
    from raddiag.evaluation.bootstrap import check_n_boot

    n = non_negative_int(text)
    try:
        check_n_boot(n)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained run on a split of a prepared dataset",
                       description="Predict a split with a run's model (and the val split for thresholds), "
                                   "then write metrics.json, per_class.csv, predictions.npz and report.html.")
    p.add_argument("run", help="run folder (config.yaml, label_space.json, model.safetensors)")
    p.add_argument("--data", required=True, help="prepared dataset folder or shard folder (raddiag data shard)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--val-split", default="val", help="split used to choose thresholds ('' for none)")
    p.add_argument("--out", default=None, help="output folder (default RUN/eval-SPLIT)")
    p.add_argument("--n-boot", type=n_boot_arg, default=1000, help="bootstrap resamples (0: no CIs, else >= 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--store-thresholds", action="store_true",
                   help="write the validation thresholds into the run's label_space.json")
    p.add_argument("--plot-classes", nargs="*", default=None, help="class names for the distribution plot")
    _protocol_arg(p)
    p.set_defaults(func=_evaluate)

    q = sub.add_parser("metrics", help="score saved predictions (scores/labels .npz)",
                       description="Metrics, bootstrap CIs and report for any model's saved predictions: "
                                   "an .npz with scores [N, C], labels [N, C], optional case_ids, anatomy.")
    q.add_argument("--pred", required=True, help="test predictions .npz")
    q.add_argument("--val", default=None, help="validation predictions .npz (thresholds by maximal F1)")
    q.add_argument("--labels", default=None, help="label_space.json (default: classes 0..C-1, all in 'all')")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--n-boot", type=n_boot_arg, default=1000, help="bootstrap resamples (0: no CIs, else >= 2)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--plot-classes", nargs="*", default=None)
    _protocol_arg(q)
    q.set_defaults(func=_metrics)


def _protocol_arg(p) -> None:
    p.add_argument("--protocol", choices=("paper", "release"), default="paper",
                   help="paper (default): thresholds from validation, R@FPR at FPR <= target, groups by training "
                        "counts; release: also the authors' own figures beside it (max-F1 thresholds on the "
                        "evaluated split, R@FPR at the nearest FPR, fixed head / medium / tail ranges)")


def _print_protocol(metrics: dict) -> None:
    if "release_protocol" in metrics:
        from raddiag.evaluation.release import format_release_protocol

        print(format_release_protocol(metrics["release_protocol"]))


def load_predictions(path: str) -> dict:
    """``{scores, labels, case_ids?, anatomy?}`` from an .npz, with clear errors."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: predictions file does not exist")
    from raddiag.evaluation.metrics import check_inputs

    with open(p, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            raise ValueError(f"{p}: a single array (.npy), not an .npz with arrays 'scores' and 'labels' "
                             "(write one with numpy.savez(path, scores=..., labels=...))")
    try:
        z = read_npz(p)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise ValueError(f"{p}: not a readable .npz ({exc})") from None
    for k in ("scores", "labels"):
        if k not in z:
            raise ValueError(f"{p}: missing array {k!r} (has {sorted(z)})")
    out = {"scores": z["scores"], "labels": z["labels"]}
    for k in ("case_ids", "anatomy", "class_names"):
        if k in z:
            if z[k].ndim != 1:
                raise ValueError(f"{p}: {k} must be a list of one entry per case, got an array of shape {z[k].shape}")
            out[k] = [str(x) for x in z[k]]
    check_inputs(out["scores"], out["labels"], str(p))
    names = out.get("class_names")
    n_cols = out["scores"].shape[-1] if out["scores"].ndim == 2 else 1
    if names is not None and len(names) != n_cols:
        raise ValueError(f"{p}: class_names has {len(names)} entries for {n_cols} score columns")
    ids = out.get("case_ids")
    if ids is not None:
        seen, dups = set(), []
        for i in ids:
            if i in seen and i not in dups:
                dups.append(i)
            seen.add(i)
        if dups:
            raise ValueError(f"{p}: duplicate case ids {dups[:5]}{' ...' if len(dups) > 5 else ''}; "
                             "each case must appear once")
    return out


def warn_shared_cases(test_ids, val_ids, test_path: str, val_path: str) -> None:
    """An InputWarning when validation cases are test cases too: the thresholds chosen on
    them are optimistic for those cases (a leak between the splits)."""
    import warnings

    from raddiag.data.errors import InputWarning

    shared = sorted(set(test_ids or ()) & set(val_ids or ()))
    if shared:
        warnings.warn(f"{val_path}: {len(shared)} case(s) are also in {test_path} (e.g. {shared[:3]}): the "
                      "F1 / MCC / ACC thresholds chosen on them are optimistic", InputWarning, stacklevel=2)


def read_npz(path) -> dict:
    """Every array of an .npz. Members stored uncompressed (``np.savez``) are read straight
    into their arrays with ``np.fromfile`` at the member's offset; ``np.load`` copies each
    member through ``zipfile`` and checks its CRC, which took longer than every metric on a
    7,772 x 5,569 file (``benchmarks/metrics_speed.py``). Compressed members go through
    ``np.load`` (no pickles either way)."""
    import struct
    import zipfile

    import numpy as np
    from numpy.lib import format as npformat

    out = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            header = None
            if info.compress_type == zipfile.ZIP_STORED:
                f.seek(info.header_offset)
                head = f.read(30)
                if head[:4] != b"PK\x03\x04":
                    raise ValueError(f"bad zip member header for {info.filename}")
                n_name, n_extra = struct.unpack("<HH", head[26:30])
                f.seek(info.header_offset + 30 + n_name + n_extra)
                version = npformat.read_magic(f)
                read_header = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}
                header = read_header[version](f) if version in read_header else None
            if header is None:                                  # compressed, or a newer .npy version
                with np.load(path, allow_pickle=False) as z:
                    out[name] = z[name]
                continue
            shape, fortran, dtype = header
            if dtype.hasobject:
                raise ValueError(f"{info.filename}: object arrays are not read (no pickles)")
            count = int(np.prod(shape, dtype=np.int64))
            start = info.header_offset + 30 + n_name + n_extra
            head_len = f.tell() - start
            if info.file_size != head_len + count * dtype.itemsize:
                raise ValueError(f"{info.filename}: its header declares {count:,} values of {dtype.itemsize} bytes, "
                                 f"the member holds {info.file_size - head_len:,} bytes")
            arr = np.fromfile(f, dtype=dtype, count=count)
            if arr.size != count:
                raise ValueError(f"{info.filename}: truncated ({arr.size} of {count} values)")
            _check_crc(f, start, head_len, arr, info)
            out[name] = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    return out


def _check_crc(f, start: int, head_len: int, arr, info) -> None:
    """The member's CRC-32, as ``np.load`` (``zipfile``) checks it: a damaged file (one flipped
    bit turned a score of 0.816 into 1.2e-05) was scored without a word. 0.1 s per 170 MB."""
    import zlib

    f.seek(start)
    if zlib.crc32(arr, zlib.crc32(f.read(head_len))) != info.CRC:
        raise ValueError(f"{info.filename}: damaged (its CRC-32 does not match the data)")


def _evaluate(args) -> int:
    import warnings

    from raddiag.evaluation.data_checks import DataCheckWarning
    from raddiag.evaluation.run_eval import evaluate_run

    with warnings.catch_warnings():       # printed once, as WARNING lines before the table (_print_summary)
        warnings.simplefilter("ignore", DataCheckWarning)
        res = evaluate_run(args.run, args.data, args.split, args.out, val_split=args.val_split or None,
                           n_boot=args.n_boot, seed=args.seed, device=args.device, batch_size=args.batch_size,
                           store_thresholds=args.store_thresholds, plot_classes=args.plot_classes,
                           protocol=args.protocol)
    _print_summary(res["metrics"], res["out_dir"], f"{args.split} split")
    _print_protocol(res["metrics"])
    return 0


def _metrics(args) -> int:
    from pathlib import Path

    from raddiag.data.errors import check_out_folder
    from raddiag.data.labels import LabelSpace
    from raddiag.evaluation.engine import evaluate_predictions, placeholder_names

    check_out_folder(args.out)
    written = Path(args.out) / "predictions.npz"
    for given in filter(None, (args.pred, args.val)):
        if written.exists() and written.resolve() == Path(given).resolve():
            raise ValueError(f"{given}: --out {args.out} would overwrite this input (metrics writes "
                             "predictions.npz there); choose another --out")
    test = load_predictions(args.pred)
    val = load_predictions(args.val) if args.val else None
    if val is not None:
        warn_shared_cases(test.get("case_ids"), val.get("case_ids"), args.pred, args.val)
    c = test["scores"].shape[-1] if test["scores"].ndim == 2 else 1
    named, named_in = check_class_names(test, val, args.pred, args.val)
    if args.labels:
        space = LabelSpace.load(args.labels)
        check_column_order(space.names, named, args.labels, named_in)
    else:       # no training counts: no head / tail
        space = LabelSpace(names=named or placeholder_names(c))
    evaluate_predictions(test["scores"], test["labels"], space,
                         val_scores=None if val is None else val["scores"],
                         val_labels=None if val is None else val["labels"],
                         anatomy=test.get("anatomy"), case_ids=test.get("case_ids"), out_dir=args.out,
                         n_boot=args.n_boot, seed=args.seed, plot_classes=args.plot_classes, progress=True,
                         title=f"raddiag metrics: {Path(args.pred).name}",
                         input_names={"test": args.pred, "val": args.val, "labels": args.labels},
                         protocol=args.protocol)
    import json

    metrics = json.loads((Path(args.out) / "metrics.json").read_text())
    _print_summary(metrics, args.out, f"predictions {Path(args.pred).name}")
    _print_protocol(metrics)
    return 0


def check_class_names(test: dict, val: Optional[dict], test_path: str, val_path: Optional[str]):
    """``(the columns' class names, the file they come from)`` that the prediction files carry
    (``class_names``, written by evaluate and metrics), or ``(None, None)``; the test and validation
    files must agree on them, order included."""
    names, val_names = test.get("class_names"), (val or {}).get("class_names")
    if names is not None and val_names is not None:
        check_column_order(names, val_names, test_path, val_path)
    return (names, test_path) if names is not None else (val_names, val_path if val_names else None)


def check_column_order(names: list[str], columns: Optional[list[str]], names_path, columns_path) -> None:
    """Refuse class ``names`` (a label file's) that are not the ``columns``' names in their order:
    every figure would be filed under another class's name and group."""
    if columns is None or list(names) == list(columns):
        return
    if len(names) == len(columns) and sorted(names) == sorted(columns):
        i = next(i for i, (a, b) in enumerate(zip(names, columns)) if a != b)
        raise ValueError(f"{names_path}: the same classes as {columns_path} in another order (column {i} is "
                         f"{columns[i]!r} there, {names[i]!r} here): every figure would go to another class; "
                         "give the classes in the columns' order")
    other = [n for n in names if n not in set(columns)]
    raise ValueError(f"{names_path}: not the classes of {columns_path}'s columns ({len(names)} against {len(columns)}"
                     + (f"; e.g. {', '.join(map(repr, other[:3]))} not among them" if other else "") + ")")


def _print_summary(metrics: dict, out, what: str) -> None:
    from raddiag.evaluation.summary import evaluation_summary

    print(evaluation_summary(metrics, what))
    print(f"wrote {out}/metrics.json, per_class.csv, predictions.npz, report.html")
