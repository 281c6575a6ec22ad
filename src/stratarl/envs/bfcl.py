"""BFCL multi-turn environments: the tasks of the Berkeley Function Calling Leaderboard's multi-turn
categories, run on BFCL's own executable backends and scored by BFCL's own state-based checker.

Needs the `bfcl-eval` package (`pip install --no-deps bfcl-eval`; the data and the backends of the
multi-turn categories are inside it and import with this project's dependencies). Ids:

    tools:bfcl-multi-turn-base          tools:bfcl-multi-turn-miss-func
    tools:bfcl-multi-turn-miss-param    tools:bfcl-multi-turn-long-context

A task is one BFCL entry (`BFCL_v4_multi_turn_<category>.json`, 200 per category); its seed is the
entry's number. BFCL has no splits: entry k is `test` when k % 5 == 0, `dev` when k % 5 == 1, else
`train` (40 / 40 / 120). The episode builds the entry's `involved_classes` (GorillaFileSystem,
TwitterAPI, MathAPI, ...) from its `initial_config` (deep-copied, `long_context` for that category),
as BFCL's `execute_multi_turn_func_call` does, and a second, identical set for the ground truth.

The user turns come one at a time. Per action the agent calls functions, either as
`{"name": F, "arguments": {...}}` (or a JSON list of them) or in BFCL's Python syntax `f(a=1)` /
`[f(a=1), g(2)]`, parsed with `ast` (literals only, never evaluated). Each result comes back as the
observation (BFCL's formatting: strings as is, dicts as JSON, errors as `Error during execution: ...`).
`answer: TEXT` ends the current user turn: the turn is checked and the next user message is the
observation. In `miss-func`, the turn that BFCL holds functions back for delivers their docs with
BFCL's "I have updated some more functions..." message. As in BFCL's executor, any public method of
the involved classes runs when called, listed or not (one miss-func gold answer calls a held-back one).

Check of a turn (BFCL's `multi_turn_checker`, turn by turn): the ground-truth calls of the turn run
on the ground-truth instances; a turn with ground truth passes when the agent made at least one call
in it, `state_checker` finds every instance's public attributes equal, and `response_checker` finds
every ground-truth result among the agent's results so far; a turn without ground truth passes when
the agent made no call in it (BFCL's irrelevance check). Reward (once, at the end): 1 when every turn
passes (BFCL's verdict for the entry), else 0; `info["turn_fraction"]` is the share of turns passed.
The episode ends after the last turn's answer or after `max_steps` actions (unreached turns fail).
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..agent.parse import extract
from ..errors import UserError
from ..types import Task, read_jsonl
from .base import EnvSpec, Param, sanitize_action

CATEGORIES = {"bfcl-multi-turn-base": "multi_turn_base", "bfcl-multi-turn-miss-func": "multi_turn_miss_func",
              "bfcl-multi-turn-miss-param": "multi_turn_miss_param",
              "bfcl-multi-turn-long-context": "multi_turn_long_context"}
"""Env name (after `tools:`) -> BFCL category."""
ADDED_FUNCTIONS = "I have updated some more functions you can choose from. What about now?"
"""BFCL's user message of a miss-func turn (DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC)."""
INSTALL = "pip install --no-deps bfcl-eval"
MAX_RESULT_CHARS = 2000


def available() -> bool:
    """bfcl-eval is importable (its multi-turn checker and backends)."""
    try:
        importlib.import_module("bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker")
    except ImportError:
        return False
    return True


def _require() -> Path:
    """The bfcl_eval package directory, or a UserError saying how to install it."""
    try:
        import bfcl_eval
    except ImportError:
        raise UserError(f"BFCL environments need the bfcl-eval package: {INSTALL}") from None
    return Path(bfcl_eval.__file__).parent


# --- data ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One BFCL multi-turn entry with its ground truth."""

    id: str
    """BFCL id, e.g. `multi_turn_base_0`."""
    turns: tuple[str, ...]
    """User message of each turn ('' for a miss-func turn, which gets ADDED_FUNCTIONS)."""
    initial_config: dict[str, Any]
    """Per class, the scenario given to its `_load_scenario`."""
    classes: tuple[str, ...]
    """`involved_classes`."""
    ground_truth: tuple[tuple[str, ...], ...]
    """Per turn, the gold calls in BFCL's Python syntax."""
    missed: dict[int, tuple[str, ...]]
    """Turn -> functions held back until that turn (miss-func)."""


