"""The run report: what was not measured shows as "—", never as a value of 0."""

import orjson

from stratarl.report import measured, write_report


def test_unmeasured_kl_shows_as_a_dash_and_measured_entropy_as_its_value(tmp_path):
    rows = [{"iteration": i, "rollout/success": 0.5, "rollout/outcome": 0.5, "rollout/steps": 9.0,
             "rollout/invalid": 0.1, "train/kl": 0.0, "train/entropy": 0.25 * (i + 1), "time/iteration": 2.0,
             "time/rollout": 1.0, "time/update": 1.0, "rollout/env_steps": 10} for i in range(2)]
    (tmp_path / "metrics.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    assert not measured(rows, "train/kl") and measured(rows, "train/entropy")
    text = write_report(tmp_path).read_text()
    assert "| 0 | 0.50 | 0.50 | 9.0 | 0.10 | — | 0.250 | 2.0 |" in text
    assert "| 1 | 0.50 | 0.50 | 9.0 | 0.10 | — | 0.500 | 2.0 |" in text
