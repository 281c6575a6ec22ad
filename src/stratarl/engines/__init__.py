"""Generation engines behind one interface (see `base.Engine`)."""

from .base import Completion, Engine, SamplingParams

__all__ = ["Completion", "Engine", "SamplingParams"]
