"""Tool graph and tool chains (ASTRA trajectory synthesis, seed 001).

Per server: a node per tool; a directed edge f_i -> f_j whenever f_j directly follows f_i in a
verified chain, weighted by how many times that pair occurs over all verified chains. Candidate chains
(2-5 tools) come from edge-weighted random walks (optionally acyclic) or from enumerating every simple
path. Everything here is a pure function of its arguments (walks take an explicit `random.Random`).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

MIN_LENGTH, MAX_LENGTH = 2, 5
"""Chain lengths in tools (ALGORITHMS.md: 2-5)."""


@dataclass
class ToolGraph:
    """The transition graph of one server."""

    server: str
    """Server name."""
    nodes: list[str]
    """Tool names, in the server's order."""
    edges: dict[tuple[str, str], int] = field(default_factory=dict)
    """(f_i, f_j) -> number of times f_j directly follows f_i in the verified chains."""

    def successors(self, node: str) -> list[tuple[str, int]]:
        """(next tool, weight) for every edge out of `node`, in node order."""
        return [(b, self.edges[(node, b)]) for b in self.nodes if (node, b) in self.edges]


def build_tool_graph(server: str, tools: list[str], chains: list[list[str]]) -> ToolGraph:
    """The graph of `tools` from verified `chains`; a chain naming an unknown tool is skipped whole."""
    known = set(tools)
    pairs: Counter[tuple[str, str]] = Counter()
    for chain in chains:
        if all(t in known for t in chain):
            pairs.update(zip(chain, chain[1:], strict=False))
    return ToolGraph(server, list(tools), dict(sorted(pairs.items(), key=lambda kv: (tools.index(kv[0][0]),
                                                                                     tools.index(kv[0][1])))))


def random_walk(graph: ToolGraph, rng: random.Random, length: int, acyclic: bool = True,
                start: str | None = None) -> list[str]:
    """One walk of at most `length` tools: start at `start` (else a node with out-edges, uniformly),
    then step to a successor with probability proportional to the edge weight; with `acyclic` a tool is
    never revisited. Stops early at a node with no (unvisited) successor."""
    starts = [n for n in graph.nodes if graph.successors(n)]
    if not starts:
        return []
    walk = [start if start is not None else rng.choice(starts)]
    while len(walk) < length:
        options = [(b, w) for b, w in graph.successors(walk[-1]) if not (acyclic and b in walk)]
        if not options:
            break
        walk.append(rng.choices([b for b, _ in options], weights=[w for _, w in options])[0])
    return walk


def sample_chains(graph: ToolGraph, rng: random.Random, walks: int, min_length: int = MIN_LENGTH,
                  max_length: int = MAX_LENGTH, acyclic: bool = True) -> list[list[str]]:
    """`walks` random walks, each with a target length drawn uniformly from [min_length, max_length];
    walks shorter than `min_length` and repeats are dropped (so fewer than `walks` chains may come back)."""
    seen: set[tuple[str, ...]] = set()
    chains = []
    for _ in range(walks):
        walk = random_walk(graph, rng, rng.randint(min_length, max_length), acyclic)
        if len(walk) >= min_length and tuple(walk) not in seen:
            seen.add(tuple(walk))
            chains.append(walk)
    return chains


def enumerate_chains(graph: ToolGraph, min_length: int = MIN_LENGTH, max_length: int = MAX_LENGTH) -> list[list[str]]:
    """Every simple path (no tool twice) with `min_length`..`max_length` tools, depth-first in node order."""
    out: list[list[str]] = []

    def extend(path: list[str]) -> None:
        if len(path) >= min_length:
            out.append(list(path))
        if len(path) == max_length:
            return
        for b, _ in graph.successors(path[-1]):
            if b not in path:
                extend(path + [b])

    for node in graph.nodes:
        extend([node])
    return out
