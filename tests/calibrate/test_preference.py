"""IPR preference pairs (hand-made scans) and their objective and gradients (real tiny model)."""

import math

import pytest
import torch

from stratarl.algos.losses import PreferenceConfig
from stratarl.calibrate.deviation import DeviationConfig, StepComparison
from stratarl.calibrate.preference import (
    PreferencePair,
    ipr_objective,
    pair_gradients,
    pair_logps,
    preference_pairs,
    steca_pair_objective,
    step_pairs,
    trajectory_pairs,
)
from stratarl.calibrate.step_value import ExpertScan, StepQuery, StepValue
from stratarl.types import Sample, Step, Task, Trajectory, from_json, to_json

TASK = Task(env="twx:cookingworld", split="train", index=0, seed=0)


def _step(prompt, response, action):
    return Step(prompt_ids=prompt, response_ids=response, logprobs=[0.0] * len(response), text="", action=action)


def _value(prefix, action, v):
    return StepValue(query=StepQuery(task=TASK, prefix=prefix, action=action), value=v, outcomes=[v], observation="",
                     valid=True, done=False)


def _scan(agent_won_from_start=False, agent_prompt_at_2=(1, 2, 3)):
    expert = Trajectory(task=TASK, uid="expert:t0", won=True, outcome=1.0,
                        steps=[_step([1], [10], "a"), _step([1, 2], [11], "b"), _step([1, 2, 3], [12, 13], "c"),
                               _step([1, 2, 3, 4], [14], "d")])
    start = Trajectory(task=TASK, uid="run0", won=agent_won_from_start, outcome=float(agent_won_from_start),
                       steps=[_step([1], [10], "a"), _step([1, 5], [20, 21], "x")])
    at2 = Trajectory(task=TASK, uid="run2", steps=expert.steps[:2] + [_step(list(agent_prompt_at_2), [30], "y")])
    at3 = Trajectory(task=TASK, uid="run3", steps=expert.steps[:3] + [_step([1, 2, 3, 4], [14], "d")])
    comparisons = [
        # t=2: expert 0.5 vs agent 0.0 -> a step pair; t=3: the agent takes the expert's action (equal values)
        StepComparison(t=2, expert_action="c", agent_action="y", agent_value=0.0, expert_value=0.5,
                       previous_expert_value=0.0, agent_won=False),
        StepComparison(t=3, expert_action="d", agent_action="d", agent_value=1.0, expert_value=1.0,
                       previous_expert_value=0.5, agent_won=True)]
    return ExpertScan(expert=expert, explored=[start, None, at2, at3],
                      expert_values=[None, _value(["a"], "b", 0.0), _value(["a", "b"], "c", 0.5),
                                     _value(["a", "b", "c"], "d", 1.0)],
                      agent_values=[None, None, _value(["a", "b"], "y", 0.0), None], comparisons=comparisons)


def test_step_pair_is_the_expert_row_against_the_agent_row_at_the_same_prompt():
    (pair,) = step_pairs([_scan()], DeviationConfig())
    assert pair.kind == "step" and pair.uid == "step:expert:t0@2"
    assert [(r.input_ids, r.loss_mask) for r in pair.chosen] == [([1, 2, 3, 12, 13], [0, 0, 0, 1, 1])]
    assert [(r.input_ids, r.loss_mask) for r in pair.rejected] == [([1, 2, 3, 30], [0, 0, 0, 1])]
    assert (pair.chosen_value, pair.rejected_value) == (0.5, 0.0)
    # a margin above 0.5 - 0.0 leaves no pair; a prompt that differs from the expert's leaves no pair
    assert step_pairs([_scan()], DeviationConfig(expert_margin=0.5)) == []
    assert step_pairs([_scan(agent_prompt_at_2=(1, 2, 9))], DeviationConfig()) == []


def test_trajectory_pair_only_against_a_failed_greedy_run():
    (pair,) = trajectory_pairs([_scan()])
    assert pair.kind == "trajectory"
    assert [r.input_ids for r in pair.chosen] == [[1, 10], [1, 2, 11], [1, 2, 3, 12, 13], [1, 2, 3, 4, 14]]
    assert [r.input_ids for r in pair.rejected] == [[1, 10], [1, 5, 20, 21]]
    assert trajectory_pairs([_scan(agent_won_from_start=True)]) == []
    pairs = preference_pairs([_scan()], DeviationConfig())
    assert [p.kind for p in pairs] == ["step", "trajectory"]
    assert [from_json(PreferencePair, to_json(p)) for p in pairs] == pairs  # JSONL round trip


