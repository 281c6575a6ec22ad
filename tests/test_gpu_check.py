"""`make test-gpu` (scripts/gpu_check.py) here, on a stand-in for the GPU machine: a Python that sees only
torch, transformers, peft and their dependencies (this venv's copies), plus what `make gpu-bundle` carries.
Without CUDA its CPU stages must pass and the rest be skipped with the reason; without the bundle it must
say to build one."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
HOST = ["torch", "transformers", "peft"]
"""What the GPU machine's Python is known to have."""


def _check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = sys.modules["gpu_check"] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _name(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _requirements_closure(roots: list[str]) -> set[str]:
    """The distributions `roots` need, transitively (extras left out), as installed here."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = _name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo += [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in dist.requires or [] if "extra ==" not in r]
    return seen


def _link(distributions: set[str], site: Path) -> None:
    """A site directory holding only `distributions` (links to this venv's files, dist-info included)."""
    site.mkdir(parents=True, exist_ok=True)
    for name in distributions:
        dist = metadata.distribution(name)
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            target = Path(str(dist.locate_file(top)))
            if target.exists() and not (site / top).exists():
                (site / top).symlink_to(target)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, smollm2_path):
    """What `make gpu-bundle` writes, made without the registry: this venv's copies of the bundle's
    packages, and SmolLM2-135M's shapes."""
    check = _check_module()
    root = tmp_path_factory.mktemp("bundle")
    _link({_name(p) for p in check.BUNDLE_PACKAGES}, root / "site")
    check.write_shapes(root / check.SHAPES)
    return root


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    site = tmp_path_factory.mktemp("host") / "site"
    _link(_requirements_closure(HOST), site)
    return site


def _run(host: Path, bundle: Path, tmp: Path) -> tuple[subprocess.CompletedProcess, dict]:
    # -S: no site-packages, so the venv's other packages (orjson, Java bridges, PIL, scipy, ...) are not there
    env = {**os.environ, "PYTHONPATH": str(host), "CUDA_VISIBLE_DEVICES": "", "STRATARL_CACHE": str(tmp / "cache")}
    out = tmp / "report.json"
    cmd = [sys.executable, "-S", str(SCRIPT), "--bundle", str(bundle), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp)
    return done, json.loads(out.read_text())


def test_gpu_host_without_cuda_runs_the_cpu_stages_and_skips_the_rest(tmp_path, host, bundle):
    done, report = _run(host, bundle, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert report["failures"] == [] and report["skipped"].startswith("no CUDA device")
    assert json.loads(done.stdout) == report
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == ["imports", "config", "environment", "model"] and all(s["ok"] for s in stages.values())
    assert stages["config"]["detail"]["episodes"] == 16 and stages["environment"]["detail"]["gold_calls"] > 0
    model = stages["model"]["detail"]
    assert model["weights"].startswith("seeded random init") and model["parameters"] == 134_515_008
    assert report["host"]["orjson"].endswith("(bundle)") and report["host"]["scienceworld"].endswith("(bundle)")


def test_gpu_host_without_the_bundle_is_told_to_build_it(tmp_path, host):
    done, report = _run(host, tmp_path / "no-bundle", tmp_path)
    assert done.returncode == 1 and [s["name"] for s in report["stages"]] == ["imports"]
    assert "No module named" in report["failures"][0] and "make gpu-bundle" in report["failures"][0]
    assert "Traceback" not in done.stderr


def test_bundle_shapes_rebuild_smollm2_architecture_and_tokenizer(bundle, smollm2_path):
    """What travels instead of the weights gives the real model's tensors' shapes and the same token ids."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    from stratarl.models import load_tokenizer

    check = _check_module()
    shapes = bundle / check.SHAPES
    spec = json.loads((shapes / "shapes.json").read_text())
    with torch.device("meta"):
        ours = AutoModelForCausalLM.from_config(check.shapes_config(shapes))
        theirs = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(smollm2_path)))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert check.rope_theta(ours.config) == check.rope_theta(theirs.config) == 100000.0

    tok = PreTrainedTokenizerFast(tokenizer_file=str(shapes / "tokenizer.json"), **spec["special"])
    want = load_tokenizer(smollm2_path)
    text = 'Step 1. <action>{"name": "lookup", "arguments": {"q": "Zürich"}}</action><|im_end|>'
    assert tok.encode(text) == want.encode(text) and tok.eos_token_id == want.eos_token_id
    assert spec["chat_template"] == want.chat_template
