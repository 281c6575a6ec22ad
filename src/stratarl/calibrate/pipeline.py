"""`stratarl calibrate CONFIG`: the STeCa / IPR pipeline (seed 003), stage by stage.

    warm-up SFT (or `warmup_checkpoint`) ─► expert trajectories ─► per iteration:
        scan_experts (greedy exploration + MC step values) ─► method data ─► reinforced training
    ─► held-out greedy evaluation ─► report

Methods (`METHODS`, config `method`):

    steca  calibrate (reflection) → D_c, D_s, D_e → weighted NLL (`steca_sft_loss`, S per mini-batch);
           with `preference.steca_beta` > 0, `steca_loss` on the IPR pairs instead
    ipr    step + trajectory preference pairs → DPO + NLL (β = 0.1) against the policy at the start of the
           iteration (frozen reference); `iterations` repeats explore → pairs → train
    sft    continue SFT on the expert trajectories (token-mean NLL), no exploration: the baseline

Every dataset is a JSONL file under `runs/<name>/` (`experts.jsonl`, then per iteration `it<k>/scans.jsonl`,
`calibrated.jsonl`, `steca.jsonl`, `pairs.jsonl`); an existing file is read instead of recomputed, so the
Monte-Carlo stage is not re-run. `report.json` holds the counts per dataset, training statistics and the
held-out success with its Wilson interval. Iteration 0 explores with seed `mc_seed` (not `seed`), so runs
that differ only in `seed` from one warm-up checkpoint can share its scans.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import orjson

from ..agent.format import FormatKeys, format_of
from ..algos.losses import PreferenceConfig, steca_sft_loss
from ..config import save_config
from ..errors import UserError, lookup
from ..rollout.runner import RunnerConfig
from ..stats import wilson
from ..types import Sample, Trajectory, from_dict, read_jsonl, to_json
from .datasets import WeightedTrajectory, count_samples, steca_datasets, steca_rows
from .deviation import DeviationConfig, first_deviation
from .preference import PreferencePair, cycled, preference_pairs, train_pairs
from .step_value import ExpertScan, StepValueConfig
from .trajectories import CalibratedTrajectory

R = TypeVar("R")
Method = Literal["steca", "ipr", "sft"]
SET_NAMES = {"calibrated": "D_c", "expert": "D_s", "explored": "D_e"}


@dataclass
class WarmupConfig:
    """The warm-up SFT on expert trajectories (skipped when `warmup_checkpoint` is given)."""

    tasks: int = 50
    """Expert episodes (train split, from task 0)."""
    epochs: int = 3
    """Passes over their rows."""
    lr: float = 3.0e-3
    """Peak learning rate."""
    batch_rows: int = 8
    """Rows per optimizer step."""


@dataclass
class OptimConfig:
    """The reinforced training stage (every method)."""

    steps: int = 20
    """Optimizer steps per iteration (the same for every method, so methods compare at equal updates)."""
    lr: float = 1.0e-4
    """Peak learning rate (AdamW)."""
    batch_rows: int = 8
    """Rows per optimizer step (`steca`, `sft`)."""
    batch_pairs: int = 4
    """Preference pairs per optimizer step (`ipr`, `steca` with β > 0)."""
    micro_batch_tokens: int = 16384
    """Padded tokens per micro-batch (gradient accumulation is exact)."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """bf16 autocast."""


@dataclass
class TeacherConfig:
    """Who writes the reflections of calibrated trajectories (`steca`)."""

    base_url: str = ""
    """An OpenAI-compatible server (e.g. `stratarl serve`); empty uses the offline template."""
    model: str = ""
    """The model name at that server."""
    max_tokens: int = 128
    """Longest reflection."""
    temperature: float = 0.0
    """Sampling temperature of the teacher."""


@dataclass
class HeldOutConfig:
    """The held-out greedy evaluation after training."""

    split: str = "test"
    """Split of the environment."""
    episodes: int = 50
    """Episodes (one per task, from `start`)."""
    start: int = 0
    """First task index."""
    before: bool = False
    """Also evaluate the starting checkpoint (before training)."""


@dataclass
class CalibrateConfig:
    """`stratarl calibrate`: STeCa / IPR from a warm-up checkpoint."""

    format_keys: ClassVar[FormatKeys] = FormatKeys(model=("warmup_checkpoint", "model"), prompt="runner.prompt")
    """Where the agent format lives: taken from the starting checkpoint's `agent.json`, recorded in the checkpoints."""
    name: str = "calibrate"
    """Run name: output goes to `<out_dir>/<name>/`."""
    out_dir: str = "runs"
    """Where runs are written."""
    seed: int = 0
    """Seed of training shuffles and of exploration after iteration 0."""
    mc_seed: int = 0
    """Seed of iteration 0's exploration and MC rollouts."""
    model: str = "tiny"
    """Model the warm-up SFT starts from."""
    warmup_checkpoint: str = ""
    """Start from this checkpoint instead of running the warm-up SFT."""
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    """The warm-up SFT."""
    env: str = "twx:cookingworld?numLocations=1&numIngredients=1&numDistractorItems=0"
    """Environment id (needs gold action sequences)."""
    split: str = "train"
    """Split of the expert trajectories that are explored and calibrated."""
    tasks: int = 20
    """Expert trajectories explored and calibrated."""
    start: int = 0
    """First task index of those."""
    method: Method = "steca"
    """`steca`, `ipr` or `sft` (see the module docstring)."""
    iterations: int = 1
    """explore → data → train rounds (IPR's iterations; each explores with the current policy)."""
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    """Episodes: horizon, sampling (exploration is greedy), prompt layout (match the warm-up's)."""
    values: StepValueConfig = field(default_factory=StepValueConfig)
    """Monte-Carlo step values (N, temperature)."""
    deviation: DeviationConfig = field(default_factory=DeviationConfig)
    """Deviation test and the expert margin of D_s and of step pairs."""
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    """DPO β and NLL weight (IPR), STeCa β and nDTW weights."""
    embedder: str = "tfidf"
    """Sentence embedder of nDTW: `tfidf`, `minilm` or `policy`."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """Reflection writer."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Reinforced training."""
    eval: HeldOutConfig = field(default_factory=HeldOutConfig)
    """Held-out evaluation."""
    workers: int | None = 1
    """Env worker processes."""


