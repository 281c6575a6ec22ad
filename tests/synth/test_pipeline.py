"""End to end, offline: `stratarl synth environments` writes a dataset that `tools:<name>` loads and whose
gold runs score F1 = 1 through the real env; `stratarl synth trajectories` writes SFT data that
`stratarl sft` (data.source=messages) loads."""

import json
from pathlib import Path

import orjson
import pytest

from stratarl.cli.main import main
from stratarl.envs import make_tasks
from stratarl.envs.gold import gold_trajectories
from stratarl.synth.graph import build_tool_graph, enumerate_chains
from stratarl.synth.servers import load_servers
from stratarl.train.sft import SFTConfig, SFTDataConfig, load_rows

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_environments_offline_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # datasets are found under ./runs/*/tools
    name = f"synthtest_{tmp_path.name.replace('-', '_')}"
    main(["synth", "environments", str(CONFIGS / "synth_environments.yaml"), f"name={name}"])
    report = json.loads((tmp_path / "runs" / name / "report.json").read_text())
    # 13 seed records: 10 have QS 1, three flawed ones .75/.625/.75, so P90 = 1 keeps 10; of their 20 tool
    # sub-questions one (qa-09's Kelvin expression, off by .15) fails verification, dropping its record;
    # merges: capital 4 -> 1 (3), population 5 -> 2 (3 + qa-10's conflicting Torika undone), author and
    # birth year 2 -> 1 each (2): 8 done, 1 undone, 10 tools
    expected = {"records": 13, "qs_threshold": 1.0, "kept": 10, "tool_specs": 20, "verified": 19, "rejected": 1,
                "records_dropped": 1, "merges": 8, "merges_rejected": 1, "final_tools": 10, "final_items": 9,
                "items_per_split": {"train": 7, "test": 2}, "dataset": f"tools:{name}"}
    assert {k: report[k] for k in expected} == expected
    for split, n in (("train", 7), ("test", 2)):
        tasks = make_tasks(f"tools:{name}", split)
        assert len(tasks) == n
        for traj in gold_trajectories(tasks):  # the real env: sandboxed tools, F1 over sub-questions
            assert traj.won and traj.outcome == pytest.approx(1.0, abs=1e-5)


def test_trajectories_offline_end_to_end(tmp_path, tiny_tokenizer):
    main(["synth", "trajectories", str(CONFIGS / "synth_trajectories.yaml"), f"out_dir={tmp_path}", "name=t",
          "chains=enumerate", "max_length=3"])
    run = tmp_path / "t"
    report = json.loads((run / "report.json").read_text())
    graphs = [build_tool_graph(s.name, [t.name for t in s.tools], [list(c) for c in s.verified_chains])
              for s in load_servers()]
    assert report["chains"] == report["tasks"] == report["trajectories"] == \
        sum(len(enumerate_chains(g, 2, 3)) for g in graphs)
    assert report["injected_failures"] > 0 and report["teacher_rejected"] == 0 and report["teacher"] == {}
    trajs = [orjson.loads(x) for x in (run / "trajectories.jsonl").read_bytes().splitlines()]
    sft = [orjson.loads(x) for x in (run / "sft.jsonl").read_bytes().splitlines()]
    assert len(sft) == report["kept"] == sum(t["score"] >= 0.9 for t in trajs) > 0
    assert report["kept"] < report["trajectories"]  # the filter drops the failure-ridden ones
    rows, _ = load_rows(SFTConfig(data=SFTDataConfig(source="messages", path=str(run / "sft.jsonl"))),
                        tiny_tokenizer, None)
    assert len(rows) == len(sft)
    for row, rec in zip(rows, sft, strict=True):  # trained tokens: the assistant turns only
        assistant = [m for m in rec["messages"] if m["role"] == "assistant"]
        assert sum(row.loss_mask) >= sum(len(tiny_tokenizer(m["content"])["input_ids"]) for m in assistant) > 0
