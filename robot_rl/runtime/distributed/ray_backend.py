"""The Ray backend (``rl.backend=ray``): the same learner and actors as the local backend, placed as Ray actors
by their CPU needs, on a local cluster this run starts or on an existing one (``rl.distributed.ray.address``).
Experience and status meet through the run folder as between local processes (episode stores, status files),
so on a multi-machine cluster the run folder must be on a filesystem every node mounts. Weights go through
Ray's object store: the learner puts each version there and tells a small broker actor, and actors ask the
broker at every chunk boundary; the weight files are still written, as the durable copy a restarted learner
numbers its versions from and the one actors fall back to while the object store cannot give them a version
(its owner, the learner, died). With ``rl.distributed.inference.node`` an inference node Ray actor answers the
actors' requests over Ray queues (actors themselves, so they outlive a node that dies). This process supervises:
a Ray actor that dies (killed, or its machine lost) is replaced and the run goes on."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from robot_rl.core.errors import ConfigError
from robot_rl.runtime.distributed.actor import ActorSpec, run_actor, spec_dict, stop_file
from robot_rl.runtime.distributed.learner import (
    RESULT_FILE,
    ActorsByFiles,
    actor_specs,
    adopt_result,
    clear_run_signals,
    learner_checkpoint,
    learner_process,
    prepare,
)
from robot_rl.runtime.distributed.weights import Mirror, WeightPublisher, WeightSubscriber


class BrokerSubscriber:
    """An actor's weights from the object store through the broker; from the weight files when that fails."""

    source = "object_store"

    def __init__(self, ray, broker, folder: Path) -> None:
        self.ray, self.broker = ray, broker
        self.files = WeightSubscriber(folder)
        self.version, self.published_at, self.source = -1, None, "object_store"

    def poll(self) -> dict[str, Any] | None:
        import torch

        try:
            newer = self.ray.get(self.broker.newer.remote(self.version), timeout=10)
            if newer is None:
                return None
            version, (ref,), published = newer
            arrays = self.ray.get(ref, timeout=30)
            tensors = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
            self.source = "object_store"
        except Exception:  # the broker or the object's owner is gone: the files have every version
            self.files.version = self.version
            tensors = self.files.poll()
            if tensors is None:
                return None
            version, published, self.source = self.files.version, self.files.published_at, "files"
        self.version, self.published_at = version, published
        return tensors


def object_store_mirror(ray, broker) -> Mirror:
    """What the learner's publisher calls for every version: put it in the object store, tell the broker."""

    def mirror(tensors, version: int, published: float) -> None:
        ref = ray.put({k: v.numpy() for k, v in tensors.items()})
        broker.put.remote(version, [ref], published)  # in a list: Ray passes the reference, not the value

    return mirror


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("rl.backend=ray needs Ray: pip install 'robot-rl[dist]'") from None
    return ray


def _workers(ray):
    @ray.remote(num_cpus=0)
    class WeightBroker:
        """The newest published version: its number, its object reference and its publish time."""

        def __init__(self) -> None:
            self.version, self.ref, self.published = -1, None, None

        def put(self, version: int, boxed: list, published: float) -> None:
            if version > self.version:  # versions only increase, whatever order the puts arrive in
                self.version, self.ref, self.published = version, boxed[0], published

        def newer(self, version: int):
            return None if self.version <= version else (self.version, [self.ref], self.published)

    @ray.remote(max_restarts=0)
    class ActorWorker:
        def run(self, spec: dict[str, Any], broker, node: tuple | None = None) -> dict[str, Any]:
            from robot_rl.runtime.distributed.inference import NodeClient

            weights = BrokerSubscriber(ray, broker, Path(spec["run"]) / "weights")
            client = None if node is None else NodeClient(spec["actor_id"], *node)
            return run_actor(ActorSpec(**spec), weights=weights, node=client)  # until the run's stop file appears

        def pid(self) -> int:
            return os.getpid()

    @ray.remote(max_restarts=0)
    class LearnerWorker:
        def run(self, run: str, progress: bool, cpus: float, broker) -> dict[str, Any]:
            learner_process(run, progress, cpus, object_store_mirror(ray, broker))
            return json.loads((Path(run) / RESULT_FILE).read_text())

    @ray.remote(max_restarts=0)
    class InferenceWorker:
        def run(self, run: str, requests, replies: dict, cfg: dict[str, Any], seed: int, broker) -> None:
            from robot_rl.runtime.distributed.inference import serve

            serve(run, requests, replies, cfg, _StopFlag(run), seed,
                  weights=BrokerSubscriber(ray, broker, Path(run) / "weights"))

    return WeightBroker, ActorWorker, LearnerWorker, InferenceWorker


class _StopFlag:
    """The run's stop file as the event ``serve`` checks."""

    def __init__(self, run: str) -> None:
        self.path = stop_file(run)

    def is_set(self) -> bool:
        return self.path.exists()


