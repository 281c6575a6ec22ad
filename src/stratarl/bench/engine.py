"""`stratarl bench engine`: the agent workload through the `hf` engine, `transformers` `generate`
(same dtype) and vLLM when installed, in one process, against the machine's measured matmul roofline.

Workload (the shape of an RL rollout round): `requests` concurrent requests whose ~100-token prompts
share a `prefix`-token head (task + strategy), then `turns` turns of exactly `new_tokens` sampled
tokens each (temperature 1, stop conditions ignored), every next prompt being the previous prompt +
its response + `obs_tokens` observation tokens. Token ids come from real environment text.

Every backend first runs a warm-up turn on other prompts (oneDNN builds its kernels per shape on
first use; vLLM compiles), then its caches are cleared and the timed turns run. `tokens_per_s`
counts sampled tokens. `fraction_of_roofline` divides the FLOP/s of the work the engine actually
did (matmuls of every token it ran through the model, logits of sampled positions, attention over
the keys each token saw; cached prefixes are not recomputed, so not counted) by the best n x n
matmul FLOP/s measured on this machine in the engine's dtype.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

Progress = Callable[[str, int, int], None]
"""`progress(phase, done, total)`: called as a backend finishes its warm-up and each timed turn."""


@dataclass
class EngineBenchConfig:
    """The agent workload and the backends it runs through."""

    model: str = "smollm2-135m"
    """Model name or path."""
    requests: int = 64
    """Concurrent requests."""
    prefix: int = 60
    """Tokens all prompts share (task + strategy)."""
    unique: int = 40
    """Further prompt tokens, different per request."""
    new_tokens: int = 32
    """Tokens sampled per turn."""
    obs_tokens: int = 40
    """Observation tokens appended after each response."""
    turns: int = 4
    """Turns."""
    seed: int = 0
    """Seed of the workload and the sampling."""
    backends: list[str] = field(default_factory=lambda: ["hf", "generate", "vllm"])
    """Backends to run (`hf`, `generate`, `vllm`); vLLM is skipped where it is not installed."""
    vllm_eager: bool = False
    """Run vLLM without torch.compile (faster start, slower steps)."""
    threads: int = 0
    """torch threads for the in-process backends (0: torch's default, one per core)."""


@dataclass
class Workload:
    """First-turn prompts and each request's observation tokens per later turn."""

    prompts: list[list[int]]
    """The first turn's prompts."""
    observations: list[list[list[int]]]
    """`observations[r][t]`: tokens appended to request r's prompt after turn t."""


@dataclass
class BenchContext:
    """What every backend runner gets."""

    cfg: EngineBenchConfig
    """The workload settings."""
    path: Any
    """Checkpoint directory."""
    tokenizer: Any
    """The model's tokenizer."""
    dtype: torch.dtype
    """Compute dtype of every backend."""
    timed: Workload
    """The measured workload."""
    warmup: Workload
    """One turn on other prompts, run before timing."""
    progress: Progress
    """Progress callback."""


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` n x n x n matmul throughput (GFLOP/s)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _token_pool(tokenizer: Any, size: int) -> list[int]:
    from ..envs import make_env, make_tasks
    from ..envs.jvm import shutdown_all

    ids: list[int] = []
    for task in make_tasks("twx:cookingworld", "train", n=20):
        env = make_env(task)
        obs, _ = env.reset(task)
        ids += tokenizer(obs, add_special_tokens=False)["input_ids"]
        if len(ids) >= size:
            break
    shutdown_all()
    return (ids * (size // max(1, len(ids)) + 1))[:size]


def build_workload(pool: list[int], cfg: EngineBenchConfig, seed: int, turns: int) -> Workload:
    rng = random.Random(seed)
    head = rng.randrange(0, len(pool) - cfg.prefix)
    shared = pool[head:head + cfg.prefix]
    prompts, obs = [], []
    for _ in range(cfg.requests):
        at = rng.randrange(0, len(pool) - cfg.unique)
        prompts.append(shared + pool[at:at + cfg.unique])
        starts = [rng.randrange(0, len(pool) - cfg.obs_tokens) for _ in range(turns - 1)]
        obs.append([pool[s:s + cfg.obs_tokens] for s in starts])
    return Workload(prompts, obs)


def run_turns(generate: Callable[[list[list[int]], int], list[list[int]]], work: Workload, phase: str,
              progress: Progress) -> tuple[float, int]:
    """Drive `generate(prompts, turn) -> responses` over the turns; returns (seconds, tokens sampled)."""
    turns = len(work.observations[0]) + 1
    prompts, tokens = work.prompts, 0
    t0 = time.perf_counter()
    for turn in range(turns):
        responses = generate(prompts, turn)
        tokens += sum(len(r) for r in responses)
        progress(phase, turn + 1, turns)
        if turn + 1 < turns:
            prompts = [p + r + o[turn] for p, r, o in zip(prompts, responses, work.observations, strict=True)]
    return time.perf_counter() - t0, tokens


def _params(cfg: EngineBenchConfig, turn: int) -> Any:
    from ..engines.base import SamplingParams

    return SamplingParams(temperature=1.0, max_tokens=cfg.new_tokens, min_tokens=cfg.new_tokens, seed=cfg.seed + turn)


def _result(seconds: float, tokens: int, **extra: Any) -> dict[str, Any]:
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, **extra}


def run_hf_engine(ctx: BenchContext) -> dict[str, Any]:
    from ..engines.hf import HFEngine, HFEngineConfig

    name = "bfloat16" if ctx.dtype == torch.bfloat16 else "float32"
    eng = HFEngine(ctx.path, HFEngineConfig(dtype=name, max_batch=ctx.cfg.requests), ctx.tokenizer)

    def generate(prompts: list[list[int]], turn: int) -> list[list[int]]:
        return [c.token_ids for c in eng.generate(prompts, _params(ctx.cfg, turn))]

    run_turns(generate, ctx.warmup, "hf warm-up", ctx.progress)
    eng.clear_cache()
    eng.stats = dict.fromkeys(eng.stats, 0)
    seconds, tokens = run_turns(generate, ctx.timed, "hf", ctx.progress)
    stats = dict(eng.stats)
    eng.close()
    return _result(seconds, tokens, work=stats)


def run_hf_generate(ctx: BenchContext) -> dict[str, Any]:
    from ..models import load_model

    model = load_model(ctx.path, dtype=ctx.dtype)
    pad = ctx.tokenizer.pad_token_id if ctx.tokenizer.pad_token_id is not None else 0

    def generate(batch: list[list[int]], turn: int) -> list[list[int]]:
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(batch):  # left padding, as generate expects for decoder-only models
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        torch.manual_seed(ctx.cfg.seed + turn)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                                 top_k=0, max_new_tokens=ctx.cfg.new_tokens, min_new_tokens=ctx.cfg.new_tokens,
                                 pad_token_id=pad)
        return [row[width:].tolist() for row in out]

    run_turns(generate, ctx.warmup, "generate warm-up", ctx.progress)
    return _result(*run_turns(generate, ctx.timed, "generate", ctx.progress))


def run_vllm(ctx: BenchContext) -> dict[str, Any] | None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return None
    from ..engines.vllm import VLLMEngine, VLLMEngineConfig

    dtype = "bfloat16" if ctx.dtype == torch.bfloat16 else "float32"
    eng = VLLMEngine(ctx.path, VLLMEngineConfig(dtype=dtype, max_num_seqs=ctx.cfg.requests, max_model_len=2048,
                                                enforce_eager=ctx.cfg.vllm_eager, seed=ctx.cfg.seed), ctx.tokenizer)

    def generate(prompts: list[list[int]], turn: int) -> list[list[int]]:
        return [c.token_ids for c in eng.generate(prompts, _params(ctx.cfg, turn))]

    try:
        run_turns(generate, ctx.warmup, "vllm warm-up", ctx.progress)
        eng.clear_cache()
        return _result(*run_turns(generate, ctx.timed, "vllm", ctx.progress), eager=ctx.cfg.vllm_eager)
    finally:
        eng.close()


BACKENDS: dict[str, Callable[[BenchContext], dict[str, Any] | None]] = {
    "hf": run_hf_engine, "generate": run_hf_generate, "vllm": run_vllm}


def model_flops(config: Any, work: dict[str, int]) -> float:
    """FLOPs of the work the hf engine did: 2 per weight per token through the decoder blocks, the
    output projection for sampled positions, and q.k plus attention-weighted v over seen keys."""
    h, layers = config.hidden_size, config.num_hidden_layers
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    d = getattr(config, "head_dim", None) or h // heads
    per_layer = h * heads * d * 2 + 2 * h * kv * d + 3 * h * config.intermediate_size
    through = work["prefill_tokens"] + work["decode_tokens"]
    return (2.0 * layers * per_layer * through + 2.0 * h * config.vocab_size * work["logit_rows"]
            + 4.0 * layers * heads * d * work["attended_keys"])


def machine() -> dict[str, Any]:
    from ..allocator import active

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__, "allocator": active()}


def run_engine_bench(cfg: EngineBenchConfig, log: Callable[[str], None] = print,
                     progress: Progress = lambda phase, done, total: None) -> dict[str, Any]:
    from transformers import AutoConfig

    from ..engines.hf import resolve_dtype
    from ..errors import lookup
    from ..models import checkpoint_parameters, load_tokenizer, resolve_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path)
    dtype = resolve_dtype("auto")
    roof = {"bf16_gflops": matmul_gflops(torch.bfloat16), "fp32_gflops": matmul_gflops(torch.float32)}
    log(f"matmul roofline: bf16 {roof['bf16_gflops']:.0f} GFLOP/s, fp32 {roof['fp32_gflops']:.0f} GFLOP/s")
    pool = _token_pool(tokenizer, 4096)
    ctx = BenchContext(cfg, path, tokenizer, dtype, build_workload(pool, cfg, cfg.seed, cfg.turns),
                       build_workload(pool, cfg, cfg.seed + 1, 1), progress)
    backends = {}
    for name in cfg.backends:
        backends[name] = lookup("bench backend", name, BACKENDS)(ctx)
        b = backends[name]
        log(f"{name}: {b['tokens_per_s']:.0f} tokens/s" if b else f"{name}: not installed")
    return summarize(cfg, AutoConfig.from_pretrained(str(path)), checkpoint_parameters(path)[0], dtype, roof, backends)


def summarize(cfg: EngineBenchConfig, config: Any, n_params: int, dtype: torch.dtype, roof: dict[str, float],
              backends: dict[str, Any]) -> dict[str, Any]:
    hf, gen, vllm = backends.get("hf"), backends.get("generate"), backends.get("vllm")
    peak = roof["bf16_gflops" if dtype == torch.bfloat16 else "fp32_gflops"] * 1e9
    fraction = None
    if hf:
        hf["achieved_gflops"] = model_flops(config, hf["work"]) / hf["seconds"] / 1e9
        fraction = hf["achieved_gflops"] * 1e9 / peak
    return {
        "model": cfg.model, "parameters": n_params, "dtype": str(dtype).replace("torch.", ""),
        "workload": {k: v for k, v in asdict(cfg).items() if k not in ("model", "backends")},
        "machine": machine(), "roofline": roof, "backends": backends,
        "hf_vs_generate": _ratio(hf, gen), "hf_vs_vllm": _ratio(hf, vllm), "fraction_of_roofline": fraction,
    }


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    return a["tokens_per_s"] / b["tokens_per_s"] if a and b else None
