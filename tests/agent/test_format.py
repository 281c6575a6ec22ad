"""A checkpoint's recorded prompt format is the default of every entry point that starts from it; what the
user sets (YAML, overrides, flags) wins, key by key."""

import pytest

from stratarl.agent.format import AgentFormat, describe_format, format_of, write_format
from stratarl.agent.prompts import PromptConfig
from stratarl.calibrate.pipeline import CalibrateConfig
from stratarl.config import load_config, load_config_and_format
from stratarl.errors import ConfigError
from stratarl.evaluate import EvalConfig
from stratarl.train.config import TrainConfig
from stratarl.train.sft import SFTConfig

CHAT = AgentFormat(prompt=PromptConfig(mode="chat", history=1, think=True, prime=True), strategy=True)


def checkpoint(path, fmt=CHAT):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")  # a checkpoint directory, as far as the format is concerned
    if fmt is not None:
        write_format(path, fmt)
    return str(path)


def test_every_entry_point_starting_from_a_checkpoint_takes_its_format(tmp_path):
    ckpt = checkpoint(tmp_path / "ckpt")
    train = load_config(TrainConfig, overrides=[f"model={ckpt}"])
    assert train.rollout.runner.prompt == CHAT.prompt and train.rollout.group.strategy
    sft = load_config(SFTConfig, overrides=[f"model={ckpt}"])
    assert sft.prompt == CHAT.prompt and sft.data.strategies
    ev = load_config(EvalConfig, data={"model": ckpt})
    assert ev.prompt == CHAT.prompt and ev.strategy and format_of(ev) == CHAT
    cal = load_config(CalibrateConfig, overrides=[f"warmup_checkpoint={ckpt}"])
    assert cal.runner.prompt == CHAT.prompt


def test_what_the_user_sets_wins_key_by_key(tmp_path):
    ckpt = checkpoint(tmp_path / "ckpt")
    yaml = tmp_path / "run.yaml"
    yaml.write_text(f"model: {ckpt}\nrollout:\n  runner:\n    prompt: {{history: 3}}\n")
    cfg, source = load_config_and_format(TrainConfig, yaml, ["rollout.group.strategy=false"])
    p = cfg.rollout.runner.prompt
    assert (p.mode, p.history, p.think, p.prime, cfg.rollout.group.strategy) == ("chat", 3, True, True, False)
    assert sorted(source.explicit) == ["rollout.group.strategy", "rollout.runner.prompt.history"]
    assert "rollout.runner.prompt.mode" in source.filled
    line = describe_format(format_of(cfg), source)
    assert line == (f"prompt format: chat, history 3, think on, prime on, strategy off "
                    f"(from checkpoint {ckpt}; history, strategy set explicitly)")


def test_without_a_recorded_format_the_defaults_hold(tmp_path):
    old = checkpoint(tmp_path / "old", fmt=None)
    cfg, source = load_config_and_format(EvalConfig, data={"model": old})
    assert cfg.prompt == PromptConfig() and not cfg.strategy and source.filled == []
    assert "records no format" in describe_format(format_of(cfg), source)
    coa = checkpoint(tmp_path / "coa", fmt=AgentFormat(protocol="coa"))
    cfg, source = load_config_and_format(EvalConfig, data={"model": coa})
    assert cfg.prompt == PromptConfig() and "coa protocol" in describe_format(format_of(cfg), source)
    cfg, source = load_config_and_format(EvalConfig, data={"model": "tiny"})
    assert "no checkpoint" in describe_format(format_of(cfg), source)


def test_a_broken_record_names_its_file(tmp_path):
    bad = checkpoint(tmp_path / "bad", fmt=None)
    (tmp_path / "bad" / "agent.json").write_text('{"prompt": {"mode": "windows"}}')
    with pytest.raises(ConfigError, match=r"agent\.json.*'windows'"):
        load_config(EvalConfig, data={"model": bad})
