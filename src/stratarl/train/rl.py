"""The RL driver: a short list of named stages, each a plain function (DESIGN.md, Data flow).

    tasks -> strategies + rollouts -> judge -> advantages -> samples -> old/ref logprobs
          -> PPO update -> weight sync -> (eval) -> checkpoint -> metrics
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..agent.experience import (
    EXPERIENCE_FILE,
    make_retriever,
    retrieval_metrics,
    save_library,
    update_library,
)
from ..algos.advantages import NEEDS_VALUES, Advantages, assign, compute_advantages, with_step_penalties
from ..algos.diversity_rewards import apply_diversity_rewards
from ..algos.losses import kl_reward_shaping
from ..models.lora import merged_state_dict
from ..rollout.groups import sample_groups
from ..rollout.judge import apply_flags, audit, make_judge
from ..rollout.rename import Lens, LensPool, draw_view
from ..rollout.store import write_groups
from ..types import Group, Sample, Task
from .batching import collate, micro_batches
from .data import FillState, fill_batch, has_signal, take_from_buffer
from .distributed import full_state_dict, gather_shards, shard, sharded
from .policy import forward
from .samples import build_samples, pack_samples, share_prompts
from .state import TrainState, save
from .update import UpdateStats, ppo_update, score


class TrainingStopped(Exception):
    """Raised when the run must stop (too many non-finite updates); a checkpoint was written."""


@dataclass
class IterationLog:
    """Metrics of one iteration, filled stage by stage."""

    metrics: dict[str, float] = field(default_factory=dict)
    """Everything logged."""

    def timed(self, stage: str, fn: Callable, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        self.metrics[f"time/{stage}"] = time.perf_counter() - t0
        return out


# -- stages ----------------------------------------------------------------------------------------


def sample_tasks(state: TrainState) -> list[Task]:
    return state.sampler.next(state.cfg.env.tasks_per_iteration)


def rollout(state: TrainState, tasks: list[Task], log: IterationLog) -> list[Group]:
    """Strategies + rollouts for the tasks; with dynamic sampling, more tasks until the batch holds
    `tasks_per_iteration` groups with signal (or the round limit), surplus to the buffer."""
    cfg = state.cfg
    clear = getattr(state.engine, "clear_cache", None)
    if clear:
        clear()  # each iteration starts from an empty prefix cache: resume-exact sampling
    rcfg = _runner_cfg(state)
    n, ds = cfg.env.tasks_per_iteration, cfg.dynamic_sampling
    fill = FillState()
    take_from_buffer(state.buffer, n, fill)
    todo, rounds = tasks[: n - len(fill.kept)], 0
    state.descriptions.clear()
    retriever = make_retriever(state.experience, cfg.experience, state.iteration)
    while todo and rounds < max(1, ds.max_rounds if ds.enabled else 1):
        groups = _sample_shard(state, todo, rcfg, _seed(state, rounds), retriever, log)
        fill_batch(state.buffer, groups, n, ds, fill)
        rounds += 1
        todo = sample_tasks(state)[: n - len(fill.kept)] if ds.enabled and len(fill.kept) < n else []
    _rollout_metrics(state, fill, rounds, log)
    if state.experience is not None:
        log.metrics.update(retrieval_metrics(retriever))
    return fill.kept


def _sample_shard(state: TrainState, tasks: list[Task], rcfg: Any, seed: int, retriever: Any,
                  log: IterationLog) -> list[Group]:
    """The groups of `tasks`. Under data parallel with `distributed.shard_rollouts`, each rank rolls out
    tasks rank, rank + W, ... and the groups (and task descriptions) are all-gathered, so that every
    rank then holds the whole batch in task order, as the update needs."""
    dp, cfg = state.dp, state.cfg
    sharded = dp is not None and cfg.distributed.shard_rollouts
    mine = shard(tasks, dp) if sharded else tasks
    groups = sample_groups(state.engine, state.tokenizer, _lensed(state.pool, mine, cfg.env, seed),
                           mine, cfg.rollout.group, rcfg, seed=seed,
                           selector=state.selector, descriptions=state.descriptions, experience=retriever)
    log.metrics["rollout/episodes_this_rank"] = log.metrics.get("rollout/episodes_this_rank", 0) + sum(
        len(g.flat) for g in groups)
    if not sharded:
        return groups
    groups, descriptions = gather_shards(dp, groups, dict(state.descriptions))
    state.descriptions.update(descriptions)
    return groups


def _lensed(pool: Any, tasks: list[Task], env: Any, seed: int) -> Any:
    """`pool`, or with `env.methods` / `env.furniture` / `env.containers` the pool behind per-task lenses drawn
    from `seed` (`rollout/rename.draw_view`): every episode of a task (its whole group) sees the same view, so
    group-relative advantages compare like with like."""
    shares = (env.methods, env.furniture, env.containers)
    if max(shares) <= 0:
        return pool
    rng = random.Random(seed)
    lenses = {t.uid: Lens(m) for t in tasks if (m := draw_view(rng, *shares))}
    return LensPool(pool, lenses) if lenses else pool


def _seed(state: TrainState, rnd: int) -> int:
    return state.cfg.seed * 1_000_003 + state.iteration * 101 + rnd


def _runner_cfg(state: TrainState) -> Any:
    import dataclasses

    r = state.cfg.rollout.runner
    return dataclasses.replace(r, max_steps=state.horizon.at(state.iteration), context=min(r.context, state.context))


def _rollout_metrics(state: TrainState, fill: FillState, rounds: int, log: IterationLog) -> None:
    trajs = [t for g in fill.kept for t in g.flat]
    steps = [s for t in trajs for s in t.steps]
    m = log.metrics
    m.update({
        "rollout/episodes": len(trajs), "rollout/env_steps": len(steps), "rollout/success": _mean(t.won for t in trajs),
        "rollout/outcome": _mean(t.outcome for t in trajs), "rollout/steps": _mean(len(t.steps) for t in trajs),
        "rollout/invalid": _mean(not s.valid for s in steps), "rollout/horizon": state.horizon.at(state.iteration),
        "dynamic/rounds": rounds, "dynamic/dropped_fraction": fill.dropped / max(1, fill.rolled),
        "dynamic/zero_variance_fraction": _mean(not has_signal(g, 0.0) for g in fill.kept) if fill.kept else 0.0,
        "dynamic/from_buffer": fill.from_buffer,
        "rollout/response_tokens": sum(len(s.response_ids) for s in steps),
    })
    last = getattr(state.selector, "last", None)
    if last:
        m.update({f"strategy/{k}": v for k, v in last.items()})


def evolve_experience(state: TrainState, groups: list[Group], log: IterationLog) -> None:
    """SLEA-RL: the iteration's finished trajectories update the step-experience library (score-based
    admission, rate-limited extraction; `agent/experience.py`), which is written to `experience.json`."""
    if state.experience is None:
        return
    log.metrics.update(update_library(state.experience, groups, state.iteration, state.cfg.experience))
    save_library(state.experience, state.run_dir / EXPERIENCE_FILE)


def judge(state: TrainState, groups: list[Group], log: IterationLog) -> None:
    """Critical self-judgment: flag steps (`Step.judged`) and audit the judge against the rules."""
    jcfg = state.cfg.strategy.judge
    if jcfg.kind == "none":
        return
    j = make_judge(jcfg, state.engine, state.tokenizer, state.descriptions)
    flags = j.judge(groups)
    apply_flags(groups, flags)
    log.metrics.update(audit(groups, flags))


def advantages(state: TrainState, groups: list[Group], log: IterationLog) -> Advantages:
    """The configured estimator; with KL in the reward, each step's β·Σ_t KL(π ‖ π_ref) is added to a
    copy of its penalty first, so the estimator sees it as part of the reward. DPEPO's diversity rewards
    (`algo.diversity_rewards`, off by default) join as that config's `combine` says."""
    values = step_values(state, groups) if state.critic is not None else None
    scored = groups
    if state.ref_model is not None and state.cfg.algo.loss.kl_in_reward:
        extra = step_kl(state, groups)
        scored = with_step_penalties(groups, extra)
        log.metrics["kl/reward_penalty_mean"] = _mean(x for g in extra for t in g for x in t)
    algo = state.cfg.algo
    adv, diversity = apply_diversity_rewards(
        scored, algo.diversity_rewards, lambda gs: compute_advantages(algo.estimator, gs, algo.advantage, values))
    log.metrics.update(diversity)
    assign(groups, adv)
    flat = [a for g in adv.steps for t in g for a in t]
    log.metrics.update({"adv/mean": _mean(flat), "adv/std": _std(flat), "adv/abs_max": max(map(abs, flat), default=0.0),
                        "adv/zero_fraction": _mean(a == 0.0 for a in flat)})
    return adv


