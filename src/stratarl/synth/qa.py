"""QA decomposition records and their quality score (ASTRA, seed 001; ALGORITHMS.md "ASTRA synthesis").

A record is a main question, its answer and a decomposition trace of sub-questions
`{id, hop, sub_question, sub_answer, depends_on, is_parallel, needs_tool}`. The quality score is

    QS = mean(dependency consistency, atomicity, sequential rationality, completeness)

and only records with QS >= the 90th percentile of the batch are kept. The paper has an LLM grade the
four dimensions; here each one is a deterministic rule (ours), so a run is reproducible offline:

- dependency consistency: share of sub-questions whose `depends_on` ids exist and come earlier, whose
  `hop` is 1 + the largest hop among them (1 with none), and which, when `is_parallel`, do not depend on
  the sub-question just before them;
- atomicity: share of sub-questions that ask one thing: at most one "?" and no "and" joining a second
  wh-question ("... and what ...");
- sequential rationality: share of sub-questions whose text contains the answer of every sub-question
  they depend on (the answer actually flows in; a missing dependency counts as not contained);
- completeness: 0 unless the main answer equals (normalised) the answer of a sink (a sub-question nobody
  depends on); else the share of sub-questions from which that sink is reachable along dependencies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..envs.search import normalize_answer
from ..errors import UserError

QS_DIMENSIONS = ("dependency_consistency", "atomicity", "sequential_rationality", "completeness")
_SECOND_QUESTION = re.compile(r"\b(and|or)\s+(what|who|whom|which|where|when|why|how|in what)\b", re.IGNORECASE)


@dataclass(frozen=True)
class TraceStep:
    """One sub-question of a decomposition trace."""

    id: int
    """1-based id within the record."""
    hop: int
    """Depth in the dependency graph (1 = needs no other answer)."""
    sub_question: str
    """The sub-question in words."""
    sub_answer: str
    """Its answer."""
    depends_on: tuple[int, ...]
    """Ids of the sub-questions whose answers it needs."""
    is_parallel: bool
    """Can be asked alongside the sub-question before it."""
    needs_tool: bool
    """Answered by calling a tool (else by reasoning over earlier answers)."""
    hint: dict[str, Any] | None = None
    """`x-offline-tool`: what the offline tool writer needs (name, parameter, argument, template kind)."""


@dataclass(frozen=True)
class QARecord:
    """A main question with its decomposition."""

    id: str
    """Record id."""
    domain: str
    """Topic; becomes the domain of the tools synthesised for it."""
    main_question: str
    """The question an agent is asked."""
    main_answer: str
    """Its final answer."""
    trace: tuple[TraceStep, ...]
    """The sub-questions, in a valid solving order."""


@dataclass
class QAScore:
    """The four dimensions and their mean."""

    dims: dict[str, float] = field(default_factory=dict)
    """Dimension name -> score in [0, 1]."""

    @property
    def qs(self) -> float:
        return float(np.mean([self.dims[d] for d in QS_DIMENSIONS]))


def _step(r: dict[str, Any]) -> TraceStep:
    return TraceStep(id=int(r["id"]), hop=int(r["hop"]), sub_question=str(r["sub_question"]),
                     sub_answer=str(r["sub_answer"]), depends_on=tuple(int(d) for d in r.get("depends_on", ())),
                     is_parallel=bool(r.get("is_parallel", False)), needs_tool=bool(r.get("needs_tool", True)),
                     hint=r.get("x-offline-tool"))


def record_from_dict(r: dict[str, Any]) -> QARecord:
    return QARecord(id=str(r["id"]), domain=str(r.get("domain", "synth")), main_question=str(r["main_question"]),
                    main_answer=str(r["main_answer"]), trace=tuple(_step(s) for s in r["trace"]))


def load_records(path: str | Path) -> list[QARecord]:
    """Records from a JSONL file; a malformed line is a UserError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"QA decomposition file not found: {path}")
    out = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if line.strip():
            try:
                out.append(record_from_dict(orjson.loads(line)))
            except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as e:
                raise UserError(f"{path}:{n}: not a QA decomposition record ({type(e).__name__}: {e})") from None
    return out


# --- the four rules (pure) --------------------------------------------------------------------------

def dependency_consistency(rec: QARecord) -> float:
    by_id = {s.id: s for s in rec.trace}
    ok = 0
    for s in rec.trace:
        deps = [by_id.get(d) for d in s.depends_on]
        exist = all(d is not None and d.id < s.id for d in deps)
        hop = 1 + max((d.hop for d in deps if d is not None), default=0)
        parallel = not s.is_parallel or (s.id - 1) not in s.depends_on
        ok += exist and s.hop == hop and parallel
    return ok / len(rec.trace) if rec.trace else 0.0


def is_atomic(question: str) -> bool:
    return question.count("?") <= 1 and _SECOND_QUESTION.search(question) is None


def atomicity(rec: QARecord) -> float:
    return sum(is_atomic(s.sub_question) for s in rec.trace) / len(rec.trace) if rec.trace else 0.0


def _contains(text: str, answer: str) -> bool:
    want = normalize_answer(answer)
    return bool(want) and f" {want} " in f" {normalize_answer(text)} "


def sequential_rationality(rec: QARecord) -> float:
    by_id = {s.id: s for s in rec.trace}
    ok = sum(all(d in by_id and _contains(s.sub_question, by_id[d].sub_answer) for d in s.depends_on)
             for s in rec.trace)
    return ok / len(rec.trace) if rec.trace else 0.0


def completeness(rec: QARecord) -> float:
    needed = {d for s in rec.trace for d in s.depends_on}
    sinks = [s for s in rec.trace if s.id not in needed and normalize_answer(s.sub_answer) ==
             normalize_answer(rec.main_answer)]
    if not sinks:
        return 0.0
    reach, frontier = {sinks[-1].id}, [sinks[-1].id]
    by_id = {s.id: s for s in rec.trace}
    while frontier:
        for d in by_id[frontier.pop()].depends_on:
            if d in by_id and d not in reach:
                reach.add(d)
                frontier.append(d)
    return len(reach) / len(rec.trace)


QS_RULES = {"dependency_consistency": dependency_consistency, "atomicity": atomicity,
            "sequential_rationality": sequential_rationality, "completeness": completeness}
"""Dimension name -> rule (record -> score in [0, 1])."""


def score_record(rec: QARecord) -> QAScore:
    """The four rule scores of a record (module docstring)."""
    return QAScore({name: float(rule(rec)) for name, rule in QS_RULES.items()})


def percentile_threshold(scores: list[float], q: float = 90.0) -> float:
    """The q-th percentile of the scores (numpy's linear interpolation); keep records with QS >= it."""
    if not scores:
        return 0.0
    return float(np.percentile(np.asarray(scores, dtype=float), q))


def filter_records(records: list[QARecord], q: float = 90.0) -> tuple[list[QARecord], list[QAScore], float]:
    """Score every record and keep those with QS >= the q-th percentile; returns (kept, scores of all,
    threshold)."""
    scores = [score_record(r) for r in records]
    threshold = percentile_threshold([s.qs for s in scores], q)
    kept = [r for r, s in zip(records, scores, strict=True) if s.qs >= threshold - 1e-12]
    return kept, scores, threshold
