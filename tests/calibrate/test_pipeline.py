"""The weighted STeCa loop (gradients by hand, micro-batching) and `stratarl calibrate` end to end through
the real CLI: tiny model, one-room CookingWorld, real env workers."""

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import torch

from stratarl.agent.format import read_format
from stratarl.calibrate.pipeline import steca_batch_loss
from stratarl.train.batching import collate
from stratarl.train.policy import forward
from stratarl.train.sft import accumulate_gradients
from stratarl.types import Sample

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(tiny_path):
    # fp64: exactness is the claim; gradients are compared with the bound derived in conftest
    # (fp32 differed by 1.1e-6 on one element between CPU kinds)
    from stratarl.models import load_model

    return load_model(tiny_path, dtype=torch.float64)


def _rows(vocab):
    g = torch.Generator().manual_seed(1)

    def row(uid, weight, n_prompt, n_resp):
        ids = torch.randint(5, vocab, (n_prompt + n_resp,), generator=g).tolist()
        return Sample(input_ids=ids, loss_mask=[0] * n_prompt + [1] * n_resp, weight=weight, uid=uid)

    return [row("a", 1.5, 6, 3), row("b", 0.5, 4, 2)]


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone()


def test_weighted_loop_gradient_is_the_hand_weighted_nll(model, assert_grads_close):
    rows = _rows(model.config.vocab_size)
    loss = accumulate_gradients(model, rows, 10**6, 0, False, steca_batch_loss)
    got = _grads(model)
    # by hand: S = 2 samples, L = (1.5·(−Σ_t log π_a) + 0.5·(−Σ_t log π_b)) / 2, each row forward alone
    model.zero_grad(set_to_none=True)
    nll = []
    for r in rows:
        b = collate([r], 0)
        nll.append(-(forward(model, b).logp_BT * b.loss_mask_BT).sum())
    hand = (1.5 * nll[0] + 0.5 * nll[1]) / 2
    hand.backward()
    assert loss == pytest.approx(float(hand.detach()), rel=1e-9)
    assert_grads_close(got, _grads(model), model.config.num_hidden_layers)
    # both rows from one sample: S = 1, so the loss is the weighted sum itself
    same = [Sample(input_ids=r.input_ids, loss_mask=r.loss_mask, weight=r.weight, uid="a") for r in rows]
    assert accumulate_gradients(model, same, 10**6, 0, False, steca_batch_loss) == pytest.approx(2 * float(hand.detach()), rel=1e-9)


def test_micro_batching_does_not_change_the_weighted_gradient(model, assert_grads_close):
    rows = _rows(model.config.vocab_size) * 2
    rows = [Sample(input_ids=r.input_ids, loss_mask=r.loss_mask, weight=r.weight, uid=f"{r.uid}{i}")
            for i, r in enumerate(rows)]
    whole = accumulate_gradients(model, rows, 10**6, 0, False, steca_batch_loss)
    g_whole = _grads(model)
    micro = accumulate_gradients(model, rows, 1, 0, False, steca_batch_loss)  # one row per micro-batch
    assert micro == pytest.approx(whole, rel=1e-9)
    assert_grads_close(_grads(model), g_whole, model.config.num_hidden_layers)


def _cli(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "stratarl", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_bad_config_key_exits_with_a_message_naming_it(tmp_path):
    r = _cli("calibrate", "configs/calibrate_tiny.yaml", "optim.stepz=3", f"out_dir={tmp_path}")
    assert r.returncode == 2 and "optim.stepz" in r.stderr and "optim.steps" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("calibrate", "configs/calibrate_tiny.yaml", "method=dpo", f"out_dir={tmp_path}")
    assert r.returncode == 2 and "dpo" in r.stderr and "ipr" in r.stderr
    assert not (tmp_path / "calibrate_tiny").exists()
    r = _cli("config", "calibrate")
    assert r.returncode == 0 and "deviation.inclusive" in r.stdout and "warmup_checkpoint" in r.stdout


@pytest.mark.slow
def test_calibrate_cli_end_to_end_writes_datasets_and_reuses_the_mc_file(tmp_path):
    r = _cli("calibrate", "configs/calibrate_tiny.yaml", f"out_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "calibrate_tiny"
    for rel in ("experts.jsonl", "it0/scans.jsonl", "it0/calibrated.jsonl", "it0/steca.jsonl", "report.json",
                "checkpoints/warmup/config.json", "checkpoints/final/config.json"):
        assert (run / rel).is_file(), rel
    assert read_format(run / "checkpoints/last") == read_format(run / "checkpoints/warmup") is not None
    rep = orjson.loads((run / "report.json").read_bytes())
    assert rep["experts"]["trajectories"] == 2 and rep["reused"] == []
    (it,) = rep["iterations"]
    steca = [orjson.loads(x) for x in (run / "it0/steca.jsonl").read_bytes().splitlines()]
    assert it["D_c"] + it["D_s"] + it["D_e"] == len(steca) > 0 and it["train"]["steps"] == 2
    assert rep["eval"]["episodes"] == 2 and 0 <= rep["eval"]["success_ci95"][0] <= rep["eval"]["success_ci95"][1]
    assert "held-out success" in r.stdout
    scans = (run / "it0/scans.jsonl").read_bytes()
    # the rerun (IPR this time) reads the expert and MC files instead of recomputing them
    r = _cli("calibrate", "configs/calibrate_tiny.yaml", f"out_dir={tmp_path}", "method=ipr")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = orjson.loads((run / "report.json").read_bytes())
    assert rep["method"] == "ipr" and {"experts.jsonl", "it0/scans.jsonl"} <= set(rep["reused"])
    assert (run / "it0/scans.jsonl").read_bytes() == scans
    pairs = [orjson.loads(x) for x in (run / "it0/pairs.jsonl").read_bytes().splitlines()]
    (it,) = rep["iterations"]
    assert it["step_pairs"] + it["trajectory_pairs"] == len(pairs) > 0
    for p in pairs:  # token-exact: every rejected row's ids are those the engine sampled in the scan
        assert all(sum(row["loss_mask"]) > 0 for row in p["chosen"] + p["rejected"])
