"""stratarl: step-level reinforcement learning for LLM agents on multi-turn text environments."""

__version__ = "0.1.0"
