"""`stratarl serve` as a real HTTP server on loopback, and the openai engine talking to it."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from stratarl.engines import SamplingParams
from stratarl.engines.hf import HFEngine, HFEngineConfig
from stratarl.engines.openai import OpenAIEngine
from stratarl.engines.serve import Server
from stratarl.errors import UserError


@pytest.fixture(scope="module")
def server(tiny_path, tiny_tokenizer):
    srv = Server(HFEngine(tiny_path, HFEngineConfig(dtype="float32"), tiny_tokenizer), "tiny", port=0)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local(tiny_path, tiny_tokenizer):
    return HFEngine(tiny_path, HFEngineConfig(dtype="float32"), tiny_tokenizer)


def _post(port, route, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1{route}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_openai_engine_returns_the_engines_exact_tokens(server, local, tiny_tokenizer):
    client = OpenAIEngine(f"http://127.0.0.1:{server.port}/v1", "tiny")
    assert client.models() == ["tiny"]
    prompts = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in ["You are in the kitchen.", "take"]]
    params = SamplingParams(temperature=0.7, max_tokens=12, n=2, seed=3, stop=["</action>"])
    remote, here = client.generate(prompts, params), local.generate(prompts, params)
    assert [c.token_ids for c in remote] == [c.token_ids for c in here]
    assert [c.prompt_index for c in remote] == [0, 0, 1, 1]
    for r, h in zip(remote, here, strict=True):
        assert r.text == h.text and r.finish_reason == h.finish_reason
        assert max(abs(a - b) for a, b in zip(r.logprobs, h.logprobs, strict=True)) < 1e-6


def test_completions_text_prompt_and_chat(server, tiny_tokenizer):
    code, body = _post(server.port, "/completions", {"prompt": "You see a", "max_tokens": 5, "temperature": 0,
                                                     "logprobs": 1, "return_token_ids": True})
    assert code == 200 and body["object"] == "text_completion"
    choice = body["choices"][0]
    assert len(choice["token_ids"]) == len(choice["logprobs"]["token_logprobs"]) == body["usage"]["completion_tokens"]
    assert body["prompt_token_ids"] == tiny_tokenizer("You see a", add_special_tokens=False)["input_ids"]
    code, chat = _post(server.port, "/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                          "max_tokens": 6, "temperature": 0, "logprobs": True})
    assert code == 200 and chat["choices"][0]["message"]["role"] == "assistant"
    assert len(chat["choices"][0]["logprobs"]["content"]) == chat["usage"]["completion_tokens"]
    client = OpenAIEngine(f"http://127.0.0.1:{server.port}/v1", "tiny")
    assert client.chat([{"role": "user", "content": "hi"}], SamplingParams(temperature=0, max_tokens=6)) == \
        chat["choices"][0]["message"]["content"]


@pytest.mark.parametrize("route, body, needle", [
    ("/completions", {"max_tokens": 3}, "missing 'prompt'"),
    ("/completions", {"prompt": {"x": 1}}, "'prompt' must be"),
    ("/completions", {"prompt": "a", "max_tokens": "many"}, "bad sampling parameter"),
    ("/chat/completions", {"messages": "hello"}, "'messages' must be"),
])
def test_bad_requests_get_400_with_a_message(server, route, body, needle):
    code, out = _post(server.port, route, body)
    assert code == 400 and needle in out["error"]["message"]


def test_client_errors_are_user_errors(server):
    with pytest.raises(UserError, match="HTTP 400"):
        OpenAIEngine(f"http://127.0.0.1:{server.port}/v1")._post("/completions", {})
    with pytest.raises(UserError, match="cannot reach"):
        OpenAIEngine("http://127.0.0.1:9/v1", timeout=5).generate([[1, 2]], SamplingParams(max_tokens=2))


def test_serve_command_runs_a_real_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "stratarl", "serve", "tiny", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                code, body = _post(port, "/completions", {"prompt": "take", "max_tokens": 3, "temperature": 0})
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        assert code == 200 and body["model"] == "tiny"
    finally:
        proc.terminate()
        proc.wait(30)
