"""Chain-of-action episodes, many at once, against a real or a simulated environment.

Each round, every live episode's prompt + reply so far goes into one `engine.generate` call that stops
at `</action>` or `</answer>`. An answer ends the episode; a search goes to the observer, whose
observation segment is appended; anything else ends the episode as a format failure.

Observers (composition: the runner only calls `observe`):
- `RealObserver`: the `search:` env's BM25 results, wrapped in `<observation>` tags (injected ids);
- `SimulatedObserver` (AutoCoA RL stage 1): the policy itself writes the observation — the `<observation>`
  tag is injected, then the engine samples until `</observation>` (a closing tag is injected if it ran
  out of tokens). Those sampled ids are kept as they were sampled and are masked from the loss because
  of where they came from (a `Segment` of kind `observation`), not by parsing text.
`observation_token_mask` finds the same positions independently, from the ids alone, by decoding
prefixes incrementally (the tests check that both agree on real samples).

Reward (ALGORITHMS.md, Exact match + Format (AutoCoA)): the env's answer reward (`envs.search.answer_reward`)
for the final answer, and 0 when any model turn lacks `</think>` followed by an action/answer tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..engines.base import Engine, SamplingParams
from ..envs.registry import make_env
from ..envs.search import answer_reward, load_questions
from ..rollout.runner import request_seed
from ..types import Task
from .protocol import OBS_CLOSE, OBS_OPEN, TURN_STOPS, Segment, encode, observation, prompt_ids, read_turn


@dataclass
class CoARolloutConfig:
    """How chain-of-action episodes are sampled."""

    max_turns: int = 6
    """Most model turns per episode (searches + the answer); the search env allows 6 actions."""
    turn_max_tokens: int = 64
    """Most tokens of one model turn (think + action/answer)."""
    obs_max_tokens: int = 96
    """Most tokens of one simulated observation."""
    temperature: float = 1.0
    """Sampling temperature of model turns during RL (evaluation is greedy)."""
    obs_temperature: float = 1.0
    """Sampling temperature of simulated observations."""
    context: int = 2048
    """Most tokens of prompt + reply; an episode that would exceed it ends (`context`)."""


@dataclass
class CoAEpisode:
    """One episode: the prompt and the reply's segments, exactly as the engine saw them."""

    task: Task
    """The question's task."""
    golds: tuple[str, ...]
    """Gold answer and aliases."""
    prompt_ids: list[int]
    """The prompt ids."""
    segments: list[Segment] = field(default_factory=list)
    """Model and observation segments in order."""
    answer: str | None = None
    """The final answer, if one was given."""
    searches: int = 0
    """Searches made."""
    format_ok: bool = True
    """Every model turn had `</think>` followed by an action/answer tag."""
    reward: float = 0.0
    """Answer reward, 0 on a format failure."""
    won: bool = False
    """The answer was right (regardless of format)."""
    termination: str = ""
    """`answer`, `invalid` (no search or answer), `max_turns` or `context`."""

    @property
    def done(self) -> bool:
        return bool(self.termination)

    def response_ids(self) -> list[int]:
        return [t for s in self.segments for t in s.ids]

    def loss_mask(self, mask_observations: bool = True) -> list[int]:
        """Per reply token: 1 on the policy's turns; observation tokens 0 (or 1 when not masked)."""
        return [int(s.kind == "model" or not mask_observations) for s in self.segments for _ in s.ids]


class Observer(Protocol):
    """Answers each searching episode's query with an observation segment."""

    def observe(self, episodes: list[CoAEpisode], queries: list[str], seed: int) -> list[Segment]: ...


class RealObserver:
    """The real `search:` env: one env instance per task, reset on first use."""

    def __init__(self, env_id: str, tokenizer: Any):
        self.env_id, self.tokenizer, self._envs = env_id, tokenizer, {}

    def observe(self, episodes: list[CoAEpisode], queries: list[str], seed: int) -> list[Segment]:
        out = []
        for ep, query in zip(episodes, queries, strict=True):
            env = self._envs.get(id(ep))
            if env is None:
                env = self._envs[id(ep)] = make_env(self.env_id)
                env.reset(ep.task)
            obs, _, _, _ = env.step(f"search: {query}")
            text = observation(obs.split("\nNo actions left")[0])
            out.append(Segment(encode(self.tokenizer, text), "observation", text=text))
        return out


