"""Zero-shot transfer to another label space (paper Section 4.3.3), three modes:

- ``mapping``: each target class is linked to one or more source classes (a mapping file, or
  suggested from names, ICD-10-CM codes and the knowledge encoder); a case is positive when
  any linked class passes its validation threshold. The union is taken after thresholding,
  so only F1, MCC and ACC are defined (no AUC), as in the paper.
- ``normal``: the source ``Normal`` score against the target's normal cases (AUC; AP with the normal
  cases as positives, and with the abnormal ones beside it): a case
  is normal when it has a class meaning a normal study ("Normal", "No acute abnormality"; the
  rule the mapping uses) and no other label but ones denying a finding ("Non-COVID-19").
- ``text`` (beyond the paper): the knowledge-guided head scores the target's class names
  directly through their label embeddings (every metric, thresholds from the target's
  validation split when it has one).

Negated class names ("Non-COVID-19", "No finding", "X negative"; :mod:`raddiag.knowledge.negation`)
are never linked to the class they negate: a name meaning a normal study is linked to
``Normal``, any other negated name is left unmapped with the reason in the results, and the
text mode scores "Non-X" as ``1 - p(X)``.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from raddiag.data.case import NORMAL
from raddiag.data.errors import InputWarning
from raddiag.data.labels import LabelSpace
from raddiag.knowledge import negation
from raddiag.staging import write_json

log = logging.getLogger(__name__)
MODES = ("mapping", "normal", "text")


def _norm(s: str) -> str:
    return " ".join(s.lower().replace("_", " ").split())


def suggest_mapping(source: LabelSpace, target: LabelSpace, encoder=None, min_similarity: float = 0.6,
                    ) -> dict[str, list[str]]:
    """Target class -> source classes: same name, else same ICD-10-CM category, else the nearest
    source name by the knowledge encoder when similar enough. A suggestion for a person to confirm.

    A negated target name is never linked to the class it negates (text encoders place
    "Non-X" next to "X"): one meaning a normal study goes to the source's normal class, any
    other is left unmapped (:func:`unmapped_reason`); the encoder's candidates exclude the
    source's negated and normal names."""
    by_name = {_norm(n): n for n in source.names}
    by_code: dict[str, list[str]] = {}
    for n, c in zip(source.names, source.codes):
        if c:
            by_code.setdefault(c, []).append(n)
    mapping: dict[str, list[str]] = {}
    unresolved: list[str] = []
    source_normal = normal_classes(source.names)
    for name, code in zip(target.names, target.codes):
        meaning = negation.parse(name)
        note = negation.compound_note(name)      # "Non-<word> <disease>": a disease of its own, said
        if note:
            warnings.warn(InputWarning(f"zero-shot target class: {note}"), stacklevel=2)
        if _norm(name) in by_name:
            mapping[name] = [by_name[_norm(name)]]
        elif meaning.normal or meaning.negates is not None:
            if meaning.normal and source_normal:
                mapping[name] = source_normal[:1]
        elif code and code in by_code:
            mapping[name] = list(by_code[code])
        else:
            unresolved.append(name)
    if unresolved:
        from raddiag.knowledge.embed import embed_labels
        from raddiag.knowledge.encoder import TextEncoder

        candidates = [n for n in source.names if not negation.parse(n).normal and negation.parse(n).negates is None]
        encoder = encoder or TextEncoder.load(None)
        src = embed_labels(encoder, candidates) if candidates else None
        tgt = embed_labels(encoder, unresolved)
        sim = (tgt @ src.T).numpy() if src is not None else np.full((len(unresolved), 1), -1.0)
        for i, name in enumerate(unresolved):
            j = int(sim[i].argmax())
            if sim[i, j] >= min_similarity:
                mapping[name] = [candidates[j]]
            else:
                log.warning("zero-shot mapping: no source class is close to %r (best %r, %.2f); left unmapped",
                            name, candidates[j] if candidates else None, sim[i, j])
    kept = {t: [s for s in links if not negation.contradicts(t, s)] for t, links in mapping.items()}
    return {t: links for t, links in kept.items() if links}


