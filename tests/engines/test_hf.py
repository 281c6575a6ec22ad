"""The hf engine against transformers itself: exact logprobs, identical greedy tokens, batching that
changes nothing, the prefix cache, seeded sampling, stops, and weight updates; and its placement
(`device`): the CPU path unchanged, clear errors, and on CUDA (skipped without one) the CPU's results."""

import itertools
import threading

import pytest
import torch
from transformers import AutoModelForCausalLM

from stratarl.config import load_config
from stratarl.engines import SamplingParams
from stratarl.engines.hf import HFEngine, HFEngineConfig
from stratarl.engines.kernels import Linear, make_linear
from stratarl.errors import UserError
from stratarl.train.config import TrainConfig

TEXTS = ["You are in the kitchen. In one part of the room you see a stove.", "take knife", "x",
         "Your task is to boil water. This room is called the hallway. You see a door to the kitchen."]


def _prompts(tok, texts=TEXTS):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


@pytest.fixture(scope="module")
def fp32_engine(tiny_path, tiny_tokenizer):
    return HFEngine(tiny_path, HFEngineConfig(dtype="float32"), tiny_tokenizer)


def _teacher_forced(model, prompt, completion):
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logp = model(ids).logits[0].float().log_softmax(-1)
    return [logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(completion)]


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-4), ("bfloat16", 2e-2)])
def test_logprobs_equal_teacher_forcing(tiny_path, tiny_tokenizer, dtype, tol):
    eng = HFEngine(tiny_path, HFEngineConfig(dtype=dtype), tiny_tokenizer)
    ref = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=getattr(torch, dtype)).eval()
    prompts = _prompts(tiny_tokenizer)
    for c in eng.generate(prompts, SamplingParams(temperature=1.0, max_tokens=10, seed=0)):
        tf = _teacher_forced(ref, prompts[c.prompt_index], c.token_ids)
        assert len(c.logprobs) == len(c.token_ids) > 0
        assert max(abs(a - b) for a, b in zip(tf, c.logprobs, strict=True)) < tol


def test_greedy_equals_transformers_generate(fp32_engine, tiny_path, tiny_tokenizer):
    ref = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval()
    prompts = _prompts(tiny_tokenizer)
    outs = fp32_engine.generate(prompts, SamplingParams(temperature=0, max_tokens=16))
    for p, c in zip(prompts, outs, strict=True):
        g = ref.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), do_sample=False,
                         max_new_tokens=16)[0, len(p):].tolist()
        assert c.token_ids == g[: len(c.token_ids)] and (c.finish_reason == "stop" or len(g) == 16)


def test_continuous_batching_equals_one_at_a_time(tiny_path, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer) * 3
    params = SamplingParams(temperature=0, max_tokens=12)
    narrow = HFEngine(tiny_path, HFEngineConfig(dtype="float32", max_batch=2, prefix_cache_mb=0), tiny_tokenizer)
    together = narrow.generate(prompts, params)  # 12 requests through 2 rows: they join and leave
    alone = [narrow.generate([p], params)[0] for p in prompts]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert [c.prompt_index for c in together] == list(range(len(prompts)))