@torch.no_grad()
def step_kl(state: TrainState, groups: list[Group]) -> list:
    """β·Σ_t KL_t of every step's response under the current policy vs the reference."""
    loss_cfg = state.cfg.algo.loss
    rows = [Sample(input_ids=s.prompt_ids + s.response_ids, loss_mask=[0] * len(s.prompt_ids) + [1] * len(s.response_ids))
            for g in groups for t in g.flat for s in t.steps]
    budget = state.cfg.optim.micro_batch_tokens
    score(_policy(state), rows, state.pad_id, state.bf16, budget, "old_logprobs")
    score(_reference(state), rows, state.pad_id, state.bf16, budget, "ref_logprobs")
    it = iter(-float(kl_reward_shaping(torch.tensor([r.old_logprobs]), torch.tensor([r.ref_logprobs]),
                                         torch.tensor([r.loss_mask], dtype=torch.float32), loss_cfg.kl_coef,
                                         loss_cfg.kl_kind, loss_cfg.kl_clamp).sum()) for r in rows)
    return [[[next(it) for _ in t.steps] for t in g.flat] for g in groups]


@torch.no_grad()
def step_values(state: TrainState, groups: list[Group]) -> list:
    """Critic values for every step (step-GAE) or every response token (token GAE)."""
    c = state.critic
    token = NEEDS_VALUES.get(state.cfg.algo.estimator) == "token"
    rows = [Sample(input_ids=s.prompt_ids + s.response_ids, loss_mask=[0] * len(s.prompt_ids) + [1] * len(s.response_ids))
            for g in groups for t in g.flat for s in t.steps]
    vals: list = []
    for chunk in micro_batches(rows, state.cfg.optim.micro_batch_tokens):
        b = collate(chunk, state.pad_id)
        if sharded(state.dp):  # FSDP2: through the sharded root; the values come with the critic's pass
            pol, crit = state.dp.module(b, bf16=state.bf16)
            out = crit if crit is not None else pol
        else:
            out = forward(c.model or state.model, b, value_head=c.head, bf16=state.bf16, token_values=token)
        for i, s in enumerate(chunk):
            vals.append(out.values_BT[i, : s.num_tokens][torch.tensor(s.loss_mask).bool()].tolist() if token
                        else float(out.values_B[i]))
    it = iter(vals)
    return [[[next(it) for _ in t.steps] for t in g.flat] for g in groups]


