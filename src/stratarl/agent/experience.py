"""Step-level experience retrieval (SLEA-RL: Wang & Jiang, "Step-Level Experience Augmented Reinforcement
Learning for Multi-Turn Agentic Training", arXiv:2603.18079, 2026; code github.com/kingofspace0wzz/slea-rl).

Experience-augmented agents usually retrieve past trajectories once, from the task description. SLEA-RL
retrieves at every step, from the current observation:

- observation clustering: observations are grouped into clusters of "structurally equivalent" states
  and the library is indexed by cluster, so a state seen before (or one like it) finds what was done
  there;
- a self-evolving library: after each iteration's rollouts, steps of finished trajectories are
  extracted as experiences — what worked (successful trajectories) and what failed — with
  score-based admission (a bounded library where a new record must out-score the worst to enter) and
  rate-limited extraction (only a few trajectories and a few new records per iteration), so the
  library changes slowly alongside the policy, never by gradients;
- at each step the top-k successful and failed experiences of the current observation's cluster are
  shown in the step prompt (an "Experience" block after the observation).

What the public sources fix, and what is ours. The paper's method section is not readable here; the
abstract and the released code (`verl/trainer/ppo/forge/`) are. From the code: similarity clustering
of observations at threshold 0.85 "as GiGPO's step grouping", success when the episode score is
≥ 0.5, 2 successful and 1 failed experience per step, at most 800 characters of experience text,
extraction from the top-5 trajectories with at most 10 new successes and 5 new failures per
iteration, capacities 3×100 and 3×50 with replacement of the lowest score, no injection for the first
5 iterations or below 10 records. Those are our defaults. Ours:
- the extractor is rule-based and per step (the released rule extractor works on decoded trajectory
  text; its LLM extractor is a placeholder): an experience is (observation cluster, action, outcome),
  merged with an identical one (count, mean outcome, best score);
- the admission score: outcome·γ^(T−1−t) for a step of a success, (1 − outcome)·γ^(T−1−t) for a
  step of a failure, 1 for an invalid action (γ = `discount`, 1 by default: the episode's score, as
  in the released code);
- clustering compares whole normalized observations by word-set Jaccard (the metric of GiGPO's
  `similarity` anchors in `algos.advantages`) or TF-IDF cosine (`rollout.diversity.TfidfEmbedder`),
  picks the most similar cluster above the threshold (ties: the oldest), and a lookup never creates a
  cluster (the released code's difflib ratio on the first 500 characters, first match, is not used);
- the library is a JSON file (`experience.json` in the run directory, written atomically) and part
  of the checkpoint state, so a resumed run continues with the library its checkpoint had.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import orjson

from ..algos.advantages import jaccard
from ..errors import UserError
from ..rollout.diversity import TfidfEmbedder
from ..types import Group, Trajectory, from_dict, to_dict

Kind = Literal["success", "failure"]
EXPERIENCE_FILE = "experience.json"
FORMAT = "stratarl.experience/1"


@dataclass
class ExperienceConfig:
    """Step-level experience retrieval (SLEA-RL, arXiv:2603.18079)."""

    enabled: bool = False
    """Keep an experience library, update it after each iteration's rollouts, show it in step prompts."""
    cluster: Literal["exact", "jaccard", "tfidf"] = "jaccard"
    """Observation clusters: identical normalized text, or the most similar cluster by word-set Jaccard or TF-IDF cosine."""
    similarity: float = 0.85
    """Threshold of the `jaccard` and `tfidf` clusters (released code: 0.85)."""
    k_success: int = 2
    """Successful experiences shown per step (highest score first)."""
    k_failure: int = 1
    """Failed experiences shown per step (highest score first)."""
    success_threshold: float = 0.5
    """A trajectory whose outcome is at least this is a success; the others are failures."""
    discount: float = 1.0
    """γ of the admission score: step t of T scores outcome·γ^(T−1−t) (success) or (1 − outcome)·γ^(T−1−t) (failure)."""
    min_score: float = 0.0
    """Admission: a new experience scoring below this is not admitted."""
    top_trajectories: int = 5
    """Rate limit: per iteration, extract from at most this many best successes and this many worst failures."""
    max_new_success: int = 10
    """Rate limit: at most this many new success records per iteration."""
    max_new_failure: int = 5
    """Rate limit: at most this many new failure records per iteration."""
    every: int = 1
    """Rate limit: extract on every K-th iteration only."""
    max_success: int = 300
    """Capacity for success records; when full, a new one replaces the lowest-scored only if it scores higher."""
    max_failure: int = 150
    """Capacity for failure records (same replacement rule)."""
    warmup: int = 5
    """Show no experience in prompts before this iteration (the library still grows)."""
    min_size: int = 10
    """Show no experience while the library holds fewer records than this."""
    max_chars: int = 800
    """At most this many characters of experience text in one step prompt (whole lines)."""
    path: str = ""
    """Start from this saved library (an `experience.json` of an earlier run) instead of an empty one."""


