"""Regenerate the config reference tables at the end of docs/training.md from the dataclasses'
field docstrings (run after changing a config): python scripts/gen_config_docs.py"""

from pathlib import Path

from stratarl.config import markdown_table
from stratarl.train.config import TrainConfig
from stratarl.train.sft import SFTConfig

MARK = "## `stratarl train` config reference"


def main() -> None:
    path = Path(__file__).resolve().parents[1] / "docs" / "training.md"
    head = path.read_text().split(MARK)[0]
    path.write_text(head + MARK + "\n\n" + markdown_table(TrainConfig) + "\n## `stratarl sft` config reference\n\n" + markdown_table(SFTConfig))


if __name__ == "__main__":
    main()
