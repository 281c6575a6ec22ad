"""Calibrated trajectories (STeCa, seed 003; ALGORITHMS.md, STeCa calibration 3).

At the first deviation t of an expert trajectory (`deviation.first_deviation`):

    expert prefix a^e_0..a^e_{t−1} → deviated â_t + its observation
      → <think>reflection</think> a^e_t → expert suffix a^e_{t+1}..

The reflective thought names the mistake and leads to the expert action. It comes from a teacher — any
object with `chat(messages, params) -> str`, e.g. the `openai` engine (`engines.make_openai_engine`)
pointed at GPT-4o or at `stratarl serve` — prompted as in the released code, or offline from a template
(`template_reflection`). `CalibratedTrajectory.source` says which.

Departure from the paper, stated: the paper splices the expert's recorded text after the deviated step.
Here the spliced action sequence is run in the env with the agent's own prompts (like
`rollout.expert`), so every prompt and observation is real and the rows carry exact token ids. Where an
expert action no longer applies after the deviation, the env says so in its observation and the
trajectory's `won` is False; such trajectories are kept (the paper keeps all), and `won` lets a caller
drop them. A deviation that ended the episode cannot be followed by anything and is not calibrated.
The reflection goes in a `<think>` block even when `PromptConfig.think` is off (the parser reads it);
with `prime` on and `think` off the prompt already opens `<action>`, so the think block follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..agent.memory import Budget
from ..agent.parse import extract, normalize
from ..engines.base import SamplingParams
from ..envs.pool import EnvPool
from ..rollout.runner import RunnerConfig
from ..types import Step, Trajectory
from .deviation import DeviationConfig, StepComparison, first_deviation
from .step_value import ExpertScan, Replay, advance, open_replays

ReflectionSource = Literal["template", "teacher"]

TEMPLATE = "{mistake}: it does not bring me closer to the goal. The right action here is '{expert}'."

TEACHER_INSTRUCTION = (
    "Above is the interaction history. However, the last step is not optimal and may lead to a wrong direction. "
    "The next step ground truth action is: {expert}. Please provide the thought which would lead the agent to "
    "generate the ground truth action and be aware of the last non-optimal action. Answer with the thought only, "
    "in one or two sentences.")


class Teacher(Protocol):
    """Writes reflections; the `openai` engine is one."""

    def chat(self, messages: list[dict[str, str]], params: SamplingParams) -> str: ...


@dataclass
class CalibratedTrajectory:
    """Expert prefix → deviated action + its observation → reflection + expert action → expert suffix."""

    trajectory: Trajectory
    """The spliced path run in the env with the agent's prompts (exact ids); step t is â_t, step t+1 holds
    the reflection and a^e_t."""
    deviation: StepComparison
    """The first deviation of the expert trajectory (its t, both actions, the step values)."""
    reflection: str
    """The reflective thought written before the expert action."""
    source: ReflectionSource
    """`template` (offline) or `teacher`."""
    agent_continuation: list[str]
    """The agent's own actions after â_t in its failed rollout (what the calibration replaces)."""

    @property
    def first_trained_step(self) -> int:
        """Steps before t+1 (the expert prefix and â_t) are context only."""
        return self.deviation.t + 1


def template_reflection(deviated: str, expert: str) -> str:
    """The offline reflection: names the mistaken action (or the reply that held none) and the correct one."""
    mistake = f"My last action, '{deviated}', was a mistake" if deviated.strip() else "My last reply was not a valid action"
    return TEMPLATE.format(mistake=mistake, expert=expert)


def reflection_messages(task: str, steps: list[Step], expert: str) -> list[dict[str, str]]:
    """The teacher prompt of the released code: the history (ending with the deviated step), then the
    request for a thought leading to `expert`."""
    lines = [f"Task: {task.strip()}", f"Observation: {steps[0].anchor.strip()}"] if steps else [f"Task: {task.strip()}"]
    for s in steps:
        lines += [f"Action: {s.action}", f"Observation: {s.observation.strip()}"]
    history = "\n".join(lines)
    return [{"role": "user", "content": f"{history}\n\n{TEACHER_INSTRUCTION.format(expert=expert)}"}]


