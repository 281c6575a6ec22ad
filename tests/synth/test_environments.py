"""Tool verification in the real sandbox, the teacher-answer checks, and merging with re-verification."""

import numpy as np
import pytest

from stratarl.envs.tools import Tool
from stratarl.synth.environments import (
    Binding,
    ToolDraft,
    ToolGroup,
    group_tool,
    merge_tools,
    parse_teacher_tool,
    template_tool,
    try_merge,
    verify,
)
from stratarl.synth.qa import TraceStep

PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def tool(source, name="population"):
    return Tool(name, "geo", "Look up the population of a city.", PARAMS, source)


def lookup(table, name="population"):
    return tool(f"_T = {table!r}\n\ndef {name}(city):\n    return {{'population': _T[city]}}\n", name)


def test_verify_accepts_output_containing_the_answer():
    assert verify(lookup({"Torika": "412000"}), {"city": "Torika"}, "412000", timeout=5) == ""


@pytest.mark.parametrize("source, needle", [
    ("def population(city):\n    return {'population': 7}\n", "does not contain"),           # wrong answer
    ("def population(city):\n    raise RuntimeError('boom')\n", "RuntimeError: boom"),        # crashes
    ("def population(city):\n    while True:\n        pass\n", "the tool was stopped"),      # loops
])
def test_verify_rejects_wrong_crashing_and_looping_code(source, needle):
    why = verify(tool(source), {"city": "Torika"}, "412000", timeout=1)
    assert needle in why


def test_verify_rejects_arguments_that_break_the_schema():
    assert "needs the parameter 'city'" in verify(lookup({}), {}, "1", timeout=5)


def test_template_tool_from_hint_is_verified_code():
    step = TraceStep(1, 1, "What is 21 degrees Celsius in Fahrenheit?", "69.8", (), False, True,
                     {"kind": "expression", "name": "c2f", "parameter": "celsius", "type": "number", "argument": 21,
                      "returns": "fahrenheit", "expression": "round(celsius * 9 / 5 + 32, 1)"})
    t, args = template_tool(step, "weather")
    assert args == {"celsius": 21} and verify(t, args, "69.8", timeout=5) == ""
    assert template_tool(TraceStep(1, 1, "q", "a", (), False, True), "d") is None  # no hint, nothing to write


@pytest.mark.parametrize("answer, needle", [
    ("not json", "not a JSON object"),
    ({"name": "1bad", "parameters": PARAMS, "code": "", "call": {"arguments": {}}}, "Python identifier"),
    ({"name": "f", "parameters": PARAMS, "code": "def f(city):\n  return (", "call": {"arguments": {}}}, "does not parse"),
    ({"name": "f", "parameters": PARAMS, "code": "def g(city): return 1", "call": {"arguments": {}}}, "no top-level"),
    ({"name": "f", "parameters": PARAMS, "code": "def f(city): return 1", "call": {"arguments": {}}}, "needs the param"),
])
def test_teacher_tool_answers_are_checked_before_running(answer, needle):
    got = parse_teacher_tool(answer if isinstance(answer, dict) else None, "geo")
    assert isinstance(got, str) and needle in got


def draft(table, city, answer, name="population"):
    return ToolDraft(lookup(table, name), Binding(f"r-{city}", 1, {"city": city}, answer), "template", True)


def test_merge_serves_both_and_is_reverified():
    a, b = draft({"Torika": "412000"}, "Torika", "412000"), draft({"Brenmoor": "98000"}, "Brenmoor", "98000", "pop2")
    group = ToolGroup("population", [a.tool], [a.binding])
    assert try_merge(group, b, timeout=5)
    merged = group_tool(group)
    assert merged.name == "population" and len(group.variants) == 2
    for bind in group.bindings:  # one function answers both sub-questions
        assert verify(merged, bind.arguments, bind.sub_answer, timeout=5) == ""


def test_merge_that_breaks_a_sub_question_is_undone():
    # both know Torika, with different answers: the merged tool answers 412000 first, so 415000 fails
    a, c = draft({"Torika": "412000"}, "Torika", "412000"), draft({"Torika": "415000"}, "Torika", "415000")
    group = ToolGroup("population", [a.tool], [a.binding])
    assert not try_merge(group, c, timeout=5)
    assert group.variants == [a.tool] and group.bindings == [a.binding]


def test_merge_tools_counts_and_names():
    drafts = [draft({"Torika": "412000"}, "Torika", "412000"), draft({"Brenmoor": "98000"}, "Brenmoor", "98000"),
              draft({"Torika": "415000"}, "Torika", "415000")]
    sim = np.ones((3, 3))  # all the same intent
    groups, counts = merge_tools(drafts, sim, threshold=0.8, timeout=5)
    # 2 merges into 1; 3 conflicts with the merged group -> undone, becomes its own tool, renamed
    assert counts == {"merges": 1, "merges_rejected": 1}
    assert [g.name for g in groups] == ["population", "population_2"]
    groups, counts = merge_tools(drafts, np.eye(3), threshold=0.8, timeout=5)  # nothing similar: no merge tried
    assert counts == {"merges": 0, "merges_rejected": 0} and len(groups) == 3