def normal_classes(names: Sequence[str]) -> list[str]:
    """The names meaning a normal study ("Normal", "No finding", "No acute abnormality"; the
    rule that links them to ``Normal`` in the mapping), ``Normal`` first."""
    return sorted((n for n in names if negation.parse(n).normal), key=lambda n: n != NORMAL)


def _denies_a_finding(name: str) -> bool:
    """"Non-COVID-19", "Pneumothorax negative": a label that asserts no finding (not "Abnormal")."""
    negates = negation.parse(name).negates
    return negates is not None and not negation.parse(negates).normal


def normal_cases(labels: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """``[N]`` bool: a case is normal when it has a class meaning a normal study
    (:func:`normal_classes`) and no other label but ones denying a finding ("No acute
    abnormality; Non-COVID-19" is normal, "Normal; Pneumonia" is not). ``labels`` are as the data
    layer encodes them: a case labelled ``Normal`` beside any other label has lost ``Normal``
    there (read as abnormal, with a warning, when the data were prepared), so "Normal;
    Non-COVID-19" counts as abnormal; write "No finding; Non-COVID-19" for a normal study."""
    lab = np.asarray(labels) > 0.5
    normal = np.array([negation.parse(n).normal for n in names], dtype=bool)
    finding = ~normal & ~np.array([_denies_a_finding(n) for n in names], dtype=bool)
    return lab[:, normal].any(axis=1) & ~lab[:, finding].any(axis=1)


def unmapped_reason(name: str, given: bool = False) -> str:
    """Why a target class was left out of the mapping (printed and saved with the results)."""
    meaning = negation.parse(name)
    if given:
        return "not in the given mapping"
    if meaning.normal:
        return "names a normal study, but the model has no Normal class"
    if meaning.negates is not None:
        return (f"negates {meaning.negates!r}, so it is never linked to it; the text mode scores it "
                f"as 1 - p({meaning.negates}), or link it yourself in a --mapping file")
    return "no source class with the same name, ICD-10-CM code or a close enough name embedding"


def load_mapping(path: str | Path, source: LabelSpace, target: LabelSpace) -> dict[str, list[str]]:
    """A JSON object ``{target class: [source class, ...]}``, every name checked."""
    from raddiag.jsonl import read_json

    path = Path(path)
    try:
        raw = read_json(path)
    except (OSError, ValueError) as exc:                                # JSON or UTF-8 errors
        raise ValueError(f"{path}: cannot read the class mapping ({str(exc).removeprefix(f'{path}: ')})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of target class -> list of source classes")
    for t, links in raw.items():
        if t not in target:
            raise ValueError(f"{path}: target class {t!r} is not in the target label space")
        links = [links] if isinstance(links, str) else links
        if not isinstance(links, list) or not all(isinstance(s, str) for s in links):
            raise ValueError(f"{path}: {t!r} must link to a source class name or a list of them, got {links!r}")
        if not links:
            raise ValueError(f"{path}: {t!r} links to no source class: give one, or leave {t!r} out of the file")
        for s in links:
            if s not in source:
                raise ValueError(f"{path}: source class {s!r} (for {t!r}) is not in the model's label space")
            if negation.contradicts(t, s):
                raise ValueError(f"{path}: target class {t!r} is linked to {s!r}, but one negates the other "
                                 "(scored as the same class, their cases would be swapped); remove the link")
    return {t: [v] if isinstance(v, str) else list(v) for t, v in raw.items()}


def _links(mapping, source: LabelSpace, target: LabelSpace) -> dict[str, list[str]]:
    """The mapping mode's links: given as a dict, read from a file (checked), or suggested."""
    if isinstance(mapping, dict):
        return mapping
    if mapping is not None:
        return load_mapping(mapping, source, target)
    return suggest_mapping(source, target)


def mapped_margins(scores: np.ndarray, thresholds: np.ndarray, links: Sequence[Sequence[int]]) -> np.ndarray:
    """``[N, T]`` margin of the best linked source class over its threshold: >= 0 means positive.
    This is the union after thresholding, expressed so the shared metric engine applies."""
    # -2 is below any margin (scores and thresholds lie in [0, 1]): an unlinked class is never positive.
    out = np.full((scores.shape[0], len(links)), -2.0, dtype=np.float64)
    margin = scores - thresholds[None, :]
    for t, idx in enumerate(links):
        if len(idx):
            out[:, t] = margin[:, list(idx)].max(axis=1)
    return out


def zeroshot(run_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
             modes: Sequence[str] = MODES, mapping: Optional[str | Path | dict] = None,
             split: str = "test", encoder_dir: Optional[str | Path] = None, batch_size: int = 8,
             progress: bool = False, prompts: bool = True) -> dict:
    """Run the zero-shot modes of a trained run on a prepared target dataset; writes
    ``zeroshot.json`` (and the mapping used) into ``out_dir`` and returns the results. The text
    mode scores each class the run was not trained on by the mean embedding of its prompt set
    (:func:`raddiag.knowledge.embed.prompt_set`), or by its name alone with ``prompts=False``."""
    from raddiag.data.errors import check_out_folder
    from raddiag.data.shards import ShardData, open_training_data, split_dataset
    from raddiag.evaluation.metrics import per_class_metrics
    from raddiag.inference import predict_dataset
    from raddiag.models import load_model
    from raddiag.run import resolve_run

    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown zero-shot mode {m!r}; choose from {MODES}")
    out = Path(out_dir)
    check_out_folder(out)
    run = resolve_run(run_dir)
    model, cfg, source = load_model(run)
    data = open_training_data(data_dir)   # a prepared folder or shards (raddiag.data.shards)
    target = data.label_space(cfg.data.granularity)
    ds = split_dataset(data, split, target, cfg.data)
    results: dict = {"run": str(run_dir), "data": str(data_dir), "split": split, "n_cases": len(ds)}
    links = _links(mapping, source, target) if "mapping" in modes else None   # checked before predicting
    out.mkdir(parents=True, exist_ok=True)        # only once the run, the data and the mapping are read
    need_source_scores = any(m in modes for m in ("mapping", "normal"))
    preds = predict_dataset(model, ds, batch_size, progress=progress, desc="zero-shot") if need_source_scores else None

    if "mapping" in modes:
        thr = source.threshold_values()[0]
        if source.thresholds is None:
            results["mapping_note"] = "the run has no validation thresholds; 0.5 used for every source class"
        idx = [[source.index(s) for s in links.get(t, [])] for t in target.names]
        margins = mapped_margins(preds.scores, thr, idx)
        m = per_class_metrics(margins, preds.labels, thresholds=np.zeros(len(target)))
        per_class = {t: {k: _f(m[k][i]) for k in ("f1", "mcc", "acc")} | {"linked": links.get(t, [])}
                     for i, t in enumerate(target.names)}
        averaged = averaged_classes(preds.labels, target.names, idx)
        results["mapping"] = {
            "macro": {k: _nanmean(m[k], [t in averaged["averaged"] for t in target.names])
                      for k in ("f1", "mcc", "acc")},
            "per_class": per_class,
            "unmapped": [t for t, i in zip(target.names, idx) if not i],
            "notes": {t: unmapped_reason(t, given=mapping is not None)
                      for t, i in zip(target.names, idx) if not i},
        } | averaged

    if "normal" in modes:
        results["normal"] = normal_results(preds.scores, preds.labels, source, target, split)

    if "text" in modes:
        if cfg.model.head != "knowledge":
            results["text"] = {"skipped": "the run's head is not knowledge-guided (model.head=mlp)"}
        else:
            from raddiag.evaluation import evaluate_predictions
            from raddiag.knowledge.embed import PROMPT_MODALITIES, embed_labels, label_texts
            from raddiag.knowledge.encoder import TextEncoder

            # "Non-X" embeds X and is scored 1 - p(X) (negation.scoring_texts)
            texts, flip = negation.scoring_texts(target.names, label_texts(target))
            # prompt templates name the target's own modalities; a class's code finds its concept
            mods = data.modalities() if isinstance(data, ShardData) else \
                sorted({s["modality"] for r in data.records_for(split) for s in r["scans"] if s.get("modality")})
            encoder = encoder_dir or run.text_encoder()
            emb = embed_labels(TextEncoder.load(encoder), texts,
                               prompts=prompts, seen=label_texts(source), modalities=mods or PROMPT_MODALITIES,
                               codes=[None if f else c for c, f in zip(target.codes, flip)])
            model.set_label_embeddings(emb)
            test = predict_dataset(model, ds, batch_size, progress=progress, desc="zero-shot text")
            val = None
            if data.count("val"):
                val = predict_dataset(model, split_dataset(data, "val", target, cfg.data), batch_size,
                                      progress=progress, desc="zero-shot text (val)")
            report = evaluate_predictions(
                negation.complement(test.scores, flip), test.labels, target,
                val_scores=negation.complement(val.scores, flip) if val else None,
                val_labels=val.labels if val else None,
                anatomy=test.anatomy, case_ids=test.case_ids, out_dir=out / "text")
            results["text"] = {"all": report["metrics"]["all"], "threshold_source": report["threshold_source"],
                               "text_encoder": str(encoder) if encoder else "the packaged all-MiniLM-L6-v2",
                               "complemented": [t for t, f in zip(target.names, flip) if f]}
    from raddiag.staging import staged_files

    with staged_files(out, "zeroshot") as stage:    # together, when every mode is done
        if links is not None:
            write_json(stage / "mapping.json", links)
        write_json(stage / "zeroshot.json", results)
    return results


def averaged_classes(labels: np.ndarray, names: Sequence[str], idx: Sequence[Sequence[int]]) -> dict:
    """The mapped target classes the macro averages (a positive and a negative case in the
    split), and those it leaves out as ``raddiag metrics`` says it: ``no_positive`` (no case of
    the class) and ``no_negative`` (every case has it)."""
    pos = (np.asarray(labels) > 0.5).sum(axis=0)
    mapped = [(t, int(p), len(labels) - int(p)) for t, p, i in zip(names, pos, idx) if i]
    return {"averaged": [t for t, p, q in mapped if p and q],
            "no_positive": [t for t, p, _ in mapped if not p],
            "no_negative": [t for t, p, q in mapped if p and not q]}


def normal_results(scores: np.ndarray, labels: np.ndarray, source: LabelSpace, target: LabelSpace,
                   split: str) -> dict:
    """The normal mode: the source's normal score against :func:`normal_cases`: ``auc``, ``ap`` (the
    normal cases as positives) and ``ap_abnormal`` (the abnormal ones), with the reason
    (``na_reason``) when they are not defined."""
    from raddiag.evaluation.metrics import per_class_metrics

    src, tgt = normal_classes(source.names), normal_classes(target.names)
    if not src or not tgt:
        which = "the model" if not src else "the target label space"
        return {"skipped": f"{which} has no class meaning a normal study (such as {NORMAL!r} or 'No finding')"}
    normal = normal_cases(labels, target.names)
    p = scores[:, [source.index(src[0])]].astype(np.float64)
    # The paper's reading (Figure 5: the Normal class's AUC and AP) and evaluate's `normal` row: the
    # normal cases are the positives, scored by p(Normal). AP depends on which side is positive, so
    # the other reading is given beside it: abnormal cases positive, ranked by -p(Normal), exactly
    # the order of 1 - p(Normal) without its rounding (in float32 every p below 3e-8 made 1 - p
    # exactly 1, tying cases the model told apart). The AUC is the same either way.
    m = per_class_metrics(p, normal[:, None].astype(np.float64))
    a = per_class_metrics(-p, (~normal)[:, None].astype(np.float64))
    res = {"auc": _f(m["auc"][0]), "ap": _f(m["ap"][0]), "ap_abnormal": _f(a["ap"][0]),
           "n_abnormal": int((~normal).sum()), "n_normal": int(normal.sum()), "normal_classes": tgt,
           "source_class": src[0]}
    if res["auc"] is None:
        res["na_reason"] = f"no {'normal' if not res['n_normal'] else 'abnormal'} case in the {split} split"
    return res


def _f(x) -> Optional[float]:
    x = float(x)
    return None if np.isnan(x) else x


def _nanmean(values: np.ndarray, keep: Sequence[bool]) -> Optional[float]:
    v = np.asarray(values, dtype=float)[np.asarray(keep, dtype=bool)]
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else None
