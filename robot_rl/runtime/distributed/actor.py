"""An actor: one process that acts in its envs at their own pace with the newest published weights and
commits every finished episode to its own episode store. It never waits for the learner: weights are swapped
at chunk boundaries when a newer version is on disk, and the learner reads the store when it is ready."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import draccus
import numpy as np
import torch

from robot_rl.config import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.envs import get_task
from robot_rl.hil.metrics import EpisodeHelp, help_metrics
from robot_rl.hil.protocol import HelpSchedule, HILConfig
from robot_rl.policy import SteeredPolicy, load_policy
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.distributed.weights import WeightSubscriber
from robot_rl.runtime.training.chunk_replay import save_derived
from robot_rl.runtime.training.evaluate import ObservationWindows
from robot_rl.runtime.training.offpolicy import (
    ACTORS_DIR,
    build_featurizer,
    decide,
    derived_seed,
    featurizer_key,
    shipped_path,
)
from robot_rl.runtime.training.rl import TRAIN_SEED, RLConfig, run_wrap
from robot_rl.runtime.training.rollouts import EpisodeAssembler
from robot_rl.runtime.training.vec_env import ChunkVectorEnv

ACTOR_SEED_STRIDE = 1_000_003  # env seeds of different actors never meet


@dataclass
class ActorSpec:
    """What one actor process needs; plain data, so it crosses process (and Ray) boundaries."""

    run: str
    """The run folder: the policy to start from (``policy/``), the weights (``weights/``) and the stores."""
    actor_id: int
    env: dict[str, Any]
    """The EnvConfig as a dict."""
    num_envs: int = 8
    candidates: int = 8
    """Chunks sampled per decision, the best by the Q-ensemble executed (1: the policy's own sample)."""
    explore: float = 0.1
    seed: int = 0
    status_every_s: float = 2.0
    max_episodes: int | None = None
    """Stop after committing this many episodes in this life (tests); None: until told to stop."""
    max_backlog: int | None = None
    """Wait while this many committed episodes are not ingested by the learner (None: never wait)."""
    ship_features: bool = False
    """Compute the replay data of each episode (features, candidates, rewards) before committing it, so the
    learner takes it instead of computing it (only where the base and the critic stay frozen)."""
    algo: str = "chunk"
    """``chunk``: act with the steered policy (the off-policy learner); ``reinflow`` / ``dppo``: sample through the
    chain actor's noise and write each episode's decisions beside the store (``onpolicy.ChainActing``)."""
    robot: dict[str, Any] | None = None
    """Drive a robot over ROS 2 topics instead of simulated envs: a RobotLinkConfig as a dict, with the one
    ``namespace`` of this actor's robot (one env)."""
    hil: dict[str, Any] | None = None
    """Simulated envs: the run's ``rl.hil`` (a HILConfig, encoded): the operator and the graded protocol act
    in this actor's envs, the protocol's k scheduled from this actor's own recent success."""
    demos: list[str] = field(default_factory=list)
    """The demo stores the protocol replays or restores (demo_replay, return_explore)."""

    @property
    def store(self) -> Path:
        return Path(self.run) / ACTORS_DIR / f"actor_{self.actor_id}.zarr"

    @property
    def status(self) -> Path:
        return Path(self.run) / ACTORS_DIR / f"actor_{self.actor_id}.status.json"


def stop_file(run: str | Path) -> Path:
    """Its presence tells every actor of the run to stop at its next chunk boundary (the learner's word)."""
    return Path(run) / ACTORS_DIR / "STOP"


def apply_weights(policy: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load published tensors into the acting policy; a tensor the policy has no slot for is an error."""
    missing_ok = set(policy.state_dict())
    unknown = [k for k in tensors if k not in missing_ok]
    if unknown:
        raise ConfigError(f"published weights name parameters the acting policy lacks: {unknown[:5]}")
    policy.load_state_dict(tensors, strict=False)


def _write_status(path: Path, status: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


def _backlog(spec: ActorSpec, committed: int) -> int:
    """Committed episodes of this actor that the learner has not ingested (all of them until the learner has
    said what it ingested: a learner still starting up is behind)."""
    try:
        status = json.loads((Path(spec.run) / ACTORS_DIR / "learner.status.json").read_text())
    except FileNotFoundError:
        return committed
    except (OSError, ValueError):  # being replaced this instant
        return 0
    return committed - int(status.get("ingested", {}).get(spec.store.name, 0))


def robot_envs(spec: ActorSpec, env_config: EnvConfig, seed: int, committed: int) -> ChunkVectorEnv:
    """The actor's envs: simulated ones, or its robot over ROS 2 topics as one ``RosRobotEnv``."""
    if spec.robot is None:
        wrap = None
        if spec.hil is not None:
            hil = draccus.decode(HILConfig, spec.hil)
            critic = json.loads((Path(spec.run) / "rl.json").read_text()).get("critic") if hil.operator.stall_steps \
                else None  # only the stall trigger reads the critic
            wrap = run_wrap(hil, env_config.task, spec.demos, critic, seed)
        # resets continue past every episode this actor has committed in earlier lives: no start is replayed
        return ChunkVectorEnv(env_config, spec.num_envs, 0, seed=seed, episodes=[committed + 1] * spec.num_envs,
                              wrap=wrap)
    from robot_rl.envs.ros_robot import RosRobotEnv
    from robot_rl.transport import make_transport
    from robot_rl.transport.convert import RobotTopics

    link = dict(spec.robot)
    transport = make_transport(link["transport"], domain_id=link.get("domain_id"), interface=link.get("interface"),
                               peers=link.get("peers"))
    topics = RobotTopics(namespace=link["namespace"], image_transport=link.get("image_transport", "raw"))
    env = RosRobotEnv(transport, topics, timeout_s=float(link.get("timeout_s", 10.0)), owns_transport=True)
    return ChunkVectorEnv.from_envs([env], env_config, seed=seed, episodes=[committed + 1])


def run_actor(spec: ActorSpec, should_stop=lambda: False, weights: Any = None, node: Any = None) -> dict[str, Any]:
    """Act until ``should_stop()`` (checked at every chunk boundary) or the parent process is gone. ``weights``:
    where new versions come from (default: the run's weight files), anything with ``poll()``, ``version``,
    ``published_at`` and ``source`` like ``WeightSubscriber``. ``node``: a ``NodeClient`` of an inference node
    that chooses the chunks; without an answer in time the actor chooses them itself."""
    torch.set_num_threads(1)
    parent = os.getppid()
    run = Path(spec.run)
    env_config = EnvConfig(**spec.env)
    task = get_task(env_config.task)
    chain = None
    if spec.algo == "chunk":
        policy = load_policy(run / "policy")
        if not isinstance(policy, SteeredPolicy):
            raise ConfigError(f"{run / 'policy'} is a {policy.name!r} policy; the chunk actor runs a steered policy")
        policy.eval()
    else:
        from robot_rl.runtime.distributed.onpolicy import ChainActing, chain_path

        chain = ChainActing(run, env_config, task.instruction, spec.num_envs if spec.robot is None else 1)
        policy = chain.policy
    acting = policy if chain is None else chain.module  # what published weights load into
    featurizer, features_key = None, ""
    if spec.ship_features:
        meta = json.loads((run / "rl.json").read_text())
        cfg = draccus.decode(RLConfig, meta["rl"])
        featurizer = build_featurizer(policy.base, cfg, meta["critic"], env_config, task.instruction)
        features_key = featurizer_key(cfg, meta["policy"], meta["critic"])
    weights = weights if weights is not None else WeightSubscriber(run / "weights")
    swaps: dict[str, int] = {}
    first = weights.poll()
    if first is not None:
        apply_weights(acting, first)
    spec.store.parent.mkdir(parents=True, exist_ok=True)
    if not spec.store.exists():
        EpisodeStore.create(spec.store).close()
    store = EpisodeStore.open(spec.store, mode="a")  # a store left half-written by a kill is cleaned here
    committed = store.num_episodes
    seed = TRAIN_SEED + 10_000_000 * spec.seed + ACTOR_SEED_STRIDE * (spec.actor_id + 1)
    envs = robot_envs(spec, env_config, seed, committed)
    num_envs = envs.num_envs
    generator = torch.Generator().manual_seed(seed + committed)
    hist = ObservationWindows(num_envs, policy.config.n_obs_steps, task.instruction)
    asm = [EpisodeAssembler(env_config.task, task.instruction) for _ in range(num_envs)]
    steps, episodes, wins, sync_ms, swapped = 0, 0, [], [], False
    helps: list[EpisodeHelp] = []
    schedule = None
    if spec.hil is not None:
        schedule = HelpSchedule(draccus.decode(HILConfig, spec.hil).protocol)
        envs.set_help(schedule.steps())
    start = last_status = time.perf_counter()

    def status(state: str) -> None:
        elapsed = max(time.perf_counter() - start, 1e-6)
        _write_status(spec.status, {
            "actor": spec.actor_id, "pid": os.getpid(), "state": state, "env_steps": steps,
            "episodes": episodes, "committed": store.num_episodes, "version": weights.version,
            "success": float(np.mean(wins[-50:])) if wins else None, "steps_per_s": steps / elapsed,
            "sync_ms": sync_ms[-200:], "weight_swaps": swaps, "time": time.time(),
            "node": None if node is None else {"served": node.served, "fallbacks": node.fallbacks},
            **({} if schedule is None else {"help": {**help_metrics(helps[-50:]), "help_steps": schedule.steps()}})})

    try:
        first_obs = envs.reset()
        for i, o in enumerate(first_obs):
            hist.start(i, o)
            asm[i].start(o)
        if chain is not None:
            chain.start(first_obs)
        status("acting")
        stop = stop_file(spec.run)
        while not should_stop() and not stop.exists() and os.getppid() == parent:
            if spec.max_backlog is not None and _backlog(spec, store.num_episodes) >= spec.max_backlog:
                time.sleep(0.05)  # a simulated actor waits for a learner that shares its CPU
                continue
            new = weights.poll()  # the newest version on disk; the ones in between are never loaded
            if new is not None:
                apply_weights(acting, new)
                swapped = True
                swaps[weights.source] = swaps.get(weights.source, 0) + 1
            served = None if node is None else node.act(hist.batch(), spec.candidates, spec.explore)
            if served is not None:
                actions, acting_version = served
                swapped = False  # publish-to-acting is the node's to measure then
            else:  # this actor's own copy of the policy: no node, or none that answered in time
                acting_version = weights.version
                actions = decide(policy, hist.batch(), spec.candidates, spec.explore, generator) if chain is None \
                    else chain.decide(hist.batch(), generator, acting_version)
                if swapped:  # publish-to-acting: the first decision made with the new weights
                    sync_ms.append(1000.0 * (time.time() - weights.published_at))
                    swapped = False
            results = envs.step_chunks(list(actions), record=True)
            if chain is not None:
                chain.observe(results, hist)
            for i, r in enumerate(results):
                steps += r.steps
                ep = asm[i].add(actions[i], r, max(acting_version, 0))
                if ep is None:
                    hist.push(i, r.obs)
                    continue
                if featurizer is not None:  # before the commit: a learner that sees the episode finds its data
                    index = store.num_episodes
                    derived = featurizer(ep, seed=derived_seed(spec.store.name, index))
                    save_derived(shipped_path(run, spec.store.name, index), derived, ep, features_key)
                if chain is not None:
                    chain.finish(i, chain_path(run, spec.store.name, store.num_episodes), ep)
                store.append(ep)  # committed whole or not at all
                episodes += 1
                wins.append(bool(ep.meta.success))
                if schedule is not None:
                    helps.append(EpisodeHelp.of(ep.intervention, ep.meta.success, asm[i].last_helped))
                    k = schedule.steps()
                    schedule.record([ep.meta.success])
                    if schedule.steps() != k:
                        envs.set_help(schedule.steps())
                hist.start(i, r.obs)
            if time.perf_counter() - last_status > spec.status_every_s:
                status("acting")
                last_status = time.perf_counter()
            if spec.max_episodes is not None and episodes >= spec.max_episodes:
                break
        status("stopped")
    finally:
        envs.close()
        store.close()
    return {"actor": spec.actor_id, "env_steps": steps, "episodes": episodes}


def actor_process(spec_dict: dict[str, Any], stop_event=None, node: tuple | None = None) -> None:
    """Entry point of a spawned actor process (``node``: the inference node's request queue, this actor's reply
    queue and the timeout in ms)."""
    from robot_rl.runtime.distributed.inference import NodeClient

    spec = ActorSpec(**spec_dict)
    client = None if node is None else NodeClient(spec.actor_id, *node)
    run_actor(spec, should_stop=(lambda: stop_event.is_set()) if stop_event is not None else (lambda: False),
              node=client)


def spec_dict(spec: ActorSpec) -> dict[str, Any]:
    return asdict(spec)
