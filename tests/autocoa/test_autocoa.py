"""AutoCoA: the contrastive loss, gold data, observation masks on real samples, GRPO rows, the CLI."""

import math
import subprocess
import sys

import pytest
import torch

from stratarl.agent.format import AgentFormat, read_format
from stratarl.algos.losses import contrastive_when_to_act_loss, sequence_logp
from stratarl.autocoa.data import GoldEpisode, gold_episodes, sft_row, when_to_act_pairs
from stratarl.autocoa.protocol import (
    OBS_CLOSE,
    OBS_OPEN,
    Segment,
    answer_turn,
    encode,
    observation,
    prompt_ids,
    search_turn,
)
from stratarl.autocoa.simulate import (
    CoAEpisode,
    CoARolloutConfig,
    RealObserver,
    SimulatedObserver,
    observation_token_mask,
    open_episodes,
)
from stratarl.autocoa.stages import episode_rows
from stratarl.envs.registry import make_tasks
from stratarl.types import Sample, Task

ENV = "search:synthkb?k=1"


def test_contrastive_loss_on_hand_made_logprobs():
    # chosen rows: mean logprob over the mask -> P_ch = [(-0.5-1.5)/2, (-2-2)/2] = [-1, -2]
    # rejected rows: P_rej = [(-3-1)/2, -1/1] = [-2, -1] (the second row's last token is padding)
    logp = torch.tensor([[0.0, -0.5, -1.5], [0.0, -2.0, -2.0], [0.0, -3.0, -1.0], [0.0, -1.0, -9.0]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [0, 1, 1], [0, 1, 0]], dtype=torch.float32)
    p = sequence_logp(logp, mask, mean=True)
    assert p.tolist() == [-1.0, -2.0, -2.0, -1.0]
    # pair 1: -log σ(1) + 0.2·1 = log(1 + e^-1) + 0.2 = 0.3132617 + 0.2 = 0.5132617
    # pair 2: -log σ(-1) + 0.2·2 = log(1 + e) + 0.4 = 1.3132617 + 0.4 = 1.7132617; mean = 1.1132617
    loss = contrastive_when_to_act_loss(p[:2], p[2:], alpha=0.2)
    assert math.isclose(float(loss), 1.1132617, abs_tol=1e-6)


def _hand_episode() -> GoldEpisode:
    task = Task(env="search:synthkb", split="train", index=0, seed=0, params={"k": 1})
    segs = [(search_turn("I search for the name in the question.", "Ann"), "model"),
            (observation("Ann was born in Bo."), "observation"),
            (search_turn("I search for the name in the result.", "Bo"), "model"),
            (observation("Bo lies in Cyr."), "observation"),
            (answer_turn("The last result holds the answer.", "Cyr"), "model")]
    return GoldEpisode(task, "In which country was Ann born?", segs, ["Ann", "Bo"], "Cyr", True)


def test_when_to_act_pairs_on_a_hand_made_gold_trajectory(tiny_tokenizer):
    tok, ep = tiny_tokenizer, _hand_episode()
    pairs = when_to_act_pairs(tok, ep)
    assert [p.chosen_acts for p in pairs] == [True, True, False]
    seg = [encode(tok, text) for text, _ in ep.segments]
    prompt = pairs[0].context_ids
    # same context c for chosen and rejected; the context grows by the gold segments before each turn
    assert pairs[1].context_ids == prompt + seg[0] + seg[1]
    assert pairs[2].context_ids == prompt + seg[0] + seg[1] + seg[2] + seg[3]
    assert [p.chosen_ids for p in pairs] == [seg[0], seg[2], seg[4]]
    # before the answer is known the rejected move answers with the entity about to be searched ...
    assert pairs[0].rejected_ids == encode(tok, answer_turn("I know the answer.", "Ann"))
    assert pairs[1].rejected_ids == encode(tok, answer_turn("I know the answer.", "Bo"))
    # ... once it is known, the rejected move searches again
    assert pairs[2].rejected_ids == encode(tok, search_turn("I need more information.", "Bo"))


def test_gold_episodes_replay_the_expert_and_win():
    eps = gold_episodes(ENV, "train", 3)
    for ep in eps:
        assert ep.won
        kinds = [k for _, k in ep.segments]
        assert kinds == ["model", "observation"] * len(ep.queries) + ["model"]
        assert ep.answer in ep.segments[-1][0]


