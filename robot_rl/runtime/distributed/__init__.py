"""The asynchronous split of an RL run: actors that act (in simulation or on robots over ROS 2) and commit
episodes to their own stores, a learner that ingests them and publishes versioned weights, an optional
inference node that batches the actors' decisions, and the backends that place them (local processes, Ray)."""


def launch(trainer):
    """Run ``trainer`` (a ChunkRLTrainer, or an RLTrainer of ReinFlow/DPPO) on its ``rl.backend``: ``local``
    processes or ``ray`` actors."""
    if trainer.cfg.backend == "ray":
        from robot_rl.runtime.distributed.ray_backend import run_ray

        return run_ray(trainer)
    from robot_rl.runtime.distributed.learner import run_local

    return run_local(trainer)
