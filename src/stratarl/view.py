"""`stratarl view RUN_DIR`: a self-contained static HTML trajectory viewer (no CDN, no server).

Iterations -> groups (tasks) -> strategies -> episodes -> steps, with rewards, penalties and
advantages colour-coded. The data (without token ids) is embedded in the page as JSON.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import orjson

from .errors import UserError
from .rollout.store import read_trajectories, regroup
from .types import Group, Trajectory


def _episode(t: Trajectory) -> dict:
    return {
        "termination": t.termination, "won": t.won, "outcome": t.outcome, "error": t.error,
        "steps": [{"prompt_len": len(s.prompt_ids), "text": s.text, "thought": s.thought, "action": s.action,
                   "valid": s.valid, "observation": s.observation, "reward": s.reward, "penalty": s.penalty,
                   "advantage": s.advantage, "judged": s.judged} for s in t.steps],
    }


def _group(g: Group) -> dict:
    from .agent.parse import parse_strategy

    strategies = []
    for i, ts in enumerate(g.trajectories):
        turn = g.strategies[i] if i < len(g.strategies) else None
        strategies.append({"plan": parse_strategy(turn.text) if turn else None,
                           "advantage": ts[0].strategy_advantage if ts else None,
                           "episodes": [_episode(t) for t in ts]})
    return {"task": f"{g.task.env} {g.task.split} #{g.task.index}", "strategies": strategies}


def _sort_key(p: Path) -> tuple:
    return (0, int(p.stem)) if p.stem.isdigit() else (1, p.stem)


def build_viewer(run_dir: str | Path, out: str | Path | None = None, last: int | None = None) -> Path:
    """Write `<run_dir>/viewer.html` (or `out`) from `<run_dir>/trajectories/*.jsonl`."""
    run_dir = Path(run_dir)
    files = sorted((run_dir / "trajectories").glob("*.jsonl"), key=_sort_key)
    if not files:
        raise UserError(f"no trajectories under {run_dir / 'trajectories'} (is {run_dir} a run directory?)")
    if last:
        files = files[-last:]
    data = {"run": run_dir.name,
            "iterations": {f.stem: {"groups": [_group(g) for g in regroup(read_trajectories(f))]} for f in files}}
    page = resources.files("stratarl").joinpath("data/viewer.html").read_text()
    payload = orjson.dumps(data).decode().replace("</", "<\\/")  # never close the <script> early
    out = Path(out) if out else run_dir / "viewer.html"
    out.write_text(page.replace("__DATA__", payload))
    return out
