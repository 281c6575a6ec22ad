"""Token selection for a batch of rows, each with its own temperature, top-p and random generator.

The log-probability returned for a token is always the model's raw log-softmax at temperature 1
(what the trainer recomputes), whatever temperature / top-p chose the token. Sampling is inverse-CDF
with one uniform draw per row from the row's own generator, so a request's tokens do not depend on
which other requests share its batch. The CDF is searched in two levels (sums of blocks of the
vocabulary, then one block) because a full-vocabulary `cumsum` is sequential and costs several
milliseconds per step for a 50k vocabulary on this CPU, while block sums vectorise.

Everything runs on the logits' device except the generators, which stay on the CPU: a row's uniform
draw is then the same number whichever device the engine runs on, and costs no kernel launch.
"""

from __future__ import annotations

import torch

from .base import SamplingParams

BLOCK = 256
"""Vocabulary entries per block of the two-level CDF search."""
TOP_P_CANDIDATES = 1024
"""Top-p looks for its nucleus among this many most likely tokens, sorting a row in full only when
they hold less than top_p of its mass (a per-row sort of a 50k vocabulary costs ~2 ms here)."""


def draw(logits_BV: torch.Tensor, params: list[SamplingParams],
         gens: list[torch.Generator | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and its log-probability: argmax rows where temperature is 0, sampled rows
    from softmax(logits / temperature) restricted to the top-p nucleus. `gens` are CPU generators;
    the results are on the logits' device."""
    logits_BV = logits_BV.float()
    dev = logits_BV.device
    max_B1 = logits_BV.amax(-1, keepdim=True)
    weights_BV = (logits_BV - max_B1).exp_()  # softmax at temperature 1, unnormalised
    lse_B = max_B1.squeeze(1) + weights_BV.sum(-1).log()
    tokens = torch.zeros(len(params), dtype=torch.long, device=dev)
    greedy = [i for i, p in enumerate(params) if p.temperature <= 0]
    rows = [i for i, p in enumerate(params) if p.temperature > 0]
    if greedy:  # max(dim) rather than argmax: same first-maximum index, 3x faster here
        tokens[greedy] = logits_BV[greedy].max(-1).indices
    if rows:
        sel = slice(None) if len(rows) == len(params) else rows  # no copies when every row samples
        w = _tempered(logits_BV[sel], max_B1[sel], weights_BV[sel], [params[i] for i in rows])
        u = torch.tensor([float(torch.rand(1, generator=gens[i])) for i in rows], device=dev)
        tokens[rows] = inverse_cdf(w, u)
    logprobs = logits_BV.gather(1, tokens[:, None]).squeeze(1) - lse_B
    return tokens, logprobs


def _tempered(logits_BV: torch.Tensor, max_B1: torch.Tensor, weights_BV: torch.Tensor,
              params: list[SamplingParams]) -> torch.Tensor:
    """Unnormalised sampling weights: softmax at each row's temperature, cut to its top-p nucleus."""
    if any(p.temperature != 1.0 for p in params):
        temps = torch.tensor([p.temperature for p in params], device=logits_BV.device)[:, None]
        weights_BV = ((logits_BV - max_B1) / temps).exp_()
    top_p = torch.tensor([p.top_p if 0 < p.top_p < 1 else 1.0 for p in params], device=logits_BV.device)
    cut = top_p < 1.0
    if bool(cut.any()):
        weights_BV[cut] = nucleus(weights_BV[cut], top_p[cut])
    return weights_BV


def nucleus(probs_BV: torch.Tensor, top_p_B: torch.Tensor) -> torch.Tensor:
    """Keep each row's smallest set of most likely tokens whose mass reaches top_p; zero the rest."""
    mass_B = top_p_B * probs_BV.sum(-1)
    vals, idx = probs_BV.topk(min(TOP_P_CANDIDATES, probs_BV.shape[1]), dim=-1)  # largest first
    out = _kept(probs_BV, vals, idx, mass_B)
    short = vals.sum(-1) < mass_B
    if bool(short.any()):  # the nucleus reaches past the candidates: sort those rows in full
        vals_s, idx_s = probs_BV[short].sort(dim=-1, descending=True)
        out[short] = _kept(probs_BV[short], vals_s, idx_s, mass_B[short])
    return out


def _kept(probs_BV: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, mass_B: torch.Tensor) -> torch.Tensor:
    keep = vals.cumsum(-1) - vals < mass_B[:, None]  # mass before a token is short of top_p: keep it
    return torch.zeros_like(probs_BV).scatter_(1, idx, vals * keep)


def inverse_cdf(weights_BV: torch.Tensor, u_B: torch.Tensor) -> torch.Tensor:
    """For each row, the first token whose cumulative weight exceeds u * total weight (u in [0, 1)).
    Tokens of zero weight are never chosen."""
    B, V = weights_BV.shape
    pad = (-V) % BLOCK
    w = torch.nn.functional.pad(weights_BV, (0, pad)).view(B, -1, BLOCK)  # [B, nb, BLOCK]
    block_cdf = w.sum(-1).cumsum(-1)  # [B, nb]
    target = u_B * block_cdf[:, -1]
    b = torch.searchsorted(block_cdf, target[:, None], right=True).squeeze(1).clamp(max=w.shape[1] - 1)
    before = torch.where(b > 0, block_cdf.gather(1, (b - 1).clamp(min=0)[:, None]).squeeze(1), 0.0)
    inner_cdf = w[torch.arange(B, device=w.device), b].cumsum(-1)  # [B, BLOCK]
    # rounding can put the target at (or past) the block's total: stay inside its positive mass
    within = torch.minimum(target - before, inner_cdf[:, -1] * (1 - 1e-6))
    j = torch.searchsorted(inner_cdf, within[:, None], right=True).squeeze(1).clamp(max=BLOCK - 1)
    return b * BLOCK + j
