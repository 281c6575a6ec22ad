"""The two ASTRA synthesis pipelines as short lists of named stages (seed 001; docs/synth.md).

    trajectories: servers -> tool graphs -> chains -> tasks -> trajectories -> 7-dim scores -> kept -> sft.jsonl
    environments: QA records -> QS, keep >= P90 -> tools written + verified -> merged -> tools:<dataset>

Both write under `<out_dir>/<name>/`: the resolved `config.yaml`, every intermediate as JSONL, and
`report.json` with the counts of every stage. A teacher (`teacher.base_url`) is optional: offline, the
template writers and rule scorers (ours) stand in, and every teacher answer is validated, with fallback
or rejection counted in the report.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError
from .graph import MAX_LENGTH, MIN_LENGTH, build_tool_graph, enumerate_chains, sample_chains
from .servers import SEED_DIR, ToolServer, load_servers
from .teacher import Teacher, TeacherConfig

Track = Callable[..., Iterable]
"""`rich.progress.track`-like: track(iterable, description=..., total=...) -> iterable."""


def _no_track(it: Iterable, description: str = "", total: int | None = None) -> Iterable:
    return it


@dataclass
class SynthTrajectoriesConfig:
    """`stratarl synth trajectories`: tool-graph trajectory synthesis for SFT."""

    name: str = "synth_trajectories"
    """Run name: output goes to `<out_dir>/<name>/`."""
    out_dir: str = "runs"
    """Where runs are written."""
    seed: int = 0
    """Seed of walks, scenarios and injected failures."""
    servers: str = ""
    """Tool-server JSON file (empty: the shipped seed, src/stratarl/data/synth_seed/servers.json)."""
    chains: Literal["walk", "enumerate"] = "walk"
    """How chains are drawn from each server's tool graph: edge-weighted random walks or every simple path."""
    walks: int = 12
    """Random walks per server (`chains: walk`); repeats and too-short walks are dropped."""
    acyclic: bool = True
    """Walks never revisit a tool."""
    min_length: int = MIN_LENGTH
    """Fewest tools in a chain."""
    max_length: int = MAX_LENGTH
    """Most tools in a chain."""
    max_chains: int = 0
    """Keep at most this many chains per server (0: all)."""
    tasks_per_chain: int = 1
    """Tasks written per chain (each with a scenario drawn at random)."""
    failure_rate: float = 0.15
    """Probability that an emulated tool call fails (injected failure)."""
    max_turns: int = 8
    """Most teacher turns in one trajectory."""
    retries: int = 1
    """Offline writer: times a failed call is retried."""
    fallback: bool = True
    """When the teacher's trajectory is rejected, use the offline writer's instead (else drop the task)."""
    judge: Literal["rules", "teacher"] = "rules"
    """7-dimension scorer: deterministic rules, or the teacher as judge (falling back to rules)."""
    min_score: float = 0.9
    """Keep trajectories whose mean 7-dimension score is at least this."""
    timeout: float = 5.0
    """Seconds one real (sandboxed) tool call may run."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """The teacher endpoint (empty base_url: offline)."""


@dataclass
class SynthEnvironmentsConfig:
    """`stratarl synth environments`: QA-decomposition environment synthesis for RL."""

    name: str = "synth_environments"
    """Run name: output goes to `<out_dir>/<name>/`; the dataset to `<out_dir>/<name>/tools/<dataset>/`."""
    out_dir: str = "runs"
    """Where runs are written."""
    records: str = ""
    """QA decomposition JSONL (empty: the shipped seed, src/stratarl/data/synth_seed/decompositions.jsonl)."""
    dataset: str = ""
    """Name of the `tools:` dataset written (empty: the run name)."""
    qs_percentile: float = 90.0
    """Keep records whose QS is at least this percentile of all records' QS."""
    fallback: bool = True
    """When the teacher's tool fails all attempts, try the offline template writer."""
    merge: bool = True
    """Merge same-intent tools (re-verified after each merge)."""
    merge_embedder: str = "tfidf"
    """Embedder of tool docs for same-intent similarity (`tfidf`, `minilm`)."""
    merge_threshold: float = 0.8
    """Cosine similarity of tool docs (with equal parameter names) at which two tools are the same intent."""
    test_every: int = 4
    """Every n-th final item goes to the test split, the rest to train."""
    timeout: float = 5.0
    """Seconds one sandboxed verification run may take."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """The teacher endpoint (empty base_url: offline)."""


def run_dir(out_dir: str, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"run name {name!r} must be a plain directory name")
    path = Path(out_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


# --- trajectories -----------------------------------------------------------------------------------

def draw_chains(cfg: SynthTrajectoriesConfig, servers: list[ToolServer]) -> dict[str, list[list[str]]]:
    """Stage: tool graph per server, then chains by walks or enumeration."""
    if not MIN_LENGTH <= cfg.min_length <= cfg.max_length <= MAX_LENGTH:
        raise UserError(f"chain lengths must satisfy {MIN_LENGTH} <= min_length <= max_length <= {MAX_LENGTH} "
                        f"(got {cfg.min_length}, {cfg.max_length})")
    rng, out = random.Random(cfg.seed), {}
    for s in servers:
        graph = build_tool_graph(s.name, [t.name for t in s.tools], [list(c) for c in s.verified_chains])
        chains = (sample_chains(graph, rng, cfg.walks, cfg.min_length, cfg.max_length, cfg.acyclic)
                  if cfg.chains == "walk" else enumerate_chains(graph, cfg.min_length, cfg.max_length))
        out[s.name] = chains[:cfg.max_chains] if cfg.max_chains else chains
    return out


def collect_trajectories(cfg: SynthTrajectoriesConfig, tasks: list, servers: dict[str, ToolServer], teacher: Teacher,
                         track: Track) -> tuple[list, dict[str, int], Counter[str]]:
    """Stage: the teacher's trajectory per task (validated), else / as fallback the offline writer's."""
    from .execute import Executor
    from .trajectories import teacher_trajectory, template_trajectory

    trajs, counts = [], {"teacher_rejected": 0, "fallbacks": 0, "dropped": 0}
    reasons: Counter[str] = Counter()
    for task in track(tasks, description="trajectories"):
        server = servers[task.server]
        executor = Executor(server, random.Random(f"{cfg.seed}/{task.id}"), cfg.failure_rate, cfg.timeout)
        traj = teacher_trajectory(task, server, executor, teacher, cfg.max_turns) if teacher.online else None
        if traj is not None and traj.rejected:
            counts["teacher_rejected"] += 1
            reasons[traj.rejected.split(":")[0]] += 1
            teacher.reject("trajectory")
            if not cfg.fallback:
                counts["dropped"] += 1
                continue
            counts["fallbacks"] += 1
            executor = Executor(server, random.Random(f"{cfg.seed}/{task.id}"), cfg.failure_rate, cfg.timeout)
            why, traj = traj.rejected, template_trajectory(task, server, executor, cfg.retries)
            traj.rejected = why
        trajs.append(traj or template_trajectory(task, server, executor, cfg.retries))
    return trajs, counts, reasons


def run_trajectories(cfg: SynthTrajectoriesConfig, track: Track = _no_track) -> dict[str, Any]:
    """The whole SFT pipeline; returns the report (also written to report.json)."""
    from ..config import save_config
    from .quality import judge_scores, mean_score
    from .trajectories import to_messages, write_task

    out = run_dir(cfg.out_dir, cfg.name)
    save_config(cfg, out / "config.yaml")
    servers = {s.name: s for s in load_servers(cfg.servers or None)}
    teacher = Teacher(cfg.teacher)
    chains = draw_chains(cfg, list(servers.values()))
    write_jsonl(out / "chains.jsonl", ({"server": s, "chain": c} for s, cs in chains.items() for c in cs))
    rng = random.Random(cfg.seed + 1)
    plan = [(s, c) for s, cs in chains.items() for c in cs for _ in range(cfg.tasks_per_chain)]
    tasks = [write_task(servers[s], c, i, rng, teacher) for i, (s, c) in enumerate(track(plan, description="tasks"))]
    write_jsonl(out / "tasks.jsonl", (asdict(t) for t in tasks))
    trajs, counts, reasons = collect_trajectories(cfg, tasks, servers, teacher, track)
    judged = 0
    for traj in track(trajs, description="scores"):
        traj.scores, by = judge_scores(traj, teacher) if cfg.judge == "teacher" else judge_scores(traj, _OFFLINE)
        traj.score, judged = mean_score(traj.scores), judged + (by == "judge")
    kept = [t for t in trajs if t.score >= cfg.min_score]
    write_jsonl(out / "trajectories.jsonl", (t.to_dict() for t in trajs))
    write_jsonl(out / "sft.jsonl", ({"messages": to_messages(t, servers[t.task.server]), "id": t.task.id,
                                     "score": round(t.score, 4), "source": t.source} for t in kept))
    report = {"servers": len(servers), "chains": sum(map(len, chains.values())),
              "chains_per_server": {s: len(c) for s, c in chains.items()}, "tasks": len(tasks),
              "tasks_from_teacher": sum(t.source == "teacher" for t in tasks), "trajectories": len(trajs),
              "trajectories_from_teacher": sum(t.source == "teacher" for t in trajs), **counts,
              "calls": sum(len(t.steps) for t in trajs), "failed_calls": sum(not s.ok for t in trajs for s in t.steps),
              "injected_failures": sum(s.injected for t in trajs for s in t.steps), "scored": len(trajs),
              "scored_by_judge": judged, "mean_score": _mean([t.score for t in trajs]), "min_score": cfg.min_score,
              "kept": len(kept), "sft_file": str(out / "sft.jsonl"), "teacher": dict(sorted(teacher.counts.items())),
              "teacher_rejection_reasons": dict(reasons)}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


_OFFLINE = Teacher(TeacherConfig())


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0


# --- environments -----------------------------------------------------------------------------------

def _write_drafts(kept: list, teacher: Teacher, cfg: SynthEnvironmentsConfig, track: Track) -> tuple[list, list, dict]:
    """Stage: a verified tool per tool-needing sub-question; records missing one are dropped."""
    from .environments import write_tool

    drafts, complete, counts = [], [], {"tool_specs": 0, "verified": 0, "rejected": 0, "from_teacher": 0,
                                        "from_template": 0, "no_writer": 0, "records_dropped": 0}
    for rec in track(kept, description="tools"):
        mine, ok = [], True
        for step in (s for s in rec.trace if s.needs_tool):
            counts["tool_specs"] += 1
            d = write_tool(rec, step, teacher, cfg.timeout, cfg.fallback)
            if d is None:
                counts["no_writer"] += 1
            else:
                counts["verified" if d.verified else "rejected"] += 1
                counts[f"from_{d.source}"] += d.verified
            ok = ok and d is not None and d.verified
            mine.append(d)
        counts["records_dropped"] += not ok
        if ok:
            drafts += mine
            complete.append(rec)
    return drafts, complete, counts


def _split_items(complete: list, tool_of: dict, every: int) -> dict[str, list[dict]]:
    from .environments import dataset_item

    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for i, rec in enumerate(complete):
        split = "test" if every > 0 and i % every == every - 1 else "train"
        splits[split].append(dataset_item(rec, f"{split}-{len(splits[split]):04d}", tool_of))
    return splits


def run_environments(cfg: SynthEnvironmentsConfig, track: Track = _no_track) -> dict[str, Any]:
    """The whole RL-environment pipeline; returns the report (also written to report.json)."""
    from ..config import save_config
    from ..rollout.diversity import make_embedder
    from .environments import group_tool, jsonl, merge_tools, tool_row
    from .qa import filter_records, load_records

    out = run_dir(cfg.out_dir, cfg.name)
    save_config(cfg, out / "config.yaml")
    records = load_records(cfg.records or SEED_DIR / "decompositions.jsonl")
    kept, scores, threshold = filter_records(records, cfg.qs_percentile)
    kept_ids = {r.id for r in kept}
    write_jsonl(out / "records_scored.jsonl", ({"id": r.id, **s.dims, "qs": s.qs, "kept": r.id in kept_ids}
                                               for r, s in zip(records, scores, strict=True)))
    teacher = Teacher(cfg.teacher)
    drafts, complete, tool_counts = _write_drafts(kept, teacher, cfg, track)
    sim = make_embedder(cfg.merge_embedder).embed([d.tool.doc() for d in drafts]) if drafts else None
    groups, merge_counts = merge_tools(drafts, sim @ sim.T if sim is not None else None, cfg.merge_threshold,
                                       cfg.timeout, cfg.merge)
    tools = [group_tool(g) for g in groups]
    tool_of = {(b.record, b.step): (g.name, b.arguments) for g in groups for b in g.bindings}
    splits = _split_items(complete, tool_of, cfg.test_every)
    dataset = cfg.dataset or cfg.name
    ddir = out / "tools" / dataset
    ddir.mkdir(parents=True, exist_ok=True)
    (ddir / "tools.jsonl").write_text(jsonl([tool_row(t) for t in tools]))
    for split, items in splits.items():
        (ddir / f"{split}.jsonl").write_text(jsonl(items))
    report = {"records": len(records), "qs_percentile": cfg.qs_percentile, "qs_threshold": round(threshold, 4),
              "qs_mean": _mean([s.qs for s in scores]), "kept": len(kept), **tool_counts,
              **merge_counts, "final_tools": len(tools), "final_items": sum(map(len, splits.values())),
              "items_per_split": {k: len(v) for k, v in splits.items()}, "dataset": f"tools:{dataset}",
              "dataset_dir": str(ddir), "teacher": dict(sorted(teacher.counts.items()))}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
