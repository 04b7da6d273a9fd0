"""The learner side of an asynchronous chunk run (ReinFlow's and DPPO's is in ``onpolicy.py``), and the local
backend that places a learner and its actors in processes on this machine.

The learner ingests committed episodes from every actor's store exactly once (by store and index), runs the
chunk learner's updates at ``rl.chunk.utd`` per ingested env step (waiting for data when ahead, dropping what
it owes beyond ``max_update_debt`` when behind), publishes a new weight version every ``publish_every``
updates, and commits ``learner.pt`` once per round of env steps.

The local backend's supervisor (the ``robot-rl train`` process) runs the learner and each actor as its own
process and restarts any that dies: a restarted learner resumes from ``learner.pt`` and rebuilds its replay
from the stores while the actors keep acting on the last weights it published; a restarted actor continues
its store (the episode it had in flight is lost, nothing committed is).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import draccus
import numpy as np
import torch
from tqdm import tqdm

from robot_rl.core.errors import ConfigError
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.distributed.actor import ActorSpec, actor_process, spec_dict, stop_file
from robot_rl.runtime.distributed.config import DistributedConfig, InferenceConfig
from robot_rl.runtime.distributed.inference import NODE_STATUS
from robot_rl.runtime.distributed.weights import Mirror, WeightPublisher
from robot_rl.runtime.training.offpolicy import ACTORS_DIR
from robot_rl.runtime.training.vec_env import ChunkVectorEnv

RESULT_FILE = "learner_result.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ActorProcesses:
    """Actor processes on this machine (spawned: no forked GL contexts or torch pools). One that dies with an
    error is restarted with the same id and store, up to ``restarts`` times; one that exits 0 was told to."""

    def __init__(self, specs: list[ActorSpec], restarts: int, inference: InferenceConfig | None = None) -> None:
        self.ctx = mp.get_context("spawn")
        self.stop_event = self.ctx.Event()
        self.specs, self.restarts = specs, restarts
        self.procs: dict[int, Any] = {}
        self.restarted = {s.actor_id: 0 for s in specs}
        self.inference = inference if inference is not None and inference.node else None
        self.node, self.node_lost = None, False
        if self.inference is not None:  # one request queue; a reply queue per actor, kept across its restarts
            self.requests = self.ctx.Queue()
            self.replies = {s.actor_id: self.ctx.Queue() for s in specs}

    def _spawn(self, spec: ActorSpec) -> None:
        node = None if self.inference is None else (self.requests, self.replies[spec.actor_id],
                                                     self.inference.timeout_ms)
        proc = self.ctx.Process(target=actor_process, args=(spec_dict(spec), self.stop_event, node), daemon=True,
                                name=f"robot-rl-actor-{spec.actor_id}")
        proc.start()
        self.procs[spec.actor_id] = proc

    def _spawn_node(self) -> None:
        from robot_rl.runtime.distributed.inference import serve

        self.node = self.ctx.Process(target=serve, daemon=True, name="robot-rl-inference",
                                     args=(self.specs[0].run, self.requests, self.replies, asdict(self.inference),
                                           self.stop_event, self.specs[0].seed))
        self.node.start()

    def start(self) -> None:
        if self.inference is not None:
            self._spawn_node()
        for spec in self.specs:
            self._spawn(spec)

    def check(self) -> list[str]:
        """Restart actors (and the inference node) that died; the log lines saying so."""
        lines = []
        if self.node is not None and not self.node.is_alive() and not self.stop_event.is_set() and not self.node_lost:
            # Not restarted: a process killed inside a multiprocessing queue call can leave the queue's lock held.
            self.node_lost = True
            lines.append(f"inference node exited (code {self.node.exitcode}); the actors act with their own copies "
                         "of the policy for the rest of the run")
        for spec in self.specs:
            proc = self.procs[spec.actor_id]
            if proc.is_alive() or proc.exitcode == 0 or self.stop_event.is_set():
                continue
            if self.restarted[spec.actor_id] >= self.restarts:
                raise RuntimeError(f"actor {spec.actor_id} exited with code {proc.exitcode} after "
                                   f"{self.restarts} restarts; see its log above")
            self.restarted[spec.actor_id] += 1
            lines.append(f"actor {spec.actor_id} exited (code {proc.exitcode}); restarting it "
                         f"({self.restarted[spec.actor_id]}/{self.restarts}): its episode in flight is lost")
            self._spawn(spec)
        return lines

    def pids(self) -> dict[int, int]:
        return {k: p.pid for k, p in self.procs.items()}

    def stop(self, timeout: float = 60.0) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        procs = [*self.procs.values(), *([self.node] if self.node is not None else [])]
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


class ActorsByFiles:
    """The learner's view of actors it does not own (run by a supervisor, or on other machines): it knows
    their stores from their specs and stops them with the run's stop file."""

    def __init__(self, specs: list[ActorSpec]) -> None:
        self.specs = specs

    def check(self) -> list[str]:
        return []

    def stop(self, timeout: float = 60.0) -> None:
        """Tell every actor to stop and wait until each has (its status says so, or its process is gone), so
        that what they committed can be ingested whole."""
        if not self.specs:
            return
        flag = stop_file(self.specs[0].run)
        if not flag.exists():
            flag.write_text(str(time.time()))
        asked = float(flag.read_text() or 0)
        deadline = time.monotonic() + timeout
        pending = list(self.specs)
        while pending and time.monotonic() < deadline:
            still = []
            for spec in pending:
                try:
                    status = json.loads(spec.status.read_text())
                except (OSError, ValueError):
                    status = None
                if status is None or (status["state"] != "stopped" or status["time"] < asked) and _alive(status["pid"]):
                    still.append(spec)
            pending = still
            if pending:
                time.sleep(0.1)


