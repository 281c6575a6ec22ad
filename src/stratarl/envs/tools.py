"""Tool environments (ASTRA, seed 001): answer a question by calling tools whose Python
implementations run in the sandbox; the episode reward is ASTRA's F1 over sub-questions.

`tools:<dataset>` reads a directory `stratarl/data/tools/<dataset>/` (or
`$STRATARL_TOOLS_DATA/<dataset>/`): `tools.jsonl` (one tool per line: name, domain, description,
parameters as a JSON schema, and `source`, Python that defines a function of that name) and
`train/dev/test.jsonl` (a question, its final answer and its decomposition: sub-questions, each
bound to the tool that answers it, with the gold call). The shipped dataset `seed` is written by
`scripts/gen_tools_seed.py`. A task's seed is the item's index in its split.

An episode's tool list is the tools its sub-questions need plus distractors (irrelevant-tool
mixing, ALGORITHMS.md "ASTRA synthesis"): every tool's doc is embedded with the `tfidf` embedder;
for each needed tool the cosine similarities to the tools of *other* domains are min-max normalised
and cut into bands, high > 0.85, medium 0.4-0.85, low < 0.4; up to `high` / `medium` / `low`
(params) tools per band are drawn, and the whole list is shuffled. Draws and order come from a hash
of the item and the task seed, so every rollout of a task sees the same list.

The action contract (what `step` accepts; the runner hands it the text inside `<action>`, and turns
`<answer>X</answer>` into `answer: X`):
- `{"name": TOOL, "arguments": {...}}` (`arguments` may also be a JSON string; an OpenAI tool-call
  object `{"type": "function", "function": {...}}` is unwrapped) -> the tool runs in the sandbox and
  its JSON result is the observation;
- `answer: TEXT` -> ends the episode;
- text that still holds tags is read like the runner reads it (first `<action>`, else `<answer>`).
Malformed JSON, a tool not in this episode's list or arguments that break its schema give an error
observation with `action_valid` False; a tool that raises, times out or is killed gives its error
as the observation (`action_valid` True: the call was well formed). Every non-answer action counts
as a call. After `max_steps` actions the episode ends.

Reward (ALGORITHMS.md "Trajectory rewards"), given once, when the episode ends: with n
sub-questions, n̂ solved and c calls, recall = n̂/n, precision = n̂/(c + 1e-6),
F1 = 2pr/(p + r) (0 when n̂ = 0); `reward=recall|precision` selects one side alone. A sub-question
is solved when its gold answer, normalised, appears as whole words in the normalised output of a
successful call to its tool. The final answer does not enter the reward; `won` says whether it
matches the gold answer (search-QA's rule: equal after normalisation, or >= 70% of the gold words).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..agent.parse import extract
from ..errors import UnknownNameError, UserError
from ..types import Task, read_jsonl
from .base import EnvSpec, Param, sanitize_action
from .registry import DYNAMIC, SPLITS
from .search import answer_matches, normalize_answer, shorten

DATA = Path(__file__).resolve().parents[1] / "data" / "tools"
USER_DATA = "STRATARL_TOOLS_DATA"
"""Environment variable: a directory whose subdirectories are further tool datasets."""
EPS = 1e-6
"""ε of the precision n̂/(c + ε)."""
BANDS = ("high", "medium", "low")
"""Similarity bands of a min-max normalised similarity x: high x > 0.85, medium 0.4 <= x <= 0.85,
low x < 0.4 (ALGORITHMS.md)."""
MAX_OUTPUT_CHARS = 2000
"""A tool's printed result is cut to this many characters (the observation and the solved check)."""
MAX_ACTION_CHARS = 4000
CACHE_SIZE = 8192

_ANSWER = re.compile(r"^\s*answer\s*:\s*(.*?)\s*$", re.IGNORECASE | re.DOTALL)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,)}


