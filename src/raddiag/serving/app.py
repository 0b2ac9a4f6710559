"""The HTTP service: ``create_app(run_dir)`` -> a FastAPI app.

- ``POST /predict``: a case as several files (``files``) or one zip; form fields ``modality`` (one
  name for every file, or one per uploaded file in upload order, joined by commas: ``X-ray,CT``),
  ``top``, ``classes`` (repeated, or comma- or newline-separated), ``saliency``, ``saliency_class``,
  ``case_id``. Returns the prediction JSON (:meth:`CaseResult.to_dict`; ``warnings``: the input
  warnings of its scans, a DICOM series with a slice missing, a scan unlike the training data).
- ``POST /embed``: the same upload (form fields ``modality``, ``case_id``) -> the case embedding
  and one per scan (:meth:`CaseEmbedding.to_dict`): the model as a feature extractor.
- ``GET /labels``, ``GET /health``; ``GET /`` the web page; OpenAPI at ``/docs`` and ``/openapi.json``.

Uploads are bounded (``max_files``, ``max_bytes``, the bytes compressed scans decode to,
``max_decoded``; the request body is cut off at the limit while it streams in, and after
``read_timeout`` seconds without data; at most ``max_uploads`` at once), checked by content (:mod:`raddiag.serving.uploads`), extracted safely,
and kept in a temporary folder that is removed after the request. A bad upload gets a 4xx
with a message (``{"detail": ...}``). The model is loaded once; forwards run one at a time
under the predictor's lock (torch uses the cores itself), and at most ``os.cpu_count()`` requests
preprocess at once.
"""
from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Optional

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from raddiag.data.errors import InputTooLarge
from raddiag.serving.uploads import Budget, UploadError, save_upload, upload_stem

STATIC = Path(__file__).with_name("static")
MULTIPART_SLACK = 1 << 20        # multipart headers and form fields on top of the file bytes
UPLOAD_ANSWERS = {400: {"description": "bad upload (unsafe zip, empty file, ...)"},
                  413: {"description": "too large or too many files (or zip entries), or a scan whose declared size, "
                                       "or decoded size, is over the bound"},
                  408: {"description": "the upload stalled (no data within the read timeout)"},
                  415: {"description": "unsupported file type (by content)"},
                  429: {"description": "too many uploads at once"},
                  422: {"description": "the scans cannot be used (modality missing, unreadable, ...)"}}
MODALITY_HELP = ("modality of non-DICOM files: one name for every file (CT, X-ray, MRI, ...), or, for files of "
                 "different modalities, one name per uploaded file in upload order, joined by commas (X-ray,CT)")
MODALITY_ADVICE = ("send the form field modality: one name for every file (-F modality=CT), or, for files of "
                   "different modalities, one per uploaded file in upload order, joined by commas "
                   "(curl -F files=@a.png -F files=@b.nii.gz -F modality=X-ray,CT <service>{endpoint})")


