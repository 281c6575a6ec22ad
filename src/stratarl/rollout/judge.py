"""Critical self-judgment (StraTA, seed 000): after a rollout, a judge lists the steps that neither
follow the strategy nor advance the task; each listed step is flagged (`Step.judged`) and the
estimator gives it −κ. Penalty only, never a bonus; the judge's own tokens are never trained.

Judges:
- `policy` (default): the policy itself, prompted with the strategy and the numbered trajectory;
- `openai`: an external model behind any OpenAI-compatible endpoint;
- `rule`: deterministic — invalid actions, an action repeated at a state where it was already taken,
  and steps whose observation was already seen with no reward (no-ops);
- `none`: flags nothing.

The audit measures whether the self-judgment can be trusted: the fraction of steps flagged, and the
agreement of the judge with the rule judge on the steps the rules can decide — "bad" (invalid,
repeated, no-op) and "good" (the env gave a positive reward: the step advanced the task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..agent.parse import parse_judgment
from ..agent.prompts import judge_messages, render
from ..engines.base import Engine, SamplingParams
from ..errors import lookup
from ..types import Group, Trajectory

Flags = list[list[list[bool]]]  # [group][rollout (Group.flat order)][step]


class Judge(Protocol):
    def judge(self, groups: list[Group]) -> Flags: ...


@dataclass
class JudgeConfig:
    """Critical self-judgment."""

    kind: Literal["none", "rule", "policy", "openai"] = "none"
    """Which judge flags steps (StraTA uses `policy`)."""
    max_tokens: int = 24
    """Most tokens of a model judge's answer."""
    max_steps_shown: int = 40
    """Longer trajectories show the judge only their first this-many steps."""
    openai_model: str = ""
    """Model name at the OpenAI-compatible endpoint (judge `openai`)."""
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    """Endpoint of the external judge (judge `openai`)."""


# -- rule judge ------------------------------------------------------------------------------------


def rule_labels(traj: Trajectory) -> list[str]:
    """Per step: `bad` (invalid, repeated at the same state, or a no-op), `good` (positive env
    reward), or `undecided`."""
    seen_pairs: set[tuple[str, str]] = set()
    seen_obs: set[str] = {traj.steps[0].anchor} if traj.steps else set()
    labels = []
    for s in traj.steps:
        pair = (s.anchor, s.action)
        if not s.valid or pair in seen_pairs or (s.observation in seen_obs and s.reward <= 0):
            labels.append("bad")
        elif s.reward > 0:
            labels.append("good")
        else:
            labels.append("undecided")
        seen_pairs.add(pair)
        seen_obs.add(s.observation)
    return labels


class RuleJudge:
    def judge(self, groups: list[Group]) -> Flags:
        return [[[lab == "bad" for lab in rule_labels(t)] for t in g.flat] for g in groups]


class NoJudge:
    def judge(self, groups: list[Group]) -> Flags:
        return [[[False] * len(t.steps) for t in g.flat] for g in groups]


# -- model judges ----------------------------------------------------------------------------------


def _family(traj: Trajectory) -> str:
    return traj.task.env.split(":", 1)[0]


def _strategy_text(traj: Trajectory) -> str | None:
    from ..agent.parse import parse_strategy

    return parse_strategy(traj.strategy.text) if traj.strategy else None


class PolicyJudge:
    """The policy (through its engine) judges every trajectory, greedily, in one batched call."""

    def __init__(self, engine: Engine, tokenizer: Any, cfg: JudgeConfig, task_text: dict[str, str]):
        self.engine, self.tokenizer, self.cfg, self.task_text = engine, tokenizer, cfg, task_text

    def judge(self, groups: list[Group]) -> Flags:
        trajs = [t for g in groups for t in g.flat]
        prompts = [render(self.tokenizer, self._messages(t)) for t in trajs if t.steps]
        params = SamplingParams(temperature=0.0, max_tokens=self.cfg.max_tokens, stop=["</answer>"])
        answers = iter(c.text for c in self.engine.generate(prompts, params)) if prompts else iter(())
        return _unflatten(groups, [self._flags(t, next(answers)) if t.steps else [] for t in trajs])

    def _messages(self, t: Trajectory) -> list[dict[str, str]]:
        shown = [(s.action or s.text.strip()[:60], s.observation) for s in t.steps[: self.cfg.max_steps_shown]]
        return judge_messages(_family(t), self.task_text.get(t.task_uid, ""), _strategy_text(t), shown)

    def _flags(self, t: Trajectory, answer: str) -> list[bool]:
        listed = set(parse_judgment(answer, min(len(t.steps), self.cfg.max_steps_shown)))
        return [(i + 1) in listed for i in range(len(t.steps))]


class OpenAIJudge(PolicyJudge):
    """Same prompt and parsing as the policy judge, answered by an external chat model."""

    def judge(self, groups: list[Group]) -> Flags:
        trajs = [t for g in groups for t in g.flat]
        params = SamplingParams(temperature=0.0, max_tokens=self.cfg.max_tokens, stop=["</answer>"])
        flags = [self._flags(t, self.engine.chat(self._messages(t), params)) if t.steps else [] for t in trajs]
        return _unflatten(groups, flags)


def _unflatten(groups: list[Group], flat: list[list[bool]]) -> Flags:
    out, pos = [], 0
    for g in groups:
        n = len(g.flat)
        out.append(flat[pos:pos + n])
        pos += n
    return out


# -- applying and auditing -------------------------------------------------------------------------


def apply_flags(groups: list[Group], flags: Flags) -> None:
    """Write the verdicts onto the steps (`Step.judged`)."""
    for g, gf in zip(groups, flags, strict=True):
        for t, tf in zip(g.flat, gf, strict=True):
            for s, f in zip(t.steps, tf, strict=True):
                s.judged = bool(f)


def audit(groups: list[Group], flags: Flags) -> dict[str, float]:
    """Fraction flagged, and precision/recall of `flags` against the rule judge's decidable steps."""
    flagged = total = tp = fp_decided = fn = 0
    for g, gf in zip(groups, flags, strict=True):
        for t, tf in zip(g.flat, gf, strict=True):
            for lab, f in zip(rule_labels(t), tf, strict=True):
                total += 1
                flagged += f
                tp += f and lab == "bad"
                fp_decided += f and lab == "good"
                fn += (not f) and lab == "bad"
    out = {"judge/flagged_fraction": flagged / total if total else 0.0}
    if tp + fp_decided:
        out["judge/precision_vs_rule"] = tp / (tp + fp_decided)
    if tp + fn:
        out["judge/recall_vs_rule"] = tp / (tp + fn)
    return out


def make_judge(cfg: JudgeConfig, engine: Engine | None = None, tokenizer: Any = None,
               task_text: dict[str, str] | None = None) -> Judge:
    def openai_judge() -> Judge:
        from ..engines import make_openai_engine  # the external endpoint's client

        return OpenAIJudge(make_openai_engine(cfg.openai_base_url, cfg.openai_model), tokenizer, cfg, task_text or {})

    builders = {"none": NoJudge, "rule": RuleJudge,
                "policy": lambda: PolicyJudge(engine, tokenizer, cfg, task_text or {}),  # type: ignore[arg-type]
                "openai": openai_judge}
    return lookup("judge", cfg.kind, builders)()