def clean_reflection(text: str, max_chars: int = 600) -> str:
    """The teacher's answer as one thought: the first `<think>` block if any, a leading `Thought:` dropped,
    anything from an `Action:` line or `<action>` on cut, whitespace collapsed, at most `max_chars`."""
    thoughts = extract(text, "think")
    text = thoughts[0] if thoughts else text
    for cut in ("<action>", "\nAction:", "Action:"):
        text = text.split(cut, 1)[0]
    text = normalize(text)
    if text.lower().startswith("thought:"):
        text = text[len("thought:"):].strip()
    return text[:max_chars]


def write_reflections(cases: list[tuple[str, list[Step], StepComparison]], teacher: Teacher | None,
                      params: SamplingParams | None = None) -> list[tuple[str, ReflectionSource]]:
    """One reflection per (task text, history ending with â_t, deviation): the teacher's when given and it
    answers something, else the template's."""
    params = params or SamplingParams(temperature=0.0, max_tokens=128)
    out: list[tuple[str, ReflectionSource]] = []
    for task, steps, dev in cases:
        text = clean_reflection(teacher.chat(reflection_messages(task, steps, dev.expert_action), params)) if teacher else ""
        out.append((text, "teacher") if text else (template_reflection(dev.agent_action, dev.expert_action), "template"))
    return out


def calibrate(tokenizer: Any, pool: EnvPool, scans: list[ExpertScan], dcfg: DeviationConfig, rcfg: RunnerConfig,
              teacher: Teacher | None = None, params: SamplingParams | None = None) -> list[CalibratedTrajectory]:
    """One calibrated trajectory per expert trajectory with a deviation (its first one). Runs in two
    batched replays: up to â_t (which gives the teacher the real history), then the reflection step and
    the expert suffix."""
    cases = [(scan, dev) for scan in scans
             if (dev := first_deviation(scan.comparisons, dcfg)) is not None and _continuation(scan, dev.t)]
    budget = Budget(rcfg.context, rcfg.sampling.max_tokens)
    reps = open_replays(pool, [scan.expert.task for scan, _ in cases])
    advance(tokenizer, pool, reps, [scan.actions[:dev.t] + [dev.agent_action] for scan, dev in cases], rcfg.prompt, budget)
    kept = [(rep, scan, dev) for rep, (scan, dev) in zip(reps, cases, strict=True) if _deviated(rep, dev.t)]
    live_ids = {id(rep) for rep, _, _ in kept}
    pool.release(rep.reply.episode for rep in reps if id(rep) not in live_ids)
    texts = write_reflections([(rep.view.task, rep.trajectory.steps, dev) for rep, _, dev in kept], teacher, params)
    live = [rep for rep, _, _ in kept]
    advance(tokenizer, pool, live, [scan.actions[dev.t:] for _, scan, dev in kept], rcfg.prompt, budget,
            thoughts=[{0: text} for text, _ in texts])
    pool.release(rep.reply.episode for rep in live)
    out = []
    for (rep, scan, dev), (text, source) in zip(kept, texts, strict=True):
        rep.trajectory.uid = f"calibrated:{scan.expert.uid or scan.expert.task.uid}@{dev.t}"
        out.append(CalibratedTrajectory(trajectory=rep.trajectory, deviation=dev, reflection=text, source=source,
                                        agent_continuation=_continuation(scan, dev.t)))
    return out


def _continuation(scan: ExpertScan, t: int) -> list[str]:
    """The agent's actions after â_t in its rollout from the prefix of length t; empty ones are not calibrated
    (as in the released code: nothing to contrast the calibration with)."""
    run = scan.explored[t]
    return [s.action for s in run.steps[t + 1:]] if run is not None else []


def _deviated(rep: Replay, t: int) -> bool:
    """The replay reached â_t and the episode goes on after it."""
    return len(rep.trajectory.steps) == t + 1 and not rep.ended
