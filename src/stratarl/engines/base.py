"""The generation-engine interface: token ids in, token ids and logprobs out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class SamplingParams:
    """How to sample one batch of completions."""

    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    max_tokens: int = 64
    """Most new tokens per completion."""
    stop: list[str] = field(default_factory=list)
    """Stop strings; the completion ends after the token that completes one (the string is kept)."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Token ids that end a completion (kept in the output); the model's EOS is always one."""
    n: int = 1
    """Completions per prompt."""
    min_tokens: int = 0
    """Stop conditions are ignored until this many tokens were generated (benchmarks)."""
    seed: int | None = None
    """Base seed; request i, sample j uses its own generator seeded from (seed, i, j)."""


@dataclass
class Completion:
    """One sampled completion."""

    token_ids: list[int]
    """The sampled token ids, exactly."""
    logprobs: list[float]
    """log p(token) under the model (temperature 1, no top-p), one per token."""
    finish_reason: str
    """`stop` (EOS, stop token or stop string) or `length` (max_tokens)."""
    text: str = ""
    """The decoded tokens."""
    prompt_index: int = 0
    """Index of the prompt this completion answers (completions are returned prompt-major)."""


@runtime_checkable
class Engine(Protocol):
    """A generation backend. `generate` returns len(prompts) * params.n completions, prompt-major."""

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]: ...

    def update_weights(self, state_dict: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
