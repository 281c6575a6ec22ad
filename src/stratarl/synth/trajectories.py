"""Tasks and trajectories for SFT (ASTRA trajectory synthesis, seed 001).

chain -> task: a user request that needs the chain's tools in order, with argument values from one of
the server's scenarios; written by the teacher (validated: it must mention every argument value) or, offline
and as the fallback, by a template (ours).

task -> trajectory: the teacher is given the tool specs and the request and answers one turn at a time
with `<think>...</think><action>{"name": ..., "arguments": {...}}</action>` or `<answer>...</answer>`;
every call is validated (known tool, arguments fit its schema) and executed (`execute.Executor`). An
unparseable turn, an invalid call or running out of turns rejects the trajectory (counted); the offline
writer (ours) follows the chain itself, retries a failed call once, and answers with the last result.

The SFT record is an OpenAI messages list: system (tools), user (request), then assistant turns with
`tool_calls` and the same call in `<action>` tags in `content` (what stratarl's agents emit, and what a
chat template that ignores `tool_calls` still shows), tool results as `tool` messages, a final answer.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from ..envs.search import normalize_answer, shorten
from ..envs.tools import read_call
from .execute import Executor
from .servers import ToolServer
from .teacher import Teacher

SYSTEM = ("You are a tool-using assistant. Tools (OpenAI function format):\n{tools}\n"
          'Each turn, either call one tool as <think>why</think><action>{{"name": TOOL, "arguments": {{...}}}}</action> '
          "or give the final answer as <answer>ANSWER</answer>.")


@dataclass
class SynthTask:
    """A user request built from a chain."""

    id: str
    """`<server>-<nnnn>`."""
    server: str
    """The server whose tools it needs."""
    chain: list[str]
    """The tool chain it was written from."""
    scenario: dict[str, Any]
    """Argument values (parameter name -> value)."""
    query: str
    """The request."""
    source: str = "template"
    """`teacher` or `template`."""


@dataclass
class SynthStep:
    """One assistant turn that called a tool, and the result."""

    content: str
    """The assistant text as written."""
    name: str
    """Tool called."""
    arguments: dict[str, Any]
    """Its arguments."""
    ok: bool
    """The call succeeded."""
    result: str
    """JSON result or error line."""
    injected: bool = False
    """The failure was injected by the emulator."""


@dataclass
class SynthTrajectory:
    """A finished (or rejected) trajectory."""

    task: SynthTask
    """The task."""
    steps: list[SynthStep] = field(default_factory=list)
    """Tool-calling turns."""
    final_answer: str = ""
    """The final answer ('' if none)."""
    source: str = "template"
    """`teacher` or `template`."""
    rejected: str = ""
    """Why the teacher's trajectory was rejected ('' when it was not)."""
    scores: dict[str, float] = field(default_factory=dict)
    """7-dimension quality scores (quality.py), filled in later."""
    score: float = 0.0
    """Their mean."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- tasks ------------------------------------------------------------------------------------------

def _fill(server: ToolServer, chain: list[str], scenario: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Planned (tool, arguments) per step; `x-from-previous` parameters are left out (filled at run time)."""
    plan = []
    for i, name in enumerate(chain):
        tool = server.tool(name)
        assert tool is not None
        args = {}
        for p, schema in tool.parameters.get("properties", {}).items():
            if "x-from-previous" in schema and i > 0:
                continue
            if p in scenario:
                args[p] = scenario[p]
            elif "enum" in schema:
                args[p] = schema["enum"][0]
        plan.append((name, args))
    return plan


def template_query(server: ToolServer, chain: list[str], scenario: dict[str, Any]) -> str:
    parts = []
    for name, args in _fill(server, chain, scenario):
        tool = server.tool(name)
        assert tool is not None
        what = tool.description.rstrip(".")
        what = what[:1].lower() + what[1:]
        given = ", ".join(f"{k}: {v}" for k, v in args.items())
        parts.append(f"{what} ({given})" if given else what)
    return f"Using the {server.name} tools, " + "; then ".join(parts) + ". Tell me the final result."


def _mentions_all(query: str, values: list[Any]) -> bool:
    text = f" {normalize_answer(query)} "
    return all(f" {normalize_answer(str(v))} " in text for v in values if normalize_answer(str(v)))


def write_task(server: ToolServer, chain: list[str], index: int, rng: random.Random, teacher: Teacher) -> SynthTask:
    """A task for `chain`: the teacher's request if it passes validation, else the template's."""
    scenario = dict(rng.choice(server.scenarios))
    task = SynthTask(f"{server.name}-{index:04d}", server.name, list(chain), scenario,
                     template_query(server, chain, scenario))
    if teacher.online:
        plan = "\n".join(f"{i + 1}. {n}({json.dumps(a)})" for i, (n, a) in enumerate(_fill(server, chain, scenario)))
        answer = teacher.ask("task", [{"role": "user", "content":
                                       f"Write one realistic user request to an assistant with {server.name} tools "
                                       f"that needs these calls, in order:\n{plan}\nMention every argument value. "
                                       "Reply with the request only."}])
        values = [v for _, a in _fill(server, chain, scenario) for v in a.values()]
        text = " ".join((answer or "").split())
        if 20 <= len(text) <= 600 and "<" not in text and _mentions_all(text, values):
            task.query, task.source = text, "teacher"
            teacher.accept("task")
        else:
            teacher.reject("task")
    return task


