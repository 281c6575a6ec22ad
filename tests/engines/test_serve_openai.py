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
    ("/completions", {"prompt": "a", "max_tokens": "many"}, "'max_tokens' must be an integer >= 1, got 'many'"),
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


# -- the official openai client against `stratarl serve` ------------------------------------------------

@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=60)


def _raw_stream(port, route, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1{route}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.headers["Content-Type"], r.read().decode()


def _joined_by_choice(chunks, field):
    out = {}
    for chunk in chunks:
        for c in chunk.choices:
            piece = (c.delta.content or "") if field == "content" else c.text
            out[c.index] = out.get(c.index, "") + piece
    return out


def test_chat_stream_equals_the_whole_response(client):
    ask = dict(model="tiny", messages=[{"role": "user", "content": "You are in the kitchen."}], max_tokens=12,
               temperature=0.8, seed=5, n=2, logprobs=True, extra_body={"return_token_ids": True})
    whole = client.chat.completions.create(**ask)
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])
    text = _joined_by_choice(chunks, "content")
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks[:-1] if c.choices[0].index == choice.index]
        assert mine[0].delta.role == "assistant" and all(c.delta.role is None for c in mine[1:])
        assert [c.finish_reason for c in mine] == [None] * (len(mine) - 1) + [choice.finish_reason]
        assert text[choice.index] == choice.message.content
        streamed = [lp for c in mine if c.logprobs for lp in c.logprobs.content]
        assert [(x.token, x.logprob) for x in streamed] == [(x.token, x.logprob) for x in choice.logprobs.content]
        assert [t for c in mine for t in (c.model_extra.get("token_ids") or [])] == choice.model_extra["token_ids"]
    assert whole.usage.completion_tokens == sum(len(c.logprobs.content) for c in whole.choices)


def test_completions_stream_equals_the_whole_response(client, server):
    ask = dict(model="tiny", prompt=["You see a", "take"], max_tokens=8, temperature=0.7, seed=2, n=2, logprobs=1)
    whole = client.completions.create(**ask)
    chunks = list(client.completions.create(**ask, stream=True))
    assert {c.object for c in chunks} == {"text_completion"} and len(whole.choices) == 4
    text = _joined_by_choice(chunks, "text")
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks if c.choices[0].index == choice.index]
        assert text[choice.index] == choice.text and mine[-1].finish_reason == choice.finish_reason
        assert [lp for c in mine if c.logprobs for lp in c.logprobs.token_logprobs] == choice.logprobs.token_logprobs
    kind, raw = _raw_stream(server.port, "/completions", {"prompt": "take", "max_tokens": 3, "stream": True})
    events = raw.split("\n\n")
    assert kind == "text/event-stream" and events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2])


def test_stream_pieces_keep_characters_whole(server, tiny_tokenizer):
    """A character split over byte tokens goes out with its last token; a cut-off one at the end."""
    from stratarl.engines.base import Completion

    ids = tiny_tokenizer("héllo 日本語 ok", add_special_tokens=False)["input_ids"]
    assert len(ids) > len("héllo 日本語 ok") - 6  # the tokenizer does split the characters into bytes
    for cut in (len(ids), 8):  # whole, and cut inside 日
        c = Completion(ids[:cut], [0.0] * cut, "length", text=tiny_tokenizer.decode(ids[:cut]))
        pieces = server._pieces(c)
        assert len(pieces) == cut and "".join(pieces) == c.text
        assert all("\ufffd" not in p for p in pieces[:-1])
    eos = sorted(server.engine.eos_ids)[0]
    assert server._pieces(Completion([ids[0], eos], [0.0, 0.0], "stop", text="h")) == ["h", ""]


def test_concurrent_requests_get_their_own_answers(client):
    from concurrent.futures import ThreadPoolExecutor

    def ask(i):
        prompt = ["You are in the kitchen.", "take", "open the door", "look"][i % 4]
        if i % 2:
            chunks = client.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=1.0, seed=i,
                                               stream=True)
            return "".join(c.choices[0].text for c in chunks)
        return client.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=1.0,
                                         seed=i).choices[0].text

    alone = [ask(i) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(ask, range(6))) == alone


@pytest.mark.parametrize("value, needle", [
    (-1, "'max_tokens' must be an integer >= 1, got -1"),
    (0, "'max_tokens' must be an integer >= 1, got 0"),
    (10**9, r"'max_tokens' is 1000000000, but this model's context is 4096 tokens .* at most \d+ new tokens fit"),
])
def test_bad_max_tokens_is_a_400_naming_the_limit(client, value, needle):
    import openai

    with pytest.raises(openai.BadRequestError, match=needle) as e:
        client.completions.create(model="tiny", prompt="take", max_tokens=value)
    assert e.value.status_code == 400 and e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError, match=needle.replace("max_tokens", "max_completion_tokens")):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                       max_completion_tokens=value, stream=True)
    assert client.completions.create(model="tiny", prompt="take", max_tokens=2).usage.completion_tokens <= 2


def test_unknown_model_is_a_404(client):
    import openai

    with pytest.raises(openai.NotFoundError, match="the model 'gpt-4o' does not exist: this server serves 'tiny'") as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    assert client.models.retrieve("tiny").id == "tiny" and [m.id for m in client.models.list()] == ["tiny"]


@pytest.mark.parametrize("body, needle", [
    ({"n": 0}, "'n' must be an integer in [1, 128], got 0"),
    ({"n": 129}, "'n' must be an integer in [1, 128], got 129"),
    ({"temperature": -0.5}, "'temperature' must be a number >= 0"),
    ({"top_p": 0}, "'top_p' must be a number in (0, 1]"),
    ({"max_tokens": 2.5}, "'max_tokens' must be an integer >= 1, got 2.5"),
    ({"max_tokens": True}, "'max_tokens' must be an integer >= 1, got True"),
    ({"stream_options": {"include_usage": True}}, "'stream_options' is only allowed with 'stream': true"),
    ({"logprobs": 3}, "'logprobs' > 1 is not supported"),
    ({"presence_penalty": 0.5}, "'presence_penalty' is not supported"),
    ({"prompt": [1] * 4096}, "leaves no room for a completion in this model's context of 4096"),
])
def test_bad_sampling_requests_are_400s(server, body, needle):
    code, out = _post(server.port, "/completions", {"prompt": "take", "max_tokens": 2, **body})
    assert code == 400 and needle in out["error"]["message"], out
