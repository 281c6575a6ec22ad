"""SLEA-RL step-level experience: clustering, extraction, score-based admission, rate limits and retrieval on
hand-built trajectories with hand-stated results; persistence and resume; prompts unchanged when off; and a
real tiny-model rollout on TextWorldExpress whose prompt ids carry the retrieved experience."""

import orjson
import pytest

from stratarl.agent.experience import (
    Candidate,
    Cluster,
    Experience,
    ExperienceConfig,
    ExperienceLibrary,
    admit,
    extract_candidates,
    find_cluster,
    format_experience,
    initial_library,
    load_library,
    make_retriever,
    normalize_observation,
    retrieval_metrics,
    retrieve,
    save_library,
    select_trajectories,
    update_library,
)
from stratarl.agent.prompts import HistoryItem, PromptConfig, StepView, chat_turn, render, step_messages
from stratarl.errors import UserError
from stratarl.types import Group, Step, Task, Trajectory

TASK = Task(env="twx:cookingworld", split="train", index=0, seed=0)


def _step(anchor: str, action: str, valid: bool = True) -> Step:
    return Step(prompt_ids=[1], response_ids=[2], logprobs=[0.0], text=action, action=action, anchor=anchor, valid=valid)


def _traj(outcome: float, steps: list[tuple[str, str]], uid: str = "") -> Trajectory:
    return Trajectory(task=TASK, steps=[_step(o, a) for o, a in steps], outcome=outcome, task_uid=TASK.uid, uid=uid)


def _lib(*keys: str) -> ExperienceLibrary:
    return ExperienceLibrary(clusters=[Cluster(id=i, key=k) for i, k in enumerate(keys)], next_cluster=len(keys))


def _cand(obs: str, action: str, kind: str = "success", score: float = 1.0, value: float = 1.0) -> Candidate:
    return Candidate(observation=obs, action=action, kind=kind, valid=True, score=score, value=value)


# -- clustering ------------------------------------------------------------------------------------


def test_observations_are_normalized_before_clustering():
    assert normalize_observation("  You are in\n the  Kitchen. ") == "you are in the kitchen."
    lib = _lib("you are in the kitchen.")
    exact = ExperienceConfig(cluster="exact")
    assert find_cluster(lib, "You are   in the KITCHEN.\n", exact) == 0
    assert find_cluster(lib, "You are in the garden.", exact) is None


def test_jaccard_clusters_take_the_most_similar_above_the_threshold():
    cfg = ExperienceConfig(cluster="jaccard", similarity=0.85)
    lib = _lib("a b c d e f g h i j", "x y z")
    # {a..j, k} vs {a..j}: 10 shared of 11 words = 0.909 >= 0.85
    assert find_cluster(lib, "a b c d e f g h i j k", cfg) == 0
    # {a..i, k} vs {a..j}: 9 shared of 11 words = 0.818 < 0.85; vs "x y z": 0
    assert find_cluster(lib, "a b c d e f g h i k", cfg) is None
    # exact clustering never merges different texts
    assert find_cluster(lib, "a b c d e f g h i j k", ExperienceConfig(cluster="exact")) is None
    # a tie (10/11 with both) goes to the oldest cluster; ids are the clusters' own, not positions
    tie = ExperienceLibrary(clusters=[Cluster(id=7, key="a b c d e f g h i j x"), Cluster(id=3, key="a b c d e f g h i j y")])
    assert find_cluster(tie, "a b c d e f g h i j", cfg) == 7
    assert find_cluster(ExperienceLibrary(), "anything", cfg) is None


def test_tfidf_clusters_reuse_the_strategy_embedder():
    lib = _lib("you are in the kitchen there is a fridge", "you are in the garden there is a shovel")
    query = "you are in the kitchen there is a stove"
    assert find_cluster(lib, query, ExperienceConfig(cluster="tfidf", similarity=0.3)) == 0
    assert find_cluster(lib, query, ExperienceConfig(cluster="tfidf", similarity=0.99)) is None
    assert find_cluster(lib, "YOU ARE IN THE GARDEN there is a shovel", ExperienceConfig(cluster="tfidf")) == 1


