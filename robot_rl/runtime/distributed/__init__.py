"""The asynchronous split of an RL run: actors that act and commit episodes to their own stores, a learner
that ingests them and publishes versioned weights, and the backends that place them (local processes)."""
