"""Monte-Carlo step values (STeCa, seed 003; ALGORITHMS.md, STeCa calibration 2).

    r_step(s, a) = (1/N) Σ_{j=1..N} R(τ_j),   τ_j ~ π from s after a   (N = 5, temperature 1)

The state s is reached by replaying an action prefix from the Task's seed (same task, same start),
then a is taken and the current policy finishes the episode N times; R is the episode outcome (1/0 on
TextWorldExpress, score/100 on ScienceWorld). An action that ends the episode has its own outcome as
value (all N copies end there).

Everything is batched: the N copies of every query are replayed round by round, one pool batch per
round, then all of them continue together in one `run_episodes` call (one engine batch per turn).

Replays use the agent's own prompts (`fit_step_prompt`: same template, history window, admissible
list), so a continuation sees exactly what the policy would have seen had it taken those actions, and
every replayed step carries exact prompt ids; its response is `<action>a</action>` with logprob 0, as
in `rollout.expert`. A forced action is always sent to the env, whose verdict marks it valid or not
(as `envs.gold.replay` does); the runner instead does not send an inadmissible action — on
TextWorldExpress both leave the state unchanged.

`scan_experts` runs the whole measurement STeCa needs per expert trajectory: the agent's greedy
rollouts from expert prefixes, the expert's and the agent's step values, and one `StepComparison` per
checked step (the input of `deviation.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..agent.memory import Budget, fit_step_prompt, remember
from ..agent.prompts import PromptConfig, StepView, step_prime
from ..engines.base import Engine
from ..envs.pool import EnvPool, EnvReply
from ..rollout.runner import EpisodeStart, RunnerConfig, family_of, run_episodes
from ..types import Step, Task, Trajectory
from .deviation import DeviationConfig, StepComparison, same_action


@dataclass
class StepValueConfig:
    """Monte-Carlo estimation of step values."""

    n: int = 5
    """N: continuations sampled per (state, action)."""
    temperature: float = 1.0
    """Sampling temperature of the continuations."""


@dataclass
class StepQuery:
    """A (state, action) pair; the state is reached by replaying `prefix` from the task's start."""

    task: Task
    """The task (its seed fixes the start state)."""
    prefix: list[str]
    """Actions replayed from the start to reach s."""
    action: str
    """a: the action whose value is wanted."""


@dataclass
class StepValue:
    """r_step(s, a) and the rollouts it averages."""

    query: StepQuery
    """What was valued."""
    value: float
    """Mean outcome of the continuations, in [0, 1]."""
    outcomes: list[float]
    """Outcome of each of the N continuations."""
    observation: str
    """The env's observation after a ('' when the replay could not reach a)."""
    valid: bool
    """The env accepted a."""
    done: bool
    """a ended the episode."""
    rollouts: list[Trajectory] = field(default_factory=list)
    """The N continuations: the prefix steps, the step of a, then the policy's steps."""
    error: str | None = None
    """Why the replay could not reach a (env error, context overflow); the value is then 0."""


@dataclass
class Replay:
    """An episode driven through forced actions with the agent's prompts, still open in the pool."""

    trajectory: Trajectory
    """The forced steps (exact prompt ids), the outcome so far and, once ended, the termination."""
    view: StepView
    """What the agent's next step prompt shows (history filled)."""
    reply: EnvReply
    """The env's last reply; `reply.episode` is the open episode."""
    ended: bool = False
    """The episode ended during the replay (env done, env error, context overflow)."""


# -- replaying forced actions ----------------------------------------------------------------------


def forced_response(action: str, thought: str | None, prime: str) -> str:
    """The reply text of a forced step, `<think>thought</think><action>a</action>` (no think block without
    a thought), less the prime the prompt already ends with."""
    think = f"<think>{thought or ''}</think>" if thought is not None or prime == "<think>" else ""
    text = f"{think}<action>{action}</action>"
    return text[len(prime):] if prime and text.startswith(prime) else text


def open_replays(pool: EnvPool, tasks: list[Task]) -> list[Replay]:
    """Reset one episode per task (same task, same start)."""
    reps = []
    for task, reply in zip(tasks, pool.reset(tasks), strict=True):
        info = reply.info
        view = StepView(family=family_of(task), task=info.get("task_description", ""), observation=reply.observation,
                        step=0, admissible=info.get("admissible_actions"))
        traj = Trajectory(task=task, task_uid=task.uid, uid=f"replay:{task.uid}#{reply.episode}")
        rep = Replay(trajectory=traj, view=view, reply=reply)
        if reply.error:
            _stop(rep, reply.error_kind or "env_error", reply.error)
        reps.append(rep)
    return reps


