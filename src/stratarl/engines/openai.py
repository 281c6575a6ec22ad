"""The `openai` engine: a client for any OpenAI-compatible server (teachers, judges, evaluating API
models, and our own `stratarl serve`).

`generate` sends token-id prompts to `/v1/completions` and asks for logprobs and token ids
(`return_token_ids`, which `stratarl serve` and vLLM honour); a server that gives no ids yields
completions with text only — fine for judging and evaluation, not for training. `chat` is the
convenience judges and teachers use.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from ..errors import UserError
from .base import Completion, SamplingParams


class OpenAIEngine:
    """See the module docstring."""

    def __init__(self, base_url: str, model: str = "", api_key: str | None = None, timeout: float = 300.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.timeout = timeout

    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(self.base_url + route, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise UserError(f"{self.base_url}{route} answered HTTP {e.code}: {detail}") from None
        except urllib.error.URLError as e:
            raise UserError(f"cannot reach {self.base_url}: {e.reason}") from None

    def _sampling(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_tokens, "temperature": params.temperature,
                                "top_p": params.top_p, "n": params.n, "return_token_ids": True}
        if params.stop:
            body["stop"] = params.stop
        if params.stop_token_ids:
            body["stop_token_ids"] = params.stop_token_ids
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        body = {**self._sampling(params), "prompt": prompts, "logprobs": 1}
        choices = sorted(self._post("/completions", body)["choices"], key=lambda c: c["index"])
        return [_completion(c, i // params.n) for i, c in enumerate(choices)]

    def chat(self, messages: list[dict[str, str]], params: SamplingParams) -> str:
        body = {**self._sampling(params), "messages": messages, "n": 1}
        return self._post("/chat/completions", body)["choices"][0]["message"]["content"] or ""

    def models(self) -> list[str]:
        req = urllib.request.Request(self.base_url + "/models")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return [m["id"] for m in json.loads(resp.read())["data"]]

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        raise UserError("the openai engine talks to a remote server; it cannot load new weights (use hf or vllm)")

    def close(self) -> None:
        pass


def _completion(choice: dict[str, Any], prompt_index: int) -> Completion:
    lps = (choice.get("logprobs") or {}).get("token_logprobs") or []
    ids = choice.get("token_ids") or []
    return Completion(token_ids=list(ids), logprobs=[float(x) for x in lps][: len(ids)] if ids else [],
                      finish_reason=choice.get("finish_reason") or "stop", text=choice.get("text", ""),
                      prompt_index=prompt_index)