# -- extraction, admission, rate limits -----------------------------------------------------------


def test_extraction_scores_steps_by_outcome_and_distance_to_the_end():
    cfg = ExperienceConfig(discount=0.5, success_threshold=0.5)
    won = Trajectory(task=TASK, outcome=1.0, task_uid=TASK.uid, steps=[
        _step("kitchen", "open  fridge"), _step("fridge open", "take apple"), _step("fridge open", "eat moon", valid=False),
        _step("fridge open", "")])  # an unparseable reply has no action: skipped
    got = [(c.kind, c.action, c.valid, c.score, c.value) for c in extract_candidates(won, cfg)]
    # T = 4: step t scores outcome * 0.5^(3 - t); an invalid action is a failure scored 1
    assert got == [("success", "open fridge", True, 0.125, 1.0), ("success", "take apple", True, 0.25, 1.0),
                   ("failure", "eat moon", False, 1.0, 1.0)]
    lost = _traj(0.2, [("kitchen", "go west"), ("hall", "go east")])
    # failures score (1 - 0.2) * 0.5^(1 - t)
    assert [(c.kind, c.score) for c in extract_candidates(lost, cfg)] == [("failure", 0.4), ("failure", 0.8)]


def test_rate_limited_update_with_hand_computed_library():
    cfg = ExperienceConfig(enabled=True, cluster="exact", top_trajectories=1, max_new_success=2, max_new_failure=1)
    a = _traj(1.0, [("o1", "a1"), ("o2", "a2"), ("o3", "a3")], "A")
    b = _traj(0.6, [("o1", "b1")], "B")
    c = _traj(0.0, [("o1", "c1"), ("o2", "c2")], "C")
    d = _traj(0.4, [("o1", "d1")], "D")
    group = Group(task=TASK, trajectories=[[a, b, c, d]])
    # sources: the best success (A, not B) and the worst failure (C, not D)
    assert [t.uid for t in select_trajectories([group], cfg)] == ["A", "C"]
    lib = ExperienceLibrary()
    m = update_library(lib, [group], 0, cfg)
    # 3 success candidates of score 1 but only 2 new records; 2 failure candidates but only 1
    assert [(r.cluster, r.kind, r.action, r.count) for r in lib.records] == [
        (0, "success", "a1", 1), (1, "success", "a2", 1), (0, "failure", "c1", 1)]
    assert [c.key for c in lib.clusters] == ["o1", "o2"]
    assert (m["experience/new_success"], m["experience/new_failure"], m["experience/merged"]) == (2, 1, 0)
    assert (m["experience/successes"], m["experience/failures"], m["experience/clusters"]) == (2, 1, 2)
    # next iteration: A again with outcome 0.7 (still the best success, score 0.7): a1, a2 merge (not counted
    # against the limit), a3 is new; c1 merges, c2 is new
    a.outcome = 0.7
    m = update_library(lib, [group], 1, cfg)
    assert [(r.action, r.count, r.value, r.score, r.iteration) for r in lib.records] == [
        ("a1", 2, 0.85, 1.0, 0), ("a2", 2, 0.85, 1.0, 0), ("c1", 2, 0.0, 1.0, 0), ("a3", 1, 0.7, 0.7, 1),
        ("c2", 1, 0.0, 1.0, 1)]
    assert (m["experience/new_success"], m["experience/new_failure"], m["experience/merged"]) == (1, 1, 3)
    assert [c.key for c in lib.clusters] == ["o1", "o2", "o3"]


