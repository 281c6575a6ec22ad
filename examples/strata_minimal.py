"""StraTA (seed 000) in one file: strategy phase, N×M hierarchical rollouts, critical self-judgment, top-δ
strategy reward, two-level advantages and the PPO-clip update (ALGORITHMS.md, "StraTA hierarchical").

Per task: N plans z_i, M episodes per plan from the same start state, the policy's verdict on each
trajectory (−κ per listed step), advantages at both levels, then PPO-clip on the exact token ids the engine
sampled, for the strategy turns and the steps alike; the engine then gets the new weights.

Run:  .venv/bin/python examples/strata_minimal.py --iterations 2 --tasks 2 --n-strategies 2 --n-rollouts 4
The random-init tiny model almost never writes a valid action, so its advantages are all 0; after
`make quickstart`, `--model runs/quickstart/checkpoints/sft` starts from its warmed-up, varied policy.

Departures from the paper:
  - the ~2M-parameter random-init `tiny` model on CPU, no warm-up SFT (paper: Qwen2.5-1.5B/3B/7B-Instruct,
    8×H100), on a one-room TextWorldExpress CookingWorld (paper: ALFWorld, WebShop, SciWorld);
  - N×M = 2×4 (paper 4×8), a few iterations (paper 150), ≤ 8 steps, ≤ 16-token steps, 2-step history;
  - no diverse strategy rollout: the first N samples (paper: farthest-point sampling over candidates);
  - no KL term (β = 0); no importance correction: π_old is recomputed by the trainer (the fp32 engine agrees
    to ~1e-5: "engine/trainer"); one PPO mini-batch per epoch, 2 epochs, token-mean, AdamW, no weight decay;
  - R_j = outcome − 0.1 per invalid step; the judge's −κ enters before normalisation, which runs over the
    strategy's step rows (the package's defaults `judge_penalty_into=reward`, `stats_over=steps`);
  - none else in the estimator: equal values normalise to exactly 0, here as in the package.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from itertools import product

import torch

from stratarl.agent.parse import match_admissible, parse_judgment, parse_step, parse_strategy
from stratarl.agent.prompts import (
    HistoryItem,
    PromptConfig,
    StepView,
    judge_messages,
    render,
    step_messages,
    strategy_messages,
)
from stratarl.algos.losses import aggregate, ppo_clip_loss
from stratarl.engines import EngineConfig, HFEngineConfig, SamplingParams, make_engine
from stratarl.envs import Env, make_env, make_tasks
from stratarl.models import load_model, load_tokenizer, resolve_model
from stratarl.types import Advantages, Group, Sample, Step, Task, Trajectory, Turn

ENV_ID = "twx:cookingworld?numLocations=1&numIngredients=1&numDistractorItems=0"
PROMPT = PromptConfig(history=2)
DELTA, KAPPA = 0.5, 0.1  # δ: R(z_i) averages the top ⌈δ·M⌉ returns; κ: penalty of a judged step
EPS, INVALID_PENALTY = 1e-6, 0.1  # ε in (x − mean) / (std + ε); penalty of an invalid action
CLIP, DUAL_CLIP = 0.2, 3.0  # PPO ε_low = ε_high, and the dual clip c for A < 0
STRATEGY_TOKENS, STEP_TOKENS, JUDGE_TOKENS = 32, 16, 24  # sampled at temperature 1; the judge is greedy


@dataclass
class Live:
    """One running episode."""

    env: Env
    """Its own environment instance."""
    traj: Trajectory
    """The record being filled."""
    view: StepView
    """What the next step prompt shows."""


@dataclass
class IterationStats:
    """What one iteration printed."""

    reward: float
    """Mean trajectory return R (outcome minus invalid-action penalties)."""
    success: float
    """Fraction of rollouts that won."""
    loss: float
    """PPO-clip loss, mean over the epochs."""
    nonzero_advantages: int
    """Rows whose advantage is not 0 (they carry a gradient)."""
    mismatch: float
    """Largest |engine − trainer| logprob of a sampled token: ~0 means training saw the sampled ids."""


# -- 1. strategy phase -----------------------------------------------------------------------------


def sample_strategies(engine, tok, firsts: list[tuple[str, dict]], n: int, seed: int) -> list[list[Turn]]:
    """N strategies per task, sampled from one prompt: task description + first observation."""
    prompts = [render(tok, strategy_messages("twx", info["task_description"], obs, PROMPT))
               for obs, info in firsts]
    params = SamplingParams(max_tokens=STRATEGY_TOKENS, stop=["</strategy>"], n=n, seed=seed)
    turns = [Turn(prompt_ids=prompts[c.prompt_index], response_ids=list(c.token_ids),
                  logprobs=list(c.logprobs), text=c.text, finish_reason=c.finish_reason)
             for c in engine.generate(prompts, params)]
    return [turns[k * n:(k + 1) * n] for k in range(len(firsts))]  # prompt-major: n samples per task


# -- 2. hierarchical rollouts ----------------------------------------------------------------------


def rollout(engine, tok, envs: list, tasks: list[Task], n: int, m: int, max_steps: int, seed: int
            ) -> tuple[list[Group], dict[str, str]]:
    """N strategies × M rollouts per task; all episodes advance in lockstep, one engine call per turn."""
    resets = [envs[k * n * m + e].reset(task) for k, task in enumerate(tasks) for e in range(n * m)]
    strategies = sample_strategies(engine, tok, resets[:: n * m], n, seed)
    live = []
    for e, (k, i, j) in enumerate(product(range(len(tasks)), range(n), range(m))):
        (obs, info), task = resets[e], tasks[k]
        traj = Trajectory(task=task, strategy=strategies[k][i], task_uid=task.uid,
                          strategy_uid=f"{task.uid}/s{i}", uid=f"{task.uid}/s{i}/r{j}")
        view = StepView(family="twx", task=info["task_description"], observation=obs, step=0,
                        strategy=parse_strategy(strategies[k][i].text), admissible=info["admissible_actions"])
        live.append(Live(envs[e], traj, view))
    for turn in range(max_steps):
        active = [lv for lv in live if not (lv.traj.steps and lv.traj.steps[-1].done)]
        if not active:
            break
        prompts = [render(tok, step_messages(lv.view, PROMPT)) for lv in active]
        params = SamplingParams(max_tokens=STEP_TOKENS, stop=["</action>"], seed=seed + 1 + turn)
        for lv, ids, comp in zip(active, prompts, engine.generate(prompts, params), strict=True):
            take_step(lv, ids, comp)
    groups = [Group(task=task, strategies=strategies[k],
                    trajectories=[[live[(k * n + i) * m + j].traj for j in range(m)] for i in range(n)])
              for k, task in enumerate(tasks)]
    return groups, {task.uid: resets[k * n * m][1]["task_description"] for k, task in enumerate(tasks)}


def take_step(lv: Live, prompt_ids: list[int], comp) -> None:
    """Parse the response; an admissible action steps the env, anything else is an invalid step."""
    parsed = parse_step(comp.text)
    action = match_admissible(parsed.action, lv.view.admissible) if parsed.ok and parsed.action else None
    step = Step(prompt_ids=prompt_ids, response_ids=list(comp.token_ids), logprobs=list(comp.logprobs),
                text=comp.text, finish_reason=comp.finish_reason, action=action or parsed.action,
                valid=action is not None, anchor=lv.view.observation)
    obs, admissible = lv.view.observation, lv.view.admissible
    if action is None:  # the env is not stepped: the agent sees the same state, the step marked invalid
        step.penalty, step.observation = INVALID_PENALTY, "Invalid action. Nothing happened."
    else:
        obs, step.reward, step.done, info = lv.env.step(action)
        step.observation, admissible = obs, info["admissible_actions"]
        if step.done:
            lv.traj.won, lv.traj.outcome = info["won"], info["outcome"]
            lv.traj.termination = "success" if info["won"] else "env_done"
    lv.traj.steps.append(step)  # an episode still running after max_steps keeps termination="max_steps"
    lv.view.history.append(HistoryItem(lv.view.observation, step.action or step.text[:80], step.valid))
    lv.view.observation, lv.view.admissible, lv.view.step = obs, admissible, lv.view.step + 1


# -- 3. critical self-judgment ---------------------------------------------------------------------


def self_judge(engine, tok, groups: list[Group], descriptions: dict[str, str]) -> None:
    """The policy (greedy) lists the steps that neither follow z nor advance the task (never trained)."""
    trajs = [t for g in groups for t in g.flat if t.steps]
    prompts = [render(tok, judge_messages("twx", descriptions[t.task_uid], parse_strategy(t.strategy.text),
                                          [(s.action or s.text[:60], s.observation) for s in t.steps]))
               for t in trajs]
    params = SamplingParams(temperature=0.0, max_tokens=JUDGE_TOKENS, stop=["</answer>"])
    for t, comp in zip(trajs, engine.generate(prompts, params), strict=True):
        for number in parse_judgment(comp.text, len(t.steps)):
            t.steps[number - 1].judged = True


# -- 4. top-δ strategy reward and two-level advantages ---------------------------------------------


def trajectory_return(t: Trajectory) -> float:
    """R = outcome − Σ_t penalty_t."""
    return t.outcome - sum(s.penalty for s in t.steps)


def top_delta_strategy_reward(returns: list[float], delta: float = DELTA) -> float:
    """R(z_i) = mean of the ⌈δ·M⌉ largest returns among strategy i's M rollouts."""
    k = max(1, math.ceil(delta * len(returns)))
    return sum(sorted(returns, reverse=True)[:k]) / k


