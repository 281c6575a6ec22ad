"""Typed records that flow between the stages of stratarl (see DESIGN.md, "Records").

Every arrow of the data flow carries one of these, never an untyped dict. They round-trip
through JSON (`to_json` / `from_json`) so that trajectories on disk load back into records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

Termination = Literal[
    "success", "env_done", "max_steps", "context_overflow", "parse_error", "env_error", "timeout"
]
TERMINATIONS: tuple[str, ...] = typing.get_args(Termination)
SampleKind = Literal["strategy", "action", "sft"]


@dataclass(frozen=True)
class Task:
    """One episode's starting point. Two rollouts of the same Task start from the same state."""

    env: str
    """Registered environment id without parameters, e.g. `twx:cookingworld`."""
    split: str
    """`train`, `dev` or `test`."""
    index: int
    """Position of the task inside its split."""
    seed: int
    """The environment's own seed (TextWorldExpress) or variation index (ScienceWorld)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Environment parameters, e.g. `{"numLocations": 3}`; part of the task's identity."""

    @property
    def uid(self) -> str:
        """A stable id: env, split, index, seed and a hash of the parameters."""
        p = orjson.dumps(self.params, option=orjson.OPT_SORT_KEYS)
        return f"{self.env}/{self.split}/{self.index}/{self.seed}/{hashlib.sha1(p).hexdigest()[:8]}"

    def __hash__(self) -> int:
        return hash(self.uid)


@dataclass(kw_only=True)
class Turn:
    """One model call: exactly the tokens fed and exactly the tokens sampled."""

    prompt_ids: list[int]
    """Token ids fed to the engine, exactly."""
    response_ids: list[int]
    """Token ids the engine sampled, exactly; training uses these, never re-tokenized text."""
    logprobs: list[float]
    """Engine log-probability of each sampled token (same length as `response_ids`)."""
    text: str
    """The decoded response."""
    finish_reason: str = "stop"
    """Why generation ended: `stop` (stop string / EOS), `length` (max_tokens)."""


@dataclass(kw_only=True)
class Step(Turn):
    """One step of the step-level MDP: a model turn, the parsed action, and the env's answer."""

    thought: str = ""
    """Text inside `<think>` (empty when thinking is off or absent)."""
    action: str = ""
    """The parsed action string sent to the environment."""
    valid: bool = True
    """Parsed and admissible; an invalid step does not advance the environment."""
    anchor: str = ""
    """The raw env observation that preceded this step (no history, no template); GiGPO's anchor."""
    observation: str = ""
    """The env observation returned by this step (or the invalid-action message)."""
    reward: float = 0.0
    """Environment reward for this step."""
    penalty: float = 0.0
    """Sum of the runner's penalties on this step (invalid action, format), positive; the self-judge's
    verdict is `judged`, never a penalty here."""
    done: bool = False
    """The environment ended the episode at this step."""
    info: dict[str, Any] = field(default_factory=dict)
    """Small env info (score, won); never the admissible-action list."""
    advantage: float | None = None
    """Advantage assigned to this step once computed."""
    judged: bool = False
    """The self-judge flagged this step as neither following the strategy nor advancing the task."""


@dataclass(kw_only=True)
class Trajectory:
    """One episode: the optional strategy turn, the steps, and how it ended."""

    task: Task
    """The task the episode started from."""
    strategy: Turn | None = None
    """The strategy turn (`<strategy>…</strategy>`), or None for flat algorithms."""
    steps: list[Step] = field(default_factory=list)
    """The steps in order."""
    outcome: float = 0.0
    """Final scalar reward: 1/0 for won (TextWorldExpress), score/100 (ScienceWorld)."""
    won: bool = False
    """The environment reports the task solved."""
    termination: Termination = "max_steps"
    """Why the episode ended."""
    error: str | None = None
    """Error text when `termination` is `env_error` or `timeout`."""
    task_uid: str = ""
    """`task.uid`; groups rollouts of the same task."""
    strategy_uid: str = ""
    """Id of the strategy this rollout followed (empty without one)."""
    uid: str = ""
    """Id of this trajectory."""
    strategy_advantage: float | None = None
    """Advantage of the strategy turn, once computed."""

    @property
    def num_steps(self) -> int:
        return len(self.steps)


