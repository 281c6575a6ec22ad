"""Data parallel: one update of the real tiny model by 2 ranks (torchrun, gloo, CPU) takes the same
step as one process on the same global batch (fp32)."""

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stratarl.models import load_model
from stratarl.train.batching import split_minibatches
from stratarl.train.distributed import DataParallel, shard

WORKER = Path(__file__).with_name("ddp_worker.py")


def _worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, tiny_path: Path, strategy: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(WORKER), str(out), str(tiny_path), strategy]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def test_ranks_hold_uneven_token_counts():
    """The test batch is one where a per-rank token-mean would differ from the global one."""
    w = _worker()
    tokens = [r for _, r in w.LENGTHS]
    dps = [DataParallel(rank=r, world_size=2, local_rank=r, device=torch.device("cpu")) for r in range(2)]
    for mb in split_minibatches(len(tokens), w.CASES["step_gae"]["minibatches"], torch.Generator().manual_seed(1)):
        rows = sorted(mb, key=lambda i: sum(w.LENGTHS[i]))
        per_rank = [sum(tokens[i] for i in shard(rows, dp)) for dp in dps]
        assert per_rank[0] != per_rank[1] and sorted(shard(rows, dps[0]) + shard(rows, dps[1])) == sorted(mb)


@pytest.fixture(scope="module")
def single(tiny_path):
    """Each case's update in this one process, and the parameters before it."""
    w = _worker()
    return {name: w.run_case(name, tiny_path, dp=None) for name in w.CASES}, load_model(tiny_path).state_dict()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_ranks_take_the_single_process_step(tmp_path, tiny_path, single, strategy):
    """SGD steps on token-mean GRPO rows (4 mini-batches, one with a single row), step-GAE with a value head
    and clipping, token GAE with a separate critic: same parameters and losses as one process."""
    _torchrun(tmp_path, tiny_path, strategy)
    results, start = single
    for name, want in results.items():
        got = torch.load(tmp_path / f"{name}.pt")
        assert any(not torch.equal(v, start[k]) for k, v in want["params"].items() if k in start), name
        assert got["params"].keys() == want["params"].keys()
        for k, v in want["params"].items():
            assert torch.allclose(got["params"][k], v, rtol=1e-5, atol=1e-6), (name, k, (got["params"][k] - v).abs().max())
        for k in ("policy_loss", "value_loss", "grad_norm", "steps", "skipped"):
            assert got["stats"][k] == pytest.approx(want["stats"][k], rel=1e-5, abs=1e-7), (name, k)
    for rank in range(2):  # the worker then gave the ranks different rows: both refused
        assert "other training rows" in (tmp_path / f"mismatch_{rank}.txt").read_text()


def test_gather_shards_restores_task_order(monkeypatch):
    """Rank r rolled out items r, r+W, ...: after the all-gather every rank holds 0..n-1 in order."""
    from stratarl.train import distributed

    items, w = list(range(7)), 3
    parts = [(shard(items, DataParallel(rank=r, world_size=w, local_rank=r, device=torch.device("cpu"))), {f"d{r}": r})
             for r in range(w)]
    assert [p[0] for p in parts] == [[0, 3, 6], [1, 4], [2, 5]]

    def all_gather_object(out, obj):
        out[:] = parts

    monkeypatch.setattr(distributed.dist, "all_gather_object", all_gather_object)
    dp = DataParallel(rank=1, world_size=w, local_rank=1, device=torch.device("cpu"))
    got, extra = distributed.gather_shards(dp, parts[1][0], parts[1][1])
    assert got == items and extra == {"d0": 0, "d1": 1, "d2": 2}


def test_stratarl_train_shards_rollouts_over_two_ranks(tmp_path):
    """`torchrun ... stratarl train`: each rank rolls out half the tasks; both train on the gathered batch
    (the row check in the update would stop a rank holding other rows)."""
    import json

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "stratarl", "train", str(root / "configs/grpo_tiny.yaml"),
           f"out_dir={tmp_path}", "name=dp", "iterations=1", "env.tasks_per_iteration=4", "env.workers=1",
           "rollout.group.n_rollouts=2", "rollout.horizon.max_steps=3", "logging.tensorboard=false",
           "logging.progress=false", "engine.hf.dtype=float32", "optim.bf16=off"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    (m,) = [json.loads(line) for line in (tmp_path / "dp" / "metrics.jsonl").read_text().splitlines()]
    assert m["rollout/episodes"] == 8 and m["rollout/episodes_this_rank"] == 4
    assert (tmp_path / "dp" / "checkpoints" / "1").is_dir()