# --- records ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tool:
    """One tool of a dataset."""

    name: str
    """Function name, unique in the dataset."""
    domain: str
    """The server / domain it belongs to; distractors never come from a needed tool's domain."""
    description: str
    """What it does (shown to the agent)."""
    parameters: dict[str, Any]
    """JSON schema of the arguments: `{"type": "object", "properties": {...}, "required": [...]}`."""
    source: str
    """Python source that defines a function `name`, taking the arguments as keywords and returning
    a JSON-serialisable value."""

    def spec(self) -> dict[str, Any]:
        """The tool in OpenAI function-calling format."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def doc(self) -> str:
        """The text embedded for distractor similarity: name, description, parameter docs."""
        props = self.parameters.get("properties", {})
        params = "; ".join(f"{k}: {v.get('description', '')}" for k, v in props.items())
        return f"{self.name.replace('_', ' ')}. {self.description} Parameters: {params}"


@dataclass(frozen=True)
class SubQuestion:
    """One step of a question's decomposition (ASTRA's decomposition trace)."""

    id: int
    """1-based id within the item."""
    hop: int
    """Depth in the dependency graph (1 = needs nothing before it)."""
    sub_question: str
    """The sub-question in words."""
    sub_answer: str
    """Its gold answer; solved when it appears in the output of a call to `tool`."""
    depends_on: tuple[int, ...]
    """Ids of the sub-questions whose answers it needs."""
    is_parallel: bool
    """Can be asked alongside the previous sub-question (no dependency between them)."""
    tool: str
    """The tool that answers it."""
    call: dict[str, Any]
    """The gold call, `{"name": ..., "arguments": {...}}`."""


@dataclass(frozen=True)
class Item:
    """One question of a split."""

    id: str
    """`<split>-<nnnn>`."""
    question: str
    """The question shown to the agent."""
    answer: str
    """The final answer."""
    subquestions: tuple[SubQuestion, ...]
    """The decomposition, in a valid solving order."""

    @property
    def needed(self) -> list[str]:
        """The tools the sub-questions are bound to, in order of first use."""
        return list(dict.fromkeys(s.tool for s in self.subquestions))


@dataclass(frozen=True)
class Call:
    """An action read as tool-env syntax."""

    kind: str
    """`call`, `answer`, or `invalid`."""
    name: str = ""
    """The tool called."""
    arguments: Any = None
    """Its arguments as parsed (not yet checked against the schema)."""
    text: str = ""
    """The answer, or why the action was not understood."""


@dataclass(frozen=True)
class ToolResult:
    """What one run of a tool gave."""

    ok: bool
    """It returned normally."""
    text: str
    """Its printed JSON result when ok, else the error in one line."""


# --- rewards (pure) ---------------------------------------------------------------------------------

def recall(solved: int, n: int) -> float:
    """n̂/n: the share of sub-questions solved (0 for an item without sub-questions)."""
    return solved / n if n else 0.0


def precision(solved: int, calls: int) -> float:
    """n̂/(c + ε): sub-questions solved per tool call."""
    return solved / (calls + EPS)


def f1_reward(solved: int, n: int, calls: int) -> float:
    """ASTRA's trajectory reward 2pr/(p + r), 0 when nothing is solved."""
    if solved == 0:
        return 0.0
    p, r = precision(solved, calls), recall(solved, n)
    return 2 * p * r / (p + r)


REWARDS = {
    "f1": f1_reward,
    "recall": lambda solved, n, calls: recall(solved, n),
    "precision": lambda solved, n, calls: precision(solved, calls),
}
"""Reward variants by name: (n̂, n, c) -> reward."""


def solves(output: str, gold: str) -> bool:
    """The normalised gold answer occurs as whole words in the normalised output."""
    want = normalize_answer(gold)
    return bool(want) and f" {want} " in f" {normalize_answer(output)} "


# --- datasets ---------------------------------------------------------------------------------------

SYNTH_RUNS = "runs/*/tools"
"""Glob, relative to the working directory, of where `stratarl synth environments` writes datasets."""