def _policy(state: TrainState) -> torch.nn.Module:
    """What scores with the current policy: the model, or under FSDP2 the sharded root it runs through."""
    return state.dp.module if sharded(state.dp) else state.model


def _reference(state: TrainState) -> torch.nn.Module:
    return state.ref_step if state.ref_step is not None else state.ref_model


def samples(state: TrainState, groups: list[Group], adv: Advantages, log: IterationLog) -> list[Sample]:
    rows = build_samples(groups, adv, state.cfg.algo.samples)
    steps = len(rows)
    if state.cfg.algo.loss.loss_agg == "token-mean" and state.critic is None:
        rows = share_prompts(pack_samples(rows))
    log.metrics.update({"samples/rows": len(rows), "samples/steps": steps, "samples/tokens": sum(sum(r.loss_mask) for r in rows),
                        "samples/input_tokens": sum(r.num_tokens for r in rows),
                        "samples/strategy_rows": sum(r.kind == "strategy" for r in rows)})
    return rows


def reuses_update_forward(optim: Any) -> bool:
    """With one epoch of one mini-batch the update's forward runs on the weights that sampled the rows,
    so it *is* the behaviour pass: its detached logprobs serve as the old ones (`update._micro_loss`) and
    the separate scoring pass is skipped (every ratio is then exactly 1, not 1 ± rounding)."""
    return optim.epochs == 1 and optim.minibatches == 1


