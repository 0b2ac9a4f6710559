"""matplotlib for the project's figures (the evaluation report, the dataset statistics), in one
place: the Agg backend (no display needed), and names that come from the data drawn as text.

matplotlib reads a text holding two ``$`` as math (mathtext): a class or anatomy name such as
``$\\sqrt{x$`` stopped the report with a parse error, after metrics.json was written, naming no
class. :func:`plain` escapes every ``$`` (matplotlib's own escape, ``\\$``), so such a name is
drawn as it is written; axis ticks keep their math (a log axis's ``10^2``), which a global
``text.parse_math=False`` would have drawn as source text.
"""
from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plain(text) -> str:
    """``text`` (a class, anatomy or modality name) as matplotlib draws it literally."""
    return str(text).replace("$", r"\$")
