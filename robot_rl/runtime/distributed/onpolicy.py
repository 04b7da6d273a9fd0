"""ReinFlow and DPPO with asynchronous actors. An actor samples each chunk through the noise-injected denoising
chain of the weights it holds and, before it commits an episode, writes the episode's decisions beside its
store: the (frozen) encoder's condition, the chain, its log-probability under the acting weights, the acting
version and the critic's progress. The learner takes committed episodes in order, drops those acted with
weights more than ``rl.distributed.max_policy_lag`` versions old, and runs one PPO update per
``num_envs x steps_per_iteration`` decisions, correcting for the rest of the staleness: the surrogate is
weighted by the truncated ratio of its own weights at the update's start over the acting ones and clipped
around the former (decoupled PPO), and the value targets are V-trace's (``algos.ppo.off_policy_gae``).
"""

from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import draccus
import numpy as np
import torch

from robot_rl.algos.ppo import off_policy_gae
from robot_rl.algos.rewards import combine_rewards
from robot_rl.config import EnvConfig
from robot_rl.core.schema import Episode
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.distributed.weights import Mirror, WeightPublisher
from robot_rl.runtime.training.evaluate import ObservationWindows, action_chunks
from robot_rl.runtime.training.offpolicy import ACTORS_DIR
from robot_rl.runtime.training.rl import RLConfig, make_actor
from robot_rl.runtime.training.vec_env import ChunkResult


def chain_path(run: str | Path, store: str, index: int) -> Path:
    """Where the actor committing episode ``index`` to ``store`` leaves that episode's decisions."""
    return Path(run) / ACTORS_DIR / store.replace(".zarr", ".chains") / f"{index:010d}.npz"


def _digest(actions: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(actions, np.float32).tobytes())


def chain_key(cfg: RLConfig, policy_dir: str | Path, critic_dir: str | Path | None) -> str:
    """What an episode's decisions were computed with; the learner takes only those that match its own."""
    algo = cfg.reinflow if cfg.algo == "reinflow" else cfg.dppo
    return json.dumps({"algo": cfg.algo, "chain": draccus.encode(algo), "policy": str(policy_dir),
                       "critic": None if critic_dir is None else str(critic_dir),
                       "reward": draccus.encode(cfg.reward)}, sort_keys=True)


def published_tensors(actor: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What actors need of the learner's chain actor: the parameters PPO trains (velocity or denoiser, noise net)."""
    trainable = {id(p) for group in actor.trainable_groups().values() for p in group}
    return {k: v for k, v in actor.named_parameters() if id(v) in trainable}


@dataclass
class EpisodeDecisions:
    """One committed episode's decisions, as its actor wrote them (n decisions)."""

    cond: np.ndarray  # (n + 1, C): each decision's condition, then the final observation window's
    chain: np.ndarray  # (n, K + 1, D)
    log_prob: np.ndarray  # (n,) under the acting weights
    version: np.ndarray  # (n,) the acting weights' version
    success: np.ndarray  # (n,) the task succeeded during the decision
    progress: np.ndarray  # (n + 1,) the critic's progress before each decision and after the last (0: no critic)
    terminated: bool
    steps: int  # env steps of the episode

    def save(self, path: Path, actions: np.ndarray, key: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, cond=self.cond, chain=self.chain, log_prob=self.log_prob, version=self.version,
                 success=self.success, progress=self.progress, terminated=np.array(self.terminated),
                 steps=np.array(self.steps), digest=np.array(_digest(actions), np.int64), key=np.array(key))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, actions: np.ndarray, key: str) -> EpisodeDecisions | None:
        """What ``save`` wrote for the episode with these ``actions``; None if missing, written for another
        episode (an actor killed between writing and committing) or with other settings, or unreadable."""
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["key"]) != key or int(f["digest"]) != _digest(actions) or int(f["steps"]) != len(actions):
                    return None
                out = cls(cond=f["cond"], chain=f["chain"], log_prob=f["log_prob"], version=f["version"],
                          success=f["success"], progress=f["progress"], terminated=bool(f["terminated"]),
                          steps=int(f["steps"]))
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            return None
        n = len(out.chain)
        if not (len(out.cond) == n + 1 == len(out.progress) and len(out.log_prob) == len(out.version) == n):
            return None
        return out