@dataclass(kw_only=True)
class Group:
    """The tree for one task: strategies, then the rollouts that followed each of them."""

    task: Task
    """The shared task; every rollout starts from its state."""
    strategies: list[Turn] = field(default_factory=list)
    """The N selected strategies (empty for flat algorithms)."""
    trajectories: list[list[Trajectory]] = field(default_factory=list)
    """`trajectories[i]` are the M rollouts that followed strategy i (one list for flat algorithms)."""

    @property
    def flat(self) -> list[Trajectory]:
        """All rollouts of the task, strategy by strategy."""
        return [t for ts in self.trajectories for t in ts]


@dataclass(kw_only=True)
class Advantages:
    """What an advantage estimator returns for a list of Groups."""

    steps: list[list[list[float]]]
    """`steps[g][k][t]`: advantage of step t of the k-th rollout (`Group.flat` order) of group g."""
    strategies: list[list[float]] = field(default_factory=list)
    """`strategies[g][i]`: advantage of strategy i of group g (empty without strategies)."""
    returns: list[list[list[float]]] | None = None
    """Value targets per step for a critic (step-GAE), same shape as `steps`."""
    token_advantages: list[list[list[list[float]]]] | None = None
    """Per-token advantages `[g][k][t][token]` for token-level estimators (classic PPO GAE)."""
    token_returns: list[list[list[list[float]]]] | None = None
    """Per-token value targets `[g][k][t][token]` (classic PPO GAE)."""


@dataclass(kw_only=True)
class Sample:
    """One training row: the exact token ids of one step (or strategy, or SFT example)."""

    input_ids: list[int]
    """prompt_ids + response_ids, exactly as the engine saw and sampled them."""
    loss_mask: list[int]
    """1 on tokens the model generated (trained), 0 on prompt, observation and padding tokens."""
    advantage: float = 0.0
    """Scalar advantage broadcast to the row's response tokens."""
    old_logprobs: list[float] | None = None
    """Behaviour-policy logprob of each token of `input_ids` (0 where `loss_mask` is 0)."""
    ref_logprobs: list[float] | None = None
    """Reference-policy logprob of each token, when a KL term is on."""
    engine_logprobs: list[float] | None = None
    """The engine's logprobs for the response tokens, aligned like `old_logprobs`."""
    token_advantages: list[float] | None = None
    """Per-token advantages (token-level GAE); overrides `advantage` where present."""
    returns: float | list[float] | None = None
    """Critic target: one value for the row (step-GAE) or one per response token (token GAE)."""
    weight: float = 1.0
    """Multiplies this row's loss (STeCa weights, SFT sample weights)."""
    uid: str = ""
    """Trajectory uid (or dataset row id) this row came from."""
    step_index: int = -1
    """Index of the step inside its trajectory (-1 for a strategy turn)."""
    kind: SampleKind = "action"
    """`strategy`, `action` or `sft`."""
    segments: list[int] | None = None
    """Prompt-sharing rows (`train.samples.share_prompts`): per token, 0 for the shared prompt and i >= 1
    for branch i, which sees the shared prompt and its own earlier tokens only. None: one causal row."""
    positions: list[int] | None = None
    """Position id of each token when `segments` is set (every branch continues the shared prompt)."""

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)


# ---------------------------------------------------------------------------------------------
# JSON round-trip

R = TypeVar("R")


def to_dict(record: Any) -> Any:
    """A record (or list/dict of records) as plain JSON-ready data."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: to_dict(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, (list, tuple)):
        return [to_dict(x) for x in record]
    if isinstance(record, dict):
        return {k: to_dict(v) for k, v in record.items()}
    return record


def from_dict(cls: type[R], data: Any) -> R:
    """Rebuild a record of type `cls` from `to_dict` output."""
    return _build(cls, data)


def to_json(record: Any) -> bytes:
    return orjson.dumps(to_dict(record), option=orjson.OPT_SERIALIZE_NUMPY)


def from_json(cls: type[R], raw: bytes | str) -> R:
    return from_dict(cls, orjson.loads(raw))


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _build(tp: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{k: _build(hints[k], v) for k, v in data.items() if k in names})
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(args[0], data) if len(args) == 1 else data
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return [_build(arg, x) for x in data]
    if origin is dict:
        _, val = typing.get_args(tp) or (Any, Any)
        return {k: _build(val, v) for k, v in data.items()}
    if tp is float and isinstance(data, int):
        return float(data)
    return data


def read_jsonl(path: str | Path) -> list[Any]:
    """The JSON values of a JSON-lines file, one per non-blank line."""
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines() if line.strip()]
