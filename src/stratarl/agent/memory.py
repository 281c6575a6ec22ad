"""Per-episode agent state: the step view (task, strategy, history, observation) and the context
budget that drops the oldest history first when a prompt would not fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .prompts import (
    HistoryItem,
    PromptConfig,
    StepView,
    chat_turn,
    render,
    step_messages,
    step_prime,
    system_message,
)


@dataclass
class Budget:
    """The model's context and what a step may use of it."""

    context: int
    """Maximum tokens the model attends over."""
    max_new_tokens: int
    """Tokens reserved for the response."""

    @property
    def prompt_limit(self) -> int:
        return self.context - self.max_new_tokens


def fit_step_prompt(tokenizer: Any, view: StepView, cfg: PromptConfig, budget: Budget) -> list[int] | None:
    """Prompt ids for the step, dropping the oldest shown history until it fits (window mode); None if
    it cannot fit (the episode then ends with `context_overflow`)."""
    if cfg.mode == "chat":
        ids = chat_prompt(tokenizer, view, cfg)
        return ids if len(ids) <= budget.prompt_limit else None
    shown = len(view.history) if cfg.history < 0 else min(cfg.history, len(view.history))
    for drop in range(shown + 1):
        ids = render(tokenizer, step_messages(view, cfg, drop_history=drop), step_prime(cfg))
        if len(ids) <= budget.prompt_limit:
            return ids
    return None


def chat_prompt(tokenizer: Any, view: StepView, cfg: PromptConfig) -> list[int]:
    """Chat mode: the previous prompt + the sampled response + the new user turn, as ids. The new
    part is the difference between the template rendered with and without the new messages, so the
    prompt stays the exact ids the model already saw and sampled (no re-tokenization); a template
    whose rendering of the history changes falls back to rendering the whole conversation."""
    prime = step_prime(cfg)
    if view.last_prompt is None or view.last_response is None:
        view.messages = [{"role": "system", "content": system_message(view.family, cfg)},
                         {"role": "user", "content": chat_turn(view, cfg, first=True)}]
        return render(tokenizer, view.messages, prime)
    eos = tokenizer.eos_token_id
    reply = view.last_response[:-1] if view.last_response and view.last_response[-1] == eos else view.last_response
    said = prime + tokenizer.decode(reply, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    view.messages = view.messages + [{"role": "assistant", "content": said},
                                     {"role": "user", "content": chat_turn(view, cfg, first=False)}]
    full = tokenizer.apply_chat_template(view.messages, add_generation_prompt=True, tokenize=False) + prime
    seen = view.last_prompt + view.last_response
    prefix = tokenizer.decode(seen, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if not full.startswith(prefix):
        return render(tokenizer, view.messages, prime)
    return seen + list(tokenizer(full[len(prefix):], add_special_tokens=False)["input_ids"])


def remember(view: StepView, action: str, valid: bool, next_observation: str, admissible: list[str] | None,
             prompt: list[int] | None = None, response: list[int] | None = None) -> None:
    """Advance the view by one step (chat mode also keeps the step's prompt and response ids)."""
    view.last_prompt, view.last_response = prompt, response
    view.history.append(HistoryItem(observation=view.observation, action=action, valid=valid))
    view.observation = next_observation
    view.step += 1
    if admissible is not None:
        view.admissible = admissible
