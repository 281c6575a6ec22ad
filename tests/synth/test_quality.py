"""The 7-dimension rule score on hand-made trajectories, and the stateful emulator with injected failures."""

import random

import pytest

from stratarl.synth.execute import INJECTED_FAILURE, Executor
from stratarl.synth.quality import DIMENSIONS, lcs, mean_score, rule_scores
from stratarl.synth.servers import load_servers
from stratarl.synth.trajectories import (
    SynthStep,
    SynthTask,
    SynthTrajectory,
    template_trajectory,
    to_messages,
)

TASK = SynthTask("notes-0000", "notes", ["create_note", "get_note"], {"title": "g", "body": "milk"}, "q")
CREATED = '{"body": "milk", "created": "g", "title": "g"}'


def step(name, args, ok, result):
    return SynthStep("", name, args, ok, result)


def test_recovered_failure_scores_by_hand():
    traj = SynthTrajectory(TASK, [step("create_note", {"title": "g", "body": "milk"}, False, INJECTED_FAILURE),
                                  step("create_note", {"title": "g", "body": "milk"}, True, CREATED),
                                  step("get_note", {"title": "g"}, True, '{"body": "milk", "title": "g"}')],
                           final_answer="Done: body milk, title g.")
    s = rule_scores(traj)
    # first call in chain 1; LCS(create create get, create get) = 2 of 2; both results reused later ("g",
    # "milk") 1; failure followed by the same tool, successes by a different move 1; status (0.5 + 1 + 1)/3;
    # conciseness 2 chain tools / 3 calls; final answer mentions "milk" 1
    assert s == pytest.approx({"query_understanding": 1, "query_plan": 1, "tool_response_understanding": 1,
                               "tool_response_conditioned_planning": 1, "tool_call_status": 2.5 / 3,
                               "conciseness": 2 / 3, "final_answer": 1})
    assert mean_score(s) == pytest.approx(6.5 / 7)


def test_poor_trajectory_scores_by_hand():
    traj = SynthTrajectory(TASK, [step("get_note", {"title": "g"}, False, "ValueError: no record with title 'g'"),
                                  step("list_notes", {}, True, '{"items": ["welcome"]}')], final_answer="")
    s = rule_scores(traj)
    # get_note is in the chain 1; LCS(get list, create get) = 1 of 2; "welcome" never reused 0; the failure is
    # not retried (0), the last success ends the trajectory (1) -> 1/2; status (0.5 + 1)/2; 2/2 calls; no answer 0
    assert [s[d] for d in DIMENSIONS] == pytest.approx([1, 0.5, 0, 0.5, 0.75, 1, 0])
    assert mean_score(s) == pytest.approx(3.75 / 7)


def test_no_calls_scores_only_the_answer():
    s = rule_scores(SynthTrajectory(TASK, [], final_answer="I do not know"))
    assert [s[d] for d in DIMENSIONS] == [0, 0, 0, 0, 0, 0, 0.5]


def test_lcs():
    assert lcs(list("abcbdab"), list("bdcaba")) == 4
    assert lcs([], ["a"]) == 0


def test_emulator_keeps_state_and_injects_failures():
    notes = {s.name: s for s in load_servers()}["notes"]
    ex = Executor(notes, random.Random(0), failure_rate=0.0)
    assert ex.call("create_note", {"title": "g", "body": "milk"}).ok
    assert not ex.call("create_note", {"title": "g", "body": "x"}).ok  # already exists
    assert ex.call("append_to_note", {"title": "g", "text": "eggs"}).ok
    assert '"milk eggs"' in ex.call("get_note", {"title": "g"}).text
    assert ex.call("list_notes", {}).text == '{"items": ["g", "welcome"]}'
    assert ex.call("delete_note", {"title": "g"}).ok and not ex.call("get_note", {"title": "g"}).ok
    assert "no tool 'nope'" in ex.call("nope", {}).text
    flaky = Executor(notes, random.Random(0), failure_rate=1.0)
    res = flaky.call("list_notes", {})
    assert not res.ok and res.injected and res.text == INJECTED_FAILURE


def test_template_trajectory_runs_real_tools_and_becomes_messages():
    shop = {s.name: s for s in load_servers()}["shop"]
    task = SynthTask("shop-0000", "shop", ["find_product", "get_stock"], {"name": "kettle"}, "q")
    traj = template_trajectory(task, shop, Executor(shop, random.Random(0)))
    # get_stock's sku comes from find_product's result (x-from-previous), run in the sandbox
    assert [(s.name, s.arguments, s.ok) for s in traj.steps] == [("find_product", {"name": "kettle"}, True),
                                                                  ("get_stock", {"sku": "KTL-310"}, True)]
    assert traj.final_answer == "Done: in_stock 0, sku KTL-310."
    assert mean_score(rule_scores(traj)) == 1.0
    msgs = to_messages(traj, shop)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert msgs[2]["tool_calls"][0]["function"]["name"] == "find_product" and "<action>" in msgs[2]["content"]
    assert msgs[-1]["content"] == "<answer>Done: in_stock 0, sku KTL-310.</answer>"