def run_ray(trainer) -> dict[str, Any]:
    ray = _ray()
    dcfg, run = trainer.cfg.distributed, trainer.run
    rc = dcfg.ray
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if rc.address is None:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster: no token file in $HOME
            kwargs["num_cpus"] = rc.num_cpus
        else:
            kwargs["address"] = rc.address
        # workers import robot_rl from this environment; the run folder is passed as an absolute path
        ray.init(**kwargs)
        started = True
    # a Ray actor that asks for more CPUs than the whole cluster has would wait forever, silently
    need = len(actor_specs(trainer, dcfg)) * rc.actor_cpus + rc.learner_cpus + \
        (rc.node_cpus if dcfg.inference.node else 0.0)
    have = float(ray.cluster_resources().get("CPU", 0.0))
    if need > have + 1e-9:
        if started:
            ray.shutdown()
        raise ConfigError(f"the learner, the actors and the inference node ask for {need:g} CPUs "
                          f"(rl.distributed.ray.*_cpus); the cluster has {have:g}: lower them, or raise "
                          "rl.distributed.ray.num_cpus on a local cluster")
    WeightBroker, ActorWorker, LearnerWorker, InferenceWorker = _workers(ray)
    broker = WeightBroker.remote()
    prepare(trainer, object_store_mirror(ray, broker))
    clear_run_signals(run)
    specs = actor_specs(trainer, dcfg)
    handles: dict[int, Any] = {}
    refs: dict[Any, int] = {}
    restarts = {s.actor_id: 0 for s in specs}
    inference = dcfg.inference if dcfg.inference.node else None
    node: dict[str, Any] = {"handle": None, "ref": None, "restarts": 0}
    if inference is not None:  # queues are Ray actors of their own: they outlive a node that dies
        from ray.util.queue import Queue

        requests = Queue(actor_options={"num_cpus": 0})
        replies = {s.actor_id: Queue(actor_options={"num_cpus": 0}) for s in specs}

    def start_node() -> None:
        h = InferenceWorker.options(num_cpus=rc.node_cpus, num_gpus=rc.node_gpus).remote()
        node.update(handle=h, ref=h.run.remote(str(run.resolve()), requests, replies, asdict(inference),
                                               trainer.cfg.seed, broker))

    def start_actor(spec: ActorSpec) -> None:
        h = ActorWorker.options(num_cpus=rc.actor_cpus, name=None).remote()
        handles[spec.actor_id] = h
        link = None if inference is None else (requests, replies[spec.actor_id], inference.timeout_ms)
        refs[h.run.remote(spec_dict(spec), broker, link)] = spec.actor_id

    def start_learner():
        h = LearnerWorker.options(num_cpus=rc.learner_cpus).remote()
        return h, h.run.remote(str(run.resolve()), trainer.progress, rc.learner_cpus, broker)

    for spec in specs:
        spec.run = str(run.resolve())
    if inference is not None:
        start_node()
    for spec in specs:
        start_actor(spec)
    learner, lref = start_learner()
    learner_restarts, result = 0, None
    try:
        while result is None:
            watched = [lref, *refs, *([node["ref"]] if node["ref"] is not None else [])]
            ready, _ = ray.wait(watched, num_returns=1, timeout=0.5)
            for ref in ready:
                if ref == node["ref"]:  # the node returns only when told to stop, or dies
                    node["ref"] = None
                    try:
                        ray.get(ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                        if stop_file(run).exists():
                            continue
                        if node["restarts"] >= dcfg.restarts:
                            raise RuntimeError(f"the inference node failed {node['restarts'] + 1} times; "
                                               f"last: {exc}") from exc
                        node["restarts"] += 1
                        print(f"inference node exited ({type(exc).__name__}); restarting it ({node['restarts']}/"
                              f"{dcfg.restarts}): the actors act with their own copies of the policy meanwhile",
                              flush=True)
                        start_node()
                    continue
                if ref == lref:
                    try:
                        result = ray.get(lref)
                    except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                        if learner_restarts >= dcfg.restarts:
                            raise RuntimeError(f"the learner failed {learner_restarts + 1} times; last: {exc}") from exc
                        learner_restarts += 1
                        version = WeightPublisher(run / "weights").version
                        print(f"learner exited ({type(exc).__name__}); restarting it ({learner_restarts}/"
                              f"{dcfg.restarts}) from {learner_checkpoint(trainer)}: it rebuilds its replay from the "
                              f"stores while the actors act on weights v{version}", flush=True)
                        learner, lref = start_learner()
                    continue
                k = refs.pop(ref)
                try:
                    ray.get(ref)  # it stopped because it was told to
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                    if stop_file(run).exists():
                        continue
                    if restarts[k] >= dcfg.restarts:
                        raise RuntimeError(f"actor {k} failed {restarts[k] + 1} times; last: {exc}") from exc
                    restarts[k] += 1
                    print(f"actor {k} exited ({type(exc).__name__}); restarting it ({restarts[k]}/{dcfg.restarts}): "
                          "its episode in flight is lost", flush=True)
                    start_actor(next(s for s in specs if s.actor_id == k))
    finally:
        ActorsByFiles(specs).stop(timeout=60)
        extra = [] if inference is None else [node["handle"], requests.actor, *(q.actor for q in replies.values())]
        for h in [*handles.values(), learner, broker, *[x for x in extra if x is not None]]:
            ray.kill(h)
        if started:
            ray.shutdown()
    adopt_result(trainer, result)
    return {**result, "actor_restarts": restarts, "learner_restarts": learner_restarts, "backend": "ray",
            "node_restarts": node["restarts"]}