def old_and_ref_logprobs(state: TrainState, rows: list[Sample], log: IterationLog) -> None:
    """Behaviour logprobs from the trainer itself (same numerics as the update, so the first ratio is
    exactly 1) unless the update's own forward serves (`reuses_update_forward`); reference logprobs when
    a KL term is on; logs the engine/trainer mismatch when the behaviour pass ran."""
    budget = state.cfg.optim.micro_batch_tokens
    if not reuses_update_forward(state.cfg.optim):
        score(_policy(state), rows, state.pad_id, state.bf16, budget, "old_logprobs")
        _mismatch_metrics(rows, log)
    if state.ref_model is not None:
        score(_reference(state), rows, state.pad_id, state.bf16, budget, "ref_logprobs")


def _mismatch_metrics(rows: list[Sample], log: IterationLog) -> None:
    diffs = [abs(o - e) for r in rows for o, e, m in zip(r.old_logprobs, r.engine_logprobs or [], r.loss_mask, strict=False) if m]
    log.metrics["mismatch/engine_trainer_abs"] = _mean(diffs)
    log.metrics["mismatch/engine_trainer_max"] = max(diffs, default=0.0)


def update(state: TrainState, rows: list[Sample], log: IterationLog) -> UpdateStats:
    o, loss_cfg = state.cfg.optim, state.cfg.algo.loss
    offload = getattr(state.engine, "offload", None)
    if offload:
        offload()  # a colocated GPU engine frees its memory for the update (vLLM sleep mode)
    stats = ppo_update(state.model, state.optimizer, state.scheduler, rows, loss_cfg, epochs=o.epochs,
                       minibatches=o.minibatches, token_budget=o.micro_batch_tokens, grad_clip=o.grad_clip,
                       pad_id=state.pad_id, bf16=state.bf16, generator=state.generator, critic=state.critic,
                       dp=state.dp)
    log.metrics.update({f"train/{k}": v for k, v in stats.__dict__.items() if not k.startswith("_")})
    if reuses_update_forward(o):  # no separate behaviour pass: the update's forward measured the mismatch
        log.metrics["mismatch/engine_trainer_abs"] = stats.engine_trainer_abs
        log.metrics["mismatch/engine_trainer_max"] = stats.engine_trainer_max
    log.metrics["train/lr"] = state.scheduler.get_last_lr()[0]
    state.bad_updates = state.bad_updates + stats.skipped if stats.steps == 0 else stats.consecutive_skips
    return stats


def sync_weights(state: TrainState) -> None:
    """The engine gets the full weights: gathered from the shards (FSDP2), adapters merged in (LoRA)."""
    state.engine.update_weights(merged_state_dict(state.model, full_state_dict(state.model, state.dp, every_rank=True)))


