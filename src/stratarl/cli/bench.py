"""`stratarl bench ...`: benchmarks that print figures and ratios against a baseline measured in
the same run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from .main import app

bench_app = typer.Typer(help="Benchmarks: figures and ratios against a baseline measured in the same run.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("learn")
def bench_learn(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    seeds: int = typer.Option(1, help="RL seeds per variant."),
    config: str = typer.Option("configs/bench_learn.yaml", help="Base TrainConfig YAML."),
    variants: str = typer.Option("sft,grpo,gigpo,strata,strata_sigma1,strata_kappa0",
                                  help="Comma-separated; also ecpo, strata_experience, strata_dpepo."),
    env_steps: int = typer.Option(1500, help="Env-step budget of each RL run."),
    eval_episodes: int = typer.Option(100, help="Held-out episodes per evaluation."),
    sft_checkpoint: str = typer.Option("", help="Start from this checkpoint instead of the config's warm-up SFT."),
    out_dir: str = typer.Option("runs/bench_learn", help="Where results.json, curves.png and the runs go."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides of the base config, e.g. optim.lr=1e-4."),
) -> None:
    """SFT-only vs GRPO vs GiGPO vs StraTA (and its ablations) from one SFT checkpoint, same env steps."""
    from rich.console import Console

    from ..bench.learn import LearnBenchConfig, check_variants, print_results, run_learn_bench
    from .main import console

    names = [v.strip() for v in variants.split(",") if v.strip()]
    check_variants(names)
    cfg = LearnBenchConfig(config=config, variants=names, seeds=seeds, env_steps=env_steps,
                           eval_episodes=eval_episodes, sft_checkpoint=sft_checkpoint, out_dir=out_dir,
                           overrides=list(overrides or []))
    out = Console(stderr=True) if json_out else console  # keep stdout pure JSON
    total = sum(1 if v == "sft" else seeds for v in names)
    results = _with_progress(out, "bench learn (runs)", total, lambda on_run: run_learn_bench(cfg, out, on_run))
    print_results(results, json_out, console)
    out.print(f"results: {out_dir}/results.json · curves: {out_dir}/curves.png")


@bench_app.command("sanity")
def bench_sanity(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    estimators: str = typer.Option(",".join(["grpo", "drgrpo", "rloo", "reinforce_pp", "gigpo", "ecpo", "strata",
                                             "mt_grpo", "step_gae", "gae"]),
                                  help="Comma-separated estimators; also strata_reward_norm, step_gae_whiten (measured to fail)."),
    config: str = typer.Option("configs/sanity.yaml", help="The rung's TrainConfig YAML."),
    max_iterations: int = typer.Option(30, help="Iteration budget per estimator."),
    out_dir: str = typer.Option("runs/bench_sanity", help="Where results.json, curves.png and the runs go."),
    resume: bool = typer.Option(False, "--resume", help="Keep the estimators already in results.json."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides of the rung's config."),
) -> None:
    """Rung 1 of the learning ladder: each estimator must raise training success to 90% or by 50 points."""
    from rich.console import Console

    from ..bench.sanity import SanityBenchConfig, check_estimators, print_results, run_sanity_bench
    from .main import console

    names = [v.strip() for v in estimators.split(",") if v.strip()]
    check_estimators(names)
    cfg = SanityBenchConfig(config=config, estimators=names, max_iterations=max_iterations, out_dir=out_dir,
                            resume=resume, overrides=list(overrides or []))
    out = Console(stderr=True) if json_out else console  # keep stdout pure JSON
    results = _with_progress(out, "bench sanity (estimators)", len(names), lambda on_run: run_sanity_bench(cfg, out, on_run))
    print_results(results, json_out, console)
    out.print(f"results: {out_dir}/results.json · curves: {out_dir}/curves.png")
    if not results["all_passed"]:
        raise typer.Exit(1)


@bench_app.command("sandbox")
def bench_sandbox(
    n: int = typer.Option(50, help="trivial executions to time"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Sandbox executions/s of print(1) vs plain `python -I -c` (same run), and a containment table."""
    from ..bench.sandbox import containment_table, print_results, run_bench
    from .main import console

    print_results({"bench": run_bench(n), "containment": containment_table()}, json_out, console)


@bench_app.command("ray")
def bench_ray(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    steps: int = typer.Option(600, help="Timed env steps per configuration."),
    concurrent: int = typer.Option(8, help="Episodes stepped together as one batch."),
    cpus_per_worker: float = typer.Option(1.0, help="CPUs Ray reserves for each env actor."),
    address: str = typer.Option("", help="Ray cluster to join (`auto`); empty starts a local Ray."),
) -> None:
    """Env steps/s of the Ray executor (1 and 2 env actors) vs the local EnvPool, same run (needs ray)."""
    from ..bench.ray_executor import print_results, run_ray_bench
    from .main import console

    print_results(run_ray_bench(steps, concurrent, cpus_per_worker, address), json_out, console)


