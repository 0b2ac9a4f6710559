#!/usr/bin/env bash
# The training benchmarks of issue 29 on a GPU with bf16 autocast, in one short run:
#   benchmarks/gpu_train.sh AUTHORS_RP3D_DEMO_DIR [SIDE_VENV_PYTHON]
# train_speed.py (ours against the authors' RadNet on its four cases at 256 px, bf16 and fp32) runs in the
# side venv that has torchvision (see its docstring); train_overhead.py and train_memory.py (the
# `paper` preset, with and without activation checkpointing) in the project's .venv. Written and
# checked on the CPU only (no GPU was lent when it was written): expect to fix a detail on first use.
set -euo pipefail
AUTHORS=${1:?usage: benchmarks/gpu_train.sh AUTHORS_RP3D_DEMO_DIR [SIDE_VENV_PYTHON]}
SIDE=${2:-/work/sidevenv/bin/python}
PY=${PY:-.venv/bin/python}
cd "$(dirname "$0")/.."
for amp in bf16 none; do
  PYTHONPATH=src "$SIDE" benchmarks/train_speed.py "$AUTHORS" --device cuda --amp "$amp" \
    --geometry all --size 256 --reps 10
done
"$PY" benchmarks/train_overhead.py --device cuda --amp bf16 --rounds 3
"$PY" benchmarks/train_memory.py --device cuda --amp bf16 --both
