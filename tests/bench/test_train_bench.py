"""`stratarl bench train`'s baseline computes what the trainer computes (so its ratio compares like with
like), and bad input is refused."""

import pytest
import torch

from stratarl.bench.train import TrainBenchConfig, plain_logprobs, train_config
from stratarl.errors import UnknownNameError
from stratarl.models import load_model
from stratarl.train.batching import collate
from stratarl.train.policy import forward
from stratarl.types import Sample


def test_plain_logprobs_equal_the_trainers_at_trained_positions(tiny_path, tiny_tokenizer):
    """Full logits + full log-softmax (baseline) vs the head on trained positions only (trainer), fp64;
    the two paths meet at the fp32 RMSNorms: bound (2L + 1)·2^-24 relative on logits below 20, twice."""
    model = load_model(tiny_path, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    rows = [Sample(input_ids=torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist(), loss_mask=[0] * (n - 4) + [1] * 4)
            for n in (9, 17, 12)]
    pad = tiny_tokenizer.pad_token_id
    mask = collate(rows, pad).loss_mask_BT.bool()
    ours = forward(model, collate(rows, pad)).logp_BT[mask]
    plain = plain_logprobs(model, rows, pad, bf16=False)[mask]
    tol = (2 * model.config.num_hidden_layers + 1) * 2.0 ** -24 * 20 * 2
    assert float((ours - plain).abs().max()) < tol


def test_unknown_model_is_named():
    with pytest.raises(UnknownNameError, match="tiny2"):
        train_config(TrainBenchConfig(model="tiny2"))


def test_fitted_exponent_reads_linear_and_quadratic_growth():
    from stratarl.bench.train import fitted_exponent

    assert abs(fitted_exponent([16, 32, 64], [3.0, 6.0, 12.0]) - 1.0) < 1e-12
    assert abs(fitted_exponent([7, 14, 28], [49.0, 196.0, 784.0]) - 2.0) < 1e-12
    # 2 s fixed + 0.1 s per episode: between the two, closer to linear at the top end
    assert 0.4 < fitted_exponent([16, 32, 64], [3.6, 5.2, 8.4]) < 0.8
