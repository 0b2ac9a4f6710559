"""CLI: ``raddiag predict``, ``raddiag embed``, ``raddiag serve``, ``raddiag export`` (thin wrappers)."""
from __future__ import annotations

import argparse

CASES_HELP = ("A CASE is a folder of a patient's scans (DICOM series folders, NIfTI, NPY, PNG/JPEG; searched "
              "recursively), one file, or several files joined by commas (one case). Instead of CASEs: "
              "--manifest (a case manifest, README 'Your own data') or --data (a prepared dataset).")


def _add_inputs(p) -> None:
    """The cases of ``predict`` / ``embed``: CASE arguments, --manifest or --data, and how to run them."""
    p.add_argument("run", help="run folder (config.yaml, label_space.json, model.safetensors)")
    p.add_argument("cases", nargs="*", metavar="CASE")
    p.add_argument("--manifest", default=None, metavar="FILE",
                   help="the cases of a manifest, .jsonl or .csv (labels ignored)")
    p.add_argument("--data", default=None, metavar="DIR", help="the cases of a prepared dataset (raddiag data prepare)")
    p.add_argument("--split", default=None, help="with --data: only this split (default: every case)")
    p.add_argument("--modality", nargs="+", default=None,
                   help="modality of non-DICOM scans: one for all cases, or one per CASE; 'CT,X-ray' gives one per "
                        "file of a comma-joined CASE (DICOM: from the tags; a manifest names each scan's; default: "
                        "the run's only modality when it was trained on one)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "compile", "off"],
                   help="inference fast path (raddiag.models.fastpath; default: onnxruntime when installed, "
                        "else torch; off: the plain model)")
    from raddiag.data.commands import add_limit_options, add_window_option

    add_limit_options(p)
    add_window_option(p, "instead of the run's (default: the windows its training data were prepared with)")


def _positive(unit: str):
    def parse(text: str) -> float:
        """argparse type: a finite number > 0 (0, negative or NaN refused every upload, or crashed)."""
        import math

        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be a number of {unit} > 0, got {text!r}")
        return value
    return parse


megabytes, seconds = _positive("MB"), _positive("seconds")


def register(sub) -> None:
    p = sub.add_parser("predict", help="ranked diagnoses for case folders / files, a manifest or a prepared dataset",
                       description="Predict one or more cases. " + CASES_HELP + " With --out the rows go to a "
                                   "JSON Lines file, a batch at a time, resumably (README 'Predict many cases').")
    _add_inputs(p)
    p.add_argument("--out", default=None, metavar="JSONL",
                   help="write one JSON row per case here; cases written there already are skipped (resume)")
    p.add_argument("--retry-errors", action="store_true", help="with --out: predict the error rows' cases again")
    p.add_argument("--top", type=int, default=10, help="classes to show per case (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per case, in a list)")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                   help="score these class names instead (knowledge-guided head only)")
    p.add_argument("--encoder", default=None, metavar="DIR",
                   help="text encoder folder for --classes (default: the run's, else packaged MiniLM)")
    p.add_argument("--single-name", action="store_true",
                   help="--classes: embed each name alone, not the mean of its prompt set")
    p.add_argument("--saliency", default=None, metavar="OUTDIR",
                   help="write Score-CAM figures (PNG) here: each used scan's slice at its own resolution beside "
                        "the map over it, with a colour bar (every encoder, 2D and 3D)")
    p.add_argument("--saliency-class", default=None, help="class name or index (default: each case's top class)")
    p.add_argument("--all-slices", action="store_true", help="saliency on every slice of 3D scans, not the key slice")
    p.add_argument("--saliency-top-k", type=int, default=64, help="channels scored per map (default 64)")
    p.add_argument("--overwrite", action="store_true", help="replace saliency overlays that exist already")
    p.set_defaults(func=_predict)

    m = sub.add_parser("embed", help="case and per-scan embeddings (the model as a feature extractor)",
                       description="Write the case embedding (the fusion [CLS] output) and one embedding per "
                                   "used scan of each case to an .npz. " + CASES_HELP)
    _add_inputs(m)
    m.add_argument("--out", required=True, metavar="NPZ", help="output file (.npz)")
    m.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    m.set_defaults(func=_embed)

    s = sub.add_parser("serve", help="HTTP API and web page for predictions",
                       description="Serve a run folder: POST /predict, GET /labels, GET /health, the page at /, "
                                   "OpenAPI docs at /docs.")
    s.add_argument("run")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-files", type=int, default=64, help="files per upload (default 64)")
    s.add_argument("--max-mb", type=megabytes, default=256.0, help="upload size limit in MB (default 256)")
    s.add_argument("--max-classes", type=int, default=256,
                   help="new class names (form field classes) per request (default 256)")
    s.add_argument("--max-decoded-mb", type=megabytes, default=2048.0,
                   help="bytes one request's compressed scans (.nii.gz, PNG / JPEG, compressed DICOM) may decode "
                        "to, read from their headers, in MB (default 2048)")
    s.add_argument("--read-timeout", type=seconds, default=30.0,
                   help="seconds an upload may send nothing before it is answered 408 (default 30)")
    s.add_argument("--max-uploads", type=int, default=16,
                   help="requests with an upload in progress at once; more are answered 429 (default 16)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--single-name", action="store_true",
                   help="new class names: embed each name alone, not the mean of its prompt set")
    s.set_defaults(func=_serve)

    e = sub.add_parser("export", help="export the visual encoder and the case model (ONNX / TorchScript)")
    e.add_argument("run")
    e.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    e.add_argument("--out", default=None, help="output folder (default RUN/export)")
    e.add_argument("--scans", type=int, default=None, help="scans per case of the example input (default data.max_scans)")
    e.set_defaults(func=_export)