def test_prefix_cache_reuses_and_changes_nothing(tiny_path, tiny_tokenizer):
    shared = tiny_tokenizer("Task: cook a meal. Strategy: find the cookbook first, then the knife. " * 3,
                            add_special_tokens=False)["input_ids"]
    prompts = [shared + tiny_tokenizer(f" Step {i}. Observation: room {i}", add_special_tokens=False)["input_ids"]
               for i in range(6)]
    params = SamplingParams(temperature=0, max_tokens=8)
    cached = HFEngine(tiny_path, HFEngineConfig(dtype="float32"), tiny_tokenizer)
    plain = HFEngine(tiny_path, HFEngineConfig(dtype="float32", prefix_cache_mb=0), tiny_tokenizer)
    a = cached.generate(prompts, params)
    assert cached.stats["reused_tokens"] >= 5 * (len(shared) // 16) * 16  # the group prefix was computed once
    turn2 = [p + c.token_ids + tiny_tokenizer(" next", add_special_tokens=False)["input_ids"] for p, c in zip(prompts, a, strict=True)]
    before = cached.stats["prefill_tokens"]
    b = cached.generate(turn2, params)
    assert cached.stats["prefill_tokens"] - before < sum(len(p) for p in turn2) / 3  # only the new tail
    assert [c.token_ids for c in a] == [c.token_ids for c in plain.generate(prompts, params)]
    assert [c.token_ids for c in b] == [c.token_ids for c in plain.generate(turn2, params)]


def test_growing_prompts_double_the_kv_buffer(tiny_path, tiny_tokenizer):
    """Chat turns: each call's prompt is the last prompt + reply + ~60 new tokens, with the buffer kept
    between calls (as within one rollout). Capacities: each growth at least doubles, capped at the
    context; a few allocations for ten turns, not one per turn; replies still equal teacher forcing."""
    eng = HFEngine(tiny_path, HFEngineConfig(dtype="float32"), tiny_tokenizer)
    ref = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval()
    turn = _prompts(tiny_tokenizer)[3] * 2  # ~60 tokens
    prompt, caps = list(turn), []
    for _ in range(10):
        (c,) = eng.generate([prompt], SamplingParams(temperature=1.0, max_tokens=4, seed=0))
        assert max(abs(a - b) for a, b in zip(_teacher_forced(ref, prompt, c.token_ids), c.logprobs, strict=True)) < 1e-4
        caps.append(eng._kv.shape[4])
        prompt = prompt + c.token_ids + turn
    grown = sorted(set(caps))
    assert all(b >= 2 * a for a, b in itertools.pairwise(grown)), caps  # e.g. [80, 160, 320, 640]
    assert len(grown) <= 5 and max(caps) >= len(prompt) - len(turn)


def test_seeded_sampling_is_reproducible_and_n_samples(fp32_engine, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer)
    p = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=10, n=3, seed=7)
    a, b = fp32_engine.generate(prompts, p), fp32_engine.generate(prompts, p)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert [c.prompt_index for c in a] == [i for i in range(len(prompts)) for _ in range(3)]
    other = fp32_engine.generate(prompts, SamplingParams(temperature=1.0, top_p=0.9, max_tokens=10, n=3, seed=8))
    assert [c.token_ids for c in a] != [c.token_ids for c in other]


def test_stop_strings_and_tokens(fp32_engine, tiny_tokenizer):
    prompt = _prompts(tiny_tokenizer)[:1]
    free = fp32_engine.generate(prompt, SamplingParams(temperature=1.0, max_tokens=20, seed=1, min_tokens=20))[0]
    stop_tok = free.token_ids[3]
    c = fp32_engine.generate(prompt, SamplingParams(temperature=1.0, max_tokens=20, seed=1, stop_token_ids=[stop_tok]))[0]
    assert c.token_ids[-1] == stop_tok and c.finish_reason == "stop" and stop_tok not in c.token_ids[:-1]
    piece = tiny_tokenizer.decode(free.token_ids[:5])[-2:]
    s = fp32_engine.generate(prompt, SamplingParams(temperature=1.0, max_tokens=20, seed=1, stop=[piece]))[0]
    assert piece in s.text and s.finish_reason == "stop" and len(s.token_ids) <= 5
    assert fp32_engine.generate(prompt, SamplingParams(temperature=0, max_tokens=3))[0].finish_reason in ("length", "stop")


def test_update_weights_gives_the_new_models_outputs(tiny_path, tiny_tokenizer):
    eng = HFEngine(tiny_path, HFEngineConfig(dtype="float32"), tiny_tokenizer)
    prompts = _prompts(tiny_tokenizer)
    params = SamplingParams(temperature=0, max_tokens=10)
    before = [c.token_ids for c in eng.generate(prompts, params)]
    new = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    eng.update_weights(new.state_dict())
    after = eng.generate(prompts, params)
    assert [c.token_ids for c in after] != before
    for p, c in zip(prompts, after, strict=True):
        g = new.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), do_sample=False,
                         max_new_tokens=10)[0, len(p):].tolist()
        assert c.token_ids == g[: len(c.token_ids)]
        assert max(abs(a - b) for a, b in zip(_teacher_forced(new, p, c.token_ids), c.logprobs, strict=True)) < 1e-4


