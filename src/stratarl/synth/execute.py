"""Executing tool calls during trajectory synthesis (ASTRA's hybrid execution): tools with source code
run for real in the sandbox (through the tools env's `run_tool`); the others are answered by a stateful
emulator that keeps the server's records for the whole trajectory, with failures injected at a fixed
rate (drawn from a seeded generator, so a run is reproducible).

Emulator ops over one collection of records keyed by the `key` argument: `create` (error if the key
exists), `get`, `update` (store arguments under mapped field names), `append` (add text to a field),
`delete`, `list` (all keys), `search` (keys of records with a field containing the query).
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from typing import Any

from ..envs.tools import Tool, check_arguments, run_tool
from .servers import ServerTool, ToolServer

INJECTED_FAILURE = "ServiceUnavailable: the server did not answer in time (injected failure), try again"


@dataclass(frozen=True)
class CallResult:
    """What one tool call returned."""

    ok: bool
    """The call succeeded."""
    text: str
    """The JSON result when ok, else the error in one line."""
    injected: bool = False
    """The failure was injected by the emulator."""


def as_env_tool(server: str, tool: ServerTool) -> Tool:
    return Tool(tool.name, server, tool.description, tool.parameters, tool.source)


def _emulate(rule: dict[str, Any], state: dict[str, dict[str, Any]], args: dict[str, Any]) -> Any:
    """Apply one emulator rule to `state` (mutated); raises ValueError for a failing call."""
    op, key_arg = rule["op"], rule.get("key", "id")
    key = str(args.get(key_arg, ""))
    if op == "list":
        return {"items": sorted(state)}
    if op == "search":
        query = str(args.get("query", "")).lower()
        return {"matches": sorted(k for k, rec in state.items() if any(query in str(v).lower() for v in rec.values()))}
    if op == "create":
        if key in state:
            raise ValueError(f"{key_arg} {key!r} already exists")
        state[key] = dict(args)
        return {"created": key, **args}
    if key not in state:
        raise ValueError(f"no record with {key_arg} {key!r}")
    if op == "get":
        return state[key]
    if op == "delete":
        del state[key]
        return {"deleted": key}
    if op == "update":
        for arg, stored in rule.get("fields", {}).items():
            if arg in args:
                state[key][stored] = args[arg]
        return state[key]
    field, src = rule.get("field", "body"), rule.get("from", "text")  # append
    state[key][field] = f"{state[key].get(field, '')} {args.get(src, '')}".strip()
    return state[key]


class Executor:
    """Runs one trajectory's calls against a server (fresh emulator state per trajectory)."""

    def __init__(self, server: ToolServer, rng: random.Random, failure_rate: float = 0.0, timeout: float = 5.0):
        self.server, self.rng, self.failure_rate, self.timeout = server, rng, failure_rate, timeout
        self.state: dict[str, dict[str, Any]] = copy.deepcopy(server.initial_state)

    def validate(self, name: str, args: Any) -> str:
        """Why the call cannot be made ('' when it can)."""
        tool = self.server.tool(name)
        if tool is None:
            return f"no tool {name!r} on server {self.server.name} (tools: {', '.join(t.name for t in self.server.tools)})"
        return check_arguments(as_env_tool(self.server.name, tool), args)

    def call(self, name: str, args: dict[str, Any]) -> CallResult:
        why = self.validate(name, args)
        if why:
            return CallResult(False, why)
        tool = self.server.tool(name)
        assert tool is not None
        if tool.source:
            res = run_tool(as_env_tool(self.server.name, tool), args, self.timeout)
            return CallResult(res.ok, res.text)
        if self.rng.random() < self.failure_rate:
            return CallResult(False, INJECTED_FAILURE, injected=True)
        try:
            out = _emulate(tool.emulate, self.state, args)
        except ValueError as e:
            return CallResult(False, f"ValueError: {e}")
        return CallResult(True, json.dumps(out, ensure_ascii=False, sort_keys=True))
