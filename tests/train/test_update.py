"""The update's fast paths against the plain computation: the reused behaviour forward."""

import dataclasses

import torch

from stratarl.algos.losses import LossConfig
from stratarl.models import load_model
from stratarl.train.config import OptimSection
from stratarl.train.rl import reuses_update_forward
from stratarl.train.update import ppo_update, score
from stratarl.types import Sample


def _rows(vocab: int, seed: int = 0) -> list[Sample]:
    """Hand-made rows of different lengths: a prompt, then 3-6 trained tokens with a signed advantage."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k, (prompt, resp) in enumerate([(9, 3), (14, 5), (5, 6), (11, 4)]):
        ids = torch.randint(3, vocab, (prompt + resp,), generator=g).tolist()
        rows.append(Sample(input_ids=ids, loss_mask=[0] * prompt + [1] * resp, advantage=(-1.0) ** k * (0.5 + k)))
    return rows


def _update_grads(model, rows, pad_id):
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the gradient stays behind, the weights do not move
    stats = ppo_update(model, opt, None, rows, LossConfig(kl_coef=0.0), epochs=1, minibatches=1, token_budget=40,
                       grad_clip=0.0, pad_id=pad_id, bf16=False, generator=torch.Generator().manual_seed(0))
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]), stats


def test_reused_forward_equals_the_separate_behaviour_pass(tiny_path, tiny_tokenizer, assert_grads_close):
    """One epoch of one mini-batch: taking the update's own detached logprobs as the old ones gives the
    gradient of scoring them in a separate pass first (fp64; the bound is conftest's), with every ratio
    exactly 1 (no clipping, approx KL 0)."""
    model = load_model(tiny_path, dtype=torch.float64)
    pad = tiny_tokenizer.pad_token_id
    rows = _rows(model.config.vocab_size)
    reused, stats = _update_grads(model, rows, pad)
    assert all(r.old_logprobs is None for r in rows)
    assert stats.approx_kl == 0.0 and stats.clip_fraction == 0.0

    scored = [dataclasses.replace(r) for r in rows]
    score(model, scored, pad, bf16=False, token_budget=40)  # micro-batches of another shape than the update's
    separate, _ = _update_grads(model, scored, pad)
    assert_grads_close(reused, separate, model.config.num_hidden_layers)
    assert float(reused.norm()) > 0.0


def test_the_update_measures_the_engine_mismatch(tiny_path, tiny_tokenizer):
    """Without a separate pass the update's forward reports |log π_trainer − log π_engine|: engine
    logprobs offset by exactly ±0.25 on trained tokens read back as mean 0.25, max 0.25."""
    model = load_model(tiny_path, dtype=torch.float64)
    pad = tiny_tokenizer.pad_token_id
    rows = _rows(model.config.vocab_size, seed=1)
    score(model, rows, pad, bf16=False, token_budget=40)
    for k, r in enumerate(rows):
        off = 0.25 if k % 2 else -0.25
        r.engine_logprobs = [o + off * m for o, m in zip(r.old_logprobs, r.loss_mask, strict=True)]
        r.old_logprobs = None
    _, stats = _update_grads(model, rows, pad)
    # the scoring pass (no grad) and the update's forward (grad) may take different SDPA paths, which
    # meet at the fp32 RMSNorms: (2L + 1)·2^-24 relative on logits of magnitude < 20 bounds the logprob
    # difference by 9·6e-8·20·2 ≈ 2e-5 (measured: 4e-7)
    tol = (2 * model.config.num_hidden_layers + 1) * 2.0 ** -24 * 20 * 2
    assert abs(stats.engine_trainer_abs - 0.25) < tol and abs(stats.engine_trainer_max - 0.25) < tol


def test_the_separate_pass_runs_only_where_it_differs():
    assert reuses_update_forward(OptimSection(epochs=1, minibatches=1))
    assert not reuses_update_forward(OptimSection(epochs=2, minibatches=1))
    assert not reuses_update_forward(OptimSection(epochs=1, minibatches=2))