def test_concurrent_callers_are_batched_together(fp32_engine, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer)
    params = SamplingParams(temperature=0, max_tokens=10)
    want = [c.token_ids for c in fp32_engine.generate(prompts, params)]
    got = [None] * len(prompts)

    def call(i):
        got[i] = fp32_engine.generate([prompts[i]], params)[0].token_ids

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == want


def test_smollm2_exact_in_fp32_and_as_good_as_transformers_in_bf16(smollm2_path):
    """fp32: within 1e-4 of a teacher-forced pass. bf16 on a 30-layer model cannot meet 2e-2 per token:
    transformers' own bf16 forward is ~0.04 (mean) / ~0.15 (max) away from fp32 on sampled tokens. So
    the bf16 engine must be as close to the fp32 model as transformers' bf16 forward is (mean |dlogp|),
    and greedy decoding must give transformers' bf16 tokens."""
    from stratarl.models import load_tokenizer

    tok = load_tokenizer(smollm2_path)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tok(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"]
    ref32 = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    ref16 = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.bfloat16).eval()
    sampled = SamplingParams(temperature=1.0, max_tokens=16, seed=0, n=2)
    for c in HFEngine(smollm2_path, HFEngineConfig(dtype="float32"), tok).generate([prompt], sampled):
        assert max(abs(a - b) for a, b in zip(_teacher_forced(ref32, prompt, c.token_ids), c.logprobs, strict=True)) < 1e-4
    eng = HFEngine(smollm2_path, HFEngineConfig(dtype="bfloat16"), tok)
    for c in eng.generate([prompt], sampled):
        exact, hf16 = _teacher_forced(ref32, prompt, c.token_ids), _teacher_forced(ref16, prompt, c.token_ids)
        ours_err = sum(abs(a - b) for a, b in zip(c.logprobs, exact, strict=True)) / len(exact)
        hf_err = sum(abs(a - b) for a, b in zip(hf16, exact, strict=True)) / len(exact)
        assert ours_err < 1.5 * hf_err + 0.01
    greedy = eng.generate([prompt], SamplingParams(temperature=0, max_tokens=10))[0]
    assert "Paris" in greedy.text
    g = ref16.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                       do_sample=False, max_new_tokens=10)[0, len(prompt):].tolist()
    assert greedy.token_ids == g[: len(greedy.token_ids)]


# -- placement (engine.hf.device) ------------------------------------------------------------------

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _outputs(eng, prompts):
    """Greedy and seeded-sampled completions, token ids and logprobs, as the engine returns them."""
    greedy = eng.generate(prompts, SamplingParams(temperature=0, max_tokens=12))
    sampled = eng.generate(prompts, SamplingParams(temperature=0.8, top_p=0.9, max_tokens=12, n=2, seed=3))
    return [(c.token_ids, c.logprobs) for c in greedy + sampled]


def test_explicit_cpu_device_changes_nothing(tiny_path, tiny_tokenizer):
    """`device=cpu` is the default's path exactly (dtype auto: bf16 with oneDNN-packed weights on a CPU with
    AMX / AVX-512-BF16), bit for bit."""
    prompts = _prompts(tiny_tokenizer)
    default = HFEngine(tiny_path, HFEngineConfig(), tiny_tokenizer)
    explicit = HFEngine(tiny_path, HFEngineConfig(device="cpu"), tiny_tokenizer)
    assert HFEngineConfig().device == "cpu" and explicit.device == default.device == torch.device("cpu")
    assert explicit.weights.embed.device.type == "cpu" and explicit._kv is None
    assert _outputs(explicit, prompts) == _outputs(default, prompts)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_clear_error(tiny_path, tiny_tokenizer, device):
    with pytest.raises(UserError) as e:
        HFEngine(tiny_path, HFEngineConfig(device=device), tiny_tokenizer)
    msg = str(e.value)
    assert f"engine.hf.device='{device}'" in msg and "no CUDA device" in msg and "available here: cpu" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("device", ["gpu", "cpu:1", "meta", "cuda:x"])