def test_extraction_runs_every_kth_iteration_only():
    cfg = ExperienceConfig(enabled=True, cluster="exact", every=2)
    group = Group(task=TASK, trajectories=[[_traj(1.0, [("o1", "a1")])]])
    lib = ExperienceLibrary()
    assert update_library(lib, [group], 1, cfg)["experience/new_success"] == 0 and not lib.records
    assert update_library(lib, [group], 2, cfg)["experience/new_success"] == 1 and len(lib.records) == 1


def test_score_based_admission_and_replacement():
    cfg = ExperienceConfig(cluster="exact", max_success=2, min_score=0.3)
    lib = ExperienceLibrary()
    assert admit(lib, _cand("o1", "low", score=0.2), cfg, 0) == "rejected"  # below min_score, even with room
    assert admit(lib, _cand("o1", "a1", score=1.0), cfg, 0) == "added"
    assert admit(lib, _cand("o2", "a2", score=0.4), cfg, 0) == "added"
    assert admit(lib, _cand("o1", "a1", score=0.35), cfg, 1) == "merged"  # merges never need room
    assert admit(lib, _cand("o9", "a9", score=0.4), cfg, 1) == "rejected"  # full, and not above the worst (0.4)
    assert admit(lib, _cand("o9", "a9", score=0.8), cfg, 1) == "replaced"  # the worst (a2 at o2) leaves
    assert [(r.action, r.score, r.count) for r in lib.records] == [("a1", 1.0, 2), ("a9", 0.8, 1)]
    assert [(c.id, c.key) for c in lib.clusters] == [(0, "o1"), (2, "o9")]  # o2's cluster emptied and went
    # failures have their own capacity
    assert admit(lib, _cand("o1", "f1", kind="failure", score=0.5), cfg, 1) == "added"


# -- retrieval -------------------------------------------------------------------------------------


def _retrieval_lib() -> ExperienceLibrary:
    lib = _lib("kitchen", "garden")
    rec = lambda action, kind, score, count=1, valid=True, cluster=0: Experience(  # noqa: E731
        cluster=cluster, kind=kind, action=action, valid=valid, score=score, value=1.0 if kind == "success" else 0.0,
        count=count)
    lib.records = [rec("s1", "success", 1.0), rec("s2", "success", 1.0, count=3), rec("s3", "success", 0.5),
                   rec("f2", "failure", 0.8), rec("f1", "failure", 1.0, valid=False), rec("g1", "success", 1.0, cluster=1)]
    return lib


def test_retrieval_returns_the_top_k_of_the_observation_cluster():
    cfg = ExperienceConfig(cluster="exact", k_success=2, k_failure=1)
    lib = _retrieval_lib()
    wins, losses = retrieve(lib, "Kitchen", cfg)
    assert [r.action for r in wins] == ["s2", "s1"]  # score, then count, then age
    assert [r.action for r in losses] == ["f1"]
    assert retrieve(lib, "the moon", cfg) == ([], [])
    text = format_experience(wins, losses, max_chars=800)
    assert text == ("- s2: led to success (outcome 1.00, 3x)\n- s1: led to success (outcome 1.00, 1x)\n"
                    "- f1: invalid action")
    first = "- s2: led to success (outcome 1.00, 3x)"
    assert format_experience(wins, losses, max_chars=len(first) + 5) == first  # whole lines only
    assert format_experience([], [], 800) == ""


def test_retriever_gating_cache_and_metrics():
    lib = _retrieval_lib()
    on = ExperienceConfig(enabled=True, cluster="exact", warmup=2, min_size=3)
    assert make_retriever(lib, ExperienceConfig(enabled=False), 9) is None
    assert make_retriever(None, on, 9) is None
    assert make_retriever(lib, on, 1) is None  # warming up
    assert make_retriever(lib, ExperienceConfig(enabled=True, warmup=0, min_size=7), 5) is None  # 6 records < 7
    r = make_retriever(lib, on, 2)
    assert r is not None
    assert r("kitchen").startswith("- s2:") and r("garden") == "- g1: led to success (outcome 1.00, 1x)"
    assert r("moon") == "" and r("kitchen") and len(r.cache) == 3
    assert retrieval_metrics(r) == {"experience/active": 1.0, "experience/retrievals": 4, "experience/hit_rate": 0.75}
    assert retrieval_metrics(None) == {"experience/active": 0.0, "experience/retrievals": 0, "experience/hit_rate": 0.0}


