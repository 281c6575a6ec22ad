"""Window-mode step prompts keep what a `keep` action revealed after it leaves the history window."""

from stratarl.agent.memory import remember
from stratarl.agent.prompts import PromptConfig, StepView, step_messages
from stratarl.envs import make_tasks
from stratarl.envs.gold import gold_trajectories

ENV = "twx:cookingworld?numLocations=1&numIngredients=1&numDistractorItems=0"


def _late_view() -> tuple[StepView, str]:
    """The view at the last step of a real gold CookingWorld episode, and the recipe it read."""
    (traj,) = gold_trajectories(make_tasks(ENV, "test", n=1))
    first = traj.steps[0]
    view = StepView(family="twx", task="cook", observation=first.anchor, step=0)
    for s in traj.steps[:-1]:
        remember(view, s.action, s.valid, s.observation, None)
    recipe = next(s.observation for s in traj.steps if s.action == "read cookbook")
    assert len(traj.steps) - 1 - [s.action for s in traj.steps].index("read cookbook") > 3
    return view, recipe


def test_a_late_step_prompt_keeps_the_recipe():
    view, recipe = _late_view()
    assert "Ingredients:" in recipe
    user = lambda cfg: step_messages(view, cfg)[1]["content"]  # noqa: E731
    assert "Ingredients:" not in user(PromptConfig(history=1))
    kept = user(PromptConfig(history=1, keep=["read"]))
    assert f"Note, after read cookbook: {recipe.strip()}" in kept
    assert kept.count("Ingredients:") == 1


def test_a_note_is_not_repeated_while_its_result_is_in_the_window():
    view, _ = _late_view()
    text = step_messages(view, PromptConfig(history=-1, keep=["read"]))[1]["content"]
    assert "Note," not in text and text.count("Ingredients:") == 1