def _train_two_ranks(out: Path, strategy: str, *extra: str, name: str = "", iterations: int = 1,
                     flags: tuple[str, ...] = ()) -> Path:
    import os

    root = Path(__file__).resolve().parents[2]
    name = name or strategy
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "stratarl", "train", str(root / "configs/grpo_tiny.yaml"),
           *flags, f"out_dir={out}", f"name={name}", f"iterations={iterations}", "env.tasks_per_iteration=2",
           "env.workers=1", "rollout.group.n_rollouts=2", "rollout.horizon.max_steps=3", "logging.tensorboard=false",
           "logging.progress=false", "engine.hf.dtype=float32", "optim.bf16=off", f"distributed.strategy={strategy}",
           *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=out,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out / name / "checkpoints" / str(iterations)


def test_fsdp2_run_resumed_equals_an_uninterrupted_ddp_run(tmp_path):
    """Step-GAE with a value head and a KL reference (both scored through sharded roots under FSDP2), on 2
    ranks: 2 DDP iterations straight vs 1 FSDP2 iteration + `--resume` 1 more (the optimizer's full state
    saved by the first FSDP2 run is sharded again on load) hold the same weights, and the FSDP2
    checkpoint holds full (unsharded) optimizer state. One comparison covers FSDP2 = DDP and resume =
    uninterrupted (single-process resume: tests/train/test_rl.py)."""
    import json

    from safetensors.torch import load_file

    extra = ["algo.estimator=step_gae", "algo.loss.kl_coef=0.05", "optim.lr=1e-3", "algo.loss.entropy_coef=0.05",
             "checkpoint.keep=0"]
    ddp = _train_two_ranks(tmp_path, "ddp", *extra, name="ddp", iterations=2)
    _train_two_ranks(tmp_path, "fsdp2", *extra, name="fsdp2", iterations=1)
    fsdp = _train_two_ranks(tmp_path, "fsdp2", *extra, name="fsdp2", iterations=2, flags=("--resume",))
    a, b = load_file(ddp / "model.safetensors"), load_file(fsdp / "model.safetensors")
    start = load_model(_tiny()).state_dict()
    assert a.keys() == b.keys() and any(not torch.equal(a[k], start[k]) for k in a if k in start)
    # Tolerance from Adam, not a guess: an element's update is at most ~lr a step whatever its gradient, and
    # a rounding difference δ (relative) in its reduced gradient moves it by ~δ·lr. Reductions whose terms
    # nearly cancel reach δ ~ 1e-3 (measured on an AMD EPYC: 1.16e-6 = 1.2e-3·lr on an embedding row);
    # a sharding or resume error changes updates by O(lr). So: each element within 1% of lr per iteration,
    # and the whole difference within 1e-3 of the whole update (rounding is rare, an error is everywhere).
    lr, iterations = 1e-3, 2
    diff = sum(float((a[k] - b[k]).double().norm() ** 2) for k in a) ** 0.5
    step = sum(float((a[k] - start[k]).double().norm() ** 2) for k in a if k in start) ** 0.5
    assert diff <= 1e-3 * step, (diff, step)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=0.01 * lr * iterations), (k, (a[k] - b[k]).abs().max())
    state = torch.load(fsdp / "trainer_state.pt", weights_only=False)
    moments = [s["exp_avg"] for s in state["optimizer"]["state"].values()]
    assert sorted(m.numel() for m in moments) == sorted(
        s["exp_avg"].numel() for s in torch.load(ddp / "trainer_state.pt", weights_only=False)["optimizer"]["state"].values())
    assert state["critic_head"]["weight"].shape[-1] == a["model.embed_tokens.weight"].shape[-1]
    # every rank's engine got the new weights (rank 1 rolls out half the episodes of iteration 1)
    for run in (ddp, fsdp):
        rows = [json.loads(line) for line in (run.parents[1] / "metrics.jsonl").read_text().splitlines()]
        assert all(r["mismatch/engine_trainer_max"] < 1e-4 for r in rows) and len(rows) == 2


def _tiny() -> Path:
    from stratarl.models import resolve_model

    return resolve_model("tiny")


@pytest.mark.parametrize("override, says", [
    ("lora.enabled=true", "lora.enabled"),
    ("strategy.diversity.embedder=policy", "embedder"),
])
def test_what_fsdp2_does_not_run_yet_is_refused_with_the_way_out(override, says):
    from stratarl.config import load_config
    from stratarl.errors import UserError
    from stratarl.train.config import TrainConfig
    from stratarl.train.pipeline import check_fsdp2

    base = ["distributed.strategy=fsdp2", "rollout.group.strategy=true", "rollout.group.candidates=2",
            "strategy.diversity.embedder=tfidf"]
    check_fsdp2(load_config(TrainConfig, None, base))  # the supported setup passes
    with pytest.raises(UserError, match=says):
        check_fsdp2(load_config(TrainConfig, None, [*base, override]))


