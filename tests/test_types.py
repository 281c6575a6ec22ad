"""Records round-trip through JSON (orjson) unchanged."""

from hypothesis import given
from hypothesis import strategies as st

from stratarl.types import Advantages, Group, Sample, Step, Task, Trajectory, Turn, from_json, to_json


def _task(**kw):
    return Task(env="twx:cookingworld", split="train", index=3, seed=3, params={"numLocations": 3, **kw})


def _traj():
    strategy = Turn(prompt_ids=[1, 2, 3], response_ids=[4, 5], logprobs=[-0.5, -1.25], text="<strategy>x</strategy>")
    step = Step(prompt_ids=[1, 2], response_ids=[7], logprobs=[-0.1], text="<action>go</action>", thought="hm",
                action="go", valid=False, anchor="room", observation="ok", reward=0.5, penalty=0.1, done=True,
                info={"score": 0.5, "won": False}, advantage=-0.25, judged=True)
    return Trajectory(task=_task(), strategy=strategy, steps=[step, step], outcome=1.0, won=True,
                      termination="success", task_uid=_task().uid, strategy_uid="s0", uid="t0",
                      strategy_advantage=0.75)


def test_trajectory_round_trip():
    t = _traj()
    back = from_json(Trajectory, to_json(t))
    assert back == t
    assert isinstance(back.steps[0], Step) and isinstance(back.strategy, Turn) and isinstance(back.task, Task)


def test_group_sample_advantages_round_trip():
    t = _traj()
    g = Group(task=t.task, strategies=[t.strategy], trajectories=[[t, t]])
    assert from_json(Group, to_json(g)) == g
    assert g.flat == [t, t]
    s = Sample(input_ids=[1, 2, 3], loss_mask=[0, 1, 1], advantage=0.5, old_logprobs=[0.0, -1.0, -2.0],
               weight=2.0, uid="t0", step_index=1, kind="strategy")
    assert from_json(Sample, to_json(s)) == s
    a = Advantages(steps=[[[0.5, -0.5]]], strategies=[[1.0]])
    assert from_json(Advantages, to_json(a)) == a


def test_task_uid_depends_on_params_and_is_hashable():
    assert _task().uid != _task(numIngredients=2).uid
    assert len({_task(), _task()}) == 1


@given(text=st.text(), ids=st.lists(st.integers(0, 2**31)), lps=st.lists(st.floats(-50, 0)))
def test_turn_round_trip_any_text(text, ids, lps):
    turn = Turn(prompt_ids=ids, response_ids=ids[::-1], logprobs=lps, text=text)
    assert from_json(Turn, to_json(turn)) == turn
