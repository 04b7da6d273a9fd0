"""Losses and update steps on batches, never an env: BC, the PPO core (GAE, clipping), ReinFlow and DPPO, the
off-policy chunk learner (a Q-ensemble over action chunks, noise-space steering, a bounded residual,
best-of-N) and the reward combinations they learn from."""
