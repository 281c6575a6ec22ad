"""Tool graph, random walks and chain enumeration (ASTRA trajectory synthesis), checked by hand."""

import random
from collections import Counter

from stratarl.synth.graph import build_tool_graph, enumerate_chains, random_walk, sample_chains

TOOLS = ["a", "b", "c", "d"]
CHAINS = [["a", "b", "c"], ["a", "b"], ["b", "d"], ["c", "a"], ["x", "a"]]  # "x" is unknown: chain skipped


def graph():
    return build_tool_graph("s", TOOLS, CHAINS)


def test_edges_and_weights_from_verified_chains():
    # consecutive pairs: a>b (twice: chains 1 and 2), b>c, b>d, c>a; x>a is dropped with its chain
    assert graph().edges == {("a", "b"): 2, ("b", "c"): 1, ("b", "d"): 1, ("c", "a"): 1}
    assert graph().successors("b") == [("c", 1), ("d", 1)]
    assert graph().successors("d") == []


def test_enumeration_count_by_hand():
    # simple paths of 2-5 tools: from a: ab, abc, abd; from b: bc, bca, bd; from c: ca, cab, cabd; d: none -> 9
    chains = enumerate_chains(graph())
    assert len(chains) == 9
    assert ["c", "a", "b", "d"] in chains and ["a", "b", "c", "a"] not in chains
    assert len(enumerate_chains(graph(), 2, 2)) == 4  # the four edges


def test_walks_have_lengths_2_to_5_and_follow_edges_acyclically():
    g = graph()
    chains = sample_chains(g, random.Random(0), walks=300)
    assert chains and len({tuple(c) for c in chains}) == len(chains)
    for c in chains:
        assert 2 <= len(c) <= 5
        assert len(set(c)) == len(c)  # acyclic
        assert all((x, y) in g.edges for x, y in zip(c, c[1:], strict=False))
    # from c the only acyclic path is c > a > b, then d (c is visited), then nothing
    assert random_walk(g, random.Random(1), 5, acyclic=True, start="c") == ["c", "a", "b", "d"]


def test_cyclic_walks_may_revisit():
    g = graph()
    walks = [random_walk(g, random.Random(s), 5, acyclic=False, start="a") for s in range(50)]
    assert any(len(set(w)) < len(w) for w in walks)  # a b c a b ... happens when b > c is drawn


def test_walk_steps_are_edge_weighted():
    # a > b weight 3, a > c weight 1: a 2-tool walk from a picks b with probability 3/4
    g = build_tool_graph("s", ["a", "b", "c"], [["a", "b"]] * 3 + [["a", "c"]])
    rng = random.Random(7)
    counts = Counter(random_walk(g, rng, 2, start="a")[1] for _ in range(4000))
    assert abs(counts["b"] / 4000 - 0.75) < 0.03
