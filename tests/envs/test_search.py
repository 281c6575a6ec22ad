"""`search:synthkb`: the generated corpus, BM25 retrieval, the action contract and the reward rules."""

import importlib.util
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stratarl.envs import Env, all_specs, make_env, make_tasks, parse_env_id
from stratarl.envs.base import INFO_KEYS
from stratarl.envs.gold import gold_trajectories
from stratarl.envs.search import (
    DATA,
    answer_reward,
    bm25_index,
    load_docs,
    load_questions,
    normalize_answer,
    read_command,
    search,
)
from stratarl.errors import UnknownNameError, UserError

pytest.importorskip("bm25s")

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("train", "dev", "test")


def _generator(monkeypatch):
    path = ROOT / "scripts" / "gen_search_corpus.py"
    spec = importlib.util.spec_from_file_location("gen_search_corpus", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_generator_is_deterministic_and_matches_the_shipped_files(tmp_path, monkeypatch):
    gen = _generator(monkeypatch)
    gen.main(["--out", str(tmp_path / "a")])
    gen.main(["--out", str(tmp_path / "b")])
    for name in ("corpus.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl"):
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes()
        assert a == (DATA / "synthkb" / name).read_bytes(), f"stale {name}: run scripts/gen_search_corpus.py"


def test_corpus_shape():
    docs = load_docs("synthkb")
    assert 300 <= len(docs) <= 600 and len({d.id for d in docs}) == len(docs)
    assert sum(p.stat().st_size for p in (DATA / "synthkb").glob("*.jsonl")) < 1_000_000
    sizes = {s: len(load_questions("synthkb", s)) for s in SPLITS}
    assert sizes == {"train": 400, "dev": 100, "test": 200}
    starts = {}
    for split in SPLITS:
        qs = load_questions("synthkb", split)
        assert sorted(q.hops for q in qs) == [2] * (len(qs) // 2) + [3] * (len(qs) // 2)
        assert all(len(q.entities) == len(q.supporting) == q.hops for q in qs)
        starts[split] = {q.supporting[0] for q in qs}
    all_texts = [q.question for s in SPLITS for q in load_questions("synthkb", s)]
    assert len(set(all_texts)) == len(all_texts)
    # no dev/test question starts from an entity a train question starts from
    assert not starts["train"] & starts["test"] and not starts["train"] & starts["dev"]


def test_bm25_ranks_each_hop_entitys_own_document_first():
    index = bm25_index("synthkb")
    for split in SPLITS:
        for q in load_questions("synthkb", split):
            for name, doc_id in zip(q.entities, q.supporting, strict=True):
                assert search(index, name, 3)[0].doc.id == doc_id, (q.id, name)


def test_search_edge_cases():
    index = bm25_index("synthkb")
    assert search(index, "the of and", 3) == [] and search(index, "qqqzzz", 3) == []
    hits = search(index, "Vemoux River", 20)
    assert len(hits) <= 20 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score > 0 for h in hits)


def test_gold_replay_wins_every_test_question_and_each_search_shows_the_next_hop():
    tasks = make_tasks("search:synthkb", "test")
    trajs = list(gold_trajectories(tasks))
    assert len(trajs) == 200 and all(t.won and t.outcome == 1.0 and t.termination == "success" for t in trajs)
    for task, traj in zip(tasks, trajs, strict=True):
        q = load_questions("synthkb", "test")[task.seed]
        shown = [s.observation for s in traj.steps[:-1]]
        following = [*q.entities[1:], q.answers[0]]
        assert all(name in obs for name, obs in zip(following, shown, strict=True)), q.id
        assert len(traj.steps) == q.hops + 1 and all(s.valid for s in traj.steps)


@pytest.mark.parametrize("answer, golds, reward", [
    ("Zarvex Corp", ["Zarvex Corp"], 1.0),                       # exact
    ("  zarvex CORP. ", ["Zarvex Corp"], 1.0),                    # case, punctuation, spaces
    ("The Velar River", ["Velar River"], 1.0),                    # article dropped
    ("Velar", ["Velar River"], 0.0),                              # 1 of 2 gold words = 50% < 70%
    ("Velar", ["Velar River", "Velar"], 1.0),                     # ... but an alias matches exactly
    ("Velmar Harbour", ["Port Velmar Harbour"], 0.0),             # 2/3 = 66.7% < 70%
    ("the harbour of port velmar", ["Port Velmar Harbour"], 1.0),  # 3/3, any order
    ("one two three four five six seven", ["one two three four five six seven eight nine ten"], 1.0),  # 7/10
    ("one two three four five six", ["one two three four five six seven eight nine ten"], 0.0),  # 6/10
    ("north east south", ["north east south west"], 1.0),        # 3/4 = 75%
    ("It is Drovania, I think", ["Drovania"], 1.0),               # 1/1 gold words present
    ("1848", ["1847"], 0.0),
    ("", ["Drovania"], 0.0),
    ("anything", ["the"], 0.0),                                   # a gold normalised to nothing never matches
])
def test_answer_reward(answer, golds, reward):
    assert answer_reward(answer, golds) == reward


def test_normalize_answer():
    assert normalize_answer("  The Zarvex-Corp, an ANT!  ") == "zarvex corp ant"


@pytest.mark.parametrize("text, kind, arg", [
    ("search: Zarvex Corp", "search", "Zarvex Corp"),
    ("SEARCH:Zarvex   Corp ", "search", "Zarvex Corp"),
    ("answer: Drovania", "answer", "Drovania"),
    ("<think>it is</think><answer> Drovania </answer>", "answer", "Drovania"),
    ("<action>search: Kelmora</action>", "search", "Kelmora"),
    ("look around", "invalid", None),
    ("search:", "invalid", None),
    ("Drovania", "invalid", None),
])
def test_read_command(text, kind, arg):
    cmd = read_command(text)
    assert cmd.kind == kind and (arg is None or cmd.arg == arg)


def _open(env_id="search:synthkb", index=0):
    task = make_tasks(env_id, "test", n=index + 1)[index]
    env = make_env(task)
    obs, info = env.reset(task)
    return env, task, obs, info


def test_env_protocol_and_info_keys():
    env, task, obs, info = _open()
    assert isinstance(env, Env)
    q = load_questions("synthkb", "test")[0]
    assert q.question in obs and info["task_description"] == q.question
    assert set(INFO_KEYS) <= set(info) and info["moves"] == 0 and not info["won"]
    obs, reward, done, info = env.step(f"search: {q.entities[0]}")
    assert set(INFO_KEYS) <= set(info) and info["action_valid"] and info["moves"] == 1
    assert reward == 0.0 and not done and q.entities[0] in obs


def test_wrong_answer_ends_with_zero_and_right_raw_answer_wins():
    env, task, _, _ = _open()
    _, reward, done, info = env.step("answer: Nowhere")
    assert (reward, done, info["won"], info["outcome"]) == (0.0, True, False, 0.0)
    assert env.step("answer: again")[1:3] == (0.0, True)  # nothing more after the end
    env.reset(task)
    gold = load_questions("synthkb", "test")[0].answers[0]
    _, reward, done, info = env.step(f"<answer>{gold}</answer>")
    assert (reward, done, info["won"], info["score"], info["outcome"]) == (1.0, True, True, 1.0, 1.0)


def test_format_violations_count_and_end_with_zero():
    env, task, _, _ = _open("search:synthkb?max_steps=2")
    obs, reward, done, info = env.step("go north")
    assert "Invalid action" in obs and not info["action_valid"] and (reward, done) == (0.0, False)
    obs, reward, done, info = env.step("Drovania")
    assert done and reward == 0.0 and not info["won"] and info["outcome"] == 0.0 and info["moves"] == 2
    assert "without an answer" in obs


def test_a_violation_does_not_cancel_a_later_right_answer():
    env, task, _, _ = _open()
    env.step("hello")
    gold = load_questions("synthkb", "test")[0].answers[0]
    assert env.step(f"answer: {gold}")[1] == 1.0


def test_searches_alone_run_out_of_steps():
    env, _, _, _ = _open("search:synthkb?max_steps=3&k=1")
    results = [env.step("search: Vemoux River") for _ in range(3)]
    assert [r[2] for r in results] == [False, False, True] and all(r[1] == 0.0 for r in results)
    assert "[1]" in results[0][0] and "[2]" not in results[0][0]  # k=1: one document


def test_same_task_same_trace():
    env, task, first, _ = _open(index=3)
    actions = ["search: Vemoux River", "nonsense", *env.expert_actions(task)]
    trace = [env.step(a) for a in actions[:5]]
    other = make_env(task)
    assert other.reset(task)[0] == first and [other.step(a) for a in actions[:5]] == trace


def test_registry_lists_and_resolves_the_family():
    assert "search:synthkb" in all_specs()
    tasks = make_tasks("search:synthkb", "test", n=5)
    assert [t.seed for t in tasks] == [0, 1, 2, 3, 4] and {t.env for t in tasks} == {"search:synthkb"}
    assert tasks[0].params == {"k": 3, "max_steps": 6}
    spec, params = parse_env_id("search:synthkb?k=5")
    assert spec.family == "search" and params["k"] == 5 and spec.split_sizes(params)["dev"] == 100


def test_unknown_corpus_names_the_shipped_one():
    with pytest.raises(UnknownNameError, match="search:synthkb"):
        parse_env_id("search:wikipedia")
    with pytest.raises(UserError, match="'k'"):
        parse_env_id("search:synthkb?k=0")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.one_of(st.text(st.characters(codec=None, exclude_categories=()), max_size=200),
                      st.sampled_from(["", "\ud800", "search: \ud800x", "answer:\x00",
                                       "search: " + "x中" * 5000])))
def test_any_action_text_gets_an_observation(text):
    env, _, _, _ = _open("search:synthkb?max_steps=100")
    for action in (text, f"search: {text}", f"answer: {text}"):
        obs, reward, done, info = env.step(action)
        assert isinstance(obs, str) and reward in (0.0, 1.0) and set(INFO_KEYS) <= set(info)
        orjson.dumps(obs)  # valid UTF-8: trajectories holding it can be written
