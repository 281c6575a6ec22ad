"""Environment ids, parameters and splits; bad input gets a clear error naming what was wrong."""

import pytest

from stratarl.envs import all_specs, make_tasks, parse_env_id
from stratarl.envs.registry import validate_params
from stratarl.errors import SplitSizeError, UnknownNameError, UserError

TWX_GAMES = ["cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder"]


def test_both_families_registered():
    ids = set(all_specs())
    assert {f"twx:{g}" for g in TWX_GAMES} <= ids
    sci = [i for i in ids if i.startswith("sciworld:")]
    assert len(sci) == 30 and "sciworld:boil" in sci
    assert {"alfworld", "webshop"} <= ids


def test_params_parsed_and_defaults_filled():
    spec, params = parse_env_id("twx:cookingworld?numLocations=3&numIngredients=2&numDistractorItems=2&includeDoors=0")
    assert spec.id == "twx:cookingworld"
    assert params == {"numLocations": 3, "numIngredients": 2, "numDistractorItems": 2, "includeDoors": 0,
                      "limitInventorySize": 0}
    assert parse_env_id("sciworld:boil?simplifications=easy")[1]["simplifications"] == "easy"


@pytest.mark.parametrize("bad, match", [
    ("twx:cookinworld", r"unknown environment 'twx:cookinworld'.*'twx:cookingworld'"),
    ("sciworld:boill", r"'sciworld:boil'"),
    ("twx:cookingworld?numLocation=3", r"unknown parameter 'numLocation'.*'numLocations'"),
    ("twx:cookingworld?numLocations=abc", r"'numLocations' of twx:cookingworld must be int, got 'abc'"),
    ("twx:cookingworld?numLocations=99", r"must be in \[1, 11\], got 99"),
    ("twx:cookingworld?includeDoors=maybe", r"'includeDoors'"),
    ("", r"environment id is required"),
])
def test_bad_ids_and_params(bad, match):
    with pytest.raises(UserError, match=match):
        parse_env_id(bad)


def test_unknown_id_lists_closest():
    with pytest.raises(UnknownNameError) as e:
        parse_env_id("twx:coins")
    assert "twx:coin" in str(e.value)


def test_splits_map_onto_the_envs_own_folds():
    train = make_tasks("twx:coin", "train", n=3)
    test = make_tasks("twx:coin", "test", n=3, start=5)
    assert [t.seed for t in train] == [0, 1, 2]
    assert [t.seed for t in test] == [20005, 20006, 20007] and [t.index for t in test] == [5, 6, 7]
    sci_test = make_tasks("sciworld:boil", "test")
    sci_train = make_tasks("sciworld:boil", "train")
    assert len(sci_test) == 9 and not {t.seed for t in sci_test} & {t.seed for t in sci_train}
    with pytest.raises(UserError, match="unknown split 'valid'"):
        make_tasks("twx:coin", "valid")
    with pytest.raises(UserError, match="only 9 test tasks"):
        make_tasks("sciworld:boil", "test", start=9)


def test_more_tasks_than_a_split_holds_is_refused_with_its_size():
    with pytest.raises(SplitSizeError, match="^twx:cookingworld has only 1000 train tasks; asked for 1500: ask for at most 1000"):
        make_tasks("twx:cookingworld", "train", n=1500)
    with pytest.raises(SplitSizeError, match="asked for 5 from index 7: ask for at most 2"):
        make_tasks("sciworld:boil", "test", n=5, start=7)
    assert [t.index for t in make_tasks("sciworld:boil", "test", n=2, start=7)] == [7, 8]


def test_sciworld_bad_simplification():
    spec, params = parse_env_id("sciworld:boil")
    with pytest.raises(UserError, match="unknown ScienceWorld simplification 'eazy'"):
        spec.factory(validate_params(spec, {"simplifications": "eazy"}))


def test_data_dir_envs_say_what_is_missing(monkeypatch, tmp_path):
    from stratarl.envs import make_env

    monkeypatch.delenv("STRATARL_ALFWORLD_DATA", raising=False)
    with pytest.raises(UserError, match="STRATARL_ALFWORLD_DATA is not set"):
        make_env("alfworld")
    monkeypatch.setenv("STRATARL_WEBSHOP_DATA", str(tmp_path))
    with pytest.raises(UserError, match=r"lacks web_agent_site, data"):
        make_env("webshop")
