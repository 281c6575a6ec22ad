"""LoRA through peft on the real tiny model: only adapters (and the value head) train, the merged
weights are W + (α/r)·B·A, checkpoints round-trip, and the engine gets the merged weights."""

import pytest
import torch

pytest.importorskip("peft", reason="LoRA needs peft (extra [lora])")

from stratarl.algos.losses import LossConfig  # noqa: E402
from stratarl.errors import UserError  # noqa: E402
from stratarl.models import load_model  # noqa: E402
from stratarl.models.lora import ADAPTER_DIR, LoRAConfig, apply_lora, merged_state_dict, save_policy  # noqa: E402
from stratarl.train.policy import make_value_head  # noqa: E402
from stratarl.train.update import Critic, ppo_update, score  # noqa: E402
from stratarl.types import Sample  # noqa: E402

CFG = LoRAConfig(enabled=True, r=4, alpha=12.0)  # scale α/r = 3


def _lora(tiny_path, seed=0):
    """A LoRA policy whose B matrices are non-zero (fresh ones are 0: merged would equal base trivially)."""
    model = apply_lora(load_model(tiny_path), CFG)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model


def _rows(vocab):
    gen = torch.Generator().manual_seed(3)
    rows = []
    for p, r in [(8, 5), (4, 9), (10, 3), (6, 6)]:
        ids = torch.randint(1, vocab, (p + r,), generator=gen).tolist()
        rows.append(Sample(input_ids=ids, loss_mask=[0] * p + [1] * r, advantage=float(torch.randn((), generator=gen)),
                           returns=float(torch.randn((), generator=gen))))
    return rows


