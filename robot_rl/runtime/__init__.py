"""The only layer that joins envs with policies and algorithms: rollouts, collection, training loops."""