def normalize(xs: list[float], pool: list[float]) -> list[float]:
    """(x − mean(pool)) / (std(pool) + ε), unbiased std; all 0 when the pool has < 2 values or all equal."""
    if len(pool) < 2 or min(pool) == max(pool):
        return [0.0] * len(xs)
    mean = sum(pool) / len(pool)
    std = math.sqrt(sum((p - mean) ** 2 for p in pool) / (len(pool) - 1))
    return [(x - mean) / (std + EPS) for x in xs]


def strata_advantages(groups: list[Group]) -> Advantages:
    """Strategy advantage: R(z_i) normalised across the task's N strategies. Action advantage of step t of
    rollout j: x_jt = R_j − κ·judged_jt, normalised over all step rows of the same strategy's M rollouts."""
    steps, strategies = [], []
    for g in groups:
        rewards = [top_delta_strategy_reward([trajectory_return(t) for t in ts]) for ts in g.trajectories]
        strategies.append(normalize(rewards, rewards))
        rows = []
        for ts in g.trajectories:
            x = [[trajectory_return(t) - KAPPA * float(s.judged) for s in t.steps] for t in ts]
            pool = [v for xt in x for v in xt]
            rows += [normalize(xt, pool) for xt in x]
        steps.append(rows)  # `Group.flat` order: strategy by strategy, rollout by rollout
    return Advantages(steps=steps, strategies=strategies)


