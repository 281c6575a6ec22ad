"""Models: names resolved to local HF checkpoint directories (built or imported once into the
cache), and loading helpers. Nothing is fetched from a model hub."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..errors import UserError, closest
from .cache import build_once, cache_root
from .tiny import CHAT_TEMPLATE, EOS, PAD, SPECIAL_TOKENS, TAG_TOKENS, TinyConfig, build_tiny

NAMES = ("tiny", "smollm2-135m")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def resolve_model(name_or_path: str | Path, tiny: TinyConfig | None = None) -> Path:
    """A local checkpoint directory: `tiny` is built and `smollm2-135m` imported on first use."""
    text = str(name_or_path)
    _quiet_transformers()
    if text == "tiny":
        cfg = tiny or TinyConfig()
        return build_once(cfg.cache_name(), lambda out: build_tiny(cfg, out))
    if text == "smollm2-135m":
        from .smollm2 import import_smollm2

        return build_once("smollm2-135m", import_smollm2)
    path = checkpoint_dir(text)
    if path is not None:
        return path
    near = closest(text, NAMES)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    raise UserError(f"unknown model '{text}': not one of {', '.join(NAMES)} and not a checkpoint directory "
                    f"(no config.json there).{hint}")


def checkpoint_dir(name_or_path: str | Path) -> Path | None:
    """The local checkpoint directory a path names, or None. `checkpoints/last` is a symlink to the newest
    checkpoint; in runs written before it was one, it is a file holding that checkpoint's name."""
    if str(name_or_path) in NAMES:
        return None
    path = Path(name_or_path).expanduser()
    if path.name == "last" and path.is_file():
        path = path.parent / path.read_text().strip()
    return path if (path / "config.json").is_file() else None


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(resolve_model(path)))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, dtype: Any = None) -> Any:
    """A causal LM in eval mode (fp32 unless `dtype` says otherwise)."""
    import torch
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(str(resolve_model(path)), dtype=dtype or torch.float32)
    return model.eval()


def checkpoint_parameters(path: Path) -> tuple[int, str]:
    """Parameter count and stored dtype of a safetensors checkpoint, read from the file headers."""
    from safetensors import safe_open

    total, dtypes = 0, set()
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                sl = f.get_slice(name)
                total += math.prod(sl.get_shape())
                dtypes.add(sl.get_dtype())
    return total, "/".join(sorted(dtypes)) or "unknown"


def model_info(name_or_path: str | Path) -> dict[str, Any]:
    """What `stratarl model info` shows: size, stored dtype, vocabulary, context, chat template."""
    from transformers import AutoConfig

    path = resolve_model(name_or_path)
    cfg = AutoConfig.from_pretrained(str(path))
    tok = load_tokenizer(path)
    params, dtype = checkpoint_parameters(path)
    return {
        "path": str(path), "architecture": (cfg.architectures or ["?"])[0], "parameters": params, "dtype": dtype,
        "vocab": len(tok), "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
        "heads": f"{cfg.num_attention_heads} query / {cfg.num_key_value_heads} key-value",
        "context": cfg.max_position_embeddings, "tied_embeddings": bool(cfg.tie_word_embeddings),
        "chat_template": bool(tok.chat_template), "eos": tok.eos_token, "pad": tok.pad_token,
        "quantization_config": hasattr(cfg, "quantization_config"),
    }


__all__ = ["CHAT_TEMPLATE", "EOS", "NAMES", "PAD", "SPECIAL_TOKENS", "TAG_TOKENS", "TinyConfig", "cache_root",
           "checkpoint_parameters", "load_model", "load_tokenizer", "model_info", "resolve_model"]
