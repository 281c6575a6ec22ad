"""`stratarl report RUN_DIR`: `report.md` with the before/after table and PNG plots — success and
reward curves with 95% intervals, KL and entropy, and iteration time by stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from .errors import UserError
from .stats import newcombe_difference, wilson
from .train.logging import read_metrics


def _load(path: Path) -> dict | None:
    return orjson.loads(path.read_bytes()) if path.is_file() else None


def _plot(run_dir: Path, rows: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in rows]
    out = []
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    steps = _cumulative_env_steps(rows)
    for key, label in (("rollout/success", "training rollouts"), ("eval/success", "held-out (dev), greedy"),
                       ("eval_sampled/success", "held-out (dev), T = 1")):
        pts = [(steps[i], r[key], r.get(key.replace("success", "episodes")) or r.get("rollout/episodes", 0))
               for i, r in enumerate(rows) if r.get(key) is not None]
        if pts:
            xs = [p[0] for p in pts]
            ivs = [wilson(round(p[1] * p[2]), p[2]) for p in pts]
            ax[0].plot(xs, [p[1] for p in pts], marker="o", label=label)
            ax[0].fill_between(xs, [i.low for i in ivs], [i.high for i in ivs], alpha=0.2)
    ax[0].set(title="success (95% Wilson intervals)", xlabel="env steps", ylim=(0, 1))
    ax[0].legend()
    ax[1].plot(its, [r.get("rollout/outcome", 0) for r in rows], marker="o", label="mean episode reward")
    ax[1].plot(its, [r.get("adv/std", 0) for r in rows], label="advantage std")
    ax[1].set(title="reward", xlabel="iteration")
    ax[1].legend()
    out.append(_save(fig, run_dir / "curves.png"))
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train/kl", "train/approx_kl", "train/clip_fraction"):
        if measured(rows, key):
            ax[0].plot(its, [r.get(key, 0) for r in rows], label=key.split("/")[1])
    ax[0].set(title="KL and clipping", xlabel="iteration")
    _legend(ax[0])
    if measured(rows, "train/entropy"):
        ax[1].plot(its, [r.get("train/entropy", 0) for r in rows], label="entropy")
    ax[1].plot(its, [r.get("train/grad_norm", 0) for r in rows], label="grad norm")
    ax[1].set(title="entropy, gradient norm", xlabel="iteration")
    _legend(ax[1])
    out.append(_save(fig, run_dir / "optim.png"))
    stages = [k for k in rows[0] if k.startswith("time/") and k != "time/iteration"]
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(rows)
    for k in stages:
        vals = [r.get(k, 0.0) for r in rows]
        ax.bar(its, vals, bottom=bottom, label=k.split("/")[1])
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set(title="iteration time by stage (s)", xlabel="iteration")
    ax.legend(fontsize=7)
    out.append(_save(fig, run_dir / "time.png"))
    return out


def _cumulative_env_steps(rows: list[dict]) -> list[int]:
    """Env steps taken by the end of each iteration."""
    out, total = [], 0
    for r in rows:
        total += int(r.get("rollout/env_steps", 0))
        out.append(total)
    return out


def measured(rows: list[dict], key: str) -> bool:
    """Whether the run measured `key`: the KL to the reference is 0 in every row without a reference model
    (`kl_coef: 0`), the entropy without an entropy bonus; those show as "—", not as a collapse to 0."""
    return any(r.get(key, 0) != 0 for r in rows)


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def _cell(r: dict, key: str, fmt: str, shown: set[str]) -> str:
    return format(r.get(key, 0), fmt) if key in shown else "—"


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _before_after(pairs: list[tuple[str, dict | None, dict | None]]) -> list[str]:
    """The before/after table, one pair of rows per decoding, each with its Newcombe difference."""
    pairs = [(d, b, a) for d, b, a in pairs if b and a]
    if not pairs:
        return []
    lines = ["## Held-out success", "", "| checkpoint | decoding | episodes | success | 95% interval |",
             "|---|---|---|---|---|"]
    notes = []
    for decoding, before, after in pairs:
        for name, r in (("after warm-up (before RL)", before), ("after RL", after)):
            lines.append(f"| {name} | {decoding} | {r['episodes']} | {100 * r['success_rate']:.1f}% | "
                         f"[{100 * r['success_ci95'][0]:.1f}, {100 * r['success_ci95'][1]:.1f}] |")
        diff = newcombe_difference(before["wins"], before["episodes"], after["wins"], after["episodes"])
        verdict = "excludes" if diff.low > 0 or diff.high < 0 else "includes"
        notes.append(f"Difference (after − before, {decoding}): {100 * diff.value:+.1f} points, 95% interval "
                     f"[{100 * diff.low:+.1f}, {100 * diff.high:+.1f}] (Newcombe) — it {verdict} zero.")
    return [*lines, "", *notes, ""]


def _learned(before: dict | None, after: dict | None) -> list[str]:
    """One sentence on what RL changed on held-out tasks."""
    if not (before and after):
        return []
    diff = newcombe_difference(before["wins"], before["episodes"], after["wins"], after["episodes"])
    if diff.low > 0:
        what = f"RL raised held-out success by {100 * diff.value:.1f} points (significant at 95%)"
    elif diff.high < 0:
        what = f"RL lowered held-out success by {-100 * diff.value:.1f} points (significant at 95%)"
    else:
        what = f"RL changed held-out success by {100 * diff.value:+.1f} points, within noise (the interval includes zero)"
    return [f"**In one sentence:** {what}.", ""]


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise UserError(f"no metrics.jsonl in {run_dir} (is it a training run directory?)")
    before, after, sft = (_load(run_dir / f) for f in ("eval_before.json", "eval_after.json", "sft.json"))
    sampled = [_load(run_dir / f) for f in ("eval_before_sampled.json", "eval_after_sampled.json")]
    lines = [f"# Run `{run_dir.name}`", ""]
    if sft:
        lines += [f"Warm-up SFT: {sft['rows']} rows from {sft['gold_episodes']} gold episodes, {sft['steps']} steps, "
                  f"loss {sft['first_loss']:.3f} → {sft['last_loss']:.3f} in {sft['seconds']:.0f} s.", ""]
    lines += _learned(before, after)
    t = (before or {}).get("temperature", 0.0)
    lines += _before_after([("greedy" if t == 0 else f"sampled, T = {t:g}", before, after),
                            ("sampled, T = 1", *sampled)])
    total = sum(r.get("time/iteration", 0) for r in rows)
    lines += ["## Training", "", f"{len(rows)} iterations in {total:.0f} s "
              f"({total / len(rows):.1f} s per iteration).", "",
              "| iteration | rollout success | mean reward | steps | invalid | KL | entropy | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    shown = {k for k in ("train/kl", "train/entropy") if measured(rows, k)}
    for r in rows:
        lines.append(f"| {r['iteration']} | {r.get('rollout/success', 0):.2f} | {r.get('rollout/outcome', 0):.2f} | "
                     f"{r.get('rollout/steps', 0):.1f} | {r.get('rollout/invalid', 0):.2f} | {_cell(r, 'train/kl', '.4f', shown)} | "
                     f"{_cell(r, 'train/entropy', '.3f', shown)} | {r.get('time/iteration', 0):.1f} |")
    pngs = _plot(run_dir, rows)
    lines += ["", *(f"![{p}]({p})" for p in pngs), "",
              f"Browse every episode: `stratarl view {run_dir}` (writes `{run_dir / 'viewer.html'}`).", ""]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines))
    return out
