"""The prompt format a policy was trained with, recorded in its checkpoint (`agent.json`).

A policy acts well only in the format it was trained on: the prompt layout (`window` or `chat`, the
steps of history shown, `<think>`, the primed reply, ...) and whether it writes a strategy first. Every
checkpoint that `stratarl sft`, `train`, `calibrate` and `autocoa` write holds this record, and an entry
point that starts from a checkpoint (`stratarl eval MODEL`, `train` / `sft` with `model=<checkpoint>`,
`calibrate` with `warmup_checkpoint=`) takes it for every format key the user did not set:

    checkpoint's agent.json  <  what the YAML file, the dotted overrides or the flags set

Each such config class names its format keys (`format_keys`); `config.load_config` fills them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from ..config import build, get_dotted, set_dotted, to_dict
from ..errors import ConfigError
from .prompts import PromptConfig

FORMAT_FILE = "agent.json"
Protocol = Literal["step", "coa", "messages"]


@dataclass
class AgentFormat:
    """How a policy was prompted when it was trained."""

    protocol: Protocol = "step"
    """`step`: the runner's step prompts (`prompt`, `strategy`); `coa`: AutoCoA's one-conversation protocol
    (autocoa/protocol.py); `messages`: OpenAI-format conversations from a file (`stratarl sft`)."""
    prompt: PromptConfig | None = None
    """The step and strategy prompt layout (`step` only)."""
    strategy: bool = False
    """It writes a strategy before acting (StraTA)."""


@dataclass(frozen=True)
class FormatKeys:
    """Where an entry point's config holds the agent format, as dotted keys."""

    model: tuple[str, ...]
    """Keys naming the checkpoint the entry point starts from; the first one set is used."""
    prompt: str
    """The `PromptConfig` section."""
    strategy: str | None = None
    """The strategy on/off key (None: the entry point has none)."""


@dataclass
class FormatSource:
    """Where an entry point's agent format came from."""

    checkpoint: str = ""
    """The starting checkpoint ('' when the model is no local checkpoint)."""
    recorded: AgentFormat | None = None
    """The format that checkpoint records (None: it records none, e.g. written before `agent.json`)."""
    filled: list[str] = field(default_factory=list)
    """Format keys taken from the checkpoint."""
    explicit: list[str] = field(default_factory=list)
    """Format keys set by the user (YAML, overrides, flags): they win over the checkpoint."""


def write_format(directory: str | Path, fmt: AgentFormat) -> None:
    (Path(directory) / FORMAT_FILE).write_bytes(orjson.dumps(to_dict(fmt), option=orjson.OPT_INDENT_2))


def read_format(model: str | Path) -> AgentFormat | None:
    """The format a checkpoint records; None for a model name or a checkpoint without `agent.json`."""
    from ..models import checkpoint_dir

    path = checkpoint_dir(model)
    if path is None or not (path / FORMAT_FILE).is_file():
        return None
    try:
        return build(AgentFormat, orjson.loads((path / FORMAT_FILE).read_bytes()))
    except (ConfigError, orjson.JSONDecodeError) as e:
        raise ConfigError(f"{path / FORMAT_FILE}: {e}") from None


def format_of(cfg: Any) -> AgentFormat:
    """The format a config runs its agent with (through its class's `format_keys`)."""
    keys: FormatKeys = type(cfg).format_keys
    return AgentFormat(prompt=get_dotted(cfg, keys.prompt),
                       strategy=bool(get_dotted(cfg, keys.strategy)) if keys.strategy else False)


def fill_from_checkpoint(raw: dict, keys: FormatKeys) -> FormatSource:
    """Set in `raw` (a config as nested dicts, before `build`) every format key it lacks to the value the
    starting checkpoint records; returns which keys came from where."""
    from ..models import checkpoint_dir

    model = next((get_dotted(raw, k) for k in keys.model if get_dotted(raw, k)), None)
    if not model or checkpoint_dir(model) is None:
        return FormatSource()
    source = FormatSource(checkpoint=str(model), recorded=read_format(model))
    fmt = source.recorded
    recorded: dict[str, Any] = {}
    if fmt is not None and fmt.protocol == "step" and fmt.prompt is not None:
        recorded = {f"{keys.prompt}.{f.name}": getattr(fmt.prompt, f.name) for f in dataclasses.fields(PromptConfig)}
        if keys.strategy:
            recorded[keys.strategy] = fmt.strategy
    for key, value in recorded.items():
        if get_dotted(raw, key) is not None:
            source.explicit.append(key)
        else:
            set_dotted(raw, key, value)
            source.filled.append(key)
    return source


def describe_format(fmt: AgentFormat, source: FormatSource | None) -> str:
    """One line: the format used and where it came from, e.g. `prompt format: chat, history 2, ... (from
    checkpoint runs/q/checkpoints/sft; history set explicitly)`."""
    p = fmt.prompt or PromptConfig()
    onoff = {True: "on", False: "off"}
    text = (f"prompt format: {p.mode}, history {p.history}, think {onoff[p.think]}, prime {onoff[p.prime]}, "
            f"strategy {onoff[fmt.strategy]}")
    return f"{text} ({format_origin(source)})"


def format_origin(source: FormatSource | None) -> str:
    """Where the format came from, in words."""
    if source is None or not source.checkpoint:
        return "defaults and flags: the model is no checkpoint"
    if source.recorded is None:
        return f"defaults and flags: {source.checkpoint} records no format ({FORMAT_FILE})"
    if source.recorded.protocol != "step":
        return (f"defaults and flags: {source.checkpoint} was trained with the {source.recorded.protocol} protocol, "
                "not step prompts")
    own = sorted({k.rsplit(".", 1)[-1] for k in source.explicit})
    return f"from checkpoint {source.checkpoint}" + (f"; {', '.join(own)} set explicitly" if own else "")
