"""STeCa's training data (seed 003; ALGORITHMS.md, STeCa calibration 5 and "STeCa weighted objective").

Three datasets, each sample a trajectory whose steps from `first_step` on are trained (the earlier ones
are context, inside the prompts) with one weight w from its nDTW to what it is contrasted with — the
released code's (chosen, rejected) pairs:

| set | sample (trained steps) | nDTW between | weight | kept when |
|---|---|---|---|---|
| D_c | calibrated trajectory, from the reflection step t+1 | a^e_t, a^e_{t+1}.. and the agent's actions after â_t | 1 + 0.01·nDTW | every first deviation |
| D_s | expert trajectory, from step t | a^e_t.. and the agent's greedy actions â_t.. | 1 + 0.01·nDTW | r_step(s_t, a^e_t) − r_step(s_t, â_t) > 0.01, t ≥ 2 |
| D_e | the agent's greedy rollout from the start, whole | its actions and the expert's | 1 − 0.01·nDTW | it succeeded and nDTW < 0.013 |

The objective is `algos.losses.steca_sft_loss` (β = 0, the released code): the mean over samples of
w·(−log π(trained steps)). `steca_rows` cuts the samples into step rows with their weights and a uid per
sample; `count_samples` gives the S of a mini-batch. The 0.01 scale and the 0.013 threshold are
`PreferenceConfig.steca_weight_scale` / `steca_explored_max_ndtw`; the 0.01 margin of D_s is
`DeviationConfig.expert_margin`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..algos.losses import PreferenceConfig, keep_explored, steca_weight
from ..errors import UserError
from ..rollout.diversity import Embedder
from ..types import Sample, Trajectory
from .deviation import DeviationConfig, expert_beats_agent
from .ndtw import ndtw
from .step_value import ExpertScan
from .trajectories import CalibratedTrajectory

SampleSet = Literal["calibrated", "expert", "explored"]


@dataclass
class WeightedTrajectory:
    """One STeCa training sample."""

    kind: SampleSet
    """`calibrated` (D_c), `expert` (D_s, expert sub-trajectory) or `explored` (D_e)."""
    trajectory: Trajectory
    """The trajectory, with the agent's prompt ids."""
    first_step: int
    """Index of the first trained step; the steps before it are context only."""
    ndtw: float
    """nDTW between this sample's actions and those it is contrasted with (module table)."""
    weight: float
    """w = 1 + scale·nDTW (D_c, D_s) or 1 − scale·nDTW (D_e)."""


def _sample(kind: SampleSet, traj: Trajectory, first: int, ours: list[str], theirs: list[str], embedder: Embedder,
            pref: PreferenceConfig) -> WeightedTrajectory:
    d = ndtw(ours, theirs, embedder)
    return WeightedTrajectory(kind=kind, trajectory=traj, first_step=first, ndtw=d,
                              weight=steca_weight(kind, d, pref.steca_weight_scale))


def calibrated_set(cals: list[CalibratedTrajectory], embedder: Embedder, pref: PreferenceConfig) -> list[WeightedTrajectory]:
    """D_c: every calibrated trajectory, trained from its reflection step; w = 1 + scale·nDTW."""
    return [_sample("calibrated", c.trajectory, c.first_trained_step,
                    [s.action for s in c.trajectory.steps[c.first_trained_step:]], c.agent_continuation, embedder, pref)
            for c in cals if c.agent_continuation and len(c.trajectory.steps) > c.first_trained_step]


def expert_set(scans: list[ExpertScan], dcfg: DeviationConfig, embedder: Embedder,
               pref: PreferenceConfig) -> list[WeightedTrajectory]:
    """D_s: the expert trajectory from step t wherever the expert beats the agent there by more than the
    margin in MC value; w = 1 + scale·nDTW(expert from t, agent from t)."""
    out = []
    for scan in scans:
        for c in scan.comparisons:
            run = scan.explored[c.t]
            if not expert_beats_agent(c, dcfg) or run is None or len(run.steps) <= c.t:
                continue
            if not scan.expert.steps[c.t].prompt_ids:
                raise UserError(f"expert trajectory {scan.expert.uid or scan.expert.task.uid} has no prompt ids: "
                                "build expert trajectories with stratarl.rollout.expert.expert_episodes")
            out.append(_sample("expert", scan.expert, c.t, scan.actions[c.t:], [s.action for s in run.steps[c.t:]],
                               embedder, pref))
    return out


def explored_set(scans: list[ExpertScan], embedder: Embedder, pref: PreferenceConfig) -> list[WeightedTrajectory]:
    """D_e: the agent's greedy rollouts from the start that succeeded, kept only when nDTW to the expert is
    below the threshold; w = 1 − scale·nDTW."""
    out = []
    for scan in scans:
        run = scan.explored[0] if scan.explored else None
        if run is None or not run.won or not run.steps:
            continue
        sample = _sample("explored", run, 0, [s.action for s in run.steps], scan.actions, embedder, pref)
        if keep_explored(sample.ndtw, pref.steca_explored_max_ndtw):
            out.append(sample)
    return out


def steca_datasets(scans: list[ExpertScan], cals: list[CalibratedTrajectory], dcfg: DeviationConfig,
                   embedder: Embedder, pref: PreferenceConfig) -> list[WeightedTrajectory]:
    """D_c + D_s + D_e, in that order."""
    return calibrated_set(cals, embedder, pref) + expert_set(scans, dcfg, embedder, pref) + explored_set(scans, embedder, pref)


def steca_rows(samples: list[WeightedTrajectory]) -> list[Sample]:
    """One row per trained step (prompt ids + response ids, loss on the response), carrying the sample's
    weight; `uid` names the sample (`kind:index:trajectory uid`), so rows of one sample share it."""
    rows = []
    for i, ws in enumerate(samples):
        uid = f"{ws.kind}:{i}:{ws.trajectory.uid}"
        for t, step in enumerate(ws.trajectory.steps[ws.first_step:], start=ws.first_step):
            if step.prompt_ids and step.response_ids:
                n = len(step.prompt_ids)
                rows.append(Sample(input_ids=list(step.prompt_ids) + list(step.response_ids),
                                   loss_mask=[0] * n + [1] * len(step.response_ids), weight=ws.weight, uid=uid,
                                   step_index=t, kind="action"))
    return rows


def count_samples(rows: list[Sample]) -> int:
    """S of a mini-batch: the number of distinct samples its rows come from (`steca_sft_loss`)."""
    return len({r.uid for r in rows})
