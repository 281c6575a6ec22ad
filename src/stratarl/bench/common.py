"""What the benchmark runners share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def save_results(out_dir: str | Path, results: Any) -> Path:
    """Write `results` as `<out_dir>/results.json` atomically (a benchmark killed midway leaves the last
    complete file), and return its path."""
    path = Path(out_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    tmp.replace(path)
    return path
