"""Held-out retrieval of the knowledge encoder before and after contrastive training.

Prints synonym -> category recall@1/@10 and the hierarchy check for the base encoder and
the fine-tuned one (same as ``raddiag knowledge train --out DIR``). Usage:
    python benchmarks/knowledge_train.py [OUT_DIR] [STEPS]
"""
import sys
import tempfile
import time

import torch

from raddiag.knowledge.train import DEFAULTS, format_table, train_knowledge_encoder

torch.set_num_threads(2)
out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="raddiag-knowledge-")
steps = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULTS["steps"]
t = time.time()
res = train_knowledge_encoder(out, steps=steps, progress=True)
print(format_table(res))
print(f"steps={res['steps']} batch={res['batch_size']} pairs={res['pairs']} wall={time.time() - t:.0f}s out={out}")