def test_unknown_device_is_a_clear_error(tiny_path, tiny_tokenizer, device):
    with pytest.raises(UserError, match=rf"engine.hf.device='{device}' is not a device .* use cpu, cuda or cuda:N "
                                        r"\(available here: cpu"):
        HFEngine(tiny_path, HFEngineConfig(device=device), tiny_tokenizer)


def test_engine_device_is_a_train_config_key():
    """Set from `stratarl train` as `engine.hf.device`; checked when the engine is built, not when the config
    is read, so a GPU run's config can be checked on a machine without one (scripts/gpu_check.py does)."""
    assert load_config(TrainConfig, overrides=["engine.hf.device=cuda:1"]).engine.hf.device == "cuda:1"


def test_onednn_packing_is_cpu_only():
    """The prepacked bf16 matmul is a CPU kernel: weights anywhere else keep `F.linear`, its reference."""
    w = torch.randn(8, 4)
    assert not make_linear(w.to("meta"), None, torch.bfloat16).packed
    assert not make_linear(w, None, torch.float32).packed
    fast, reference = make_linear(w, None, torch.bfloat16), Linear(w.to(torch.bfloat16), None, False)
    x = torch.randn(3, 4, dtype=torch.bfloat16)
    assert torch.equal(fast(x), reference(x))


@CUDA
def test_cuda_greedy_and_seeded_sampling_match_the_cpu(fp32_engine, tiny_path, tiny_tokenizer):
    """fp32 on CUDA: the CPU engine's greedy tokens and, since the generators stay on the CPU, its seeded
    samples too; logprobs to 1e-4; everything returned as Python lists."""
    prompts = _prompts(tiny_tokenizer)
    eng = HFEngine(tiny_path, HFEngineConfig(device="cuda", dtype="float32"), tiny_tokenizer)
    assert eng.device.type == "cuda" and eng.weights.embed.is_cuda and not eng.weights.lm_head.packed
    got, want = _outputs(eng, prompts), _outputs(fp32_engine, prompts)
    assert eng._kv.is_cuda
    assert [ids for ids, _ in got] == [ids for ids, _ in want]
    for (_, lp), (_, ref) in zip(got, want, strict=True):
        assert max(abs(a - b) for a, b in zip(lp, ref, strict=True)) < 1e-4
    c = eng.generate(prompts[:1], SamplingParams(temperature=1.0, max_tokens=4, seed=0))[0]
    assert type(c.token_ids) is list and all(type(t) is int for t in c.token_ids)
    assert type(c.logprobs) is list and all(type(x) is float for x in c.logprobs)


@CUDA
def test_cuda_bf16_logprobs_and_weight_updates(tiny_path, tiny_tokenizer):
    """bf16 on CUDA (what the GPU check runs): logprobs within the CPU bf16 tolerance of an fp32 teacher-forced
    pass; `update_weights` from CPU tensors lands on the GPU and gives the new model's greedy tokens."""
    prompts = _prompts(tiny_tokenizer)
    eng = HFEngine(tiny_path, HFEngineConfig(device="cuda", dtype="bfloat16"), tiny_tokenizer)
    assert eng.dtype == torch.bfloat16 and eng.weights.embed.is_cuda
    assert not any(lin.packed for lw in eng.weights.layers for lin in (lw.qkv, lw.o, lw.gate_up, lw.down))
    ref = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval()
    for c in eng.generate(prompts, SamplingParams(temperature=1.0, max_tokens=10, seed=0)):
        tf = _teacher_forced(ref, prompts[c.prompt_index], c.token_ids)
        assert max(abs(a - b) for a, b in zip(tf, c.logprobs, strict=True)) < 2e-2
    new = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    fp32 = HFEngine(tiny_path, HFEngineConfig(device="cuda", dtype="float32"), tiny_tokenizer)
    fp32.update_weights(new.state_dict())  # CPU tensors
    assert all(p.is_cuda for p in fp32.model.parameters()) and fp32.weights.embed.is_cuda
    params = SamplingParams(temperature=0, max_tokens=10)
    for p, c in zip(prompts, fp32.generate(prompts, params), strict=True):
        g = new.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), do_sample=False,
                         max_new_tokens=10)[0, len(p):].tolist()
        assert c.token_ids == g[: len(c.token_ids)]