# --- trajectories -----------------------------------------------------------------------------------

def _previous_value(steps: list[SynthStep], key: str) -> Any:
    for s in reversed(steps):
        if s.ok:
            try:
                out = json.loads(s.result)
            except ValueError:
                return None
            return out.get(key) if isinstance(out, dict) else None
    return None


def _resolve(server: ToolServer, name: str, args: dict[str, Any], steps: list[SynthStep],
             scenario: dict[str, Any]) -> dict[str, Any]:
    """Fill `x-from-previous` parameters from the last successful result (else the scenario, else empty)."""
    tool = server.tool(name)
    assert tool is not None
    out = dict(args)
    for p, schema in tool.parameters.get("properties", {}).items():
        if p not in out and "x-from-previous" in schema:
            value = _previous_value(steps, schema["x-from-previous"])
            empty = 0 if schema.get("type") in ("number", "integer") else ""
            out[p] = value if value is not None else scenario.get(p, empty)
    return out


def summarize(result: str) -> str:
    """A JSON result in words: `key value` pairs of a top-level object, else the text."""
    try:
        obj = json.loads(result)
    except ValueError:
        return result
    if isinstance(obj, dict):
        return ", ".join(f"{k} {json.dumps(v, ensure_ascii=False).strip(chr(34))}" for k, v in obj.items())
    return json.dumps(obj, ensure_ascii=False)


def _action(name: str, args: dict[str, Any]) -> str:
    return json.dumps({"name": name, "arguments": args}, ensure_ascii=False)


def template_trajectory(task: SynthTask, server: ToolServer, executor: Executor, retries: int = 1) -> SynthTrajectory:
    """The offline writer: call the chain in order (retrying a failed call up to `retries` times) and
    answer with the last successful result."""
    traj = SynthTrajectory(task, source="template")
    for name, planned in _fill(server, task.chain, task.scenario):
        tool = server.tool(name)
        assert tool is not None
        args = _resolve(server, name, planned, traj.steps, task.scenario)
        why = f"I need to {tool.description[:1].lower()}{tool.description[1:].rstrip('.')}"
        for attempt in range(retries + 1):
            res = executor.call(name, args)
            thought = why if attempt == 0 else f"The call failed ({shorten(traj.steps[-1].result, 80)}); I try again"
            traj.steps.append(SynthStep(f"<think>{thought}.</think><action>{_action(name, args)}</action>", name, args,
                                        res.ok, res.text, res.injected))
            if res.ok:
                break
    last = next((s for s in reversed(traj.steps) if s.ok), None)
    traj.final_answer = f"Done: {summarize(last.result)}." if last else "I could not complete the request."
    return traj


def teacher_trajectory(task: SynthTask, server: ToolServer, executor: Executor, teacher: Teacher,
                       max_turns: int) -> SynthTrajectory:
    """The teacher's trajectory, turn by turn; `rejected` says why it is unusable (module docstring)."""
    traj = SynthTrajectory(task, source="teacher")
    history = [{"role": "system", "content": system_prompt(server)}, {"role": "user", "content": task.query}]
    for _ in range(max_turns):
        text = teacher.ask("turn", history)
        if text is None:
            traj.rejected = "no answer from the teacher"
            return traj
        call = read_call(text)
        if call.kind == "answer":
            traj.final_answer = call.text
            return traj
        why = call.text if call.kind == "invalid" else executor.validate(call.name, call.arguments)
        if why:
            traj.rejected = f"invalid turn: {shorten(why, 160)}"
            return traj
        res = executor.call(call.name, call.arguments)
        traj.steps.append(SynthStep(text.strip(), call.name, call.arguments, res.ok, res.text, res.injected))
        history += [{"role": "assistant", "content": text}, {"role": "user", "content": f"Tool result: {res.text}"}]
    traj.rejected = f"no final answer within {max_turns} turns"
    return traj


def system_prompt(server: ToolServer) -> str:
    return SYSTEM.format(tools="\n".join(json.dumps(t.spec(), ensure_ascii=False) for t in server.tools))


def to_messages(traj: SynthTrajectory, server: ToolServer) -> list[dict[str, Any]]:
    """The trajectory as an OpenAI messages list (module docstring)."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": system_prompt(server)},
                                  {"role": "user", "content": traj.task.query}]
    for i, s in enumerate(traj.steps):
        call_id = f"call_{i + 1}"
        msgs.append({"role": "assistant", "content": s.content,
                     "tool_calls": [{"id": call_id, "type": "function",
                                     "function": {"name": s.name, "arguments": json.dumps(s.arguments)}}]})
        msgs.append({"role": "tool", "tool_call_id": call_id, "name": s.name,
                     "content": s.result if s.ok else f"error: {s.result}"})
    msgs.append({"role": "assistant", "content": f"<answer>{traj.final_answer}</answer>"})
    return msgs