def published_tensors(trainer) -> dict:
    """What the actors need of the learner's state: the heads (Q-ensemble, noise actor, residual), and the
    base policy where it learns too (rl.chunk.base_bc)."""
    state = trainer.policy.state_dict()
    keep = ("heads.", "base.") if trainer.cc.base_bc > 0 else ("heads.",)
    return {k: v for k, v in state.items() if k.startswith(keep)}


def actor_specs(trainer, dcfg: DistributedConfig) -> list[ActorSpec]:
    from dataclasses import asdict

    cfg = trainer.cfg
    common = {"run": str(trainer.run), "env": asdict(trainer.env_config), "candidates": cfg.chunk.candidates,
              "explore": cfg.chunk.explore, "seed": cfg.seed, "algo": cfg.algo,
              "ship_features": getattr(trainer, "actors_ship_features", False)}
    if cfg.hil.enabled:
        common.update(hil=draccus.encode(cfg.hil), demos=list(getattr(trainer, "demos", [])))
    link = dcfg.robot
    if link.namespaces:  # one actor per robot; a robot acts at its own rate, whatever the learner does
        robot = {k: v for k, v in asdict(link).items() if k != "namespaces"}
        return [ActorSpec(actor_id=k, num_envs=1, max_backlog=None, robot={**robot, "namespace": ns}, **common)
                for k, ns in enumerate(link.namespaces)]
    return [ActorSpec(actor_id=k, num_envs=dcfg.envs_per(cfg.num_envs), max_backlog=dcfg.max_backlog, **common)
            for k in range(dcfg.actors)]


def write_learner_status(run: Path, ingested: dict[str, int], version: int, updates: int) -> None:
    """What the actors read to hold back (``max_backlog``): the episodes the learner has ingested per store."""
    tmp = run / ACTORS_DIR / "learner.status.json.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps({"ingested": ingested, "version": version, "updates": updates,
                               "pid": os.getpid(), "time": time.time()}))
    tmp.replace(tmp.with_suffix(""))


