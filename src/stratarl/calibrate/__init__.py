"""STeCa (seed 003): Monte-Carlo step values, deviation detection, calibrated trajectories by
reflection, nDTW, and the weighted datasets D_c, D_s, D_e. See docs/calibrate.md."""
