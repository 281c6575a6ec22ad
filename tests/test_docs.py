"""The docs list every config key (they are generated from the dataclasses' field docstrings)."""

from pathlib import Path

from stratarl.config import all_keys
from stratarl.train.config import TrainConfig
from stratarl.train.sft import SFTConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_training_doc_lists_every_key():
    text = (DOCS / "training.md").read_text()
    missing = [k for k in all_keys(TrainConfig) + all_keys(SFTConfig) if f"`{k}`" not in text]
    assert not missing, f"docs/training.md lacks {missing}; regenerate with `stratarl config train --markdown`"
