"""`stratarl bench train`: the trainer against a plain baseline on the rows of real RL iterations, in one
process, with the machine's matmul roofline measured in the same run.

- **iterations**: `iterations` whole RL iterations of the config (warm-up off: the untrained model, whose
  episodes run to the horizon, the longest rows the config makes); `iteration_s` is their median.
- **update**: one more rollout gives the rows. The trainer runs its `logprobs` and `update` stages on them
  as the driver does (chat packing, prompt sharing, the reused behaviour pass, the head on trained
  positions only). The baseline is the straightforward computation on the same steps: one padded row per
  step in micro-batches of the same token budget, the transformers forward with full logits, log-softmax
  over the whole vocabulary, a separate no-grad behaviour pass, the PPO-clip token-mean loss, backward,
  an AdamW step. Both start from the same weights.
- **sft**: warm-up SFT steps on the config's warm-up data, `train.sft` against the same plain computation.

MFU counts 6·N FLOPs per token of the plain per-step rows (forward + backward; 2·N for a no-grad pass),
N the parameter count, over the bf16 matmul roofline: the work an iteration asks for, so a trainer that
skips work scores higher, as it should.
"""

from __future__ import annotations

import copy
import dataclasses
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..allocator import relieve_pressure
from ..config import load_config
from ..train.batching import _pad
from ..types import Sample
from .engine import machine, matmul_gflops

MODELS = {"tiny": "configs/quickstart.yaml", "smollm2-135m": "configs/strata_smollm2.yaml"}
"""Model -> the config whose settings the benchmark uses."""


@dataclass
class TrainBenchConfig:
    """`stratarl bench train`."""

    model: str = "tiny"
    """`tiny` (configs/quickstart.yaml) or `smollm2-135m` (configs/strata_smollm2.yaml)."""
    mode: str = ""
    """Prompt mode `chat` or `window` ('' keeps the config's)."""
    iterations: int = 3
    """Whole RL iterations timed for `iteration_s`."""
    sft_steps: int = 8
    """Warm-up SFT steps timed for each side."""
    out_dir: str = "runs/bench_train"
    """Where the run directory goes."""
    overrides: list[str] = field(default_factory=list)
    """Extra dotted overrides of the config."""
    scaling: bool = False
    """Also time iterations at 16 / 32 / 64 episodes and horizons 7 / 14 / 28 (fitted exponents)."""
    rss_iterations: int = 0
    """Also run this many iterations and record the resident memory after each (0 skips)."""


