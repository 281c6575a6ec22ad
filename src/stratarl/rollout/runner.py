"""The episode runner: many episodes at once over one engine and one EnvPool.

Each round, every live episode's next step prompt goes into one `engine.generate` call; the parsed
actions go to the pool as one batch; then each episode is advanced or ended. An episode ends on
env done, `max_steps`, context overflow, too many unparseable outputs, an env error or a wall-clock
timeout, and the reason is recorded in `Trajectory.termination` — nothing is dropped.

Invalid steps (unparseable, or not in the admissible list) are recorded with `valid=False` and the
invalid-action penalty; the env is not stepped and the next prompt shows the same observation with
the step marked invalid. Where the env has no admissible list (ScienceWorld), the env is stepped
and its own verdict (`info["action_valid"]`) decides.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..agent.memory import Budget, fit_step_prompt, remember
from ..agent.parse import match_admissible, parse_step
from ..agent.prompts import PromptConfig, StepView, step_prime
from ..engines.base import Completion, Engine, SamplingParams
from ..envs.pool import EnvPool, EnvReply
from ..types import Step, Task, Trajectory, Turn

INVALID_OBSERVATION = "Invalid action: {why}. Nothing happened."


def not_admissible(action: str) -> str:
    """Why an action outside the admissible list is refused (the `why` of INVALID_OBSERVATION)."""
    return f"'{action}' is not admissible"


@dataclass
class StepSampling:
    """Sampling of step and strategy turns."""

    temperature: float = 1.0
    """Sampling temperature (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus mass."""
    max_tokens: int = 48
    """Most tokens of one step response."""
    strategy_max_tokens: int = 64
    """Most tokens of one strategy."""


@dataclass
class RunnerConfig:
    """How episodes are run."""

    max_steps: int = 20
    """Horizon: steps per episode."""
    invalid_penalty: float = 0.1
    """Penalty on a step whose action is unparseable or not admissible."""
    max_invalid: int = 0
    """End the episode (`parse_error`) after this many consecutive invalid steps; 0 = never."""
    episode_timeout: float = 0.0
    """Wall-clock seconds per episode before it ends with `timeout`; 0 = no limit."""
    context: int = 2048
    """Model context length (prompt + response)."""
    sampling: StepSampling = field(default_factory=StepSampling)
    """Sampling of step turns."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """Prompt layout."""


@dataclass
class EpisodeStart:
    """An opened episode about to be run."""

    task: Task
    """Its task."""
    reply: EnvReply
    """The pool's reset reply (episode id, first observation, info)."""
    strategy: Turn | None = None
    """The strategy turn this rollout follows (None for flat algorithms)."""
    strategy_text: str | None = None
    """The parsed plan shown in step prompts."""
    strategy_uid: str = ""
    """Id of the strategy."""
    uid: str = ""
    """Id of the trajectory."""
    prefix: list[Step] = field(default_factory=list)
    """Steps already taken in this episode before the runner takes over (replayed from the task's start,
    e.g. STeCa's step values); they head the trajectory and count towards `max_steps`."""
    view: StepView | None = None
    """The step view after `prefix` (its history filled); None builds a fresh one from `reply`."""


@dataclass
class _Live:
    start: EpisodeStart
    traj: Trajectory
    view: StepView
    env_obs: str
    invalid_run: int = 0
    ended: bool = False
    t0: float = field(default_factory=time.monotonic)


def family_of(task: Task) -> str:
    return task.env.split(":", 1)[0]


def request_seed(seed: int, *parts: object) -> int:
    """A stable 31-bit seed for one engine call (same run seed, same call -> same samples)."""
    return zlib.crc32(repr((seed, *parts)).encode()) & 0x7FFFFFFF


def run_episodes(engine: Engine, tokenizer: Any, pool: EnvPool, starts: list[EpisodeStart],
                 cfg: RunnerConfig, seed: int, experience: Callable[[str], str] | None = None) -> list[Trajectory]:
    """Run the opened episodes to the end; trajectories come back in the order of `starts`. With
    `experience` (SLEA-RL, `agent/experience.py`), each step prompt shows what it returns for the raw
    env observation of that step ('' shows nothing)."""
    budget = Budget(cfg.context, cfg.sampling.max_tokens)
    live = [_open(s) for s in starts]
    for lv in live:
        if lv.start.reply.error:
            _end(lv, lv.start.reply.error_kind or "env_error", lv.start.reply.info, lv.start.reply.error)
    turn = 0
    while active := [lv for lv in live if not lv.ended]:
        prompts, ready = [], []
        for lv in active:
            if experience is not None:
                lv.view.experience = experience(lv.env_obs) or None
            ids = fit_step_prompt(tokenizer, lv.view, cfg.prompt, budget)
            if ids is None:
                _end(lv, "context_overflow", {}, None)
            else:
                prompts.append(ids)
                ready.append(lv)
        if not ready:
            break
        params = SamplingParams(temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
                                max_tokens=cfg.sampling.max_tokens, stop=["</action>", "</answer>"],
                                seed=request_seed(seed, "step", turn))
        completions = engine.generate(prompts, params)
        _advance(pool, ready, prompts, completions, cfg)
        turn += 1
    pool.release(lv.start.reply.episode for lv in live)
    return [lv.traj for lv in live]


def _open(s: EpisodeStart) -> _Live:
    info = s.reply.info
    traj = Trajectory(task=s.task, strategy=s.strategy, task_uid=s.task.uid, strategy_uid=s.strategy_uid,
                      uid=s.uid or f"{s.task.uid}#{s.reply.episode}", steps=list(s.prefix))
    view = s.view or StepView(family=family_of(s.task), task=info.get("task_description", ""),
                              observation=s.reply.observation, step=0, strategy=s.strategy_text,
                              admissible=info.get("admissible_actions"))
    return _Live(start=s, traj=traj, view=view, env_obs=s.reply.observation)


def _advance(pool: EnvPool, ready: list[_Live], prompts: list[list[int]], completions: list[Completion],
             cfg: RunnerConfig) -> None:
    """Parse every response, step the valid actions as one batch, record the steps."""
    to_env: list[tuple[_Live, Step]] = []
    for lv, ids, comp in zip(ready, prompts, completions, strict=True):
        step = _parse_into_step(lv, ids, comp, step_prime(cfg.prompt))
        if step.valid:
            to_env.append((lv, step))
        else:
            step.penalty += cfg.invalid_penalty
            step.observation = INVALID_OBSERVATION.format(why=step.info.pop("why"))
            _record(lv, step, cfg, env_reply=None)
    replies = pool.step([(lv.start.reply.episode, step.action) for lv, step in to_env]) if to_env else []
    for (lv, step), reply in zip(to_env, replies, strict=True):
        if reply.error:
            step.observation, step.done = "", True
            lv.traj.steps.append(step)
            _end(lv, reply.error_kind or "env_error", {}, reply.error)
            continue
        step.observation, step.reward, step.done = reply.observation, reply.reward, reply.done
        step.info = {"score": reply.info.get("score", 0.0), "won": bool(reply.info.get("won", False))}
        if not reply.info.get("action_valid", True):
            step.valid = False
            step.penalty += cfg.invalid_penalty
        _record(lv, step, cfg, env_reply=reply)


def _parse_into_step(lv: _Live, prompt_ids: list[int], comp: Completion, prime: str) -> Step:
    parsed = parse_step(prime + comp.text)
    step = Step(prompt_ids=prompt_ids, response_ids=list(comp.token_ids), logprobs=list(comp.logprobs),
                text=comp.text, finish_reason=comp.finish_reason, thought=parsed.thought, anchor=lv.env_obs)
    if not parsed.ok and lv.view.admissible:
        # no tags at all, but the reply's first line is itself an admissible action: accept it
        first = next((ln for ln in comp.text.splitlines() if ln.strip()), "")
        if match_admissible(first, lv.view.admissible) is not None:
            parsed.action, parsed.ok = " ".join(first.split()), True
    if parsed.ok and not parsed.action and parsed.answer is not None:
        parsed.action = f"answer: {parsed.answer}"  # search-QA / tool envs take the answer as an action
    if not parsed.ok or not parsed.action:
        step.valid, step.info = False, {"why": parsed.error or "no action"}
        return step
    action = match_admissible(parsed.action, lv.view.admissible)
    if action is None:
        step.action, step.valid, step.info = parsed.action, False, {"why": not_admissible(parsed.action)}
        return step
    step.action = action
    return step


def _record(lv: _Live, step: Step, cfg: RunnerConfig, env_reply: EnvReply | None) -> None:
    lv.traj.steps.append(step)
    lv.invalid_run = 0 if step.valid else lv.invalid_run + 1
    if env_reply is not None:
        lv.env_obs = env_reply.observation
        remember(lv.view, step.action, step.valid, env_reply.observation, env_reply.info.get("admissible_actions"),
                 step.prompt_ids, step.response_ids)
        if env_reply.done:
            _end(lv, "success" if env_reply.info.get("won") else "env_done", env_reply.info, None)
            return
    else:
        remember(lv.view, step.action or step.text.strip()[:80], False, lv.env_obs, None, step.prompt_ids,
                 step.response_ids)
    if len(lv.traj.steps) >= cfg.max_steps:
        _end(lv, "max_steps", env_reply.info if env_reply else {}, None)
    elif cfg.max_invalid and lv.invalid_run >= cfg.max_invalid:
        _end(lv, "parse_error", {}, None)
    elif cfg.episode_timeout and time.monotonic() - lv.t0 > cfg.episode_timeout:
        _end(lv, "timeout", {}, f"episode exceeded {cfg.episode_timeout:g}s")


def _end(lv: _Live, termination: str, info: dict, error: str | None) -> None:
    lv.ended = True
    traj = lv.traj
    traj.termination = termination  # type: ignore[assignment]
    traj.error = error
    traj.won = bool(info.get("won", False))
    traj.outcome = float(info.get("outcome", 0.0)) if info else _last_outcome(traj)


def _last_outcome(traj: Trajectory) -> float:
    """Outcome when the ending reply carried no info (budget, parse or env errors): the task was not
    completed, so the reward is 0 for won-based envs and the last known score for score-based ones."""
    from ..envs.registry import get_spec

    if get_spec(traj.task.env).outcome == "score" and traj.steps:
        return max(0.0, float(traj.steps[-1].info.get("score", 0.0)))
    return 0.0
