"""Checkpoints on disk: `last` is a checkpoint path like any other, and every checkpoint says how it talks."""

import os
import shutil

import pytest

from stratarl.agent.format import AgentFormat, read_format
from stratarl.agent.prompts import PromptConfig
from stratarl.models import load_model, load_tokenizer, resolve_model
from stratarl.train.checkpoint import latest_checkpoint, save_checkpoint

CHAT = AgentFormat(prompt=PromptConfig(mode="chat", history=1, think=True), strategy=True)


@pytest.fixture(scope="module")
def tiny(tiny_path):
    return load_model(tiny_path), load_tokenizer(tiny_path)


def test_last_is_a_relative_symlink_to_the_newest_checkpoint(tmp_path, tiny):
    model, tok = tiny
    for name in ("1", "2"):
        save_checkpoint(tmp_path / "run", name, model, tok, {"iteration": int(name)}, agent=CHAT)
    last = tmp_path / "run" / "checkpoints" / "last"
    assert last.is_symlink() and os.readlink(last) == "2"
    assert resolve_model(last) == last and read_format(last) == CHAT
    assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoints" / "2"
    shutil.move(tmp_path / "run", tmp_path / "moved")  # relative: the run directory can move
    assert (tmp_path / "moved" / "checkpoints" / "last" / "config.json").is_file()
    assert not [p for p in (tmp_path / "moved" / "checkpoints").iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError, match="pointer"):
        save_checkpoint(tmp_path / "moved", "last", model, tok, {})


def test_a_last_file_of_an_older_run_still_resolves(tmp_path, tiny):
    model, tok = tiny
    save_checkpoint(tmp_path, "3", model, tok, {"iteration": 3})
    last = tmp_path / "checkpoints" / "last"
    last.unlink()
    last.write_text("3")  # how `last` was written before it became a symlink
    assert resolve_model(last) == tmp_path / "checkpoints" / "3"
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "3"
    assert read_format(last) is None  # written without agent.json
    save_checkpoint(tmp_path, "4", model, tok, {"iteration": 4})  # the file is replaced by the symlink
    assert last.is_symlink() and latest_checkpoint(tmp_path).name == "4"
