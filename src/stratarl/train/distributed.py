"""Data-parallel training over `torch.distributed`: DDP, or FSDP2 (`fully_shard`) for models that do
not fit on one device. `torchrun` starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; nothing here replaces torch's own machinery.

How one optimizer step of W ranks equals the single-process step on the same global batch:

- every rank holds the whole batch of rows, and the same seed gives every rank the same mini-batch
  permutation (`batching.split_minibatches`);
- each mini-batch is sorted by length and rank r trains rows r, r+W, r+2W, ... of it (`shard`), which
  also spreads the tokens evenly;
- every micro-batch loss is divided by the *mini-batch's* totals (trained tokens, trained rows) over all
  ranks, not by the rank's own: the ranks' partial losses then add up to the single-process loss. A
  per-rank token-mean would weight each token by 1/(its rank's token count), which differs from the
  global token-mean whenever the ranks hold different numbers of tokens;
- DDP and FSDP2 *average* gradients over ranks, so each rank's loss is multiplied by W: the average of
  W·g_r is Σ_r g_r, the single-process gradient;
- gradients are synchronised once per mini-batch, on the rank's last micro-batch (`grad_sync`); a rank
  without a row in a mini-batch runs one micro-batch with zero weight so that every rank joins the
  all-reduce; and a non-finite loss does not stop a rank early (its NaN gradient reaches every rank
  through the all-reduce, so all ranks skip that step together).

Every rank builds the same batch: with `distributed.shard_rollouts` (the default) each rank rolls out
its share of the iteration's tasks and the groups are all-gathered (`gather_shards`); without it every
rank runs all rollouts itself (same seeds). `check_same_rows` checks the result. Rank 0 alone writes.

The FSDP2 path is written against torch's public API (`torch.distributed.fsdp.fully_shard`,
`torch.distributed.checkpoint.state_dict`) and tested here on CPU with gloo (the update, and
`stratarl train`); under FSDP2 every model pass goes through a sharded root (`PolicyStep`) and
checkpoints gather full state dicts on every rank. Nothing here is verified on GPUs with NCCL
(docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError

T = TypeVar("T")


@dataclass
class DataParallel:
    """This process's place in a data-parallel run, and the wrapped training module."""

    rank: int
    """Global rank (0 writes logs and checkpoints)."""
    world_size: int
    """Number of processes."""
    local_rank: int
    """Rank on this machine (its GPU index)."""
    device: torch.device
    """Where this rank trains."""
    strategy: str = "ddp"
    """`ddp` or `fsdp2`."""
    module: nn.Module | None = None
    """The policy step (policy + critic) wrapped by DDP or sharded by FSDP2; set by `wrap`."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True inside a process started by `torchrun` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(strategy: str = "ddp", backend: str = "auto", timeout_s: float = 1800.0) -> DataParallel | None:
    """Join the process group `torchrun` described in the environment (gloo on CPUs, nccl on GPUs);
    None when this is a single process."""
    if not launched():
        return None
    if strategy not in ("ddp", "fsdp2"):
        raise UserError(f"unknown distributed strategy '{strategy}': use ddp or fsdp2")
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DataParallel(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, device=device,
                        strategy=strategy)


def close(dp: DataParallel | None) -> None:
    """Leave the process group once every rank is done: a rank that tears gloo down while a peer is still
    in a collective makes that peer abort ("terminate called without an active exception")."""
    if dp is not None and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(dp: DataParallel, step: nn.Module) -> nn.Module:
    """Wrap the policy step (`policy.PolicyStep`: policy, value head, separate critic) for data-parallel
    training and keep it as `dp.module`. The module's forward must be the whole teacher-forced pass,
    since DDP and FSDP2 act through hooks on it. Build the optimizer after this: FSDP2 replaces the
    parameters by sharded ones."""
    step.to(dp.device)
    if dp.strategy == "fsdp2":
        dp.module = _fully_shard(step)
        return dp.module
    from torch.nn.parallel import DistributedDataParallel

    # A separate critic backbone computes logits the loss never uses: its output head gets no gradient.
    unused = getattr(step, "critic_model", None) is not None
    dp.module = DistributedDataParallel(step, device_ids=[dp.device.index] if dp.device.type == "cuda" else None,
                                        find_unused_parameters=unused)
    return dp.module


def _fully_shard(step: nn.Module) -> nn.Module:
    """FSDP2: one group per decoder layer (all-gathered just before it runs), the rest in the root."""
    from torch.distributed.fsdp import fully_shard

    for model in (step.model, getattr(step, "critic_model", None)):
        if model is None:
            continue
        for layer in model.get_decoder().layers:
            fully_shard(layer)
    fully_shard(step)
    return step


def shard(rows: Sequence[T], dp: DataParallel | None) -> list[T]:
    """This rank's rows of a mini-batch: rows rank, rank + W, ... (all rows without `dp`)."""
    if dp is None:
        return list(rows)
    return list(rows[dp.rank::dp.world_size])