def dataset_dirs() -> dict[str, Path]:
    """Dataset name -> directory: the shipped ones, then those under $STRATARL_TOOLS_DATA (one directory,
    or several joined by os.pathsep), then those under ./runs/*/tools/ (`stratarl synth environments`)."""
    user = [Path(p) for p in os.environ.get(USER_DATA, "").split(os.pathsep) if p]
    roots = [DATA, *user, *sorted(Path().glob(SYNTH_RUNS))]
    found: dict[str, Path] = {}
    for root in roots:
        if root.is_dir():
            for p in sorted(root.iterdir()):
                if (p / "tools.jsonl").is_file():
                    found.setdefault(p.name, p)
    return found


def datasets() -> list[str]:
    return sorted(dataset_dirs())


def _dir(dataset: str) -> Path:
    path = dataset_dirs().get(dataset)
    if path is None:
        raise UnknownNameError("environment", f"tools:{dataset}", [f"tools:{d}" for d in datasets()])
    return path


@cache
def load_tools(dataset: str) -> dict[str, Tool]:
    """The dataset's tools by name, in file order."""
    fields = ("name", "domain", "description", "parameters", "source")
    tools = [Tool(**{k: r[k] for k in fields}) for r in read_jsonl(_dir(dataset) / "tools.jsonl")]
    return {t.name: t for t in tools}


def _subquestion(r: dict[str, Any]) -> SubQuestion:
    return SubQuestion(id=r["id"], hop=r["hop"], sub_question=r["sub_question"], sub_answer=str(r["sub_answer"]),
                       depends_on=tuple(r.get("depends_on", ())), is_parallel=bool(r.get("is_parallel", False)),
                       tool=r["tool"], call=r["call"])


@cache
def load_items(dataset: str, split: str) -> tuple[Item, ...]:
    """A split's items; a split without a file is empty. Sub-questions without a tool are left out
    (they count neither as solved nor in n)."""
    path = _dir(dataset) / f"{split}.jsonl"
    if not path.is_file():
        return ()
    tools = load_tools(dataset)
    items = []
    for r in read_jsonl(path):
        subs = tuple(_subquestion(s) for s in r["subquestions"] if s.get("tool"))
        unknown = sorted({s.tool for s in subs} - set(tools))
        if unknown:
            raise UserError(f"tools:{dataset} {split} item {r['id']} needs tools missing from tools.jsonl: {unknown}")
        items.append(Item(id=r["id"], question=r["question"], answer=str(r["answer"]), subquestions=subs))
    return tuple(items)


# --- irrelevant-tool mixing -------------------------------------------------------------------------

@cache
def tool_similarity(dataset: str) -> np.ndarray:
    """Cosine similarity between every pair of the dataset's tool docs (tfidf), [T, T] in file order."""
    from ..rollout.diversity import TfidfEmbedder

    emb = TfidfEmbedder().embed([t.doc() for t in load_tools(dataset).values()])
    return emb @ emb.T


def band_of(x: float) -> str:
    """The band of a min-max normalised similarity."""
    return "high" if x > 0.85 else "medium" if x >= 0.4 else "low"


def _rank(key: str) -> int:
    """A stable pseudo-random rank (the same across processes and Python versions)."""
    return zlib.crc32(key.encode())


def min_max(x: np.ndarray) -> np.ndarray:
    """(x - min)/(max - min); all zeros when the values do not spread (everything is `low`)."""
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def pick_distractors(tools: dict[str, Tool], sim: np.ndarray, needed: list[str], per_band: dict[str, int],
                     key: str) -> list[str]:
    """Distractors for `needed`: per needed tool, up to `per_band[band]` tools of each band among the
    tools of other domains, drawn by a hash of `key`; no tool twice."""
    names = list(tools)
    domains = {tools[n].domain for n in needed}
    pool = [i for i, n in enumerate(names) if tools[n].domain not in domains]
    picked: list[str] = []
    for name in needed:
        norm = min_max(sim[names.index(name), pool])
        for band in BANDS:
            inside = [names[i] for i, x in zip(pool, norm, strict=True) if band_of(float(x)) == band]
            fresh = sorted((n for n in inside if n not in picked), key=lambda n: _rank(f"{key}/{name}/{n}"))
            picked += fresh[:per_band.get(band, 0)]
    return picked


