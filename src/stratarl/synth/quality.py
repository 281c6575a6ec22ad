"""The 7-dimension trajectory quality score for SFT filtering (ASTRA, seed 001; ALGORITHMS.md).

score = mean(query understanding, query plan, tool-response understanding, tool-response-conditioned
planning, tool-call status, conciseness, final answer), each in [0, 1]. In the paper a judge model
grades each dimension; `judge_scores` asks the teacher for the same (validated, falling back to the
rules). Offline every dimension is a deterministic rule of ours, over the trajectory's records:

- query understanding: 1 if the first call is to a tool of the task's chain, else 0;
- query plan: LCS(called tools, chain) / len(chain) — the chain's tools called in its order;
- tool-response understanding: share of successful results one of whose values (JSON leaves) reappears
  in a later assistant turn (a later call's arguments or the final answer);
- tool-response-conditioned planning: share of results followed by a fitting move — after a failure
  the same tool is called again; after a success the next turn is not the identical call;
- tool-call status: mean over calls of 1 (success) or 0.5 (failure) — the paper's values;
- conciseness: min(1, len(chain) / number of calls);
- final answer: 1 if it contains a value of the last successful result, 0.5 if it is not empty but does
  not, 0 if there is none.
With no call at all, every dimension but the final answer is 0.
"""

from __future__ import annotations

import json
from typing import Any

from ..envs.search import normalize_answer
from .teacher import Teacher, json_object
from .trajectories import SynthTrajectory

DIMENSIONS = ("query_understanding", "query_plan", "tool_response_understanding",
              "tool_response_conditioned_planning", "tool_call_status", "conciseness", "final_answer")
FAILURE_STATUS = 0.5
"""Tool-call status of a failed call (a success is 1)."""


def leaf_values(text: str) -> list[str]:
    """Normalised string and number leaves of a JSON result (the raw text if it is not JSON)."""
    try:
        obj = json.loads(text)
    except ValueError:
        obj = text
    out: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str | int | float) and not isinstance(x, bool):
            norm = normalize_answer(str(x))
            if norm:
                out.append(norm)

    walk(obj)
    return out


def _mentions(text: str, values: list[str]) -> bool:
    padded = f" {normalize_answer(text)} "
    return any(f" {v} " in padded for v in values)


def lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b):
            prev, row[j + 1] = row[j + 1], prev + 1 if x == y else max(row[j + 1], row[j])
    return row[-1]


def _later_texts(traj: SynthTrajectory) -> list[str]:
    """What each step's result could be reused in: the arguments of every later call and the answer."""
    texts = [json.dumps(s.arguments, ensure_ascii=False) for s in traj.steps] + [traj.final_answer]
    return [" ".join(texts[i + 1:]) for i in range(len(traj.steps))]


def _fitting_moves(traj: SynthTrajectory) -> list[bool]:
    moves = []
    for i, s in enumerate(traj.steps):
        nxt = traj.steps[i + 1] if i + 1 < len(traj.steps) else None
        if not s.ok:
            moves.append(nxt is not None and nxt.name == s.name)
        else:
            moves.append(nxt is None or (nxt.name, nxt.arguments) != (s.name, s.arguments))
    return moves


def rule_scores(traj: SynthTrajectory) -> dict[str, float]:
    """The seven rule scores (module docstring)."""
    steps, chain = traj.steps, traj.task.chain
    last_ok = next((s for s in reversed(steps) if s.ok), None)
    answer = (1.0 if last_ok and _mentions(traj.final_answer, leaf_values(last_ok.result)) else 0.5) \
        if traj.final_answer.strip() else 0.0
    if not steps:
        return {**dict.fromkeys(DIMENSIONS, 0.0), "final_answer": answer}
    ok_steps = [(s, later) for s, later in zip(steps, _later_texts(traj), strict=True) if s.ok]
    return {
        "query_understanding": float(steps[0].name in chain),
        "query_plan": lcs([s.name for s in steps], chain) / len(chain),
        "tool_response_understanding": (sum(_mentions(later, leaf_values(s.result)) for s, later in ok_steps)
                                        / len(ok_steps)) if ok_steps else 0.0,
        "tool_response_conditioned_planning": sum(_fitting_moves(traj)) / len(steps),
        "tool_call_status": sum(1.0 if s.ok else FAILURE_STATUS for s in steps) / len(steps),
        "conciseness": min(1.0, len(chain) / len(steps)),
        "final_answer": answer,
    }


def mean_score(scores: dict[str, float]) -> float:
    return sum(scores[d] for d in DIMENSIONS) / len(DIMENSIONS)


def _transcript(traj: SynthTrajectory) -> str:
    lines = [f"Request: {traj.task.query}"]
    for s in traj.steps:
        lines += [f"Assistant: {s.content}", f"Tool {'result' if s.ok else 'error'}: {s.result}"]
    return "\n".join([*lines, f"Final answer: {traj.final_answer}"])


def judge_scores(traj: SynthTrajectory, teacher: Teacher) -> tuple[dict[str, float], str]:
    """The teacher's seven scores if its answer is a JSON object with all of them in [0, 1], else the
    rules; tool-call status is always the rule's (it is defined by the calls' outcomes). Returns the
    scores and `judge` or `rules`."""
    rules = rule_scores(traj)
    if not teacher.online:
        return rules, "rules"
    prompt = (f"Grade this tool-use trajectory on each of {', '.join(DIMENSIONS)} from 0 to 1. Reply with one JSON "
              f"object mapping each name to its grade.\n\n{_transcript(traj)}")
    obj = json_object(teacher.ask("judge", [{"role": "user", "content": prompt}]))
    grades = {d: obj.get(d) for d in DIMENSIONS} if obj else {}
    if not obj or not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1
                          for v in grades.values()):
        teacher.reject("judge")
        return rules, "rules"
    teacher.accept("judge")
    return {**{d: float(v) for d, v in grades.items()}, "tool_call_status": rules["tool_call_status"]}, "judge"
