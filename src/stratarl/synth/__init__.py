"""ASTRA data synthesis (seed 001; docs/synth.md) and the sandbox for untrusted, model-written code.

- `sandbox`: run untrusted Python in a contained child process (docs/security.md);
- `graph`, `servers`, `execute`, `trajectories`, `quality`: SFT trajectories from tool graphs;
- `qa`, `environments`: RL tool environments from QA decompositions;
- `teacher`: the optional OpenAI-compatible teacher; `pipeline`: both pipelines and their configs.
"""