@dataclass
class Cluster:
    """A group of structurally equivalent observations."""

    id: int
    """Stable id (never reused)."""
    key: str
    """The normalized observation that founded the cluster; queries are compared with it."""


@dataclass
class Experience:
    """What was done once (or, merged, several times) at an observation cluster, and how it ended."""

    cluster: int
    """Id of the observation cluster."""
    kind: Kind
    """`success`: a step of a successful trajectory; `failure`: a step of a failed one, or an invalid action."""
    action: str
    """The action taken (whitespace-normalized)."""
    valid: bool
    """The env accepted the action."""
    score: float
    """Admission score (the best of the merged occurrences); ranks retrieval and eviction."""
    value: float
    """Mean outcome of the trajectories it came from."""
    count: int = 1
    """Merged occurrences."""
    iteration: int = 0
    """Iteration it was first admitted."""
    task_uid: str = ""
    """Task of its first occurrence (provenance)."""


@dataclass
class ExperienceLibrary:
    """The clusters and the experiences indexed by them."""

    clusters: list[Cluster] = field(default_factory=list)
    """Observation clusters, oldest first."""
    records: list[Experience] = field(default_factory=list)
    """Experiences, oldest first."""
    next_cluster: int = 0
    """Id of the next new cluster."""

    def count(self, kind: Kind) -> int:
        return sum(r.kind == kind for r in self.records)


@dataclass
class Candidate:
    """One step of a finished trajectory, proposed to the library."""

    observation: str
    """The raw env observation the action was taken at (`Step.anchor`)."""
    action: str
    """The action (whitespace-normalized)."""
    kind: Kind
    """`success` or `failure`."""
    valid: bool
    """The env accepted the action."""
    score: float
    """Admission score."""
    value: float
    """The trajectory's outcome."""
    task_uid: str = ""
    """Its task."""


# -- clustering ------------------------------------------------------------------------------------


def normalize_observation(text: str) -> str:
    """Lower-cased, whitespace collapsed: the text observations are clustered by."""
    return " ".join(text.lower().split())


def find_cluster(lib: ExperienceLibrary, observation: str, cfg: ExperienceConfig) -> int | None:
    """Id of the cluster `observation` belongs to, or None. Identical normalized text always matches;
    otherwise (`jaccard`, `tfidf`) the most similar cluster key at or above `cfg.similarity`, ties to the
    oldest cluster. A lookup never changes the library."""
    key = normalize_observation(observation)
    exact = next((c.id for c in lib.clusters if c.key == key), None)
    if exact is not None or cfg.cluster == "exact" or not lib.clusters:
        return exact
    sims = cluster_similarities(key, [c.key for c in lib.clusters], cfg.cluster)
    best = int(np.argmax(sims))  # first maximum: the oldest cluster wins a tie
    return lib.clusters[best].id if sims[best] >= cfg.similarity else None


def cluster_similarities(key: str, keys: list[str], metric: str) -> np.ndarray:
    """Similarity of `key` to each of `keys`: word-set Jaccard, or TF-IDF cosine with the IDF fitted on
    `[key] + keys` (so it depends on the library's clusters; deterministic for a given library)."""
    if metric == "jaccard":
        return np.array([jaccard(key, k) for k in keys])
    emb = TfidfEmbedder().embed([key, *keys])
    return emb[1:] @ emb[0]


def _add_cluster(lib: ExperienceLibrary, observation: str) -> int:
    lib.clusters.append(Cluster(id=lib.next_cluster, key=normalize_observation(observation)))
    lib.next_cluster += 1
    return lib.clusters[-1].id


# -- extraction and admission ----------------------------------------------------------------------


