"""Prompt templates per environment family, rendered through the model's chat template.

Four prompts (DESIGN.md, Data flow):
- strategy: task description + first observation -> one short plan in `<strategy>...</strategy>`;
- step (step-level MDP, one model call per env step): task, strategy (when there is one), the last
  k steps of history, the step count, the current observation and optionally the admissible
  actions -> `<think>...</think><action>...</action>` (thinking optional);
- ReAct: the step prompt without a strategy;
- judge: strategy + numbered trajectory -> the step numbers that neither follow the strategy nor
  advance the task.
The prompt is laid out so that everything a group's rollouts share (system text, task, strategy)
comes first: the engine's prefix cache then computes it once per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import lookup


@dataclass(frozen=True)
class Template:
    """The fixed texts of one environment family."""

    role: str
    """Who the agent is, first line of the system message."""
    action_hint: str
    """How actions look in this family."""


_HOUSEHOLD = Template(role="You are an agent in a household.", action_hint="Use exactly one of the admissible actions.")

TEMPLATES: dict[str, Template] = {
    "twx": Template(
        role="You are an agent playing a text adventure game.",
        action_hint="Use exactly one of the admissible actions when they are listed."),
    "sciworld": Template(
        role="You are an agent doing a science experiment in a simulated world.",
        action_hint=("Actions: look around, look at OBJ, look in OBJ, open OBJ, close OBJ, go to LOC, "
                     "pick up OBJ, put down OBJ, move OBJ to OBJ, pour OBJ in OBJ, mix OBJ, activate OBJ, "
                     "deactivate OBJ, use OBJ on OBJ, focus on OBJ, read OBJ, wait, wait1, inventory, "
                     "connect OBJ to OBJ, eat OBJ, flush OBJ, teleport to LOC.")),
    "alfworld": _HOUSEHOLD,
    "alfworld-gen": _HOUSEHOLD,  # ALFWorld-domain games generated here: the same texts
    "webshop": Template(role="You are an agent shopping on a website.",
                        action_hint="Actions are search[QUERY] or click[BUTTON]."),
    "tools": Template(role="You are an agent that answers questions by calling tools.",
                      action_hint='Call a tool with <action>{"name": ..., "arguments": {...}}</action>; '
                                  "give the final answer in <answer>...</answer>."),
    "search": Template(role="You are an agent that answers questions with a search engine.",
                       action_hint="Search with <action>search: QUERY</action>; give the final answer in "
                                   "<answer>...</answer>."),
}


@dataclass
class PromptConfig:
    """How step and strategy prompts are built."""

    mode: Literal["window", "chat"] = "window"
    """`window`: each step prompt is rebuilt with the last `history` steps. `chat`: one growing
    conversation — each prompt is the previous prompt + the sampled response + the new observation,
    so the engine's prefix cache recomputes only the new turn and training packs a trajectory's steps
    into one row."""
    history: int = 2
    """Past steps (observation, action) shown in the step prompt; -1 shows all of them."""
    think: bool = False
    """Ask for `<think>...</think>` before the action."""
    show_admissible: bool = True
    """List the admissible actions in the step prompt (when the env gives them)."""
    max_admissible: int = 60
    """At most this many admissible actions are listed."""
    admissible_layout: Literal["comma", "lines"] = "comma"
    """`comma`: `Admissible actions: a, b, c`. `lines`: one action per line, so that each listed action is
    the same tokens as the action written in the reply (a byte-level BPE gives `, take` and `<action>take`
    different first tokens): a model can then copy an action from the list token by token."""
    hide_admissible: list[str] = field(default_factory=list)
    """Admissible actions whose first word is one of these are not listed (they stay valid: the agent may
    still write them). With `[examine, look, inventory]` a CookingWorld chat row is ~40% shorter."""
    max_observation_chars: int = 1500
    """Longer observations are cut (the end is kept) before they enter a prompt."""
    prime: bool = False
    """Start the assistant's reply with `<think>` / `<action>` (part of the prompt, never trained):
    keeps small instruct models that ignore the format on it."""
    keep: list[str] = field(default_factory=list)
    """Window mode: what a past action starting with one of these words revealed stays in the prompt as
    a note after it leaves the history window (with `read`, CookingWorld's recipe, read once at the
    start, stays in view until the meal is eaten)."""


@dataclass
class HistoryItem:
    """One past step as the agent remembers it."""

    observation: str
    """The observation the action was taken at."""
    action: str
    """The action taken (as the model wrote it)."""
    valid: bool = True
    """Whether the env accepted it."""


@dataclass
class StepView:
    """Everything the step prompt shows about the current state of an episode."""

    family: str
    """Environment family (selects the template)."""
    task: str
    """The task description."""
    observation: str
    """Current observation."""
    step: int
    """Index of this step (0-based)."""
    strategy: str | None = None
    """The strategy this rollout follows, if any."""
    history: list[HistoryItem] = field(default_factory=list)
    """All past steps; the prompt shows the last `PromptConfig.history` of them."""
    admissible: list[str] | None = None
    """Admissible actions when the env provides them."""
    messages: list[dict[str, str]] = field(default_factory=list)
    """Chat mode: the conversation so far (ends with the latest user turn)."""
    last_prompt: list[int] | None = None
    """Chat mode: the ids of the previous step's prompt."""
    last_response: list[int] | None = None
    """Chat mode: the ids the model answered it with."""
    experience: str | None = None
    """Retrieved experience for the current observation (SLEA-RL, `agent/experience.py`); None shows nothing."""


