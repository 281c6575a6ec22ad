"""Environment synthesis for RL (ASTRA, seed 001): QA decompositions -> verified, merged Python tools ->
a `tools:` dataset (the layout `stratarl.envs.tools` reads).

For every sub-question that needs a tool: a tool spec (OpenAI schema), a Python implementation and a
call. The teacher writes them as one JSON object; they are checked (names, schema, the code parses and
defines the function, the call fits the schema) and run in the sandbox; the tool is accepted only when
the printed output contains the sub-answer (the tools env's `solves` rule), with `retries` further
attempts that are told why the last one failed. Offline, and as the fallback, a template writer (ours)
turns the record's `x-offline-tool` hint into a lookup-table or expression function, which goes through
the same sandbox verification (a wrong expression is rejected like a wrong teacher answer).

Merging: tools with the same parameter names whose docs (tfidf, `rollout.diversity`) have cosine
similarity >= a threshold are the same intent; a merged tool's code holds every variant in its own
namespace and answers with the first one that accepts the arguments; after each merge every
sub-question the tool serves is verified again, and a merge that breaks one is undone.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Any

from ..envs.tools import Tool, check_arguments, run_tool, solves
from .qa import QARecord, TraceStep
from .teacher import Teacher, json_object


@dataclass(frozen=True)
class Binding:
    """A sub-question a tool must answer."""

    record: str
    """Record id."""
    step: int
    """Sub-question id."""
    arguments: dict[str, Any]
    """The call's arguments."""
    sub_answer: str
    """What the output must contain."""


@dataclass
class ToolDraft:
    """A tool written for one sub-question."""

    tool: Tool
    """Spec and source."""
    binding: Binding
    """The sub-question and its call."""
    source: str
    """`teacher` or `template`."""
    verified: bool = False
    """The sandboxed call printed the sub-answer."""
    why: str = ""
    """Why it was rejected."""

    @property
    def call_statement(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.binding.arguments.items())
        return f"{self.tool.name}({args})"


@dataclass
class ToolGroup:
    """Tools merged into one (same intent)."""

    name: str
    """Name of the merged tool."""
    variants: list[Tool]
    """The merged tools, in merge order (the first that accepts the arguments answers)."""
    bindings: list[Binding] = field(default_factory=list)
    """Every sub-question it serves."""


# --- verification -----------------------------------------------------------------------------------

def verify(tool: Tool, args: dict[str, Any], sub_answer: str, timeout: float) -> str:
    """Run the call in the sandbox; '' when the output contains the sub-answer, else why not."""
    why = check_arguments(tool, args)
    if why:
        return why
    res = run_tool(tool, args, timeout, use_cache=False)
    if not res.ok:
        return f"the call failed: {res.text}"
    return "" if solves(res.text, sub_answer) else f"the output {res.text[:120]!r} does not contain {sub_answer!r}"


def check_source(name: str, source: str) -> str:
    """'' when `source` parses and defines a top-level function `name`."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return f"the code does not parse: {e.msg} (line {e.lineno})"
    if not any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body):
        return f"the code defines no top-level function {name!r}"
    return ""


# --- writing tools ----------------------------------------------------------------------------------

def template_tool(step: TraceStep, domain: str) -> tuple[Tool, dict[str, Any]] | None:
    """The offline writer: a tool and its call from the step's `x-offline-tool` hint (None without one)."""
    h = step.hint
    if not h:
        return None
    name, param, returns = h["name"], h["parameter"], h.get("returns", "result")
    if h.get("kind") == "expression":
        body = f"    return {{{param!r}: {param}, {returns!r}: {h['expression']}}}\n"
        source = f"def {name}({param}):\n{body}"
    else:
        table = {" ".join(str(h["argument"]).lower().split()): step.sub_answer}
        source = (f"_TABLE = {table!r}\n\n\ndef {name}({param}):\n"
                  f"    key = ' '.join(str({param}).lower().split())\n"
                  f"    if key not in _TABLE:\n        raise ValueError(f'unknown {param}: {{{param}!r}}')\n"
                  f"    return {{{param!r}: {param}, {returns!r}: _TABLE[key]}}\n")
    params = {"type": "object", "properties": {param: {"type": h.get("type", "string"), "description": f"The {param}"}},
              "required": [param]}
    return Tool(name, domain, h.get("description", step.sub_question), params, source), {param: h["argument"]}


def _teacher_prompt(rec: QARecord, step: TraceStep, feedback: str) -> str:
    return (f"Main question: {rec.main_question}\nSub-question: {step.sub_question}\nIts answer: {step.sub_answer}\n"
            "Write a Python tool that answers this kind of sub-question. Reply with one JSON object: "
            '{"name": function name, "description": ..., "parameters": JSON schema object, '
            '"code": Python source defining the function (returning a JSON-serialisable value), '
            '"call": {"arguments": {...}} (the call that answers this sub-question)}.'
            + (f"\nYour last attempt was rejected: {feedback}" if feedback else ""))


def parse_teacher_tool(obj: dict[str, Any] | None, domain: str) -> tuple[Tool, dict[str, Any]] | str:
    """A tool and call from the teacher's JSON, or why it is unusable."""
    if obj is None:
        return "the answer is not a JSON object"
    name, code, params = obj.get("name"), obj.get("code"), obj.get("parameters")
    args = (obj.get("call") or {}).get("arguments") if isinstance(obj.get("call"), dict) else None
    if not isinstance(name, str) or not name.isidentifier():
        return f"'name' must be a Python identifier, got {str(name)[:40]!r}"
    if not isinstance(params, dict) or not isinstance(params.get("properties"), dict):
        return "'parameters' must be a JSON schema object with 'properties'"
    if not isinstance(code, str) or (why := check_source(name, code)):
        return why if isinstance(code, str) else "'code' must be a string"
    if not isinstance(args, dict):
        return "'call.arguments' must be an object"
    tool = Tool(name, domain, str(obj.get("description", "")), params, code)
    return (tool, args) if not (why := check_arguments(tool, args)) else why