# -- 5. PPO-clip update ----------------------------------------------------------------------------


def to_sample(turn: Turn, advantage: float, kind: str) -> Sample:
    """The exact prompt ids the engine was fed + the exact ids it sampled; loss on the response only."""
    n, response = len(turn.prompt_ids), turn.response_ids
    return Sample(input_ids=turn.prompt_ids + response, loss_mask=[0] * n + [1] * len(response),
                  advantage=advantage, engine_logprobs=[0.0] * n + turn.logprobs, kind=kind)


def build_rows(groups: list[Group], adv: Advantages) -> list[Sample]:
    """One row per strategy turn (its strategy advantage) and one per step (its action advantage)."""
    rows = []
    for group, adv_z, adv_steps in zip(groups, adv.strategies, adv.steps, strict=True):
        rows += [to_sample(z, a, "strategy") for z, a in zip(group.strategies, adv_z, strict=True)]
        for traj, adv_t in zip(group.flat, adv_steps, strict=True):
            rows += [to_sample(s, a, "action") for s, a in zip(traj.steps, adv_t, strict=True)]
    return rows


def response_logprobs(model, row: Sample) -> torch.Tensor:
    """log π(token) of each of the row's response tokens, teacher-forced on its exact ids: a [T] tensor."""
    n = sum(row.loss_mask)  # the response is the row's last n tokens
    ids = torch.tensor([row.input_ids])
    logits = model(input_ids=ids, logits_to_keep=n + 1).logits[0, :-1].float()  # position t predicts t+1
    return torch.log_softmax(logits, -1).gather(-1, ids[0, -n:, None]).squeeze(-1)