class SimulatedObserver:
    """The policy as its own environment (AutoCoA RL stage 1)."""

    def __init__(self, engine: Engine, tokenizer: Any, cfg: CoARolloutConfig):
        self.engine, self.tokenizer, self.cfg = engine, tokenizer, cfg
        self.open_ids, self.close_ids = encode(tokenizer, OBS_OPEN), encode(tokenizer, OBS_CLOSE)

    def observe(self, episodes: list[CoAEpisode], queries: list[str], seed: int) -> list[Segment]:
        prompts = [ep.prompt_ids + ep.response_ids() + self.open_ids for ep in episodes]
        params = SamplingParams(temperature=self.cfg.obs_temperature, max_tokens=self.cfg.obs_max_tokens,
                                stop=[OBS_CLOSE], seed=seed)
        out = []
        for comp in self.engine.generate(prompts, params):
            ids = self.open_ids + list(comp.token_ids)
            closed = OBS_CLOSE in comp.text
            if not closed:
                ids += self.close_ids
            text = OBS_OPEN + comp.text + ("" if closed else OBS_CLOSE)
            out.append(Segment(ids, "observation", logprobs=list(comp.logprobs), text=text))
        return out


def open_episodes(tokenizer: Any, tasks: list[Task]) -> list[CoAEpisode]:
    eps = []
    for t in tasks:
        q = load_questions(t.env.split(":", 1)[1], t.split)[t.seed]
        eps.append(CoAEpisode(task=t, golds=q.answers, prompt_ids=prompt_ids(tokenizer, q.question)))
    return eps


def run_episodes(engine: Engine, tokenizer: Any, tasks: list[Task], cfg: CoARolloutConfig, observer: Observer,
                 seed: int, temperature: float | None = None) -> list[CoAEpisode]:
    """Run one episode per task to the end (see module docstring); episodes come back in task order."""
    eps = open_episodes(tokenizer, tasks)
    temp = cfg.temperature if temperature is None else temperature
    turn = 0
    while live := [e for e in eps if not e.done]:
        ready = []
        for e in live:
            if _fits(e, cfg, cfg.turn_max_tokens):
                ready.append(e)
            else:
                _finish(e, None, "context")
        if not ready:
            break
        params = SamplingParams(temperature=temp, max_tokens=cfg.turn_max_tokens, stop=list(TURN_STOPS),
                                seed=request_seed(seed, "coa-turn", turn))
        searching: list[tuple[CoAEpisode, str]] = []
        for e, comp in zip(ready, engine.generate([e.prompt_ids + e.response_ids() for e in ready], params), strict=True):
            e.segments.append(Segment(list(comp.token_ids), "model", list(comp.logprobs), comp.text))
            t = read_turn(comp.text)
            e.format_ok = e.format_ok and t.format_ok
            if t.kind == "answer":
                _finish(e, t.arg, "answer")
            elif t.kind == "invalid":
                _finish(e, None, "invalid")
            elif len([s for s in e.segments if s.kind == "model"]) >= cfg.max_turns:
                _finish(e, None, "max_turns")
            elif not _fits(e, cfg, cfg.obs_max_tokens + 8):
                _finish(e, None, "context")
            else:
                searching.append((e, t.arg))
        if searching:
            segs = observer.observe([e for e, _ in searching], [q for _, q in searching],
                                    request_seed(seed, "coa-obs", turn))
            for (e, _), seg in zip(searching, segs, strict=True):
                e.segments.append(seg)
                e.searches += 1
        turn += 1
    return eps


def _fits(e: CoAEpisode, cfg: CoARolloutConfig, more: int) -> bool:
    return len(e.prompt_ids) + sum(len(s.ids) for s in e.segments) + more <= cfg.context


def _finish(e: CoAEpisode, answer: str | None, why: str) -> None:
    e.answer, e.termination = answer, why
    e.won = answer is not None and answer_reward(answer, e.golds) == 1.0
    e.reward = float(e.won and e.format_ok)


def observation_token_mask(tokenizer: Any, ids: list[int]) -> list[int]:
    """1 on every token that overlaps an `<observation>…</observation>` span (tags included) of the
    decoded ids, else 0. Token boundaries come from decoding each prefix `ids[:i]`, so a token that
    straddles a tag counts as observation; nothing is re-tokenized."""
    bounds = [len(tokenizer.decode(ids[:i], skip_special_tokens=False)) for i in range(len(ids) + 1)]
    text = tokenizer.decode(ids, skip_special_tokens=False)
    mask, pos = [0] * len(ids), 0
    while (lo := text.find(OBS_OPEN, pos)) >= 0:
        end = text.find(OBS_CLOSE, lo + len(OBS_OPEN))
        hi = len(text) if end < 0 else end + len(OBS_CLOSE)
        for i in range(len(ids)):
            if bounds[i] < hi and bounds[i + 1] > lo:
                mask[i] = 1
        pos = hi
    return mask