def write_tool(rec: QARecord, step: TraceStep, teacher: Teacher, timeout: float, fallback: bool) -> ToolDraft | None:
    """A verified tool for one sub-question: the teacher's (with retries), else the template's; the
    returned draft says whether it verified. None when there is nothing to try (no teacher, no hint)."""
    feedback = ""
    for _ in range(teacher.cfg.retries + 1 if teacher.online else 0):
        got = parse_teacher_tool(json_object(teacher.ask("tool", [{"role": "user", "content": _teacher_prompt(
            rec, step, feedback)}])), rec.domain)
        feedback = got if isinstance(got, str) else verify(got[0], got[1], step.sub_answer, timeout)
        if not feedback:
            teacher.accept("tool")
            assert not isinstance(got, str)
            return ToolDraft(got[0], Binding(rec.id, step.id, got[1], step.sub_answer), "teacher", True)
        teacher.reject("tool")
    written = template_tool(step, rec.domain) if fallback or not teacher.online else None
    if written is None:
        return None
    tool, args = written
    why = verify(tool, args, step.sub_answer, timeout)
    return ToolDraft(tool, Binding(rec.id, step.id, args, step.sub_answer), "template", not why, why)


# --- merging ----------------------------------------------------------------------------------------

def merged_source(name: str, variants: list[Tool]) -> str:
    """One function `name` serving every variant: each variant's source runs in its own namespace and
    the first that accepts the arguments answers (a single variant with the same name is kept as is)."""
    if len(variants) == 1 and variants[0].name == name:
        return variants[0].source
    table = ",\n    ".join(repr((v.source, v.name)) for v in variants)
    return (f"_VARIANTS = [\n    {table},\n]\n\n\ndef _load(source, name):\n    namespace = {{'__name__': 'variant'}}\n"
            "    exec(source, namespace)\n    return namespace[name]\n\n\n"
            "_IMPLS = [_load(s, n) for s, n in _VARIANTS]\n\n\n"
            f"def {name}(**kwargs):\n    errors = []\n    for impl in _IMPLS:\n        try:\n"
            "            return impl(**kwargs)\n        except Exception as e:\n"
            "            errors.append(f'{type(e).__name__}: {e}')\n    raise ValueError('; '.join(errors))\n")


def group_tool(group: ToolGroup) -> Tool:
    first = group.variants[0]
    return Tool(group.name, first.domain, first.description, first.parameters, merged_source(group.name, group.variants))


def same_params(a: Tool, b: Tool) -> bool:
    return set(a.parameters.get("properties", {})) == set(b.parameters.get("properties", {}))


def try_merge(group: ToolGroup, draft: ToolDraft, timeout: float) -> bool:
    """Merge `draft` into `group` if every served sub-question still verifies afterwards."""
    trial = ToolGroup(group.name, [*group.variants, draft.tool], [*group.bindings, draft.binding])
    tool = group_tool(trial)
    if any(verify(tool, b.arguments, b.sub_answer, timeout) for b in trial.bindings):
        return False
    group.variants, group.bindings = trial.variants, trial.bindings
    return True


def merge_tools(drafts: list[ToolDraft], similarity: Any, threshold: float, timeout: float,
                enabled: bool = True) -> tuple[list[ToolGroup], dict[str, int]]:
    """Greedy same-intent merging in draft order. `similarity[i, j]` compares draft i with draft j.
    Returns the groups (one tool each) and counts of merges done and undone."""
    groups: list[ToolGroup] = []
    firsts: list[int] = []  # index of each group's first draft
    counts = {"merges": 0, "merges_rejected": 0}
    for i, d in enumerate(drafts):
        near = sorted((k for k, f in enumerate(firsts) if enabled and same_params(drafts[f].tool, d.tool)
                       and similarity[f, i] >= threshold), key=lambda k: -similarity[firsts[k], i])
        for k in near:
            if try_merge(groups[k], d, timeout):
                counts["merges"] += 1
                break
            counts["merges_rejected"] += 1
        else:
            taken = {g.name for g in groups}
            name = d.tool.name if d.tool.name not in taken else next(
                f"{d.tool.name}_{n}" for n in range(2, len(groups) + 3) if f"{d.tool.name}_{n}" not in taken)
            groups.append(ToolGroup(name, [d.tool], [d.binding]))
            firsts.append(i)
    return groups, counts


# --- the dataset ------------------------------------------------------------------------------------

def dataset_item(rec: QARecord, item_id: str, tool_of: dict[tuple[str, int], tuple[str, dict[str, Any]]]) -> dict:
    """A `tools:` item: sub-questions that need a tool are bound to it with the gold call."""
    subs = []
    for s in rec.trace:
        row: dict[str, Any] = {"id": s.id, "hop": s.hop, "sub_question": s.sub_question, "sub_answer": s.sub_answer,
                               "depends_on": list(s.depends_on), "is_parallel": s.is_parallel,
                               "needs_tool": s.needs_tool}
        if s.needs_tool:
            name, args = tool_of[(rec.id, s.id)]
            row |= {"tool": name, "call": {"name": name, "arguments": args}}
        subs.append(row)
    return {"id": item_id, "source_record": rec.id, "question": rec.main_question, "answer": rec.main_answer,
            "subquestions": subs}


def tool_row(tool: Tool) -> dict[str, Any]:
    return {"name": tool.name, "domain": tool.domain, "description": tool.description, "parameters": tool.parameters,
            "source": tool.source}


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
