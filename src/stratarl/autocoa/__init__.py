"""AutoCoA (seed 004): chain-of-action agent training on the search-QA env in five selectable stages.

    sft1     contrastive when-to-act pairs          (`data.when_to_act_pairs`, `stages.train_contrastive`)
    sft2     CoT+CoA SFT, observation tokens masked (`data.sft_rows(mask_observations=True)`)
    sft3     the same data, observations trained    (the implicit world model)
    rl_sim   GRPO in a simulated env: the policy writes each observation itself (`simulate`)
    rl_real  GRPO in the real `search:` env          (`simulate` with the BM25 env as observer)

One episode is one growing sequence in the seed's protocol:
`<think>…</think><action>search: Q</action><observation>…</observation>…<think>…</think><answer>A</answer>`.
`stratarl autocoa CONFIG` runs the configured stages (`pipeline.run_autocoa`); docs/autocoa.md is the guide.
"""