def test_stage2_and_stage3_masks_differ_exactly_on_observation_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    ep = gold_episodes(ENV, "train", 1)[0]
    s2, s3 = sft_row(tok, ep, mask_observations=True), sft_row(tok, ep, mask_observations=False)
    assert s2.input_ids == s3.input_ids
    differ = [i for i, (a, b) in enumerate(zip(s2.loss_mask, s3.loss_mask, strict=True)) if a != b]
    # located independently, from the reply's ids alone (decoded prefixes); the system prompt names the tags too
    n = len(prompt_ids(tok, ep.question))
    obs = observation_token_mask(tok, s2.input_ids[n:])
    assert differ == [n + i for i, m in enumerate(obs) if m]
    assert differ and all(s3.loss_mask[i] == 1 and s2.loss_mask[i] == 0 for i in differ)
    assert tok.decode([s2.input_ids[i] for i in differ]).count(OBS_OPEN) == len(ep.queries)


def test_simulated_observation_mask_on_real_sampled_ids(engine, tiny_tokenizer):
    tok = tiny_tokenizer
    cfg = CoARolloutConfig(obs_max_tokens=24, obs_temperature=1.0)
    eps = open_episodes(tok, make_tasks(ENV, "train", n=4))
    for e in eps:  # a gold first turn, so that every episode searches
        text = search_turn("I search.", "Pakvou University")
        e.segments.append(Segment(encode(tok, text), "model", text=text))
    segs = SimulatedObserver(engine, tok, cfg).observe(eps, ["Pakvou University"] * 4, seed=3)
    for e, seg in zip(eps, segs, strict=True):
        e.segments.append(seg)
        sampled = seg.ids[1:1 + len(seg.logprobs)]
        assert len(sampled) == len(seg.logprobs) > 0  # the tiny model really sampled these
        ids = e.response_ids()
        masked = [1 - m for m in e.loss_mask(mask_observations=True)]
        assert masked == observation_token_mask(tok, ids)
        body = tok.decode([t for t, m in zip(ids, masked, strict=True) if m], skip_special_tokens=False)
        assert body.startswith(OBS_OPEN) and body.endswith(OBS_CLOSE)


def test_real_observer_shows_the_env_results(tiny_tokenizer):
    ep = open_episodes(tiny_tokenizer, make_tasks(ENV, "test", n=1))[0]
    (seg,) = RealObserver(ENV, tiny_tokenizer).observe([ep], ["Kvogrym University"], seed=0)
    assert seg.kind == "observation" and seg.text.startswith(OBS_OPEN + 'Search results for "Kvogrym University"')
    assert "Kvogrym University is" in seg.text


