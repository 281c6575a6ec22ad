"""Reference agents of `stratarl eval` on a real env (TextWorldExpress coin)."""

from stratarl.envs import make_tasks
from stratarl.envs.pool import EnvPool
from stratarl.evaluate import EvalConfig, run_reference_agent


def test_a_gold_agent_stops_where_its_plan_ends():
    """An expert that finds no plan (ALFWorld's hand-coded one gives up after 150 steps) or a short one is
    not padded to the 1,000-step gold horizon: the episode ends, unwon, when the plan runs out."""
    tasks = make_tasks("twx:coin", "test", n=3)
    with EnvPool(num_workers=0) as pool:
        real = pool.expert_actions
        plans = {tasks[0].uid: [], tasks[1].uid: real(tasks[1])[:1]}
        pool.expert_actions = lambda t: plans.get(t.uid) if t.uid in plans else real(t)  # type: ignore[method-assign]
        trajs = run_reference_agent(EvalConfig(env="twx:coin", agent="gold"), tasks, pool)
    empty, short, whole = trajs
    assert (len(empty.steps), empty.termination, empty.won) == (0, "max_steps", False)
    assert (len(short.steps), short.termination, short.won) == (1, "max_steps", False)
    assert whole.won and whole.termination == "success"
