"""`tools:seed`: the generated dataset, ASTRA's F1 reward (and its recall / precision sides), calls
run in the real sandbox, error observations, irrelevant-tool mixing, the registry and the pool."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stratarl.agent.parse import MAX_ACTION_CHARS, parse_step
from stratarl.envs import Env, all_specs, make_env, make_tasks, parse_env_id
from stratarl.envs.base import INFO_KEYS
from stratarl.envs.gold import gold_trajectories
from stratarl.envs.pool import EnvPool
from stratarl.envs.tools import (
    DATA,
    EPS,
    USER_DATA,
    Tool,
    band_of,
    episode_tools,
    f1_reward,
    load_items,
    load_tools,
    pick_distractors,
    precision,
    read_call,
    recall,
    run_tool,
    solves,
)
from stratarl.errors import UnknownNameError, UserError

ROOT = Path(__file__).resolve().parents[2]
NO_MIX = "high=0&medium=0&low=0"


def _generator(monkeypatch):
    path = ROOT / "scripts" / "gen_tools_seed.py"
    spec = importlib.util.spec_from_file_location("gen_tools_seed", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _open(env_id="tools:seed?cache=0", split="test", index=0):
    task = make_tasks(env_id, split, n=index + 1)[index]
    env = make_env(task)
    obs, info = env.reset(task)
    return env, task, obs, info


def _item(task):
    return load_items("seed", task.split)[task.seed]


# --- the dataset ------------------------------------------------------------------------------------

def test_generator_is_deterministic_and_matches_the_shipped_files(tmp_path, monkeypatch):
    gen = _generator(monkeypatch)
    gen.main(["--out", str(tmp_path / "a")])
    gen.main(["--out", str(tmp_path / "b")])
    for name in ("tools.jsonl", "train.jsonl", "test.jsonl"):
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes()
        assert a == (DATA / "seed" / name).read_bytes(), f"stale {name}: run scripts/gen_tools_seed.py"


def test_dataset_shape():
    tools = load_tools("seed")
    assert len(tools) == 26 and len({t.domain for t in tools.values()}) == 6
    assert sum(p.stat().st_size for p in (DATA / "seed").glob("*.jsonl")) < 300 * 1024
    for t in tools.values():
        scope = {}
        exec(compile(t.source, t.name, "exec"), scope)  # noqa: S102 - the shipped, generated source
        assert callable(scope[t.name]) and set(t.parameters["required"]) == set(t.parameters["properties"])
    sizes = {s: len(load_items("seed", s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 52, "dev": 0, "test": 26}
    items = load_items("seed", "train") + load_items("seed", "test")
    assert len({i.question for i in items}) == len(items)
    for item in items:
        assert 2 <= len(item.subquestions) <= 4 and len(item.needed) >= 2  # chains across tools
        assert item.answer == item.subquestions[-1].sub_answer
        for s in item.subquestions:
            assert s.call["name"] == s.tool and all(d < s.id for d in s.depends_on)
            assert len(json.dumps(s.call)) < MAX_ACTION_CHARS  # fits the runner's action limit


# --- rewards ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("solved, n, calls, f1, r, p", [
    (2, 3, 4, 4 / 7, 2 / 3, 0.5),        # p = 2/4, r = 2/3: 2·(1/2)(2/3)/(1/2 + 2/3) = (2/3)/(7/6) = 4/7
    (1, 2, 1, 2 / 3, 0.5, 1.0),          # 2·1·(1/2)/(3/2)
    (3, 3, 6, 2 / 3, 1.0, 0.5),          # every sub-question, twice the calls needed
    (2, 4, 8, 1 / 3, 0.5, 0.25),         # 2·(1/4)(1/2)/(3/4)
    (3, 3, 3, 1.0, 1.0, 1.0),            # the gold path: 1 up to ε
    (0, 3, 5, 0.0, 0.0, 0.0),            # nothing solved
    (0, 3, 0, 0.0, 0.0, 0.0),            # no call at all
])
def test_f1_recall_precision(solved, n, calls, f1, r, p):
    assert f1_reward(solved, n, calls) == pytest.approx(f1, rel=1e-5)
    assert recall(solved, n) == r
    assert precision(solved, calls) == pytest.approx(p, rel=1e-5)


def test_epsilon_is_in_the_denominator():
    assert precision(3, 3) == 3 / (3 + 1e-6) and EPS == 1e-6
    p = 3 / (3 + 1e-6)
    assert f1_reward(3, 3, 3) == 2 * p * 1.0 / (p + 1.0) < 1.0


@pytest.mark.parametrize("output, gold, hit", [
    ('{"high_c": 14, "low_c": 9}', "14", True),
    ('{"km": 148}', "14", False),                       # whole words only
    ('{"value": 57.2}', "57.2", True),
    ('{"value": 57.25}', "57.2", False),
    ('{"status": "on time"}', "On Time", True),         # case
    ('{"restaurant": "The Velmar Grill"}', "Velmar Grill", True),
    ('{"city": "Skosomx"}', "Skosom", False),
    ('{"a": 1}', "", False),                            # an empty gold answer never counts
])
def test_solves(output, gold, hit):
    assert solves(output, gold) is hit


# --- episodes through the sandbox -------------------------------------------------------------------

def test_gold_episodes_reach_f1_one_through_the_sandbox():
    tasks = make_tasks("tools:seed?cache=0&timeout=60", "test")  # a loaded machine must not fail a call
    trajs = list(gold_trajectories(tasks))
    assert len(trajs) == 26
    for task, traj in zip(tasks, trajs, strict=True):
        item = _item(task)
        assert traj.won and traj.termination == "success" and all(s.valid for s in traj.steps)
        seen = [s.observation for s in traj.steps]
        assert traj.outcome == f1_reward(*[len(item.subquestions)] * 3) == pytest.approx(1.0, abs=1e-6), seen
        for sub, step in zip(item.subquestions, traj.steps, strict=False):
            assert step.observation.startswith(f"{sub.tool} returned: ") and solves(step.observation, sub.sub_answer)


@pytest.mark.parametrize("reward, expected", [("recall", 1.0), ("precision", None), ("f1", None)])
def test_reward_variants_on_the_gold_path(reward, expected):
    env, task, _, _ = _open(f"tools:seed?reward={reward}&{NO_MIX}")
    n = len(_item(task).subquestions)
    for action in env.expert_actions(task):
        obs, r, done, info = env.step(action)
    want = {"recall": 1.0, "precision": n / (n + EPS), "f1": f1_reward(n, n, n)}[reward]
    assert done and r == want == info["outcome"] == info["score"]
    assert (info["calls"], info["solved"], info["subquestions"], info["answered"]) == (n, n, n, True)


def test_wasted_and_failed_calls_lower_precision_not_recall():
    env, task, _, info = _open("tools:seed?cache=0")
    item = _item(task)
    n, gold = len(item.subquestions), env.expert_actions(task)
    tools = load_tools("seed")
    plain = [t for t in info["tools"] if all(v == {"type": "string", "description": v["description"]}
                                             for v in tools[t].parameters["properties"].values())]
    distractor = next(t for t in plain if t not in item.needed)
    args = {k: "Nowhere" for k in tools[distractor].parameters["properties"]}
    obs, reward, done, info = env.step(json.dumps({"name": distractor, "arguments": args}))
    assert info["action_valid"] and not done and reward == 0.0  # a well-formed call that solves nothing
    first = item.subquestions[0]
    wrong = {k: "Atlantis" for k in first.call["arguments"]}
    obs, _, _, info = env.step(json.dumps({"name": first.tool, "arguments": wrong}))
    assert obs.startswith(f"{first.tool} failed: ValueError: unknown") and info["action_valid"]
    for action in gold:
        obs, reward, done, info = env.step(action)
    assert info["calls"] == n + 2 and info["tool_runs"] == n + 2 and info["solved"] == n
    assert reward == pytest.approx(f1_reward(n, n, n + 2)) and reward == pytest.approx(2 * n / (2 * n + 2), rel=1e-5)


def test_partial_episode_ends_at_max_steps_with_f1_so_far():
    env, task, _, _ = _open(f"tools:seed?max_steps=2&{NO_MIX}")
    n = len(_item(task).subquestions)
    gold = env.expert_actions(task)
    _, r1, d1, _ = env.step(gold[0])
    obs, r2, d2, info = env.step("no json here")
    assert (r1, d1, d2) == (0.0, False, True) and "No actions left" in obs and not info["won"]
    assert info["solved"] == 1 and info["calls"] == 2 and r2 == pytest.approx(f1_reward(1, n, 2))
    assert env.step(gold[1])[0] == "The episode is over."


def test_wrong_answer_keeps_the_reward_but_is_not_won():
    env, task, _, _ = _open(f"tools:seed?{NO_MIX}")
    gold = env.expert_actions(task)
    for action in gold[:-1]:
        env.step(action)
    obs, reward, done, info = env.step("<answer>somewhere else</answer>")
    assert done and not info["won"] and info["answered"] and reward == pytest.approx(1.0, abs=1e-6)


# --- error observations -----------------------------------------------------------------------------

def _needed_call(task, **changes):
    call = json.loads(json.dumps(_item(task).subquestions[0].call))
    call["arguments"].update(changes)
    return call


@pytest.mark.parametrize("make_action, says", [
    (lambda t: "get_country_profile(country='Velmaria')", "not a JSON tool call"),
    (lambda t: '{"name": "get_country_profile", "arguments": {"country": ', "not a JSON tool call"),
    (lambda t: "[1, 2]", '"name" string'),
    (lambda t: "[" * 1900 + "]" * 1900, "not a JSON tool call"),                   # nesting past the recursion limit
    (lambda t: '{"arguments": {}}', '"name" string'),
    (lambda t: '{"name": "no_such_tool", "arguments": {}}', "no tool 'no_such_tool' in this episode"),
    (lambda t: json.dumps({"name": _item(t).subquestions[0].tool, "arguments": [1]}), "must be a JSON object"),
    (lambda t: json.dumps(_needed_call(t, bogus=1)), "has no parameter 'bogus'"),
    (lambda t: json.dumps({"name": _item(t).subquestions[0].tool, "arguments": {}}), "needs the parameter"),
    (lambda t: json.dumps({"name": "get_forecast", "arguments": {"city": 3, "day": "monday"}}), "of type string"),
    (lambda t: json.dumps({"name": "get_forecast", "arguments": {"city": "X", "day": "someday"}}), "must be one of"),
    (lambda t: json.dumps({"name": "get_forecast", "arguments": '{"city": '}), "arguments string is not JSON"),
    (lambda t: "answer:", "needs text after the colon"),
])
def test_malformed_calls_get_an_error_observation(make_action, says):
    env, task, _, info = _open("tools:seed?cache=0")
    assert "get_forecast" in info["tools"]  # test item 0 needs it (a temperature question)
    obs, reward, done, info = env.step(make_action(task))
    assert obs.startswith("Invalid tool call") and says in obs, obs
    assert not info["action_valid"] and not done and reward == 0.0 and info["calls"] == 1 and info["tool_runs"] == 0


def test_lenient_call_forms_are_accepted():
    env, task, _, _ = _open("tools:seed?cache=0")
    call = _item(task).subquestions[0].call
    forms = [
        json.dumps({"name": call["name"], "arguments": json.dumps(call["arguments"])}),   # arguments as a string
        json.dumps({"type": "function", "function": call}),                              # OpenAI tool-call object
        f"<think>first the capital</think><action>{json.dumps(call)}</action>",           # raw model output
        f"I will call {json.dumps(call)} now",                                            # text around the object
    ]
    for form in forms:
        obs, _, _, info = env.step(form)
        assert obs.startswith(f"{call['name']} returned:") and info["action_valid"], form
    assert read_call("<answer> Skosom </answer>").text == "Skosom"
    assert read_call("ANSWER :  it is  Skosom").text == "it is Skosom"


def _write_dataset(root: Path, name: str, tools: list[dict], items: list[dict]) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "tools.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tools))
    (d / "train.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))


def _tool(name: str, source: str, domain: str = "misc") -> dict:
    return {"name": name, "domain": domain, "description": f"{name} tool",
            "parameters": {"type": "object", "properties": {}, "required": []}, "source": source}


def test_user_dataset_sandbox_timeout_and_bad_results(tmp_path, monkeypatch):
    tools = [_tool("spin", "def spin():\n    while True:\n        pass\n"),
             _tool("bad", "def bad():\n    return {1, 2}\n"),
             _tool("ok", "def ok():\n    return {'answer': 'Blue Lake'}\n")]
    item = {"id": "train-0000", "question": "Q?", "answer": "Blue Lake", "subquestions": [
        {"id": i + 1, "hop": 1, "sub_question": "?", "sub_answer": "Blue Lake" if n == "ok" else "x",
         "tool": n, "call": {"name": n, "arguments": {}}} for i, n in enumerate(("spin", "bad", "ok"))]}
    _write_dataset(tmp_path, "mine", tools, [item])
    monkeypatch.setenv(USER_DATA, str(tmp_path))
    env, task, _, info = _open("tools:mine?timeout=1&cache=0", split="train")
    assert sorted(info["tools"]) == ["bad", "ok", "spin"]
    obs, _, _, info = env.step('{"name": "spin", "arguments": {}}')
    assert obs.startswith("spin failed: the tool was stopped") and info["action_valid"]
    env, task, _, info = _open("tools:mine?timeout=60&cache=0", split="train")  # no timeouts on a loaded machine
    obs, _, _, _ = env.step('{"name": "bad", "arguments": {}}')
    assert obs.startswith("bad failed: TypeError") and "not JSON serializable" in obs
    obs, _, _, info = env.step('{"name": "ok", "arguments": {}}')
    assert obs == 'ok returned: {"answer": "Blue Lake"}' and info["solved"] == 1 and info["tool_runs"] == 2


def test_dataset_naming_a_missing_tool_is_a_user_error(tmp_path, monkeypatch):
    item = {"id": "train-0000", "question": "Q?", "answer": "A", "subquestions": [
        {"id": 1, "hop": 1, "sub_question": "?", "sub_answer": "A", "tool": "ghost",
         "call": {"name": "ghost", "arguments": {}}}]}
    _write_dataset(tmp_path, "broken", [_tool("ok", "def ok():\n    return 1\n")], [item])
    monkeypatch.setenv(USER_DATA, str(tmp_path))
    with pytest.raises(UserError, match="ghost"):
        make_tasks("tools:broken", "train")


def test_cached_results_equal_sandbox_results():
    tool = load_tools("seed")["convert_temperature"]
    args = {"celsius": 21, "unit": "kelvin"}
    fresh = run_tool(tool, args, timeout=60, use_cache=False)
    assert fresh.ok and json.loads(fresh.text) == {"celsius": 21, "unit": "kelvin", "value": 294.1}
    assert run_tool(tool, args, timeout=60) == fresh == run_tool(tool, args, timeout=60)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.one_of(st.text(st.characters(codec=None, exclude_categories=()), max_size=200),
                      st.sampled_from(["", "\ud800", '{"name": "\ud800", "arguments": {}}', "{" * 5000,
                                       '{"name": "get_forecast", "arguments": {"city": "\\ud800", "day": "monday"}}'])))
def test_any_action_text_gets_an_observation(text):
    env, _, _, _ = _open("tools:seed?max_steps=100")
    for action in (text, f"answer: {text}"):
        obs, reward, done, info = env.step(action)
        assert isinstance(obs, str) and set(INFO_KEYS) <= set(info)
        orjson.dumps(obs)  # valid UTF-8: trajectories holding it can be written


# --- irrelevant-tool mixing -------------------------------------------------------------------------

@pytest.mark.parametrize("x, band", [(1.0, "high"), (0.8500001, "high"), (0.85, "medium"), (0.4, "medium"),
                                     (0.3999, "low"), (0.0, "low")])
def test_band_edges(x, band):
    assert band_of(x) == band


def test_pick_distractors_by_hand():
    tools = {n: Tool(n, d, "", {}, "") for n, d in
             [("a", "x"), ("b", "y"), ("c", "y"), ("d", "y"), ("e", "y"), ("f", "x")]}
    sim = np.eye(6)
    sim[0, 1:] = [0.9, 0.5, 0.1, 0.3, 0.99]  # f is the most similar but shares a's domain
    # min-max over b..e: b 1.0 (high), c 0.5 (medium), d 0.0 and e 0.25 (low)
    every = pick_distractors(tools, sim, ["a"], {"high": 2, "medium": 2, "low": 2}, "k")
    assert every[:2] == ["b", "c"] and sorted(every[2:]) == ["d", "e"]
    assert pick_distractors(tools, sim, ["a"], {"high": 0, "medium": 1, "low": 0}, "k") == ["c"]
    assert pick_distractors(tools, sim, ["a"], {"high": 0, "medium": 0, "low": 0}, "k") == []
    low_one = pick_distractors(tools, sim, ["a"], {"low": 1}, "k")
    assert len(low_one) == 1 and low_one[0] in ("d", "e")
    assert pick_distractors(tools, sim, ["a", "b"], {"high": 5, "medium": 5, "low": 5}, "k") == []  # no other domain


def test_episode_tools_are_deterministic_and_exclude_needed_domains():
    tools = load_tools("seed")
    per_band = {"high": 2, "medium": 2, "low": 2}
    for split in ("train", "test"):
        for seed, item in enumerate(load_items("seed", split)):
            names = episode_tools("seed", item, seed, per_band)
            assert names == episode_tools("seed", item, seed, per_band)
            assert set(item.needed) <= set(names) and len(set(names)) == len(names)
            domains = {tools[n].domain for n in item.needed}
            extra = [n for n in names if n not in item.needed]
            assert extra and all(tools[n].domain not in domains for n in extra)
            assert len(extra) <= 6 * len(item.needed)
    item = load_items("seed", "test")[0]
    lists = {tuple(episode_tools("seed", item, s, per_band)) for s in range(10)}
    assert len(lists) > 1  # the seed changes the draw and the order


def test_band_counts_follow_the_parameters():
    _, task, _, info = _open("tools:seed?high=1&medium=0&low=0")
    item = _item(task)
    extra = [n for n in info["tools"] if n not in item.needed]
    assert 1 <= len(extra) <= len(item.needed)  # each needed tool has a top (normalised 1.0) candidate
    assert sorted(_open(f"tools:seed?{NO_MIX}")[3]["tools"]) == sorted(item.needed)


def test_same_task_same_tools_and_trace():
    env, task, first, info = _open(index=3)
    other = make_env(task)
    obs, info2 = other.reset(task)
    assert (obs, info2["tools"], info2["task_description"]) == (first, info["tools"], info["task_description"])
    actions = ['{"name": "x"}', *env.expert_actions(task)]
    assert [env.step(a) for a in actions] == [other.step(a) for a in actions]


def test_task_description_lists_the_tools_in_openai_format():
    _, task, obs, info = _open()
    desc = info["task_description"]
    assert desc.startswith(_item(task).question) and _item(task).question in obs
    specs = [json.loads(line) for line in desc.splitlines()[2:]]
    assert [s["function"]["name"] for s in specs] == info["tools"]
    assert all(s["type"] == "function" and s["function"]["parameters"]["type"] == "object" for s in specs)


# --- registry, runner parsing, pool -----------------------------------------------------------------

def test_registry_lists_and_resolves_the_family():
    assert "tools:seed" in all_specs()
    spec, params = parse_env_id("tools:seed?reward=recall&high=1")
    assert spec.family == "tools" and spec.outcome == "score" and spec.has_expert
    assert params == {"reward": "recall", "high": 1, "medium": 2, "low": 2, "max_steps": 10, "timeout": 10.0,
                      "cache": 1}
    assert spec.split_sizes(params) == {"train": 52, "dev": 0, "test": 26}
    tasks = make_tasks("tools:seed", "train", n=3)
    assert [t.seed for t in tasks] == [0, 1, 2] and isinstance(make_env(tasks[0]), Env)


def test_bad_ids_and_params_are_user_errors():
    with pytest.raises(UnknownNameError, match="tools:seed"):
        parse_env_id("tools:bfcl")
    with pytest.raises(UserError, match="'reward'"):
        parse_env_id("tools:seed?reward=accuracy")
    with pytest.raises(UserError, match="'high'"):
        parse_env_id("tools:seed?high=-1")
    with pytest.raises(UserError, match="Did you mean 'medium'"):
        parse_env_id("tools:seed?meduim=1")
    with pytest.raises(UserError, match="0 dev tasks"):
        make_tasks("tools:seed", "dev")


def test_runner_parsing_keeps_gold_calls_intact():
    env, task, _, _ = _open()
    for action in env.expert_actions(task)[:-1]:
        parsed = parse_step(f"<think>next</think><action>{action}</action>")
        assert parsed.ok and parsed.action == action and read_call(parsed.action).kind == "call"


def test_pool_matches_direct_env():
    tasks = make_tasks("tools:seed?cache=0", "test", n=3)
    plans = [make_env(t).expert_actions(t) for t in tasks]
    with EnvPool(num_workers=1, step_timeout=60) as pool:
        replies = pool.reset(tasks)
        eps = [r.episode for r in replies]
        assert all(r.error is None for r in replies)
        direct = [make_env(t) for t in tasks]
        for env, t, r in zip(direct, tasks, replies, strict=True):
            assert env.reset(t)[0] == r.observation
        for k in range(3):
            got = pool.step([(e, plan[k]) for e, plan in zip(eps, plans, strict=True)])
            for env, plan, r in zip(direct, plans, got, strict=True):
                obs, reward, done, info = env.step(plan[k])
                assert (r.observation, r.reward, r.done, r.error) == (obs, reward, done, None)
                assert r.info["calls"] == info["calls"]
        pool.release(eps)
