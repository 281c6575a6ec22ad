"""Config loading: YAML + dotted overrides, unknown keys named with suggestions, typed values."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from stratarl.config import all_keys, describe, field_docs, load_config, parse_override
from stratarl.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-4
    """Learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    """Adam betas."""


@dataclass
class Demo:
    name: str = "run"
    """Run name."""
    steps: int = 10
    """Number of steps."""
    mode: Literal["a", "b"] = "a"
    """Which mode."""
    horizon: int | None = None
    """Optional horizon."""
    optim: Optim = field(default_factory=Optim)
    """Optimizer section."""


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\noptim:\n  lr: 0.5\n")
    cfg = load_config(Demo, path, ["optim.lr=1e-5", "steps=3", "mode=b", "optim.betas=[0.8, 0.9]", "horizon=7"])
    assert (cfg.name, cfg.steps, cfg.mode, cfg.horizon) == ("x", 3, "b", 7)
    assert cfg.optim.lr == 1e-5 and cfg.optim.betas == [0.8, 0.9]
    assert load_config(Demo).optim.lr == 1e-4


def test_unknown_key_names_the_key_and_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*'optim.lr'"):
        load_config(Demo, overrides=["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'stepz'.*'steps'"):
        load_config(Demo, data={"stepz": 1})


def test_wrong_types_are_named():
    with pytest.raises(ConfigError, match="'steps': expected an integer"):
        load_config(Demo, overrides=["steps=abc"])
    with pytest.raises(ConfigError, match=r"'mode': 'c' is not one of \['a', 'b'\]"):
        load_config(Demo, overrides=["mode=c"])
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        parse_override("steps")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Demo, tmp_path / "nope.yaml")


def test_docs_and_keys():
    assert field_docs(Demo)["steps"] == "Number of steps."
    assert "optim.lr" in all_keys(Demo)
    rows = {r[0]: r for r in describe(Demo)}
    assert rows["optim.lr"][2] == 1e-4 and rows["optim.lr"][3] == "Learning rate."


def test_yaml_boolean_words_reach_a_literal_as_words(tmp_path):
    """`bf16: off` is the boolean False in YAML 1.1; a Literal["auto", "on", "off"] gets "off" back."""

    @dataclass
    class Switch:
        bf16: Literal["auto", "on", "off"] = "auto"
        """bf16."""

    assert load_config(Switch, overrides=["bf16=off"]).bf16 == "off"
    assert load_config(Switch, overrides=["bf16=on"]).bf16 == "on"
    path = tmp_path / "s.yaml"
    path.write_text("bf16: off\n")
    assert load_config(Switch, path).bf16 == "off"
    with pytest.raises(ConfigError, match="is not one of"):
        load_config(Demo, overrides=["mode=off"])  # no such word among the choices: still an error


def test_markdown_table_escapes_pipes_in_cells():
    """`'window' | 'chat'` would split a Markdown row into extra columns: every row keeps 4 cells."""
    from stratarl.config import markdown_table
    from stratarl.train.config import TrainConfig

    lines = markdown_table(TrainConfig).splitlines()
    mode = next(ln for ln in lines if ln.startswith("| `rollout.runner.prompt.mode`"))
    assert "'window' \\| 'chat'" in mode
    assert all(ln.replace("\\|", "").count("|") == 5 for ln in lines)
