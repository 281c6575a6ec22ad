"""Any action text (empty, huge, non-ASCII, control bytes, lone surrogates) never crashes an env or
the pool: the env answers with an observation and stays usable."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stratarl.envs import make_env, make_tasks
from stratarl.envs.pool import EnvPool

ANY_TEXT = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=200),
    st.text(st.characters(min_codepoint=0, max_codepoint=31), max_size=50),
    st.builds(lambda c, n: c * n, st.sampled_from("ax中\x00 <"), st.integers(1000, 10000)),
    st.sampled_from(["", " ", "\n", "take", "go to", "look around\x00", "\ud800", "🙂" * 100]),
)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", params=["twx:cookingworld", "sciworld:boil"])
def env_and_task(request):
    task = make_tasks(request.param, "train", n=1)[0]
    env = make_env(task)
    env.reset(task)
    return env, task


@FUZZ
@given(action=ANY_TEXT)
def test_direct_env_survives_any_text(env_and_task, action):
    env, task = env_and_task
    obs, reward, done, info = env.step(action)
    assert isinstance(obs, str) and isinstance(reward, float) and "score" in info
    obs, _, _, _ = env.step("look around")
    assert obs  # still alive and answering


@pytest.fixture(scope="module")
def pool():
    with EnvPool(num_workers=2, step_timeout=30) as p:
        yield p


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(actions=st.lists(ANY_TEXT, min_size=4, max_size=4))
def test_pool_survives_any_text(pool, actions):
    tasks = make_tasks("twx:coin", "train", n=2) + make_tasks("sciworld:melt", "train", n=2)
    replies = pool.reset(tasks)
    out = pool.step([(r.episode, a) for r, a in zip(replies, actions, strict=True)])
    assert all(r.error is None for r in out), [r.error for r in out]
    pool.release(r.episode for r in replies)
