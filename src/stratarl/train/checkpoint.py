"""Checkpoints written atomically, and exact resume.

    checkpoints/<iteration>/    model (HF safetensors + config) and tokenizer, loadable by transformers
                                (a LoRA policy: merged weights, and its adapters alone under adapter/)
                                trainer_state.pt: optimizer, scheduler, RNG states, iteration, data
                                position, dynamic-sampling buffer, horizon stage, critic head, ...
    checkpoints/last            the name of the newest complete checkpoint

A checkpoint is written into a temporary directory next to its final place and renamed into place,
so a crash never leaves a half-written `checkpoints/<iteration>`; `last` is replaced atomically too.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.lora import save_policy

STATE_FILE = "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(run_dir: str | Path, name: str, model: Any, tokenizer: Any, state: dict[str, Any],
                    keep: int = 0, weights: dict[str, Any] | None = None) -> Path:
    """Write `run_dir/checkpoints/<name>` atomically and point `last` at it; keep the newest `keep`
    numbered checkpoints (0 keeps all). A LoRA policy is written merged, its adapters under `adapter/`;
    `weights` replaces the model's own state dict (FSDP2: the gathered full one)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_policy(model, tmp, weights)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    torch.save(state, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _write_atomic(root / "last", name)
    if keep:
        _prune(root, keep)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    pointer = root / "last"
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / STATE_FILE).is_file():
            return path
    complete = [p for p in root.glob("[0-9]*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
    return max(complete, key=lambda p: int(p.name)) if complete else None


def load_state(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path) / STATE_FILE, weights_only=False)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(root: Path, keep: int) -> None:
    numbered = sorted((p for p in root.glob("[0-9]*") if p.is_dir()), key=lambda p: int(p.name))
    for old in numbered[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
