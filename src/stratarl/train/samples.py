"""From rolled-out Groups and their Advantages to training rows (`Sample`).

One row per step (`kind="action"`) and one per strategy turn (`kind="strategy"`): the exact prompt
ids the engine was fed followed by the exact response ids it sampled, with the loss on the response
only. Nothing is re-tokenized. The judge's own tokens are never turned into rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..types import Advantages, Group, Sample, Trajectory, Turn


@dataclass
class SampleConfig:
    """Which rows are trained."""

    train_strategy: bool = True
    """Train the strategy turns (with the strategy advantage)."""
    skip_zero_advantage: bool = False
    """Drop rows whose advantage is exactly 0 (they only add KL/entropy terms)."""
    max_response_tokens: int = 0
    """Cut responses longer than this (0 = keep all); guards against runaway generations."""


def _row(turn: Turn, advantage: float, uid: str, step_index: int, kind: str, cfg: SampleConfig) -> Sample | None:
    response = turn.response_ids
    logprobs = turn.logprobs
    if cfg.max_response_tokens and len(response) > cfg.max_response_tokens:
        response, logprobs = response[: cfg.max_response_tokens], logprobs[: cfg.max_response_tokens]
    if not response or not turn.prompt_ids:
        return None  # nothing the model generated (gold/reference steps) or an unrecorded prompt
    n_prompt = len(turn.prompt_ids)
    return Sample(
        input_ids=list(turn.prompt_ids) + list(response),
        loss_mask=[0] * n_prompt + [1] * len(response),
        advantage=float(advantage),
        engine_logprobs=[0.0] * n_prompt + list(logprobs),
        uid=uid, step_index=step_index, kind=kind,  # type: ignore[arg-type]
    )


def build_samples(groups: list[Group], adv: Advantages, cfg: SampleConfig) -> list[Sample]:
    """Rows in a fixed order (group, rollout, step; strategies after their group's steps)."""
    rows: list[Sample] = []
    for g, group in enumerate(groups):
        flat = group.flat
        for k, traj in enumerate(flat):
            rows.extend(_trajectory_rows(traj, adv.steps[g][k], adv, g, k, cfg))
        if cfg.train_strategy and group.strategies and adv.strategies:
            for i, turn in enumerate(group.strategies):
                uid = group.trajectories[i][0].strategy_uid if group.trajectories[i] else f"{group.task.uid}/s{i}"
                row = _row(turn, adv.strategies[g][i], uid, -1, "strategy", cfg)
                if row is not None and not (cfg.skip_zero_advantage and row.advantage == 0.0):
                    rows.append(row)
    return rows


def _trajectory_rows(traj: Trajectory, step_adv: list[float], adv: Advantages, g: int, k: int,
                     cfg: SampleConfig) -> list[Sample]:
    rows = []
    for t, step in enumerate(traj.steps):
        row = _row(step, step_adv[t], traj.uid, t, "action", cfg)
        if row is None or (cfg.skip_zero_advantage and row.advantage == 0.0):
            continue
        if adv.token_advantages is not None:
            n_prompt = len(step.prompt_ids)
            row.token_advantages = [0.0] * n_prompt + list(adv.token_advantages[g][k][t])[: len(row.input_ids) - n_prompt]
        if adv.token_returns is not None:
            row.returns = list(adv.token_returns[g][k][t])
        elif adv.returns is not None:
            row.returns = adv.returns[g][k][t]
        rows.append(row)
    return rows


def _per_token(s: Sample, name: str) -> list[float]:
    vals = getattr(s, name)
    return list(vals) if vals is not None else [0.0] * s.num_tokens


def _can_extend(cur: Sample, nxt: Sample) -> bool:
    n = cur.num_tokens
    return (nxt.uid == cur.uid and nxt.kind == cur.kind == "action" and nxt.weight == cur.weight
            and nxt.num_tokens > n and nxt.input_ids[:n] == cur.input_ids)


def _token_advantages(s: Sample) -> list[float]:
    return list(s.token_advantages) if s.token_advantages is not None else [s.advantage * m for m in s.loss_mask]


def _merge(cur: Sample, nxt: Sample) -> Sample:
    """One row holding both: `cur`'s trained tokens are a prefix of `nxt`'s prompt."""
    n = cur.num_tokens
    tail = slice(n, nxt.num_tokens)
    adv_cur, adv_nxt = _token_advantages(cur), _token_advantages(nxt)
    merged = Sample(input_ids=list(nxt.input_ids), loss_mask=cur.loss_mask + nxt.loss_mask[tail],
                    token_advantages=adv_cur + adv_nxt[tail], weight=cur.weight, uid=nxt.uid,
                    step_index=nxt.step_index, kind="action")
    for name in ("old_logprobs", "ref_logprobs", "engine_logprobs"):
        if getattr(cur, name) is not None and getattr(nxt, name) is not None:
            setattr(merged, name, _per_token(cur, name) + _per_token(nxt, name)[tail])
    return merged


def pack_samples(rows: list[Sample]) -> list[Sample]:
    """Merge consecutive step rows of one trajectory when each step's prompt extends the previous
    step's prompt + response (chat mode): one forward pass then trains every step of the trajectory,
    each response token keeping its own step's advantage. Exactly equivalent under `token-mean`
    aggregation (same per-token losses, same token count), so the trainer packs only then."""
    out: list[Sample] = []
    for r in rows:
        if out and _can_extend(out[-1], r):
            out[-1] = _merge(out[-1], r)
        else:
            out.append(r)
    return out


def _prompt_len(s: Sample) -> int:
    return s.loss_mask.index(1) if 1 in s.loss_mask else s.num_tokens


def _share(rows: list[Sample], prompt_len: int) -> Sample:
    """One row: the prompt without its last token once, then per row a branch that repeats that last
    token (same id, same position: the same keys and values, so its state is the prompt's last state
    and predicts the branch's first token) followed by the row's own tokens."""
    shared = prompt_len - 1
    first = rows[0]
    out = Sample(input_ids=first.input_ids[:shared], loss_mask=[0] * shared, token_advantages=[0.0] * shared,
                 weight=first.weight, uid=first.uid, step_index=first.step_index, kind=first.kind,
                 segments=[0] * shared, positions=list(range(shared)))
    names = [n for n in ("old_logprobs", "ref_logprobs", "engine_logprobs") if all(getattr(r, n) is not None for r in rows)]
    for name in names:
        setattr(out, name, _per_token(first, name)[:shared])
    for i, r in enumerate(rows, start=1):
        tail = slice(shared, r.num_tokens)
        out.input_ids += r.input_ids[tail]
        out.loss_mask += r.loss_mask[tail]
        out.token_advantages += _token_advantages(r)[tail]
        out.segments += [i] * (r.num_tokens - shared)
        out.positions += list(range(shared, r.num_tokens))
        for name in names:
            getattr(out, name).extend(_per_token(r, name)[tail])
    return out


def share_prompts(rows: list[Sample], max_fraction: float = 0.5) -> list[Sample]:
    """Rows whose prompts are identical (the n rollouts of a group at their first step; window-mode
    steps that saw the same observations) become one row holding the prompt once and each response as
    a branch that attends to the prompt and to itself only (`Sample.segments`). Exactly equivalent
    under `token-mean` aggregation, like `pack_samples`. A set of rows is shared only when that leaves at
    most `max_fraction` of its tokens: the branch mask costs SDPA its mask-free causal kernel, which
    only a large saving repays (it never does for chat-mode rows, whose long tails differ)."""
    by_prompt: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        p = _prompt_len(r)
        if r.segments is None and 2 <= p < r.num_tokens:
            by_prompt.setdefault((r.kind, r.weight, tuple(r.input_ids[:p])), []).append(i)
    merged: dict[int, Sample] = {}
    absorbed: set[int] = set()
    for (_, _, prompt), idx in by_prompt.items():
        before = sum(rows[i].num_tokens for i in idx)
        after = len(prompt) - 1 + sum(rows[i].num_tokens - len(prompt) + 1 for i in idx)
        if len(idx) >= 2 and after <= max_fraction * before:
            merged[idx[0]] = _share([rows[i] for i in idx], len(prompt))
            absorbed.update(idx)
    return [merged.get(i, r) for i, r in enumerate(rows) if i in merged or i not in absorbed]