def advance(tokenizer: Any, pool: EnvPool, reps: list[Replay], plans: list[list[str]], prompt: PromptConfig,
            budget: Budget, thoughts: list[dict[int, str]] | None = None) -> None:
    """Drive `reps[i]` through `plans[i]`, one pool batch per round. `thoughts[i][k]`, when given, is the
    `<think>` text written before action k of plan i (a calibrated step). Ended replays are skipped."""
    thoughts = thoughts or [{} for _ in reps]
    for k in range(max((len(p) for p in plans), default=0)):
        batch = []
        for rep, plan, th in zip(reps, plans, thoughts, strict=True):
            if rep.ended or k >= len(plan):
                continue
            ids = fit_step_prompt(tokenizer, rep.view, prompt, budget)
            if ids is None:
                _stop(rep, "context_overflow", None)
                continue
            text = forced_response(plan[k], th.get(k), step_prime(prompt))
            response = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            batch.append((rep, Step(prompt_ids=ids, response_ids=response, logprobs=[0.0] * len(response), text=text,
                                    thought=th.get(k) or "", action=plan[k], anchor=rep.view.observation)))
        if batch:
            for (rep, step), reply in zip(batch, pool.step([(r.reply.episode, s.action) for r, s in batch]), strict=True):
                _apply(rep, step, reply)


def _apply(rep: Replay, step: Step, reply: EnvReply) -> None:
    traj = rep.trajectory
    step.observation, step.reward, step.done = reply.observation, reply.reward, reply.done
    step.valid = not reply.error and bool(reply.info.get("action_valid", True))
    step.info = {"score": reply.info.get("score", 0.0), "won": bool(reply.info.get("won", False))}
    traj.steps.append(step)
    rep.reply = reply
    if reply.error:
        _stop(rep, reply.error_kind or "env_error", reply.error)
        return
    remember(rep.view, step.action, step.valid, reply.observation, reply.info.get("admissible_actions"),
             step.prompt_ids, step.response_ids)
    traj.won, traj.outcome = step.info["won"], float(reply.info.get("outcome", 0.0))
    if reply.done:
        _stop(rep, "success" if traj.won else "env_done", None)


def _stop(rep: Replay, termination: str, error: str | None) -> None:
    rep.ended = True
    rep.trajectory.termination = termination  # type: ignore[assignment]
    rep.trajectory.error = error


def replay(tokenizer: Any, pool: EnvPool, tasks: list[Task], plans: list[list[str]], rcfg: RunnerConfig,
           thoughts: list[dict[int, str]] | None = None) -> list[Replay]:
    """Open one episode per task and drive it through its plan (see `advance`). The episodes stay open:
    continue them with `continue_replays` or release them."""
    reps = open_replays(pool, tasks)
    advance(tokenizer, pool, reps, plans, rcfg.prompt, Budget(rcfg.context, rcfg.sampling.max_tokens), thoughts)
    return reps


def continue_replays(engine: Engine, tokenizer: Any, pool: EnvPool, reps: list[Replay], rcfg: RunnerConfig,
                     seed: int, uids: list[str]) -> list[Trajectory]:
    """Let the policy finish every replayed episode in one `run_episodes` call; the forced steps head each
    trajectory and count towards `rcfg.max_steps`. A replay that already ended (or reached the horizon)
    comes back as it is. Every episode is released."""
    live = []
    for rep in reps:
        if not rep.ended and len(rep.trajectory.steps) >= rcfg.max_steps:
            _stop(rep, "max_steps", None)
        if rep.ended:
            pool.release([rep.reply.episode])
        else:
            live.append(rep)
    starts = [EpisodeStart(task=rep.trajectory.task, reply=rep.reply, prefix=rep.trajectory.steps, view=rep.view)
              for rep in live]
    done = iter(run_episodes(engine, tokenizer, pool, starts, rcfg, seed)) if starts else iter(())
    out = [rep.trajectory if rep.ended else next(done) for rep in reps]
    for traj, uid in zip(out, uids, strict=True):
        traj.uid = uid
    return out


def rollouts_after(engine: Engine, tokenizer: Any, pool: EnvPool, tasks: list[Task], plans: list[list[str]],
                   rcfg: RunnerConfig, seed: int, n: int = 1, tag: str = "after") -> list[list[Trajectory]]:
    """For each (task, plan): n copies replayed through the plan, each finished by the policy; returns n
    trajectories per plan whose first len(plan) steps are the forced ones."""
    flat_tasks = [t for t in tasks for _ in range(n)]
    flat_plans = [p for p in plans for _ in range(n)]
    uids = [f"{t.uid}/{tag}{len(p)}/q{i // n}/r{i % n}/{seed}"
            for i, (t, p) in enumerate(zip(flat_tasks, flat_plans, strict=True))]
    reps = replay(tokenizer, pool, flat_tasks, flat_plans, rcfg)
    trajs = continue_replays(engine, tokenizer, pool, reps, rcfg, seed, uids)
    return [trajs[i * n:(i + 1) * n] for i in range(len(tasks))]


# -- step values -----------------------------------------------------------------------------------


def step_values(engine: Engine, tokenizer: Any, pool: EnvPool, queries: list[StepQuery], cfg: StepValueConfig,
                rcfg: RunnerConfig, seed: int) -> list[StepValue]:
    """r_step(s, a) for every query: N continuations each, sampled at `cfg.temperature`, all in one batch."""
    mc = replace(rcfg, sampling=replace(rcfg.sampling, temperature=cfg.temperature))
    groups = rollouts_after(engine, tokenizer, pool, [q.task for q in queries], [q.prefix + [q.action] for q in queries],
                            mc, seed, n=cfg.n, tag="mc")
    return [_value(q, trajs) for q, trajs in zip(queries, groups, strict=True)]