@dataclass
class Run:
    """What the stages share."""

    cfg: CalibrateConfig
    """The config."""
    run_dir: Path
    """`<out_dir>/<name>`: every JSONL file and the report."""
    tokenizer: Any
    """The policy's tokenizer."""
    model: Any
    """The policy being trained (torch)."""
    engine: Any
    """The `hf` engine that explores and evaluates; gets the model's weights after each iteration."""
    pool: Any
    """The EnvPool."""
    console: Any
    """Where progress goes (None: quiet)."""
    experts: list[Trajectory] = field(default_factory=list)
    """Expert trajectories with the agent's prompt ids."""
    reused: list[str] = field(default_factory=list)
    """Dataset files read instead of recomputed."""


# -- JSONL files -----------------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(to_json(r) + b"\n" for r in records))
    tmp.replace(path)


def read_records(path: Path, cls: type[R]) -> list[R]:
    return [from_dict(cls, d) for d in read_jsonl(path)]


def cached(run: Run, rel: str, cls: type[R], make: Callable[[], list[R]]) -> list[R]:
    """The records of `run_dir/rel` if the file is there, else `make()` written there."""
    path = run.run_dir / rel
    if path.is_file():
        run.reused.append(rel)
        return read_records(path, cls)
    records = make()
    write_jsonl(path, records)
    return records


# -- stages ----------------------------------------------------------------------------------------