def extract_candidates(traj: Trajectory, cfg: ExperienceConfig) -> list[Candidate]:
    """Rule-based extraction: every step with an action becomes a candidate. Steps of a successful
    trajectory (outcome ≥ `success_threshold`) are successes scored outcome·γ^(T−1−t); steps of a failed
    one are failures scored (1 − outcome)·γ^(T−1−t); an invalid action is a failure scored 1."""
    won = traj.outcome >= cfg.success_threshold
    n = len(traj.steps)
    out = []
    for t, s in enumerate(traj.steps):
        action = " ".join(s.action.split())
        if not action or not s.anchor.strip():
            continue  # unparseable output: there is no action to remember
        decay = cfg.discount ** (n - 1 - t)
        if not s.valid:
            kind, score = "failure", 1.0
        elif won:
            kind, score = "success", traj.outcome * decay
        else:
            kind, score = "failure", max(0.0, 1.0 - traj.outcome) * decay
        out.append(Candidate(observation=s.anchor, action=action, kind=kind, valid=s.valid, score=score,
                             value=traj.outcome, task_uid=traj.task_uid))
    return out


def select_trajectories(groups: Iterable[Group], cfg: ExperienceConfig) -> list[Trajectory]:
    """Rate limit on sources: the `top_trajectories` best successes, then the as many worst failures
    (ties keep rollout order)."""
    trajs = [t for g in groups for t in g.flat]
    wins = sorted((t for t in trajs if t.outcome >= cfg.success_threshold), key=lambda t: -t.outcome)
    losses = sorted((t for t in trajs if t.outcome < cfg.success_threshold), key=lambda t: t.outcome)
    return wins[: cfg.top_trajectories] + losses[: cfg.top_trajectories]


def admit(lib: ExperienceLibrary, cand: Candidate, cfg: ExperienceConfig, iteration: int) -> str:
    """Put one candidate into the library; returns what happened: `merged` (the same action of the same
    kind at the same cluster is already there: count + 1, mean outcome, best score), `added`,
    `replaced` (the kind was full and the lowest-scored record, oldest first, scored less) or
    `rejected` (score below `min_score`, or not above the lowest when full)."""
    cid = find_cluster(lib, cand.observation, cfg)
    same = next((r for r in lib.records if r.cluster == cid and r.kind == cand.kind and r.action == cand.action
                 and r.valid == cand.valid), None) if cid is not None else None
    if same is not None:
        same.value = (same.value * same.count + cand.value) / (same.count + 1)
        same.count += 1
        same.score = max(same.score, cand.score)
        return "merged"
    if cand.score < cfg.min_score:
        return "rejected"
    outcome = "added"
    if lib.count(cand.kind) >= (cfg.max_success if cand.kind == "success" else cfg.max_failure):
        worst = min((r for r in lib.records if r.kind == cand.kind), key=lambda r: r.score, default=None)
        if worst is None or cand.score <= worst.score:
            return "rejected"
        _remove(lib, worst)
        outcome = "replaced"
        cid = find_cluster(lib, cand.observation, cfg)  # its cluster may have gone with the evicted record
    if cid is None:
        cid = _add_cluster(lib, cand.observation)
    lib.records.append(Experience(cluster=cid, kind=cand.kind, action=cand.action, valid=cand.valid,
                                  score=cand.score, value=cand.value, iteration=iteration, task_uid=cand.task_uid))
    return outcome


def _remove(lib: ExperienceLibrary, record: Experience) -> None:
    lib.records.remove(record)
    if not any(r.cluster == record.cluster for r in lib.records):
        lib.clusters = [c for c in lib.clusters if c.id != record.cluster]


def update_library(lib: ExperienceLibrary, groups: list[Group], iteration: int, cfg: ExperienceConfig) -> dict[str, float]:
    """One rate-limited extraction round (on every `every`-th iteration): candidates from the selected
    trajectories, per kind highest score first, admitted until `max_new_success` / `max_new_failure`
    new records (added or replaced) were made. Returns `experience/*` metrics."""
    stats: Counter[str] = Counter()
    if iteration % max(1, cfg.every) == 0:
        cands = [c for t in select_trajectories(groups, cfg) for c in extract_candidates(t, cfg)]
        for kind, limit in (("success", cfg.max_new_success), ("failure", cfg.max_new_failure)):
            new = 0
            for cand in sorted((c for c in cands if c.kind == kind), key=lambda c: -c.score):
                if new >= limit:
                    break
                what = admit(lib, cand, cfg, iteration)
                stats[what] += 1
                new += what in ("added", "replaced")
            stats[f"new_{kind}"] = new
    return {"experience/new_success": stats["new_success"], "experience/new_failure": stats["new_failure"],
            "experience/merged": stats["merged"], "experience/replaced": stats["replaced"],
            "experience/rejected": stats["rejected"], "experience/successes": lib.count("success"),
            "experience/failures": lib.count("failure"), "experience/clusters": len(lib.clusters)}