class ChainActing:
    """An actor's policy in a ReinFlow/DPPO run: samples chunks through the chain of the weights it holds and
    keeps, per env, the decisions of the episode in flight until the episode is committed."""

    def __init__(self, run: Path, env_config: EnvConfig, instruction: str, num_envs: int) -> None:
        from robot_rl.critic.model import ProgressCritic
        from robot_rl.critic.reward import CriticReward
        from robot_rl.policy import load_policy

        meta = json.loads((run / "rl.json").read_text())
        self.cfg = cfg = draccus.decode(RLConfig, meta["rl"])
        self.policy = load_policy(run / "policy")
        self.module = make_actor(self.policy, cfg).eval()  # what published weights load into
        self.key = chain_key(cfg, meta["policy"], meta["critic"])
        self.instruction = instruction
        self.scorer, self.cameras = None, []
        if cfg.reward.needs_critic:
            critic = ProgressCritic.load(meta["critic"])
            self.scorer = CriticReward(critic, batch_size=cfg.critic_batch_size,
                                       done_threshold=cfg.reward.done_threshold)
            self.cameras = critic.config.cameras
        self.records: list[dict[str, list]] = [self._fresh(0.0) for _ in range(num_envs)]
        self.pending: tuple | None = None

    @staticmethod
    def _fresh(progress: float) -> dict[str, list]:
        return {"cond": [], "chain": [], "log_prob": [], "version": [], "success": [], "progress": [progress]}

    def _progress(self, observations: list[dict[str, Any]]) -> np.ndarray:
        if self.scorer is None or not observations:
            return np.zeros(len(observations), np.float32)
        frames = {c: np.stack([o["images"][c] for o in observations]) for c in self.cameras}
        return self.scorer.score_frames(frames, self.instruction)[0]

    def start(self, observations: list[dict[str, Any]]) -> None:
        self.records = [self._fresh(float(p)) for p in self._progress(observations)]

    @torch.no_grad()
    def decide(self, batch: dict[str, Any], generator: torch.Generator, version: int) -> np.ndarray:
        cond = self.policy.encode(batch)
        actions, chain, log_prob = self.module.sample(cond, generator=generator)
        self.pending = (cond.numpy(), chain.numpy(), log_prob.numpy(), version)
        return action_chunks(self.policy, actions)

    @torch.no_grad()
    def observe(self, results: list[ChunkResult], hist: ObservationWindows) -> None:
        """Record the decision each env just executed (before ``hist`` moves on); an env whose episode ended
        gets its final condition and the progress its next episode starts from."""
        cond, chain, log_prob, version = self.pending
        ended = [i for i, r in enumerate(results) if r.ended]
        progress = self._progress([r.final_obs if r.ended else r.obs for r in results]
                                  + [results[i].obs for i in ended])
        finals = np.zeros((0, cond.shape[1]), np.float32)
        if ended:
            windows = ObservationWindows(len(ended), hist.n, self.instruction)
            for j, i in enumerate(ended):
                windows.frames[j].extend(hist.frames[i])
                windows.push(j, results[i].final_obs)
            finals = self.policy.encode(windows.batch()).numpy()
        for i, r in enumerate(results):
            rec = self.records[i]
            for k, v in (("cond", cond[i]), ("chain", chain[i]), ("log_prob", log_prob[i]), ("version", version),
                         ("success", bool(r.success)), ("progress", float(progress[i]))):
                rec[k].append(v)
            if r.ended:
                j = ended.index(i)
                rec.update(final=finals[j], terminated=bool(r.terminated), next=float(progress[len(results) + j]))

    def finish(self, i: int, path: Path, ep: Episode) -> None:
        """Write env ``i``'s finished episode's decisions to ``path`` (before the episode is committed) and
        start its next episode's record."""
        rec = self.records[i]
        EpisodeDecisions(cond=np.stack([*rec["cond"], rec["final"]]).astype(np.float32),
                         chain=np.stack(rec["chain"]).astype(np.float32),
                         log_prob=np.asarray(rec["log_prob"], np.float32), version=np.asarray(rec["version"], np.int64),
                         success=np.asarray(rec["success"], bool), progress=np.asarray(rec["progress"], np.float32),
                         terminated=rec["terminated"], steps=len(ep)).save(path, ep.action, self.key)
        self.records[i] = self._fresh(rec["next"])