def train_config(cfg: TrainBenchConfig) -> Any:
    from ..errors import UnknownNameError
    from ..train.config import TrainConfig

    if cfg.model not in MODELS:
        raise UnknownNameError("model", cfg.model, list(MODELS))
    mode = [f"rollout.runner.prompt.mode={cfg.mode}", f"warmup.sft.prompt.mode={cfg.mode}"] if cfg.mode else []
    quiet = ["warmup.enabled=false", "eval.every=0", "eval.final_episodes=0", "logging.tensorboard=false",
             "logging.trajectories=false", "logging.progress=false", "checkpoint.every=0", "name=bench_train",
             f"out_dir={cfg.out_dir}"]
    return load_config(TrainConfig, MODELS[cfg.model], [*mode, *cfg.overrides, *quiet])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident memory now (MB)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fitted_exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x: time ∝ x^slope."""
    import math

    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def _iterations(cfg: TrainBenchConfig, extra: list[str], n: int) -> Iterator[dict[str, float]]:
    """The metrics of `n` RL iterations of a fresh state of the config (with `extra` overrides)."""
    from ..train import rl
    from ..train.state import build_state, close

    state = build_state(train_config(dataclasses.replace(cfg, overrides=[*cfg.overrides, *extra])))
    try:
        for _ in range(n):
            yield rl.run_iteration(state)
            state.iteration += 1
    finally:
        close(state)


def _median_iteration(cfg: TrainBenchConfig, extra: list[str], iterations: int) -> float:
    return statistics.median(m["time/iteration"] for m in _iterations(cfg, extra, iterations))


def time_scaling(cfg: TrainBenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """Median iteration time against episodes per iteration (tasks × group size) and against the horizon."""
    tcfg = train_config(cfg)
    g = tcfg.rollout.group
    per_task = (g.n_strategies if g.strategy else 1) * g.n_rollouts
    out: dict[str, Any] = {}
    for name, values, key in (("episodes", (16, 32, 64), "env.tasks_per_iteration"),
                              ("horizon", (7, 14, 28), "rollout.horizon.max_steps")):
        times = []
        for v in values:
            setting = max(1, v // per_task) if name == "episodes" else v
            times.append(_median_iteration(cfg, [f"{key}={setting}"], max(1, cfg.iterations)))
            log(f"scaling: {name} {v}: {times[-1]:.1f} s per iteration")
        out[name] = {"values": list(values), "iteration_s": times, "exponent": fitted_exponent(list(values), times)}
    return out


def time_rss(cfg: TrainBenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """Resident memory after each of `rss_iterations` iterations: flat after the first few, or a leak."""
    mb = []
    for i, _ in enumerate(_iterations(cfg, [], cfg.rss_iterations)):
        mb.append(round(rss_mb(), 1))
        log(f"rss: iteration {i + 1}/{cfg.rss_iterations}: {mb[-1]:.0f} MB")
    settled = mb[min(4, len(mb) - 1):]
    return {"rss_mb": mb, "growth_after_5_mb": settled[-1] - settled[0] if settled else 0.0}


# -- the plain baseline ----------------------------------------------------------------------------


def plain_logprobs(model: torch.nn.Module, rows: list[Sample], pad_id: int, bf16: bool) -> torch.Tensor:
    """[B, T] logprob of each token given the ones before (0 at t = 0): full logits, full log-softmax."""
    width = max(r.num_tokens for r in rows)
    ids = _pad([r.input_ids for r in rows], width, pad_id, torch.long)
    attn = _pad([[1] * r.num_tokens for r in rows], width, 0, torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
    logp = F.log_softmax(logits.float(), dim=-1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    return F.pad(logp, (1, 0))


def _plain_chunks(rows: list[Sample], budget: int) -> list[list[Sample]]:
    from ..train.batching import micro_batches

    return list(micro_batches(sorted(rows, key=lambda r: r.num_tokens), budget))


def plain_update(model: torch.nn.Module, opt: torch.optim.Optimizer, rows: list[Sample], pad_id: int, bf16: bool,
                 budget: int, clip: float = 0.2) -> None:
    """Behaviour pass, then PPO-clip token-mean over all rows, one AdamW step."""
    chunks = _plain_chunks(rows, budget)
    old = []
    with torch.no_grad():
        for c in chunks:
            old.append(plain_logprobs(model, c, pad_id, bf16))
            relieve_pressure()  # as the trainer does after each micro-batch: ~2 GB of 49k-vocabulary logits freed
    total = sum(sum(r.loss_mask) for r in rows)
    opt.zero_grad(set_to_none=True)
    for c, old_BT in zip(chunks, old, strict=True):
        logp_BT = plain_logprobs(model, c, pad_id, bf16)
        mask_BT = _pad([r.loss_mask for r in c], logp_BT.shape[1], 0.0, torch.float32)
        adv_BT = _pad([[r.advantage] * r.num_tokens for r in c], logp_BT.shape[1], 0.0, torch.float32)
        ratio = torch.exp(logp_BT - old_BT)
        loss_BT = -torch.min(ratio * adv_BT, ratio.clamp(1 - clip, 1 + clip) * adv_BT)
        ((loss_BT * mask_BT).sum() / total).backward()
        relieve_pressure()
    opt.step()


def plain_sft_step(model: torch.nn.Module, opt: torch.optim.Optimizer, rows: list[Sample], pad_id: int, bf16: bool,
                   budget: int) -> None:
    total = sum(sum(r.loss_mask) for r in rows)
    opt.zero_grad(set_to_none=True)
    for c in _plain_chunks(rows, budget):
        logp_BT = plain_logprobs(model, c, pad_id, bf16)
        (-(logp_BT * _pad([r.loss_mask for r in c], logp_BT.shape[1], 0.0, torch.float32)).sum() / total).backward()
        relieve_pressure()
    opt.step()


# -- the measurement -------------------------------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _free_for_baseline(state: Any) -> None:
    """Drop what only the trainer and the engine hold (the optimizer's moments, the engine's K/V buffer and
    prefix cache) before the baseline allocates its own: SmolLM2's trainer + baseline did not fit 24 GB."""
    state.optimizer.state.clear()
    state.model.zero_grad(set_to_none=True)
    if hasattr(state.engine, "clear_cache"):
        state.engine.clear_cache()
    relieve_pressure(0.0)


