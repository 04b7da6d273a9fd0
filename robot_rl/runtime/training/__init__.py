"""The training loops of one process: collection, pre-training, progress-critic training, RL fine-tuning
(on-policy PPO and the off-policy chunk learner), evaluation, and the job that chains them."""