class UploadGuard:
    """ASGI middleware over every POST / PUT: at most ``max_uploads`` at once (429 beyond: each
    holds a temporary folder, and extracting it memory), the body at most ``limit`` bytes (413, by
    Content-Length up front and by counting while a chunked body streams in), and each part of the
    body within ``read_timeout`` seconds of the last (408: a stalled upload held its connection open
    for ever). Every answer names the limit and the ``raddiag serve`` option that sets it."""

    def __init__(self, app, limit: int, read_timeout: float = 30.0, max_uploads: int = 16) -> None:
        self.app, self.limit, self.read_timeout, self.max_uploads = app, limit, read_timeout, max_uploads
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        msg = f"upload too large: the request body is over the limit of {self.limit} bytes (--max-mb)"
        cl = dict(scope["headers"]).get(b"content-length")
        if cl is not None and cl.isdigit() and int(cl) > self.limit:
            return await JSONResponse({"detail": msg}, status_code=413)(scope, receive, send)
        if self.active >= self.max_uploads:
            return await JSONResponse({"detail": f"too many uploads at once: {self.active} in progress, the limit "
                                                 f"is {self.max_uploads} (--max-uploads); try again shortly"},
                                      status_code=429, headers={"Retry-After": "5"})(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except asyncio.TimeoutError:
                raise StarletteHTTPException(408, f"upload stalled: no data for {self.read_timeout:g} s "
                                                  "(--read-timeout)") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise StarletteHTTPException(413, msg)
            return message

        self.active += 1        # one event loop: no lock needed
        try:
            await self.app(scope, limited, send)
        finally:
            self.active -= 1


def class_names(fields: Optional[list[str]]) -> Optional[list[str]]:
    """The form field ``classes``: each value one name, or names on separate lines. Commas do not
    split: disorder names and ICD-10-CM descriptions hold them ("Pneumonia, unspecified organism"),
    and "Crohn's disease, grade 2" was once scored as two made-up classes (the CLI's --classes
    keeps it whole too)."""
    names = [c.strip() for field in fields or [] for c in field.splitlines() if c.strip()]
    return names or None


def _modalities(field: Optional[str], files) -> Optional[str | list[str]]:
    """The form field ``modality``: None (not given), one name for every file, or comma-separated
    names, one per uploaded file in upload order; each checked by :func:`canonical_modality` (a 422
    naming it). The service refused the list its own 422 advised ('unknown modality 'X-ray,CT'')."""
    from raddiag.data.case import canonical_modality

    if not field or not field.strip():
        return None
    names = field.split(",")
    if len(names) == 1:
        return canonical_modality(field, source="the form field modality")
    if len(names) != len(files):
        raise UploadError(422, f"the form field modality lists {len(names)} modalities ({field.strip()[:200]}) for "
                               f"{len(files)} uploaded files ({', '.join(repr(f.filename) for f in files)}); give "
                               "one modality for every file, or one per uploaded file in upload order")
    return [canonical_modality(m, source=f"the form field modality for {f.filename!r}") for m, f in zip(names, files)]


def _case_input(case_dir: Path, stored: list[list[Path]], mod, default: Optional[str], endpoint: str):
    """(what the predictor reads, its modality): the upload folder and one modality (None: DICOM
    tags, or the run's only modality ``default``), or, with one modality per upload, every stored
    file and its upload's modality (a zip's entries all get the zip's). Non-DICOM files without any
    modality are a 422 naming them, with the service's advice (it was the CLI's: --modality, --manifest)."""
    from raddiag.data.readers import is_dicom

    if isinstance(mod, list):
        return [p for paths in stored for p in paths], [m for m, paths in zip(mod, stored) for _ in paths]
    other = [] if mod or default else [str(p.relative_to(case_dir)) for ps in stored for p in ps if not is_dicom(p)]
    if other:
        more = f" and {len(other) - 5} more" if len(other) > 5 else ""
        raise UploadError(422, f"{', '.join(map(repr, other[:5]))}{more}: no modality given, and it cannot be read "
                               f"from a non-DICOM file; {MODALITY_ADVICE.format(endpoint=endpoint)}")
    return case_dir, mod


def _strip(text: str, case_dir: Path) -> str:
    """A message about an uploaded file without the server's temporary folder in it."""
    return text.replace(str(case_dir) + "/", "").replace(str(case_dir), "upload")


def create_app(run_dir, max_files: int = 64, max_bytes: int = 256 << 20, device: str = "cpu",
               predictor=None, max_classes: int = 256, max_decoded: int = 2 << 30, read_timeout: float = 30.0,
               max_uploads: int = 16) -> FastAPI:
    """The service for one run folder (``predictor``: an already loaded :class:`Predictor`).
    ``max_classes`` bounds the new class names of one request: each is embedded by the text
    encoder under the predictor's lock (2,000 names held it for 40 s on 2 CPUs). ``max_decoded``:
    the bytes one request's compressed scans may decode to (:class:`Budget`); ``read_timeout``,
    ``max_uploads``: see :class:`UploadGuard`."""
    from raddiag import __version__
    from raddiag.serving.predict import Predictor

    pred = predictor or Predictor.load(run_dir, device=device)
    # requests preprocessing / predicting at once: at most the CPU count (the forward itself is
    # serialised by the predictor's lock); the rest wait with their upload on disk
    slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
    app = FastAPI(title="raddiag", version=__version__,
                  description="Case-level radiology diagnosis (RadDiag). Upload one patient's scans "
                              "(DICOM, NIfTI, NPY, PNG/JPEG files, or one zip of them) to `/predict`, or to `/embed` "
                              "for its features.")
    app.state.predictor = pred
    app.state.limits = {"max_files": max_files, "max_bytes": max_bytes, "max_classes": max_classes,
                        "max_decoded": max_decoded, "read_timeout": read_timeout, "max_uploads": max_uploads}
    app.add_middleware(UploadGuard, limit=max_bytes + MULTIPART_SLACK, read_timeout=read_timeout,
                       max_uploads=max_uploads)

    def on_upload(files, modality, case_id, run, endpoint):
        """Save the upload into a temporary folder, ``run(folder or files, modality)`` -> a result
        with ``to_dict()`` (:func:`_case_input`); upload and scan problems become 4xx answers with
        the reason."""
        with tempfile.TemporaryDirectory(prefix="raddiag-upload-") as tmp:
            case_dir = Path(tmp) / "case"
            case_dir.mkdir()
            budget = Budget(max_files, max_bytes, max_decoded)
            taken: set[str] = set()
            try:
                if not files:
                    raise UploadError(400, "no files uploaded")
                mod = _modalities(modality, files)
                stored = [save_upload(f.file, f.filename or "upload", case_dir, budget, taken) for f in files]
                case, mod = _case_input(case_dir, stored, mod, pred.default_modality, endpoint)
                with slots:
                    result = run(case, mod)
            except UploadError as exc:
                raise HTTPException(exc.status, exc.message) from None
            except (InputTooLarge, MemoryError) as exc:     # a declared size over the bound: 413
                text = str(exc) if isinstance(exc, InputTooLarge) else f"the scans are too large to process ({exc})"
                raise HTTPException(413, _strip(text, case_dir)) from None
            except (ValueError, FileNotFoundError, KeyError) as exc:
                text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
                raise HTTPException(422, _strip(text, case_dir))
            out = result.to_dict()
            out["case_id"] = case_id or upload_stem(files[0].filename or "upload") or "upload"   # as its scan id
            for s in out["scans"]:
                s["paths"] = [str(Path(p).relative_to(case_dir)) for p in s["paths"]]
            if "warnings" in out:                # each names its file, in the upload, not on the server
                out["warnings"] = [_strip(w, case_dir) for w in out["warnings"]]
            return JSONResponse(json.loads(json.dumps(out)))

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(path)

    @app.get("/demo/sample.png", include_in_schema=False)
    def demo_sample():
        from raddiag.serving.sample import sample_png

        return Response(sample_png(128, seed=7), media_type="image/png")

    @app.get("/health", summary="service status")
    def health():
        return {"status": "ok", "version": __version__, "classes": len(pred.labels), "preset": pred.cfg.preset,
                "input": {"size": pred.cfg.data.size, "depth": pred.cfg.data.depth}, **app.state.limits}

    @app.get("/labels", summary="the run's label space")
    def labels():
        ls = pred.labels
        return {"granularity": ls.granularity, "thresholds": ls.thresholds is not None,
                "classes": [{"name": n, "code": c, "group": g,
                             "threshold": None if ls.thresholds is None else ls.thresholds[i]}
                            for i, (n, c, g) in enumerate(zip(ls.names, ls.codes, ls.groups))]}

    @app.post("/predict", summary="ranked diagnoses for one uploaded case", responses=UPLOAD_ANSWERS)
    def predict(
        files: Annotated[list[UploadFile], File(description="the case's files, or one zip of them")],
        modality: Annotated[Optional[str], Form(description=MODALITY_HELP)] = None,
        top: Annotated[int, Form(ge=1, le=10000)] = 10,
        classes: Annotated[Optional[list[str]], Form(description="new class names (knowledge head): the field "
                                                                 "repeated, one name each, or names on separate "
                                                                 "lines; a comma is part of a name")] = None,
        saliency: Annotated[bool, Form(description="add Score-CAM overlays (PNG data URLs)")] = False,
        saliency_class: Annotated[Optional[str], Form(description="class for saliency (default: top)")] = None,
        case_id: Annotated[Optional[str], Form(max_length=200)] = None,
    ):
        names = class_names(classes)
        if names and len(names) > max_classes:
            raise HTTPException(413, f"{len(names)} class names, over the limit of {max_classes} a request "
                                         "(raddiag serve --max-classes)")
        return on_upload(files, modality, case_id, lambda case, mod: pred.predict(
            case, modality=mod, top=top, classes=names, saliency=True if saliency else None,
            saliency_class=saliency_class or None, saliency_errors="keep"), "/predict")

    @app.post("/embed", summary="the case embedding and one embedding per scan of one uploaded case",
              responses=UPLOAD_ANSWERS)
    def embed(
        files: Annotated[list[UploadFile], File(description="the case's files, or one zip of them")],
        modality: Annotated[Optional[str], Form(description=MODALITY_HELP)] = None,
        case_id: Annotated[Optional[str], Form(max_length=200)] = None,
    ):
        """``case_embedding`` (``width`` floats: the fusion [CLS] output) and, per scan, its
        ``embedding`` (null for a scan left out by the run's scan caps)."""
        return on_upload(files, modality, case_id, lambda case, mod: pred.embed(case, modality=mod), "/embed")

    return app
