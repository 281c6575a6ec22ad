"""`stratarl serve MODEL --port P`: a local model behind an OpenAI-compatible HTTP API.

    GET  /v1/models, /v1/models/{name}
    POST /v1/completions        prompt: text, token ids, or a list of either
    POST /v1/chat/completions   messages -> the model's chat template

Both POST endpoints return logprobs (`logprobs` in the request) and, as vLLM does, the exact token
ids when `return_token_ids` is true: `choices[i].token_ids` and `prompt_token_ids`. Requests from
concurrent connections are batched together by the `hf` engine (continuous batching).

Streaming (`stream: true`) answers with server-sent events shaped as OpenAI's: `chat.completion.chunk`
objects whose `delta` carries the role first, then the content piece by piece, then an empty delta
with the `finish_reason`; `text_completion` chunks for completions; with
`stream_options.include_usage` a last chunk with empty `choices` and the `usage`; then
`data: [DONE]`. The `hf` engine has no incremental API, so the whole completion is generated first
and then sent as one chunk per token (each with that token's logprob and id, and the text it
completes; a character split across tokens goes out with its last token): the chunks are exact,
the latency to the first chunk is that of the whole answer.

Requests are checked before anything is generated, with HTTP 400 and OpenAI's error body
`{"error": {"message", "type", "param", "code"}}`: `max_tokens` (chat: `max_completion_tokens`
too) an integer >= 1, default 16, and prompt + max_tokens within the model's context; `n` in
[1, 128]; `temperature` >= 0; `top_p` in (0, 1]. A `model` other than the served name is HTTP 404
(an empty or missing `model` means the served one). Only the sampled token's logprob is computed:
requests for alternatives (`top_logprobs` > 0, completions `logprobs` > 1) and the features the
engine lacks (penalties, `logit_bias`, `echo`, `suffix`, tools) are refused, not ignored.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .base import Completion, SamplingParams
from .hf import HFEngine

DEFAULT_MAX_TOKENS = 16
"""New tokens when a request names no `max_tokens` (OpenAI's completions default)."""
MAX_N = 128
"""Most completions per prompt (OpenAI's bound for `n`)."""
UNSUPPORTED = ("echo", "suffix", "logit_bias", "presence_penalty", "frequency_penalty", "tools", "functions")
"""Request fields the engine has no way to honour; a request that sets one is refused."""


class RequestError(Exception):
    """A request the server refuses: HTTP `status` with OpenAI's error body."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


def _error(message: str, param: str | None = None, code: str | None = None,
           kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _int(body: dict[str, Any], key: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rule = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise RequestError(f"'{key}' must be {rule}, got {value!r}", key, "invalid_value")
    return value


def _number(body: dict[str, Any], key: str, default: float, ok: Callable[[float], bool], rule: str) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise RequestError(f"'{key}' must be {rule}, got {value!r}", key, "invalid_value")
    return float(value)


def _max_tokens(body: dict[str, Any], prompts: list[list[int]], context: int, chat: bool) -> int:
    """`max_tokens` (chat: `max_completion_tokens` first), checked against the model's context."""
    key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int(body, key, DEFAULT_MAX_TOKENS, lo=1)
    longest = max(len(p) for p in prompts)
    prompt = "the prompt (the messages in the chat template)" if chat else "the prompt"
    if longest >= context:
        raise RequestError(f"{prompt} takes {longest} tokens, which leaves no room for a completion in this model's "
                           f"context of {context} tokens; shorten it", "messages" if chat else "prompt",
                           "context_length_exceeded")
    if longest + max_tokens > context:
        raise RequestError(f"'{key}' is {max_tokens}, but this model's context is {context} tokens and {prompt} "
                           f"takes {longest}: at most {context - longest} new tokens fit; lower '{key}'",
                           key, "context_length_exceeded")
    return max_tokens


def _params(body: dict[str, Any], prompts: list[list[int]], context: int, chat: bool) -> SamplingParams:
    """The request's sampling parameters, each checked; a bad one is a RequestError naming it."""
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise RequestError(f"'stop' must be a string or a list of non-empty strings, got {stop!r}", "stop", "invalid_value")
    stop_ids = body.get("stop_token_ids") or []
    if not isinstance(stop_ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in stop_ids):
        raise RequestError(f"'stop_token_ids' must be a list of integers, got {stop_ids!r}", "stop_token_ids",
                           "invalid_value")
    return SamplingParams(
        temperature=_number(body, "temperature", 1.0, lambda t: t >= 0, "a number >= 0"),
        top_p=_number(body, "top_p", 1.0, lambda p: 0 < p <= 1, "a number in (0, 1]"),
        max_tokens=_max_tokens(body, prompts, context, chat), stop=stop, stop_token_ids=stop_ids,
        n=_int(body, "n", 1, lo=1, hi=MAX_N), seed=_int(body, "seed", None, lo=-(2**63)),
    )


def _check_features(body: dict[str, Any], chat: bool) -> None:
    """Refuse what the engine cannot do, rather than answer as if it had been done."""
    for key in UNSUPPORTED:
        if body.get(key):
            raise RequestError(f"'{key}' is not supported by stratarl serve", key, "unsupported_parameter")
    if chat:
        if _int(body, "top_logprobs", 0, lo=0):
            raise RequestError("'top_logprobs' > 0 is not supported: only the sampled token's logprob is computed "
                               "(use 'logprobs': true)", "top_logprobs", "unsupported_value")
    elif _int(body, "logprobs", None, lo=0) not in (None, 0, 1):
        raise RequestError("'logprobs' > 1 is not supported: only the sampled token's logprob is computed "
                           "(use 'logprobs': 1)", "logprobs", "unsupported_value")


def _stream_options(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage) from `stream` and `stream_options`."""
    stream, options = body.get("stream", False), body.get("stream_options")
    if not isinstance(stream, bool):
        raise RequestError(f"'stream' must be true or false, got {stream!r}", "stream", "invalid_value")
    if options is None:
        return stream, False
    if not stream:
        raise RequestError("'stream_options' is only allowed with 'stream': true", "stream_options", "invalid_value")
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise RequestError(f"'stream_options' must be {{'include_usage': bool}}, got {options!r}", "stream_options",
                           "invalid_value")
    return stream, options.get("include_usage", False)


def _prompts(prompt: Any, tokenizer: Any) -> list[list[int]]:
    """Text, token ids, or a list of either -> token id lists."""
    if isinstance(prompt, str):
        return [tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        return [q for p in prompt for q in _prompts(p, tokenizer)]
    raise RequestError("'prompt' must be a string, a list of token ids, or a list of those", "prompt")


def _usage(prompts: list[list[int]], comps: list[Completion]) -> dict[str, int]:
    prompt_tokens, completion_tokens = sum(len(p) for p in prompts), sum(len(c.token_ids) for c in comps)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Server:
    """The HTTP server around one engine."""

    def __init__(self, engine: HFEngine, model_name: str, host: str = "127.0.0.1", port: int = 8000):
        self.engine, self.model_name = engine, model_name
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.created = int(time.time())

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

    # -- endpoints: each returns a JSON object, or a list of chunks to stream ------------------------------

    def model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "stratarl"}

    def completions(self, body: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        self._check_model(body)
        if "prompt" not in body:
            raise RequestError("missing 'prompt'", "prompt", "missing_required_parameter")
        _check_features(body, chat=False)
        return self._respond(_prompts(body["prompt"], self.engine.tokenizer), body, chat=False)

    def chat(self, body: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        self._check_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "content" in m for m in messages):
            raise RequestError("'messages' must be a list of {role, content}", "messages")
        _check_features(body, chat=True)
        tok = self.engine.tokenizer
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self._respond([tok(text, add_special_tokens=False)["input_ids"]], body, chat=True)

    def _check_model(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if model in (None, "", self.model_name):
            return
        raise RequestError(f"the model '{model}' does not exist: this server serves '{self.model_name}' "
                           "(GET /v1/models)", "model", "model_not_found", status=404)

    def _respond(self, prompts: list[list[int]], body: dict[str, Any], chat: bool) -> dict[str, Any] | list[dict]:
        stream, include_usage = _stream_options(body)
        comps = self.engine.generate(prompts, _params(body, prompts, self.engine.context, chat))
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.model_name}
        if stream:
            return self._chunks(head, prompts, comps, body, chat, include_usage)
        out = {**head, "choices": [self._choice(i, c, body, chat) for i, c in enumerate(comps)],
               "usage": _usage(prompts, comps)}
        if body.get("return_token_ids"):
            out["prompt_token_ids"] = prompts if len(prompts) > 1 else prompts[0]
        return out

    # -- response bodies ------------------------------------------------------------------------------------

    def _choice(self, i: int, c: Completion, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"index": i}
        if chat:
            out["message"] = {"role": "assistant", "content": c.text}
        else:
            out["text"] = c.text
        out["logprobs"] = self._logprobs(c.token_ids, c.logprobs, body, chat)
        out["finish_reason"] = c.finish_reason
        if body.get("return_token_ids"):
            out["token_ids"] = c.token_ids
        return out

    def _logprobs(self, ids: list[int], logprobs: list[float], body: dict[str, Any], chat: bool) -> dict | None:
        """The sampled tokens' logprobs in OpenAI's shape, or None when the request asked for none."""
        wanted = bool(body.get("logprobs")) if chat else body.get("logprobs") is not None
        if not wanted:
            return None
        tokens = [self.engine.tokenizer.decode([t], skip_special_tokens=False) for t in ids]
        if not chat:
            return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": None}
        # a token holding part of a character decodes to U+FFFD: its bytes are not known here
        return {"content": [{"token": t, "logprob": lp, "bytes": None if "\ufffd" in t else list(t.encode()),
                             "top_logprobs": []} for t, lp in zip(tokens, logprobs, strict=True)]}

    def _chunks(self, head: dict[str, Any], prompts: list[list[int]], comps: list[Completion],
                body: dict[str, Any], chat: bool, include_usage: bool) -> list[dict[str, Any]]:
        """The streamed response: the choices' chunks interleaved step by step, as a server decoding them
        together sends them, then the usage chunk if asked for."""
        head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
        if include_usage:
            head["usage"] = None
        per_choice = [self._choice_chunks(i, c, body, chat) for i, c in enumerate(comps)]
        chunks = [{**head, "choices": [choice]}
                  for step in itertools.zip_longest(*per_choice) for choice in step if choice is not None]
        if include_usage:
            chunks.append({**head, "choices": [], "usage": _usage(prompts, comps)})
        return chunks

    def _choice_chunks(self, i: int, c: Completion, body: dict[str, Any], chat: bool) -> list[dict[str, Any]]:
        """One choice streamed: (chat: the role,) one chunk per token, then the finish reason."""
        out = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None}] if chat else []
        for k, piece in enumerate(self._pieces(c)):
            chunk = {"index": i, **({"delta": {"content": piece}} if chat else {"text": piece}),
                     "logprobs": self._logprobs(c.token_ids[k:k + 1], c.logprobs[k:k + 1], body, chat),
                     "finish_reason": None}
            if body.get("return_token_ids"):
                chunk["token_ids"] = c.token_ids[k:k + 1]
            out.append(chunk)
        out.append({"index": i, **({"delta": {}} if chat else {"text": ""}), "logprobs": None,
                    "finish_reason": c.finish_reason})
        return out

    def _pieces(self, c: Completion) -> list[str]:
        """Each token's share of `c.text`; the pieces join to `c.text` exactly.

        A token's piece is the text it completes: a token ending inside a multi-byte character gives ""
        and its character goes out with the token that finishes it. Decoding runs over a window that
        starts one emitted piece back (vLLM's incremental detokenizer), so the cost stays linear and a
        tokenizer that drops the space before a leading word does it on both sides of the difference.
        EOS tokens are not part of the text and get "".
        """
        decode = self.engine.tokenizer.decode
        ids = c.token_ids
        n_text = len(ids) - 1 if ids and ids[-1] in self.engine.eos_ids else len(ids)
        pieces, prefix, read = [], 0, 0
        for k in range(n_text):
            done = decode(ids[prefix:read], skip_special_tokens=False)
            text = decode(ids[prefix:k + 1], skip_special_tokens=False)
            if len(text) > len(done) and not text.endswith("\ufffd") and text.startswith(done):
                pieces.append(text[len(done):])
                prefix, read = read, k + 1
            else:
                pieces.append("")
        pieces += [""] * (len(ids) - n_text)
        joined = "".join(pieces)
        if joined != c.text:  # a character cut off by max_tokens, or a tokenizer whose windows disagree
            if pieces and c.text.startswith(joined):
                pieces[max(n_text - 1, 0)] += c.text[len(joined):]
            else:
                pieces = [c.text] + [""] * max(len(ids) - 1, 0)
        return pieces


class _Handler(BaseHTTPRequestHandler):
    server_ref: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per request is noise here
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        srv, path = self.server_ref, self.path.rstrip("/")
        if path == "/v1/models":
            self._send(200, {"object": "list", "data": [srv.model_card()]})
        elif path == f"/v1/models/{srv.model_name}":
            self._send(200, srv.model_card())
        elif path.startswith("/v1/models/"):
            self._send(404, _error(f"the model '{path[len('/v1/models/'):]}' does not exist: this server serves "
                                   f"'{srv.model_name}'", "model", "model_not_found"))
        else:
            self._send(404, _error(f"no route {self.path}", code="not_found", kind="not_found_error"))

    def do_POST(self) -> None:  # noqa: N802
        routes = {"/v1/completions": self.server_ref.completions, "/v1/chat/completions": self.server_ref.chat}
        route = routes.get(self.path.rstrip("/"))
        if route is None:
            self._send(404, _error(f"no route {self.path}", code="not_found", kind="not_found_error"))
            return
        try:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise RequestError("the request body must be a JSON object")
            out = route(body)
        except RequestError as e:
            self._send(e.status, _error(str(e), e.param, e.code))
            return
        except (json.JSONDecodeError, ValueError) as e:  # the engine's checks of a prompt raise ValueError
            self._send(400, _error(str(e)))
            return
        except Exception as e:  # noqa: BLE001 - a client gets an answer, never a dropped connection
            self._send(500, _error(f"{type(e).__name__}: {e}", kind="server_error"))
            return
        if isinstance(out, list):
            self._send_events(out)
        else:
            self._send(200, out)

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_events(self, chunks: list[dict[str, Any]]) -> None:
        """Server-sent events, one HTTP/1.1 chunk each (the connection stays open for the next request)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for data in [*(json.dumps(c) for c in chunks), "[DONE]"]:
                event = f"data: {data}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: nobody left to tell
            self.close_connection = True