def time_update(state: Any) -> dict[str, Any]:
    """One rollout's rows through the trainer's stages and through the baseline, from the same weights."""
    from ..train import rl
    from ..train.samples import build_samples

    log = rl.IterationLog()
    groups = rl.rollout(state, rl.sample_tasks(state), log)
    rl.judge(state, groups, log)
    adv = rl.advantages(state, groups, log)
    rows = rl.samples(state, groups, adv, log)
    plain = build_samples(groups, adv, state.cfg.algo.samples)  # one row per step, nothing packed or shared
    weights = copy.deepcopy(state.model.state_dict())
    trainer = {"logprobs": _timed(lambda: rl.old_and_ref_logprobs(state, rows, log)),
               "update": _timed(lambda: rl.update(state, rows, log))}
    state.model.load_state_dict(weights)
    _free_for_baseline(state)
    opt = torch.optim.AdamW(state.model.parameters(), lr=state.cfg.optim.lr)
    base = _timed(lambda: plain_update(state.model, opt, plain, state.pad_id, state.bf16,
                                       state.cfg.optim.micro_batch_tokens))
    state.model.load_state_dict(weights)
    tokens = sum(r.num_tokens for r in plain)
    return {"trainer_s": trainer, "baseline_s": base, "steps": len(plain), "trainer_rows": len(rows),
            "tokens_all": tokens, "tokens_trained": sum(sum(r.loss_mask) for r in plain),
            "trainer_tokens_through_model": sum(r.num_tokens for r in rows)}


def time_sft(state: Any, steps: int) -> dict[str, Any]:
    """`steps` warm-up SFT steps of the config's batch size, trainer vs baseline, same rows, same weights."""
    from ..train.sft import _sft_step, load_rows

    sft = dataclasses.replace(state.cfg.warmup.sft,
                              data=dataclasses.replace(state.cfg.warmup.sft.data, tasks=min(64, state.cfg.warmup.sft.data.tasks)))
    rcfg = dataclasses.replace(state.cfg.rollout.runner, max_steps=sft.max_steps, context=state.context)
    rows, _ = load_rows(sft, state.tokenizer, rcfg)
    batches = [rows[(k * sft.batch_rows) % len(rows):][: sft.batch_rows] for k in range(steps)]
    batches = [b for b in batches if b]
    weights = copy.deepcopy(state.model.state_dict())
    opt = torch.optim.AdamW(state.model.parameters(), lr=sft.lr)
    state.model.train()
    trainer = _timed(lambda: [_sft_step(state.model, opt, b, sft, state.pad_id, state.bf16) for b in batches])
    state.model.load_state_dict(weights)
    opt = torch.optim.AdamW(state.model.parameters(), lr=sft.lr)
    base = _timed(lambda: [plain_sft_step(state.model, opt, b, state.pad_id, state.bf16, sft.micro_batch_tokens)
                           for b in batches])
    state.model.load_state_dict(weights)
    state.model.eval()
    tokens = sum(r.num_tokens for b in batches for r in b)
    return {"trainer_s": trainer, "baseline_s": base, "steps": len(batches), "tokens_all": tokens,
            "trainer_tokens_per_s": tokens / trainer, "baseline_tokens_per_s": tokens / base}