def prepare_chain(trainer, mirror: Mirror | None = None) -> WeightPublisher:
    """Before any actor starts: ``RUN/policy`` and ``state.pt`` (what actors and the learner process load) and a
    first weight version above every earlier one."""
    trainer._save_state()
    publisher = WeightPublisher(trainer.run / "weights", keep=trainer.cfg.distributed.keep_versions, mirror=mirror)
    publisher.publish(published_tensors(trainer.actor), publisher.version + 1)
    return publisher


def _batch(trainer, episodes: list[EpisodeDecisions]) -> tuple[dict[str, torch.Tensor], np.ndarray, dict[str, float]]:
    """The PPO batch of ``episodes``: the learner's log-probabilities and values now, rewards (normalised in
    episode order), off-policy GAE advantages and V-trace targets; the raw rewards; staleness diagnostics."""
    cfg = trainer.cfg
    conds = [torch.from_numpy(e.cond) for e in episodes]
    cond_all = torch.cat(conds)
    rows = np.cumsum([0] + [len(c) for c in conds])
    dec = np.concatenate([np.arange(rows[k], rows[k + 1] - 1) for k in range(len(episodes))])
    cond = cond_all[dec]
    chain = torch.from_numpy(np.concatenate([e.chain for e in episodes]))
    behaviour = torch.from_numpy(np.concatenate([e.log_prob for e in episodes]))
    with torch.no_grad():
        values_all = trainer.value_fn(cond_all).squeeze(-1).numpy()
        prox = torch.cat([trainer.actor.log_prob(cond[s: s + 256], chain[s: s + 256])[0]
                          for s in range(0, len(cond), 256)])
        bonus = trainer.rnd.bonus(cond).numpy() if trainer.rnd is not None else None
    _, k1, dim = chain.shape
    scale = 1.0 / ((k1 - 1) * dim) if cfg.ppo.log_prob_per_dim else 1.0
    log_ratio = ((prox - behaviour) * scale).numpy().astype(np.float64)
    raw, adv, targets, values = [], [], [], []
    at = 0
    for k, e in enumerate(episodes):
        n = len(e.chain)
        r = combine_rewards(e.success, np.diff(e.progress) if trainer.scorer is not None else None, cfg.reward)
        if bonus is not None:
            r = r + cfg.reward.rnd_coef * bonus[at: at + n]
        raw.append(r)
        end = np.zeros((n, 1), np.float32)
        end[-1] = 1.0
        if cfg.reward.normalize:
            trainer.normalizer.update(r[:, None], end)
            r = trainer.normalizer(r)
        v = values_all[rows[k]: rows[k + 1]]
        term = end * float(e.terminated)
        a, t = off_policy_gae(r[:, None], v[:-1, None], v[1:, None], term, end, cfg.ppo.gamma, cfg.ppo.gae_lambda,
                              log_ratio[at: at + n, None], cfg.ppo.is_clip)
        adv.append(a[:, 0])
        targets.append(t[:, 0])
        values.append(v[:-1])
        at += n
    weights = torch.from_numpy(np.minimum(np.exp(log_ratio), cfg.ppo.is_clip)).float()
    batch = {"cond": cond, "chain": chain, "log_prob": prox, "advantages": torch.from_numpy(np.concatenate(adv)),
             "returns": torch.from_numpy(np.concatenate(targets)),
             "values": torch.from_numpy(np.concatenate(values)).float(), "weights": weights}
    stats = {"is_weight_mean": float(weights.mean()), "is_weight_min": float(weights.min()),
             "behaviour_kl": float(np.mean(-log_ratio))}
    return batch, np.concatenate(raw), stats