def warm_start(cfg: CalibrateConfig, run_dir: Path, console: Any = None) -> Path:
    """`warmup_checkpoint`, or SFT on `warmup.tasks` expert trajectories (checkpoint `warmup`, reused)."""
    if cfg.warmup_checkpoint:
        path = Path(cfg.warmup_checkpoint)
        if not (path / "config.json").is_file():
            raise UserError(f"warmup_checkpoint {path} is not a checkpoint directory (no config.json); "
                            "leave it empty to run the warm-up SFT")
        return path
    existing = run_dir / "checkpoints" / "warmup"
    if (existing / "config.json").is_file():
        return existing
    from ..models import load_model, load_tokenizer, resolve_model
    from ..train.checkpoint import save_checkpoint
    from ..train.logging import progress
    from ..train.sft import SFTConfig, SFTDataConfig, load_rows, train_rows

    w = cfg.warmup
    sft = SFTConfig(seed=cfg.seed, model=cfg.model, prompt=cfg.runner.prompt, max_steps=cfg.runner.max_steps,
                    epochs=w.epochs, lr=w.lr, batch_rows=w.batch_rows, workers=cfg.workers,
                    data=SFTDataConfig(env=cfg.env, split="train", tasks=w.tasks))
    path = resolve_model(cfg.model)
    tokenizer, model = load_tokenizer(path), load_model(path)
    rows, _ = load_rows(sft, tokenizer, cfg.runner)
    with progress(console, transient=True) as prog:
        stats = train_rows(model, rows, sft, tokenizer.pad_token_id, prog)
    return save_checkpoint(run_dir, "warmup", model, tokenizer, {"sft": stats.__dict__}, agent=format_of(cfg))


def expert_stage(run: Run) -> list[Trajectory]:
    from ..envs.registry import get_spec, make_tasks
    from ..rollout.expert import expert_episodes

    cfg = run.cfg
    if not get_spec(cfg.env.split("?")[0]).has_expert:
        raise UserError(f"{cfg.env} has no gold action sequences: calibration needs expert trajectories")

    def make() -> list[Trajectory]:
        tasks = make_tasks(cfg.env, cfg.split, n=cfg.tasks, start=cfg.start)
        return expert_episodes(run.tokenizer, run.pool, tasks, [run.pool.expert_actions(t) or [] for t in tasks],
                               cfg.runner)

    return cached(run, "experts.jsonl", Trajectory, make)


def scan_stage(run: Run, it: int) -> list[ExpertScan]:
    """Greedy exploration from every expert prefix and the MC step values (the expensive stage)."""
    from .step_value import scan_experts

    cfg = run.cfg
    seed = cfg.mc_seed if it == 0 else cfg.seed * 1000 + it

    def make() -> list[ExpertScan]:
        with _status(run.console, f"iteration {it}: exploring {len(run.experts)} expert trajectories "
                                  f"(MC values, N = {cfg.values.n})"):
            return scan_experts(run.engine, run.tokenizer, run.pool, run.experts, cfg.values, cfg.deviation,
                                cfg.runner, seed)

    return cached(run, f"it{it}/scans.jsonl", ExpertScan, make)


def _status(console: Any, text: str) -> Any:
    from contextlib import nullcontext

    return console.status(text) if console is not None else nullcontext()


def teacher_of(cfg: TeacherConfig) -> Any:
    from ..engines import make_openai_engine

    return make_openai_engine(cfg.base_url, cfg.model) if cfg.base_url else None


def steca_data(run: Run, it: int, scans: list[ExpertScan]) -> tuple[list[WeightedTrajectory], dict[str, int]]:
    """Calibrated trajectories (teacher or template reflections) and D_c + D_s + D_e."""
    from ..engines.base import SamplingParams
    from ..rollout.diversity import make_embedder
    from .trajectories import calibrate

    cfg = run.cfg
    params = SamplingParams(temperature=cfg.teacher.temperature, max_tokens=cfg.teacher.max_tokens)
    cals = cached(run, f"it{it}/calibrated.jsonl", CalibratedTrajectory,
                  lambda: calibrate(run.tokenizer, run.pool, scans, cfg.deviation, cfg.runner,
                                    teacher_of(cfg.teacher), params))
    embedder = make_embedder(cfg.embedder, run.model, run.tokenizer)
    data = cached(run, f"it{it}/steca.jsonl", WeightedTrajectory,
                  lambda: steca_datasets(scans, cals, cfg.deviation, embedder, cfg.preference))
    counts = {"deviations": sum(first_deviation(s.comparisons, cfg.deviation) is not None for s in scans),
              "calibrated": len(cals), "calibrated_won": sum(c.trajectory.won for c in cals),
              "teacher_reflections": sum(c.source == "teacher" for c in cals)}
    counts.update({name: sum(d.kind == k for d in data) for k, name in SET_NAMES.items()})
    return data, counts


