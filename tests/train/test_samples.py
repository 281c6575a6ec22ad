"""Training rows: token-exact from the records, and chat-mode packing that changes no gradient."""

import torch

from stratarl.agent.prompts import PromptConfig
from stratarl.algos.advantages import AdvantageConfig, compute_advantages
from stratarl.algos.losses import LossConfig, policy_objective
from stratarl.engines.hf import HFEngine, HFEngineConfig
from stratarl.envs import make_tasks
from stratarl.envs.pool import EnvPool
from stratarl.models import load_model
from stratarl.rollout.groups import GroupConfig, sample_groups
from stratarl.rollout.runner import RunnerConfig, StepSampling
from stratarl.train.batching import collate
from stratarl.train.policy import forward
from stratarl.train.samples import SampleConfig, build_samples, pack_samples


def _chat_groups(tiny_path, tiny_tokenizer):
    eng = HFEngine(tiny_path, HFEngineConfig(dtype="float32"), tiny_tokenizer)
    tasks = make_tasks("twx:coin", "train", n=2)
    rcfg = RunnerConfig(max_steps=4, sampling=StepSampling(max_tokens=6), prompt=PromptConfig(mode="chat"))
    with EnvPool(num_workers=1) as pool:
        return sample_groups(eng, tiny_tokenizer, pool, tasks, GroupConfig(n_rollouts=3), rcfg, seed=3)


def test_rows_are_the_recorded_ids_and_packing_is_exact(tiny_path, tiny_tokenizer, assert_grads_close):
    groups = _chat_groups(tiny_path, tiny_tokenizer)
    for t in (t for g in groups for t in g.flat):  # chat mode: each prompt extends prompt + response
        for a, b in zip(t.steps, t.steps[1:], strict=False):
            assert b.prompt_ids[: len(a.prompt_ids) + len(a.response_ids)] == a.prompt_ids + a.response_ids
    # outcomes are all 0 for an untrained model: give them spread so advantages are not all zero
    for k, t in enumerate(groups[0].flat):
        t.outcome = float(k)
    adv = compute_advantages("grpo", groups, AdvantageConfig())
    rows = build_samples(groups, adv, SampleConfig())
    step = groups[0].flat[0].steps[1]
    assert rows[1].input_ids == step.prompt_ids + step.response_ids
    assert rows[1].loss_mask == [0] * len(step.prompt_ids) + [1] * len(step.response_ids)
    packed = pack_samples(rows)
    assert len(packed) == sum(len(g.flat) for g in groups) < len(rows)
    assert sum(sum(r.loss_mask) for r in packed) == sum(sum(r.loss_mask) for r in rows)

    model = load_model(tiny_path, dtype=torch.float64)  # fp64: packing is exact (bound: conftest)
    cfg = LossConfig(kl_coef=0.0)
    totals = {"total_tokens": float(sum(sum(r.loss_mask) for r in rows)), "total_rows": float(len(rows))}

    def grads(batch_rows):
        model.zero_grad()
        for r in batch_rows:
            b = collate([r], tiny_tokenizer.pad_token_id)
            out = forward(model, b)
            loss, _ = policy_objective(out.logp_BT, out.logp_BT.detach(), b.advantages_BT, b.loss_mask_BT, cfg, **totals)
            loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    a, b = grads(rows), grads(packed)
    assert_grads_close(a, b, model.config.num_hidden_layers)