# -- persistence -----------------------------------------------------------------------------------


def test_save_load_round_trip_is_atomic_json(tmp_path):
    lib = _retrieval_lib()
    path = save_library(lib, tmp_path / "run" / "experience.json")
    assert load_library(path) == lib
    assert orjson.loads(path.read_bytes())["format"] == "stratarl.experience/1"
    lib.records[0].count = 9
    save_library(lib, path)  # replaced in place, no temporary file left behind
    assert load_library(path).records[0].count == 9
    assert [p.name for p in path.parent.iterdir()] == ["experience.json"]
    assert initial_library(ExperienceConfig(enabled=True, path=str(path))) == lib
    assert initial_library(ExperienceConfig(enabled=True)) == ExperienceLibrary()
    assert initial_library(ExperienceConfig(enabled=False, path=str(path))) is None
    (tmp_path / "bad.json").write_text('{"clusters": []}')
    with pytest.raises(UserError, match="not a stratarl experience library"):
        load_library(tmp_path / "bad.json")
    with pytest.raises(UserError, match="experience.path"):
        load_library(tmp_path / "missing.json")


def test_config_keys_are_checked():
    from stratarl.config import load_config
    from stratarl.errors import ConfigError
    from stratarl.train.config import TrainConfig

    cfg = load_config(TrainConfig, overrides=["experience.enabled=true", "experience.k_success=3"])
    assert cfg.experience.enabled and cfg.experience.k_success == 3
    assert not TrainConfig().experience.enabled
    with pytest.raises(ConfigError, match="k_sucess"):
        load_config(TrainConfig, overrides=["experience.k_sucess=3"])


# -- prompts ---------------------------------------------------------------------------------------


def _view(experience=None) -> StepView:
    return StepView(family="twx", task="Cook a meal.", observation="You are in the kitchen.", step=1,
                    history=[HistoryItem(observation="You are in the hall.", action="go north")],
                    admissible=["open fridge", "go south"], experience=experience)


def test_prompts_are_unchanged_without_experience():
    system = ("You are an agent playing a text adventure game. Use exactly one of the admissible actions when "
              "they are listed. Reply with <action>one action</action>.")
    user = ("Task: Cook a meal.\nStep 1. Observation: You are in the hall.\nAction: go north\n"
            "Step 2. Observation: You are in the kitchen.\nAdmissible actions: open fridge, go south\nYour next action?")
    for off in (None, ""):
        assert step_messages(_view(off), PromptConfig()) == [{"role": "system", "content": system},
                                                             {"role": "user", "content": user}]
        assert chat_turn(_view(off), PromptConfig(), first=True) == (
            "Task: Cook a meal.\nObservation: You are in the kitchen.\nAdmissible actions: open fridge, go south")
    shown = step_messages(_view("- open fridge: led to success (outcome 1.00, 2x)"), PromptConfig())[1]["content"]
    assert shown == user.replace("kitchen.\n", "kitchen.\nExperience:\n- open fridge: led to success (outcome 1.00, 2x)\n")
    chat = chat_turn(_view("- x: invalid action"), PromptConfig(), first=False)
    assert chat == "Observation: You are in the kitchen.\nExperience:\n- x: invalid action\nAdmissible actions: open fridge, go south"


# -- a real rollout --------------------------------------------------------------------------------


