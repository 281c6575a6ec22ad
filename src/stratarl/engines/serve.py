"""`stratarl serve MODEL --port P`: a local model behind an OpenAI-compatible HTTP API.

    GET  /v1/models
    POST /v1/completions        prompt: text, token ids, or a list of either
    POST /v1/chat/completions   messages -> the model's chat template

Both POST endpoints return logprobs (`logprobs` in the request) and, as vLLM does, the exact token
ids when `return_token_ids` is true: `choices[i].token_ids` and `prompt_token_ids`. Requests from
concurrent connections are batched together by the `hf` engine (continuous batching).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .base import Completion, SamplingParams
from .hf import HFEngine


class BadRequest(Exception):
    """A request the server rejects with HTTP 400."""


def _params(body: dict[str, Any]) -> SamplingParams:
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    try:
        return SamplingParams(
            temperature=float(body.get("temperature", 1.0)), top_p=float(body.get("top_p", 1.0)),
            max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 16), stop=list(stop),
            stop_token_ids=[int(t) for t in body.get("stop_token_ids", [])], n=int(body.get("n", 1)),
            seed=None if body.get("seed") is None else int(body["seed"]),
        )
    except (TypeError, ValueError) as e:
        raise BadRequest(f"bad sampling parameter: {e}") from None


def _prompts(prompt: Any, tokenizer: Any) -> list[list[int]]:
    """Text, token ids, or a list of either -> token id lists."""
    if isinstance(prompt, str):
        return [tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        return [q for p in prompt for q in _prompts(p, tokenizer)]
    raise BadRequest("'prompt' must be a string, a list of token ids, or a list of those")


class Server:
    """The HTTP server around one engine."""

    def __init__(self, engine: HFEngine, model_name: str, host: str = "127.0.0.1", port: int = 8000):
        self.engine, self.model_name = engine, model_name
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- endpoints ----------------------------------------------------------------------------------

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        if "prompt" not in body:
            raise BadRequest("missing 'prompt'")
        prompts = _prompts(body["prompt"], self.engine.tokenizer)
        comps = self.engine.generate(prompts, _params(body))
        choices = [self._choice(i, c, body, chat=False) for i, c in enumerate(comps)]
        return self._envelope("text_completion", choices, prompts, comps, body)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "content" in m for m in messages):
            raise BadRequest("'messages' must be a list of {role, content}")
        tok = self.engine.tokenizer
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompts = [tok(text, add_special_tokens=False)["input_ids"]]
        comps = self.engine.generate(prompts, _params(body))
        choices = [self._choice(i, c, body, chat=True) for i, c in enumerate(comps)]
        return self._envelope("chat.completion", choices, prompts, comps, body)

    def _choice(self, i: int, c: Completion, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"index": i, "finish_reason": c.finish_reason}
        tokens = [self.engine.tokenizer.decode([t], skip_special_tokens=False) for t in c.token_ids]
        if chat:
            out["message"] = {"role": "assistant", "content": c.text}
            if body.get("logprobs"):
                out["logprobs"] = {"content": [{"token": t, "logprob": lp} for t, lp in zip(tokens, c.logprobs, strict=True)]}
        else:
            out["text"] = c.text
            if body.get("logprobs") is not None:
                out["logprobs"] = {"tokens": tokens, "token_logprobs": c.logprobs}
        if body.get("return_token_ids"):
            out["token_ids"] = c.token_ids
        return out

    def _envelope(self, kind: str, choices: list, prompts: list[list[int]], comps: list[Completion],
                  body: dict[str, Any]) -> dict[str, Any]:
        out = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()),
               "model": self.model_name, "choices": choices,
               "usage": {"prompt_tokens": sum(len(p) for p in prompts),
                         "completion_tokens": sum(len(c.token_ids) for c in comps),
                         "total_tokens": sum(len(p) for p in prompts) + sum(len(c.token_ids) for c in comps)}}
        if body.get("return_token_ids"):
            out["prompt_token_ids"] = prompts if len(prompts) > 1 else prompts[0]
        return out


class _Handler(BaseHTTPRequestHandler):
    server_ref: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per request is noise here
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server_ref.model_name, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:  # noqa: N802
        routes = {"/v1/completions": self.server_ref.completions, "/v1/chat/completions": self.server_ref.chat}
        route = routes.get(self.path.rstrip("/"))
        if route is None:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            self._send(200, route(body))
        except (BadRequest, json.JSONDecodeError, ValueError) as e:
            self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
        except Exception as e:  # noqa: BLE001 - a client gets an answer, never a dropped connection
            self._send(500, {"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}})

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
