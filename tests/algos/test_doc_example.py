"""docs/algorithms.md stays true: its example prints what the doc says, its tables list every key."""

import contextlib
import io
import re
from pathlib import Path

import pytest

from stratarl.algos.advantages import AdvantageConfig
from stratarl.algos.losses import LossConfig, PreferenceConfig
from stratarl.config import describe

DOC = (Path(__file__).resolve().parents[2] / "docs" / "algorithms.md").read_text()


def test_example_prints_what_the_doc_shows():
    section = DOC.split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    expected = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/algorithms.md", "exec"), {"__name__": "doc_example"})
    assert out.getvalue() == expected


@pytest.mark.parametrize("cls", [AdvantageConfig, LossConfig, PreferenceConfig])
def test_doc_lists_every_key_with_its_default(cls):
    table = DOC.split(f"### `{cls.__name__}`", 1)[1].split("###", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| `")}
    for key, _, default, _ in describe(cls):
        assert f"`{key}`" in rows and f"`{default!r}`" in rows[f"`{key}`"], key