def evaluate_policy(state: TrainState, episodes: int, log: IterationLog, prefix: str = "eval", split: str = "",
                    temperature: float | None = None) -> dict:
    """Held-out episodes with the current weights (through the rollout engine): `split` (default
    `eval.split`) at `temperature` (default `eval.temperature`; 0 = greedy)."""
    import dataclasses

    from ..envs.registry import make_tasks
    from ..evaluate import summarize
    from ..rollout.evaluate import evaluate_groups

    e = state.cfg.eval
    split = split or e.split
    temperature = e.temperature if temperature is None else temperature
    tasks = make_tasks(state.cfg.env.id, split, n=episodes)
    rcfg = dataclasses.replace(_runner_cfg(state), sampling=dataclasses.replace(state.cfg.rollout.runner.sampling,
                                                                                temperature=temperature))
    groups = evaluate_groups(state.engine, state.tokenizer, state.pool, tasks, rcfg, state.cfg.rollout.group.strategy,
                             seed=state.cfg.seed + 7)
    rep = summarize([t for g in groups for t in g.flat], tasks[0].env, split, prefix)
    log.metrics.update({f"{prefix}/success": rep.success.value, f"{prefix}/success_low": rep.success.low,
                        f"{prefix}/success_high": rep.success.high, f"{prefix}/wins": rep.wins,
                        f"{prefix}/episodes": rep.episodes, f"{prefix}/mean_steps": rep.mean_steps,
                        f"{prefix}/invalid": rep.invalid_rate})
    return rep.as_dict()


def periodic_eval(state: TrainState, log: IterationLog) -> None:
    """The in-training evaluation on `eval.every_split`: greedy (`eval/*`), and sampled at T = 1
    (`eval_sampled/*`) when `eval.sampled`."""
    e = state.cfg.eval
    evaluate_policy(state, e.episodes, log, "eval", e.every_split)
    if e.sampled:
        evaluate_policy(state, e.episodes, log, "eval_sampled", e.every_split, temperature=1.0)


# -- the loop --------------------------------------------------------------------------------------


def run_iteration(state: TrainState) -> dict[str, float]:
    """One RL iteration, stage by stage."""
    log = IterationLog()
    t0 = time.perf_counter()
    tasks = log.timed("tasks", sample_tasks, state)
    groups = log.timed("rollout", rollout, state, tasks, log)
    log.timed("experience", evolve_experience, state, groups, log)
    log.timed("judge", judge, state, groups, log)
    adv = log.timed("advantages", advantages, state, groups, log)
    rows = log.timed("samples", samples, state, groups, adv, log)
    log.timed("logprobs", old_and_ref_logprobs, state, rows, log)
    log.timed("update", update, state, rows, log)
    log.timed("sync", sync_weights, state)
    state.horizon.observe(log.metrics.get("rollout/success", 0.0))
    if state.cfg.logging.trajectories and (state.dp is None or state.dp.is_main):
        log.timed("store", write_groups, state.run_dir, state.iteration, groups)
    e = state.cfg.eval
    if e.every and (state.iteration + 1) % e.every == 0:
        log.timed("eval", periodic_eval, state, log)
    log.metrics["time/iteration"] = time.perf_counter() - t0
    tokens = log.metrics.get("rollout/response_tokens", 0)
    log.metrics["throughput/response_tokens_per_s"] = tokens / max(1e-9, log.metrics["time/rollout"])
    return log.metrics


def train_loop(state: TrainState, progress: Any = None) -> None:
    """Iterations until `cfg.iterations`, checkpointing and logging each."""
    cfg = state.cfg
    task = progress.add_task("RL", total=cfg.iterations, completed=state.iteration, status="") if progress else None
    while state.iteration < cfg.iterations:
        metrics = run_iteration(state)
        it = state.iteration
        state.iteration += 1
        last = state.iteration == cfg.iterations
        if state.bad_updates >= cfg.optim.max_bad_updates:
            state.logger.log(it, metrics)
            path = save(state, "last_good")  # skipped updates left the weights untouched: they are the good ones
            raise TrainingStopped(f"{state.bad_updates} non-finite updates in a row at iteration {it}; stopped. "
                                  f"The last good state is in {path}")
        if last or (cfg.checkpoint.every and state.iteration % cfg.checkpoint.every == 0):
            save(state, str(state.iteration))
        state.logger.log(it, metrics)
        if progress:
            progress.update(task, advance=1, status=f"success {metrics['rollout/success']:.2f} "
                                                    f"reward {metrics['rollout/outcome']:.2f}")


def _mean(xs: Any) -> float:
    xs = [float(x) for x in xs]
    return sum(xs) / len(xs) if xs else 0.0


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