def template(family: str) -> Template:
    return lookup("prompt template family", family, TEMPLATES)


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def system_message(family: str, cfg: PromptConfig) -> str:
    t = template(family)
    fmt = "<think>your reasoning</think><action>one action</action>" if cfg.think else "<action>one action</action>"
    return f"{t.role} {t.action_hint} Reply with {fmt}."


def strategy_messages(family: str, task: str, observation: str, cfg: PromptConfig) -> list[dict[str, str]]:
    t = template(family)
    return [
        {"role": "system", "content": f"{t.role} Before acting, you write a short plan for the whole task."},
        {"role": "user", "content": f"Task: {task.strip()}\nObservation: {_clip(observation, cfg.max_observation_chars)}\n"
                                    "Write your plan inside <strategy>...</strategy>."},
    ]


def step_messages(view: StepView, cfg: PromptConfig, drop_history: int = 0) -> list[dict[str, str]]:
    """Step prompt; `drop_history` hides that many more of the oldest shown steps (context budget)."""
    lines = [f"Task: {view.task.strip()}"]
    if view.strategy:
        lines.append(f"Strategy: {view.strategy.strip()}")
    shown = view.history if cfg.history < 0 else view.history[len(view.history) - cfg.history:] if cfg.history else []
    shown = shown[drop_history:]
    lines += _notes(view, cfg, len(shown))
    first = view.step - len(shown)
    for i, h in enumerate(shown):
        mark = "" if h.valid else " (invalid)"
        lines.append(f"Step {first + i + 1}. Observation: {_clip(h.observation, cfg.max_observation_chars)}\n"
                     f"Action: {h.action}{mark}")
    lines.append(f"Step {view.step + 1}. Observation: {_clip(view.observation, cfg.max_observation_chars)}")
    if view.experience:
        lines.append(f"Experience:\n{view.experience}")
    lines += _admissible(view, cfg)
    lines.append("Your next action?")
    return [{"role": "system", "content": system_message(view.family, cfg)},
            {"role": "user", "content": "\n".join(lines)}]


def _admissible(view: StepView, cfg: PromptConfig) -> list[str]:
    """The admissible-actions line ([] when hidden or none)."""
    if not cfg.show_admissible or not view.admissible:
        return []
    listed = [a for a in view.admissible if a.split(" ", 1)[0] not in cfg.hide_admissible][: cfg.max_admissible]
    if not listed:
        return []
    if cfg.admissible_layout == "lines":
        return ["Admissible actions:\n" + "\n".join(listed)]
    return ["Admissible actions: " + ", ".join(listed)]


def _notes(view: StepView, cfg: PromptConfig, shown: int) -> list[str]:
    """`cfg.keep` notes: what each kept action revealed (the observation after it), for actions whose
    result is no longer in the shown window (item i's result is item i+1's observation)."""
    if not cfg.keep:
        return []
    out = []
    for i, h in enumerate(view.history[: max(0, len(view.history) - shown - 1)]):
        if h.valid and h.action.split(" ", 1)[0] in cfg.keep:
            out.append(f"Note, after {h.action}: {_clip(view.history[i + 1].observation, cfg.max_observation_chars)}")
    return out


def chat_turn(view: StepView, cfg: PromptConfig, first: bool) -> str:
    """The user turn of a chat-mode step: task and strategy first, then the observation (and the
    admissible actions) every turn; after an invalid action that left the observation as it was, only
    that it was invalid (the observation is in the conversation already)."""
    lines = []
    if first:
        lines.append(f"Task: {view.task.strip()}")
        if view.strategy:
            lines.append(f"Strategy: {view.strategy.strip()}")
    last = view.history[-1] if view.history else None
    if last is not None and not last.valid:
        lines.append("Your last action was not valid.")
    if last is None or last.valid or last.observation != view.observation:
        lines.append(f"Observation: {_clip(view.observation, cfg.max_observation_chars)}")
    if view.experience:
        lines.append(f"Experience:\n{view.experience}")
    lines += _admissible(view, cfg)
    return "\n".join(lines)


def judge_messages(family: str, task: str, strategy: str | None, steps: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """`steps` are (action, observation) pairs, shown numbered from 1."""
    numbered = "\n".join(f"{i + 1}. {a} -> {_clip(o, 300)}" for i, (a, o) in enumerate(steps))
    plan = f"Strategy: {strategy.strip()}\n" if strategy else ""
    return [
        {"role": "system", "content": f"{template(family).role} You are now a strict critic of an episode."},
        {"role": "user", "content": f"Task: {task.strip()}\n{plan}Steps:\n{numbered}\n"
                                    "List the numbers of the steps that neither follow the strategy nor advance "
                                    "the task, inside <answer>...</answer> (write <answer>none</answer> if there "
                                    "are none)."},
    ]


def render(tokenizer: Any, messages: list[dict[str, str]], prime: str = "") -> list[int]:
    """Prompt token ids: the chat template applied with a generation prompt (then `prime`, the start
    of the reply), tokenized once."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text + prime, add_special_tokens=False)["input_ids"])


def step_prime(cfg: PromptConfig) -> str:
    """The forced start of a step reply ('' when priming is off)."""
    if not cfg.prime:
        return ""
    return "<think>" if cfg.think else "<action>"
