"""Environment ids: `family:name?param=value&param=value`, resolved to an `EnvSpec`.

    spec, params = parse_env_id("twx:cookingworld?numLocations=3&includeDoors=0")
    env = make_env("twx:cookingworld?numLocations=3")
    tasks = make_tasks("twx:cookingworld", "train", n=8)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from ..errors import SplitSizeError, UnknownNameError, UserError, closest
from ..types import Task
from .base import Env, EnvSpec, Param

SPLITS = ("train", "dev", "test")

# Other modules (tool and search environments) add their families here: prefix -> resolver.
# A resolver gets the part after "prefix:" and returns an EnvSpec, or raises UnknownNameError.
DYNAMIC: dict[str, Callable[[str], EnvSpec]] = {}


@cache
def builtin_specs() -> dict[str, EnvSpec]:
    # search and tools also register DYNAMIC
    from . import alfworld_gen, bfcl, datadir, sciworld, search, tools, twx

    specs = [*twx.specs(), *sciworld.specs(), *datadir.specs(), *alfworld_gen.specs(), *search.specs(),
             *tools.specs(), *bfcl.specs()]
    return {s.id: s for s in specs}


def all_specs() -> dict[str, EnvSpec]:
    """Every registered id, dynamic families included where they can list themselves."""
    return dict(builtin_specs())


def get_spec(env: str) -> EnvSpec:
    """The spec for an id without parameters; unknown ids name the closest valid ones."""
    specs = builtin_specs()
    if env in specs:
        return specs[env]
    prefix, _, rest = env.partition(":")
    if prefix in DYNAMIC and rest:
        return DYNAMIC[prefix](rest)
    raise UnknownNameError("environment", env, [*specs, *(f"{p}:<name>" for p in DYNAMIC)])


def parse_env_id(env_id: str) -> tuple[EnvSpec, dict[str, Any]]:
    """Split `id?k=v&k=v`, look the id up, and validate the parameters against the spec."""
    if not isinstance(env_id, str) or not env_id.strip():
        raise UserError("an environment id is required, e.g. twx:cookingworld")
    base, _, query = env_id.strip().partition("?")
    spec = get_spec(base)
    return spec, validate_params(spec, dict(parse_qsl(query, keep_blank_values=True)))


def validate_params(spec: EnvSpec, given: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, every value converted and range-checked; errors name the parameter."""
    out = {k: p.default for k, p in spec.params.items()}
    for key, value in given.items():
        if key not in spec.params:
            near = closest(key, spec.params)
            hint = f" Did you mean '{near[0]}'?" if near else ""
            valid = ", ".join(spec.params) or "none"
            raise UserError(f"unknown parameter '{key}' for {spec.id}.{hint} Valid parameters: {valid}.")
        out[key] = _convert(spec.id, key, spec.params[key], value)
    return out


def _convert(env: str, key: str, p: Param, value: Any) -> Any:
    try:
        if p.type is bool or (p.type is int and str(value).lower() in ("true", "false")):
            v: Any = int(str(value).lower() in ("1", "true", "yes"))
            if str(value).lower() not in ("0", "1", "true", "false", "yes", "no"):
                raise ValueError
        else:
            v = p.type(value)
    except (TypeError, ValueError):
        raise UserError(f"parameter '{key}' of {env} must be {p.type.__name__}, got '{value}'") from None
    if p.low is not None and v < p.low or p.high is not None and v > p.high:
        raise UserError(f"parameter '{key}' of {env} must be in [{p.low:g}, {p.high:g}], got {v}")
    if p.choices and v not in p.choices:
        raise UserError(f"parameter '{key}' of {env} must be one of {', '.join(p.choices)}, got '{v}'")
    return v


def make_env(env: str | Task) -> Env:
    """A fresh env instance for an id (with parameters) or for a Task's env and params."""
    if isinstance(env, Task):
        spec = get_spec(env.env)
        return spec.factory(validate_params(spec, env.params))
    spec, params = parse_env_id(env)
    return spec.factory(params)


def make_tasks(env_id: str, split: str, n: int | None = None, start: int = 0) -> list[Task]:
    """Tasks `start .. start+n` of a split (`n=None`: to its end), in the env's own order of seeds /
    variations. Asking for more than the split holds is a `SplitSizeError` naming its size, never a
    silently shorter list."""
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; valid splits: {', '.join(SPLITS)}")
    spec, params = parse_env_id(env_id)
    if spec.seeds is None:
        raise UserError(f"{spec.id} has no fixed task list")
    seeds = spec.seeds(split, params)
    end = len(seeds) if n is None else start + n
    if start >= len(seeds) or end > len(seeds):
        raise SplitSizeError(spec.id, split, len(seeds), n, start)
    return [Task(env=spec.id, split=split, index=i, seed=seeds[i], params=params) for i in range(start, end)]


def check_task_counts(*asked: tuple[str, str, int, int]) -> None:
    """A `SplitSizeError` unless each (env id, split, n, start) fits in its split (n = 0 asks for nothing):
    entry points check what they will ask for before they spend time training."""
    for env_id, split, n, start in asked:
        if n:
            make_tasks(env_id, split, n=n, start=start)


def task_at(env_id: str, split: str, index: int) -> Task:
    return make_tasks(env_id, split, n=1, start=index)[0]
