"""Renamed gold replays: the agent's world renamed consistently, the real game played underneath."""

import random

from stratarl.agent.prompts import PromptConfig
from stratarl.rollout.rename import Lens, draw_lens, taken_entities
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
        assert text == lens.see(plain_text)
        assert all(r not in text for r, s in lens.mapping.items() if r != s)
    assert renamed == len(trajs)
