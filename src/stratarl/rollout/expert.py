"""Expert episodes in the agent's own format, for supervised warm-up.

Gold actions are replayed through the environment with exactly the prompts the agent will later be
given (same template, history window, admissible list, strategy), so an SFT row's prompt ids are
the ids the policy is fed at RL and evaluation time. The response is the expert's action in the
agent's tags, ending where generation stops (`</action>`, `</strategy>`) — no text is re-tokenized
later: the rows carry these ids.

Detours (`detours` > 0): before a gold action, with that probability, the replay first takes a wrong
action the env would refuse — an earlier or later action of the same gold path that is not admissible
now — recorded as the runtime records it (invalid, the env not stepped, the next prompt saying so), and
not trained (`train.sft.trajectory_rows` trains valid steps only). The rows then show what to do after an
invalid action, which gold paths alone never do: a policy that never saw one repeats it.

Warm-up strategies (StraTA) may use only what the agent knows at the first step — the task text and
the first observation — never the gold path: `warmup_strategy` builds them from those two texts.
"""

from __future__ import annotations

import random
import re
from typing import Any

from ..agent.memory import Budget, fit_step_prompt, remember
from ..agent.parse import match_admissible
from ..agent.prompts import PromptConfig, StepView, render, step_prime, strategy_messages
from ..envs.pool import EnvPool
from ..types import Step, Task, Trajectory, Turn
from .runner import INVALID_OBSERVATION, RunnerConfig, family_of, not_admissible

_EXITS = re.compile(r"To the (North|South|East|West) you see (?:the |a )?([\w ]+?)\.", re.IGNORECASE)
_ITEMS = re.compile(r"\b(knife|cookbook|coin|map|box|book)\b", re.IGNORECASE)


def warmup_strategy(task: str, observation: str, rng: random.Random) -> str:
    """A short plan from the task text and the first observation only (never the gold path).
    Several phrasings are drawn at random so the policy learns to write different plans."""
    exits = [f"{d.lower()} to the {p.strip()}" for d, p in _EXITS.findall(observation)]
    items = sorted({m.lower() for m in _ITEMS.findall(observation)})
    where = ", ".join(exits) if exits else "the nearby rooms"
    seen = ", ".join(items) if items else "what is here"
    if "cookbook" in task.lower():
        options = [
            f"Read the cookbook first. Take the ingredients it lists, looking {where}. Prepare the meal, then eat it.",
            f"Take the {seen} here, read the recipe, fetch each ingredient from {where}, then prepare and eat the meal.",
            f"Explore {where} for the ingredients, come back, follow the cookbook, prepare the meal and eat it.",
        ]
    else:
        options = [
            f"Look at {seen} here, then explore {where} until the task is done.",
            f"Explore {where} step by step and act on what the task asks.",
            f"Check the room first, then search {where} for what the task needs.",
        ]
    return rng.choice(options)


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def expert_episodes(tokenizer: Any, pool: EnvPool, tasks: list[Task], plans: list[list[str]], rcfg: RunnerConfig,
                    strategies: list[str | None] | None = None, detours: float = 0.0,
                    rng: random.Random | None = None) -> list[Trajectory]:
    """Replay `plans[i]` on `tasks[i]` through the agent's prompts; one Trajectory per task (with
    `detours`, refused wrong actions drawn from `rng` before some gold actions: module docstring)."""
    strategies = strategies or [None] * len(tasks)
    replies = pool.reset(tasks)
    trajs, live = [], []
    for task, reply, plan, plan_text in zip(tasks, replies, plans, strategies, strict=True):
        info = reply.info
        view = StepView(family=family_of(task), task=info.get("task_description", ""), observation=reply.observation,
                        step=0, strategy=plan_text, admissible=info.get("admissible_actions"))
        traj = Trajectory(task=task, task_uid=task.uid, uid=f"expert:{task.uid}", termination="max_steps",
                          strategy=_strategy_turn(tokenizer, view, rcfg.prompt) if plan_text else None,
                          strategy_uid=f"{task.uid}/expert" if plan_text else "")
        trajs.append(traj)
        if not reply.error:
            live.append((reply.episode, traj, view, list(plan)))
    _replay(tokenizer, pool, live, rcfg, detours, rng or random.Random(0))
    pool.release(r.episode for r in replies)
    return trajs


def _detour(traj: Trajectory, view: StepView, plan: list[str], rng: random.Random) -> str | None:
    """A wrong action for this step: a gold action of this episode, taken or still to come, that is not
    admissible now (so the env state is untouched); None right after another detour or when there is none."""
    if not view.admissible or (traj.steps and not traj.steps[-1].valid):
        return None
    taken = [s.action for s in traj.steps if s.valid]
    wrong = sorted({a for a in taken + plan[1:] if match_admissible(a, view.admissible) is None})
    return rng.choice(wrong) if wrong else None


def _strategy_turn(tokenizer: Any, view: StepView, cfg: PromptConfig) -> Turn:
    prompt = render(tokenizer, strategy_messages(view.family, view.task, view.observation, cfg))
    text = f"<strategy>{view.strategy}</strategy>"
    ids = _tokens(tokenizer, text)
    return Turn(prompt_ids=prompt, response_ids=ids, logprobs=[0.0] * len(ids), text=text)


def _replay(tokenizer: Any, pool: EnvPool, live: list, rcfg: RunnerConfig, detours: float,
            rng: random.Random) -> None:
    budget = Budget(rcfg.context, rcfg.sampling.max_tokens)
    prime = step_prime(rcfg.prompt)
    while live := [x for x in live if x[3] and len(x[1].steps) < rcfg.max_steps and not x[1].won]:
        batch = []
        for episode, traj, view, plan in live:
            prompt = fit_step_prompt(tokenizer, view, rcfg.prompt, budget)
            if prompt is None:
                traj.termination = "context_overflow"
                plan.clear()
                continue
            wrong = _detour(traj, view, plan, rng) if detours and rng.random() < detours else None
            action = wrong or plan.pop(0)
            text = f"<action>{action}</action>"[len(prime):]
            ids = _tokens(tokenizer, text)
            traj.steps.append(Step(prompt_ids=prompt, response_ids=ids, logprobs=[0.0] * len(ids), text=text,
                                   action=action, anchor=view.observation, valid=wrong is None))
            if wrong is None:
                batch.append((episode, traj, view, action))
                continue
            traj.steps[-1].observation = INVALID_OBSERVATION.format(why=not_admissible(wrong))
            remember(view, wrong, False, view.observation, None, prompt, ids)
        for (_, traj, view, action), r in zip(batch, pool.step([(b[0], b[3]) for b in batch]), strict=True):
            step = traj.steps[-1]
            step.observation, step.reward, step.done = r.observation, r.reward, r.done
            step.info = {"score": r.info.get("score", 0.0), "won": bool(r.info.get("won", False))}
            remember(view, action, True, r.observation, r.info.get("admissible_actions"), step.prompt_ids,
                     step.response_ids)
            traj.won, traj.outcome = step.info["won"], float(r.info.get("outcome", 0.0))
            if r.done or r.error:
                traj.termination = "success" if traj.won else ("env_error" if r.error else "env_done")
                for item in live:
                    if item[1] is traj:
                        item[3].clear()
