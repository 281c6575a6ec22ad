"""Checkpoints written atomically, and exact resume.

    checkpoints/<iteration>/    model (HF safetensors + config) and tokenizer, loadable by transformers
                                (a LoRA policy: merged weights, and its adapters alone under adapter/)
                                agent.json: the prompt format the policy was trained with (agent/format.py)
                                trainer_state.pt: optimizer, scheduler, RNG states, iteration, data
                                position, dynamic-sampling buffer, horizon stage, critic head, ...
    checkpoints/last            a relative symlink to the newest complete checkpoint: a checkpoint path
                                like any other (`stratarl eval runs/<name>/checkpoints/last`)

A checkpoint is written into a temporary directory next to its final place and renamed into place,
so a crash never leaves a half-written `checkpoints/<iteration>`; `last` is replaced atomically too
(a new symlink renamed over the old one).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..agent.format import AgentFormat, write_format
from ..models.lora import save_policy

STATE_FILE = "trainer_state.pt"
LAST = "last"


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(run_dir: str | Path, name: str, model: Any, tokenizer: Any, state: dict[str, Any],
                    keep: int = 0, weights: dict[str, Any] | None = None, agent: AgentFormat | None = None) -> Path:
    """Write `run_dir/checkpoints/<name>` atomically and point `last` at it; keep the newest `keep`
    numbered checkpoints (0 keeps all). A LoRA policy is written merged, its adapters under `adapter/`;
    `weights` replaces the model's own state dict (FSDP2: the gathered full one); `agent` is the prompt
    format the policy was trained with (`agent.json`)."""
    if name == LAST:
        raise ValueError(f"'{LAST}' names the pointer to the newest checkpoint, not a checkpoint")
    root, tmp = _staging(run_dir, name)
    save_policy(model, tmp, weights)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    torch.save(state, tmp / STATE_FILE)
    if agent is not None:
        write_format(tmp, agent)
    final = _install(root, name, tmp)
    if keep:
        _prune(root, keep)
    return final


def copy_checkpoint(source: Path, run_dir: str | Path, name: str) -> Path:
    """A copy of checkpoint directory `source` as `run_dir/checkpoints/<name>`, written atomically like
    `save_checkpoint`, and `last` pointed at it."""
    root, tmp = _staging(run_dir, name)
    shutil.copytree(source, tmp)
    return _install(root, name, tmp)


def _staging(run_dir: str | Path, name: str) -> tuple[Path, Path]:
    """(`run_dir/checkpoints`, a fresh temporary path beside it where checkpoint `name` is written)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    return root, tmp


def _install(root: Path, name: str, tmp: Path) -> Path:
    """Rename the finished `tmp` into `root/<name>` (replacing an older one) and point `last` at it."""
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _point_last(root, name)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (its own directory, not `last`), or None."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / LAST
    if pointer.is_symlink() or pointer.is_file():  # a file: runs written before `last` was a symlink
        path = root / (os.readlink(pointer) if pointer.is_symlink() else pointer.read_text().strip())
        if (path / STATE_FILE).is_file():
            return path
    complete = [p for p in root.glob("[0-9]*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
    return max(complete, key=lambda p: int(p.name)) if complete else None


def load_state(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path) / STATE_FILE, weights_only=False)


def _point_last(root: Path, name: str) -> None:
    """`last` -> `name`: a relative symlink (the run directory can move), made under a temporary name and
    renamed over the old one, so a reader always finds a complete checkpoint there."""
    tmp = root / f".{LAST}-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(name, tmp)
    os.replace(tmp, root / LAST)


def _prune(root: Path, keep: int) -> None:
    numbered = sorted((p for p in root.glob("[0-9]*") if p.is_dir()), key=lambda p: int(p.name))
    for old in numbered[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
