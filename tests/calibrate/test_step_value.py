"""Monte-Carlo step values and the STeCa chain with the real tiny model on real TextWorldExpress."""

import dataclasses

import pytest

from stratarl.algos.losses import PreferenceConfig
from stratarl.calibrate.datasets import steca_datasets, steca_rows
from stratarl.calibrate.deviation import DeviationConfig, StepComparison, first_deviation
from stratarl.calibrate.step_value import ExpertScan, StepQuery, StepValueConfig, scan_experts, step_values
from stratarl.calibrate.trajectories import (
    CalibratedTrajectory,
    calibrate,
    clean_reflection,
    reflection_messages,
    template_reflection,
    write_reflections,
)
from stratarl.engines import SamplingParams
from stratarl.engines.openai import OpenAIEngine
from stratarl.engines.serve import Server
from stratarl.envs import make_tasks
from stratarl.rollout.diversity import TfidfEmbedder
from stratarl.rollout.expert import expert_episodes
from stratarl.rollout.runner import RunnerConfig, StepSampling
from stratarl.types import from_json, to_json

ENV = "twx:cookingworld?numLocations=1&numIngredients=1&numDistractorItems=0"


@pytest.fixture(scope="module")
def setup(tiny_tokenizer, pool):
    (task,) = make_tasks(ENV, "train", n=1)
    rcfg = RunnerConfig(max_steps=6, sampling=StepSampling(max_tokens=10))
    actions = pool.expert_actions(task)
    (expert,) = expert_episodes(tiny_tokenizer, pool, [task], [actions], rcfg)
    return task, actions, expert, rcfg


def test_replay_reaches_the_experts_state_and_values_are_probabilities(engine, tiny_tokenizer, pool, setup):
    task, actions, expert, rcfg = setup
    queries = [StepQuery(task=task, prefix=actions[:3], action=actions[3]),
               StepQuery(task=task, prefix=actions[:3], action="examine oven")]
    values = step_values(engine, tiny_tokenizer, pool, queries, StepValueConfig(n=2), rcfg, seed=0)
    for v in values:
        assert len(v.outcomes) == len(v.rollouts) == 2 and 0.0 <= v.value <= 1.0 and v.error is None
        assert v.value == sum(v.outcomes) / 2
        for r in v.rollouts:
            assert [s.action for s in r.steps[:3]] == actions[:3]
            # the replayed prefix shows the policy exactly the prompts of the expert replay
            assert [s.prompt_ids for s in r.steps[:3]] == [s.prompt_ids for s in expert.steps[:3]]
            assert [s.observation for s in r.steps[:3]] == [s.observation for s in expert.steps[:3]]
            assert len(r.steps) == rcfg.max_steps and r.termination == "max_steps"  # the tiny model never wins
            assert all(s.logprobs and any(lp != 0.0 for lp in s.logprobs) for s in r.steps[4:] if s.response_ids)
    expert_step = values[0]
    assert expert_step.observation == expert.steps[3].observation and expert_step.valid and not expert_step.done
    assert expert_step.rollouts[0].steps[3].prompt_ids == expert.steps[3].prompt_ids
    assert values[1].observation != expert.steps[3].observation
    assert values[1].rollouts[0].steps[4].anchor == values[1].observation  # the policy continues from there


def test_scan_calibrate_and_datasets(engine, tiny_tokenizer, pool, setup):
    task, actions, full, rcfg = setup
    expert = dataclasses.replace(full, steps=full.steps[:4])  # a 4-step expert and a horizon of 5 keep it short
    rcfg = dataclasses.replace(rcfg, max_steps=5)
    # the untrained model never wins, so every value is 0: only the released code's `<=` finds deviations
    dcfg = DeviationConfig(inclusive=True)
    (scan,) = scan_experts(engine, tiny_tokenizer, pool, [expert], StepValueConfig(n=1), dcfg, rcfg, seed=0)
    assert [c.t for c in scan.comparisons] == [2, 3]
    assert [t for t, run in enumerate(scan.explored) if run is not None] == [0, 2, 3]
    assert all(0.0 <= v.value <= 1.0 for v in scan.expert_values[1:])
    for t in (2, 3):
        assert [s.action for s in scan.explored[t].steps[:t]] == actions[:t]
    assert all(c.agent_value == c.previous_expert_value == 0.0 for c in scan.comparisons)
    assert first_deviation(scan.comparisons, DeviationConfig()) is None  # 0 − 0 < 0 never holds
    assert from_json(ExpertScan, to_json(scan)) == scan  # records round-trip through JSON
    (cal,) = calibrate(tiny_tokenizer, pool, [scan], dcfg, rcfg)
    assert from_json(CalibratedTrajectory, to_json(cal)) == cal
    t = cal.deviation.t
    steps = cal.trajectory.steps
    assert [s.action for s in steps] == actions[:t] + [cal.deviation.agent_action] + actions[t:4]
    assert cal.source == "template" and cal.reflection == template_reflection(cal.deviation.agent_action, actions[t])
    assert steps[t + 1].thought == cal.reflection and f"<think>{cal.reflection}</think>" in steps[t + 1].text
    assert tiny_tokenizer.decode(steps[t + 1].response_ids) == steps[t + 1].text
    assert steps[t + 1].anchor == steps[t].observation  # the reflection sees what the deviation led to
    data = steca_datasets([scan], [cal], dcfg, TfidfEmbedder(), PreferenceConfig())
    assert [d.kind for d in data] == ["calibrated"]  # no expert margin (all values 0), no success to explore
    rows = steca_rows(data)
    assert [r.step_index for r in rows] == list(range(t + 1, len(steps)))
    assert all(r.weight == data[0].weight >= 1.0 for r in rows)


def test_teacher_hook_through_stratarl_serve(engine):
    # the openai engine against a real `stratarl serve` on loopback; the tiny model's answer (greedy) is
    # cleaned, and an empty one falls back to the template
    server = Server(engine, "tiny", port=0)
    server.start()
    try:
        teacher = OpenAIEngine(f"http://127.0.0.1:{server.port}/v1", "tiny")
        dev = StepComparison(t=2, expert_action="take knife", agent_action="examine oven", agent_value=0.0,
                             expert_value=1.0, previous_expert_value=1.0, agent_won=False)
        params = SamplingParams(temperature=0.0, max_tokens=8)
        ((text, source),) = write_reflections([("Cook a meal.", [], dev)], teacher, params)
        answer = clean_reflection(teacher.chat(reflection_messages("Cook a meal.", [], "take knife"), params))
    finally:
        server.stop()
    assert (text, source) == ((answer, "teacher") if answer else (template_reflection("examine oven", "take knife"), "template"))
