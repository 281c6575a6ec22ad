"""One PPO update of the real tiny model, in one process or as one rank of a `torchrun` launch.

    torchrun --nproc_per_node 2 tests/train/ddp_worker.py OUT_DIR TINY_PATH ddp|fsdp2

Each case's parameters after the update (and its stats) go to OUT_DIR/<case>.pt from rank 0.
`tests/train/test_distributed.py` runs the same cases in one process and compares.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import torch

from stratarl.algos.losses import LossConfig
from stratarl.errors import UserError
from stratarl.models import load_model
from stratarl.train import distributed
from stratarl.train.policy import make_value_head
from stratarl.train.update import Critic, policy_step, ppo_update, score
from stratarl.types import Sample

PAD = 0
# (prompt, response) lengths: uneven, so the ranks' shares of a mini-batch hold different token counts
LENGTHS = [(9, 4), (5, 11), (14, 2), (7, 7), (3, 13), (12, 6), (6, 3)]
CASES = {
    # token-mean GRPO-style rows with KL and entropy, no clipping: any change of gradient scale shows;
    # 7 rows in 4 mini-batches: the last one has a single row, so rank 1 has none there
    "grpo": {"critic": None, "agg": "token-mean", "minibatches": 4, "epochs": 2, "clip": 0.0},
    # step-GAE: a value head on the policy, per-row aggregation, gradient clipping
    "step_gae": {"critic": "head", "agg": "seq-mean-token-mean", "minibatches": 2, "epochs": 1, "clip": 0.5},
    # token-level GAE with a separate critic backbone (its output head feeds no loss)
    "token_gae": {"critic": "separate", "agg": "token-mean", "minibatches": 1, "epochs": 1, "clip": 0.5},
}


def samples(model: torch.nn.Module, case: dict, vocab: int) -> list[Sample]:
    gen = torch.Generator().manual_seed(7)
    rows = []
    for i, (p, r) in enumerate(LENGTHS):
        ids = torch.randint(1, vocab, (p + r,), generator=gen).tolist()
        adv = float(torch.randn((), generator=gen))
        s = Sample(input_ids=ids, loss_mask=[0] * p + [1] * r, advantage=adv, weight=1.0 + 0.1 * i)
        if case["critic"] == "separate":
            s.token_advantages = [0.0] * p + (torch.randn(r, generator=gen)).tolist()
            s.returns = torch.randn(r, generator=gen).tolist()
        elif case["critic"] == "head":
            s.returns = float(torch.randn((), generator=gen))
        rows.append(s)
    score(model, rows, PAD, bf16=False, token_budget=4096)
    for s in rows:  # a reference policy a little away from the behaviour policy
        s.ref_logprobs = [x + 0.05 * m for x, m in zip(s.old_logprobs, s.loss_mask, strict=True)]
    return rows


def run_case(name: str, tiny_path: Path, dp: distributed.DataParallel | None) -> dict:
    """The parameters (policy and critic) after one update, and the update's stats."""
    case = CASES[name]
    torch.manual_seed(0)
    model = load_model(tiny_path)
    critic = None
    if case["critic"] is not None:
        critic = Critic(head=make_value_head(model, seed=3), token_level=case["critic"] == "separate",
                        model=copy.deepcopy(model) if case["critic"] == "separate" else None)
    rows = samples(model, case, model.config.vocab_size)
    if dp is not None:  # before the optimizer: FSDP2 replaces the parameters by sharded ones
        distributed.wrap(dp, policy_step(model, critic))
    params = list(model.parameters()) + (critic.parameters() if critic else [])
    # SGD: AdamW's first step is ~lr·sign(g), which turns rounding noise on near-zero gradients into
    # differences of ~lr; SGD keeps the comparison as tight as the gradients themselves
    opt = torch.optim.SGD(params, lr=0.02)
    loss_cfg = LossConfig(loss_agg=case["agg"], kl_coef=0.05, entropy_coef=0.01)
    stats = ppo_update(model, opt, None, rows, loss_cfg, epochs=case["epochs"], minibatches=case["minibatches"],
                       token_budget=40, grad_clip=case["clip"], pad_id=PAD, bf16=False,
                       generator=torch.Generator().manual_seed(1), critic=critic, dp=dp)
    named = dict(model.named_parameters())
    if critic is not None:
        named.update({f"critic.{k}": v for k, v in critic.head.named_parameters()})
        if critic.model is not None:
            named.update({f"critic_model.{k}": v for k, v in critic.model.named_parameters()})
    return {"params": {k: v.detach().clone() for k, v in named.items()}, "stats": stats.__dict__}


def main(out: Path, tiny_path: Path, strategy: str) -> None:
    dp = distributed.init(strategy)
    assert dp is not None and dp.world_size == 2, "run under torchrun --nproc_per_node 2"
    for name in CASES:
        result = run_case(name, tiny_path, dp)
        full = distributed.full_state_dict(dp.module, dp)  # FSDP2: gather the shards (every rank)
        if dp.is_main:
            result["params"] = _rename(full, result["params"])
            torch.save(result, out / f"{name}.pt")
    # ranks holding different rows: every rank must stop, none may train on its own batch
    rows = [Sample(input_ids=[1, 2, 3], loss_mask=[0, 1, 1], advantage=float(dp.rank))]
    try:
        distributed.check_same_rows(dp, rows)
    except UserError as e:
        (out / f"mismatch_{dp.rank}.txt").write_text(str(e))
    distributed.close(dp)


def _rename(full: dict, params: dict) -> dict:
    """The gathered state dict (PolicyStep names) under the names `run_case` uses."""
    prefixes = {"model.": "", "value_head.": "critic.", "critic_model.": "critic_model."}
    out = {}
    for k, v in full.items():
        k = k.removeprefix("module.")
        for p, q in prefixes.items():
            if k.startswith(p):
                name = q + k.removeprefix(p)
                if name in params:
                    out[name] = v.detach().clone()
    assert out.keys() == params.keys(), sorted(set(params) ^ set(out))
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
    # The results are on disk and the group is closed; skip the interpreter's teardown, where a gloo
    # thread still joinable at exit once aborted rank 1 ("terminate called without an active exception",
    # one CI run in ~10) after every assertion had passed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
