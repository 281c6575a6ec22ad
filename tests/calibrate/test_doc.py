"""docs/calibrate.md stays true: its first example prints what the doc shows."""

import contextlib
import io
import re
from pathlib import Path

DOC = (Path(__file__).resolve().parents[2] / "docs" / "calibrate.md").read_text()


def test_pure_example_prints_what_the_doc_shows():
    section = DOC.split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    expected = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/calibrate.md", "exec"), {"__name__": "doc_example"})
    assert out.getvalue() == expected


def test_doc_lists_every_calibrate_key():
    from stratarl.calibrate.pipeline import CalibrateConfig
    from stratarl.config import all_keys

    missing = [k for k in all_keys(CalibrateConfig) if f"`{k}`" not in DOC]
    assert not missing, f"docs/calibrate.md lacks {missing}; regenerate with `stratarl config calibrate --markdown`"
