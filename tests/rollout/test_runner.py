"""Rollouts with the real tiny model on real TextWorldExpress: token-exact records, shared starts,
terminations recorded, and the JSONL round trip."""

import pytest

from stratarl.agent.prompts import PromptConfig, render, step_messages
from stratarl.envs import make_tasks
from stratarl.rollout.groups import GroupConfig, sample_groups
from stratarl.rollout.runner import RunnerConfig, StepSampling
from stratarl.rollout.store import iteration_path, read_trajectories, regroup, write_groups


class Recording:
    """Passes calls to the real engine and keeps what it returned."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def generate(self, prompts, params):
        out = self.engine.generate(prompts, params)
        self.calls.append((prompts, params, out))
        return out


def test_two_by_two_group_rollout_is_token_exact(engine, tiny_tokenizer, pool, tmp_path):
    rec = Recording(engine)
    tasks = make_tasks("twx:cookingworld", "train", n=2)
    rcfg = RunnerConfig(max_steps=4, sampling=StepSampling(temperature=1.0, max_tokens=12, strategy_max_tokens=16))
    groups = sample_groups(rec, tiny_tokenizer, pool, tasks, GroupConfig(strategy=True, n_strategies=2, n_rollouts=2,
                                                                         candidates=2), rcfg, seed=0)
    sampled = {tuple(p): [] for prompts, _, _ in rec.calls for p in prompts}
    for prompts, _, outs in rec.calls:
        for c in outs:
            sampled[tuple(prompts[c.prompt_index])].append(tuple(c.token_ids))
    assert [len(g.strategies) for g in groups] == [2, 2] and [len(g.flat) for g in groups] == [4, 4]
    for g in groups:
        firsts = {t.steps[0].anchor for t in g.flat}
        assert len(firsts) == 1  # every rollout of a task starts from the same observation
        for t in g.flat:
            assert t.strategy in g.strategies and t.steps
            for s in t.steps:
                text = tiny_tokenizer.decode(s.prompt_ids, skip_special_tokens=False)
                assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
                assert tuple(s.response_ids) in sampled[tuple(s.prompt_ids)]  # exactly what the engine sampled
                assert len(s.logprobs) == len(s.response_ids)
        for turn in g.strategies:
            assert tuple(turn.response_ids) in sampled[tuple(turn.prompt_ids)]
    # the first step's prompt is exactly the rendered template
    t0 = groups[0].flat[0]
    from stratarl.rollout.runner import StepView

    view = StepView(family="twx", task=pool.reset(tasks[:1])[0].info["task_description"],
                    observation=t0.steps[0].anchor, step=0, strategy=None)
    assert "Strategy:" in tiny_tokenizer.decode(t0.steps[0].prompt_ids)
    assert render(tiny_tokenizer, step_messages(view, PromptConfig()))[:5] == t0.steps[0].prompt_ids[:5]
    write_groups(tmp_path, 0, groups)
    assert regroup(read_trajectories(iteration_path(tmp_path, 0))) == groups


def test_same_seed_same_trajectories(engine, tiny_tokenizer, pool):
    tasks = make_tasks("twx:coin", "train", n=2)
    rcfg = RunnerConfig(max_steps=3, sampling=StepSampling(max_tokens=10))
    run = lambda seed: sample_groups(engine, tiny_tokenizer, pool, tasks, GroupConfig(n_rollouts=2), rcfg, seed)  # noqa: E731
    a, b, c = run(1), run(1), run(2)
    key = lambda gs: [[s.response_ids for s in t.steps] for g in gs for t in g.flat]  # noqa: E731
    assert key(a) == key(b) and key(a) != key(c)


def test_terminations_are_recorded(engine, tiny_tokenizer, pool):
    tasks = make_tasks("twx:coin", "train", n=1)
    flat = GroupConfig(n_rollouts=2)
    short = sample_groups(engine, tiny_tokenizer, pool, tasks, flat, RunnerConfig(max_steps=2, context=64), 0)
    assert {t.termination for t in short[0].flat} == {"context_overflow"}
    strict = RunnerConfig(max_steps=5, max_invalid=1, sampling=StepSampling(max_tokens=6))
    out = sample_groups(engine, tiny_tokenizer, pool, tasks, flat, strict, 0)[0].flat
    for t in out:  # the untrained model writes no valid action: one invalid step ends the episode
        assert t.termination == "parse_error" and len(t.steps) == 1 and not t.steps[0].valid
        assert t.steps[0].penalty == pytest.approx(0.1) and t.steps[0].observation.startswith("Invalid action")
        assert t.outcome == 0.0
    capped = sample_groups(engine, tiny_tokenizer, pool, tasks, flat, RunnerConfig(max_steps=3), 0)[0].flat
    assert all(t.termination == "max_steps" and len(t.steps) == 3 for t in capped)
    # invalid steps do not advance the environment: every anchor is still the first observation
    assert all(s.anchor == capped[0].steps[0].anchor for t in capped for s in t.steps if not s.valid)


def test_answer_tag_becomes_an_answer_action():
    """Search-QA and tool envs have no admissible list: `<answer>x</answer>` is sent as `answer: x`,
    an `<action>` wins over an `<answer>`, and a reply with neither is invalid."""
    from types import SimpleNamespace

    from stratarl.engines.base import Completion
    from stratarl.rollout.runner import _parse_into_step

    lv = SimpleNamespace(view=SimpleNamespace(admissible=None), env_obs="Question: who?")

    def parse(text):
        return _parse_into_step(lv, [1, 2], Completion([5, 6], [-0.1, -0.2], "stop", text), "")

    answered = parse("<think>found it</think><answer>Ada  Lovelace</answer>")
    assert answered.valid and answered.action == "answer: Ada Lovelace"
    assert answered.response_ids == [5, 6] and answered.prompt_ids == [1, 2]
    assert parse("<action>search: ada</action><answer>x</answer>").action == "search: ada"
    nothing = parse("I do not know")
    assert not nothing.valid and nothing.info["why"]