def test_retrieved_experience_reaches_the_prompt_ids(engine, tiny_tokenizer, pool):
    from stratarl.envs import make_tasks
    from stratarl.rollout.groups import GroupConfig, sample_groups
    from stratarl.rollout.runner import RunnerConfig, StepSampling

    tasks = make_tasks("twx:cookingworld", "train", n=1)
    (first,) = pool.reset(tasks)
    pool.release([first.episode])
    cfg = ExperienceConfig(enabled=True, warmup=0, min_size=1)
    lib = ExperienceLibrary()
    assert admit(lib, _cand(first.observation, "examine cookbook"), cfg, 0) == "added"
    rcfg = RunnerConfig(max_steps=2, sampling=StepSampling(max_tokens=8))

    def run(exp):
        engine.clear_cache()  # same seed and an empty prefix cache: the same samples
        return sample_groups(engine, tiny_tokenizer, pool, tasks, GroupConfig(n_rollouts=2), rcfg, 0, experience=exp)

    ids = lambda gs: [s.prompt_ids for g in gs for t in g.flat for s in t.steps]  # noqa: E731
    assert ids(run(None)) == ids(run(lambda obs: ""))  # nothing retrieved: the very same prompts

    retriever = make_retriever(lib, cfg, 0)
    (group,) = run(retriever)
    text = "- examine cookbook: led to success (outcome 1.00, 1x)"
    view = StepView(family="twx", task=first.info["task_description"], observation=first.observation, step=0,
                    admissible=first.info["admissible_actions"], experience=text)
    for t in group.flat:
        assert t.steps[0].prompt_ids == render(tiny_tokenizer, step_messages(view, rcfg.prompt))
        assert "Experience:\n" + text in tiny_tokenizer.decode(t.steps[0].prompt_ids)
    assert retriever.hits >= 2
    # the untrained model's replies parse to no action at all: nothing new to remember
    assert all(not s.action for t in group.flat for s in t.steps)
    m = update_library(lib, [group], 0, cfg)
    assert (m["experience/new_success"], m["experience/new_failure"], m["experience/successes"]) == (0, 0, 1)


def test_resume_restores_the_library(tmp_path):
    """With primed replies the untrained model's garbage becomes invalid actions, so the library fills with
    failure records from iteration 0 on; iteration 1 reads it (the same two tasks each iteration)."""
    from stratarl.config import load_config
    from stratarl.train.config import TrainConfig
    from stratarl.train.logging import read_metrics
    from stratarl.train.pipeline import run_training

    data = {"env": {"id": "twx:cookingworld?numLocations=1&numIngredients=1&numDistractorItems=0",
                    "tasks_per_iteration": 2, "train_tasks": 2},
            "rollout": {"group": {"n_rollouts": 2}, "horizon": {"max_steps": 3},
                        "runner": {"sampling": {"max_tokens": 8}, "prompt": {"history": 1, "prime": True}}},
            "optim": {"lr": 1e-3, "bf16": "off"}, "engine": {"hf": {"dtype": "float32"}},
            "logging": {"tensorboard": False, "progress": False},
            "experience": {"enabled": True, "warmup": 1, "min_size": 1}, "out_dir": str(tmp_path)}
    cfg = lambda name, its: load_config(TrainConfig, data={**data, "name": name, "iterations": its})  # noqa: E731
    straight = run_training(cfg("straight", 2))
    run_training(cfg("pieces", 1))
    resumed = run_training(cfg("pieces", 2), resume=True)
    rows = read_metrics(straight)
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))} for r in rs]  # noqa: E731
    assert strip(rows) == strip(read_metrics(resumed))
    assert (straight / "experience.json").read_bytes() == (resumed / "experience.json").read_bytes()
    assert [r["experience/active"] for r in rows] == [0.0, 1.0]
    assert rows[0]["experience/new_failure"] > 0 and rows[1]["experience/hit_rate"] > 0  # read after the restore
    for it in range(2):
        assert (straight / "trajectories" / f"{it}.jsonl").read_bytes() == (resumed / "trajectories" / f"{it}.jsonl").read_bytes()
