"""The `hf` engine: in-process generation with continuous batching and a KV prefix cache.

- Every pending request shares one forward pass per step. Requests join the running batch as rows
  free up and leave it the step they finish — within one `generate` call (more requests than
  `max_batch`) and across calls from several threads (the OpenAI-compatible server's handlers).
- A block prefix cache (`prefix.py`) reuses the K/V of prompt prefixes across requests and calls. In
  one call, a request whose uncached prefix is being computed for an earlier request waits for the
  next admission wave, so a group's shared task + strategy prefix is computed once.
- bf16 weights where the CPU has AMX / AVX-512-BF16 (or a CUDA device is used), fp32 otherwise.
- `device`: the CPU (default) or a CUDA device holds the model, its KV cache and prefix cache, and runs
  the forward pass and the sampler; token ids and logprobs come back as Python lists either way. The
  per-request generators stay on the CPU, so a seed draws the same uniforms on every device.
- Each completion carries the exact token ids sampled and log p(token) under the model at
  temperature 1 (what the trainer recomputes), whatever temperature / top-p the sampling used.
- Request i, sample j of a call with `seed=s` draws from its own generator seeded from (s, i, j):
  the same requests with the same seed give the same tokens.
"""

from __future__ import annotations

import ctypes
import threading
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..allocator import relieve_pressure
from ..errors import UserError
from .base import Completion, SamplingParams
from .kernels import DecoderWeights, extract_weights, forward, logits
from .prefix import PrefixCache
from .sampling import draw


@dataclass
class HFEngineConfig:
    """The in-process engine."""

    device: str = "cpu"
    """Where the model, its KV cache and the sampler live: `cpu`, `cuda` (the current CUDA device) or
    `cuda:N`. On CUDA the CPU-only oneDNN kernels are replaced by plain torch ops."""
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    """Weight dtype: `auto` is bf16 where the CPU supports it (on CUDA: where the GPU does), fp32 otherwise."""
    max_batch: int = 64
    """Most sequences decoded together."""
    prefix_cache_mb: int = 1024
    """Memory budget of the prefix cache (0 disables it)."""
    block: int = 16
    """Tokens per prefix-cache block."""
    prefill_budget: int = 1 << 25
    """Most attention-score elements (rows x heads x new tokens x keys) per prefill chunk."""
    keep_freed_memory: bool = True
    """Have glibc keep freed memory for reuse instead of returning every large tensor to the OS
    (each step allocates the same sizes again; fresh pages fault in and slow elementwise ops ~2x)."""


STATS = ("prefill_tokens", "decode_tokens", "reused_tokens", "logit_rows", "attended_keys")
"""Work counters in `HFEngine.stats`: prompt tokens computed (not reused), decoded tokens, prompt
tokens whose K/V came from the prefix cache, positions whose logits were computed, and the sum over
computed tokens of the keys each attended to (for FLOP counts)."""


def keep_freed_memory() -> None:
    """glibc: serve tensors up to 1 GiB from the heap and trim it only above 1 GiB free (process-wide)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD


def resolve_dtype(name: str, device: torch.device | None = None) -> torch.dtype:
    from ..train.policy import bf16_supported

    if name == "auto":
        if device is not None and device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if bf16_supported() else torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def resolve_device(name: str) -> torch.device:
    """`engine.hf.device` as a torch device (`cuda` pinned to the current CUDA device); a UserError
    naming the device and the ones available when it is malformed, not CPU/CUDA, or not present."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    available = ", ".join(["cpu", *(f"cuda:{i}" for i in range(n))])
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index not in (None, 0)):
        raise UserError(f"engine.hf.device={name!r} is not a device the hf engine runs on: use cpu, cuda or cuda:N "
                        f"(available here: {available})")
    if device.type == "cpu":
        return torch.device("cpu")
    index = torch.cuda.current_device() if n and device.index is None else device.index
    if not n or index >= n:
        seen = f"only {n} CUDA device(s)" if n else "no CUDA device"
        raise UserError(f"engine.hf.device={name!r}, but torch {torch.__version__} sees {seen} "
                        f"(available here: {available})")
    return torch.device("cuda", index)