def _modalities(args):
    if not args.modality:
        return None
    mods = [m.split(",") if "," in m else m for m in args.modality]   # "CT,X-ray": one per file of a CASE
    if len(mods) == 1:
        return mods[0] if isinstance(mods[0], str) or len(args.cases) > 1 else [mods[0]]
    if len(args.modality) != len(args.cases):
        raise ValueError(f"--modality: give one modality for all cases or one per CASE "
                         f"({len(args.modality)} given for {len(args.cases)} cases)")
    return mods


def _case_args(args) -> list:
    """Every CASE is one case: a folder, or a list of files (one file, or files joined by commas)."""
    from pathlib import Path

    given = [n for n, v in (("CASE", args.cases), ("--manifest", args.manifest), ("--data", args.data)) if v]
    if len(given) != 1:
        raise ValueError("give the cases as CASE arguments, --manifest JSONL or --data DIR (one of them; "
                         f"{' and '.join(given) or 'none'} given)")
    if args.split is not None and not args.data:
        raise ValueError("--split selects cases of a prepared dataset: it needs --data")
    if args.modality and not args.cases:
        raise ValueError("--modality applies to CASE arguments (a manifest or a prepared dataset names each "
                         "scan's modality)")
    cases = [c if Path(c).is_dir() else c.split(",") for c in args.cases]
    for given_case, case in zip(args.cases, cases):
        if isinstance(case, list) and not all(part.strip() for part in case):
            # an empty name would be "." and pull every scan of the current folder into the case
            raise ValueError(f"CASE {given_case!r}: an empty file name in a comma-joined case")
    return cases


def _load(args):
    from raddiag.data.commands import limits_from_args
    from raddiag.serving.predict import Predictor

    pred = Predictor.load(args.run, device=args.device, backend=args.backend)
    pred.limits = limits_from_args(args)
    if args.window:
        from raddiag.data.intensity import window_options

        pred.cfg.data.window, pred.cfg.data.windows = window_options(args.window)
    if hasattr(args, "single_name"):
        pred.prompt_sets = not args.single_name
    return pred


def _say_default_modality(pred, args) -> None:
    """One line when CASE files are taken to be the run's only modality (no --modality given)."""
    import sys

    if args.cases and not args.modality and pred.default_modality:
        print(f"raddiag: note: no --modality given: non-DICOM files are taken as {pred.default_modality}, the one "
              "modality this run was trained on", file=sys.stderr)


def _pending(pred, args, cases) -> list:
    from raddiag.serving.batch import manifest_cases, prepared_cases
    from raddiag.serving.predict import canonical_modalities

    if args.manifest:
        return manifest_cases(pred, args.manifest)
    if args.data:
        return prepared_cases(pred, args.data, args.split)
    return pred.pending(cases, canonical_modalities(_modalities(args)))[0]


def _say_skipped(skipped: list) -> None:
    """One line for the unreadable scans of cases predicted or embedded from their other scans."""
    import sys

    from raddiag.data.errors import examples, one_line

    if skipped:
        print(f"raddiag: note: {len(skipped)} unreadable scan(s) skipped, their cases read from their other "
              f"scans: " + one_line(examples([f"{cid}: {err}" for cid, err in skipped])), file=sys.stderr)


def _report_failed(failed, total: int) -> int:
    import sys

    from raddiag.cli import EXIT_BAD_INPUT
    from raddiag.data.errors import one_line

    if not failed:
        return 0
    print(f"raddiag: error: {len(failed)} of {total} cases failed: "
          + one_line("; ".join(f"{r.case_id}: {r.error}" if r.case_id else r.error for r in failed)), file=sys.stderr)
    return EXIT_BAD_INPUT


