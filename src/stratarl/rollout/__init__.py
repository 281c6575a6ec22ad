"""Rollouts: the episode runner, the hierarchical group sampler, horizon schedules, and the
trajectory store."""
