"""nDTW between two trajectories' actions (STeCa, seed 003; ALGORITHMS.md, STeCa calibration 4).

    D_ij = 1 − cos(e(a_i), e(b_j))            e: a sentence embedder (`rollout.diversity.Embedder`)
    C_ij = D_ij + min(C_{i−1,j}, C_{i,j−1}, C_{i−1,j−1}),   C_00 = D_00 (first row/column: running sums)
    nDTW(a, b) = C_{n−1,m−1} / √(n² + m²)

A distance, not a similarity: 0 for identical sequences, growing as they part. This is the released
code's `plan_ndtw` (which embeds each action with BERT's [CLS]); here any `Embedder` works — `tfidf`
(no model), `minilm` or `policy`.
"""

from __future__ import annotations

import math

import numpy as np

from ..rollout.diversity import Embedder


def action_distances(emb_a_ND: np.ndarray, emb_b_MD: np.ndarray) -> np.ndarray:
    """D = 1 − cos between every pair of rows (rows are L2-normalised; a zero row has cos 0). [N, M]"""
    return 1.0 - emb_a_ND @ emb_b_MD.T


def dtw(dist_NM: np.ndarray) -> float:
    """Accumulated cost C_{N−1,M−1} of the cheapest monotone alignment (steps right, down, diagonal)."""
    n, m = dist_NM.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = dist_NM[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    return float(acc[n, m])


def ndtw(a: list[str], b: list[str], embedder: Embedder) -> float:
    """nDTW(a, b) = DTW(D) / √(n² + m²) over the action texts `a` (n) and `b` (m), embedded together in
    one call (TF-IDF is fitted on exactly these texts)."""
    if not a or not b:
        raise ValueError(f"nDTW needs two non-empty action sequences (got {len(a)} and {len(b)} actions)")
    emb = embedder.embed(list(a) + list(b))
    dist = action_distances(emb[: len(a)], emb[len(a):])
    return dtw(dist) / math.sqrt(len(a) ** 2 + len(b) ** 2)
