"""The AutoCoA protocol: one prompt (the question), then one growing reply of segments.

A model segment is `<think>…</think>` followed by `<action>search: Q</action>` or `<answer>A</answer>`;
an observation segment is `<observation>…</observation>`, written by the real env or, in the simulated
env, by the policy itself. Segments are kept as separate token-id lists, so which tokens are
observation tokens is known from where they came from — never from re-tokenizing text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..agent.parse import extract, normalize
from ..agent.prompts import render

SegmentKind = Literal["model", "observation"]
OBS_OPEN, OBS_CLOSE = "<observation>", "</observation>"
TURN_STOPS = ["</action>", "</answer>"]
SYSTEM = ("You are an agent that answers questions with a search engine. Think inside <think>...</think>, then "
          "either search with <action>search: QUERY</action> (the results come back inside "
          "<observation>...</observation>) or give the final answer with <answer>ANSWER</answer>.")
_SEARCH = re.compile(r"^\s*search\s*:\s*(.+?)\s*$", re.IGNORECASE | re.DOTALL)
_FORMAT = re.compile(r"</think>\s*<(action|answer)>", re.IGNORECASE)


@dataclass
class Segment:
    """A run of reply tokens from one source."""

    ids: list[int]
    """Token ids exactly as fed to / sampled by the engine."""
    kind: SegmentKind
    """`model` (the policy's think + action/answer) or `observation` (env or simulated)."""
    logprobs: list[float] = field(default_factory=list)
    """Engine logprobs of sampled ids (empty for injected tokens)."""
    text: str = ""
    """The decoded text (for logs and parsing, never for training)."""


@dataclass
class Turn:
    """What a model segment says."""

    kind: Literal["search", "answer", "invalid"]
    """A search, the final answer, or neither."""
    arg: str
    """The query or the answer ('' when invalid)."""
    format_ok: bool
    """`</think>` present and followed by an action or answer tag (ALGORITHMS.md, Format (AutoCoA))."""


def prompt_ids(tokenizer: Any, question: str) -> list[int]:
    """The chat-template prompt of one question (the reply starts right after it)."""
    return render(tokenizer, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])


def encode(tokenizer: Any, text: str) -> list[int]:
    """Ids of text that the policy did not sample (gold data, env observations, injected tags)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def read_turn(text: str) -> Turn:
    """The first answer or action of a model segment (an answer before any action wins)."""
    ok = _FORMAT.search(text) is not None
    answers = [normalize(a) for a in extract(text, "answer") if a.strip()]
    actions = [normalize(a) for a in extract(text, "action") if a.strip()]
    answer_first = answers and (not actions or text.lower().find("<answer>") < text.lower().find("<action>"))
    if answer_first:
        return Turn("answer", answers[0], ok)
    m = _SEARCH.match(actions[0]) if actions else None
    return Turn("search", " ".join(m.group(1).split()), ok) if m else Turn("invalid", "", ok)


def search_turn(thought: str, query: str) -> str:
    return f"<think>{thought}</think><action>search: {query}</action>"


def answer_turn(thought: str, answer: str) -> str:
    return f"<think>{thought}</think><answer>{answer}</answer>"


def observation(text: str) -> str:
    return f"{OBS_OPEN}{text}{OBS_CLOSE}"