@cache
def load_entries(category: str) -> tuple[Entry, ...]:
    """Every entry of a BFCL multi-turn category, in file order."""
    data = _require() / "data"
    truth = {r["id"]: r["ground_truth"] for r in read_jsonl(data / "possible_answer" / f"BFCL_v4_{category}.json")}
    out = []
    for r in read_jsonl(data / f"BFCL_v4_{category}.json"):
        turns = tuple("\n".join(m["content"] for m in msgs if m.get("role") == "user") for msgs in r["question"])
        missed = {int(k): tuple(v) for k, v in r.get("missed_function", {}).items()}
        out.append(Entry(r["id"], turns, r["initial_config"], tuple(r["involved_classes"]),
                         tuple(tuple(t) for t in truth[r["id"]]), missed))
    return tuple(out)


def split_of(number: int) -> str:
    return "test" if number % 5 == 0 else "dev" if number % 5 == 1 else "train"


def seeds(category: str, split: str) -> list[int]:
    """Entry numbers of a split (module docstring)."""
    return [int(e.id.rsplit("_", 1)[1]) for e in load_entries(category) if split_of(int(e.id.rsplit("_", 1)[1])) == split]


@cache
def function_docs(cls: str) -> tuple[dict[str, Any], ...]:
    """BFCL's function docs of a backend class."""
    from bfcl_eval.constants.executable_backend_config import MULTI_TURN_FUNC_DOC_FILE_MAPPING

    return tuple(read_jsonl(_require() / "data" / "multi_turn_func_doc" / MULTI_TURN_FUNC_DOC_FILE_MAPPING[cls]))


def make_instances(entry: Entry, long_context: bool) -> dict[str, Any]:
    """The entry's backend instances, loaded from its initial config as BFCL's executor loads them."""
    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING, STATELESS_CLASSES

    out = {}
    for cls in entry.classes:
        inst = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[cls]), cls)()
        if cls not in STATELESS_CLASSES:
            inst._load_scenario(copy.deepcopy(entry.initial_config.get(cls, {})), long_context=long_context)
        out[cls] = inst
    return out


def methods(instances: dict[str, Any]) -> dict[str, Any]:
    """Public method name -> bound method, over the instances (BFCL's name mapping)."""
    return {n: m for inst in instances.values() for n, m in inspect.getmembers(inst, inspect.ismethod)
            if not n.startswith("_")}


# --- reading actions ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FuncCall:
    """One parsed function call."""

    name: str
    """Function name."""
    args: tuple[Any, ...] = ()
    """Positional arguments (literals)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments (literals)."""


def parse_python_calls(text: str) -> list[FuncCall]:
    """`f(a=1)` or `[f(a=1), g(2)]` in BFCL's syntax, arguments as literals; never evaluated.
    Raises ValueError saying what is wrong."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"not a function call ({e.msg})") from None
    nodes = node.elts if isinstance(node, ast.List | ast.Tuple) else [node]
    out = []
    for n in nodes:
        qualified = isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
        if not isinstance(n, ast.Call) or not (isinstance(n.func, ast.Name) or qualified):
            raise ValueError("expected calls like f(a=1) or Class.f(a=1)")
        name = n.func.id if isinstance(n.func, ast.Name) else n.func.attr
        try:
            args = tuple(ast.literal_eval(a) for a in n.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in n.keywords if k.arg}
        except (ValueError, TypeError, SyntaxError, RecursionError):
            raise ValueError(f"the arguments of {name} must be literals") from None
        out.append(FuncCall(name, args, kwargs))
    return out


def _json_calls(obj: Any) -> list[FuncCall]:
    items = obj if isinstance(obj, list) else [obj]
    out = []
    for it in items:
        if isinstance(it, dict) and isinstance(it.get("function"), dict):
            it = it["function"]  # an OpenAI tool-call object
        if not isinstance(it, dict) or not isinstance(it.get("name"), str):
            raise ValueError('a JSON call is {"name": F, "arguments": {...}}')
        args = it.get("arguments", it.get("parameters", {}))
        args = json.loads(args) if isinstance(args, str) and args.strip() else args or {}
        if not isinstance(args, dict):
            raise ValueError(f"the arguments of {it['name']} must be a JSON object")
        out.append(FuncCall(it["name"].strip(), (), args))
    return out


def read_action(action: str) -> tuple[str, list[FuncCall], str]:
    """(`answer`, [], text) | (`calls`, calls, '') | (`invalid`, [], why)."""
    tagged = [a for a in extract(action, "action") if a.strip()]
    answers = [a for a in extract(action, "answer") if a.strip()]
    text = (tagged[0] if tagged else f"answer: {answers[0]}" if answers else action).strip()
    head, sep, rest = text.partition(":")
    if sep and head.strip().lower() == "answer":
        return "answer", [], " ".join(rest.split())
    try:
        if text.startswith("{") or text.replace(" ", "").startswith("[{"):
            return "calls", _json_calls(json.loads(text)), ""
        return "calls", parse_python_calls(text), ""
    except (ValueError, RecursionError) as e:
        return "invalid", [], str(e)[:200]


def format_result(value: Any) -> str:
    """BFCL's rendering of a call's result."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def execute(table: dict[str, Any], call: FuncCall) -> str:
    """Run one call on the backends; errors come back as BFCL writes them."""
    fn = table.get(call.name)
    if fn is None:
        return f"Error during execution: no function {call.name!r} is available"
    try:
        return format_result(fn(*call.args, **call.kwargs))
    except Exception as e:  # a backend error is the observation, as in BFCL
        return f"Error during execution: {e}"


