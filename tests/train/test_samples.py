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


def _prompt_rows(vocab: int) -> list:
    """Three rows with one prompt (a group's rollouts at step 1), one row with another, signed advantages."""
    from stratarl.types import Sample

    g = torch.Generator().manual_seed(5)
    prompt = torch.randint(3, vocab, (30,), generator=g).tolist()
    other = torch.randint(3, vocab, (12,), generator=g).tolist()
    rows = []
    for k, (p, n) in enumerate([(prompt, 4), (prompt, 6), (other, 3), (prompt, 2)]):
        resp = torch.randint(3, vocab, (n,), generator=g).tolist()
        rows.append(Sample(input_ids=p + resp, loss_mask=[0] * len(p) + [1] * n, advantage=(-1.0) ** k * (1 + k),
                           engine_logprobs=[0.0] * len(p) + [-0.1 * (k + 1)] * n))
    return rows


def test_shared_prompt_rows_change_no_logprob_and_no_gradient(tiny_path, tiny_tokenizer, assert_grads_close):
    """share_prompts: one row with the prompt once and a branch per response; the branch mask and
    positions reproduce every trained token's logprob, and the token-mean policy gradient (fp64; bound:
    conftest) of the shared rows equals that of the plain rows."""
    from stratarl.train.samples import share_prompts

    model = load_model(tiny_path, dtype=torch.float64)
    pad = tiny_tokenizer.pad_token_id
    rows = _prompt_rows(model.config.vocab_size)
    shared = share_prompts(rows)
    assert len(shared) == 2 and shared[0].segments is not None and shared[1].segments is None
    assert shared[0].num_tokens == 29 + (1 + 4) + (1 + 6) + (1 + 2)
    assert sum(sum(r.loss_mask) for r in shared) == sum(sum(r.loss_mask) for r in rows)
    assert [x for x, m in zip(shared[0].engine_logprobs, shared[0].loss_mask, strict=True) if m] == \
        [-0.1] * 4 + [-0.2] * 6 + [-0.4] * 2

    plain = forward(model, collate(rows, pad)).logp_BT
    packed = forward(model, collate(shared, pad)).logp_BT
    want = torch.cat([plain[i, : rows[i].num_tokens][torch.tensor(rows[i].loss_mask).bool()] for i in (0, 1, 3)])
    got = packed[0, : shared[0].num_tokens][torch.tensor(shared[0].loss_mask).bool()]
    tol = (2 * model.config.num_hidden_layers + 1) * 2.0 ** -24 * 20 * 2  # as in test_update: fp32 RMSNorm
    assert float((got - want).abs().max()) < tol

    cfg = LossConfig(kl_coef=0.0)
    totals = {"total_tokens": float(sum(sum(r.loss_mask) for r in rows)), "total_rows": float(len(rows))}

    def grads(batch_rows):
        model.zero_grad()
        b = collate(batch_rows, pad)
        out = forward(model, b)
        loss, _ = policy_objective(out.logp_BT, out.logp_BT.detach(), b.advantages_BT, b.loss_mask_BT, cfg, **totals)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    assert_grads_close(grads(shared), grads(rows), model.config.num_hidden_layers)


def test_prompt_sharing_is_left_out_where_it_saves_little():
    """Chat-mode rows share only their first prompt and then run long: sharing would cost the causal
    kernel for a small saving, so they stay plain."""
    from stratarl.train.samples import share_prompts
    from stratarl.types import Sample

    prompt = list(range(3, 23))
    rows = [Sample(input_ids=prompt + [30 + k] * 40, loss_mask=[0] * 20 + [1] * 40) for k in range(3)]
    assert share_prompts(rows) == rows
    assert len(share_prompts(rows, max_fraction=0.9)) == 1
