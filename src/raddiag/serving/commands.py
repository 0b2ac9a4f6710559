"""CLI: ``raddiag predict``, ``raddiag serve``, ``raddiag export`` (thin wrappers)."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("predict", help="ranked diagnoses for case folders / files",
                       description="Predict one or more cases. A CASE is a folder of a patient's scans "
                                   "(DICOM series folders, NIfTI, NPY, PNG/JPEG; searched recursively), one "
                                   "file, or several files joined by commas (one case).")
    p.add_argument("run", help="run folder (config.yaml, label_space.json, model.safetensors)")
    p.add_argument("cases", nargs="+", metavar="CASE")
    p.add_argument("--modality", nargs="+", default=None,
                   help="modality of non-DICOM scans: one for all cases, or one per CASE; 'CT,X-ray' gives one per "
                        "file of a comma-joined CASE (DICOM: from the tags)")
    p.add_argument("--top", type=int, default=10, help="classes to show per case (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per case, in a list)")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                   help="score these class names instead (knowledge-guided head only)")
    p.add_argument("--encoder", default=None, metavar="DIR",
                   help="text encoder folder for --classes (default: the run's, else packaged MiniLM)")
    p.add_argument("--single-name", action="store_true",
                   help="--classes: embed each name alone, not the mean of its prompt set")
    p.add_argument("--saliency", default=None, metavar="OUTDIR", help="write Score-CAM overlays (PNG) here")
    p.add_argument("--saliency-class", default=None, help="class name or index (default: each case's top class)")
    p.add_argument("--all-slices", action="store_true", help="saliency on every slice of 3D scans, not the key slice")
    p.add_argument("--saliency-top-k", type=int, default=64, help="channels scored per map (default 64)")
    p.add_argument("--overwrite", action="store_true", help="replace saliency overlays that exist already")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "compile", "off"],
                   help="inference fast path (raddiag.models.fastpath; default: onnxruntime when installed, "
                        "else torch; off: the plain model)")
    from raddiag.data.commands import add_limit_options

    add_limit_options(p)
    p.set_defaults(func=_predict)

    s = sub.add_parser("serve", help="HTTP API and web page for predictions",
                       description="Serve a run folder: POST /predict, GET /labels, GET /health, the page at /, "
                                   "OpenAPI docs at /docs.")
    s.add_argument("run")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-files", type=int, default=64, help="files per upload (default 64)")
    s.add_argument("--max-mb", type=float, default=256.0, help="upload size limit in MB (default 256)")
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


def _predict(args: argparse.Namespace) -> int:
    import json

    import sys

    from raddiag.cli import EXIT_BAD_INPUT
    from raddiag.serving.predict import CaseError, Predictor, canonical_modalities

    modality = canonical_modalities(_modalities(args))
    from pathlib import Path

    # every CASE is one case: a folder, or a list of files (one file, or files joined by commas)
    cases = [c if Path(c).is_dir() else c.split(",") for c in args.cases]
    for given, case in zip(args.cases, cases):
        if isinstance(case, list) and not all(part.strip() for part in case):
            # an empty name would be "." and pull every scan of the current folder into the case
            raise ValueError(f"CASE {given!r}: an empty file name in a comma-joined case")
    from raddiag.data.commands import limits_from_args

    pred = Predictor.load(args.run, device=args.device, backend=args.backend)
    pred.limits = limits_from_args(args)
    pred.prompt_sets = not args.single_name
    results = pred.predict(cases, modality=modality, top=args.top, classes=args.classes, encoder=args.encoder,
                           batch_size=args.batch_size, progress=len(cases) > args.batch_size,
                           saliency=args.saliency, saliency_class=args.saliency_class,
                           all_slices=args.all_slices, saliency_top_k=args.saliency_top_k, overwrite=args.overwrite)
    if not isinstance(results, list):
        results = [results]
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
    else:
        for r in results:
            print(r)
            for s in getattr(r, "saliency", []):
                print(f"  saliency: {s['path']}")
            print()
    failed = [r for r in results if isinstance(r, CaseError)]
    if failed:
        print(f"raddiag: error: {len(failed)} of {len(results)} cases failed: "
              + "; ".join(f"{r.case_id}: {r.error}" for r in failed), file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from raddiag.serving.app import create_app

    app = create_app(args.run, max_files=args.max_files, max_bytes=int(args.max_mb * 1024 * 1024),
                     device=args.device)
    app.state.predictor.prompt_sets = not args.single_name
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _export(args: argparse.Namespace) -> int:
    from raddiag.serving.export import export

    for path in export(args.run, args.format, args.out, scans=args.scans):
        print(path)
    return 0