def pair_data(run: Run, it: int, scans: list[ExpertScan]) -> tuple[list[PreferencePair], dict[str, int]]:
    pairs = cached(run, f"it{it}/pairs.jsonl", PreferencePair, lambda: preference_pairs(scans, run.cfg.deviation))
    return pairs, {"step_pairs": sum(p.kind == "step" for p in pairs),
                   "trajectory_pairs": sum(p.kind == "trajectory" for p in pairs)}


# -- training --------------------------------------------------------------------------------------


def steca_batch_loss(batch: list[Sample]) -> Callable:
    """STeCa's weighted objective for one mini-batch of step rows: `steca_sft_loss` with S = the number of
    distinct samples among the rows (`count_samples`)."""
    s = float(count_samples(batch)) or 1.0
    return lambda logp_BT, mask_BT, weights_B: steca_sft_loss(logp_BT, mask_BT, weights_B, total_samples=s)


def train_on_rows(run: Run, rows: list[Sample], loss: Callable | None, it: int) -> dict[str, Any]:
    """`optim.steps` optimizer steps of `train.sft.train_rows` over `rows` (cycled, seeded)."""
    from ..train.logging import progress
    from ..train.sft import SFTConfig, token_mean_loss, train_rows

    o, seed = run.cfg.optim, run.cfg.seed * 1000 + it
    if not rows:
        raise UserError(f"iteration {it}: no training rows for method {run.cfg.method} (see the counts above); "
                        "try more tasks or deviation.inclusive=true")
    picked = [rows[i] for i in cycled(len(rows), o.steps * o.batch_rows, seed)]
    sft = SFTConfig(seed=seed, epochs=1, lr=o.lr, warmup_steps=0, batch_rows=o.batch_rows,
                    micro_batch_tokens=o.micro_batch_tokens, grad_clip=o.grad_clip, bf16=o.bf16)
    with progress(run.console, transient=True) as prog:
        stats = train_rows(run.model, picked, sft, run.tokenizer.pad_token_id, prog, loss or token_mean_loss)
    return {**stats.__dict__, "rows": len(rows)}


def train_steca(run: Run, it: int) -> dict[str, Any]:
    scans = scan_stage(run, it)
    data, counts = steca_data(run, it, scans)
    if run.cfg.preference.steca_beta > 0:
        pairs, pcounts = pair_data(run, it, scans)
        return {**counts, **pcounts, "train": _train_pairs(run, pairs, "steca", it)}
    rows = steca_rows(data)
    return {**counts, "rows": len(rows), "samples": count_samples(rows),
            "train": train_on_rows(run, rows, steca_batch_loss, it)}


def train_ipr(run: Run, it: int) -> dict[str, Any]:
    pairs, counts = pair_data(run, it, scan_stage(run, it))
    return {**counts, "train": _train_pairs(run, pairs, "ipr", it)}


def train_sft(run: Run, it: int) -> dict[str, Any]:
    from ..train.sft import trajectory_rows

    rows = trajectory_rows(run.experts)
    return {"rows": len(rows), "train": train_on_rows(run, rows, None, it)}


def _train_pairs(run: Run, pairs: list[PreferencePair], objective: str, it: int) -> dict[str, Any]:
    from ..train.logging import progress
    from ..train.sft import use_bf16

    o = run.cfg.optim
    with progress(run.console, transient=True) as prog:
        stats = train_pairs(run.model, pairs, objective, run.cfg.preference, o, run.tokenizer.pad_token_id, o.steps,
                            use_bf16(o.bf16), seed=run.cfg.seed * 1000 + it, progress=prog)
    return stats.__dict__


METHODS: dict[str, Callable[[Run, int], dict[str, Any]]] = {"steca": train_steca, "ipr": train_ipr, "sft": train_sft}
"""method -> f(run, iteration) -> counts and training statistics (it explores, builds data, trains)."""


# -- evaluation and the whole run ------------------------------------------------------------------


