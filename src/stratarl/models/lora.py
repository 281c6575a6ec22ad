"""LoRA adapters on the policy, through `peft` (extra `[lora]`).

Only the adapters train (and a critic's value head, which is its own module); the base weights stay
frozen. The rollout engine loads full weights after every update, so it gets the *merged* weights
W + (α/r)·B·A under the base model's own parameter names (`merged_state_dict`), computed without
touching the trained model: merging and unmerging in place would add rounding to the frozen base at
every iteration. A checkpoint holds the merged model in plain HF format (what `stratarl eval` and
`transformers` load) and the adapters alone under `adapter/` (what a resumed run loads onto the base).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError

ADAPTER_DIR = "adapter"

# Attention and MLP projections of Qwen2 (the tiny model) and Llama (SmolLM2) blocks alike.
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoRAConfig:
    """Low-rank adapters on the policy's linear layers (peft)."""

    enabled: bool = False
    """Train LoRA adapters instead of all weights (needs the `lora` extra: `pip install stratarl[lora]`)."""
    r: int = 8
    """Rank of the adapters."""
    alpha: float = 16.0
    """Scale numerator: the update is (alpha / r)·B·A."""
    dropout: float = 0.0
    """Dropout on the adapters' input (0 keeps training deterministic)."""
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    """Names of the linear layers that get adapters (default: every attention and MLP projection)."""


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise UserError("lora.enabled needs the peft package: pip install 'stratarl[lora]'") from None
    return peft


def is_lora(model: nn.Module) -> bool:
    """True for a model with peft adapters (a `PeftModel`)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def apply_lora(model: nn.Module, cfg: LoRAConfig, adapter: str | Path | None = None, seed: int = 0) -> nn.Module:
    """`model` with trainable adapters and every other weight frozen: fresh ones (B = 0, so the policy
    is unchanged; A drawn from `seed`, leaving the global RNG as it was), or the trained ones saved in
    `adapter` (a checkpoint's `adapter/` directory)."""
    peft = _peft()
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in cfg.target_modules if t not in names]
    if adapter is None and missing:
        raise UserError(f"lora.target_modules {missing} name no linear layer of this model; "
                        f"its linear layers are {sorted(names)}")
    lcfg = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                           target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        # peft asks transformers a deprecated question; nothing for the user to do
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if adapter is not None:
            return peft.PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        torch.manual_seed(seed)  # peft draws A from the global RNG, unseeded at this point of a run
        return peft.get_peft_model(model, lcfg)


def _lora_layers(model: nn.Module) -> dict[str, tuple[float, bool]]:
    """Base-model module name -> (scale α/r, fan_in_fan_out) of every layer with the active adapter."""
    from peft.tuners.lora import LoraLayer

    adapter = model.active_adapter
    return {name: (m.scaling[adapter], m.fan_in_fan_out) for name, m in model.get_base_model().named_modules()
            if isinstance(m, LoraLayer) and adapter in m.lora_A}


def merged_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None
                      ) -> dict[str, torch.Tensor]:
    """The policy's weights with the adapters folded in, W + (α/r)·B·A, under the base model's names
    (what the engine and `transformers` load). `state_dict`: the model's own, when already gathered
    (FSDP2); default `model.state_dict()`. The model is not modified."""
    if not is_lora(model):
        return state_dict if state_dict is not None else model.state_dict()
    sd = state_dict if state_dict is not None else model.state_dict()
    prefix, adapter = "base_model.model.", model.active_adapter
    out = {k.removeprefix(prefix).replace(".base_layer.", "."): v.detach() for k, v in sd.items() if ".lora_" not in k}
    for name, (scale, fan_in_fan_out) in _lora_layers(model).items():
        a = sd[f"{prefix}{name}.lora_A.{adapter}.weight"].detach()
        b = sd[f"{prefix}{name}.lora_B.{adapter}.weight"].detach()
        delta = (b.float() @ a.float()) * scale
        w = out[f"{name}.weight"]
        out[f"{name}.weight"] = (w.float() + (delta.T if fan_in_fan_out else delta)).to(w.dtype)
    return out


def save_policy(model: nn.Module, path: str | Path, weights: dict[str, Any] | None = None) -> None:
    """Write `model` as a plain HF checkpoint into `path`; for a LoRA policy, its merged weights there
    and the adapters alone under `path/adapter/`. `weights`: the full state dict to write instead of
    the model's own (FSDP2 shards it)."""
    path = Path(path)
    if not is_lora(model):
        model.save_pretrained(path, state_dict=weights, safe_serialization=True)
        return
    model.save_pretrained(path / ADAPTER_DIR)
    model.get_base_model().save_pretrained(path, state_dict=merged_state_dict(model), safe_serialization=True)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
