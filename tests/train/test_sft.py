"""SFT rows from gold episodes: packed chat rows, observation tokens in the loss on request, detours."""

from stratarl.agent.prompts import PromptConfig
from stratarl.rollout.runner import RunnerConfig
from stratarl.train.sft import SFTConfig, SFTDataConfig, load_rows

ENV = "twx:cookingworld?numLocations=1&numIngredients=1&numDistractorItems=0"


def _rows(tiny_tokenizer, mask_observations: bool):
    prompt = PromptConfig(mode="chat")
    cfg = SFTConfig(data=SFTDataConfig(env=ENV, tasks=2), prompt=prompt, mask_observations=mask_observations)
    rows, trajs = load_rows(cfg, tiny_tokenizer, RunnerConfig(max_steps=60, prompt=prompt, context=4096))
    return rows, trajs


def test_observations_enter_the_loss_after_the_first_action_only(tiny_tokenizer):
    actions, trajs = _rows(tiny_tokenizer, True)
    world, _ = _rows(tiny_tokenizer, False)
    assert len(actions) == len(world) == len(trajs) == 2  # one packed row per episode
    for a, w, t in zip(actions, world, trajs, strict=True):
        assert a.input_ids == w.input_ids
        first = a.loss_mask.index(1)
        assert first == len(t.steps[0].prompt_ids)  # the task and first observation stay out of the loss
        assert w.loss_mask == [0] * first + [1] * (len(w.loss_mask) - first)
        assert sum(a.loss_mask) == sum(len(s.response_ids) for s in t.steps)
        recipe = next(s.observation for s in t.steps if s.action == "read cookbook")
        trained = tiny_tokenizer.decode([i for i, m in zip(w.input_ids, w.loss_mask, strict=True) if m])
        assert recipe.strip() in trained and recipe.strip() not in tiny_tokenizer.decode(
            [i for i, m in zip(a.input_ids, a.loss_mask, strict=True) if m])


def test_detours_are_refused_shown_and_not_trained(tiny_tokenizer):
    """`data.detours`: wrong actions the env refuses appear in the conversation as the runtime shows them
    (invalid, then "Your last action was not valid."), never twice in a row, are not trained, and leave
    the gold path winning with the same trained tokens as without them."""
    prompt = PromptConfig(mode="chat")
    rcfg = RunnerConfig(max_steps=60, prompt=prompt, context=4096)
    plain, plain_trajs = load_rows(SFTConfig(data=SFTDataConfig(env=ENV, tasks=4), prompt=prompt), tiny_tokenizer, rcfg)
    rows, trajs = load_rows(SFTConfig(data=SFTDataConfig(env=ENV, tasks=4, detours=0.5), prompt=prompt),
                            tiny_tokenizer, rcfg)
    wrong = [(t, i) for t in trajs for i, s in enumerate(t.steps) if not s.valid]
    assert wrong and all(t.won for t in trajs)
    for t, p in zip(trajs, plain_trajs, strict=True):
        assert [s.action for s in t.steps if s.valid] == [s.action for s in p.steps]
    for t, i in wrong:
        s = t.steps[i]
        assert s.observation == f"Invalid action: '{s.action}' is not admissible. Nothing happened."
        assert t.steps[i + 1].valid  # the gold action follows
        nxt = tiny_tokenizer.decode(t.steps[i + 1].prompt_ids[len(s.prompt_ids) + len(s.response_ids):])
        assert "Your last action was not valid." in nxt
    trained = [tiny_tokenizer.decode([i for i, m in zip(r.input_ids, r.loss_mask, strict=True) if m]) for r in rows]
    assert trained == [tiny_tokenizer.decode([i for i, m in zip(r.input_ids, r.loss_mask, strict=True) if m]) for r in plain]


def test_observations_with_detours_train_the_answers_not_the_refused_replies(tiny_tokenizer):
    """`mask_observations=False` with detours: every env answer after the first step is trained (the
    refusal message included), a refused reply never is."""
    prompt = PromptConfig(mode="chat")
    rcfg = RunnerConfig(max_steps=60, prompt=prompt, context=4096)
    cfg = SFTConfig(data=SFTDataConfig(env=ENV, tasks=4, detours=0.5), prompt=prompt, mask_observations=False)
    rows, trajs = load_rows(cfg, tiny_tokenizer, rcfg)
    assert len(rows) == len(trajs) == 4
    for r, t in zip(rows, trajs, strict=True):
        first = len(t.steps[0].prompt_ids)
        refused = {j for s in t.steps if not s.valid
                   for j in range(len(s.prompt_ids), len(s.prompt_ids) + len(s.response_ids))}
        assert refused
        assert r.loss_mask == [0 if j < first or j in refused else 1 for j in range(len(r.loss_mask))]