def run_train_bench(cfg: TrainBenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    from ..train import rl
    from ..train.state import build_state, close

    roof = {"bf16_gflops": matmul_gflops(torch.bfloat16), "fp32_gflops": matmul_gflops(torch.float32)}
    log(f"matmul roofline: bf16 {roof['bf16_gflops']:.0f} GFLOP/s, fp32 {roof['fp32_gflops']:.0f} GFLOP/s")
    tcfg = train_config(cfg)
    state = build_state(tcfg)
    try:
        iters = []
        for i in range(cfg.iterations):
            iters.append(rl.run_iteration(state))
            state.iteration += 1
            log(f"iteration {i + 1}/{cfg.iterations}: {iters[-1]['time/iteration']:.1f} s")
        upd = time_update(state)
        log(f"update: trainer {sum(upd['trainer_s'].values()):.1f} s, baseline {upd['baseline_s']:.1f} s")
        sft = time_sft(state, cfg.sft_steps)
        log(f"sft: trainer {sft['trainer_s']:.1f} s, baseline {sft['baseline_s']:.1f} s")
        n_params = sum(p.numel() for p in state.model.parameters())
    finally:
        close(state)
    res = summarize(cfg, tcfg, roof, iters, upd, sft, n_params)
    if cfg.scaling:
        res["scaling"] = time_scaling(cfg, log)
    if cfg.rss_iterations:
        res["rss"] = time_rss(cfg, log)
    return res


def summarize(cfg: TrainBenchConfig, tcfg: Any, roof: dict[str, float], iters: list[dict], upd: dict, sft: dict,
              n_params: int) -> dict[str, Any]:
    stages = sorted({k for m in iters for k in m if k.startswith("time/")})
    trainer_s = sum(upd["trainer_s"].values())
    flops = 8.0 * n_params * upd["tokens_all"]  # behaviour pass (2N) + forward/backward (6N) per token
    return {
        "model": cfg.model, "mode": tcfg.rollout.runner.prompt.mode, "env": tcfg.env.id, "machine": machine(),
        "roofline": roof, "parameters": n_params, "peak_rss_mb": round(peak_rss_mb(), 1),
        "iteration_s": statistics.median(m["time/iteration"] for m in iters),
        "stages_s": {k[5:]: statistics.median(m.get(k, 0.0) for m in iters) for k in stages},
        "update": upd, "update_vs_baseline": upd["baseline_s"] / trainer_s,
        "update_tokens_per_s": {"trainer_all": upd["tokens_all"] / trainer_s,
                                "trainer_trained": upd["tokens_trained"] / trainer_s,
                                "baseline_all": upd["tokens_all"] / upd["baseline_s"],
                                "baseline_trained": upd["tokens_trained"] / upd["baseline_s"]},
        "update_mfu": flops / trainer_s / (roof["bf16_gflops"] * 1e9),
        "baseline_mfu": flops / upd["baseline_s"] / (roof["bf16_gflops"] * 1e9),
        "sft": sft, "sft_vs_baseline": sft["baseline_s"] / sft["trainer_s"],
    }


def print_results(res: dict[str, Any], as_json: bool, console: Any) -> None:
    import orjson

    if as_json:
        print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())
        return
    from rich.table import Table

    u, s = res["update"], res["sft"]
    table = Table(title=f"bench train: {res['model']} ({res['mode']}) on {res['env']}, "
                        f"bf16 roofline {res['roofline']['bf16_gflops']:.0f} GFLOP/s")
    for col in ("what", "trainer", "baseline", "trainer / baseline"):
        table.add_column(col)
    table.add_row("RL iteration (median)", f"{res['iteration_s']:.1f} s", "", "")
    table.add_row("logprobs + update", f"{sum(u['trainer_s'].values()):.2f} s", f"{u['baseline_s']:.2f} s",
                  f"{res['update_vs_baseline']:.2f}x")
    t = res["update_tokens_per_s"]
    table.add_row("update tokens/s (all)", f"{t['trainer_all']:.0f}", f"{t['baseline_all']:.0f}", "")
    table.add_row("update MFU", f"{100 * res['update_mfu']:.1f}%", f"{100 * res['baseline_mfu']:.1f}%", "")
    table.add_row(f"SFT, {s['steps']} steps", f"{s['trainer_tokens_per_s']:.0f} tok/s", f"{s['baseline_tokens_per_s']:.0f} tok/s",
                  f"{res['sft_vs_baseline']:.2f}x")
    console.print(table)
    for name, sc in res.get("scaling", {}).items():
        console.print(f"{name}: " + ", ".join(f"{v} -> {t:.1f} s" for v, t in zip(sc["values"], sc["iteration_s"], strict=True))
                      + f" · time ∝ {name}^{sc['exponent']:.2f}")
    if "rss" in res:
        console.print(f"RSS over {len(res['rss']['rss_mb'])} iterations: {res['rss']['rss_mb'][0]:.0f} -> "
                      f"{res['rss']['rss_mb'][-1]:.0f} MB (growth after the 5th: {res['rss']['growth_after_5_mb']:+.0f} MB)")
    console.print("stages (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in res["stages_s"].items() if v >= 0.01)
                  + f" · peak RSS {res['peak_rss_mb']:.0f} MB")
