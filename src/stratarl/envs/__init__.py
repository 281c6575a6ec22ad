"""Environments: the `Env` protocol, the id registry, adapters, and the `EnvPool` of workers."""

from .base import Env, EnvSpec, Param
from .registry import SPLITS, all_specs, get_spec, make_env, make_tasks, parse_env_id, task_at

__all__ = ["Env", "EnvSpec", "Param", "SPLITS", "all_specs", "get_spec", "make_env", "make_tasks",
           "parse_env_id", "task_at"]