def episode_tools(dataset: str, item: Item, seed: int, per_band: dict[str, int]) -> list[str]:
    """The episode's tool list: needed tools and distractors, in an order drawn from item and seed."""
    key = f"{dataset}/{item.id}/{seed}"
    chosen = item.needed + pick_distractors(load_tools(dataset), tool_similarity(dataset), item.needed, per_band, key)
    return sorted(chosen, key=lambda n: _rank(f"{key}/order/{n}"))


# --- reading and running calls ----------------------------------------------------------------------

def _json_object(text: str) -> tuple[Any, str]:
    """The JSON value in `text` (or in its outermost braces), or None and why not."""
    for candidate in (text, text[text.find("{"):text.rfind("}") + 1]):
        try:
            return json.loads(candidate), ""
        except (ValueError, RecursionError) as e:  # deep nesting overflows the decoder's stack
            why = shorten(str(e), 100)
    return None, why


def read_call(action: str) -> Call:
    """A tool call, an answer, or why the text is neither (module docstring)."""
    tagged = [a for a in extract(action, "action") if a.strip()]
    answers = [a for a in extract(action, "answer") if a.strip()]
    text = (tagged[0] if tagged else f"answer: {answers[0]}" if answers else action).strip()
    if (m := _ANSWER.match(text)) is not None:
        answer = " ".join(m.group(1).split())
        return Call("answer", text=answer) if answer else Call("invalid", text="'answer:' needs text after the colon")
    if len(text) > MAX_ACTION_CHARS:
        return Call("invalid", text=f"the call is longer than {MAX_ACTION_CHARS} characters")
    obj, why = _json_object(text)
    if obj is None:
        return Call("invalid", text=f'not a JSON tool call {{"name": ..., "arguments": {{...}}}} ({why})')
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
        obj = obj["function"]  # an OpenAI tool-call object
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"].strip():
        return Call("invalid", text='a tool call is a JSON object with a "name" string and "arguments"')
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        args, why = _json_object(args) if args.strip() else ({}, "")
        if args is None:
            return Call("invalid", text=f"the arguments string is not JSON ({why})")
    return Call("call", name=obj["name"].strip(), arguments=args)


def _type_ok(value: Any, kind: str) -> bool:
    types = _JSON_TYPES.get(kind)
    if types is None:
        return True  # a type this checker does not know: let the tool decide
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def check_arguments(tool: Tool, args: Any) -> str:
    """Why `args` break the tool's schema ('' when they do not): an object, no unknown or missing
    keys, JSON types and enums respected."""
    if not isinstance(args, dict):
        return f"the arguments of {tool.name} must be a JSON object"
    props = tool.parameters.get("properties", {})
    unknown = [k for k in args if k not in props]
    if unknown:
        return f"{tool.name} has no parameter {unknown[0]!r} (parameters: {', '.join(props) or 'none'})"
    missing = [k for k in tool.parameters.get("required", []) if k not in args]
    if missing:
        return f"{tool.name} needs the parameter {missing[0]!r}"
    for k, v in args.items():
        schema = props[k]
        if "type" in schema and not _type_ok(v, schema["type"]):
            return f"parameter {k!r} of {tool.name} must be of type {schema['type']}"
        if "enum" in schema and v not in schema["enum"]:
            return f"parameter {k!r} of {tool.name} must be one of {', '.join(map(str, schema['enum']))}"
    return ""


def call_program(tool: Tool, args: dict[str, Any]) -> str:
    """The program the sandbox runs: the tool's source, then the call, printing the result as JSON."""
    payload = json.dumps(args, ensure_ascii=True)
    return (f"{tool.source}\n\n"
            f"import json as _json\n"
            f"print(_json.dumps({tool.name}(**_json.loads({payload!r})), ensure_ascii=False, sort_keys=True))\n")


def _error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return shorten(lines[-1], 300) if lines else "no error message"


_CACHE: dict[tuple[str, str], ToolResult] = {}