def _value(q: StepQuery, trajs: list[Trajectory]) -> StepValue:
    k = len(q.prefix)
    reached = [t for t in trajs if len(t.steps) > k]
    if not reached:
        why = trajs[0].error or f"the replay ended before the action ({trajs[0].termination})"
        return StepValue(query=q, value=0.0, outcomes=[0.0] * len(trajs), observation="", valid=False, done=True,
                         rollouts=trajs, error=why)
    step = reached[0].steps[k]
    outcomes = [t.outcome for t in trajs]
    return StepValue(query=q, value=sum(outcomes) / len(outcomes), outcomes=outcomes, observation=step.observation,
                     valid=step.valid, done=step.done, rollouts=trajs)


# -- the whole measurement per expert trajectory ---------------------------------------------------


@dataclass
class ExpertScan:
    """What the agent and the Monte-Carlo step values say about one expert trajectory."""

    expert: Trajectory
    """The expert trajectory (`rollout.expert.expert_episodes` gives it the agent's prompt ids)."""
    explored: list[Trajectory | None]
    """explored[t]: the agent's greedy rollout from the expert prefix of length t (None where not run); its
    step t is â_t. explored[0] starts at the task's start (the candidates of D_e)."""
    expert_values: list[StepValue | None]
    """expert_values[k] = r_step(s_k, a^e_k) (None where not needed)."""
    agent_values: list[StepValue | None]
    """agent_values[t] = r_step(s_t, â_t) (None where not needed or where â_t = a^e_t)."""
    comparisons: list[StepComparison]
    """One per checked step t ≥ min_step, in order of t."""

    @property
    def actions(self) -> list[str]:
        return [s.action for s in self.expert.steps]


def scan_experts(engine: Engine, tokenizer: Any, pool: EnvPool, experts: list[Trajectory], vcfg: StepValueConfig,
                 dcfg: DeviationConfig, rcfg: RunnerConfig, seed: int) -> list[ExpertScan]:
    """For every expert trajectory: greedy agent rollouts from the prefixes t ∈ {0} ∪ [min_step, T), then the
    step values r_step(s_k, a^e_k) for k ≥ min_step − 1 and r_step(s_t, â_t) where â_t ≠ a^e_t (one batch
    each), then the comparisons. All experts share each batch."""
    greedy = replace(rcfg, sampling=replace(rcfg.sampling, temperature=0.0))
    first = max(1, dcfg.min_step)
    where = [(e, t) for e, x in enumerate(experts) for t in sorted({0, *range(first, len(x.steps))})]
    plans = [[s.action for s in experts[e].steps[:t]] for e, t in where]
    runs = rollouts_after(engine, tokenizer, pool, [experts[e].task for e, _ in where], plans, greedy, seed, tag="explore")
    scans = [ExpertScan(expert=x, explored=[None] * len(x.steps), expert_values=[None] * len(x.steps),
                        agent_values=[None] * len(x.steps), comparisons=[]) for x in experts]
    for (e, t), trajs in zip(where, runs, strict=True):
        scans[e].explored[t] = trajs[0]
    queries, slots = _value_queries(scans, first)
    for (scan, side, t), v in zip(slots, step_values(engine, tokenizer, pool, queries, vcfg, rcfg, seed), strict=True):
        getattr(scan, side)[t] = v
    for scan in scans:
        scan.comparisons = [_compare(scan, t) for t in range(first, len(scan.expert.steps))]
    return scans


def agent_action(scan: ExpertScan, t: int) -> str:
    """â_t: the agent's action at the expert prefix of length t ('' when its rollout never got there)."""
    run = scan.explored[t]
    return run.steps[t].action if run is not None and len(run.steps) > t else ""


def _value_queries(scans: list[ExpertScan], first: int) -> tuple[list[StepQuery], list[tuple[ExpertScan, str, int]]]:
    queries, slots = [], []
    for scan in scans:
        acts, task = scan.actions, scan.expert.task
        if len(acts) <= first:
            continue  # no step is checked
        for k in range(first - 1, len(acts)):
            queries.append(StepQuery(task=task, prefix=acts[:k], action=acts[k]))
            slots.append((scan, "expert_values", k))
        for t in range(first, len(acts)):
            if not same_action(agent_action(scan, t), acts[t]):
                queries.append(StepQuery(task=task, prefix=acts[:t], action=agent_action(scan, t)))
                slots.append((scan, "agent_values", t))
    return queries, slots


def _compare(scan: ExpertScan, t: int) -> StepComparison:
    expert, previous = scan.expert_values[t], scan.expert_values[t - 1]
    agent = scan.agent_values[t] or expert
    run = scan.explored[t]
    assert expert is not None and previous is not None and agent is not None
    return StepComparison(t=t, expert_action=scan.actions[t], agent_action=agent_action(scan, t),
                          agent_value=agent.value, expert_value=expert.value, previous_expert_value=previous.value,
                          agent_won=bool(run is not None and run.won))
