"""The tiny model (built offline, deterministic) and the SmolLM2 import (plain safetensors)."""

import json
import unicodedata

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from stratarl.errors import UserError
from stratarl.models import TAG_TOKENS, TinyConfig, resolve_model
from stratarl.models.tiny import build_tiny, corpus


def test_tiny_is_a_small_qwen2_with_chat_template(tiny_path, tiny_tokenizer):
    cfg = json.loads((tiny_path / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and "quantization_config" not in cfg
    n = sum(t.numel() for t in load_file(tiny_path / "model.safetensors").values())
    assert 1_000_000 < n < 10_000_000
    for tag in TAG_TOKENS:
        assert len(tiny_tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1, tag
    text = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                              tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tiny_tokenizer.eos_token == "<|im_end|>"


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=200))
def test_tiny_tokenizer_round_trips_any_text(tiny_tokenizer, text):
    """Round trip up to Unicode NFC: the tokenizer's normalizer (as Qwen2's) composes text first, so
    e.g. the compatibility ideograph U+F900 comes back as U+8C48. Training never re-tokenizes text."""
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_tiny_tokenizer_normalizes_to_nfc(tiny_tokenizer):
    ids = tiny_tokenizer("\uf900 e\u0301", add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == "\u8c48 \u00e9"


def test_tiny_build_is_deterministic(tmp_path):
    cfg = TinyConfig(corpus_tasks=5, num_layers=1, hidden_size=64, num_heads=2, num_kv_heads=1,
                     intermediate_size=128, vocab_size=1024)
    texts = corpus(cfg)  # the first build collects its own corpus; the other two reuse this one
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    build_tiny(cfg, a)
    build_tiny(cfg, b, texts)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    c = tmp_path / "c"
    c.mkdir()
    build_tiny(TinyConfig(**{**cfg.__dict__, "seed": 1}), c, texts)
    assert not torch.equal(load_file(c / "model.safetensors")["model.embed_tokens.weight"], wa["model.embed_tokens.weight"])


def test_unknown_model_name_is_a_user_error():
    with pytest.raises(UserError, match=r"unknown model 'tinyy'.*Did you mean 'tiny'"):
        resolve_model("tinyy")


def test_smollm2_import_is_a_plain_checkpoint(smollm2_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.loads((smollm2_path / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["architectures"] == ["LlamaForCausalLM"]
    model = AutoModelForCausalLM.from_pretrained(smollm2_path)  # plain loading, no gguf_file
    tok = AutoTokenizer.from_pretrained(smollm2_path)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1]:])
