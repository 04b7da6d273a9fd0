"""The asynchronous split of an RL run: actors that act (in simulation or on robots over ROS 2) and commit
episodes to their own stores, a learner that ingests them and publishes versioned weights, an optional
inference node that batches the actors' decisions, and the backends that place them (local processes, Ray)."""