def test_only_adapters_and_value_head_train(tiny_path):
    """One RL update (PPO-clip, step-GAE value head) through `ppo_update`: every adapter and the head
    move, every base weight stays bit-identical."""
    model = apply_lora(load_model(tiny_path), CFG)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 7 * model.config.num_hidden_layers  # A and B on 7 projections per block
    head = make_value_head(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    head_before = head.weight.detach().clone()
    rows = _rows(model.config.vocab_size)
    score(model, rows, 0, bf16=False, token_budget=4096)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    stats = ppo_update(model, opt, None, rows, LossConfig(kl_coef=0.0), epochs=2, minibatches=2, token_budget=64,
                       grad_clip=1.0, pad_id=0, bf16=False, generator=torch.Generator().manual_seed(0),
                       critic=Critic(head=head))
    assert stats.steps == 4 and stats.skipped == 0 and stats.value_loss > 0
    after = dict(model.named_parameters())
    for n, p in after.items():
        assert torch.equal(p, before[n]) != (n in trainable), n  # adapters moved (B from 0, A via B), base did not
    assert not torch.equal(head.weight, head_before)


def test_merged_weights_are_base_plus_scaled_BA(tiny_path):
    model = _lora(tiny_path)
    base = load_model(tiny_path).state_dict()
    merged = merged_state_dict(model)
    assert merged.keys() == base.keys()  # the base model's own names: what the engine and transformers load
    sd = model.state_dict()
    for name in base:
        q = "base_model.model." + name.removesuffix(".weight")
        if f"{q}.lora_A.default.weight" in sd:
            a, b = sd[f"{q}.lora_A.default.weight"], sd[f"{q}.lora_B.default.weight"]
            assert a.shape[0] == 4 and b.shape[1] == 4
            torch.testing.assert_close(merged[name], base[name] + 3.0 * b @ a, rtol=0, atol=1e-7)
            assert not torch.equal(merged[name], base[name])
        else:
            assert torch.equal(merged[name], base[name]), name
    # the same as peft's own merge, and the model itself is left unmerged
    import copy

    theirs = copy.deepcopy(model).merge_and_unload().state_dict()
    assert all(torch.equal(merged[k], theirs[k]) for k in theirs)
    assert any(".lora_A." in k for k in model.state_dict())


def test_save_and_load_round_trip(tiny_path, tmp_path):
    """A checkpoint: the merged model in plain HF format (same logits as the adapted policy) and the
    adapters under `adapter/`, which load back onto the base bit-identically and trainable."""
    from transformers import AutoModelForCausalLM

    model = _lora(tiny_path).eval()
    save_policy(model, tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / ADAPTER_DIR / "adapter_config.json").is_file()
    plain = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    merged = merged_state_dict(model)
    assert all(torch.equal(v, merged[k]) for k, v in plain.state_dict().items())
    ids = torch.randint(1, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, model(input_ids=ids).logits, rtol=0, atol=1e-5)
    again = apply_lora(load_model(tiny_path), CFG, adapter=tmp_path / ADAPTER_DIR)
    mine, theirs = model.state_dict(), again.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert {n for n, p in again.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad}


def test_engine_sync_gets_the_merged_weights(tiny_path):
    """The sync stage hands the engine `merged_state_dict`; the engine then samples from the adapted policy."""
    from stratarl.engines.hf import HFEngine, HFEngineConfig

    model = _lora(tiny_path)
    engine = HFEngine(tiny_path, HFEngineConfig(dtype="float32"))
    engine.update_weights(merged_state_dict(model))
    merged = merged_state_dict(model)
    assert all(torch.equal(v, merged[k]) for k, v in engine.model.state_dict().items())


def test_fresh_adapters_are_seeded(tiny_path):
    """A from the seed (an exact resume needs it), B = 0; the global RNG is left as it was."""
    state = torch.get_rng_state()
    a, b, c = (dict(apply_lora(load_model(tiny_path), CFG, seed=s).named_parameters()) for s in (1, 1, 2))
    assert torch.equal(torch.get_rng_state(), state)
    names = [n for n in a if ".lora_" in n]
    assert all(torch.equal(a[n], b[n]) for n in names)
    assert all(torch.equal(a[n], c[n]) == (".lora_B." in n) for n in names)
    assert all(not a[n].any() for n in names if ".lora_B." in n)


def test_unknown_target_module_is_a_user_error(tiny_path):
    with pytest.raises(UserError, match="qkv_proj"):
        apply_lora(load_model(tiny_path), LoRAConfig(target_modules=["qkv_proj"]))


def test_lora_run_resumes_exactly(tmp_path):
    """`stratarl train` with LoRA (step-GAE, so updates are not zero): 1 + 1 resumed iterations give
    the adapters, merged weights and trajectories of 2 straight ones; the checkpoint is plain HF."""
    from safetensors.torch import load_file

    from stratarl.config import load_config
    from stratarl.train.config import TrainConfig
    from stratarl.train.pipeline import run_training

    def cfg(name, iterations):
        return load_config(TrainConfig, data={
            "name": name, "out_dir": str(tmp_path), "iterations": iterations, "lora": {"enabled": True},
            "env": {"id": "twx:cookingworld?numLocations=1&numIngredients=1&numDistractorItems=0",
                    "tasks_per_iteration": 2, "train_tasks": 20},
            "rollout": {"group": {"n_rollouts": 2}, "horizon": {"max_steps": 3},
                        "runner": {"sampling": {"max_tokens": 8}, "prompt": {"history": 1}}},
            "algo": {"estimator": "step_gae", "loss": {"kl_coef": 0.01}}, "optim": {"lr": 1e-2, "bf16": "off"},
            "engine": {"hf": {"dtype": "float32"}}, "logging": {"tensorboard": False, "progress": False}})

    straight = run_training(cfg("straight", 2))
    run_training(cfg("pieces", 1))
    resumed = run_training(cfg("pieces", 2), resume=True)
    for f in ("model.safetensors", f"{ADAPTER_DIR}/adapter_model.safetensors"):
        a, b = load_file(straight / "checkpoints" / "2" / f), load_file(resumed / "checkpoints" / "2" / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    before = load_file(straight / "checkpoints" / "1" / "model.safetensors")
    after = load_file(straight / "checkpoints" / "2" / "model.safetensors")
    assert any(not torch.equal(after[k], before[k]) for k in before)  # the resumed iteration trained
    assert (straight / "trajectories" / "1.jsonl").read_bytes() == (resumed / "trajectories" / "1.jsonl").read_bytes()
