"""`stratarl bench engine`: the agent workload through the `hf` engine, `transformers` `generate`
(same dtype) and vLLM when installed, in one process, against the machine's measured matmul roofline.

Workload: `requests` concurrent requests whose prompts (~100 tokens) share a `prefix`-token head
(the task), then `turns` turns of `new_tokens` sampled tokens each (temperature 1, exactly
`new_tokens`: stop conditions are ignored), every next prompt being the previous prompt + its
response + `obs_tokens` observation tokens. Token ids come from real environment text.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch


@dataclass
class EngineBenchConfig:
    """The agent workload."""

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


def _token_pool(tokenizer, size: int) -> list[int]:
    from ..envs import make_env, make_tasks

    ids: list[int] = []
    for task in make_tasks("twx:cookingworld", "train", n=20):
        env = make_env(task)
        obs, _ = env.reset(task)
        ids += tokenizer(obs, add_special_tokens=False)["input_ids"]
        if len(ids) >= size:
            break
    return (ids * (size // max(1, len(ids)) + 1))[:size]


def build_workload(tokenizer, cfg: EngineBenchConfig) -> tuple[list[list[int]], list[list[list[int]]]]:
    """First-turn prompts and, per turn, each request's observation tokens."""
    rng = random.Random(cfg.seed)
    pool = _token_pool(tokenizer, 4096)
    shared = pool[: cfg.prefix]
    prompts, obs = [], []
    for _ in range(cfg.requests):
        at = rng.randrange(cfg.prefix, len(pool) - cfg.unique)
        prompts.append(shared + pool[at:at + cfg.unique])
        turns = []
        for _ in range(cfg.turns - 1):
            at = rng.randrange(0, len(pool) - cfg.obs_tokens)
            turns.append(pool[at:at + cfg.obs_tokens])
        obs.append(turns)
    return prompts, obs


def _run_turns(generate, prompts: list[list[int]], obs: list[list[list[int]]], cfg: EngineBenchConfig) -> tuple[float, int]:
    """Drive `generate(prompts, turn) -> responses` over all turns; returns (seconds, tokens sampled)."""
    t0 = time.perf_counter()
    tokens = 0
    for turn in range(cfg.turns):
        responses = generate(prompts, turn)
        tokens += sum(len(r) for r in responses)
        if turn + 1 < cfg.turns:
            prompts = [p + r + o[turn] for p, r, o in zip(prompts, responses, obs, strict=True)]
    return time.perf_counter() - t0, tokens


def run_hf_engine(path, tokenizer, prompts, obs, cfg: EngineBenchConfig, dtype: torch.dtype) -> dict:
    from ..engines.base import SamplingParams
    from ..engines.hf import HFEngine, HFEngineConfig

    eng = HFEngine(path, HFEngineConfig(dtype="bfloat16" if dtype == torch.bfloat16 else "float32",
                                        max_batch=cfg.requests), tokenizer)
    params = [SamplingParams(temperature=1.0, max_tokens=cfg.new_tokens, min_tokens=cfg.new_tokens,
                             seed=cfg.seed + t) for t in range(cfg.turns)]
    seconds, tokens = _run_turns(lambda p, t: [c.token_ids for c in eng.generate(p, params[t])], prompts, obs, cfg)
    processed = eng.stats["prefill_tokens"] + eng.stats["decode_tokens"]
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "processed_tokens": processed, "reused_prefix_tokens": eng.stats["reused_tokens"]}


def run_hf_generate(model, tokenizer, prompts, obs, cfg: EngineBenchConfig) -> dict:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def generate(batch: list[list[int]], turn: int) -> list[list[int]]:
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(batch):  # left padding, as generate expects for decoder-only models
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        torch.manual_seed(cfg.seed + turn)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                                 top_k=0, max_new_tokens=cfg.new_tokens, min_new_tokens=cfg.new_tokens,
                                 pad_token_id=pad)
        return [row[width:].tolist() for row in out]

    seconds, tokens = _run_turns(generate, prompts, obs, cfg)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def run_vllm(path, prompts, obs, cfg: EngineBenchConfig) -> dict | None:
    try:
        from ..engines.vllm import VLLMEngine
    except ImportError:
        return None
    from ..engines.base import SamplingParams

    try:
        eng = VLLMEngine(path)
    except ImportError:
        return None
    params = [SamplingParams(temperature=1.0, max_tokens=cfg.new_tokens, min_tokens=cfg.new_tokens,
                             seed=cfg.seed + t) for t in range(cfg.turns)]
    seconds, tokens = _run_turns(lambda p, t: [c.token_ids for c in eng.generate(p, params[t])], prompts, obs, cfg)
    eng.close()
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def run_engine_bench(cfg: EngineBenchConfig, log=print) -> dict:
    from ..engines.hf import resolve_dtype
    from ..models import load_model, load_tokenizer, resolve_model

    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path)
    dtype = resolve_dtype("auto")
    roof = {"bf16_gflops": matmul_gflops(torch.bfloat16), "fp32_gflops": matmul_gflops(torch.float32)}
    log(f"matmul roofline: bf16 {roof['bf16_gflops']:.0f} GFLOP/s, fp32 {roof['fp32_gflops']:.0f} GFLOP/s")
    prompts, obs = build_workload(tokenizer, cfg)
    model = load_model(path, dtype=dtype)
    n_params = sum(p.numel() for p in model.parameters())
    log("running the hf engine ...")
    hf = run_hf_engine(path, tokenizer, prompts, obs, cfg, dtype)
    log(f"hf engine: {hf['tokens_per_s']:.0f} tokens/s; running transformers generate ...")
    gen = run_hf_generate(model, tokenizer, prompts, obs, cfg)
    log(f"generate: {gen['tokens_per_s']:.0f} tokens/s; trying vLLM ...")
    vllm = run_vllm(path, prompts, obs, cfg)
    flops = 2 * n_params * hf["processed_tokens"]
    return {
        "model": cfg.model, "parameters": n_params, "dtype": str(dtype).replace("torch.", ""),
        "workload": {k: getattr(cfg, k) for k in ("requests", "prefix", "unique", "new_tokens", "obs_tokens", "turns")},
        "roofline": roof,
        "backends": {"hf": hf, "generate": gen, "vllm": vllm},
        "hf_vs_generate": hf["tokens_per_s"] / gen["tokens_per_s"],
        "hf_vs_vllm": hf["tokens_per_s"] / vllm["tokens_per_s"] if vllm else None,
        "fraction_of_roofline": flops / hf["seconds"] / (roof["bf16_gflops" if dtype == torch.bfloat16 else "fp32_gflops"] * 1e9),
    }