def read_status(trainer) -> list[dict]:
    out = []
    for path in sorted((trainer.run / "actors").glob("actor_*.status.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # being replaced this instant
    return out


def read_node_status(trainer) -> dict | None:
    try:
        return json.loads((trainer.run / ACTORS_DIR / NODE_STATUS).read_text())
    except (OSError, ValueError):
        return None


class _Round:
    """What one round of env steps did, for its metrics row."""

    def __init__(self, updates: int) -> None:
        self.t, self.updates = time.perf_counter(), updates
        self.wins: list[bool] = []
        self.returns: list[float] = []
        self.sums: dict[str, float] = {}

    def add_metrics(self, metrics: dict[str, float], n: int) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * n


def prepare(trainer, mirror: Mirror | None = None) -> WeightPublisher:
    """Before any actor starts: the critic's warm-up on the demos, ``RUN/policy`` (what actors load first) and
    a first weight version above every earlier one."""
    if trainer.cfg.algo != "chunk":
        from robot_rl.runtime.distributed.onpolicy import prepare_chain

        return prepare_chain(trainer, mirror)
    cc, dcfg = trainer.cc, trainer.cfg.distributed
    if cc.base_rounds:
        raise ConfigError("rl.chunk.base_rounds is a synchronous-loop setting; asynchronous actors rank "
                          "candidates from the start")
    if trainer.learner.updates < cc.warmup_updates:
        trainer.learn(cc.warmup_updates - trainer.learner.updates, critic_only=True)
    trainer._save_state(export=True)
    publisher = WeightPublisher(trainer.run / "weights", keep=dcfg.keep_versions, mirror=mirror)
    publisher.publish(published_tensors(trainer), publisher.version + 1)
    return publisher


def train_async(trainer, actors, mirror: Mirror | None = None) -> dict[str, Any]:
    """Run ``trainer`` (a ChunkRLTrainer) as the learner of asynchronous ``actors`` (which someone else
    started) until ``rl.iterations`` rounds of env steps are ingested; then the actors are stopped and the
    policy is evaluated. ``env_steps`` counts the steps learned from; ``acted_env_steps`` all the actors
    committed (a continued run ingests the rest)."""
    from torch.utils.tensorboard import SummaryWriter

    cfg, cc, dcfg = trainer.cfg, trainer.cc, trainer.cfg.distributed
    pc = trainer.policy.base.config
    round_steps = cfg.num_envs * cfg.steps_per_iteration * pc.n_action_steps
    budget = cfg.iterations * round_steps
    tb = SummaryWriter(str(trainer.run / "tb"))
    start = time.perf_counter()
    deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else None
    publisher = prepare(trainer, mirror)
    stores: dict[str, EpisodeStore] = {}
    state = {"dropped": 0, "since_publish": 0, "last_eval": None, "eval_envs": None}
    bar = tqdm(total=budget, initial=min(trainer.env_steps, budget), desc="rl async", unit="step",
               disable=not trainer.progress)
    rnd = _Round(trainer.learner.updates)

    def ingest(limit: int | None) -> int:
        n = 0
        for name, store in actor_stores(actors.specs, stores):
            for d in trainer.ingest(store, name, limit=limit):
                rnd.wins.append(d.success)
                rnd.returns.append(float(d.rewards.sum()))
                n += 1
        bar.update(min(trainer.env_steps, budget) - bar.n)
        return n

    def learn() -> None:
        owed = cc.warmup_updates + cc.utd * trainer.env_steps - state["dropped"] - trainer.learner.updates
        if owed > dcfg.max_update_debt:
            state["dropped"] += int(owed - dcfg.max_update_debt)
            owed = dcfg.max_update_debt
        while owed >= 1:
            n = int(min(owed, dcfg.publish_every - state["since_publish"]))
            rnd.add_metrics(trainer.learn(n), n)
            owed -= n
            state["since_publish"] += n
            if state["since_publish"] >= dcfg.publish_every:
                publisher.publish(published_tensors(trainer), publisher.version + 1)
                state["since_publish"] = 0

    def end_round(iteration: int) -> None:
        nonlocal rnd
        if trainer.finetuner is not None and iteration % cfg.progress_finetune.every == 0:
            rnd.sums.update({k: v * max(trainer.learner.updates - rnd.updates, 1)
                             for k, v in trainer.finetuner.burst().items()})
        trainer.iteration = iteration
        now = time.perf_counter()
        updates = trainer.learner.updates - rnd.updates
        status = read_status(trainer)
        lags = [publisher.version - s["version"] for s in status if s.get("version") is not None]
        node = read_node_status(trainer)  # with an inference node, publish-to-acting is measured there
        sync = [ms for s in [*status, *([node] if node else [])] for ms in s.get("sync_ms", [])]
        row = {"iteration": iteration, "env_steps": trainer.env_steps, "episodes": trainer.episodes,
               "updates": trainer.learner.updates,
               "train_success": float(np.mean(rnd.wins)) if rnd.wins else float("nan"),
               "episode_return": float(np.mean(rnd.returns)) if rnd.wins else float("nan"),
               "updates_per_s": updates / max(now - rnd.t, 1e-6),
               "env_steps_per_s": sum(s.get("steps_per_s", 0.0) for s in status),
               "sample_to_insert": trainer.learner.updates / max(trainer.env_steps, 1),
               "updates_dropped": state["dropped"], "weight_version": publisher.version,
               "policy_lag": float(np.mean(lags)) if lags else float("nan"),
               "weight_sync_ms": float(np.median(sync)) if sync else float("nan"),
               "replay_steps": sum(trainer.replay.num_steps.values()), "elapsed_s": now - start,
               "features_shipped": trainer.features_counts["shipped"] / max(sum(trainer.features_counts.values()), 1),
               **{k: v / max(updates, 1) for k, v in rnd.sums.items()}}
        trainer._log("metrics.csv", row, tb)
        evaluate = cfg.eval_every and iteration % cfg.eval_every == 0 and iteration < cfg.iterations
        if evaluate:  # the actors keep acting meanwhile
            evaluate_into(trainer, state, tb)
        trainer._save_state(export=bool(evaluate))
        rnd = _Round(trainer.learner.updates)
        bar.set_postfix(updates=trainer.learner.updates, version=publisher.version,
                        success=f"{row['train_success']:.2f}", lag=f"{row['policy_lag']:.1f}")

    try:
        while deadline is None or time.perf_counter() < deadline:
            for line in actors.check():
                print(line, flush=True)
            new = ingest(limit=2)  # a few episodes at a time: updates and publications go on between them
            learn()
            write_learner_status(trainer.run, trainer.ingested, publisher.version, trainer.learner.updates)
            while trainer.iteration < min(trainer.env_steps // round_steps, cfg.iterations):
                end_round(trainer.iteration + 1)
            if trainer.env_steps >= budget:
                break
            if not new:
                time.sleep(dcfg.poll_s)
        actors.stop()  # the episodes they committed since are kept in their stores: a continued run ingests them
        trainer._save_state(export=True)
        final_evaluation(trainer, state, tb)
    except KeyboardInterrupt:
        actors.stop()
        trainer._save_state(export=True)
        raise
    finally:
        close_loop(actors, bar, stores, state["eval_envs"], tb)
    acted = acted_env_steps(actors.specs)
    return {"iterations": trainer.iteration, "env_steps": trainer.env_steps, "acted_env_steps": acted,
            "episodes": trainer.episodes,
            "updates": trainer.learner.updates, "wall_s": time.perf_counter() - start,
            "last_eval": state["last_eval"], "run": str(trainer.run), "weight_version": publisher.version,
            "updates_dropped": state["dropped"]}


def actor_stores(specs: list[ActorSpec], stores: dict[str, EpisodeStore]):
    """(name, store) of every actor store that exists, opened once (kept in ``stores``) and refreshed."""
    for spec in specs:
        name = spec.store.name
        if name not in stores:
            if not spec.store.exists():
                continue
            try:
                stores[name] = EpisodeStore.open(spec.store)
            except Exception:  # created this instant: its first record is not written yet
                continue
        stores[name].refresh()
        yield name, stores[name]


def evaluate_into(trainer, state: dict[str, Any], tb) -> None:
    """Evaluate the learner's policy now (the actors keep acting) in envs made once per run, kept in ``state``."""
    cfg = trainer.cfg
    state["eval_envs"] = state["eval_envs"] or ChunkVectorEnv(trainer.env_config, cfg.num_envs, cfg.workers)
    state["last_eval"] = trainer._eval_row(state["eval_envs"], tb)


def final_evaluation(trainer, state: dict[str, Any], tb) -> None:
    """After the last round: evaluate unless that round's evaluation already ran."""
    last = state["last_eval"]
    if trainer.iteration >= trainer.cfg.iterations and (last is None or last["iteration"] != trainer.iteration):
        evaluate_into(trainer, state, tb)


def close_loop(actors, bar, stores: dict[str, EpisodeStore], eval_envs, tb) -> None:
    """What a learner's loop holds open, closed once its actors are told to stop."""
    actors.stop()
    bar.close()
    for store in stores.values():
        store.close()
    if eval_envs is not None:
        eval_envs.close()
    tb.close()


def acted_env_steps(specs: list[ActorSpec]) -> int:
    """Env steps the actors committed to their stores in all, learned from or not."""
    acted = 0
    for spec in specs:
        if spec.store.exists():
            with EpisodeStore.open(spec.store) as store:
                acted += int(store.episode_ends[-1]) if store.num_episodes else 0
    return acted


def learner_threads(cfg, cpus: float | None = None) -> int:
    """torch threads for the learner: ``rl.threads`` if set, else the CPUs it has to itself (the CPUs reserved
    for it on Ray; on one machine, the cores the single-threaded actors leave), so that learner and actors
    together never ask for more threads than there are cores (oversubscribed torch threads spin and stall)."""
    if cfg.threads:
        return int(cfg.threads)
    if cpus is not None:
        return max(1, int(cpus))
    actors = len(cfg.distributed.robot.namespaces) or cfg.distributed.actors
    return max(1, (os.cpu_count() or 1) - actors)


def learner_process(run: str, progress: bool, cpus: float | None = None, mirror: Mirror | None = None) -> None:
    """Entry point of the learner's process: resume the run's trainer from its folder and learn (with
    ``cpus``: the CPUs reserved for it, which sets its torch threads)."""
    import draccus

    from robot_rl.config import EnvConfig
    from robot_rl.runtime.training.offpolicy import ChunkRLTrainer
    from robot_rl.runtime.training.rl import RLConfig, RLTrainer

    meta = json.loads((Path(run) / "rl.json").read_text())
    cfg = draccus.decode(RLConfig, meta["rl"])
    torch.set_num_threads(learner_threads(cfg, cpus))
    kind = ChunkRLTrainer if cfg.algo == "chunk" else RLTrainer
    trainer = kind(meta["policy"], EnvConfig(**meta["env"]), run, cfg, critic_dir=meta["critic"],
                   demos=meta["demos"], resume=True, progress=progress)
    actors = ActorsByFiles(actor_specs(trainer, cfg.distributed))
    if cfg.algo == "chunk":
        result = train_async(trainer, actors, mirror)
    else:
        from robot_rl.runtime.distributed.onpolicy import train_ppo_async

        result = train_ppo_async(trainer, actors, mirror)
    tmp = Path(run) / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(Path(run) / RESULT_FILE)


def learner_checkpoint(trainer) -> Path:
    """The file a restarted learner resumes from."""
    return trainer.run / ("learner.pt" if trainer.cfg.algo == "chunk" else "state.pt")


def clear_run_signals(run: Path) -> None:
    """Before the learner and actors (re)start: no stop file, result or status left from an earlier session."""
    (run / RESULT_FILE).unlink(missing_ok=True)
    stop_file(run).unlink(missing_ok=True)
    for old in (run / ACTORS_DIR).glob("*.status.json"):
        old.unlink()


def run_local(trainer) -> dict[str, Any]:
    """The local backend: this process supervises a learner process and ``rl.distributed.actors`` actor
    processes, restarting any that dies, until the learner has finished the run."""
    dcfg, run = trainer.cfg.distributed, trainer.run
    prepare(trainer)  # warm-up here: the learner process resumes from it
    clear_run_signals(run)
    actors = ActorProcesses(actor_specs(trainer, dcfg), dcfg.restarts, dcfg.inference)
    ctx = mp.get_context("spawn")

    def spawn_learner():
        proc = ctx.Process(target=learner_process, args=(str(run), trainer.progress), name="robot-rl-learner")
        proc.start()
        return proc

    actors.start()
    learner, restarts = spawn_learner(), 0
    try:
        while True:
            for line in actors.check():
                print(line, flush=True)
            learner.join(0.5)
            if learner.is_alive():
                continue
            if learner.exitcode == 0:
                break
            if restarts >= dcfg.restarts:
                raise RuntimeError(f"the learner exited with code {learner.exitcode} after {restarts} restarts; "
                                   "see its log above")
            restarts += 1
            version = WeightPublisher(run / "weights").version
            print(f"learner exited (code {learner.exitcode}); restarting it ({restarts}/{dcfg.restarts}) from "
                  f"{learner_checkpoint(trainer)}: it rebuilds its replay from the stores while the actors act on "
                  f"weights v{version}", flush=True)
            learner = spawn_learner()
    finally:
        actors.stop()
        if learner.is_alive():
            learner.join(30)  # Ctrl-C reached it too: let it commit its state
            if learner.is_alive():
                learner.terminate()
    result = json.loads((run / RESULT_FILE).read_text())
    adopt_result(trainer, result)
    return {**result, "actor_restarts": dict(actors.restarted), "learner_restarts": restarts}


def adopt_result(trainer, result: dict[str, Any]) -> None:
    """The supervisor's trainer takes the counts of the run its learner process finished (the job reads them)."""
    trainer.iteration, trainer.env_steps, trainer.episodes = result["iterations"], result["env_steps"], \
        result["episodes"]
    trainer.acted_env_steps = result["acted_env_steps"]
