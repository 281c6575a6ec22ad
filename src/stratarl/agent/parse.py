"""Parsing model output: `<strategy>`, `<think>`, `<action>`, `<answer>`.

The rules are forgiving about form and strict about content:
- tags match case-insensitively, with whitespace inside the brackets (`< Action >`) tolerated;
- a missing closing tag ends the content at the next tag or at the end of the text;
- a response with more than one `<action>` tag is unparseable: under RL a forgiving rule is a
  reward hack (the tiny policy learned to pad `<action><action>take coin</action>`, which the old
  "first non-empty" rule accepted, until every reply was a run of `<action>` tags);
- without any action tag, a line `Action: ...` is accepted; otherwise the output is unparseable;
- the action is stripped and its inner whitespace collapsed; matching against the admissible list
  ignores case and whitespace and returns the env's own spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ACTION_CHARS = 300


def _tag(name: str) -> tuple[re.Pattern, re.Pattern]:
    open_ = re.compile(rf"<\s*{name}\s*>", re.IGNORECASE)
    close = re.compile(rf"<\s*/\s*{name}\s*>", re.IGNORECASE)
    return open_, close


_TAGS = {name: _tag(name) for name in ("strategy", "think", "action", "answer", "observation")}
_ANY_TAG = re.compile(r"<\s*/?\s*(strategy|think|action|answer|observation)\s*>", re.IGNORECASE)
_ACTION_LINE = re.compile(r"^\s*action\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def extract(text: str, name: str) -> list[str]:
    """Contents of every `<name>` block in order (unterminated blocks end at the next tag)."""
    open_, close = _TAGS[name]
    out = []
    pos = 0
    while (m := open_.search(text, pos)) is not None:
        end = close.search(text, m.end())
        nxt = _ANY_TAG.search(text, m.end())
        stop = min(x.start() for x in (end, nxt) if x is not None) if (end or nxt) else len(text)
        out.append(text[m.end():stop])
        pos = end.end() if end is not None and end.start() == stop else stop
    return out


def normalize(action: str) -> str:
    return " ".join(action.split())


@dataclass
class ParsedStep:
    """What was read out of one step's response."""

    thought: str
    """Text of the first `<think>` block ('' when absent)."""
    action: str
    """The normalised action ('' when none could be read)."""
    answer: str | None
    """Content of `<answer>` when present (search-QA and tool envs)."""
    ok: bool
    """An action (or an answer) was found."""
    error: str = ""
    """Why parsing failed."""


def parse_step(text: str) -> ParsedStep:
    thoughts = extract(text, "think")
    thought = normalize(thoughts[0]) if thoughts else ""
    answers = [normalize(a) for a in extract(text, "answer") if a.strip()]
    blocks = extract(text, "action")
    if len(blocks) > 1:
        return ParsedStep(thought, "", None, False, f"{len(blocks)} <action> tags (one expected)")
    actions = [normalize(a) for a in blocks if a.strip()]
    if not actions and not _TAGS["action"][0].search(text):
        actions = [normalize(m.group(1)) for m in _ACTION_LINE.finditer(text) if m.group(1).strip()]
    answer = answers[0] if answers else None
    if actions:
        action = actions[0]
        if len(action) > MAX_ACTION_CHARS:
            return ParsedStep(thought, "", answer, False, f"action longer than {MAX_ACTION_CHARS} characters")
        return ParsedStep(thought, action, answer, True)
    if answer is not None:
        return ParsedStep(thought, "", answer, True)
    return ParsedStep(thought, "", None, False, "no <action> found")


def parse_strategy(text: str) -> str:
    """The plan inside `<strategy>`; without the tag, the whole text (stripped)."""
    blocks = [b.strip() for b in extract(text, "strategy") if b.strip()]
    return blocks[0] if blocks else _ANY_TAG.sub(" ", text).strip()


def match_admissible(action: str, admissible: list[str] | None) -> str | None:
    """The env's own spelling of `action` if it is admissible (case/whitespace-insensitive)."""
    if admissible is None:
        return action
    key = normalize(action).lower()
    for cand in admissible:
        if normalize(cand).lower() == key:
            return cand
    return None


_STEP_NUMBERS = re.compile(r"\d+")


def parse_judgment(text: str, num_steps: int) -> list[int]:
    """Step numbers (1-based, as shown to the judge) listed in the judge's answer, in range and
    without repeats. The answer is read from `<answer>` when present; 'none' gives []."""
    answers = extract(text, "answer")
    body = answers[0] if answers else text
    seen: list[int] = []
    for m in _STEP_NUMBERS.finditer(body):
        k = int(m.group())
        if 1 <= k <= num_steps and k not in seen:
            seen.append(k)
    return seen
