"""Configuration: one dataclass per entry point, YAML files plus dotted command-line overrides.

    cfg = load_config(TrainConfig, "configs/quickstart.yaml", ["rl.lr=1e-5", "rollout.n_strategies=2"])

Every field of a config dataclass carries an attribute docstring (the string literal right below
it); `field_docs` reads them, so `stratarl config show` and the docs list every key with its
meaning. An unknown or misspelled key is an error that names the key and the closest valid keys;
a value of the wrong type is an error that names the key and the expected type.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from .errors import ConfigError, closest

if typing.TYPE_CHECKING:
    from .agent.format import FormatSource

C = TypeVar("C")


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    data: dict | None = None,
) -> C:
    """Build `cls` from a YAML file (or a dict), then apply `key.sub=value` overrides. A config class with
    `format_keys` that starts from a checkpoint takes the prompt format the checkpoint records for every
    format key left unset (agent/format.py)."""
    return load_config_and_format(cls, path, overrides, data)[0]


def load_config_and_format(
    cls: type[C],
    path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    data: dict | None = None,
) -> tuple[C, FormatSource | None]:
    """`load_config`, and where the agent format came from (None: `cls` has no format keys)."""
    raw: dict = dict(data or {})
    if path is not None:
        raw = _deep_merge(raw, read_yaml(path))
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    source = None
    keys = getattr(cls, "format_keys", None)
    if keys is not None:
        from .agent.format import fill_from_checkpoint

        source = fill_from_checkpoint(raw, keys)
    return build(cls, raw), source


def config_args(first: str | None, rest: typing.Sequence[str] | None) -> tuple[Path | None, list[str]]:
    """The command line's `[CONFIG] [KEY=VALUE ...]`: the YAML file is optional, so a first argument that
    holds `=` and is no file is the first override (`stratarl sft model=tiny data.tasks=50`)."""
    rest = list(rest or [])
    if first is None:
        return None, rest
    if "=" in first and not Path(first).is_file():
        return None, [first, *rest]
    return Path(first), rest


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse {path}: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, not {type(loaded).__name__}")
    return loaded


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=1e-5` -> ("a.b", 1e-05); the value is read as YAML (numbers, lists, true/false)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def build(cls: type[C], raw: dict, prefix: str = "") -> C:
    """A `cls` instance from a nested dict, checking every key and value type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or cls.__name__}' must be a mapping, got {raw!r}")
    hints = _hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in valid:
            raise ConfigError(_unknown_key(prefix + key, cls, prefix))
        kwargs[key] = _coerce(hints[key], value, prefix + key)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config class, nested sections expanded."""
    keys = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        sub = _dataclass_of(hints[f.name])
        keys.extend(all_keys(sub, f"{prefix}{f.name}.") if sub else [prefix + f.name])
    return keys


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass: {field name: the string literal below the field}."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                    docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, doc) for every leaf key of a config class."""
    rows = []
    hints, docs = _hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        sub = _dataclass_of(hints[f.name])
        if sub:
            rows.extend(describe(sub, f"{prefix}{f.name}."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        rows.append((prefix + f.name, _type_name(hints[f.name]), default, docs.get(f.name, "")))
    return rows


# ---------------------------------------------------------------------------------------------


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_of(tp: Any) -> type | None:
    return tp if dataclasses.is_dataclass(tp) and isinstance(tp, type) else None


def _unknown_key(key: str, cls: type, prefix: str) -> str:
    near = closest(key, [prefix + k for k in all_keys(cls)] + [k for k in all_keys(cls)])
    msg = f"unknown config key '{key}'"
    if near:
        msg += ". Did you mean: " + ", ".join(f"'{n if n.startswith(prefix) else prefix + n}'" for n in near) + "?"
    else:
        msg += f". Valid keys under '{prefix.rstrip('.') or cls.__name__}': " + ", ".join(
            f.name for f in dataclasses.fields(cls))
    return msg


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    sub = _dataclass_of(tp)
    if sub:
        return build(sub, value if value is not None else {}, key + ".")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key '{key}': {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        value = _yaml_bool_word(value, args)
        if value not in args:
            near = closest(str(value), [str(a) for a in args])
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(args)}.{hint}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    return _scalar(tp, value, key)


def _scalar(tp: Any, value: Any, key: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "1e-5" (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    return value


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def get_dotted(obj: Any, key: str) -> Any:
    """`obj`'s value at `a.b.c` (nested dicts or dataclasses); None where a part is missing."""
    for part in key.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[parts[-1]] = value


def _yaml_bool_word(value: Any, args: tuple) -> Any:
    """YAML 1.1 reads `off`/`on`/`no`/`yes` as booleans: give a Literal of such words its word back."""
    if not isinstance(value, bool):
        return value
    words = ("on", "yes", "true") if value else ("off", "no", "false")
    return next((w for w in words if w in args), value)


def markdown_table(cls: type) -> str:
    """The `describe` rows as a Markdown table; `|` inside a cell (e.g. `'a' | 'b'`) is escaped."""
    def cell(x: str) -> str:
        return x.replace("|", "\\|")

    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{k}` | {cell(t)} | `{cell(repr(d))}` | {cell(doc)} |" for k, t, d, doc in describe(cls)]
    return "\n".join(rows) + "\n"
