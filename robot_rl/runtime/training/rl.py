"""Online RL fine-tuning: rollouts of chunk decisions in vectorised envs, critic/sparse rewards, and
PPO updates through ReinFlow or DPPO. The algorithms see only batches.

Run folder::

    RUN/rl.json            the RLConfig, the env config and where the policy and critic came from
    RUN/policy/            the latest fine-tuned policy (acts as saved: ``robot-rl eval`` loads it)
    RUN/state.pt           actor, value net, optimiser, reward normaliser, RNG and counters
    RUN/metrics.csv        one row per iteration;  RUN/eval.csv: one row per evaluation
    RUN/tb/                TensorBoard
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import draccus
import numpy as np
import torch
from tqdm import tqdm

from robot_rl.algos.dppo import DPPOActor, DPPOConfig
from robot_rl.algos.offpolicy import ChunkLearnerConfig
from robot_rl.algos.ppo import (
    PPOConfig,
    ReturnNormalizer,
    compute_gae,
    explained_variance,
    ppo_update,
    value_network,
)
from robot_rl.algos.reinflow import ReinFlowActor, ReinFlowConfig
from robot_rl.algos.rewards import RND, RewardConfig, combine_rewards
from robot_rl.config import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.core.files import replace_folder
from robot_rl.critic.model import ProgressCritic
from robot_rl.critic.reward import CriticReward, ObservationProgress
from robot_rl.envs import get_task
from robot_rl.hil.metrics import EpisodeHelp, help_metrics, plot_help
from robot_rl.hil.protocol import HelpSchedule, HILConfig, RunWrap, load_tracks
from robot_rl.policy import DiffusionPolicy, FlowPolicy, Policy, load_policy
from robot_rl.policy.base import to_tensor
from robot_rl.runtime.distributed.config import BACKENDS, DistributedConfig
from robot_rl.runtime.training.evaluate import EVAL_SEED, ObservationWindows, action_chunks, evaluate_chunked
from robot_rl.runtime.training.progress_finetune import ProgressFinetuneConfig
from robot_rl.runtime.training.vec_env import ChunkVectorEnv

TRAIN_SEED = 2_000_000  # training episodes: apart from demos (0...) and evaluation (1,000,000...)
ALGOS = ("chunk", "reinflow", "dppo")


@dataclass
class RLConfig:
    """Online fine-tuning settings."""

    algo: str = "reinflow"
    """``chunk`` (off-policy: a chunk critic steering the frozen policy; any policy), ``reinflow`` (PPO
    through the denoising chain of flow, shortcut and VLA policies) or ``dppo`` (diffusion policies)."""
    iterations: int = 40
    """Iterations in total (PPO: one rollout and update each; chunk: one round of decisions and the updates
    they pay for); a resumed run continues to this number."""
    num_envs: int = 8
    """Parallel envs."""
    workers: int = 2
    """Env worker processes (0: step the envs in this process)."""
    steps_per_iteration: int = 16
    """Decisions (action chunks) per env per iteration."""
    max_minutes: float | None = None
    """Stop (with a checkpoint) after this much wall time."""
    backend: str = "sync"
    """``sync``: one loop alternates acting and learning; ``local``: actor processes act and commit episodes
    while a learner trains on them and publishes weights (``rl.distributed``); ``ray``: the same as Ray actors.
    ReinFlow/DPPO asynchronously correct for stale episodes with clipped importance ratios (``rl.ppo``)."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    chunk: ChunkLearnerConfig = field(default_factory=ChunkLearnerConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    reinflow: ReinFlowConfig = field(default_factory=ReinFlowConfig)
    dppo: DPPOConfig = field(default_factory=DPPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    progress_finetune: ProgressFinetuneConfig = field(default_factory=ProgressFinetuneConfig)
    """rl.algo=chunk: the progress critic (the dense reward) keeps learning from the run's episodes."""
    hil: HILConfig = field(default_factory=HILConfig)
    """Human in the loop while training (rl.algo=chunk): an operator who takes over (``hil.operator.kind=
    simulated`` in sim) and the graded protocol (``hil.protocol.mode``); the steps they drive are learned from."""
    bc_coef: float = 0.0
    """Weight of the behaviour-cloning loss on demos added to every update (needs ``demos``)."""
    intervention_bc: float = 1.0
    """ReinFlow/DPPO with ``rl.hil``: weight of the behaviour-cloning loss on the operator's chunks (decisions
    whose every executed step the operator drove) added to every update; decisions it touched at all are
    left out of the PPO surrogate (their chain did not produce what ran)."""
    bc_batch_size: int = 32
    finetune_encoder: bool = False
    """Also fine-tune the observation encoder (for a VLA: its LoRA adapters); slower updates."""
    eval_every: int = 5
    """Evaluate the policy (no exploration noise) every this many iterations (0: only at the end)."""
    eval_episodes: int = 24
    value_warmup_iterations: int = 1
    """First iterations update only the value net (a fresh value net would mislead the actor)."""
    seed: int = 0
    threads: int | None = None
    """torch CPU threads in the learner process (None: torch's default)."""
    critic_batch_size: int = 64

    def validate(self) -> None:
        if self.algo not in ALGOS:
            raise ConfigError(f"unknown RL algorithm {self.algo!r}; known: {', '.join(ALGOS)}")
        if self.iterations < 1 or self.num_envs < 1 or self.steps_per_iteration < 1:
            raise ConfigError("iterations, num_envs and steps_per_iteration must be >= 1, got "
                              f"{self.iterations}, {self.num_envs}, {self.steps_per_iteration}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown rl.backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        if self.backend != "sync" and self.algo != "chunk":
            # actors ship each decision's condition (frozen encoder) and the critic's progress with its episode
            unsupported = {"finetune_encoder": self.finetune_encoder,
                           "reward.done=critic": self.reward.done == "critic",
                           "distributed.inference.node": self.distributed.inference.node}
            bad = [k for k, v in unsupported.items() if v]
            if bad:
                raise ConfigError(f"rl.backend={self.backend!r} with rl.algo={self.algo!r} does not support {bad}; "
                                  "run it with rl.backend=sync")
        if self.progress_finetune.enabled and (self.algo != "chunk" or not self.reward.needs_critic):
            raise ConfigError("rl.progress_finetune fine-tunes the progress critic of an rl.algo=chunk run with a "
                              f"critic reward; this run has algo={self.algo!r}, reward.kind={self.reward.kind!r}")
        self.hil.validate()
        if self.hil.enabled and self.distributed.robot.namespaces:
            raise ConfigError("rl.hil drives simulated envs; on a robot the operator takes over at its bridge "
                              "(teleop/takeover, teleop/action and teleop/label topics)")
        if self.hil.enabled and self.algo != "chunk" and self.backend != "sync":
            raise ConfigError(f"rl.hil with rl.algo={self.algo!r} runs with rl.backend=sync (asynchronous actors take "
                              "help in rl.algo=chunk runs only)")
        if self.intervention_bc < 0:
            raise ConfigError(f"rl.intervention_bc must be >= 0, got {self.intervention_bc}")
        try:
            self.reward.validate()
            self.progress_finetune.validate()
            if self.backend != "sync":
                self.distributed.validate(self.num_envs)
            if self.algo == "chunk":
                self.chunk.validate()
            else:
                self.ppo.validate()
                (self.reinflow if self.algo == "reinflow" else self.dppo).validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def make_actor(policy: Policy, cfg: RLConfig):
    if cfg.algo == "reinflow":
        if not isinstance(policy, FlowPolicy):
            raise ConfigError(f"ReinFlow fine-tunes flow/shortcut/VLA policies; this one is {policy.name!r} "
                              "(use algo=dppo for diffusion)")
        return ReinFlowActor(policy, cfg.reinflow)
    if not isinstance(policy, DiffusionPolicy):
        raise ConfigError(f"DPPO fine-tunes diffusion policies; this one is {policy.name!r} (use algo=reinflow)")
    return DPPOActor(policy, cfg.dppo)


def run_wrap(hil: HILConfig, task: str, demos: list[str], critic_dir: str | None, seed: int) -> RunWrap | None:
    """How a run's training envs are wrapped for ``rl.hil`` (None: not at all): the protocol's demo tracks and,
    for the simulated operator's stall trigger, the progress critic (scored where the envs run)."""
    if not hil.enabled:
        return None
    tracks = load_tracks(demos) if hil.needs_demos else None
    progress = None
    if hil.operator.stall_steps and critic_dir is not None:
        progress = ObservationProgress(critic_dir, get_task(task).instruction)
    return RunWrap(hil, task, tracks, seed=seed, progress=progress)


class RunLog:
    """The run folder's logs, shared by the RL trainers: ``metrics.csv`` / ``eval.csv`` rows (cut back to the
    checkpoint on resume) mirrored to TensorBoard against env steps. Needs ``run``, ``iteration``,
    ``env_steps``, ``cfg.eval_episodes`` and ``evaluate(envs, episodes)``."""

    def _truncate_csv(self, name: str) -> None:
        """Drop rows written after the checkpoint (a crash between log and checkpoint)."""
        path = self.run / name
        if not path.is_file():
            return
        with path.open() as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if int(r["iteration"]) <= self.iteration]
        if len(keep) != len(rows):
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
                writer.writeheader()
                writer.writerows(keep)

    def _log(self, name: str, row: dict[str, Any], tb) -> None:
        path = self.run / name
        new = not path.is_file()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row.keys()), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        prefix = name.split(".")[0]
        for k, v in row.items():
            if k not in ("iteration",) and isinstance(v, (int, float)) and math.isfinite(v):
                tb.add_scalar(f"{prefix}/{k}", v, self.env_steps)

    def _eval_row(self, envs: ChunkVectorEnv, tb) -> dict[str, Any]:
        res = self.evaluate(envs, self.cfg.eval_episodes)
        row = {"iteration": self.iteration, "env_steps": self.env_steps, "success_rate": res["success_rate"],
               "ci_low": res["success_ci95"][0], "ci_high": res["success_ci95"][1],
               "mean_length": res["mean_length"], "episodes": res["episodes"]}
        self._log("eval.csv", row, tb)
        return row


