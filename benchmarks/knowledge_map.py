"""``raddiag knowledge map`` accuracy on held-out radiology disorder names.

The names and their ICD-10-CM categories are in benchmarks/data/radiology_icd_heldout.tsv (its
header says where they come from; they are used by nothing else). Prints top-1 / top-5 per split
(``dev`` and ``seen`` may be read to diagnose; ``test`` is the reported figure) with bootstrap 95 % intervals,
the dev / seen misses and the time per name (index built; the first call also builds it). ``--synth``
adds a second dev set from another source: the disorders of ``raddiag.data.synth`` with their
categories, less any name on the list. Usage:

    python benchmarks/knowledge_map.py [--encoder DIR|base|best] [--index INDEX.xml] [--source NAME | --no-sources] [--synth]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from raddiag.knowledge.kb import build_kb
from raddiag.knowledge.map import resolve_encoder, suggest_codes

LIST = Path(__file__).parent / "data" / "radiology_icd_heldout.tsv"


def read_list(path: Path = LIST) -> list[tuple[str, str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, code, split = line.split("\t")
            rows.append((name, code, split))
    return rows


def synth_rows() -> list[tuple[str, str, str]]:
    """The synthetic data's disorders as a second dev set (split "synth"), less names on the list."""
    from raddiag.data.synth import DISORDERS

    listed = {r[0].lower() for r in read_list()}
    return [(d.name, d.code, "synth") for d in DISORDERS if d.name.lower() not in listed]


def interval(hits: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = hits[rng.integers(len(hits), size=(n_boot, len(hits)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def print_by_vocabulary(rows, res) -> None:
    """The test split's top-1 / top-5 for the names the radiology vocabulary holds word for word
    and for the rest (counts only: the names stay unread)."""
    from raddiag.knowledge.sources import radiology_records
    from raddiag.knowledge.terms import exact_key

    records, _ = radiology_records()
    held = {exact_key(n) for r in records for n in (r["term"], *r["synonyms"])}
    for inside in (True, False):
        idx = [i for i, r in enumerate(rows) if r[2] == "test" and (exact_key(r[0]) in held) == inside]
        if idx:
            top1 = np.mean([res[i][0][0] == rows[i][1] for i in idx])
            top5 = np.mean([rows[i][1] in [c for c, _, _ in res[i]] for i in idx])
            print(f"test names {'in' if inside else 'not in'} the radiology vocabulary: n={len(idx)}  "
                  f"top-1 {top1:.3f}  top-5 {top5:.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="best", help="an encoder folder, 'base' or 'best' (default)")
    p.add_argument("--index", action="append", default=[], help="ICD-10-CM Alphabetic Index XML")
    p.add_argument("--no-sources", action="store_true", help="ICD-10-CM tabular names only")
    p.add_argument("--source", action="append", default=None,
                   help="built-in synonym sources, repeatable (default: the knowledge base's: gem, radiology)")
    p.add_argument("--lexical-weight", type=float, default=None)
    p.add_argument("--synth", action="store_true", help="also score the synthetic data's disorders (split 'synth')")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    rows = read_list() + (synth_rows() if a.synth else [])
    t = time.time()
    encoder, which = resolve_encoder(a.encoder)
    kb = build_kb(index=a.index, sources=() if a.no_sources else a.source)
    kw = {} if a.lexical_weight is None else {"lexical_weight": a.lexical_weight}
    names = [r[0] for r in rows]
    res = suggest_codes(names, top=5, encoder=encoder, kb=kb, **kw)
    cold = time.time() - t
    t1 = time.time()
    suggest_codes(names, top=5, encoder=encoder, kb=kb, **kw)
    per_name = (time.time() - t1) / len(names)
    print(f"encoder: {which}")
    print("knowledge sources: " + ", ".join(f"{k} {v['records']}" for k, v in kb.source_counts().items()))
    for split in ("dev", "seen", "synth", "test", "all"):
        idx = [i for i, r in enumerate(rows) if (split == "all" and r[2] != "synth") or r[2] == split]
        if not idx:
            continue
        top1 = np.array([res[i][0][0] == rows[i][1] for i in idx], dtype=float)
        top5 = np.array([rows[i][1] in [c for c, _, _ in res[i]] for i in idx], dtype=float)
        (l1, h1), (l5, h5) = interval(top1), interval(top5)
        print(f"{split:<4} n={len(idx):3d}  top-1 {top1.mean():.3f} [{l1:.3f}, {h1:.3f}]  "
              f"top-5 {top5.mean():.3f} [{l5:.3f}, {h5:.3f}]")
    print_by_vocabulary(rows, res)
    print("dev / seen misses (name: expected -> suggested top 3; test misses are not printed: see the list header):")
    for (name, code, split), r in zip(rows, res):
        if r[0][0] != code and split in ("dev", "seen", "synth"):
            print(f"  [{split}] {name}: {code} -> {', '.join(c for c, _, _ in r[:3])}")
    print(f"time per name {1000 * per_name:.0f} ms (index built); first call with the index build {cold:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
