"""Renamed gold replays: the agent's world renamed consistently, the real game played underneath."""

import random
import re

from stratarl.agent.prompts import PromptConfig
from stratarl.envs.pool import EnvReply
from stratarl.rollout.rename import (
    ALIASES,
    FURNITURE,
    Lens,
    draw_furniture,
    draw_lens,
    draw_methods,
    draw_view,
    seen,
    taken_entities,
)
from stratarl.rollout.runner import RunnerConfig
from stratarl.train.sft import SFTConfig, SFTDataConfig, load_rows

ENV = "twx:cookingworld?numLocations=1&numIngredients=1&numDistractorItems=0"


def test_what_a_gold_path_takes():
    plan = ["take cookbook", "read cookbook", "take knife", "open fridge", "take red hot pepper", "take salt from shelf",
            "take red hot pepper", "prepare meal", "take meal"]
    assert taken_entities(plan) == ["red hot pepper", "salt"]


def test_lens_renames_whole_names_longest_first_and_back():
    lens = Lens({"pepper": "carrot", "red hot pepper": "chicken leg"})
    seen = lens.see("slice the red hot pepper, then the pepper; peppermint stays")
    assert seen == "slice the chicken leg, then the carrot; peppermint stays"
    assert lens.unsee(seen) == "slice the red hot pepper, then the pepper; peppermint stays"


def test_drawn_names_avoid_the_episode_and_its_text():
    vocab = ["carrot", "chicken leg", "flour", "salt"]
    for seed in range(20):
        lens = draw_lens(["carrot", "flour"], vocab, random.Random(seed), context="a bag of salt on the counter")
        assert lens.mapping == {}  # only "chicken leg" is free (salt is in the text): too few names, none renamed
    lens = draw_lens(["carrot"], vocab, random.Random(0), context="the counter")
    assert list(lens.mapping) == ["carrot"] and lens.mapping["carrot"] in {"chicken leg", "flour", "salt"}


def _sorted_lists(text: str) -> str:
    head = "Admissible actions: "
    return "\n".join(head + ", ".join(sorted(ln[len(head):].split(", "))) if ln.startswith(head) else ln
                     for ln in text.split("\n"))


def test_renamed_replays_win_the_real_games_and_never_show_the_real_names(tiny_tokenizer):
    """`data.rename=1`: every gold path still wins the real game (the env got the real actions), the rows'
    text carries the drawn names wherever the plain replay had the real ones, and is otherwise the same."""
    prompt = PromptConfig(mode="chat")
    rcfg = RunnerConfig(max_steps=60, prompt=prompt, context=4096)
    plain_rows, plain = load_rows(SFTConfig(data=SFTDataConfig(env=ENV, tasks=6), prompt=prompt), tiny_tokenizer, rcfg)
    rows, trajs = load_rows(SFTConfig(data=SFTDataConfig(env=ENV, tasks=6, rename=1.0), prompt=prompt),
                            tiny_tokenizer, rcfg)
    assert all(t.won for t in trajs) and len(rows) == len(plain_rows)
    renamed = 0
    for t, p, row, prow in zip(trajs, plain, rows, plain_rows, strict=True):
        real = taken_entities([s.action for s in p.steps])
        seen = taken_entities([s.action for s in t.steps])
        assert len(real) == len(seen)
        lens = Lens(dict(zip(real, seen, strict=True)))
        renamed += real != seen
        text, plain_text = tiny_tokenizer.decode(row.input_ids), tiny_tokenizer.decode(prow.input_ids)
        assert text == _sorted_lists(lens.see(plain_text))  # the seen lists are re-sorted, as the env sorts them
        assert all(r not in text for r, s in lens.mapping.items() if r != s)
    assert renamed == len(trajs)


def test_permuted_methods_keep_each_method_whole_and_map_back():
    """A cooking method's verb, state and appliance move together (the recipe's "grill" seen as "roast" is
    cooked in the oven the agent sees), cuts among cuts, `pork chop` untouched, and the inverse is exact."""
    text = ("You see a stove. There is also an oven. You also see a toaster. Directions: chop the pork chop, grill "
            "the pork chop. You grill the pork chop with the toaster. a grilled chopped pork chop")
    perms = set()
    for seed in range(30):
        lens = Lens(draw_methods(random.Random(seed)))
        seen = lens.see(text)
        assert lens.unsee(seen) == text
        cook = lens.mapping["grill"]
        appliance = {"roast": "oven", "fry": "stove", "grill": "toaster"}[cook]
        state = {"roast": "roasted", "fry": "fried", "grill": "grilled"}[cook]
        cut = lens.mapping["chop"]
        assert f"{cut} the pork chop, {cook} the pork chop. You {cook} the pork chop with the {appliance}." in seen
        assert seen.endswith(f"a {state} {cut}ped pork chop" if cut == "chop" else f"a {state} {cut}d pork chop")
        assert sorted(lens.mapping[w] for w in ("roast", "fry", "grill")) == ["fry", "grill", "roast"]
        perms.add((cook, cut))
    assert len(perms) == 9  # every method with every cut


def test_method_swapped_replays_win_the_real_games(tiny_tokenizer):
    """`data.methods=1`: every gold path, written in the permuted world, still wins the real game."""
    prompt = PromptConfig(mode="chat")
    rcfg = RunnerConfig(max_steps=60, prompt=prompt, context=4096)
    _, trajs = load_rows(SFTConfig(data=SFTDataConfig(env=ENV, tasks=8, methods=1.0), prompt=prompt), tiny_tokenizer,
                         rcfg)
    assert all(t.won for t in trajs)
    cooks = [s.action for t in trajs for s in t.steps if s.action.startswith("cook ")]
    assert cooks


