"""Supervised fine-tuning: `stratarl sft CONFIG`, and the warm-up stage of `stratarl train`.

Data sources (`data.source`):
- `gold`: the env's gold action sequences replayed through the agent's own prompts
  (`rollout.expert`), optionally with warm-up strategies built from the first observation only;
- `trajectories`: a JSONL file of `Trajectory` records — rows use their recorded token ids, and
  records without ids (e.g. `stratarl envs gold` output) are replayed like `gold`;
- `messages`: a JSONL file of OpenAI-format conversations (`{"messages": [...]}`); the loss is on
  assistant turns, plus tool/user observations after the first user turn when `mask_observations`
  is false (AutoCoA stage 3: an implicit world model).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
import torch

from ..agent.format import AgentFormat, FormatKeys, format_of
from ..agent.prompts import PromptConfig
from ..algos.losses import sft_loss
from ..allocator import relieve_pressure
from ..envs.gold import random_actions
from ..envs.pool import EnvPool
from ..envs.registry import check_task_counts, get_spec, make_env, make_tasks
from ..errors import UserError
from ..rollout.rename import Lens, LensPool, renamed, seen, taken_entities
from ..types import Sample, Task, Trajectory, Turn, from_dict
from .batching import collate, micro_batches
from .policy import bf16_supported, forward
from .samples import pack_samples


@dataclass
class SFTDataConfig:
    """Where SFT rows come from."""

    source: Literal["gold", "trajectories", "messages"] = "gold"
    """`gold` (env expert paths), `trajectories` (Trajectory JSONL) or `messages` (OpenAI chat JSONL)."""
    env: str = "twx:cookingworld"
    """Environment id for `gold`."""
    split: str = "train"
    """Split for `gold`."""
    tasks: int = 200
    """Number of gold episodes."""
    start: int = 0
    """First task index for `gold`."""
    path: str = ""
    """JSONL file for `trajectories` / `messages`."""
    strategies: bool = False
    """Attach a warm-up strategy to each gold episode (from the task text and first observation only)."""
    actions: Literal["gold", "random"] = "gold"
    """`gold`: the expert's actions; `random`: as many uniformly random admissible actions (seeded) —
    rows that teach the reply format and the action vocabulary but not which action helps, so that RL
    starts near chance (the learning-sanity ladder, docs/sanity.md)."""
    rename: float = 0.0
    """`gold`: share of the episodes whose ingredients the agent sees under other names (drawn from what the
    same gold paths take), consistently in every text it reads and every action it writes, while the real
    game runs underneath (`rollout/rename.py`): rows where only the recipe and the room say what to take,
    cut and cook, not a remembered ingredient. CookingWorld-style games (names are what `take` actions take)."""
    methods: float = 0.0
    """`gold`: share of the episodes whose cooking methods (roast/oven, fry/stove, grill/toaster) and cuts
    (slice, chop, dice) the agent sees permuted, each method's words together and the real game underneath
    (`rollout/rename.py`): TextWorldExpress's folds fix each ingredient's preparation (chicken leg: grilled
    in every train game, roasted in every test game), so only rows like these make the recipe's directions
    the one predictor of the cut and the appliance. CookingWorld."""
    furniture: float = 0.0
    """`gold`: share of the episodes whose furniture that some folds lack the agent sees under another name
    (`rollout/rename.FURNITURE`: the kitchen cupboard, in 98% of train kitchens and no test kitchen, seen as a
    pantry, a cabinet, ...), the real game underneath: rows where only the room and the admissible list say
    which containers there are to open. CookingWorld."""
    containers: float = 0.0
    """`gold`: share of the episodes whose kitchen containers the agent sees renamed among themselves and
    `rollout/rename.ALIASES` (`draw_containers`): no container's name says what it holds. CookingWorld."""
    focus_draws: int = 0
    """`gold`: this many more replays of every gold episode, each under freshly drawn lenses (`rename`,
    `methods`), keeping only the steps whose action names an ingredient the episode's gold path takes —
    taking, cutting and cooking it, the actions only the recipe and the room decide — without strategy turns
    or detours. One such decision per seven steps is too sparse a signal for the tiny model to learn to read
    the recipe; with these rows it does (docs/results.md). Meant for window prompts (`prompt.mode: window`,
    `keep: [read]`), where each step is its own short row."""
    detours: float = 0.0
    """`gold`: probability, before each gold action, of first taking a wrong action the env refuses (an
    earlier or later action of the same gold path that is not admissible then), shown and untrained: rows
    that teach what to do after an invalid action (`rollout/expert.py`)."""