class RLTrainer(RunLog):
    """Owns one RL run folder: builds or resumes the actor and runs PPO iterations."""

    def __init__(self, policy_dir: str | Path, env_config: EnvConfig, out: str | Path, cfg: RLConfig,
                 critic_dir: str | Path | None = None, demos: list[str] | None = None,
                 resume: bool = False, progress: bool = True) -> None:
        cfg.validate()
        if cfg.algo == "chunk":
            raise ConfigError("algo=chunk is the off-policy learner: "
                              "robot_rl.runtime.training.offpolicy.ChunkRLTrainer")
        self.cfg, self.run, self.progress = cfg, Path(out), progress
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.reward.needs_critic and critic_dir is None:
            raise ConfigError(f"reward kind={cfg.reward.kind!r} done={cfg.reward.done!r} needs a critic checkpoint")
        if cfg.bc_coef > 0 and not demos:
            raise ConfigError("bc_coef > 0 needs demo stores")
        if cfg.hil.needs_demos and not demos:
            raise ConfigError(f"protocol mode {cfg.hil.protocol.mode!r} replays demos: give the run demo stores")
        self.demo_paths = list(demos or [])
        self.critic_dir = None if critic_dir is None else str(critic_dir)
        state_file = self.run / "state.pt"
        if self.run.exists() and any(self.run.iterdir()) and not resume:
            raise ConfigError(f"{self.run} exists and is not empty: pass resume to continue it, or another folder")
        self.run.mkdir(parents=True, exist_ok=True)
        meta = {"rl": draccus.encode(cfg), "env": asdict(env_config), "policy": str(policy_dir),
                "critic": None if critic_dir is None else str(critic_dir), "demos": demos or []}
        meta_file = self.run / "rl.json"
        if meta_file.is_file():
            saved = json.loads(meta_file.read_text())
            if saved["rl"]["algo"] != cfg.algo:
                raise ConfigError(f"{self.run} was trained with algo={saved['rl']['algo']}, not {cfg.algo}")
        meta_file.write_text(json.dumps(meta, indent=2))
        (self.run / "env.json").write_text(json.dumps(asdict(env_config), indent=2))

        self.policy = load_policy(policy_dir)
        self.env_config = env_config
        self.instruction = get_task(env_config.task).instruction
        self.actor = make_actor(self.policy, cfg)
        if not cfg.finetune_encoder:
            self.policy.obs_encoder.requires_grad_(False)
        self.value_fn = value_network(self.policy.obs_encoder.out_dim)
        groups = self.actor.trainable_groups()
        param_groups = [{"params": groups["actor"], "lr": cfg.ppo.actor_lr, "name": "actor"},
                        {"params": groups["noise"], "lr": cfg.ppo.noise_lr, "name": "noise"},
                        {"params": list(self.value_fn.parameters()), "lr": cfg.ppo.critic_lr, "name": "value"}]
        if cfg.finetune_encoder:
            enc = [p for p in self.policy.obs_encoder.parameters() if p.requires_grad]
            param_groups.append({"params": enc, "lr": cfg.ppo.actor_lr, "name": "encoder"})
        self.optimizer = torch.optim.Adam([g for g in param_groups if g["params"]])
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.rnd = RND(self.policy.obs_encoder.out_dim) if cfg.reward.rnd_coef > 0 else None
        self.rnd_opt = torch.optim.Adam(self.rnd.predictor.parameters(), lr=1e-4) if self.rnd else None
        self.normalizer = ReturnNormalizer(cfg.ppo.gamma)
        self.scorer = None
        if critic_dir is not None and cfg.reward.needs_critic:
            critic = ProgressCritic.load(critic_dir)
            missing = [c for c in critic.config.cameras if c not in env_config.cameras]
            if missing:
                raise ConfigError(f"the critic reads cameras {missing} that the env does not render "
                                  f"(env cameras: {env_config.cameras})")
            self.scorer = CriticReward(critic, batch_size=cfg.critic_batch_size,
                                       done_threshold=cfg.reward.done_threshold)
            self.critic_cameras = critic.config.cameras
        self.demos = None
        if cfg.bc_coef > 0:
            from robot_rl.runtime.training.pretrain import DemoData

            self.demos = DemoData(list(demos), self.policy.config.features, memory_limit_gb=4.0)
        self.iteration, self.env_steps, self.episodes = 0, 0, 0
        self.env_episodes: list[int] | None = None
        self.ingested: dict[str, int] = {}  # asynchronous runs: episodes learned from (or dropped), per actor store
        self.stale_episodes = 0  # asynchronous runs: episodes dropped as too stale (rl.distributed.max_policy_lag)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        if resume and state_file.is_file():
            self._load_state(state_file)
            self._truncate_csv("metrics.csv")
            self._truncate_csv("eval.csv")

    # ------------------------------------------------------------------------------ checkpoints
    def _save_state(self) -> None:
        tmp = self.run / "state.pt.tmp"
        state = {
            "actor": self.actor.state_dict(), "value": self.value_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(), "normalizer": self.normalizer.state_dict(),
            "rnd": self.rnd.state_dict() if self.rnd else None,
            "rnd_opt": self.rnd_opt.state_dict() if self.rnd_opt else None,
            "iteration": self.iteration, "env_steps": int(self.env_steps), "episodes": self.episodes,
            "env_episodes": None if self.env_episodes is None else [int(e) for e in self.env_episodes],
            "ingested": json.dumps(self.ingested), "stale_episodes": int(self.stale_episodes),
            "torch_rng": self.generator.get_state(),
            "np_rng": json.dumps(self.np_rng.bit_generator.state),
        }
        torch.save(state, tmp)
        replace_folder(self.run / "policy", self.actor.export_policy().save)
        tmp.replace(self.run / "state.pt")  # the state file is the commit: it names the iteration

    def _load_state(self, path: Path) -> None:
        state = torch.load(path, weights_only=True)
        self.actor.load_state_dict(state["actor"])
        self.value_fn.load_state_dict(state["value"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.normalizer.load_state_dict(state["normalizer"])
        if self.rnd is not None and state["rnd"] is not None:
            self.rnd.load_state_dict(state["rnd"])
            self.rnd_opt.load_state_dict(state["rnd_opt"])
        self.iteration, self.env_steps, self.episodes = state["iteration"], state["env_steps"], state["episodes"]
        self.env_episodes = state["env_episodes"]
        self.ingested = json.loads(state.get("ingested", "{}"))
        self.stale_episodes = int(state.get("stale_episodes", 0))
        self.generator.set_state(state["torch_rng"])
        self.np_rng.bit_generator.state = json.loads(state["np_rng"])

    # ----------------------------------------------------------------------------------- acting
    def _frames(self, observations: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {c: np.stack([o["images"][c] for o in observations]) for c in self.critic_cameras}

    def _score(self, observations: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        if self.scorer is None or not observations:
            n = len(observations)
            return np.zeros(n, np.float32), np.zeros(n, np.float32)
        return self.scorer.score_frames(self._frames(observations), self.instruction)

    @torch.no_grad()
    def _encode(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.policy.encode(batch)

    def collect(self, envs: ChunkVectorEnv, obs: list[dict[str, Any]]) -> tuple[dict[str, Any], list]:
        """``steps_per_iteration`` decisions in every env; returns the rollout batch and the
        observations to continue from."""
        cfg, n = self.cfg, envs.num_envs
        hist = ObservationWindows(n, self.policy.config.n_obs_steps, self.instruction)
        for i, o in enumerate(obs):
            hist.start(i, o)
        progress, _ = self._score(obs)
        buf: dict[str, list] = {k: [] for k in ("cond", "chain", "log_prob", "value", "next_value", "success",
                                                "terminated", "ended", "delta", "obs", "operated",
                                                "operator_all", "operator_chunk")}
        helps: list[EpisodeHelp] = []
        finished: list[bool] = []  # success of every episode that ended
        steps = 0
        self.policy.eval()
        batch = hist.batch()
        cond = self._encode(batch)
        for _ in range(cfg.steps_per_iteration):
            with torch.no_grad():
                actions, chain, log_prob = self.actor.sample(cond, generator=self.generator)
                value = self.value_fn(cond).squeeze(-1)
            results = envs.step_chunks(action_chunks(self.policy, actions))
            end_progress, end_done = self._score([r.final_obs if r.ended else r.obs for r in results])
            if cfg.reward.done == "critic":  # the critic's done head ends episodes the env would not
                for i in np.flatnonzero(end_done > self.scorer.done_threshold):
                    r = results[int(i)]
                    if not r.ended:
                        r.final_obs, r.terminated, r.obs = r.obs, True, envs.reset_one(int(i))
            ended = np.array([r.ended for r in results])
            final_rows = np.flatnonzero(ended)
            if cfg.hil.enabled:
                self._note_help(results, buf, helps)
            # V's input after each decision: the next decision's condition for envs that go on, the
            # window ending in the final observation for envs whose episode ended
            finals = ObservationWindows(len(final_rows), self.policy.config.n_obs_steps, self.instruction)
            for j, i in enumerate(final_rows):
                finals.frames[j].extend(hist.frames[i])
                finals.push(j, results[i].final_obs)
            for i, r in enumerate(results):
                if r.ended:
                    hist.start(i, r.obs)
                else:
                    hist.push(i, r.obs)
            next_batch = hist.batch()
            next_cond = self._encode(next_batch)
            with torch.no_grad():
                next_value = self.value_fn(next_cond).squeeze(-1)
                if len(final_rows):
                    next_value[final_rows] = self.value_fn(self._encode(finals.batch())).squeeze(-1)
            delta = end_progress - progress
            progress = end_progress.copy()
            if len(final_rows):  # a fresh episode's progress starts from its first observation
                progress[final_rows] = self._score([results[i].obs for i in final_rows])[0]
            steps += sum(r.steps for r in results)
            finished.extend(bool(results[i].success) for i in final_rows)
            buf["cond"].append(cond)
            buf["chain"].append(chain)
            buf["log_prob"].append(log_prob)
            buf["value"].append(value.numpy())
            buf["next_value"].append(next_value.numpy())
            buf["success"].append(np.array([r.success for r in results]))
            buf["terminated"].append(np.array([r.terminated for r in results]))
            buf["ended"].append(ended)
            buf["delta"].append(delta)
            if cfg.finetune_encoder:
                buf["obs"].append(batch)
            batch, cond = next_batch, next_cond
        rollout = {k: v for k, v in buf.items() if v}
        rollout["steps"] = steps
        rollout["finished"] = finished
        rollout["help"] = helps
        return rollout, [r.obs for r in results]

    def _note_help(self, results: list, buf: dict[str, list], helps: list[EpisodeHelp]) -> None:
        """Which decisions the operator touched, the operator's chunk where it drove all of one (normalised,
        padded to the horizon with its last action, as pre-training pads), and each finished episode's help."""
        pc = self.policy.config
        n = len(results)
        touched, whole = np.zeros(n, bool), np.zeros(n, bool)
        chunks = np.zeros((n, pc.horizon * pc.features.action_dim), np.float32)
        for i, r in enumerate(results):
            flags = self._episode_flags[i]
            flags.extend(r.intervened)
            self._episode_helped[i] = self._episode_helped[i] or r.helped
            touched[i], whole[i] = any(r.intervened), bool(r.intervened) and all(r.intervened)
            if whole[i]:
                taken = r.taken[: pc.horizon]
                padded = np.concatenate([taken, np.repeat(taken[-1:], pc.horizon - len(taken), axis=0)])
                chunks[i] = self.policy.action_norm(torch.as_tensor(padded)).reshape(-1).numpy()
            if r.ended:
                helps.append(EpisodeHelp.of(np.array(flags, bool), r.success, self._episode_helped[i]))
                self._episode_flags[i], self._episode_helped[i] = [], False
        buf["operated"].append(touched)
        buf["operator_all"].append(whole)
        buf["operator_chunk"].append(chunks)

    # ---------------------------------------------------------------------------------- learning
    def advantages(self, rollout: dict[str, Any]) -> dict[str, Any]:
        """Raw rewards, GAE advantages, returns and values (T, N) of a rollout, and its conditions;
        updates the reward normaliser."""
        cfg = self.cfg
        success = np.stack(rollout["success"])
        terminated = np.stack(rollout["terminated"]).astype(np.float32)
        ended = np.stack(rollout["ended"]).astype(np.float32)
        delta = np.stack(rollout["delta"]) if self.scorer is not None else None
        rewards = combine_rewards(success, delta, cfg.reward)
        cond = torch.cat(rollout["cond"])
        if self.rnd is not None:
            bonus = self.rnd.bonus(cond).numpy().reshape(rewards.shape)
            rewards = rewards + cfg.reward.rnd_coef * bonus
        raw_rewards = rewards
        if cfg.reward.normalize:
            self.normalizer.update(rewards, ended)
            rewards = self.normalizer(rewards)
        values, next_values = np.stack(rollout["value"]), np.stack(rollout["next_value"])
        adv, returns = compute_gae(rewards, values, next_values, terminated, ended, cfg.ppo.gamma, cfg.ppo.gae_lambda)
        return {"raw_rewards": raw_rewards, "advantages": adv, "returns": returns, "values": values, "cond": cond}

    def update(self, rollout: dict[str, Any], advantages: dict[str, Any] | None = None) -> dict[str, float]:
        """One PPO update on a rollout; ``advantages``: what ``advantages(rollout)`` already returned
        for it (computing them again would count its rewards twice in the normaliser)."""
        cfg = self.cfg
        a = advantages if advantages is not None else self.advantages(rollout)
        cond, adv, returns, values = a["cond"], a["advantages"], a["returns"], a["values"]
        batch = {
            "cond": cond, "chain": torch.cat(rollout["chain"]), "log_prob": torch.cat(rollout["log_prob"]),
            "advantages": to_tensor(adv.reshape(-1)), "returns": to_tensor(returns.reshape(-1)),
            "values": to_tensor(values.reshape(-1)).float(),
        }
        operator = None
        if "operated" in rollout:  # rows in the order of cond: decision step-major, env-minor
            touched = np.concatenate(rollout["operated"])
            if touched.any():
                batch["weights"] = torch.as_tensor(~touched, dtype=torch.float32)
            whole = np.flatnonzero(np.concatenate(rollout["operator_all"]))
            if len(whole):
                operator = (cond[whole], torch.as_tensor(np.concatenate(rollout["operator_chunk"])[whole]))
        encode = None
        if cfg.finetune_encoder:
            obs = rollout["obs"]
            merged = {k: np.concatenate([o[k] for o in obs]) for k in obs[0] if k != "instruction"}
            merged["instruction"] = [x for o in obs for x in o["instruction"]]

            def encode(idx: torch.Tensor) -> torch.Tensor:
                rows = idx.numpy()
                sub = {k: (v[rows] if k != "instruction" else [v[i] for i in rows]) for k, v in merged.items()}
                return self.policy.encode(sub)

        return self.ppo_step(batch, a["raw_rewards"], encode, operator=operator)

    def ppo_step(self, batch: dict[str, torch.Tensor], raw_rewards: np.ndarray, encode=None,
                 operator: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
        """The PPO update of one batch (see ``ppo_update``), the BC regulariser and RND with it, at this
        iteration's learning rates; shared by the synchronous loop and the asynchronous learner.
        ``operator``: (conditions, normalised chunks) the operator drove, cloned with ``intervention_bc``."""
        cfg = self.cfg
        cond, values, returns = batch["cond"], batch["values"].numpy(), batch["returns"].numpy()
        bc_loss, bc_coef = None, cfg.bc_coef
        pc = self.policy.config
        if self.demos is not None:

            def bc_loss() -> torch.Tensor:
                return self.actor.bc_loss(self.demos.sample(cfg.bc_batch_size, pc.horizon, pc.n_obs_steps, self.np_rng))
        if operator is not None and cfg.intervention_bc > 0:
            demo_bc = bc_loss

            def bc_loss() -> torch.Tensor:  # the coefficients inside: one closure for both kinds of data
                rows = torch.as_tensor(self.np_rng.choice(len(operator[0]), min(cfg.bc_batch_size, len(operator[0])),
                                                          replace=False))
                loss = cfg.intervention_bc * self.actor.policy.chunk_loss(operator[0][rows], operator[1][rows],
                                                                          self.generator)
                return loss if demo_bc is None else loss + cfg.bc_coef * demo_bc()

            bc_coef = 1.0

        frac = 1.0 - self.iteration / cfg.iterations if cfg.ppo.lr_schedule == "linear" else 1.0
        warmup = self.iteration < cfg.value_warmup_iterations
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = 0.0 if warmup and group["name"] != "value" else lr * frac
        self.policy.train()
        self.policy.obs_encoder.train(cfg.finetune_encoder)
        metrics = ppo_update(self.actor, self.value_fn, self.optimizer, batch, cfg.ppo, encode=encode,
                             bc_loss=bc_loss, bc_coef=bc_coef, generator=self.generator)
        self.policy.eval()
        if self.rnd is not None:
            loss = self.rnd.loss(cond)
            self.rnd_opt.zero_grad()
            loss.backward()
            self.rnd_opt.step()
            metrics["rnd_loss"] = loss.item()
        metrics["reward_mean"] = float(raw_rewards.mean())
        metrics["explained_variance"] = explained_variance(values.reshape(-1), returns.reshape(-1))
        return metrics

    # -------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, envs: ChunkVectorEnv, episodes: int, seed: int = EVAL_SEED) -> dict[str, Any]:
        """Success of the policy without exploration noise on held-out seeds, N episodes at a time."""
        return evaluate_chunked(envs, lambda cond: self.actor.sample(cond, deterministic=True,
                                                                     generator=self.generator)[0],
                                self.policy, episodes, seed)

    # ------------------------------------------------------------------------------------ the loop
    def train(self) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        if self.cfg.backend != "sync":
            from robot_rl.runtime.distributed import launch

            return launch(self)
        cfg = self.cfg
        tb = SummaryWriter(str(self.run / "tb"))
        start = time.perf_counter()
        deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else None
        schedule = HelpSchedule(cfg.hil.protocol)
        wrap = run_wrap(cfg.hil, self.env_config.task, self.demo_paths, self.critic_dir,
                        seed=TRAIN_SEED + 10_000_000 * cfg.seed)
        envs = ChunkVectorEnv(self.env_config, cfg.num_envs, cfg.workers, seed=TRAIN_SEED + 10_000_000 * cfg.seed,
                              episodes=self.env_episodes, wrap=wrap)
        eval_envs = envs if wrap is None else None  # held-out evaluations never get help
        self._episode_flags = [[] for _ in range(cfg.num_envs)]
        self._episode_helped = [False] * cfg.num_envs
        bar = tqdm(total=cfg.iterations, initial=self.iteration, desc=f"rl {cfg.algo}", unit="it",
                   disable=not self.progress)
        last_eval = None
        try:
            envs.set_help(schedule.steps())
            obs = envs.reset()
            while self.iteration < cfg.iterations and (deadline is None or time.perf_counter() < deadline):
                t0 = time.perf_counter()
                rollout, obs = self.collect(envs, obs)
                t1 = time.perf_counter()
                metrics = self.update(rollout)
                t2 = time.perf_counter()
                self.iteration += 1
                self.env_steps += rollout["steps"]
                self.episodes += len(rollout["finished"])
                wins = rollout["finished"]
                row = {"iteration": self.iteration, "env_steps": self.env_steps, "episodes": self.episodes,
                       "train_success": float(np.mean(wins)) if wins else float("nan"),
                       "rollout_s": t1 - t0, "update_s": t2 - t1, "iteration_s": t2 - t0,
                       "elapsed_s": time.perf_counter() - start,
                       **(dict(help_metrics(rollout["help"]), help_steps=schedule.steps()) if cfg.hil.enabled
                          else {}), **metrics}
                self._log("metrics.csv", row, tb)
                if cfg.hil.protocol.mode != "none":
                    schedule.record(wins)
                    envs.set_help(schedule.steps())
                if cfg.eval_every and self.iteration % cfg.eval_every == 0 and self.iteration < cfg.iterations:
                    eval_envs = eval_envs or ChunkVectorEnv(self.env_config, cfg.num_envs, cfg.workers)
                    last_eval = self._eval_row(eval_envs, tb)
                    if eval_envs is envs:
                        obs = envs.reset()
                self.env_episodes = envs.episode_counters()
                self._save_state()
                bar.update(1)
                bar.set_postfix(success=f"{row['train_success']:.2f}", steps=self.env_steps)
            if self.iteration >= cfg.iterations and (last_eval is None or last_eval["iteration"] != self.iteration):
                eval_envs = eval_envs or ChunkVectorEnv(self.env_config, cfg.num_envs, cfg.workers)
                last_eval = self._eval_row(eval_envs, tb)
        except KeyboardInterrupt:
            self.env_episodes = envs.episode_counters()
            self._save_state()
            raise
        finally:
            bar.close()
            envs.close()
            if eval_envs is not None and eval_envs is not envs:
                eval_envs.close()
            tb.close()
        if cfg.hil.enabled:
            plot_help(self.run)
        return {"iterations": self.iteration, "env_steps": self.env_steps, "episodes": self.episodes,
                "wall_s": time.perf_counter() - start, "last_eval": last_eval, "run": str(self.run)}