def ppo_update(model, opt, rows: list[Sample], epochs: int) -> tuple[float, float]:
    """PPO-clip, token-mean over all response tokens of the batch; returns (mean loss, engine mismatch)."""
    with torch.no_grad():  # π_old: the policy that sampled, recomputed by the trainer
        for r in rows:
            r.old_logprobs = [0.0] * (r.num_tokens - sum(r.loss_mask)) + response_logprobs(model, r).tolist()
    mismatch = max(abs(o - e) for r in rows for o, e in zip(r.old_logprobs, r.engine_logprobs, strict=True))
    total_tokens, total_loss = sum(sum(r.loss_mask) for r in rows), 0.0
    for _ in range(epochs):
        opt.zero_grad()
        for r in rows:  # one row at a time: gradient accumulation, exact for token-mean
            logp_BT = response_logprobs(model, r)[None]
            old_BT = torch.tensor(r.old_logprobs[-logp_BT.shape[1]:])[None]
            loss_BT, _ = ppo_clip_loss(logp_BT, old_BT, torch.full_like(logp_BT, r.advantage), CLIP, CLIP,
                                       DUAL_CLIP)
            loss = aggregate(loss_BT, torch.ones_like(loss_BT), "token-mean", total_tokens=total_tokens)
            loss.backward()
            total_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return total_loss / epochs, mismatch


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="StraTA in one file (tiny model, TextWorldExpress CookingWorld).")
    p.add_argument("--iterations", type=int, default=2, help="RL iterations")
    p.add_argument("--tasks", type=int, default=2, help="tasks per iteration")
    p.add_argument("--n-strategies", type=int, default=2, help="N: strategies per task")
    p.add_argument("--n-rollouts", type=int, default=4, help="M: rollouts per strategy")
    p.add_argument("--max-steps", type=int, default=8, help="steps per episode")
    p.add_argument("--ppo-epochs", type=int, default=2, help="passes over the batch per iteration")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument("--model", default="tiny", help="`tiny` or a checkpoint directory")
    p.add_argument("--seed", type=int, default=0, help="seeds sampling and training: same seed, same run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> tuple[list[IterationStats], torch.nn.Module]:
    args = parse_args(argv)
    path = resolve_model(args.model)
    tok, model = load_tokenizer(path), load_model(path)
    engine = make_engine(path, EngineConfig(hf=HFEngineConfig(dtype="float32")), tok)  # own copy of weights
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    envs = [make_env(ENV_ID) for _ in range(args.tasks * args.n_strategies * args.n_rollouts)]
    history = []
    for it in range(args.iterations):
        tasks = make_tasks(ENV_ID, "train", n=args.tasks, start=it * args.tasks)
        seed = args.seed * 1_000_003 + it * 10_007  # every engine call of the run gets its own fixed seed
        groups, descriptions = rollout(engine, tok, envs, tasks, args.n_strategies, args.n_rollouts,
                                       args.max_steps, seed)
        self_judge(engine, tok, groups, descriptions)
        adv = strata_advantages(groups)
        rows = build_rows(groups, adv)
        loss, mismatch = ppo_update(model, opt, rows, args.ppo_epochs)
        engine.update_weights(model.state_dict())
        trajs = [t for g in groups for t in g.flat]
        stats = IterationStats(reward=sum(map(trajectory_return, trajs)) / len(trajs),
                               success=sum(t.won for t in trajs) / len(trajs), loss=loss,
                               nonzero_advantages=sum(r.advantage != 0.0 for r in rows), mismatch=mismatch)
        history.append(stats)
        print(f"iter {it}: reward {stats.reward:+.3f}  success {stats.success:.2f}  loss {stats.loss:+.4f}  "
              f"{stats.nonzero_advantages}/{len(rows)} rows with A≠0  engine/trainer {stats.mismatch:.1e}")
    engine.close()
    return history, model


if __name__ == "__main__":
    main()