@dataclass
class _Request:
    prompt: list[int]
    params: SamplingParams
    prompt_index: int
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = ""
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None  # set when the batch this request was in failed
    cached: int = 0  # tokens whose K/V are in this request's row
    blocks: list = field(default_factory=list)  # prefix-cache blocks matched at admission

    @property
    def pending(self) -> int:
        return self.generated[-1]


class HFEngine:
    """See the module docstring."""

    def __init__(self, model_path: str | Path, cfg: HFEngineConfig | None = None, tokenizer: Any = None):
        from ..models import load_model, load_tokenizer

        self.cfg = cfg or HFEngineConfig()
        self.device = resolve_device(self.cfg.device)
        if self.cfg.keep_freed_memory:
            keep_freed_memory()
        self.dtype = resolve_dtype(self.cfg.dtype, self.device)
        self.tokenizer = tokenizer or load_tokenizer(model_path)
        # fp32 master copy on the engine's device: `update_weights` loads into it, the weights are cut from it
        self.model = load_model(model_path, dtype=torch.float32).to(self.device)
        self.weights: DecoderWeights = extract_weights(self.model, self.dtype)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.context = int(getattr(self.model.config, "max_position_embeddings", 4096))
        self.vocab = int(self.weights.embed.shape[0])
        self.prefix = PrefixCache(self.cfg.block, self.cfg.prefix_cache_mb << 20)
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._kv: torch.Tensor | None = None
        self._queue_lock = threading.Lock()
        self._driver = threading.Lock()
        self.stats = dict.fromkeys(STATS, 0)

    # -- public API ---------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        relieve_pressure()  # jemalloc with decay off keeps freed buffers (allocator.py)
        reqs = [_Request(list(p), params, i, _generator(params.seed, i, j))
                for i, p in enumerate(prompts) for j in range(params.n)]
        for p in prompts:
            self._check_prompt(p)
        with self._queue_lock:
            self._waiting.extend(reqs)
        # Whichever caller holds the driver lock steps the shared batch for everyone; the others wait
        # for their requests to finish (or for their turn to drive, once the driver's are done).
        while not all(r.done.is_set() for r in reqs):
            if self._driver.acquire(timeout=0.005):
                try:
                    while not all(r.done.is_set() for r in reqs):
                        self._iterate()
                except BaseException as e:
                    self._fail_all(e)
                    raise
                finally:
                    self._driver.release()
        failed = next((r.error for r in reqs if r.error is not None), None)
        if failed is not None:
            raise RuntimeError(f"generation failed in a batch shared with another caller: {failed!r}") from failed
        return [self._completion(r) for r in reqs]

    def _check_prompt(self, prompt: list[int]) -> None:
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.context:
            raise ValueError(f"a prompt of {len(prompt)} tokens leaves no room in the model's context of {self.context}")
        if min(prompt) < 0 or max(prompt) >= self.vocab:
            raise ValueError(f"prompt token ids must lie in [0, {self.vocab}), got {min(prompt)}..{max(prompt)}")

    def _fail_all(self, error: BaseException) -> None:
        """Release every caller waiting on the batch that just failed, and start from an empty batch."""
        with self._queue_lock:
            stranded = self._running + list(self._waiting)
            self._running, self._waiting = [], deque()
        for r in stranded:
            r.error = error
            r.done.set()

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        """Load new weights (trainer names, any dtype, any device: copied onto the engine's) and drop the
        prefix cache."""
        with self._driver:
            new = {k: v.detach().to(self.device, torch.float32) for k, v in state_dict.items()}
            missing, _ = self.model.load_state_dict(new, strict=False)
            del new
            tied = set(getattr(self.model, "all_tied_weights_keys", None) or {})
            if set(missing) - tied:  # extra trainer-side keys (a value head) are fine; missing weights are not
                raise ValueError(f"update_weights: {len(set(missing) - tied)} of the model's weights are missing, "
                                 f"e.g. {sorted(set(missing) - tied)[:3]}")
            self.weights = extract_weights(self.model, self.dtype)
            self.prefix.clear()

    def clear_cache(self) -> None:
        """Forget cached prefixes (a training run does this each iteration, so that resuming from a
        checkpoint, with its empty cache, samples exactly what the uninterrupted run sampled). The K/V
        buffer goes too when idle: masked keys still enter the attention sums, so a buffer grown by
        earlier iterations changes logprobs in the last bit."""
        with self._driver:
            self.prefix.clear()
            if not self._running:
                self._kv = None

    def close(self) -> None:
        self._kv = None
        self.prefix.clear()

    # -- one scheduler iteration ----------------------------------------------------------------------

    @torch.inference_mode()
    def _iterate(self) -> None:
        admitted = self._admit()
        if admitted:
            self._prefill(admitted)
            self._retire()
        if self._running:
            self._decode()
            self._retire()

    def _admit(self) -> list[_Request]:
        """Move waiting requests into free rows; defer those whose uncached prefix an earlier
        admitted request of this wave is about to compute."""
        admitted: list[_Request] = []
        computing: set[int] = set()
        deferred: list[_Request] = []
        with self._queue_lock:
            while self._waiting and len(self._running) + len(admitted) < self.cfg.max_batch:
                r = self._waiting.popleft()
                keys = self.prefix.keys(r.prompt[: len(r.prompt) - 1])
                r.blocks = self.prefix.match(r.prompt, len(r.prompt) - 1)
                hit = len(r.blocks)
                if hit < len(keys) and keys[hit] in computing:
                    deferred.append(r)
                    continue
                computing.update(keys[hit:])
                admitted.append(r)
            self._waiting.extendleft(reversed(deferred))
        if admitted:
            self._ensure_capacity(len(self._running) + len(admitted),
                                  max(len(r.prompt) + r.params.max_tokens for r in admitted))
            self._running.extend(admitted)
        return admitted

    def _ensure_capacity(self, rows: int, length: int) -> None:
        """Room for `rows` rows of `length` tokens. A longer buffer is at least twice the old one (up to the
        context): chat prompts grow every turn, and growing to the next block re-allocated and copied the
        whole buffer (1-2 GB for SmolLM2's 16 rows) at nearly every turn of a rollout, leaving freed buffers
        of growing size behind. Attention reads only the used length, so spare capacity costs memory, not
        time."""
        w = self.weights
        block = self.cfg.block
        cap = -(-length // block) * block
        kv = self._kv
        if kv is not None and kv.shape[2] >= rows and kv.shape[4] >= cap:
            return
        old_cap = kv.shape[4] if kv is not None else 0
        new_rows = max(rows, kv.shape[2] if kv is not None else 0)
        new_cap = max(cap, min(2 * old_cap, -(-self.context // block) * block))
        # zeros, not empty: masked keys still enter q.k, and uninitialised memory can hold NaN
        fresh = torch.zeros(len(w.layers), 2, new_rows, w.n_kv, new_cap, w.head_dim, dtype=self.dtype,
                            device=self.device)
        if kv is not None and self._running:
            n = len(self._running)
            fresh[:, :, :n, :, : kv.shape[4]] = kv[:, :, :n]
        self._kv = fresh

    def _prefill(self, admitted: list[_Request]) -> None:
        base = len(self._running) - len(admitted)
        for r_i, r in enumerate(admitted):
            for b, block in enumerate(r.blocks):
                self._kv[:, :, base + r_i, :, b * self.cfg.block:(b + 1) * self.cfg.block] = block
            r.cached = len(r.blocks) * self.cfg.block
            r.blocks = []
            self.stats["reused_tokens"] += r.cached
        for lo, hi in self._chunks(admitted):
            chunk = admitted[lo:hi]
            new = [r.prompt[r.cached:] for r in chunk]
            ids = torch.zeros(len(chunk), max(len(t) for t in new), dtype=torch.long)
            for i, t in enumerate(new):
                ids[i, : len(t)] = torch.tensor(t)
            start = torch.tensor([r.cached for r in chunk])
            n = torch.tensor([len(t) for t in new])
            dev = self.device  # built on the CPU, then one copy each (a no-op on the CPU)
            hidden = forward(self.weights, self._kv, slice(base + lo, base + hi), ids.to(dev), start.to(dev),
                             n.to(dev))
            self.stats["prefill_tokens"] += int(n.sum())
            self.stats["attended_keys"] += sum(_triangle(r.cached, len(r.prompt)) for r in chunk)
            self.stats["logit_rows"] += len(chunk)
            for r in chunk:
                r.cached = len(r.prompt)
            self._sample(chunk, logits(self.weights, hidden))
        for r_i, r in enumerate(admitted):
            self.prefix.insert(r.prompt, self._kv[:, :, base + r_i], len(r.prompt))

    def _chunks(self, reqs: list[_Request]) -> list[tuple[int, int]]:
        out, lo, width = [], 0, 0
        heads = self.weights.n_heads
        for i, r in enumerate(reqs):
            t = len(r.prompt) - r.cached
            width = max(width, t)
            cost = (i - lo + 1) * heads * width * len(r.prompt)
            if i > lo and cost > self.cfg.prefill_budget:
                out.append((lo, i))
                lo, width = i, t
        out.append((lo, len(reqs)))
        return out

    def _decode(self) -> None:
        live = self._running
        ids = torch.tensor([[r.pending] for r in live])
        start = torch.tensor([r.cached for r in live])
        hidden = forward(self.weights, self._kv, slice(0, len(live)), ids.to(self.device), start.to(self.device),
                         torch.ones(len(live), dtype=torch.long, device=self.device))
        self.stats["decode_tokens"] += len(live)
        self.stats["attended_keys"] += int(start.sum()) + len(live)
        self.stats["logit_rows"] += len(live)
        for r in live:
            r.cached += 1
        self._sample(live, logits(self.weights, hidden))

    def _sample(self, reqs: list[_Request], logits_BV: torch.Tensor) -> None:
        tokens, logprobs = draw(logits_BV, [r.params for r in reqs], [r.generator for r in reqs])
        for r, tok, lp in zip(reqs, tokens.tolist(), logprobs.tolist(), strict=True):
            r.generated.append(tok)
            r.logprobs.append(lp)
            self._check_stop(r)

    def _check_stop(self, r: _Request) -> None:
        p = r.params
        if len(r.generated) < p.min_tokens:
            return
        if r.generated[-1] in self.eos_ids or r.generated[-1] in p.stop_token_ids:
            r.finish_reason = "stop"
        elif p.stop and any(s in self._tail_text(r, p.stop) for s in p.stop):
            r.finish_reason = "stop"
        elif len(r.generated) >= p.max_tokens or len(r.prompt) + len(r.generated) >= self.context:
            r.finish_reason = "length"
        else:
            return
        r.done.set()

    def _retire(self) -> None:
        """Drop finished rows, caching their K/V, and keep running rows contiguous."""
        i = 0
        while i < len(self._running):
            r = self._running[i]
            if not r.done.is_set():
                i += 1
                continue
            seq = r.prompt + r.generated
            self.prefix.insert(seq, self._kv[:, :, i], r.cached)
            last = len(self._running) - 1
            if i != last:
                n = self._running[last].cached
                self._kv[:, :, i, :, :n] = self._kv[:, :, last, :, :n]
                self._running[i] = self._running[last]
            self._running.pop()

    def _tail_text(self, r: _Request, stop: list[str]) -> str:
        """The decoded end of the completion, long enough to hold any stop string: a token decodes to
        at least one byte and a character is at most four, so 4 * len(stop) + 1 tokens cover it (a
        stop string that ended earlier would have stopped the request then)."""
        n = 4 * max(len(s) for s in stop) + 1
        return self.tokenizer.decode(r.generated[-n:], skip_special_tokens=False)

    def _text(self, r: _Request) -> str:
        ids = r.generated[:-1] if r.generated and r.generated[-1] in self.eos_ids else r.generated
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _completion(self, r: _Request) -> Completion:
        return Completion(token_ids=list(r.generated), logprobs=list(r.logprobs), finish_reason=r.finish_reason,
                          text=self._text(r), prompt_index=r.prompt_index)


def _triangle(cached: int, total: int) -> int:
    """Keys attended by the tokens at positions cached..total-1 (position p sees p + 1 keys)."""
    return (total * (total + 1) - cached * (cached + 1)) // 2


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = set()
    for src in (model.generation_config.eos_token_id, model.config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(src)
    return ids


def _generator(seed: int | None, i: int, j: int) -> torch.Generator:
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(zlib.crc32(f"{seed}/{i}/{j}".encode()))
    return g