def test_seen_admissible_actions_keep_the_envs_order_rule():
    """Sorted lists stay sorted after renaming (their order would otherwise tell which real appliance is which)."""
    lens = Lens({"oven": "toaster", "toaster": "stove", "stove": "oven"})
    real = ["cook carrot in oven", "cook carrot in stove", "cook carrot in toaster", "take knife"]
    reply = EnvReply(episode=0, observation="", reward=0.0, done=False, info={"admissible_actions": real})
    shown = seen(reply, lens).info["admissible_actions"]
    assert shown == ["cook carrot in oven", "cook carrot in stove", "cook carrot in toaster", "take knife"]
    assert [lens.unsee(a) for a in shown] == ["cook carrot in stove", "cook carrot in toaster", "cook carrot in oven",
                                              "take knife"]


def test_focus_draws_add_only_the_ingredient_steps_under_fresh_lenses(tiny_tokenizer):
    """`data.focus_draws=2`: after the full replays, two more replays of every episode holding only its take /
    cut / cook steps of the recipe's ingredient, no strategy turn, each draw with its own methods permutation."""
    prompt = PromptConfig(mode="window", history=2, keep=["read"])
    rcfg = RunnerConfig(max_steps=60, prompt=prompt, context=4096)
    data = SFTDataConfig(env=ENV, tasks=6, strategies=True, methods=1.0, focus_draws=2)
    _, trajs = load_rows(SFTConfig(data=data, prompt=prompt), tiny_tokenizer, rcfg)
    full, draws = trajs[:6], [trajs[6:12], trajs[12:]]
    assert len(trajs) == 18 and all(t.won for t in full) and all(t.strategy for t in full)
    cooks = set()
    for draw in draws:
        for t, f in zip(draw, full, strict=True):
            name = taken_entities([s.action for s in f.steps])[0]
            assert t.strategy is None and t.steps and all(name in s.action for s in t.steps)
            assert len(t.steps) == sum(name in s.action for s in f.steps if s.valid)
            cooks.update(s.action for s in t.steps if s.action.startswith("cook "))
    assert len({c.split()[-1] for c in cooks}) > 1  # appliances differ across draws (fresh permutations)


def test_a_zero_share_draws_nothing_so_other_draws_stay_as_they_were():
    """`draw_view` with furniture 0 consumes the rng exactly as the methods-only draw did."""
    a, b = random.Random(5), random.Random(5)
    assert draw_view(a, 1.0, 0.0) == (b.random(), draw_methods(b))[1]
    assert a.random() == b.random()
    assert draw_view(random.Random(1), 0.0, 0.0, 0.0) == {}
    c, d = random.Random(7), random.Random(7)
    assert draw_view(c, 1.0, 1.0) == {**(d.random(), draw_methods(d))[1], **(d.random(), draw_furniture(d))[1]}


def test_furniture_renamed_replays_win_the_real_games_and_never_name_the_cupboard(tiny_tokenizer):
    """`data.furniture=1`: train kitchens have a kitchen cupboard (test kitchens never do); the agent sees it only
    under its other names, drawn per episode, in every prompt and action, and the gold paths still win."""
    prompt = PromptConfig(mode="window", history=2, keep=["read"])
    rcfg = RunnerConfig(max_steps=60, prompt=prompt, context=4096)
    _, trajs = load_rows(SFTConfig(data=SFTDataConfig(env=ENV, tasks=8, furniture=1.0), prompt=prompt),
                         tiny_tokenizer, rcfg)
    assert all(t.won for t in trajs)
    assert not any("kitchen cupboard" in tiny_tokenizer.decode(s.prompt_ids) + s.action for t in trajs for s in t.steps)
    names = sorted(FURNITURE["kitchen cupboard"], key=len, reverse=True)
    shown = [next((a for a in names if re.search(rf"\b{a}\b", t.steps[0].anchor)), None) for t in trajs]
    assert None not in shown and len(set(shown)) > 1


def test_container_renamed_replays_win_the_real_games_and_names_say_nothing(tiny_tokenizer):
    """`data.containers=1`: every train kitchen has a kitchen cupboard and mostly keeps the knife in the cutlery
    drawer; the agent sees the containers under names drawn per episode (some never used by the game), the gold
    paths still win the real games, and the container opened for the knife goes by different names."""
    prompt = PromptConfig(mode="window", history=2, keep=["read"])
    rcfg = RunnerConfig(max_steps=60, prompt=prompt, context=4096)
    _, trajs = load_rows(SFTConfig(data=SFTDataConfig(env=ENV, tasks=12, containers=1.0), prompt=prompt),
                         tiny_tokenizer, rcfg)
    assert all(t.won for t in trajs)
    firsts = [t.steps[0].anchor for t in trajs]
    assert any(re.search(rf"\b{a}\b", f) for f in firsts for a in ALIASES)
    assert any("kitchen cupboard" not in f for f in firsts)
    for_knife = {t.steps[i - 1].action for t in trajs for i, s in enumerate(t.steps)
                 if s.action == "take knife" and t.steps[i - 1].action.startswith("open ")}
    assert len(for_knife) > 1