def train_ppo_async(trainer, actors, mirror: Mirror | None = None) -> dict[str, Any]:
    """Run ``trainer`` (an RLTrainer: ReinFlow or DPPO) as the learner of asynchronous ``actors`` (which someone
    else started) until ``rl.iterations`` updates; then the actors are stopped and the policy is evaluated."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from robot_rl.runtime.distributed.learner import (
        acted_env_steps,
        actor_stores,
        close_loop,
        evaluate_into,
        final_evaluation,
        read_status,
        write_learner_status,
    )

    cfg, dcfg = trainer.cfg, trainer.cfg.distributed
    meta = json.loads((trainer.run / "rl.json").read_text())
    key = chain_key(cfg, meta["policy"], meta["critic"])
    per_update = cfg.num_envs * cfg.steps_per_iteration
    tb = SummaryWriter(str(trainer.run / "tb"))
    start = time.perf_counter()
    deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else None
    publisher = WeightPublisher(trainer.run / "weights", keep=dcfg.keep_versions, mirror=mirror)
    if publisher.version < 0:
        publisher = prepare_chain(trainer, mirror)
    read = dict(trainer.ingested)  # episodes read per store; the checkpoint names those learned from or dropped
    stores: dict[str, EpisodeStore] = {}
    pending: list[tuple[EpisodeDecisions, bool]] = []
    counts = {"missing": 0}
    state: dict[str, Any] = {"last_eval": None, "eval_envs": None, "t": time.perf_counter()}
    bar = tqdm(total=cfg.iterations, initial=trainer.iteration, desc=f"rl {cfg.algo} async", unit="it",
               disable=not trainer.progress)

    def ingest() -> int:
        n = 0
        for name, store in actor_stores(actors.specs, stores):
            while read.get(name, 0) < store.num_episodes:
                index = read.get(name, 0)
                rows = store.read_episode(index, ["action"])
                dec = EpisodeDecisions.load(chain_path(trainer.run, name, index), rows["action"], key)
                read[name] = index + 1
                if dec is None:  # committed without its decisions (deleted, corrupt, other settings): not learnable
                    counts["missing"] += 1
                    print(f"{name} episode {index}: no decisions file matching it; skipped", flush=True)
                    continue
                stale = publisher.version - int(dec.version.min()) > dcfg.max_policy_lag
                pending.append((dec, stale))
                n += 1
        return n

    def update() -> None:
        episodes = [d for d, stale in pending if not stale]
        lags = np.concatenate([publisher.version - d.version for d in episodes])
        batch, raw, stats = _batch(trainer, episodes)
        t0 = time.perf_counter()
        metrics = trainer.ppo_step(batch, raw)
        trainer.iteration += 1
        trainer.env_steps += sum(d.steps for d in episodes)
        trainer.episodes += len(episodes)
        trainer.stale_episodes += len(pending) - len(episodes)
        trainer.ingested = dict(read)
        pending.clear()
        publisher.publish(published_tensors(trainer.actor), publisher.version + 1)
        status = read_status(trainer)
        now = time.perf_counter()
        wins = [bool(d.success.any()) for d in episodes]
        row = {"iteration": trainer.iteration, "env_steps": trainer.env_steps, "episodes": trainer.episodes,
               "train_success": float(np.mean(wins)), "decisions": len(lags), "update_s": now - t0,
               "iteration_s": now - state["t"], "elapsed_s": now - start,
               "env_steps_per_s": sum(s.get("steps_per_s", 0.0) for s in status),
               "policy_lag": float(lags.mean()), "policy_lag_max": int(lags.max()),
               "stale_episodes": trainer.stale_episodes, "missing_decisions": counts["missing"],
               "weight_version": publisher.version, "sample_to_insert": float(metrics.get("epochs_run", 0.0)),
               **stats, **metrics}
        state["t"] = now
        trainer._log("metrics.csv", row, tb)
        if cfg.eval_every and trainer.iteration % cfg.eval_every == 0 and trainer.iteration < cfg.iterations:
            evaluate_into(trainer, state, tb)
        trainer._save_state()
        bar.update(1)
        bar.set_postfix(success=f"{row['train_success']:.2f}", lag=f"{row['policy_lag']:.1f}",
                        version=publisher.version)

    try:
        while trainer.iteration < cfg.iterations and (deadline is None or time.perf_counter() < deadline):
            for line in actors.check():
                print(line, flush=True)
            new = ingest()
            write_learner_status(trainer.run, read, publisher.version, trainer.iteration)
            if sum(len(d.chain) for d, stale in pending if not stale) >= per_update:
                update()
            elif not new:
                time.sleep(dcfg.poll_s)
        actors.stop()
        final_evaluation(trainer, state, tb)
    except KeyboardInterrupt:
        actors.stop()
        raise
    finally:
        close_loop(actors, bar, stores, state["eval_envs"], tb)
    acted = acted_env_steps(actors.specs)
    return {"iterations": trainer.iteration, "env_steps": trainer.env_steps, "acted_env_steps": acted,
            "episodes": trainer.episodes, "updates": trainer.iteration, "wall_s": time.perf_counter() - start,
            "last_eval": state["last_eval"], "run": str(trainer.run), "weight_version": publisher.version,
            "updates_dropped": 0, "stale_episodes": trainer.stale_episodes,
            "episodes_missing_decisions": counts["missing"]}