def test_episode_rows_grpo_advantages_and_masks():
    task = Task(env="search:synthkb", split="train", index=0, seed=0)
    group = []
    for r in (1.0, 0.0, 0.0, 0.0):
        e = CoAEpisode(task=task, golds=("x",), prompt_ids=[5, 6])
        e.segments = [Segment([1, 2], "model"), Segment([3, 4, 4], "observation"), Segment([7], "model")]
        e.reward = r
        group.append(e)
    rows = episode_rows([group, group[1:]])  # the second group has no variance: no rows
    # mean 0.25, unbiased std sqrt((0.75² + 3·0.25²)/3) = 0.5 -> A = (R − 0.25)/(0.5 + 1e-6) = 1.5, -0.5, -0.5, -0.5
    assert [r.advantage for r in rows] == pytest.approx([0.75 / 0.500001] + [-0.25 / 0.500001] * 3, abs=1e-12)
    assert rows[0].input_ids == [5, 6, 1, 2, 3, 4, 4, 7]
    assert rows[0].loss_mask == [0, 0, 1, 1, 0, 0, 0, 1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stratarl", *args], capture_output=True, text=True, timeout=300)


def test_bad_stage_name_is_a_clear_error(tmp_path):
    r = _cli("autocoa", "configs/autocoa_tiny.yaml", f"out_dir={tmp_path}", "stages=[sft1,rl_simm]")
    assert r.returncode == 2
    assert "rl_simm" in r.stderr and "'rl_sim'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_autocoa_cli_end_to_end(tmp_path):
    r = _cli("autocoa", "configs/autocoa_tiny.yaml", f"out_dir={tmp_path}", "name=e2e", "gold.tasks=6",
             "sft.batch_rows=6", "sft.sft1_epochs=1", "sft.sft2_epochs=1", "sft.sft3_epochs=1",
             "rl.sim_iterations=1", "rl.real_iterations=1", "rl.tasks_per_iteration=1", "rl.group_size=2",
             "eval.episodes=2", "rollout.turn_max_tokens=16", "rollout.obs_max_tokens=16")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "e2e"
    for stage in ("sft1", "sft2", "sft3", "rl_sim", "rl_real"):
        assert (run / stage / "config.json").is_file() and (run / stage / "stage.json").is_file()
        assert read_format(run / stage).protocol == "coa"
    import orjson

    summary = orjson.loads((run / "summary.json").read_bytes())
    assert list(summary["stages"]) == ["sft1", "sft2", "sft3", "rl_sim", "rl_real"]
    assert summary["stages"]["sft1"]["pairs"] > 6
    assert summary["eval"]["rl_real"]["episodes"] == 2


def test_a_stage_checkpoint_records_the_coa_protocol(tmp_path, tiny_path, tiny_tokenizer):
    from stratarl.autocoa.pipeline import save_stage
    from stratarl.models import load_model

    out = save_stage(tmp_path, "sft2", load_model(tiny_path), tiny_tokenizer, {"stage": "sft2"})
    assert read_format(out) == AgentFormat(protocol="coa") and (out / "stage.json").is_file()


def test_guide_lists_every_config_key():
    from pathlib import Path

    from stratarl.autocoa.config import AutoCoAConfig
    from stratarl.config import all_keys

    text = (Path(__file__).resolve().parents[2] / "docs" / "autocoa.md").read_text()
    missing = [k for k in all_keys(AutoCoAConfig) if f"`{k}`" not in text]
    assert not missing, f"docs/autocoa.md lacks {missing}; regenerate with `stratarl config autocoa --markdown`"


def test_grpo_update_on_simulated_episodes_raises_the_rewarded_episode(engine, tiny_tokenizer, tiny_path):
    from stratarl.algos.losses import LossConfig
    from stratarl.autocoa.config import RLSection
    from stratarl.autocoa.stages import grpo_update
    from stratarl.engines.base import SamplingParams
    from stratarl.models import load_model
    from stratarl.train.update import score

    tok = tiny_tokenizer
    cfg = CoARolloutConfig(obs_max_tokens=16)
    eps = open_episodes(tok, make_tasks(ENV, "train", n=1) * 2)
    params = SamplingParams(temperature=1.0, max_tokens=12, seed=5)
    for e, comp in zip(eps, engine.generate([e.prompt_ids for e in eps], params), strict=True):
        e.segments.append(Segment(list(comp.token_ids), "model", list(comp.logprobs), comp.text))  # real samples
    for e, seg in zip(eps, SimulatedObserver(engine, tok, cfg).observe(eps, ["x", "x"], seed=1), strict=True):
        e.segments.append(seg)
    eps[0].reward = 1.0
    rows = episode_rows([eps])
    assert [r.advantage > 0 for r in rows] == [True, False]
    model = load_model(tiny_path)

    def mean_model_logp(row):
        probe = Sample(input_ids=row.input_ids, loss_mask=row.loss_mask)  # a copy: the row itself stays untouched
        score(model, [probe], tok.pad_token_id, False, 1 << 14, "old_logprobs")
        picked = [lp for lp, m in zip(probe.old_logprobs, probe.loss_mask, strict=True) if m]
        return sum(picked) / len(picked)

    before = mean_model_logp(rows[0])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stats = grpo_update(model, opt, rows, LossConfig(kl_coef=0.0), RLSection(), tok.pad_token_id,
                        torch.Generator().manual_seed(0))
    assert stats.steps == 1 and math.isfinite(stats.policy_loss)
    assert mean_model_logp(rows[0]) > before


def test_bench_table_rows_and_intervals():
    from stratarl.bench.autocoa import ROWS, markdown_table
    from stratarl.stats import wilson

    ci = wilson(3, 40)  # 7.5%, Wilson [2.6, 19.9]
    row = {"episodes": 40, "wins": 3, "success_rate": ci.value, "success_ci95": [ci.low, ci.high],
           "mean_reward": 0.05, "mean_searches": 2.5, "format_ok_rate": 0.9}
    rows = {name: dict(row) for name in ROWS}
    del rows["react_zero_shot"]["format_ok_rate"]
    lines = markdown_table({"rows": rows}).splitlines()
    assert len(lines) == 2 + len(ROWS)
    assert lines[2] == "| react_zero_shot | 3/40 (7.5%) | [2.6, 19.9] | 0.050 | 2.50 | - |"
    assert lines[3] == "| sft2 | 3/40 (7.5%) | [2.6, 19.9] | 0.050 | 2.50 | 90% |"
