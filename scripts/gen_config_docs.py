"""Regenerate the config reference tables at the end of docs/training.md from the dataclasses'
field docstrings (run after changing a config): python scripts/gen_config_docs.py"""

from pathlib import Path

from stratarl.config import describe
from stratarl.train.config import TrainConfig
from stratarl.train.sft import SFTConfig

MARK = "## `stratarl train` config reference"


def table(cls: type) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{k}` | {t} | `{d!r}` | {doc} |" for k, t, d, doc in describe(cls)]
    return "\n".join(rows) + "\n"


def main() -> None:
    path = Path(__file__).resolve().parents[1] / "docs" / "training.md"
    head = path.read_text().split(MARK)[0]
    path.write_text(head + MARK + "\n\n" + table(TrainConfig) + "\n## `stratarl sft` config reference\n\n" + table(SFTConfig))


if __name__ == "__main__":
    main()
