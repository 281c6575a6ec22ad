"""Window-mode step prompts keep what a `keep` action revealed after it leaves the history window."""

from stratarl.agent.memory import remember
from stratarl.agent.prompts import HistoryItem, PromptConfig, StepView, step_messages
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


def test_hidden_admissible_verbs_are_not_listed_but_the_rest_keep_their_order():
    view = StepView(family="twx", task="cook", observation="You are in the kitchen.", step=0,
                    admissible=["examine knife", "look around", "open fridge", "inventory", "take knife"])
    user = step_messages(view, PromptConfig(hide_admissible=["examine", "look", "inventory"]))[1]["content"]
    assert user.splitlines()[-2] == "Admissible actions: open fridge, take knife"
    assert "examine" in step_messages(view, PromptConfig())[1]["content"]


def test_listed_one_per_line_an_action_is_the_tokens_it_is_written_with(tiny_tokenizer):
    """`admissible_layout: lines`: each listed action is the same token ids as that action in a reply, so it
    can be copied token by token; in the comma layout its first word is another token (`, take` vs `take`)."""
    view = StepView(family="twx", task="cook", observation="You open the fridge.", step=0,
                    admissible=["open fridge", "take pork chop", "cook pork chop in oven"])
    text = step_messages(view, PromptConfig(admissible_layout="lines"))[1]["content"]
    assert text.splitlines()[-4:-1] == ["open fridge", "take pork chop", "cook pork chop in oven"]
    ids = lambda s: tiny_tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    written = ids("<action>take pork chop</action>")[1:-1]
    lines_ids, comma_ids = ids(text), ids(step_messages(view, PromptConfig())[1]["content"])
    contains = lambda seq, sub: any(seq[i:i + len(sub)] == sub for i in range(len(seq)))  # noqa: E731
    assert contains(lines_ids, written) and not contains(comma_ids, written)


def test_the_last_prompt_of_a_gold_episode_shows_the_recipe(tiny_tokenizer):
    """The quickstart's prompt (window mode, the recipe kept as a note, examine/look/inventory not listed):
    the recipe read at step 3 is still in the prompt of the episode's last step, long after it left the
    window, and only the current admissible actions are listed."""
    from stratarl.config import load_config
    from stratarl.envs.pool import EnvPool
    from stratarl.rollout.expert import expert_episodes
    from stratarl.train.config import TrainConfig

    cfg = load_config(TrainConfig, "configs/quickstart.yaml", [])
    tasks = make_tasks(ENV, "test", n=1)
    with EnvPool(num_workers=1) as pool:
        (traj,) = expert_episodes(tiny_tokenizer, pool, tasks, [pool.expert_actions(tasks[0])], cfg.rollout.runner)
    read = next(i for i, s in enumerate(traj.steps) if s.action == "read cookbook")
    assert len(traj.steps) - 1 - read > cfg.rollout.runner.prompt.history
    last = tiny_tokenizer.decode(traj.steps[-1].prompt_ids)
    assert traj.steps[read].observation.strip() in last and last.count("Admissible actions:") == 1
    assert "examine" not in last


def test_a_chat_turn_after_an_invalid_action_does_not_repeat_the_unchanged_observation():
    from stratarl.agent.prompts import chat_turn

    room = "You are in the kitchen. You see a fridge."
    view = StepView(family="twx", task="cook", observation=room, step=1, admissible=["open fridge"],
                    history=[HistoryItem(observation=room, action="fly", valid=False)])
    assert chat_turn(view, PromptConfig(), first=False) == "Your last action was not valid.\nAdmissible actions: open fridge"
    view.history[-1].valid, view.observation = True, "You open the fridge."
    assert chat_turn(view, PromptConfig(), first=False) == "Observation: You open the fridge.\nAdmissible actions: open fridge"
