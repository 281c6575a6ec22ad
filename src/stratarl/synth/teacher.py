"""The teacher: any OpenAI-compatible endpoint (`stratarl.engines.make_openai_engine`), or none (offline).

Teacher output is never trusted: every caller parses and validates it, and on failure falls back to
the offline writer or rejects the item. `Teacher` counts every request, transport error and rejection,
so the run report shows how often the teacher's output was unusable. A transport error (server down,
HTTP 500) counts as a rejected answer; it does not stop the run.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..engines.base import SamplingParams


@dataclass
class TeacherConfig:
    """The teacher endpoint (empty `base_url` = offline: rule-based writers and scorers only)."""

    base_url: str = ""
    """OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1; empty runs offline."""
    model: str = ""
    """Model name sent with each request."""
    temperature: float = 0.0
    """Sampling temperature of the teacher."""
    max_tokens: int = 256
    """Most tokens per teacher answer."""
    retries: int = 2
    """Environment synthesis: extra attempts (told why the last failed) after a tool fails validation or verification."""
    timeout: float = 120.0
    """Seconds one request may take."""


class Teacher:
    """Counts requests and rejections per purpose (`counts[f"{purpose}_{event}"]`)."""

    def __init__(self, cfg: TeacherConfig):
        from ..engines import make_openai_engine

        self.cfg = cfg
        self.engine = make_openai_engine(cfg.base_url, cfg.model) if cfg.base_url else None
        if self.engine is not None:
            self.engine.timeout = cfg.timeout
        self.counts: Counter[str] = Counter()

    @property
    def online(self) -> bool:
        return self.engine is not None

    def ask(self, purpose: str, messages: list[dict[str, str]]) -> str | None:
        """The teacher's answer, or None (offline, or the request failed)."""
        if self.engine is None:
            return None
        self.counts[f"{purpose}_requests"] += 1
        try:
            return self.engine.chat(messages, SamplingParams(temperature=self.cfg.temperature,
                                                             max_tokens=self.cfg.max_tokens))
        except Exception as e:  # noqa: BLE001 - a broken teacher answer must not end the run
            self.counts[f"{purpose}_errors"] += 1
            self.counts[f"error:{type(e).__name__}"] += 1
            return None

    def reject(self, purpose: str) -> None:
        self.counts[f"{purpose}_rejected"] += 1

    def accept(self, purpose: str) -> None:
        self.counts[f"{purpose}_accepted"] += 1


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def json_object(text: str | None) -> dict[str, Any] | None:
    """The first JSON object in `text` (whole text, a ``` fence, or the outermost braces), else None."""
    if not text:
        return None
    candidates = [text, *_FENCE.findall(text)]
    if "{" in text and "}" in text:
        candidates.append(text[text.find("{"):text.rfind("}") + 1])
    for c in candidates:
        try:
            obj = json.loads(c)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            return obj
    return None