# -- retrieval -------------------------------------------------------------------------------------


def retrieve(lib: ExperienceLibrary, observation: str, cfg: ExperienceConfig) -> tuple[list[Experience], list[Experience]]:
    """The top `k_success` successful and `k_failure` failed experiences of the observation's cluster,
    by score, then count, then age (oldest first)."""
    cid = find_cluster(lib, observation, cfg)
    here = [r for r in lib.records if r.cluster == cid] if cid is not None else []

    def top(kind: str, k: int) -> list[Experience]:
        return sorted((r for r in here if r.kind == kind), key=lambda r: (-r.score, -r.count))[: max(0, k)]

    return top("success", cfg.k_success), top("failure", cfg.k_failure)


def format_experience(successes: list[Experience], failures: list[Experience], max_chars: int) -> str:
    """The lines of the prompt's Experience block, cut at a whole line to fit `max_chars` ('' if none)."""
    lines = [f"- {r.action}: led to success (outcome {r.value:.2f}, {r.count}x)" for r in successes]
    for r in failures:
        what = "invalid action" if not r.valid else f"led to failure (outcome {r.value:.2f}, {r.count}x)"
        lines.append(f"- {r.action}: {what}")
    out: list[str] = []
    for line in lines:
        if len("\n".join([*out, line])) > max_chars:
            break
        out.append(line)
    return "\n".join(out)


@dataclass
class Retriever:
    """The runner's `experience` callable: raw observation -> Experience block text ('' for none).
    Answers are cached per observation (the library does not change during a rollout)."""

    library: ExperienceLibrary
    """The library read."""
    cfg: ExperienceConfig
    """Retrieval settings."""
    cache: dict[str, str] = field(default_factory=dict)
    """Observation -> text."""
    calls: int = 0
    """Lookups made."""
    hits: int = 0
    """Lookups that returned experience."""

    def __call__(self, observation: str) -> str:
        if observation not in self.cache:
            self.cache[observation] = format_experience(*retrieve(self.library, observation, self.cfg),
                                                        self.cfg.max_chars)
        self.calls += 1
        self.hits += bool(self.cache[observation])
        return self.cache[observation]


def retrieval_metrics(retriever: Retriever | None) -> dict[str, float]:
    """How often this iteration's step prompts got experience (zeros while no retriever is active)."""
    calls, hits = (retriever.calls, retriever.hits) if retriever is not None else (0, 0)
    return {"experience/active": float(retriever is not None), "experience/retrievals": calls,
            "experience/hit_rate": hits / max(1, calls)}


def make_retriever(lib: ExperienceLibrary | None, cfg: ExperienceConfig, iteration: int) -> Retriever | None:
    """A retriever over `lib`, or None when experience is off, still warming up (`warmup`) or the library
    is smaller than `min_size` — the runner then builds exactly the prompts it builds without SLEA-RL."""
    if not cfg.enabled or lib is None or iteration < cfg.warmup or len(lib.records) < max(1, cfg.min_size):
        return None
    return Retriever(lib, cfg)


# -- persistence -----------------------------------------------------------------------------------


def save_library(lib: ExperienceLibrary, path: str | Path) -> Path:
    """Write the library as one JSON document, atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(orjson.dumps({"format": FORMAT, **to_dict(lib)}, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
    return path


def load_library(path: str | Path) -> ExperienceLibrary:
    path = Path(path)
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise UserError(f"cannot read the experience library {path}: {e}. Point `experience.path` at an "
                        f"{EXPERIENCE_FILE} written by a stratarl run.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not a stratarl experience library (expected format '{FORMAT}').")
    return from_dict(ExperienceLibrary, data)


def initial_library(cfg: ExperienceConfig) -> ExperienceLibrary | None:
    """The library a run starts with: None when experience is off, else `cfg.path` loaded, or empty."""
    if not cfg.enabled:
        return None
    return load_library(cfg.path) if cfg.path else ExperienceLibrary()
