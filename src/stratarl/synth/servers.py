"""Tool servers for trajectory synthesis: OpenAI-format tool specs grouped by server, and how each
tool is executed — real Python in the sandbox (`x-source`) or the stateful emulator (`x-emulate`).

The file format (src/stratarl/data/synth_seed/servers.json is the shipped example):

    {"servers": [{"name": ..., "description": ..., "tools": [{"type": "function", "function": {...},
                   "x-source": "def f(...): ..."} | {..., "x-emulate": {"op": "create", "key": "title"}}],
                  "initial_state": {...}, "scenarios": [{param: value, ...}], "verified_chains": [[...]]}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

SEED_DIR = Path(__file__).resolve().parents[1] / "data" / "synth_seed"
"""The shipped offline seed set."""
EMULATOR_OPS = ("create", "get", "update", "append", "delete", "list", "search")


@dataclass(frozen=True)
class ServerTool:
    """One tool of a server."""

    name: str
    """Function name."""
    description: str
    """What it does."""
    parameters: dict[str, Any]
    """JSON schema of the arguments."""
    source: str = ""
    """Python defining `name` (run in the sandbox); empty for emulated tools."""
    emulate: dict[str, Any] = field(default_factory=dict)
    """Emulator rule: `op` (one of EMULATOR_OPS), `key` (the record key parameter), `field`/`from`
    (append), `fields` (update: argument -> stored field)."""

    def spec(self) -> dict[str, Any]:
        """The tool in OpenAI function-calling format (what the teacher and the SFT data see)."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolServer:
    """A group of tools sharing state and a domain (an MCP server in the paper)."""

    name: str
    """Server name (the tools' domain)."""
    description: str
    """What the server is for."""
    tools: tuple[ServerTool, ...]
    """Its tools."""
    initial_state: dict[str, Any]
    """Records the emulator starts with (key -> record)."""
    scenarios: tuple[dict[str, Any], ...]
    """Argument values for tasks: one scenario per task, parameter name -> value."""
    verified_chains: tuple[tuple[str, ...], ...]
    """Tool chains known to make sense; the tool graph is built from them."""

    def tool(self, name: str) -> ServerTool | None:
        return next((t for t in self.tools if t.name == name), None)


def _tool(server: str, raw: dict[str, Any]) -> ServerTool:
    fn = raw.get("function", raw)
    name = fn.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise UserError(f"server {server!r}: tool name {name!r} is not a Python identifier")
    emulate, source = raw.get("x-emulate") or {}, raw.get("x-source") or ""
    if bool(emulate) == bool(source):
        raise UserError(f"server {server!r}, tool {name!r}: give exactly one of x-source or x-emulate")
    if emulate and emulate.get("op") not in EMULATOR_OPS:
        raise UserError(f"server {server!r}, tool {name!r}: emulator op {emulate.get('op')!r} is not one of "
                        f"{', '.join(EMULATOR_OPS)}")
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    return ServerTool(name, str(fn.get("description", "")), params, source, emulate)


def server_from_dict(raw: dict[str, Any]) -> ToolServer:
    name = str(raw.get("name", ""))
    tools = tuple(_tool(name, t) for t in raw.get("tools", []))
    if not name or not tools:
        raise UserError(f"a tool server needs a name and at least one tool (got name {name!r})")
    return ToolServer(name, str(raw.get("description", "")), tools, dict(raw.get("initial_state") or {}),
                      tuple(raw.get("scenarios") or ({},)), tuple(tuple(c) for c in raw.get("verified_chains", ())))


def load_servers(path: str | Path | None = None) -> list[ToolServer]:
    """Servers from a JSON file (default: the shipped seed)."""
    path = Path(path) if path else SEED_DIR / "servers.json"
    if not path.is_file():
        raise UserError(f"tool server file not found: {path}")
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not JSON: {e}") from None
    servers = [server_from_dict(s) for s in raw.get("servers", [])]
    if not servers:
        raise UserError(f"{path} lists no servers (expected {{\"servers\": [...]}})")
    return servers