def run_tool(tool: Tool, args: dict[str, Any], timeout: float, use_cache: bool = True) -> ToolResult:
    """Run one call in the sandbox. Tools are deterministic, so results (not timeouts or kills) are
    kept in a per-process cache keyed by source and arguments when `use_cache`."""
    from ..synth.sandbox import MiB, SandboxConfig, run_code

    key = (hashlib.sha1(tool.source.encode()).hexdigest(), json.dumps(args, sort_keys=True))
    if use_cache and key in _CACHE:
        return _CACHE[key]
    cfg = SandboxConfig(cpu_seconds=timeout, wall_seconds=timeout, memory_bytes=512 * MiB)
    res = run_code(call_program(tool, args), cfg)
    if res.status == "ok":
        result = ToolResult(True, shorten(res.stdout.strip(), MAX_OUTPUT_CHARS))
    elif res.status == "error":
        result = ToolResult(False, _error_line(res.stderr))
    else:
        return ToolResult(False, f"the tool was stopped ({res.status}: {res.detail})")
    if use_cache:
        if len(_CACHE) >= CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = result
    return result


# --- the environment --------------------------------------------------------------------------------

def task_description(item: Item, tools: list[Tool]) -> str:
    """The question and the episode's tools, one OpenAI-format spec per line (shown every step)."""
    lines = "\n".join(json.dumps(t.spec(), ensure_ascii=False) for t in tools)
    return f"{item.question}\nAvailable tools (OpenAI function format):\n{lines}"


def instructions(item: Item, max_steps: int) -> str:
    return (f"Question: {item.question}\n"
            'Call one of the listed tools per action as {"name": TOOL, "arguments": {...}}; you see its result. '
            f"Give the final answer with 'answer: ANSWER'. You have {max_steps} actions.")


@dataclass
class _Episode:
    item: Item
    tools: dict[str, Tool]
    description: str
    moves: int = 0
    calls: int = 0
    tool_runs: int = 0
    solved: set[int] = field(default_factory=set)
    done: bool = False
    answer: str | None = None


class ToolsEnv:
    """One tool-use episode at a time over a dataset (see module docstring)."""

    def __init__(self, dataset: str, params: dict[str, Any]):
        self.dataset, self.params = dataset, params
        self.max_steps, self.timeout = int(params["max_steps"]), float(params["timeout"])
        self.reward_fn = REWARDS[params["reward"]]
        self.per_band = {band: int(params[band]) for band in BANDS}
        self._tools = load_tools(dataset)
        self._ep: _Episode | None = None

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        if task.env != f"tools:{self.dataset}":
            raise ValueError(f"this env runs tools:{self.dataset}, not {task.env}")
        item = load_items(self.dataset, task.split)[task.seed]
        names = episode_tools(self.dataset, item, task.seed, self.per_band)
        tools = {n: self._tools[n] for n in names}
        self._ep = _Episode(item, tools, task_description(item, list(tools.values())))
        return instructions(item, self.max_steps), self._info(True)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        ep = self._ep
        if ep is None:
            raise RuntimeError("step() before reset()")
        if ep.done:
            return "The episode is over.", 0.0, True, self._info(False)
        ep.moves += 1
        call = read_call(sanitize_action(action))
        if call.kind == "answer":
            ep.done, ep.answer = True, call.text
            return f'You answered "{shorten(call.text)}". The episode is over.', self._reward(), True, self._info(True)
        ep.calls += 1
        obs, valid = self._call(ep, call)
        if ep.moves >= self.max_steps:
            ep.done = True
            obs += "\nNo actions left: the episode ends."
        return sanitize_action(obs), self._reward() if ep.done else 0.0, ep.done, self._info(valid)

    def _call(self, ep: _Episode, call: Call) -> tuple[str, bool]:
        """Run a call; returns the observation and whether the call was well formed."""
        if call.kind == "invalid":
            return f"Invalid tool call: {call.text}. Nothing happened.", False
        tool = ep.tools.get(call.name)
        if tool is None:
            listed = ", ".join(ep.tools)
            return f"Invalid tool call: no tool {shorten(call.name, 60)!r} in this episode (tools: {listed}).", False
        why = check_arguments(tool, call.arguments)
        if why:
            return f"Invalid tool call: {why}. Nothing happened.", False
        result = run_tool(tool, call.arguments, self.timeout, bool(self.params["cache"]))
        ep.tool_runs += 1
        if not result.ok:
            return f"{tool.name} failed: {result.text}", True
        ep.solved |= {s.id for s in ep.item.subquestions if s.tool == tool.name and solves(result.text, s.sub_answer)}
        return f"{tool.name} returned: {result.text}", True

    def expert_actions(self, task: Task) -> list[str]:
        """The gold calls in the decomposition's order, then the final answer."""
        item = load_items(self.dataset, task.split)[task.seed]
        return [*(json.dumps(s.call, ensure_ascii=False) for s in item.subquestions), f"answer: {item.answer}"]

    def close(self) -> None:
        self._ep = None

    def _reward(self) -> float:
        ep = self._ep
        assert ep is not None
        return float(self.reward_fn(len(ep.solved), len(ep.item.subquestions), ep.calls))

    def _info(self, valid: bool) -> dict[str, Any]:
        ep = self._ep
        assert ep is not None
        n, solved, reward = len(ep.item.subquestions), len(ep.solved), self._reward()
        won = ep.answer is not None and answer_matches(ep.answer, ep.item.answer)
        return {"won": won, "score": reward, "outcome": reward, "task_description": ep.description,
                "moves": ep.moves, "action_valid": valid, "calls": ep.calls, "tool_runs": ep.tool_runs,
                "solved": solved, "subquestions": n, "recall": recall(solved, n),
                "precision": precision(solved, ep.calls), "f1": f1_reward(solved, n, ep.calls),
                "answered": ep.answer is not None, "tools": list(ep.tools)}


