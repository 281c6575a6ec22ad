"""The model cache: `$STRATARL_CACHE` (default `~/.cache/stratarl`), filled atomically."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("STRATARL_CACHE", Path.home() / ".cache" / "stratarl")).expanduser()


def build_once(name: str, build: Callable[[Path], None], kind: str = "models", marker: str = "config.json") -> Path:
    """`cache_root()/<kind>/<name>`, built by `build(tmp_dir)` into a temporary directory and renamed
    into place, so an interrupted build never leaves a half-written entry behind; an entry holding
    `marker` is complete and returned as it is."""
    final = cache_root() / kind / name
    if (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        if final.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
