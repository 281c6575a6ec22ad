"""Advantage estimators: pure functions over a list of `Group`s, chosen by name from `ESTIMATORS`.

Every estimator returns an `Advantages` record: `steps[g][k][t]` for step t of the k-th rollout of
group g (`Group.flat` order) and, for StraTA, `strategies[g][i]`. Definitions follow ALGORITHMS.md;
the conventions below are options of `AdvantageConfig`, never silent choices.

Conventions
- Trajectory return (outcome-based estimators): R = outcome − Σ_t penalty_t when
  `penalties_in_return` (invalid-action and format penalties of the runner), else the outcome.
- Per-step reward (GiGPO step returns, step-GAE, token GAE): r_t = base_t − penalty_t with
  base_t = the outcome on the last step and 0 before (`step_reward="outcome"`), or the env's own
  step reward (`"env"`).
- The self-judgment flag (`Step.judged`) costs κ only inside the StraTA estimator.
- Normalisation: (x − mean) / (std + ε), std unbiased (Bessel), ε = 1e-6; fewer than two values give 0,
  and equal values give exactly 0 (the numerator is 0), so nothing is ever NaN or infinite.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..errors import lookup
from ..types import Advantages, Group, Trajectory

TRUNCATED = ("max_steps", "context_overflow", "timeout")


@dataclass
class GRPOOptions:
    """GRPO / Dr.GRPO."""

    norm_by_std: bool = True
    """Divide by the group std (GRPO); False gives Dr.GRPO (A = R − mean)."""


@dataclass
class GiGPOOptions:
    """GiGPO: episode-level plus anchor-state step-level advantages."""

    omega: float = 1.0
    """ω, weight of the step-level advantage."""
    gamma: float = 0.95
    """γ of the discounted step returns."""
    norm: Literal["mean_std_norm", "mean_norm"] = "mean_std_norm"
    """Divide by the std (`mean_std_norm`) or not (`mean_norm`), at both levels."""
    anchors: Literal["exact", "similarity"] = "exact"
    """Anchor groups: identical anchor observations, or greedy clustering by similarity."""
    similarity: float = 0.95
    """Threshold of the `similarity` anchors (token-set Jaccard similarity of the observations)."""
    episode_stats: Literal["trajectories", "step_rows"] = "trajectories"
    """Episode-level statistics over trajectories, or over step rows (verl-agent's variant)."""


@dataclass
class StraTAOptions:
    """StraTA's hierarchical advantages (seed 000)."""

    delta: float = 0.5
    """δ: the strategy reward averages the top ⌈δ·M⌉ rollout returns."""
    strategy_reward: Literal["top_delta", "mix"] = "top_delta"
    """`top_delta` (the paper) or `mix`: δ·mean + (1−δ)·max (an unofficial variant)."""
    kappa: float = 0.1
    """κ, the penalty of a step flagged by the self-judge."""
    judge_penalty_into: Literal["reward", "advantage"] = "reward"
    """Add −κ to the step's reward before normalisation, or to the normalised advantage (unofficial)."""
    stats_over: Literal["steps", "trajectories"] = "steps"
    """`reward` mode: normalise over all step rows of the strategy's rollouts, or with the mean/std of
    the M trajectory returns (exactly GRPO when κ = 0, but −κ/ε when those returns are all equal)."""


@dataclass
class GAEOptions:
    """Step-GAE (StepPO) and token-level GAE (classic PPO)."""

    gamma: float = 0.99
    """γ."""
    lam: float = 1.0
    """λ."""
    whiten: bool = True
    """Whiten advantages over the batch (steps for step-GAE, tokens for token GAE)."""
    bootstrap_truncated: bool = True
    """A truncated episode (max_steps, context overflow, timeout) bootstraps with its last value."""


@dataclass
class MTGRPOOptions:
    """MT-GRPO: outcome plus turn-level group-normalised advantages."""

    lam: float = 1.0
    """λ, weight of the turn-level advantage."""


@dataclass
class AdvantageConfig:
    """Options of every estimator."""

    penalties_in_return: bool = True
    """Subtract the steps' penalties (invalid action, format) from the trajectory return."""
    step_reward: Literal["outcome", "env"] = "outcome"
    """Per-step reward base: the outcome on the last step, or the env's step rewards."""
    eps: float = 1e-6
    """ε in (x − mean) / (std + ε)."""
    grpo: GRPOOptions = field(default_factory=GRPOOptions)
    """GRPO / Dr.GRPO."""
    gigpo: GiGPOOptions = field(default_factory=GiGPOOptions)
    """GiGPO."""
    strata: StraTAOptions = field(default_factory=StraTAOptions)
    """StraTA."""
    gae: GAEOptions = field(default_factory=GAEOptions)
    """Step-GAE and token GAE."""
    mt_grpo: MTGRPOOptions = field(default_factory=MTGRPOOptions)
    """MT-GRPO."""


# -- small pieces ----------------------------------------------------------------------------------


def normalize(xs: Sequence[float], eps: float, by_std: bool = True) -> list[float]:
    """(x − mean) / (std + ε) with the unbiased std; `by_std=False` only centres."""
    n = len(xs)
    if n < 2:
        return [0.0] * n
    mean = sum(xs) / n
    if not by_std:
        return [x - mean for x in xs]
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return [(x - mean) / (std + eps) for x in xs]


def trajectory_return(t: Trajectory, cfg: AdvantageConfig) -> float:
    return t.outcome - (sum(s.penalty for s in t.steps) if cfg.penalties_in_return else 0.0)


def step_rewards(t: Trajectory, cfg: AdvantageConfig) -> list[float]:
    """r_t = base_t − penalty_t (see the module docstring)."""
    n = len(t.steps)
    if cfg.step_reward == "env":
        base = [s.reward for s in t.steps]
    else:
        base = [t.outcome if i == n - 1 else 0.0 for i in range(n)]
    return [b - s.penalty for b, s in zip(base, t.steps, strict=True)]


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """R_t = Σ_k γ^k r_{t+k}."""
    out, acc = [0.0] * len(rewards), 0.0
    for i in range(len(rewards) - 1, -1, -1):
        acc = rewards[i] + gamma * acc
        out[i] = acc
    return out


def _broadcast(groups: list[Group], per_traj: list[list[float]]) -> list[list[list[float]]]:
    return [[[a] * len(t.steps) for t, a in zip(g.flat, adv, strict=True)] for g, adv in zip(groups, per_traj, strict=True)]


# -- outcome-level estimators ----------------------------------------------------------------------


def grpo(groups: list[Group], cfg: AdvantageConfig, values: object = None) -> Advantages:
    """A_k = (R_k − mean_G R) / (std_G R + ε), every step of trajectory k gets A_k."""
    per = [normalize([trajectory_return(t, cfg) for t in g.flat], cfg.eps, cfg.grpo.norm_by_std) for g in groups]
    return Advantages(steps=_broadcast(groups, per))


def drgrpo(groups: list[Group], cfg: AdvantageConfig, values: object = None) -> Advantages:
    """Dr.GRPO: A_k = R_k − mean_G R."""
    per = [normalize([trajectory_return(t, cfg) for t in g.flat], cfg.eps, by_std=False) for g in groups]
    return Advantages(steps=_broadcast(groups, per))


def rloo(groups: list[Group], cfg: AdvantageConfig, values: object = None) -> Advantages:
    """A_k = R_k − (Σ_{j≠k} R_j) / (G − 1); a group of one gets 0."""
    per = []
    for g in groups:
        r = [trajectory_return(t, cfg) for t in g.flat]
        n, total = len(r), sum(r)
        per.append([x - (total - x) / (n - 1) if n > 1 else 0.0 for x in r])
    return Advantages(steps=_broadcast(groups, per))


def reinforce_pp(groups: list[Group], cfg: AdvantageConfig, values: object = None) -> Advantages:
    """REINFORCE++ with a group baseline: A_k = R_k − mean_G R, then normalised over the whole batch
    (all trajectories of all groups)."""
    centred = [normalize([trajectory_return(t, cfg) for t in g.flat], cfg.eps, by_std=False) for g in groups]
    flat = normalize([a for c in centred for a in c], cfg.eps)
    per, pos = [], 0
    for c in centred:
        per.append(flat[pos:pos + len(c)])
        pos += len(c)
    return Advantages(steps=_broadcast(groups, per))


# -- GiGPO -----------------------------------------------------------------------------------------

_WORDS = re.compile(r"\w+")


def jaccard(a: str, b: str) -> float:
    sa, sb = set(_WORDS.findall(a.lower())), set(_WORDS.findall(b.lower()))
    return 1.0 if not sa and not sb else len(sa & sb) / len(sa | sb)


def anchor_groups(anchors: Sequence[str], mode: str, threshold: float) -> list[int]:
    """A cluster id per step. `exact`: identical text. `similarity`: greedy — each anchor joins the
    first cluster whose first member is at least `threshold` Jaccard-similar, else starts one."""
    ids: list[int] = []
    heads: list[str] = []
    exact: dict[str, int] = {}
    for a in anchors:
        if mode == "exact":
            ids.append(exact.setdefault(a, len(exact)))
            continue
        for c, head in enumerate(heads):
            if jaccard(a, head) >= threshold:
                ids.append(c)
                break
        else:
            heads.append(a)
            ids.append(len(heads) - 1)
    return ids


def _episode_advantages(g: Group, cfg: AdvantageConfig) -> list[float]:
    o = cfg.gigpo
    r = [trajectory_return(t, cfg) for t in g.flat]
    by_std = o.norm == "mean_std_norm"
    if o.episode_stats == "trajectories":
        return normalize(r, cfg.eps, by_std)
    rows = [x for x, t in zip(r, g.flat, strict=True) for _ in t.steps]  # each trajectory once per step row
    if len(rows) < 2:
        return [0.0] * len(r)
    mean = sum(rows) / len(rows)
    std = math.sqrt(sum((x - mean) ** 2 for x in rows) / (len(rows) - 1)) if by_std else 0.0
    return [(x - mean) / (std + cfg.eps) if by_std else x - mean for x in r]


def gigpo(groups: list[Group], cfg: AdvantageConfig, values: object = None) -> Advantages:
    """A = A^E + ω·A^S: episode-level group advantage plus the step's discounted return normalised
    within its anchor group (steps of the task group that start from the same observation)."""
    o = cfg.gigpo
    out = []
    for g in groups:
        episode = _episode_advantages(g, cfg)
        returns = [discounted_returns(step_rewards(t, cfg), o.gamma) for t in g.flat]
        keys = anchor_groups([s.anchor for t in g.flat for s in t.steps], o.anchors, o.similarity)
        flat_r = [x for rs in returns for x in rs]
        step_adv = _normalize_within(flat_r, keys, cfg.eps, o.norm == "mean_std_norm")
        rows, pos = [], 0
        for t, a_e in zip(g.flat, episode, strict=True):
            rows.append([a_e + o.omega * step_adv[pos + i] for i in range(len(t.steps))])
            pos += len(t.steps)
        out.append(rows)
    return Advantages(steps=out)


def _normalize_within(xs: list[float], keys: list[int], eps: float, by_std: bool) -> list[float]:
    members: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    out = [0.0] * len(xs)
    for idx in members.values():
        for i, a in zip(idx, normalize([xs[i] for i in idx], eps, by_std), strict=True):
            out[i] = a
    return out


# -- StraTA ----------------------------------------------------------------------------------------


def strategy_reward(returns: Sequence[float], o: StraTAOptions) -> float:
    """Top-δ: mean of the ⌈δ·M⌉ largest returns; `mix`: δ·mean + (1−δ)·max."""
    if not returns:
        return 0.0
    if o.strategy_reward == "mix":
        return o.delta * sum(returns) / len(returns) + (1 - o.delta) * max(returns)
    k = max(1, math.ceil(o.delta * len(returns)))
    top = sorted(returns, reverse=True)[:k]
    return sum(top) / k


def _action_advantages(trajs: list[Trajectory], cfg: AdvantageConfig) -> list[list[float]]:
    o = cfg.strata
    r = [trajectory_return(t, cfg) for t in trajs]
    flags = [[o.kappa * float(s.judged) for s in t.steps] for t in trajs]
    if o.judge_penalty_into == "advantage":
        base = normalize(r, cfg.eps)
        return [[a - f for f in fl] for a, fl in zip(base, flags, strict=True)]
    x = [[ri - f for f in fl] for ri, fl in zip(r, flags, strict=True)]
    if o.stats_over == "trajectories":
        if len(r) < 2:
            return [[0.0] * len(row) for row in x]
        mean = sum(r) / len(r)
        std = math.sqrt(sum((v - mean) ** 2 for v in r) / (len(r) - 1))
        return [[(v - mean) / (std + cfg.eps) for v in row] for row in x]
    rows = normalize([v for row in x for v in row], cfg.eps)
    out, pos = [], 0
    for row in x:
        out.append(rows[pos:pos + len(row)])
        pos += len(row)
    return out


def strata(groups: list[Group], cfg: AdvantageConfig, values: object = None) -> Advantages:
    """Strategy advantage: the top-δ strategy rewards GRPO-normalised across the task's N strategies.
    Action advantage: within the M rollouts of each strategy, with the self-judgment penalty κ."""
    steps, strategies = [], []
    for g in groups:
        rewards = [strategy_reward([trajectory_return(t, cfg) for t in ts], cfg.strata) for ts in g.trajectories]
        strategies.append(normalize(rewards, cfg.eps) if g.strategies else [])
        steps.append([row for ts in g.trajectories for row in _action_advantages(ts, cfg)])
    return Advantages(steps=steps, strategies=strategies)


# -- value-based estimators ------------------------------------------------------------------------


def _gae(rewards: Sequence[float], values: Sequence[float], last_value: float, gamma: float, lam: float) -> list[float]:
    """δ_t = r_t + γV_{t+1} − V_t; A_t = δ_t + γλA_{t+1}."""
    adv, acc = [0.0] * len(rewards), 0.0
    for i in range(len(rewards) - 1, -1, -1):
        nxt = values[i + 1] if i + 1 < len(values) else last_value
        acc = rewards[i] + gamma * nxt - values[i] + gamma * lam * acc
        adv[i] = acc
    return adv


def _terminal_value(t: Trajectory, vals: Sequence[float], o: GAEOptions) -> float:
    return vals[-1] if (vals and o.bootstrap_truncated and t.termination in TRUNCATED) else 0.0


def step_gae(groups: list[Group], cfg: AdvantageConfig, values: list[list[list[float]]] | None = None) -> Advantages:
    """StepPO: GAE over steps with V_t read at each step's last prompt token; G_t = A_t + V_t are the
    critic targets; advantages whitened over all steps of the batch."""
    if values is None:
        raise ValueError("step_gae needs critic values per step")
    o = cfg.gae
    adv, ret = [], []
    for g, gv in zip(groups, values, strict=True):
        ga, gr = [], []
        for t, v in zip(g.flat, gv, strict=True):
            a = _gae(step_rewards(t, cfg), v, _terminal_value(t, v, o), o.gamma, o.lam)
            ga.append(a)
            gr.append([x + y for x, y in zip(a, v, strict=True)])
        adv.append(ga)
        ret.append(gr)
    if o.whiten:
        adv = _reshape(normalize([x for ga in adv for a in ga for x in a], cfg.eps), adv)
    return Advantages(steps=adv, returns=ret)


def gae(groups: list[Group], cfg: AdvantageConfig, values: list[list[list[list[float]]]] | None = None) -> Advantages:
    """Classic token-level GAE: the response tokens of all steps form one sequence, the step reward
    arrives on its last token; `values[g][k][t][i]` is V before response token i of step t."""
    if values is None:
        raise ValueError("token-level gae needs critic values per token")
    o = cfg.gae
    tok_adv, tok_ret = [], []
    for g, gv in zip(groups, values, strict=True):
        ga, gr = [], []
        for t, tv in zip(g.flat, gv, strict=True):
            rewards = [r if i == len(v) - 1 else 0.0 for r, v in zip(step_rewards(t, cfg), tv, strict=True) for i in range(len(v))]
            flat_v = [x for v in tv for x in v]
            a = _gae(rewards, flat_v, _terminal_value(t, flat_v, o), o.gamma, o.lam)
            ga.append(_split(a, tv))
            gr.append(_split([x + y for x, y in zip(a, flat_v, strict=True)], tv))
        tok_adv.append(ga)
        tok_ret.append(gr)
    if o.whiten:
        flat = normalize([x for ga in tok_adv for a in ga for s in a for x in s], cfg.eps)
        tok_adv = _reshape4(flat, tok_adv)
    steps = [[[sum(s) / len(s) if s else 0.0 for s in a] for a in ga] for ga in tok_adv]
    returns = [[[s[0] if s else 0.0 for s in r] for r in gr] for gr in tok_ret]
    return Advantages(steps=steps, token_advantages=tok_adv, returns=returns, token_returns=tok_ret)


def _split(flat: list[float], like: list[list[float]]) -> list[list[float]]:
    out, pos = [], 0
    for v in like:
        out.append(flat[pos:pos + len(v)])
        pos += len(v)
    return out


def _reshape(flat: list[float], like: list[list[list[float]]]) -> list[list[list[float]]]:
    out, pos = [], 0
    for g in like:
        rows = []
        for a in g:
            rows.append(flat[pos:pos + len(a)])
            pos += len(a)
        out.append(rows)
    return out


def _reshape4(flat: list[float], like: list[list[list[list[float]]]]) -> list[list[list[list[float]]]]:
    out, pos = [], 0
    for g in like:
        gg = []
        for a in g:
            aa = []
            for s in a:
                aa.append(flat[pos:pos + len(s)])
                pos += len(s)
            gg.append(aa)
        out.append(gg)
    return out


# -- MT-GRPO ---------------------------------------------------------------------------------------


def mt_grpo(groups: list[Group], cfg: AdvantageConfig, values: object = None) -> Advantages:
    """A_kt = A^O_k + λ·A^T_kt: A^O the group-normalised outcome, A^T the env's turn-t reward
    (`Step.reward`) normalised across the rollouts that reached turn t (0 when they all agree)."""
    out = []
    for g in groups:
        a_o = normalize([trajectory_return(t, cfg) for t in g.flat], cfg.eps)
        depth = max((len(t.steps) for t in g.flat), default=0)
        a_t = [[0.0] * len(t.steps) for t in g.flat]
        for turn in range(depth):
            idx = [k for k, t in enumerate(g.flat) if len(t.steps) > turn]
            for k, a in zip(idx, normalize([g.flat[k].steps[turn].reward for k in idx], cfg.eps), strict=True):
                a_t[k][turn] = a
        out.append([[ao + cfg.mt_grpo.lam * x for x in row] for ao, row in zip(a_o, a_t, strict=True)])
    return Advantages(steps=out)


Estimator = Callable[..., Advantages]

ESTIMATORS: dict[str, Estimator] = {
    "grpo": grpo, "drgrpo": drgrpo, "rloo": rloo, "reinforce_pp": reinforce_pp, "gigpo": gigpo,
    "strata": strata, "step_gae": step_gae, "gae": gae, "mt_grpo": mt_grpo,
}
NEEDS_VALUES = {"step_gae": "step", "gae": "token"}


def compute_advantages(name: str, groups: list[Group], cfg: AdvantageConfig, values: object = None) -> Advantages:
    """Look the estimator up by name (unknown names get the closest valid ones) and run it."""
    return lookup("advantage estimator", name, ESTIMATORS)(groups, cfg, values)


def assign(groups: list[Group], adv: Advantages) -> None:
    """Write advantages onto the records (for logs and the viewer); estimators themselves are pure."""
    for g, group in enumerate(groups):
        for k, traj in enumerate(group.flat):
            for t, step in enumerate(traj.steps):
                step.advantage = adv.steps[g][k][t]
        if adv.strategies and adv.strategies[g]:
            for i, ts in enumerate(group.trajectories):
                for traj in ts:
                    traj.strategy_advantage = adv.strategies[g][i]