@dataclass
class SFTConfig:
    """`stratarl sft`: supervised fine-tuning."""

    format_keys: ClassVar[FormatKeys] = FormatKeys(model=("model",), prompt="prompt", strategy="data.strategies")
    """Where the agent format lives: taken from a starting checkpoint's `agent.json`, recorded in the checkpoint."""
    name: str = "sft"
    """Run name: output goes to `<out_dir>/<name>/`."""
    out_dir: str = "runs"
    """Where runs are written."""
    seed: int = 0
    """Seed of shuffling."""
    model: str = "tiny"
    """Model name or checkpoint directory to start from."""
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    """The data."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """Prompt layout (must match the one used at RL/evaluation time)."""
    max_steps: int = 60
    """Longest expert episode replayed."""
    epochs: int = 3
    """Passes over the rows."""
    lr: float = 5e-4
    """Peak learning rate (AdamW), with linear decay to 10% over the run."""
    warmup_steps: int = 10
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    batch_rows: int = 32
    """Rows per optimizer step."""
    micro_batch_tokens: int = 16384
    """Padded tokens per micro-batch."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    mask_observations: bool = True
    """Train on the model's turns only (True) or on the observations after its first turn too (False:
    AutoCoA stage 3's implicit world model; every observation is then a copy example)."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """bf16 autocast."""
    workers: int | None = None
    """Env workers for `gold` replays."""


def use_bf16(flag: str) -> bool:
    return flag == "on" or (flag == "auto" and bf16_supported())


# -- rows ------------------------------------------------------------------------------------------


def gold_trajectories(cfg: SFTConfig, tokenizer: Any, rcfg: Any) -> list[Trajectory]:
    """Expert episodes replayed through the agent's prompts (see module docstring), then the
    `data.focus_draws` replays of the steps that act on an ingredient."""
    if not get_spec(cfg.data.env.split("?")[0]).has_expert:
        raise UserError(f"{cfg.data.env} has no gold action sequences")
    tasks = make_tasks(cfg.data.env, cfg.data.split, n=cfg.data.tasks, start=cfg.data.start)
    with EnvPool(num_workers=cfg.workers) as pool:
        plans = [pool.expert_actions(t) or [] for t in tasks]
        if cfg.data.actions == "random":
            plans = random_plans(tasks, [len(p) for p in plans], random.Random(cfg.seed))
        trajs = _replay(cfg, tokenizer, rcfg, pool, tasks, plans, cfg.seed, cfg.data.strategies, cfg.data.detours)
        # each draw's seed clears the base replay's seed, seed + 1 and seed + 2 (strategies, detours, lenses)
        for draw in range(1, cfg.data.focus_draws + 1):
            trajs += [focused(t) for t in _replay(cfg, tokenizer, rcfg, pool, tasks, plans, cfg.seed + 10 * draw,
                                                  False, 0.0)]
        return trajs


def _replay(cfg: SFTConfig, tokenizer: Any, rcfg: Any, pool: Any, tasks: list[Task], plans: list[list[str]], seed: int,
            strategies: bool, detours: float) -> list[Trajectory]:
    """One replay of every plan, seen through lenses drawn from `seed` (`data.rename`, `data.methods`,
    `data.furniture`, `data.containers`)."""
    from ..rollout.expert import expert_episodes, warmup_strategy

    relabel = max(cfg.data.rename, cfg.data.methods, cfg.data.furniture, cfg.data.containers) > 0
    firsts = pool.reset(tasks) if strategies or relabel else []
    pool.release(r.episode for r in firsts)
    lenses: dict[str, Lens] = {}
    if relabel:  # the agent's view: some episodes' ingredients, methods or containers renamed (rollout/rename.py)
        lenses, plans = renamed(tasks, plans, cfg.data.rename, random.Random(seed + 2), [r.observation for r in firsts],
                                cfg.data.methods, cfg.data.furniture, cfg.data.containers)
        firsts = [seen(r, lenses.get(t.uid, Lens({}))) for t, r in zip(tasks, firsts, strict=True)]
    texts = None
    if strategies:
        rng = random.Random(seed)
        texts = [warmup_strategy(r.info.get("task_description", ""), r.observation, rng) for r in firsts]
    return expert_episodes(tokenizer, LensPool(pool, lenses) if lenses else pool, tasks, plans, rcfg, texts,
                           detours=detours, rng=random.Random(seed + 1))


def focused(traj: Trajectory) -> Trajectory:
    """`traj` with only the steps whose action names an ingredient its gold path takes (take, cut, cook: what
    only the recipe and the room decide) and no strategy turn: the rows of `data.focus_draws`."""
    names = taken_entities([s.action for s in traj.steps])
    steps = [s for s in traj.steps if any(re.search(rf"\b{re.escape(n)}\b", s.action) for n in names)]
    return dataclasses.replace(traj, steps=steps, strategy=None)


def random_plans(tasks: list[Task], lengths: list[int], rng: random.Random) -> list[list[str]]:
    """For each task, as many random admissible actions as its gold path has (`data.actions: random`)."""
    env = make_env(tasks[0]) if tasks else None
    try:
        return [random_actions(env, t, n, rng) for t, n in zip(tasks, lengths, strict=True)]
    finally:
        if env is not None:
            env.close()


def trajectory_rows(trajs: list[Trajectory], weight: float = 1.0, observations: bool = False) -> list[Sample]:
    """One SFT row per valid step and per strategy turn, from the recorded ids. An invalid step's reply
    is context, not a target: it has no row (in chat mode it is part of the next step's prompt).
    `observations`: in chat mode the env's answers after the first step (their turn markup included) are
    trained too, an invalid step's reply still not (`observation_spans`)."""
    rows = []
    for t in trajs:
        spans = observation_spans(t) if observations else []
        turns: list[tuple[Turn, int]] = [(t.strategy, -1)] if t.strategy else []
        turns += [(s, i) for i, s in enumerate(t.steps) if s.valid]
        for turn, idx in turns:
            if turn.prompt_ids and turn.response_ids:
                n = len(turn.prompt_ids)
                mask = [0] * n + [1] * len(turn.response_ids)
                for lo, hi in spans if idx >= 0 else ():
                    if hi <= n:
                        mask[lo:hi] = [1] * (hi - lo)
                rows.append(Sample(input_ids=list(turn.prompt_ids) + list(turn.response_ids), loss_mask=mask,
                                   weight=weight, uid=t.uid, step_index=idx, kind="action" if idx >= 0 else "strategy"))
    return rows


def observation_spans(t: Trajectory) -> list[tuple[int, int]]:
    """[lo, hi) of each env answer in the chat conversation: what step k's prompt adds after step k − 1's
    prompt and reply (k ≥ 1). Empty where prompts do not extend each other (window mode)."""
    spans = []
    for prev, cur in itertools.pairwise(t.steps):
        end = len(prev.prompt_ids) + len(prev.response_ids)
        if len(cur.prompt_ids) <= end or cur.prompt_ids[:end] != list(prev.prompt_ids) + list(prev.response_ids):
            return []
        spans.append((end, len(cur.prompt_ids)))
    return spans


def message_rows(path: Path, tokenizer: Any, mask_observations: bool) -> list[Sample]:
    """Rows from OpenAI-format conversations: each message's tokens are the difference between the
    template rendered up to it and up to the one before."""
    rows = []
    for n, line in enumerate(path.read_bytes().splitlines()):
        if not line.strip():
            continue
        msgs = orjson.loads(line).get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise UserError(f"{path}:{n + 1}: each line needs a non-empty 'messages' list")
        ids, mask, seen_user = [], [], False
        for i, m in enumerate(msgs):
            upto = tokenizer(tokenizer.apply_chat_template(msgs[: i + 1], tokenize=False), add_special_tokens=False)["input_ids"]
            piece = upto[len(ids):]
            trained = m["role"] == "assistant" or (not mask_observations and seen_user and m["role"] in ("user", "tool"))
            seen_user = seen_user or m["role"] == "user"
            ids += piece
            mask += [int(trained)] * len(piece)
        rows.append(Sample(input_ids=ids, loss_mask=mask, uid=f"{path.name}:{n}", kind="sft"))
    return rows


def load_rows(cfg: SFTConfig, tokenizer: Any, rcfg: Any) -> tuple[list[Sample], list[Trajectory]]:
    src = cfg.data.source
    if src == "gold":
        trajs = gold_trajectories(cfg, tokenizer, rcfg)
        return pack_samples(trajectory_rows(trajs, observations=not cfg.mask_observations)), trajs
    path = Path(cfg.data.path)
    if not path.is_file():
        raise UserError(f"SFT data file not found: {path}")
    if src == "messages":
        return message_rows(path, tokenizer, cfg.mask_observations), []
    trajs = [from_dict(Trajectory, orjson.loads(ln)) for ln in path.read_bytes().splitlines() if ln.strip()]
    return pack_samples(trajectory_rows(trajs, observations=not cfg.mask_observations)), trajs


# -- training --------------------------------------------------------------------------------------


@dataclass
class SFTStats:
    """What an SFT run did."""

    rows: int
    """Training rows."""
    tokens: int
    """Trained tokens per epoch."""
    steps: int
    """Optimizer steps."""
    first_loss: float
    """Mean loss of the first optimizer steps."""
    last_loss: float
    """Mean loss of the last optimizer steps."""
    seconds: float
    """Wall time."""


RowLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""f(logp_BT, mask_BT, weights_B) -> the loss of one micro-batch (micro-batch results add up)."""
BatchLoss = Callable[[list[Sample]], RowLoss]
"""Given the rows of one mini-batch, the loss of its micro-batches (it may use mini-batch totals)."""


def token_mean_loss(batch: list[Sample]) -> RowLoss:
    """The default: weighted NLL, token-mean over the mini-batch's trained tokens (`sft_loss`)."""
    totals = {"total_tokens": float(sum(sum(s.loss_mask) for s in batch)) or 1.0}
    return lambda logp_BT, mask_BT, weights_B: sft_loss(logp_BT, mask_BT, weights_B, "token-mean", **totals)


def train_rows(model: torch.nn.Module, rows: list[Sample], cfg: SFTConfig, pad_id: int,
               progress: Any = None, loss: BatchLoss = token_mean_loss) -> SFTStats:
    """AdamW over `rows` for `cfg.epochs` epochs (seeded shuffles), exact gradient accumulation; `loss`
    gives each mini-batch's objective (default: token-mean NLL; STeCa passes `steca_batch_loss`)."""
    if not rows:
        raise UserError("no SFT rows: the data produced no trainable tokens")
    t0 = time.time()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = -(-len(rows) // cfg.batch_rows)
    total = per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)) * max(0.1, 1 - s / total))
    gen = torch.Generator().manual_seed(cfg.seed)
    bf16, losses = use_bf16(cfg.bf16), []
    task = progress.add_task("SFT", total=total, status="") if progress else None
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(rows), generator=gen).tolist()
        for lo in range(0, len(rows), cfg.batch_rows):
            losses.append(_sft_step(model, opt, [rows[i] for i in order[lo:lo + cfg.batch_rows]], cfg, pad_id, bf16,
                                    loss))
            sched.step()
            if progress:
                progress.update(task, advance=1, status=f"loss {losses[-1]:.3f}")
    model.eval()
    k = max(1, min(10, len(losses) // 5))
    return SFTStats(rows=len(rows), tokens=sum(sum(r.loss_mask) for r in rows), steps=len(losses),
                    first_loss=sum(losses[:k]) / k, last_loss=sum(losses[-k:]) / k, seconds=time.time() - t0)


def accumulate_gradients(model: torch.nn.Module, batch: list[Sample], micro_batch_tokens: int, pad_id: int,
                         bf16: bool, loss: BatchLoss = token_mean_loss) -> float:
    """Zero the gradients, then backward the mini-batch's loss micro-batch by micro-batch; returns the loss."""
    batch = sorted(batch, key=lambda s: s.num_tokens)
    row_loss = loss(batch)
    model.zero_grad(set_to_none=True)
    total = 0.0
    for chunk in micro_batches(batch, micro_batch_tokens):
        b = collate(chunk, pad_id)
        out = forward(model, b, bf16=bf16)
        value = row_loss(out.logp_BT, b.loss_mask_BT, b.weights_B.to(out.logp_BT.dtype))
        value.backward()
        relieve_pressure()  # see allocator.py
        total += float(value.detach())
    return total


def _sft_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: list[Sample], cfg: SFTConfig, pad_id: int,
              bf16: bool, loss: BatchLoss = token_mean_loss) -> float:
    total = accumulate_gradients(model, batch, cfg.micro_batch_tokens, pad_id, bf16, loss)
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return total


def trained_format(cfg: SFTConfig, trajs: list[Trajectory]) -> AgentFormat:
    """The format SFT taught: the configured prompts, with a strategy where the rows had one; conversations
    from a `messages` file are in their own format."""
    if cfg.data.source == "messages":
        return AgentFormat(protocol="messages")
    fmt = format_of(cfg)
    if cfg.data.source == "trajectories":
        fmt.strategy = any(t.strategy is not None for t in trajs)
    return fmt


def run_sft(cfg: SFTConfig, console: Any = None) -> Path:
    """`stratarl sft`: train and write `<out_dir>/<name>/checkpoints/final` (HF format)."""
    from ..config import to_dict
    from ..models import load_model, load_tokenizer, resolve_model
    from ..rollout.runner import RunnerConfig
    from .checkpoint import save_checkpoint
    from .logging import progress as make_progress

    if cfg.data.source == "gold":
        check_task_counts((cfg.data.env, cfg.data.split, cfg.data.tasks, cfg.data.start))
    path = resolve_model(cfg.model)
    tokenizer, model = load_tokenizer(path), load_model(path)
    rcfg = RunnerConfig(max_steps=cfg.max_steps, prompt=cfg.prompt, context=model.config.max_position_embeddings)
    rows, trajs = load_rows(cfg, tokenizer, rcfg)
    with make_progress(console) as prog:
        stats = train_rows(model, rows, cfg, tokenizer.pad_token_id, prog)
    run_dir = Path(cfg.out_dir) / cfg.name
    out = save_checkpoint(run_dir, "final", model, tokenizer, {"sft_stats": stats.__dict__, "config": to_dict(cfg)},
                          agent=trained_format(cfg, trajs))
    if console:
        console.print(f"SFT: {stats.rows} rows, {stats.steps} steps, loss {stats.first_loss:.3f} -> {stats.last_loss:.3f} "
                      f"in {stats.seconds:.0f}s; checkpoint {out}")
    return out
