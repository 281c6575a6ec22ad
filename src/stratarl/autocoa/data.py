"""Training data of the three SFT stages, built from gold search trajectories (the env's expert actions).

A gold episode replays `expert_actions` (one search per entity on the question's chain, then the
answer) in the real env and writes it in the protocol: a templated thought before each action, the
env's real result as each observation. From it:
- stage 1 (`when_to_act_pairs`): at every model turn k, the same context c (prompt + gold segments
  before k); chosen = the gold turn (search while the answer is not yet known, answer once it is),
  rejected = the opposite move (answer too early with the entity about to be searched; search again
  for the last entity instead of answering);
- stages 2 and 3 (`sft_row`): the whole episode as one row, observation tokens masked (stage 2) or
  trained (stage 3).
These texts are data, not samples, so tokenizing them is the one tokenization they get; each segment is
tokenized alone so that the mask boundaries are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..envs.registry import make_env, make_tasks
from ..envs.search import load_questions
from ..types import Sample, Task
from .protocol import SegmentKind, answer_turn, encode, observation, prompt_ids, search_turn


@dataclass
class GoldEpisode:
    """One expert episode in protocol text."""

    task: Task
    """Its task."""
    question: str
    """The question (the user turn)."""
    segments: list[tuple[str, SegmentKind]]
    """Reply segments in order: model turns and observations."""
    queries: list[str]
    """The searches made, in order."""
    answer: str
    """The gold answer given."""
    won: bool
    """The env accepted the answer."""


@dataclass
class Pair:
    """One contrastive when-to-act pair (stage 1)."""

    context_ids: list[int]
    """Prompt + gold reply segments before this turn."""
    chosen_ids: list[int]
    """The right move."""
    rejected_ids: list[int]
    """The opposite move."""
    chosen_acts: bool
    """The chosen move is a search (else an answer)."""


def gold_thought(k: int, query: str | None) -> str:
    """The templated thought before turn k (a search for `query`, or the answer when None)."""
    if query is None:
        return "The last result holds the answer."
    # short and free of names: a small model then only has to copy the name once, into the action
    return "I search for the name in the question." if k == 0 else "I search for the name in the result."


def gold_episodes(env_id: str, split: str, n: int, start: int = 0) -> list[GoldEpisode]:
    """Replay the expert actions of tasks `start..start+n` of `split` in the real env."""
    env = make_env(env_id)
    out = []
    for task in make_tasks(env_id, split, n=n, start=start):
        env.reset(task)
        corpus = task.env.split(":", 1)[1]
        q = load_questions(corpus, split)[task.seed]
        segments: list[tuple[str, SegmentKind]] = []
        queries: list[str] = []
        won = False
        for k, action in enumerate(env.expert_actions(task)):
            kind, arg = (x.strip() for x in action.split(":", 1))
            if kind == "answer":
                segments.append((answer_turn(gold_thought(k, None), arg), "model"))
            else:
                segments.append((search_turn(gold_thought(k, arg), arg), "model"))
                queries.append(arg)
            obs, _, done, info = env.step(action)
            if kind == "search":
                segments.append((observation(obs), "observation"))
            won = bool(info.get("won", False))
            if done:
                break
        out.append(GoldEpisode(task, q.question, segments, queries, q.answers[0], won))
    env.close()
    return out


def sft_row(tokenizer: Any, ep: GoldEpisode, mask_observations: bool) -> Sample:
    """Stage 2 (`mask_observations=True`: loss on model tokens only) or stage 3 (observations too)."""
    ids = prompt_ids(tokenizer, ep.question)
    mask = [0] * len(ids)
    for text, kind in ep.segments:
        seg = encode(tokenizer, text)
        ids += seg
        mask += [int(kind == "model" or not mask_observations)] * len(seg)
    return Sample(input_ids=ids, loss_mask=mask, uid=f"gold:{ep.task.uid}", kind="sft")


def when_to_act_pairs(tokenizer: Any, ep: GoldEpisode) -> list[Pair]:
    """One pair per model turn of the gold episode (module docstring)."""
    context = prompt_ids(tokenizer, ep.question)
    pairs, k = [], 0
    for text, kind in ep.segments:
        seg = encode(tokenizer, text)
        if kind == "model":
            if k < len(ep.queries):  # the answer is not known yet: searching is right
                rejected = answer_turn("I know the answer.", ep.queries[k])
            else:  # the last observation holds the answer: answering is right
                rejected = search_turn("I need more information.", ep.queries[-1] if ep.queries else ep.answer)
            pairs.append(Pair(list(context), seg, encode(tokenizer, rejected), k < len(ep.queries)))
            k += 1
        context += seg
    return pairs