@contextlib.contextmanager
def grad_sync(dp: DataParallel | None, enabled: bool) -> Iterator[None]:
    """Forward and backward of one micro-batch; gradients are reduced over ranks only when `enabled`
    (the rank's last micro-batch of a mini-batch), accumulated locally otherwise."""
    if dp is None or dp.module is None:
        yield
        return
    if dp.strategy == "fsdp2":
        dp.module.set_requires_gradient_sync(enabled)
        yield
        return
    with contextlib.nullcontext() if enabled else dp.module.no_sync():
        yield


def all_sum(dp: DataParallel | None, *values: float) -> list[float]:
    """The sums of `values` over ranks (the values themselves without `dp`)."""
    if dp is None:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=dp.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def check_same_rows(dp: DataParallel | None, rows: Sequence[Any]) -> None:
    """Raise unless every rank holds the same training rows (ids, masks, advantages, weights): the
    equivalence above needs it, and ranks that sample their own rollouts could silently disagree."""
    if dp is None:
        return
    h = hashlib.sha256()
    for s in rows:
        h.update(repr((s.input_ids, s.loss_mask, s.advantage, s.token_advantages, s.weight)).encode())
    v = int.from_bytes(h.digest()[:7], "little")  # < 2**56: exact in int64
    t = torch.tensor([v, -v], dtype=torch.int64, device=dp.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != v or -int(t[1]) != v:
        raise UserError(f"rank {dp.rank} holds other training rows than another rank: data parallel needs every "
                        "rank to build the same batch (same seeds, deterministic rollouts)")


def gather_shards(dp: DataParallel, items: list[T], extra: dict[str, Any]) -> tuple[list[T], dict[str, Any]]:
    """Undo `shard` after each rank worked on its share: every rank gets all items in their original
    order (item i came from rank i mod W, as its (i div W)-th), and the union of the ranks' `extra`."""
    gathered: list[Any] = [None] * dp.world_size
    dist.all_gather_object(gathered, (items, extra))
    out: list[T] = []
    for i in range(sum(len(g[0]) for g in gathered)):
        out.append(gathered[i % dp.world_size][0][i // dp.world_size])
    merged: dict[str, Any] = {}
    for _, e in gathered:
        merged.update(e)
    return out, merged


def norm_value(norm: Any) -> float:
    """A gradient norm as a float (FSDP2's `clip_grad_norm_` returns a DTensor)."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if full is not None else norm)


def full_state_dict(model: nn.Module, dp: DataParallel | None, every_rank: bool = False) -> dict[str, torch.Tensor]:
    """The whole, unsharded state dict of `model` on the CPU (a collective under FSDP2: every rank calls
    it). Under FSDP2 only rank 0 receives it (the others get {}), unless `every_rank` (each rank's engine
    needs the weights when rollouts are sharded)."""
    if dp is None or dp.strategy != "fsdp2":
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not every_rank:
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v.cpu() for k, v in full.items()}


def sharded(dp: DataParallel | None) -> bool:
    return dp is not None and dp.strategy == "fsdp2"


def shard_frozen(dp: DataParallel, model: nn.Module) -> nn.Module:
    """FSDP2: a frozen model (the KL reference) sharded like the policy, as a `PolicyStep` root whose
    forward is the teacher-forced pass (`update.score` calls it)."""
    from .policy import PolicyStep

    step = PolicyStep(model.to(dp.device))
    return _fully_shard(step)


def full_optimizer_state(dp: DataParallel | None, module: nn.Module | None, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's whole state on the CPU (a collective under FSDP2, whose state is sharded)."""
    if not sharded(dp):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(dp: DataParallel | None, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load what `full_optimizer_state` saved: each rank takes its shards under FSDP2."""
    if not sharded(dp):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(dp.module, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def barrier(dp: DataParallel | None) -> None:
    if dp is not None:
        dist.barrier()
