"""`stratarl train CONFIG`: warm-up SFT (optional) -> evaluation -> RL -> evaluation -> report.

Every step writes into `runs/<name>/`: `config.yaml`, `checkpoints/sft`, `checkpoints/<iteration>`,
`metrics.jsonl`, `trajectories/`, `eval_before.json` / `eval_after.json`, `report.md` and plots.
`--resume` continues from the last complete checkpoint and gives the same weights and metrics as an
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import orjson

from ..agent.format import format_of
from ..config import to_dict
from ..envs.registry import check_task_counts
from ..errors import UserError
from ..models import load_model, load_tokenizer, resolve_model
from ..models.cache import build_once, cache_root
from . import checkpoint as ckpt
from . import distributed
from .config import TrainConfig
from .logging import progress as make_progress
from .rl import IterationLog, TrainingStopped, evaluate_policy, train_loop
from .sft import load_rows, train_rows
from .state import build_state, close


def warmup_sft(cfg: TrainConfig, console: Any = None) -> Path:
    """Supervised warm-up from the configured model; the result is checkpoint `sft` of the run, taken
    from the warm-up cache when an identical warm-up is there (`warmup.cache`)."""
    run_dir = Path(cfg.out_dir) / cfg.name
    existing = run_dir / "checkpoints" / "sft"
    if (existing / "config.json").is_file():
        return existing
    if not cfg.warmup.cache:
        return _train_warmup(cfg, console)
    key = warmup_key(cfg)
    cached = cache_root() / "warmups" / key
    if (cached / WARMUP_MARKER).is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(cached / "sft.json", run_dir / "sft.json")
        if console:
            console.print(f"[bold]warm-up SFT[/]: reused from the cache ({cached})")
        return ckpt.copy_checkpoint(cached / "sft", run_dir, "sft")
    out = _train_warmup(cfg, console)
    build_once(key, lambda tmp: _copy_warmup(run_dir, out, tmp), kind="warmups", marker=WARMUP_MARKER)
    return out


WARMUP_MARKER = "sft/config.json"
"""A complete warm-up cache entry holds its checkpoint (`sft/`) and its stats (`sft.json`)."""


def _copy_warmup(run_dir: Path, checkpoint: Path, into: Path) -> None:
    shutil.copy(run_dir / "sft.json", into / "sft.json")
    shutil.copytree(checkpoint, into / "sft")


def warmup_key(cfg: TrainConfig) -> str:
    """What determines the warm-up's weights: the model (its resolved directory), the SFT settings, the
    prompt and step budget of the rows, the seed, the torch version, and the code that builds and trains
    the rows (a change to it is a new key, never a stale warm-up)."""
    import hashlib

    import torch

    root = Path(__file__).resolve().parents[1]
    code = hashlib.sha256(b"".join(p.read_bytes() for d in ("train", "agent", "rollout", "models")
                                   for p in sorted((root / d).glob("*.py")))).hexdigest()
    what = {"model": str(resolve_model(cfg.model)), "sft": to_dict(cfg.warmup.sft), "seed": cfg.seed,
            "prompt": to_dict(cfg.rollout.runner.prompt), "context": cfg.rollout.runner.context,
            "torch": torch.__version__, "code": code}
    return hashlib.sha256(orjson.dumps(what, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _train_warmup(cfg: TrainConfig, console: Any = None) -> Path:
    run_dir = Path(cfg.out_dir) / cfg.name
    sft = cfg.warmup.sft
    path = resolve_model(cfg.model)
    tokenizer, model = load_tokenizer(path), load_model(path)
    rcfg = dataclasses.replace(cfg.rollout.runner, max_steps=sft.max_steps, prompt=cfg.rollout.runner.prompt)
    rcfg = dataclasses.replace(rcfg, context=min(rcfg.context, int(model.config.max_position_embeddings)))
    rows, trajs = load_rows(sft, tokenizer, rcfg)
    with make_progress(console, transient=True) as prog:
        stats = train_rows(model, rows, sft, tokenizer.pad_token_id, prog)
    won = sum(t.won for t in trajs)
    (run_dir).mkdir(parents=True, exist_ok=True)
    (run_dir / "sft.json").write_bytes(orjson.dumps({**stats.__dict__, "gold_episodes": len(trajs), "gold_won": won},
                                                     option=orjson.OPT_INDENT_2))
    if console:
        console.print(f"[bold]warm-up SFT[/]: {stats.rows} rows from {len(trajs)} {sft.data.actions} episodes, {stats.steps} steps, "
                      f"loss {stats.first_loss:.3f} -> {stats.last_loss:.3f} ({stats.seconds:.0f}s)")
    return ckpt.save_checkpoint(run_dir, "sft", model, tokenizer, {"sft": stats.__dict__}, agent=format_of(cfg))


def _evaluate(state: Any, name: str, episodes: int, console: Any) -> dict:
    """`eval_<name>.json` (at `eval.temperature`), and `eval_<name>_sampled.json` (T = 1) when `eval.sampled`."""
    rep = _evaluate_one(state, name, episodes, console, None)
    if state.cfg.eval.sampled:
        _evaluate_one(state, f"{name}_sampled", episodes, console, 1.0)
    return rep


def _evaluate_one(state: Any, name: str, episodes: int, console: Any, temperature: float | None) -> dict:
    log, t0 = IterationLog(), time.perf_counter()
    with console.status(f"evaluating ({name}) on {episodes} held-out episodes ...") if console else nullcontext():
        rep = evaluate_policy(state, episodes, log, prefix=name, temperature=temperature)
    rep["seconds"] = round(time.perf_counter() - t0, 2)
    rep["temperature"] = state.cfg.eval.temperature if temperature is None else temperature
    if state.dp is not None and not state.dp.is_main:
        return rep
    (state.run_dir / f"eval_{name}.json").write_bytes(orjson.dumps(rep, option=orjson.OPT_INDENT_2))
    if console:
        console.print(f"[bold]{name}[/]: success {100 * rep['success_rate']:.1f}% "
                      f"[{100 * rep['success_ci95'][0]:.1f}, {100 * rep['success_ci95'][1]:.1f}] over {rep['episodes']} episodes")
    return rep


def _fresh_start(cfg: TrainConfig, run_dir: Path, overwrite: bool, console: Any, dp: Any) -> Path:
    """Clear the run directory and run the warm-up SFT (rank 0; the other ranks wait, then read it)."""
    if (run_dir / "checkpoints").exists() and not overwrite:
        raise UserError(f"{run_dir} already holds a run: use --resume to continue it, or --overwrite / another name")
    distributed.barrier(dp)  # every rank has looked before rank 0 clears
    if dp is None or dp.is_main:
        shutil.rmtree(run_dir, ignore_errors=True)
        start = warmup_sft(cfg, console) if cfg.warmup.enabled else resolve_model(cfg.model)
    distributed.barrier(dp)
    if dp is not None and not dp.is_main:
        start = warmup_sft(cfg) if cfg.warmup.enabled else resolve_model(cfg.model)  # rank 0's checkpoint
    return start


def check_fsdp2(cfg: TrainConfig) -> None:
    """What `stratarl train` does not run under FSDP2 yet, refused up front with the way out."""
    if cfg.lora.enabled:
        raise UserError("lora.enabled with distributed.strategy=fsdp2 is not supported: LoRA models fit one device, "
                        "use distributed.strategy=ddp")
    uses_policy = cfg.rollout.group.strategy and cfg.rollout.group.candidates > 1
    if uses_policy and cfg.strategy.diversity.embedder == "policy":
        raise UserError("strategy.diversity.embedder=policy reads the policy's unsharded layers, which "
                        "distributed.strategy=fsdp2 shards: use embedder minilm or tfidf, or strategy ddp")


def check_splits(cfg: TrainConfig) -> None:
    """Every split the run draws tasks from holds as many as it asks for (a `SplitSizeError` otherwise)."""
    e, d = cfg.eval, cfg.warmup.sft.data
    warmup = cfg.warmup.enabled and d.source == "gold"
    check_task_counts((cfg.env.id, cfg.env.train_split, cfg.env.train_tasks or (1 if cfg.env.train_start else 0),
                       cfg.env.train_start),
                      (d.env, d.split, d.tasks if warmup else 0, d.start),
                      (cfg.env.id, e.split, e.final_episodes, 0),
                      (cfg.env.id, e.every_split, e.episodes if e.every else 0, 0))


def run_training(cfg: TrainConfig, resume: bool = False, console: Any = None, overwrite: bool = False) -> Path:
    """The whole run; under `torchrun` every rank runs it, and rank 0 alone writes (train/distributed.py)."""
    run_dir = Path(cfg.out_dir) / cfg.name
    check_splits(cfg)
    d = cfg.distributed
    if d.strategy == "fsdp2" and distributed.launched():
        check_fsdp2(cfg)
    dp = distributed.init(d.strategy, d.backend, d.timeout_s)
    console = console if dp is None or dp.is_main else None
    if resume:
        last = ckpt.latest_checkpoint(run_dir)
        if last is None or last.name in ("sft", "last_good"):
            raise UserError(f"nothing to resume in {run_dir}: no RL checkpoint under {run_dir / 'checkpoints'}")
        state = build_state(cfg, last, ckpt.load_state(last), dp=dp)
    else:
        state = build_state(cfg, _fresh_start(cfg, run_dir, overwrite, console, dp), dp=dp)
        if cfg.eval.final_episodes:
            _evaluate(state, "before", cfg.eval.final_episodes, console)
    try:
        with make_progress(console) as prog:
            train_loop(state, prog if cfg.logging.progress else None)
        if cfg.eval.final_episodes:
            _evaluate(state, "after", cfg.eval.final_episodes, console)
    except TrainingStopped as e:
        raise UserError(str(e)) from None
    finally:
        close(state)
        distributed.close(dp)
    if dp is None or dp.is_main:
        _report(run_dir, console)
    return run_dir


def _report(run_dir: Path, console: Any) -> None:
    try:
        from ..report import write_report
    except ImportError:  # pragma: no cover - report module missing
        return
    path = write_report(run_dir)
    if console:
        console.print(f"report: {path}  ·  browse episodes: stratarl view {run_dir}")