# --- checking -----------------------------------------------------------------------------------------

def check_turn(truth: tuple[str, ...], model_calls: int, model_results: list[str], model_inst: dict[str, Any],
               gt_inst: dict[str, Any], gt_results: list[str]) -> bool:
    """One turn as BFCL's multi_turn_checker judges it (module docstring); `model_results` are all
    the agent's results so far, `gt_results` the ground truth's of this turn."""
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import response_checker, state_checker

    if not truth:
        return model_calls == 0
    if model_calls == 0:
        return False
    return bool(state_checker(model_inst, gt_inst)["valid"]) and \
        bool(response_checker(model_results, gt_results, 0)["valid"])


# --- the environment ----------------------------------------------------------------------------------

@dataclass
class _Episode:
    entry: Entry
    model: dict[str, Any]
    truth: dict[str, Any]
    visible: set[str]
    turn: int = 0
    moves: int = 0
    turn_calls: int = 0
    results: list[str] = field(default_factory=list)
    passed: list[bool] = field(default_factory=list)
    done: bool = False


def _docs_text(docs: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(d, ensure_ascii=False) for d in docs)


class BFCLEnv:
    """One BFCL multi-turn entry per episode (module docstring)."""

    def __init__(self, name: str, params: dict[str, Any]):
        self.name, self.category = name, CATEGORIES[name]
        self.max_steps = int(params["max_steps"])
        self._ep: _Episode | None = None

    def _entry(self, task: Task) -> Entry:
        return next(e for e in load_entries(self.category) if e.id == f"{self.category}_{task.seed}")

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        if task.env != f"tools:{self.name}":
            raise ValueError(f"this env runs tools:{self.name}, not {task.env}")
        entry, long = self._entry(task), "long_context" in self.category
        held = {f for fs in entry.missed.values() for f in fs}
        visible = {d["name"] for c in entry.classes for d in function_docs(c)} - held
        self._ep = _Episode(entry, make_instances(entry, long), make_instances(entry, long), visible)
        return self._turn_text(), self._info(True)

    def _docs(self, names: set[str]) -> list[dict[str, Any]]:
        return [d for c in self._ep.entry.classes for d in function_docs(c) if d["name"] in names]  # type: ignore[union-attr]

    def _turn_text(self) -> str:
        ep = self._ep
        assert ep is not None
        k, n = ep.turn, len(ep.entry.turns)
        head = f"User turn {k + 1} of {n}: "
        if k in ep.entry.missed:
            ep.visible |= set(ep.entry.missed[k])
            return head + f"{_docs_text(self._docs(set(ep.entry.missed[k])))}\n{ADDED_FUNCTIONS}"
        return head + ep.entry.turns[k]

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        ep = self._ep
        if ep is None:
            raise RuntimeError("step() before reset()")
        if ep.done:
            return "The episode is over.", 0.0, True, self._info(False)
        ep.moves += 1
        kind, calls, text = read_action(sanitize_action(action))
        if kind == "answer":
            obs, valid = self._end_turn(), True
        elif kind == "invalid":
            obs, valid = f"Invalid function call: {text}. Nothing happened.", False
        else:
            obs, valid = self._run(ep, calls), True
        if not ep.done and ep.moves >= self.max_steps:
            while not ep.done:
                self._end_turn()
            obs += "\nNo actions left: the episode ends."
        reward = float(all(ep.passed)) if ep.done else 0.0
        return sanitize_action(obs), reward, ep.done, self._info(valid)

    def _run(self, ep: _Episode, calls: list[FuncCall]) -> str:
        table = methods(ep.model)  # any public method, as BFCL's executor allows (some gold calls use held-back ones)
        out = []
        for c in calls:
            result = execute(table, c)
            ep.results.append(result)
            out.append(f"{c.name} returned: {result[:MAX_RESULT_CHARS]}")
        ep.turn_calls += len(calls)
        return "\n".join(out)

    def _end_turn(self) -> str:
        """Check the current turn against the ground truth; deliver the next user turn or end."""
        ep = self._ep
        assert ep is not None
        truth = ep.entry.ground_truth[ep.turn]
        gt_table = methods(ep.truth)
        gt_results = [execute(gt_table, c) for t in truth for c in parse_python_calls(t)]
        ep.passed.append(check_turn(truth, ep.turn_calls, ep.results, ep.model, ep.truth, gt_results))
        ep.turn, ep.turn_calls = ep.turn + 1, 0
        if ep.turn >= len(ep.entry.turns):
            ep.done = True
            return f"All {len(ep.entry.turns)} user turns are done. The episode is over."
        return self._turn_text()

    def expert_actions(self, task: Task) -> list[str]:
        """Per turn: the ground-truth calls as JSON calls (positional arguments named from the backend
        method's signature), then `answer: done`."""
        entry = self._entry(task)
        table = methods(make_instances(entry, "long_context" in self.category))
        out = []
        for turn in entry.ground_truth:
            for call in (c for t in turn for c in parse_python_calls(t)):
                params = list(inspect.signature(table[call.name]).parameters)
                args = {**dict(zip(params, call.args, strict=False)), **call.kwargs}
                out.append(json.dumps({"name": call.name, "arguments": args}, ensure_ascii=False))
            out.append("answer: done")
        return out

    def close(self) -> None:
        self._ep = None

    def _info(self, valid: bool) -> dict[str, Any]:
        ep = self._ep
        assert ep is not None
        n, ok = len(ep.entry.turns), sum(ep.passed)
        won = ep.done and all(ep.passed)
        return {"won": won, "score": float(won), "outcome": float(won), "action_valid": valid, "moves": ep.moves,
                "turn": ep.turn, "turns": n, "turns_passed": ok, "turn_fraction": ok / n if n else 0.0,
                "task_description": f"BFCL {ep.entry.id}. Functions:\n{_docs_text(self._docs(ep.visible))}"}