def held_out(run: Run) -> dict[str, Any]:
    """Greedy success on `eval.episodes` held-out tasks, with its Wilson 95% interval."""
    from ..envs.registry import make_tasks
    from ..rollout.evaluate import evaluate_groups

    e, cfg = run.cfg.eval, run.cfg
    tasks = make_tasks(cfg.env, e.split, n=e.episodes, start=e.start)
    rcfg = dataclasses.replace(cfg.runner, sampling=dataclasses.replace(cfg.runner.sampling, temperature=0.0))
    with _status(run.console, f"evaluating on {len(tasks)} {e.split} episodes"):
        groups = evaluate_groups(run.engine, run.tokenizer, run.pool, tasks, rcfg, False, cfg.seed)
    wins = sum(t.won for g in groups for t in g.flat)
    ci = wilson(wins, len(tasks))
    return {"split": e.split, "wins": wins, "episodes": len(tasks), "success": round(ci.value, 4),
            "success_ci95": [round(ci.low, 4), round(ci.high, 4)]}


def run_calibrate(cfg: CalibrateConfig, console: Any = None) -> dict[str, Any]:
    """The whole pipeline (module docstring); returns the report, also written to `report.json`."""
    from ..engines.hf import HFEngine, HFEngineConfig
    from ..envs.pool import EnvPool
    from ..envs.registry import check_task_counts
    from ..models import load_model, load_tokenizer
    from ..train.checkpoint import save_checkpoint

    method = lookup("method", cfg.method, METHODS)
    if cfg.iterations < 1 or cfg.optim.steps < 1:
        raise UserError(f"iterations ({cfg.iterations}) and optim.steps ({cfg.optim.steps}) must be at least 1")
    check_task_counts((cfg.env, "train", 0 if cfg.warmup_checkpoint else cfg.warmup.tasks, 0),
                      (cfg.env, cfg.split, cfg.tasks, cfg.start), (cfg.env, cfg.eval.split, cfg.eval.episodes, cfg.eval.start))
    run_dir, t0 = Path(cfg.out_dir) / cfg.name, time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    start = warm_start(cfg, run_dir, console)
    tokenizer = load_tokenizer(start)
    report: dict[str, Any] = {"name": cfg.name, "method": cfg.method, "start": str(start), "iterations": []}
    with EnvPool(num_workers=cfg.workers) as pool:
        run = Run(cfg, run_dir, tokenizer, load_model(start), HFEngine(start, HFEngineConfig(), tokenizer), pool, console)
        try:
            run.experts = expert_stage(run)
            report["experts"] = {"trajectories": len(run.experts), "won": sum(t.won for t in run.experts)}
            if cfg.eval.before:
                report["eval_before"] = held_out(run)
            for it in range(cfg.iterations):
                report["iterations"].append({"iteration": it, **method(run, it)})
                run.engine.update_weights(run.model.state_dict())
            report["eval"] = held_out(run)
        finally:
            run.engine.close()
    report["checkpoint"] = str(save_checkpoint(run_dir, "final", run.model, tokenizer, {"report": report},
                                               agent=format_of(cfg)))
    report["reused"], report["seconds"] = run.reused, round(time.time() - t0, 1)
    (run_dir / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


def print_report(report: dict[str, Any], console: Any) -> None:
    """Counts per dataset and iteration, training loss, and held-out success."""
    from rich.table import Table

    table = Table(title=f"{report['name']}: {report['method']} from {report['start']}")
    table.add_column("iteration")
    table.add_column("datasets")
    table.add_column("training")
    for it in report["iterations"]:
        counts = ", ".join(f"{k} {v}" for k, v in it.items() if k not in ("iteration", "train"))
        tr = it["train"]
        table.add_row(str(it["iteration"]), counts, f"{tr['steps']} steps, loss {tr['first_loss']:.3f} -> "
                      f"{tr['last_loss']:.3f} ({tr['seconds']:.0f}s)")
    console.print(table)
    for key in ("eval_before", "eval"):
        if key in report:
            e = report[key]
            console.print(f"{'before' if key == 'eval_before' else 'after'}: held-out success "
                          f"{100 * e['success']:.1f}% [{100 * e['success_ci95'][0]:.1f}, "
                          f"{100 * e['success_ci95'][1]:.1f}] ({e['wins']}/{e['episodes']} {e['split']} episodes)")
    if report.get("reused"):
        console.print(f"reused: {', '.join(report['reused'])}")
