"""Inference for users: a run folder + a patient's scans -> ranked diagnoses.

Five lines, as in torchxrayvision::

    import raddiag
    model = raddiag.load("runs/my-run")
    result = model.predict(["scan1.nii.gz", "cxr.png"], modality=["CT", "X-ray"])
    print(result)               # a ranked table
    result.to_dict()            # JSON-ready

Preprocessing is the run's own (``config.yaml``'s ``data`` section: size, depth, window,
modality scheme, per-modality scan caps) through the same functions the prepared store
used (:func:`raddiag.data.preprocess.preprocess_volume`, :func:`raddiag.data.dataset.collate_cases`);
nothing has to be remembered. Thresholds are the per-class validation thresholds stored in
``label_space.json`` (0.5 where the run has none, and the result says so).
"""
from __future__ import annotations

import threading
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from raddiag.config import RunConfig
from raddiag.data.case import Scan, modality_id
from raddiag.data.dicom import headers_kept
from raddiag.data.errors import ScanError, collect_input_warnings
from raddiag.data.labels import DEFAULT_THRESHOLD, LabelSpace
from raddiag.data.volume import DEFAULT_LIMITS, Limits
from raddiag.staging import staged_files
from raddiag.serving.case_inputs import (PathLike, _case_ids, _split_cases, canonical_modalities,  # noqa: F401
                                       case_scans, scan_id)
from raddiag.serving.results import (CaseEmbedding, CaseError, CaseResult, Finding, threshold_source,  # noqa: F401
                                     PendingCase, Prepared, ScanInfo)
from raddiag.task import MULTICLASS, probabilities

ONE_CLASS = "none: one class per case, the most probable (data.task=multiclass)"


# -- the predictor ---------------------------------------------------------------------------
def check_class_names(classes: Sequence) -> list[str]:
    """``classes`` stripped, or ValueError naming the first one at fault: empty, holding a control
    character, or given twice (spellings that differ only in letter case, spaces or Unicode form
    are one class, as ``data prepare`` makes them one)."""
    import warnings

    from raddiag.data.adapters.base import SPELLINGS, label_key
    from raddiag.data.errors import InputWarning, one_line
    from raddiag.knowledge.negation import compound_note

    names, seen = [str(c).strip() for c in classes], {}
    for i, n in enumerate(names, 1):
        where = f"classes (--classes): class name {i} of {len(names)}"
        if not n:
            raise ValueError(f"{where} is empty")
        if not n.isprintable():
            raise ValueError(f"{where} ({one_line(repr(n))[:80]}) holds a control character (a newline, a tab)")
        first = seen.setdefault(label_key(n), i)
        if first != i:
            same = "" if names[first - 1] == n else f": {names[first - 1]!r} differs only in {SPELLINGS}"
            raise ValueError(f"classes (--classes): {n[:80]!r} is given twice (names {first} and {i}{same})")
        note = compound_note(n)          # "Non-<word> <disease>": a disease of its own, said
        if note:
            warnings.warn(InputWarning(f"classes (--classes): {note}"), stacklevel=3)
    return names