# --- registration -------------------------------------------------------------------------------------

PARAMS = {"max_steps": Param(int, 60, "actions (calls and turn-ending answers) before the episode ends", 1, 500)}


def spec(name: str) -> EnvSpec:
    category = CATEGORIES[name]
    return EnvSpec(
        id=f"tools:{name}", family="tools",
        description=f"BFCL {category.replace('_', ' ')}: user turns answered with BFCL's executable backends, "
                    "state-based check (needs bfcl-eval)",
        factory=lambda p: BFCLEnv(name, p), params=PARAMS,
        split_sizes=lambda p: {s: len(seeds(category, s)) for s in ("train", "dev", "test")},
        seeds=lambda split, p: seeds(category, split), has_expert=True, max_steps=60, outcome="won")


def resolve(name: str) -> EnvSpec | None:
    """The spec for a BFCL name; None for other names; a UserError naming the install when the name
    is BFCL's but bfcl-eval is missing."""
    if name not in CATEGORIES:
        return None
    _require()
    return spec(name)


def ids() -> list[str]:
    """The BFCL ids, for error messages (empty without bfcl-eval)."""
    return [f"tools:{c}" for c in CATEGORIES] if available() else []


def specs() -> list[EnvSpec]:
    """Listed only when bfcl-eval is installed."""
    return [spec(n) for n in CATEGORIES] if available() else []
