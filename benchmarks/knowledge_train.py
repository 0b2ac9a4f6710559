"""Held-out retrieval of the knowledge encoder before and after contrastive training, with 95 %
intervals that resample the held-out ICD-10-CM categories and the paired gain's interval (same
table as ``raddiag knowledge train`` / ``raddiag knowledge evaluate``). Usage:

    python benchmarks/knowledge_train.py [--out DIR] [--steps N] [--hard-negatives F] [--no-sources]
"""
import argparse
import tempfile
import time

import torch

from raddiag.knowledge.kb import build_kb
from raddiag.knowledge.train import DEFAULTS, format_table, train_knowledge_encoder

p = argparse.ArgumentParser()
p.add_argument("--out", default=None)
p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
p.add_argument("--hard-negatives", type=float, default=DEFAULTS["hard_negatives"])
p.add_argument("--no-sources", action="store_true", help="ICD-10-CM tabular synonyms only")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(2)
out = a.out or tempfile.mkdtemp(prefix="raddiag-knowledge-")
t = time.time()
kb = build_kb(sources=() if a.no_sources else None)
res = train_knowledge_encoder(out, kb=kb, steps=a.steps, hard_negatives=a.hard_negatives, seed=a.seed,
                              progress=False)
b = res["before"]
print(f"held-out: {b['n_queries']} synonym queries over {len(set(b['query_groups']))} categories, "
      f"{b['n_triples']} triples; sources: {', '.join(kb.source_counts())}")
print(format_table(res))
print(f"steps={res['steps']} batch={res['batch_size']} hard_negatives={a.hard_negatives} pairs={res['pairs']} "
      f"wall={time.time() - t:.0f}s out={out}")
