"""The `tiny` model: a Qwen2-architecture causal LM of ~2M parameters with its own byte-level BPE
tokenizer, both built offline and deterministically from a seed.

The tokenizer is trained (HF `tokenizers`) on environment text — task descriptions, observations,
gold actions and admissible actions of TextWorldExpress games and a few ScienceWorld tasks (train
splits only) — plus the agent's prompt templates. Byte-level BPE encodes any text. The agent's tags
(`<strategy>`, `</strategy>`, `<think>`, ..., `</answer>`) are single tokens; `<|im_start|>` /
`<|im_end|>` frame a Qwen-style chat template and `<|im_end|>` is EOS.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

TAG_TOKENS = ("<strategy>", "</strategy>", "<think>", "</think>", "<action>", "</action>", "<answer>", "</answer>",
              "<observation>", "</observation>")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
EOS, PAD = "<|im_end|>", "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS_VERSION = 3


@dataclass(frozen=True)
class TinyConfig:
    """Size and seed of the tiny model."""

    vocab_size: int = 2048
    """BPE vocabulary size (special and tag tokens included)."""
    hidden_size: int = 192
    """Model width."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 6
    """Attention heads."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention)."""
    intermediate_size: int = 512
    """SwiGLU hidden size."""
    max_positions: int = 4096
    """Context length."""
    seed: int = 0
    """Seed of the weight initialisation."""
    corpus_tasks: int = 60
    """Train tasks per TextWorldExpress game whose gold episodes feed the tokenizer."""

    def cache_name(self) -> str:
        key = json.dumps({**asdict(self), "corpus": CORPUS_VERSION}, sort_keys=True)
        return "tiny-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def corpus(cfg: TinyConfig) -> list[str]:
    """Environment text for the tokenizer (deterministic: fixed tasks, gold paths)."""
    from ..agent.prompts import TEMPLATES, PromptConfig, strategy_messages, system_message
    from ..envs import make_tasks
    from ..envs.gold import gold_trajectories
    from ..envs.jvm import shutdown_all

    texts: list[str] = [system_message(f, PromptConfig(think=t)) for f in TEMPLATES for t in (False, True)]
    texts += [m["content"] for m in strategy_messages("twx", "task", "observation", PromptConfig())]
    texts += ["system\n", "user\n", "assistant\n", "Step 1. Observation: ", "Admissible actions: "] * 50
    # not twx:coin: its gold-path generator explores at random, so its gold paths differ between calls
    games = ["twx:cookingworld", "twx:cookingworld?numLocations=5&numIngredients=3", "twx:twc",
             "twx:mapreader", "twx:arithmetic", "twx:sorting", "twx:simonsays", "twx:peckingorder"]
    for env_id in games:
        for traj in gold_trajectories(make_tasks(env_id, "train", n=cfg.corpus_tasks)):
            texts.extend(_episode_text(traj))
    for env_id in ["sciworld:boil", "sciworld:find-animal", "sciworld:grow-plant"]:
        for traj in gold_trajectories(make_tasks(env_id, "train", n=2)):
            texts.extend(_episode_text(traj))
    shutdown_all()
    return texts


def _episode_text(traj) -> list[str]:
    out = [traj.steps[0].anchor] if traj.steps else []
    for s in traj.steps:
        out += [f"<action>{s.action}</action>", s.observation]
    return out


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE over `texts`, wrapped as a transformers fast tokenizer with the chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(TAG_TOKENS), special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=None,
                                   unk_token=None, model_max_length=10**6)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny(cfg: TinyConfig, out: Path, texts: list[str] | None = None) -> None:
    """Write the tokenizer and a freshly initialised model (seeded) to `out` (`texts`: the tokenizer's
    corpus when already collected, else `corpus(cfg)`)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_tokenizer(corpus(cfg) if texts is None else texts, cfg.vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=True, rope_theta=10000.0,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS), pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        bos_token_id=None, use_sliding_window=False,
    )
    torch.manual_seed(cfg.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
