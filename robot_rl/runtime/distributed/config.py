"""Settings of the asynchronous actor/learner split (``rl.backend`` and ``rl.distributed``)."""

from __future__ import annotations

from dataclasses import dataclass, field

BACKENDS = ("sync", "local", "ray")


@dataclass
class RayConfig:
    """Where the Ray backend (``rl.backend=ray``, ``pip install 'robot-rl[dist]'``) places the learner and actors."""

    address: str | None = None
    """An existing cluster (``ray://...`` or ``auto``); None: start a local one for this run and stop it after
    (dashboard off, token auth off so nothing is written to the home folder: it listens on this machine only)."""
    num_cpus: int | None = None
    """CPUs of the local cluster (None: this machine's)."""
    actor_cpus: float = 0.5
    """CPUs reserved per actor (Ray places actors where the resources are)."""
    learner_cpus: float = 1.0
    """CPUs reserved for the learner."""
    node_cpus: float = 0.0
    """CPUs reserved for the inference node (``rl.distributed.inference.node``); 0 by default because the actors
    it serves no longer run the policy themselves (raise it, or ``node_gpus``, where the node has its own)."""
    node_gpus: float = 0.0
    """GPUs reserved for the inference node (with ``rl.distributed.inference.device=cuda``)."""


@dataclass
class RobotLinkConfig:
    """Actors that drive robots over ROS 2 topics (``RosRobotEnv``: a real arm's stack or an ``EnvBridge``)
    instead of simulated envs: one actor per robot namespace, one env each, acting at the robot's rate."""

    namespaces: list[str] = field(default_factory=list)
    """Topic namespaces of the robots (e.g. ``[/robot]``); empty: the actors simulate their envs."""
    transport: str = "dds"
    """``dds`` (ROS 2 wire-compatible, no ROS install needed)."""
    domain_id: int | None = None
    """DDS domain (None: ``$ROS_DOMAIN_ID`` or 0)."""
    interface: str | None = None
    """Restrict discovery to one network interface (e.g. ``lo``)."""
    peers: list[str] | None = None
    """Unicast discovery peers (e.g. ``[127.0.0.1]``) where multicast is off."""
    image_transport: str = "raw"
    """``raw`` or ``jpeg``, as the robot publishes its cameras."""
    timeout_s: float = 10.0
    """An actor gives up on a robot that does not answer a reset or a step within this."""

    def transport_kwargs(self) -> dict:
        return {"domain_id": self.domain_id, "interface": self.interface, "peers": self.peers}


@dataclass
class InferenceConfig:
    """``rl.distributed.inference``: where the actors' policy runs."""

    node: bool = False
    """Serve every actor's decisions from one inference node process (batched across actors); False: each
    actor runs its own copy of the policy."""
    max_batch: int = 256
    """Observation windows per forward pass, at most."""
    max_wait_ms: float = 2.0
    """After the first request, how long the node waits for more to batch with it."""
    timeout_ms: float = 1000.0
    """An actor that has no answer within this acts with its own copy of the policy."""
    device: str = "cpu"
    """Where the node runs the policy (``cuda`` on a GPU machine)."""

    def validate(self) -> None:
        if self.max_batch < 1 or self.max_wait_ms < 0 or self.timeout_ms <= 0:
            raise ValueError(f"inference: max_batch >= 1, max_wait_ms >= 0 and timeout_ms > 0, got "
                             f"{self.max_batch}, {self.max_wait_ms}, {self.timeout_ms}")


@dataclass
class DistributedConfig:
    """How actors and the learner run apart (``rl.backend=local``)."""

    actors: int = 2
    """Actor processes, each acting in its own envs and committing to its own store."""
    envs_per_actor: int | None = None
    """Envs per actor (None: ``rl.num_envs`` split evenly over the actors)."""
    publish_every: int = 25
    """Learner updates between two published weight versions."""
    max_update_debt: int = 2000
    """A learner slower than ``rl.chunk.utd`` x env steps drops the updates it owes beyond this many (it does
    not fall behind without bound); a faster one waits for data (it does not overfit a slow robot)."""
    restarts: int = 5
    """Times one actor is restarted after it dies before the run stops with its exit code."""
    poll_s: float = 0.05
    """Learner's sleep when it has neither new episodes nor updates to run."""
    max_backlog: int | None = 4
    """An actor waits while this many of its committed episodes are not yet ingested by the learner, so a
    simulated actor does not run ahead of a learner that shares its CPU. None: never wait (a real arm acts
    at its control rate whatever the learner does)."""
    max_policy_lag: int = 4
    """ReinFlow/DPPO: an episode acted with weights more than this many versions older than the learner's is
    dropped (the rest of the staleness is corrected with clipped importance ratios)."""
    keep_versions: int = 3
    """Published weight files kept on disk (actors take the newest)."""
    ray: RayConfig = field(default_factory=RayConfig)
    robot: RobotLinkConfig = field(default_factory=RobotLinkConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def validate(self, num_envs: int) -> None:
        self.inference.validate()
        if self.max_backlog is not None and self.max_backlog < 1:
            raise ValueError(f"distributed.max_backlog must be >= 1 or None, got {self.max_backlog}")
        if self.max_policy_lag < 0:
            raise ValueError(f"distributed.max_policy_lag must be >= 0, got {self.max_policy_lag}")
        if self.actors < 1 or self.publish_every < 1 or self.max_update_debt < 1 or self.restarts < 0:
            raise ValueError("distributed: actors, publish_every, max_update_debt >= 1 and restarts >= 0, got "
                             f"{self.actors}, {self.publish_every}, {self.max_update_debt}, {self.restarts}")
        if self.ray.node_cpus < 0 or self.ray.node_gpus < 0:
            raise ValueError(f"distributed.ray: node_cpus and node_gpus must be >= 0, got {self.ray.node_cpus}, "
                             f"{self.ray.node_gpus}")
        if self.ray.actor_cpus <= 0 or self.ray.learner_cpus <= 0:
            raise ValueError(f"distributed.ray: actor_cpus and learner_cpus must be > 0, got {self.ray.actor_cpus}, "
                             f"{self.ray.learner_cpus}")
        if self.robot.namespaces and self.robot.timeout_s <= 0:
            raise ValueError(f"distributed.robot.timeout_s must be > 0, got {self.robot.timeout_s}")
        if self.robot.namespaces and self.robot.transport != "dds":
            raise ValueError(f"distributed.robot.transport must be 'dds' (actors are other processes), got "
                             f"{self.robot.transport!r}")
        if len(set(self.robot.namespaces)) != len(self.robot.namespaces):
            raise ValueError(f"distributed.robot.namespaces must not repeat, got {self.robot.namespaces}")
        if not self.robot.namespaces and self.envs_per(num_envs) < 1:
            raise ValueError(f"distributed: {self.actors} actors need at least one env each, got rl.num_envs="
                             f"{num_envs}")

    def envs_per(self, num_envs: int) -> int:
        return self.envs_per_actor if self.envs_per_actor is not None else num_envs // self.actors