@bench_app.command("tools-reward")
def bench_tools_reward(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    seeds: int = typer.Option(1, help="RL seeds per training reward."),
    config: str = typer.Option("configs/bench_tools_reward.yaml", help="Base TrainConfig YAML (a tools: env)."),
    variants: str = typer.Option("f1,recall,precision", help="Comma-separated training rewards."),
    iterations: int = typer.Option(6, help="RL iterations per run."),
    eval_episodes: int = typer.Option(26, help="Held-out episodes per evaluation (always F1-scored)."),
    sft_checkpoint: str = typer.Option("", help="Start from this checkpoint instead of the config's warm-up SFT."),
    out_dir: str = typer.Option("runs/bench_tools_reward", help="Where results.json and the runs go."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides of the base config, e.g. optim.lr=1e-4."),
) -> None:
    """F1 vs recall-only vs precision-only RL reward on tools: tool calls per episode and held-out F1."""
    from rich.console import Console

    from ..bench.tools_reward import (
        ToolsRewardBenchConfig,
        check_variants,
        print_results,
        run_tools_reward_bench,
    )
    from .main import console

    names = [v.strip() for v in variants.split(",") if v.strip()]
    check_variants(names)
    cfg = ToolsRewardBenchConfig(config=config, variants=names, seeds=seeds, iterations=iterations,
                                 eval_episodes=eval_episodes, sft_checkpoint=sft_checkpoint, out_dir=out_dir,
                                 overrides=list(overrides or []))
    out = Console(stderr=True) if json_out else console
    results = _with_progress(out, "bench tools-reward (runs)", 1 + len(names) * seeds,
                             lambda on_run: run_tools_reward_bench(cfg, out, on_run))
    print_results(results, json_out, console)
    out.print(f"results: {out_dir}/results.json")


@bench_app.command("autocoa")
def bench_autocoa(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    config: str = typer.Option("configs/bench_autocoa.yaml", help="Base AutoCoAConfig YAML."),
    eval_episodes: int = typer.Option(50, help="Held-out questions per row."),
    out_dir: str = typer.Option("runs/bench_autocoa", help="Where results.json, results.md and the runs go."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides of the base config, e.g. rl.lr=1e-4."),
) -> None:
    """ReAct zero-shot vs AutoCoA ablations (SFT 2; SFT 1+2+3; + RL sim; + RL real) on held-out search QA."""
    from rich.console import Console

    from ..bench.autocoa import AutoCoABenchConfig, print_results, run_autocoa_bench
    from .main import console

    cfg = AutoCoABenchConfig(config=config, eval_episodes=eval_episodes, out_dir=out_dir,
                             overrides=list(overrides or []))
    out = Console(stderr=True) if json_out else console  # keep stdout pure JSON
    print_results(run_autocoa_bench(cfg, out), json_out, console)
    out.print(f"results: {out_dir}/results.json · table: {out_dir}/results.md")


@bench_app.command("calibrate")
def bench_calibrate(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    seeds: int = typer.Option(3, help="Training seeds per method."),
    methods: str = typer.Option("sft,ipr,steca", help="Comma-separated: sft, ipr, steca."),
    config: str = typer.Option("configs/bench_calibrate.yaml", help="Base CalibrateConfig YAML."),
    out_dir: str = typer.Option("runs/bench_calibrate", help="Where the runs and results.json go."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides of the base config, e.g. optim.steps=60."),
) -> None:
    """SFT-only vs IPR vs STeCa from one warm-up checkpoint, same optimizer steps; held-out success."""
    from rich.console import Console

    from ..bench.calibrate import CalibrateBenchConfig, check_methods, print_results, run_calibrate_bench
    from .main import console

    names = [m.strip() for m in methods.split(",") if m.strip()]
    check_methods(names)
    cfg = CalibrateBenchConfig(config=config, methods=names, seeds=seeds, out_dir=out_dir,
                               overrides=list(overrides or []))
    out = Console(stderr=True) if json_out else console  # keep stdout pure JSON
    results = _with_progress(out, "bench calibrate (runs)", len(names) * seeds,
                             lambda on_run: run_calibrate_bench(cfg, out, on_run))
    print_results(results, json_out, console)
    out.print(f"results: {out_dir}/results.json")


def _with_progress(out: Any, title: str, total: int, run: Callable[[Callable[[str, int], None]], Any]) -> Any:
    """`run(on_run)` under a progress bar of `total` runs; `on_run(variant, seed)` marks each start."""
    from ..train.logging import progress as progress_display

    with progress_display(out) as bar:
        task = bar.add_task(title, total=total, status="")
        done = {"n": 0}

        def on_run(variant: str, seed: int) -> None:
            bar.update(task, completed=done["n"], status=f"{variant} seed {seed}")
            done["n"] += 1

        results = run(on_run)
        bar.update(task, completed=total, status="done")
    return results


@bench_app.command("train")
def bench_train(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    model: str = typer.Option("tiny", help="tiny (configs/quickstart.yaml) or smollm2-135m (configs/strata_smollm2.yaml)."),
    mode: str = typer.Option("", help="Prompt mode chat or window (default: the config's)."),
    iterations: int = typer.Option(3, help="Whole RL iterations timed for the median iteration time."),
    sft_steps: int = typer.Option(8, help="Warm-up SFT steps timed on each side."),
    out_dir: str = typer.Option("runs/bench_train", help="Where the run directory goes."),
    scaling: bool = typer.Option(False, "--scaling", help="Also time 16/32/64 episodes and horizons 7/14/28."),
    rss_iterations: int = typer.Option(0, help="Also run this many iterations recording resident memory."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides of the config."),
) -> None:
    """The trainer's RL update and SFT step against a plain baseline on the rows of real iterations."""
    import sys

    from ..bench.train import TrainBenchConfig, print_results, run_train_bench
    from .main import console

    if mode not in ("", "chat", "window"):
        raise typer.BadParameter(f"unknown prompt mode {mode!r}: chat or window", param_hint="--mode")
    cfg = TrainBenchConfig(model=model, mode=mode, iterations=iterations, sft_steps=sft_steps, out_dir=out_dir,
                           overrides=list(overrides or []), scaling=scaling, rss_iterations=rss_iterations)
    log = (lambda m: print(m, file=sys.stderr)) if json_out else console.print
    print_results(run_train_bench(cfg, log), json_out, console)