def test_ipr_and_steca_objectives_by_hand():
    pc, pr, rc, rr = (torch.tensor([x], dtype=torch.float64) for x in (-2.0, -4.0, -3.0, -3.0))
    n, w = torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.5], dtype=torch.float64)
    # Δ = (−2 + 3) − (−4 + 3) = 2; −log σ(0.1·2) = log(1 + e^−0.2) = 0.598139; NLL = 2/2 = 1
    ipr = ipr_objective(pc, pr, rc, rr, n, w, PreferenceConfig())
    assert float(ipr) == pytest.approx(math.log1p(math.exp(-0.2)) + 1.0, abs=1e-9)
    assert float(ipr) == pytest.approx(1.598139, abs=1e-6)
    # STeCa β = 0.5: w·[−log σ(0.5·2) + 1] = 1.5·(0.313262 + 1) = 1.969893; β = 0: 1.5·1
    steca = steca_pair_objective(pc, pr, rc, rr, n, w, PreferenceConfig(steca_beta=0.5))
    assert float(steca) == pytest.approx(1.969893, abs=1e-6)
    assert float(steca_pair_objective(pc, pr, rc, rr, n, w, PreferenceConfig())) == pytest.approx(1.5)


@pytest.fixture(scope="module")
def model(tiny_path):
    # fp64: exactness is the claim; gradients are compared with the bound derived in conftest
    # (fp32 differed by 1.1e-6 on one element between CPU kinds)
    from stratarl.models import load_model

    return load_model(tiny_path, dtype=torch.float64)


def _pairs(vocab):
    g = torch.Generator().manual_seed(0)

    def row(n_prompt, n_resp):
        ids = torch.randint(5, vocab, (n_prompt + n_resp,), generator=g).tolist()
        return Sample(input_ids=ids, loss_mask=[0] * n_prompt + [1] * n_resp)

    return [PreferencePair(kind="step", uid="p0", chosen=[row(5, 3)], rejected=[row(5, 2)], chosen_value=1,
                           rejected_value=0),
            PreferencePair(kind="trajectory", uid="p1", chosen=[row(4, 2), row(7, 3)], rejected=[row(6, 4)],
                           chosen_value=1, rejected_value=0)]


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_pair_gradients_equal_the_direct_objective_and_ignore_micro_batching(model, assert_grads_close):
    from stratarl.train.batching import collate
    from stratarl.train.policy import forward

    pairs = _pairs(model.config.vocab_size)
    pref = PreferenceConfig()
    ref = tuple(x - 0.3 for x in pair_logps(model, pairs, 0, 10**6, False))  # a reference that differs
    got = pair_gradients(model, pairs, ref, ipr_objective, pref, 0, 10**6, False)
    g_one = _grads(model).clone()
    pair_gradients(model, pairs, ref, ipr_objective, pref, 0, 1, False)  # one row per micro-batch
    g_micro = _grads(model).clone()
    # the direct objective: every row forward with gradient, sides summed, the loss backpropagated
    model.zero_grad(set_to_none=True)
    sides = []
    for p in pairs:
        for rows in (p.chosen, p.rejected):
            b = collate(rows, 0)
            sides.append((forward(model, b).logp_BT * b.loss_mask_BT).sum())
    pc, pr = torch.stack(sides[0::2]).double(), torch.stack(sides[1::2]).double()
    n = torch.tensor([3.0, 5.0], dtype=torch.float64)  # chosen tokens: 3; 2 + 3
    loss = ipr_objective(pc, pr, ref[0], ref[1], n, torch.ones(2, dtype=torch.float64), pref)
    loss.backward()
    assert got == pytest.approx(float(loss.detach()), rel=1e-9)
    assert_grads_close(g_one, _grads(model), model.config.num_hidden_layers)
    assert_grads_close(g_micro, g_one, model.config.num_hidden_layers)