# --- registration -----------------------------------------------------------------------------------

PARAMS = {
    "reward": Param(str, "f1", "episode reward: f1 (ASTRA), recall (n̂/n) or precision (n̂/(c+ε))",
                    choices=tuple(REWARDS)),
    "high": Param(int, 2, "distractors per needed tool from the high-similarity band (> 0.85)", 0, 20),
    "medium": Param(int, 2, "distractors per needed tool from the medium band (0.4-0.85)", 0, 20),
    "low": Param(int, 2, "distractors per needed tool from the low band (< 0.4)", 0, 20),
    "max_steps": Param(int, 10, "actions before the episode ends", 1, 100),
    "timeout": Param(float, 10.0, "seconds one tool call may run in the sandbox (wall clock and CPU)", 0.5, 120),
    "cache": Param(bool, 1, "answer a repeated call (same tool, same arguments) from a per-process cache"),
}


def spec(dataset: str) -> EnvSpec:
    return EnvSpec(
        id=f"tools:{dataset}", family="tools",
        description=f"Questions answered by calling sandboxed Python tools of the '{dataset}' dataset (ASTRA, F1 reward).",
        factory=lambda p: ToolsEnv(dataset, p), params=PARAMS,
        split_sizes=lambda p: {s: len(load_items(dataset, s)) for s in SPLITS},
        seeds=lambda split, p: list(range(len(load_items(dataset, split)))),
        has_expert=True, max_steps=10, outcome="score",
    )


def specs() -> list[EnvSpec]:
    return [spec(d) for d in datasets()]


def resolve(name: str) -> EnvSpec:
    """`tools:<name>` for a shipped or $STRATARL_TOOLS_DATA dataset, or a BFCL multi-turn category
    (`envs/bfcl.py`); else an error listing them."""
    from . import bfcl

    if (found := bfcl.resolve(name)) is not None:
        return found
    if name not in dataset_dirs():
        raise UnknownNameError("environment", f"tools:{name}", [f"tools:{d}" for d in datasets()] + bfcl.ids())
    return spec(name)


DYNAMIC["tools"] = resolve
