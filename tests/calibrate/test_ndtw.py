"""nDTW (ALGORITHMS.md, STeCa calibration 4), checked against matrices worked out by hand."""

import math

import numpy as np
import pytest

from stratarl.calibrate.ndtw import action_distances, dtw, ndtw
from stratarl.rollout.diversity import TfidfEmbedder


class Lookup:
    """A fixed embedder: each text has a hand-picked unit vector."""

    def __init__(self, table):
        self.table = table

    def embed(self, texts):
        return np.array([self.table[t] for t in texts], dtype=np.float64)


def test_dtw_accumulates_the_cheapest_monotone_path():
    # D (3x4) and its accumulation C_ij = D_ij + min(C_{i-1,j}, C_{i,j-1}, C_{i-1,j-1}):
    #   D = 0 1 1 1      C = 0 1 2 3
    #       1 1 0 1          1 1 1 2
    #       1 1 1 0          2 2 2 1
    D = np.array([[0, 1, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]], dtype=float)
    assert dtw(D) == 1.0
    assert dtw(np.array([[0.4]])) == pytest.approx(0.4)


def test_ndtw_with_tfidf_on_identical_and_word_disjoint_actions():
    # identical texts have cos 1 (D = 0); texts sharing no word or bigram have cos 0 (D = 1): the matrix
    # above, so nDTW = 1 / sqrt(3² + 4²) = 0.2
    a = ["look around", "take knife", "eat meal"]
    b = ["look around", "open fridge", "take knife", "eat meal"]
    assert ndtw(a, b, TfidfEmbedder()) == pytest.approx(0.2)
    assert ndtw(b, a, TfidfEmbedder()) == pytest.approx(0.2)  # symmetric here: D transposes, the path too
    assert ndtw(a, a, TfidfEmbedder()) == pytest.approx(0.0, abs=1e-12)
    assert ndtw(["open fridge"], ["eat meal"], TfidfEmbedder()) == pytest.approx(1 / math.sqrt(2))


def test_ndtw_with_graded_similarity():
    # e(x) = (1, 0), e(y) = (0.6, 0.8): cos(x, y) = 0.6, D = 0.4.
    # a = [x, y], b = [y]:  D = [[0.4], [0.0]]  ->  C = [[0.4], [0.4]], nDTW = 0.4 / sqrt(4 + 1)
    emb = Lookup({"x": [1.0, 0.0], "y": [0.6, 0.8]})
    assert action_distances(emb.embed(["x", "y"]), emb.embed(["y"])) == pytest.approx(np.array([[0.4], [0.0]]))
    assert ndtw(["x", "y"], ["y"], emb) == pytest.approx(0.4 / math.sqrt(5))


def test_ndtw_refuses_an_empty_sequence():
    with pytest.raises(ValueError, match="non-empty"):
        ndtw([], ["look around"], TfidfEmbedder())