def _predict(args: argparse.Namespace) -> int:
    import json
    import sys

    from raddiag.cli import EXIT_BAD_INPUT
    from raddiag.data.errors import one_line
    from raddiag.serving.predict import CaseError, CaseResult, canonical_modalities

    cases = _case_args(args)
    if args.out is not None or not args.cases:
        return _predict_to_file(args, cases)
    if args.retry_errors:
        raise ValueError("--retry-errors needs --out (it re-predicts the error rows of that file)")
    modality = canonical_modalities(_modalities(args))
    pred = _load(args)
    _say_default_modality(pred, args)
    results = pred.predict(cases, modality=modality, top=args.top, classes=args.classes, encoder=args.encoder,
                           batch_size=args.batch_size, progress=len(cases) > args.batch_size and not args.no_progress,
                           saliency=args.saliency, saliency_class=args.saliency_class,
                           all_slices=args.all_slices, saliency_top_k=args.saliency_top_k, overwrite=args.overwrite,
                           saliency_errors="keep")
    if not isinstance(results, list):
        results = [results]
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
    else:
        for r in results:
            print(r)
            for s in getattr(r, "saliency", []):
                print(f"  saliency: {s['path']}")
            if getattr(r, "saliency_error", None):
                print(f"  saliency: not made ({r.saliency_error})")
            print()
    _say_skipped([(r.case_id, s.error) for r in results if isinstance(r, CaseResult) for s in r.scans
                  if s.error is not None])
    rc = _report_failed([r for r in results if isinstance(r, CaseError)], len(results))
    no_maps = [r for r in results if getattr(r, "saliency_error", None)]
    if no_maps:      # the predictions are printed above; the maps that could not be made fail the command
        print("raddiag: error: saliency: " + one_line("; ".join(f"{r.case_id}: {r.saliency_error}" for r in no_maps)),
              file=sys.stderr)
    return EXIT_BAD_INPUT if no_maps else rc


def _predict_to_file(args, cases) -> int:
    from raddiag.cli import EXIT_BAD_INPUT
    from raddiag.serving.batch import predict_to_jsonl

    if args.out is None:
        raise ValueError("--manifest / --data write one row per case to a file: give --out preds.jsonl")
    for opt, on in (("--json", args.json), ("--saliency", args.saliency), ("--all-slices", args.all_slices)):
        if on:
            raise ValueError(f"{opt} is not available with --out (the rows are JSON already; saliency: "
                             "predict the case on its own)")
    pred = _load(args)
    from raddiag.serving.predict import canonical_modalities

    s = predict_to_jsonl(pred, _pending(pred, args, cases), args.out, args.batch_size, args.top, args.classes,
                         args.encoder, progress=not args.no_progress, retry_errors=args.retry_errors,
                         modality=canonical_modalities(_modalities(args)) if args.cases else None)
    notes = [text for text, on in (("a cut-off last line was dropped and its case predicted again", s.dropped_partial),
                                   (f"{s.duplicates} repeated row(s) of a case removed", s.duplicates),
                                   (f"the file also holds {s.other_cases} row(s) of cases not among these",
                                    s.other_cases)) if on]
    note = f" ({'; '.join(notes)})" if notes else ""
    print(f"{s.out}: {s.written} case(s) written, {s.skipped} found there already{note}; "
          f"{s.errors} error row(s)")
    return EXIT_BAD_INPUT if s.errors else 0


def _embed(args: argparse.Namespace) -> int:
    from raddiag.serving.batch import check_embeddings_out, save_embeddings
    from raddiag.serving.predict import CaseError

    cases = _case_args(args)
    check_embeddings_out(args.out, args.overwrite)          # before the work, not after
    pred = _load(args)
    _say_default_modality(pred, args)
    results = pred.embed_cases(_pending(pred, args, cases), args.batch_size, progress=not args.no_progress)
    path = save_embeddings(results, args.out, pred.cfg.model.width, overwrite=args.overwrite)
    ok = [r for r in results if not isinstance(r, CaseError)]
    skipped = [(r.case_id, s.error) for r in ok for s in r.scan_infos if s.error is not None]
    print(f"{path}: {len(ok)} case embedding(s) and {sum(len(r.scans) for r in ok)} scan embedding(s) of "
          f"width {pred.cfg.model.width}" + (f"; {len(skipped)} unreadable scan(s) skipped (skipped_scans)"
                                             if skipped else ""))
    _say_skipped(skipped)
    return _report_failed([r for r in results if isinstance(r, CaseError)], len(results))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from raddiag.serving.app import create_app

    app = create_app(args.run, max_files=args.max_files, max_bytes=int(args.max_mb * 1024 * 1024),
                     device=args.device, max_classes=args.max_classes,
                     max_decoded=int(args.max_decoded_mb * 1024 * 1024), read_timeout=args.read_timeout,
                     max_uploads=args.max_uploads)
    app.state.predictor.prompt_sets = not args.single_name
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _export(args: argparse.Namespace) -> int:
    from raddiag.serving.export import export

    for path in export(args.run, args.format, args.out, scans=args.scans):
        print(path)
    return 0