class Predictor:
    """A trained run folder ready for inference. Thread-safe (one forward at a time).

    Forwards run through :func:`raddiag.models.fastpath.prepare_for_inference`'s twin of the
    model (built at the first forward; ``backend``: ``"auto"``, ``"torch"``, ``"onnxruntime"``,
    ``"compile"``, or ``"off"`` for the plain model). ``self.model`` stays the plain model
    (saliency hooks it). ``limits``: the size bound of every input scan (set it to change the
    default)."""

    limits: Limits = DEFAULT_LIMITS

    def __init__(self, model, cfg: RunConfig, labels: LabelSpace, run_dir: Optional[Path] = None,
                 device: str = "cpu", backend: str = "auto") -> None:
        from raddiag.models.fastpath import BACKENDS

        if backend not in BACKENDS + ("off",):
            raise ValueError(f"unknown inference backend {backend!r}; choose one of {BACKENDS + ('off',)}")
        self.model = model.eval()
        self.cfg = cfg
        self.labels = labels
        self.run_dir = Path(run_dir) if run_dir else None
        self.device = device
        self.backend = backend
        self.lock = threading.Lock()
        self._text_encoder = None
        self._class_emb = None      # (names, encoder, prompt_sets) -> their embeddings, of the last call
        self.prompt_sets = True   # new class names: mean of each name's prompt set (False: the name alone)
        self._fast = None
        from raddiag.data.intensity import run_modality

        self.default_modality = run_modality(self.run_dir)

    @classmethod
    def load(cls, run_dir: PathLike, device: str = "cpu", backend: str = "auto",
             labels: Optional[PathLike] = None) -> "Predictor":
        """A run folder, or the authors' released checkpoint (folder or file; imported on first
        use into a cached run folder, ``labels``: its label dictionary when not beside it)."""
        from raddiag.models import load_model
        from raddiag.run import resolve_run

        run = resolve_run(run_dir, labels)
        model, cfg, label_space = load_model(run, device=device)
        return cls(model, cfg, label_space, run.root, device, backend)

    def inference_model(self):
        """The model forwards run through (the fast twin unless ``backend="off"``); call it
        holding ``self.lock``."""
        if self.backend == "off":
            return self.model
        if self._fast is None:
            from raddiag.models.fastpath import prepare_for_inference

            self._fast = prepare_for_inference(self.model.eval(), self.backend)
        return self._fast

    def __repr__(self) -> str:
        return (f"Predictor({self.run_dir}, {len(self.labels)} classes, preset={self.cfg.preset}, "
                f"input {self.cfg.data.size}x{self.cfg.data.size}x{self.cfg.data.depth})")

    # -- preprocessing ---------------------------------------------------------------------
    def prepare(self, scans: list[Scan], case_id: str = "case") -> tuple[dict, list[ScanInfo], list[int]]:
        """Scans -> (a dataset sample for ``collate_cases``, per-scan info, indices used). A scan that
        cannot be read (:class:`ScanError`: corrupt, NaN, constant...) is skipped, as ``data prepare``
        skips it, and listed with its reason; a case with no readable scan raises the first error.
        The input warnings of the reads (those of finding the scans too, when the caller collects
        them: :meth:`pending`) go with the sample (``sample["warnings"]``), each shown once."""
        with collect_input_warnings() as said:
            sample, infos, picked = self._read_case(scans, case_id)
            sample["warnings"] = [str(w) for w in said]
        return sample, infos, picked

    def _read_case(self, scans: list[Scan], case_id: str) -> tuple[dict, list[ScanInfo], list[int]]:
        # only the arrays of the scans the caps pick are kept: a folder of 1,500 images held them all
        keep = set(self._select(scans, range(len(scans))))
        infos, arrays, errors = [], [], []
        for j, s in enumerate(scans):
            info, arr = self._read_or_skip(s, errors)
            infos.append(info)
            arrays.append(arr if j in keep else None)
        readable = [j for j, info in enumerate(infos) if info.error is None]
        if not readable:
            raise errors[0]
        picked = self._select(scans, readable)
        for j in picked:            # a place an unreadable scan left to a later one: read that one again
            if arrays[j] is None:
                arrays[j] = self._read_scan(scans[j])[1]
        dc = self.cfg.data
        per_mod: dict[str, int] = defaultdict(int)
        items = []
        for j in picked:
            info = infos[j]
            info.used = True
            k = per_mod[info.modality]
            per_mod[info.modality] += 1
            items.append({"image": torch.from_numpy(arrays[j])[None], "is_3d": info.is_3d,
                          "key_slice": info.key_slice, "modality": info.modality,
                          "modality_id": modality_id(info.modality, k, dc.modality_scheme)})
        sample = {"scans": items, "labels": torch.zeros(len(self.labels)), "case_id": case_id, "anatomy": None,
                  "sources": [scans[j] for j in picked]}      # the used scans' files (saliency draws on them)
        return sample, infos, picked

    def _select(self, scans: list[Scan], among) -> list[int]:
        """The scans of ``among`` (indices into ``scans``) the run feeds, by its scan caps."""
        from raddiag.data.dataset import select_scans

        among = list(among)
        return [among[i] for i in select_scans([{"modality": scans[j].modality} for j in among], self.cfg.data, None)]

    def _read_or_skip(self, s: Scan, errors: list) -> tuple[ScanInfo, Optional[np.ndarray]]:
        """:meth:`_read_scan`, or for a scan that cannot be read its info with the reason (appended
        to ``errors`` too) and no array."""
        try:
            return self._read_scan(s)
        except ScanError as exc:
            errors.append(exc)
            return _info(s, is_3d=bool(s.is_3d), slices=0, key_slice=-1, error=str(exc)), None

    def _read_scan(self, s: Scan) -> tuple[ScanInfo, np.ndarray]:
        """One scan read at the run's geometry and windows: its info (not yet used) and its array."""
        from raddiag.data.intensity import warn_unlike_training, window_for
        from raddiag.data.preprocess import load_scan, store_to_input
        from raddiag.data.store import DTYPE as STORE_DTYPE

        dc, profile = self.cfg.data, {}
        window = window_for(s.modality, s.anatomy, dc.window, dc.windows)
        stored = dc.stored_geometry          # read as training read its store: that geometry, float16, resized
        size, depth = stored if stored else (dc.size, dc.depth)
        arr, key, n_file = load_scan(s, size, depth, window, self.limits, profile, dc.window_scaling)
        if stored:
            image, key = store_to_input(arr.astype(STORE_DTYPE), key, dc.size, dc.depth)
            arr = image[0].numpy()
        warn_unlike_training(self.run_dir, s, profile, dc.windows)
        is_3d = bool(s.is_3d) if s.is_3d is not None else n_file > 1     # the file's, as prepare records it
        return _info(s, is_3d=is_3d, slices=int(arr.shape[0]), key_slice=int(key)), arr

    def collate(self, samples: list[dict]) -> dict:
        from raddiag.data.dataset import collate_cases

        return collate_cases(samples, depth=self.cfg.data.depth)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits ``[B, C]`` of a collated batch."""
        return self.forward_details(batch).logits

    # -- class names scored zero-shot --------------------------------------------------------
    def class_embeddings(self, names: Sequence[str], encoder: Optional[PathLike] = None) -> torch.Tensor:
        """Text embeddings ``[C, d]`` of class names (the run's text encoder when it records one,
        else ``encoder``, else the packaged all-MiniLM-L6-v2). A negated name ("Non-X") gets X's
        embedding; its probability is complemented afterwards (:mod:`raddiag.knowledge.negation`).
        With ``self.prompt_sets`` (default) a name the run was not trained on is the mean of its
        prompt set (:func:`raddiag.knowledge.embed.prompt_set`)."""
        from raddiag.knowledge.embed import embed_labels, label_texts
        from raddiag.knowledge.encoder import TextEncoder
        from raddiag.knowledge.negation import scoring_texts

        key = (tuple(names), str(encoder), self.prompt_sets)
        if self._class_emb is not None and self._class_emb[0] == key:    # batch after batch: once
            return self._class_emb[1]
        if self._text_encoder is None:
            path = encoder
            if path is None and self.run_dir is not None:
                from raddiag.run import RunFolder

                path = RunFolder(self.run_dir).text_encoder()
            self._text_encoder = TextEncoder.load(path)
        emb = embed_labels(self._text_encoder, scoring_texts(list(names))[0], prompts=self.prompt_sets,
                           seen=label_texts(self.labels))
        self._class_emb = (key, emb)
        return emb

    # -- prediction --------------------------------------------------------------------------
    def predict(self, inputs, modality=None, top: int = 10, classes: Optional[Sequence[str]] = None,
                encoder: Optional[PathLike] = None, batch_size: int = 8, progress: bool = False,
                saliency: Optional[PathLike | bool] = None, saliency_class=None, all_slices: bool = False,
                saliency_top_k: Optional[int] = 64, overwrite: bool = False, saliency_errors: str = "raise"):
        """Ranked diagnoses for one case or several.

        ``inputs``: a folder, a file, a list of files (one case), or a list of folders / lists
        (several cases, batched ``batch_size`` at a time). ``modality``: one name, or one per
        input item (DICOM reads it from the tags); None: ``default_modality``, the run's only
        modality when it was trained on one. ``classes``: score these names instead of the
        run's label space, through the knowledge-guided head. Returns a :class:`CaseResult`, or a
        list for several cases, in input order: a :class:`CaseResult` for each case that could be
        read and a :class:`CaseError` (the file and the reason) for each that could not.

        ``saliency``: a folder to write Score-CAM overlays (PNG) into, or ``True`` to return them
        as data URLs in ``CaseResult.saliency``; for ``saliency_class`` (a name or index; default
        each case's top-ranked class), on each used scan's key slice (every slice with
        ``all_slices``); ``saliency_top_k`` channels per map (see :mod:`raddiag.serving.saliency`).
        An overlay file that exists already is refused unless ``overwrite``. Each figure shows the
        scan's slice at the input's own resolution beside it with the map over it and a colour bar.
        ``saliency_errors="keep"``: a case whose maps fail keeps its prediction, the reason in
        ``CaseResult.saliency_error`` (the CLI and the service print the prediction all the same).
        """
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        pending, several = self.pending(inputs, modality)
        if saliency not in (None, False, True) and Path(saliency).exists() and not Path(saliency).is_dir():
            raise NotADirectoryError(f"{saliency}: the saliency output must be a folder; it is a file")
        read = [p.prepare() for p in pending] if several else [pending[0].read()]   # one case: raise
        errors = {i: r for i, r in enumerate(read) if isinstance(r, CaseError)}
        prepared = [r[:2] for r in read if not isinstance(r, CaseError)]
        done = self._predict_prepared(prepared, True, top, classes, encoder, batch_size, progress) if prepared else []
        if saliency is not None and saliency is not False:   # files move in once all are written
            with nullcontext() if saliency is True else staged_files(saliency, "saliency") as stage, \
                    collect_input_warnings(show=False):   # the files read again: their warnings are said
                for (sample, _), res in zip(prepared, done):
                    try:
                        res.saliency = self.saliency(sample, res, saliency_class, saliency, all_slices,
                                                     saliency_top_k, classes, encoder, overwrite, stage)
                    except Exception as exc:  # noqa: BLE001 - the prediction stands; the reason is kept
                        if saliency_errors != "keep":
                            raise
                        from raddiag.data.errors import one_line

                        kind = "" if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: "
                        res.saliency_error = one_line(f"{kind}{exc}")
        if not several:
            return done[0]
        ok = iter(done)
        return [errors[i] if i in errors else next(ok) for i in range(len(read))]

    def pending(self, inputs, modality=None) -> tuple[list[PendingCase], bool]:
        """The cases of ``inputs`` (as :meth:`predict` takes them), not read yet, and whether
        the caller gave several."""
        cases, several = _split_cases(inputs)
        if modality is None:
            modality = self.default_modality      # the run's only modality (None when it saw several)
        if several and modality is not None and not isinstance(modality, str):
            modality = list(modality)
            if len(modality) != len(cases):
                raise ValueError(f"{len(modality)} modalities given for {len(cases)} cases")

        def reader(case, mod, case_id):
            def read():
                # a case folder's skipped files go with its result too; each DICOM header parsed once
                with headers_kept(), collect_input_warnings():
                    return self.prepare(case_scans(case, mod), case_id)
            return read

        mods = modality if several and isinstance(modality, list) else [modality] * len(cases)
        return [PendingCase(cid, reader(c, m, cid)) for c, m, cid in zip(cases, mods, _case_ids(cases))], several

    def predict_batch(self, pending: Sequence[PendingCase], top: int = 10, classes=None,
                      encoder=None) -> list[Union[CaseResult, CaseError]]:
        """One batch of not-yet-read cases (one forward), in order; a case that cannot be read
        gets a :class:`CaseError`."""
        return self._per_case(pending, lambda ok: self._predict_prepared(ok, True, top, classes, encoder,
                                                                         max(1, len(ok))))

    # -- embeddings ----------------------------------------------------------------------------
    def embed(self, inputs, modality=None, batch_size: int = 8, progress: bool = False):
        """The model's features of one case or several (``inputs`` and ``modality`` as in
        :meth:`predict`): a :class:`CaseEmbedding` (case embedding and one per used scan), or a
        list for several cases, batched ``batch_size`` at a time, a :class:`CaseError` in place
        of each case that cannot be read. The same case gives the same vectors on every call;
        in batches of other cases they agree to float32 rounding (about 1e-6: the kernels sum in
        an order that depends on the batch), and exactly with ``batch_size=1``."""
        pending, several = self.pending(inputs, modality)
        if not several:
            return self._embed_prepared([pending[0].read()])[0]
        return self.embed_cases(pending, batch_size, progress)

    def embed_cases(self, pending: Sequence[PendingCase], batch_size: int = 8,
                    progress: bool = False) -> list[Union[CaseEmbedding, CaseError]]:
        """Embeddings of not-yet-read cases (:meth:`pending`, :mod:`raddiag.serving.batch`),
        ``batch_size`` per forward, in order; a case that cannot be read gets a :class:`CaseError`."""
        out: list = []
        for chunk in in_batches(pending, batch_size, progress, "embed"):
            out += self._per_case(chunk, self._embed_prepared)
        return out

    def forward_details(self, batch: dict):
        """:class:`raddiag.models.raddiag.ModelOutput` of a collated batch (on the CPU): the
        logits, the case embedding and the per-scan embeddings of one forward."""
        with self.lock, torch.inference_mode():
            inputs = {k: batch[k].to(self.device) for k in self.model.input_keys}
            out = self.inference_model()(**inputs, return_details=True)
        return replace(out, **{k: v.float().cpu() for k, v in vars(out).items() if torch.is_tensor(v)})

    def _embed_prepared(self, prepared: list[Prepared]) -> list[CaseEmbedding]:
        out = self.forward_details(self.collate([p[0] for p in prepared]))
        res = []
        for b, (sample, infos, _) in enumerate(prepared):
            n = len(sample["scans"])
            res.append(CaseEmbedding(sample["case_id"], out.case_embedding[b].numpy().copy(),
                                     out.scan_embeddings[b, :n].numpy().copy(), infos,
                                     warnings=list(sample.get("warnings", []))))
        return res

    @staticmethod
    def _per_case(pending, run):
        """Read ``pending``, ``run`` the cases that could be read in one go; errors in their place."""
        read = [p.prepare() for p in pending]
        ok = [r for r in read if not isinstance(r, CaseError)]
        done = iter(run(ok) if ok else [])
        return [r if isinstance(r, CaseError) else next(done) for r in read]

    def saliency(self, sample: dict, result: CaseResult, class_=None, out=True, all_slices: bool = False,
                 top_k: Optional[int] = 64, classes=None, encoder=None, overwrite: bool = False,
                 stage=None) -> list[dict]:
        """Score-CAM maps of one prepared case (see :meth:`predict`); returns one record per map.
        A negated class name ("Non-X", scored 1 - p(X)) shows X's map, recorded as ``map_of``."""
        from raddiag.knowledge.negation import scoring_texts
        from raddiag.serving.saliency import case_figure, chosen_class, score_cam

        names = list(classes) if classes else list(self.labels.names)
        name = chosen_class(class_, names, result)
        c = names.index(name)
        texts, flip = scoring_texts(names) if classes else (names, np.zeros(len(names), dtype=bool))
        batch = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in self.collate([sample]).items()}
        emb = self.class_embeddings(classes, encoder) if classes else None
        used = [i for i in result.scans if i.used]
        records = []
        with self.lock:
            old = self.model.head.label_embeddings if emb is not None else None
            try:
                if emb is not None:
                    self.model.set_label_embeddings(emb)
                for n, info in enumerate(used):
                    slices = list(range(info.slices)) if all_slices else None
                    for m in score_cam(self.model, batch, c, n, slices, top_k=top_k, class_name=texts[c]):
                        rec = {"scan": info.id, "scan_index": n, "slice": m.slice, "class": name,
                               "layer": m.layer, "channels": m.channels}
                        if flip[c]:
                            rec["map_of"] = texts[c]
                        source = sample["sources"][n] if sample.get("sources") else None
                        rec.update(case_figure(m, source, self.cfg.data, self.limits, info, len(used), result, name,
                                               out, overwrite, stage))
                        records.append(rec)
            finally:
                if emb is not None:
                    self.model.set_label_embeddings(old)
        return records

    def _predict_prepared(self, prepared, several, top, classes, encoder, batch_size, progress=False):
        names, codes, thr, default, thr_src = self._label_view(classes)
        emb = self.class_embeddings(classes, encoder) if classes else None
        logits = []
        for chunk in in_batches(prepared, batch_size, progress, "predict"):
            batch = self.collate([p[0] for p in chunk])
            if emb is None:
                logits.append(self.forward(batch))
            else:
                logits.append(self._forward_with_classes(batch, emb))
        probs = probabilities(torch.cat(logits), self.cfg.data.task).numpy()
        if classes:
            from raddiag.knowledge.negation import complement, scoring_texts

            probs = complement(probs, scoring_texts(names)[1])      # "Non-X": 1 - p(X)
        results = []
        one_class = self.cfg.data.task == MULTICLASS
        for (sample, infos, *_), p in zip(prepared, probs):
            order = np.argsort(-p, kind="stable")
            # multiclass: the most probable class is the case's one prediction (no thresholds)
            chosen = (lambda j: j == order[0]) if one_class else (lambda j: p[j] >= thr[j])
            ranked = [Finding(names[j], codes[j], float(p[j]), None if one_class else float(thr[j]), bool(chosen(j)),
                              default_threshold=not one_class and default[j])
                      for j in order[: min(top, len(p))]]
            positive = [names[j] for j in order if chosen(j)]
            results.append(CaseResult(sample["case_id"], ranked, infos, ONE_CLASS if one_class else thr_src,
                                      positive=positive, warnings=list(sample.get("warnings", []))))
        return results if several else results[0]

    def _label_view(self, classes):
        """``(names, codes, thresholds, which thresholds are the default, the thresholds' source)`` of
        the classes scored: the run's, or ``classes`` through the knowledge head."""
        stored, missing = self.labels.threshold_values()     # missing: no validation positive, or none stored
        if classes:
            if self.cfg.model.head != "knowledge":
                raise ValueError("scoring new class names (--classes) needs a run trained with the "
                                 "knowledge-guided head (model.head=knowledge); this run uses "
                                 f"model.head={self.cfg.model.head}")
            names = check_class_names(classes)
            from raddiag.data.adapters.base import label_key
            from raddiag.knowledge.negation import scoring_texts

            texts, flip = scoring_texts(names)       # "Non-X" is scored as 1 - p(X): threshold 1 - t(X)
            # a name is a known class in any of its spellings (case, spaces, "_"), as negation reads it
            key = lambda t: label_key(str(t).replace("_", " "))       # noqa: E731
            known = {key(n): j for j, n in enumerate(self.labels.names)}
            idx = [known.get(key(t)) for t in texts]
            codes = [self.labels.codes[j] if j is not None and not f else None for j, f in zip(idx, flip)]
            default = [j is None or bool(missing[j]) for j in idx]
            thr = [DEFAULT_THRESHOLD if d else float(stored[j]) for j, d in zip(idx, default)]
            thr = [1.0 - v if f else v for v, f in zip(thr, flip)]
            return names, codes, thr, default, threshold_source(default, "the new classes and known ")
        default = [bool(m) for m in missing]
        return (list(self.labels.names), list(self.labels.codes), [float(t) for t in stored], default,
                threshold_source(default))

    def _forward_with_classes(self, batch, emb):
        with self.lock:
            old = self.model.head.label_embeddings
            try:
                self.model.set_label_embeddings(emb)
                with torch.inference_mode():
                    out = self.inference_model()(**{k: batch[k].to(self.device) for k in self.model.input_keys})
                return out.float().cpu()
            finally:
                self.model.set_label_embeddings(old)

    def class_index(self, name_or_index) -> int:
        """A class of the run's label space by name or index."""
        if isinstance(name_or_index, (int, np.integer)):
            if not 0 <= int(name_or_index) < len(self.labels):
                raise ValueError(f"class index {name_or_index} is out of range (0..{len(self.labels) - 1})")
            return int(name_or_index)
        try:
            return self.labels.index(str(name_or_index))
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None


def _info(s: Scan, **read) -> ScanInfo:
    """A scan's :class:`ScanInfo`, not yet used, with what reading it gave (``read``)."""
    return ScanInfo(id=scan_id(s.id, s.paths), paths=list(s.paths), modality=s.modality, used=False, **read)


def in_batches(items: Sequence, size: int, progress: bool, desc: str):
    """``items`` in consecutive slices of ``size``, with a progress bar over the items if asked."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=desc, unit="case")
    try:
        for s in range(0, len(items), size):
            yield items[s: s + size]
            if bar is not None:
                bar.update(len(items[s: s + size]))
    finally:
        if bar is not None:
            bar.close()
