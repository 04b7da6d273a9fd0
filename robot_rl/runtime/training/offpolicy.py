"""Off-policy fine-tuning on action chunks (``rl.algo=chunk``): a frozen cloned policy, steered by small
heads that a chunk critic trains, in a real robot's sample budget.

Collection and learning meet only at the episode store and the replay: ``collect_round`` acts and commits
finished episodes; ``learn`` runs updates on replay batches. An asynchronous actor/learner swaps the loop.

Run folder::

    RUN/rl.json          the RLConfig, the env config and where the policy, critic and demos came from
    RUN/online.zarr      every finished online episode (source: policy, policy_version per step)
    RUN/learner.pt       heads, target nets, optimisers, counters, RNG (and, with rl.progress_finetune, the
                         progress critic's weights): the commit point of the learner
    RUN/progress_critic/ with rl.progress_finetune: the fine-tuned progress critic (``robot-rl critic eval``)
    RUN/policy/          the steered policy (the frozen base in policy/base/); ``robot-rl eval`` loads it
    RUN/metrics.csv      one row per round;  RUN/eval.csv: one row per evaluation;  RUN/tb/: TensorBoard

Killed at any point, a run resumes from ``learner.pt`` and rebuilds its replay from the demo stores and
``online.zarr``: every committed episode is kept, episodes in flight are lost.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import draccus
import numpy as np
import torch
from tqdm import tqdm

from robot_rl.algos.offpolicy import ChunkLearner
from robot_rl.config import EnvConfig
from robot_rl.core.errors import ConfigError
from robot_rl.core.files import replace_folder
from robot_rl.core.schema import Episode
from robot_rl.critic.model import ProgressCritic
from robot_rl.critic.reward import CriticReward
from robot_rl.envs import get_task
from robot_rl.hil.metrics import EpisodeHelp, help_metrics, plot_help
from robot_rl.hil.protocol import HelpSchedule, RunWrap
from robot_rl.policy import SteeredPolicy, load_policy
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.training.chunk_replay import (
    ChunkFeaturizer,
    ChunkReplay,
    Derived,
    load_derived,
    save_derived,
    until_first_success,
)
from robot_rl.runtime.training.evaluate import EVAL_SEED, ObservationWindows, action_chunks, evaluate_chunked
from robot_rl.runtime.training.progress_finetune import ProgressFinetuner
from robot_rl.runtime.training.rl import TRAIN_SEED, RLConfig, RunLog, run_wrap
from robot_rl.runtime.training.rollouts import EpisodeAssembler
from robot_rl.runtime.training.vec_env import ChunkVectorEnv

DEMO_SEED, ONLINE_SEED = 7_000_000, 8_000_000  # candidate-noise seeds of derived data (rebuilt identically)
ONLINE_STORE = "online.zarr"
ACTORS_DIR = "actors"  # one episode store per asynchronous actor (runtime/distributed)
DEMO_FEATURES = "demo_features"  # the demos' replay data, computed once per run


def shipped_path(run: Path, store: str, index: int) -> Path:
    """Where the actor committing episode ``index`` to ``store`` leaves the replay's data of it (its features,
    candidates and rewards), so that the learner need not compute them again."""
    return Path(run) / ACTORS_DIR / store.replace(".zarr", ".features") / f"{index:010d}.npz"


def featurizer_key(cfg: RLConfig, policy_dir: str | Path, critic_dir: str | Path | None) -> str:
    """What shipped derived data must have been computed with to be used (see ``load_derived``)."""
    return json.dumps({"policy": str(policy_dir), "critic": None if critic_dir is None else str(critic_dir),
                       "reward": draccus.encode(cfg.reward), "candidates": cfg.chunk.cached_candidates}, sort_keys=True)


def build_featurizer(base, cfg: RLConfig, critic_dir: str | Path | None, env_config: EnvConfig,
                     instruction: str) -> ChunkFeaturizer:
    """Episode -> replay data with the frozen ``base`` and the progress critic at ``critic_dir`` (where the
    reward needs it): the learner's and, when actors ship it, each actor's."""
    scorer = None
    if cfg.reward.needs_critic:
        critic = ProgressCritic.load(critic_dir)
        missing = [c for c in critic.config.cameras if c not in env_config.cameras]
        if missing:
            raise ConfigError(f"the critic reads cameras {missing} that the env does not render "
                              f"(env cameras: {env_config.cameras})")
        scorer = CriticReward(critic, batch_size=cfg.critic_batch_size)
    return ChunkFeaturizer(base, cfg.reward, scorer, cfg.chunk.cached_candidates, instruction)


def derived_seed(store: str, index: int) -> int:
    """The candidate-noise seed of an online episode's derived data: a function of where it is stored."""
    if store == ONLINE_STORE:
        return ONLINE_SEED + index
    actor = int(store.removeprefix("actor_").removesuffix(".zarr"))
    return ONLINE_SEED + 1_000_000 * (actor + 1) + index


@torch.no_grad()
def choose_chunks(policy: SteeredPolicy, cond: torch.Tensor, candidates: int, explore: float,
                  generator: torch.Generator) -> torch.Tensor:
    """Training decisions: the best of ``candidates`` chunks by the policy's Q-ensemble, a random one with
    probability ``explore``; normalised flat chunks (B, H*A)."""
    _, chunks = policy.propose(cond, candidates, deterministic=False, generator=generator)
    if candidates == 1:
        return chunks[:, 0]
    best = policy.score(cond, chunks).argmax(dim=1)
    rand = torch.randint(0, candidates, best.shape, generator=generator)
    pick = torch.where(torch.rand(best.shape, generator=generator) < explore, rand, best)
    return chunks[torch.arange(chunks.shape[0]), pick]


def decide(policy: SteeredPolicy, batch: dict[str, Any], candidates: int, explore: float,
           generator: torch.Generator) -> np.ndarray:
    """Observation windows -> the action chunks to execute (env units), chosen as ``choose_chunks`` does."""
    return action_chunks(policy, choose_chunks(policy, policy.encode(batch), candidates, explore, generator))


class ChunkRLTrainer(RunLog):
    """Owns one off-policy run folder: builds or resumes the learner, acts, learns, evaluates."""

    def __init__(self, policy_dir: str | Path, env_config: EnvConfig, out: str | Path, cfg: RLConfig,
                 critic_dir: str | Path | None = None, demos: list[str] | None = None,
                 resume: bool = False, progress: bool = True) -> None:
        cfg.validate()
        if cfg.algo != "chunk":
            raise ConfigError(f"ChunkRLTrainer runs algo=chunk, not {cfg.algo!r}")
        self.cfg, self.cc, self.run, self.progress = cfg, cfg.chunk, Path(out), progress
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.reward.needs_critic and critic_dir is None:
            raise ConfigError(f"reward kind={cfg.reward.kind!r} needs a critic checkpoint")
        if cfg.reward.done == "critic":
            raise ConfigError("rl.algo=chunk ends episodes where the env does (reward.done=env)")
        if self.run.exists() and any(self.run.iterdir()) and not resume:
            raise ConfigError(f"{self.run} exists and is not empty: pass resume to continue it, or another folder")
        self.run.mkdir(parents=True, exist_ok=True)
        meta_file = self.run / "rl.json"
        if meta_file.is_file() and json.loads(meta_file.read_text())["rl"]["algo"] != "chunk":
            raise ConfigError(f"{self.run} was trained with another algorithm")
        meta_file.write_text(json.dumps({"rl": draccus.encode(cfg), "env": asdict(env_config),
                                         "policy": str(policy_dir), "critic": None if critic_dir is None
                                         else str(critic_dir), "demos": demos or []}, indent=2))
        (self.run / "env.json").write_text(json.dumps(asdict(env_config), indent=2))
        self.env_config = env_config
        self.demos = list(demos or [])
        self.critic_dir = None if critic_dir is None else str(critic_dir)
        if cfg.hil.needs_demos and not self.demos:
            raise ConfigError(f"protocol mode {cfg.hil.protocol.mode!r} replays demos: give the run demo stores")
        task = get_task(env_config.task)
        self.instruction, self.task_name = task.instruction, env_config.task

        base = load_policy(policy_dir)
        if isinstance(base, SteeredPolicy):
            base = base.base  # a steered policy is fine-tuned again from its frozen base
        cc, st = self.cc, self.cc.steering
        self.policy = SteeredPolicy.wrap(
            base, mode=cc.mode, best_of=cc.eval_best_of, q_ensemble=cc.critic.ensemble,
            q_hidden_dim=cc.critic.hidden_dim, q_layers=cc.critic.layers, head_hidden_dim=st.hidden_dim,
            head_layers=st.layers, noise_bound=st.noise_bound, residual_scale=st.residual_scale,
            rank_std_coef=cc.rank_std_coef)
        torch.manual_seed(cfg.seed)
        self.learner = ChunkLearner(self.policy, cc)
        if cfg.hil.enabled and cc.mode == "noise" and cc.intervention_bc > 0:
            try:  # the BC term inverts the base's noise -> chunk map: fail now, not at the first takeover
                base.invert_noise(torch.zeros(1, self.policy.config.feature_dim), torch.zeros(1, base.chunk_dim))
            except ConfigError as exc:
                raise ConfigError(f"{exc}: run rl.chunk.mode=noise with rl.chunk.intervention_bc=0, or mode=residual") \
                    from None
        self.featurizer = build_featurizer(base, cfg, critic_dir, env_config, self.instruction)
        self.features_key = featurizer_key(cfg, policy_dir, critic_dir)
        self.features_counts = {"shipped": 0, "computed": 0}  # online episodes' replay data: from actors, here
        scorer = self.featurizer.scorer
        # before any episode is scored: a resumed run scores with the critic as it was fine-tuned
        state_file = self.run / "learner.pt"
        state = torch.load(state_file, weights_only=True) if resume and state_file.is_file() else None
        self.finetuner = None
        if state is not None and cfg.progress_finetune.enabled != ("progress_critic" in state):
            raise ConfigError(f"{state_file} was saved with rl.progress_finetune "
                              f"{'off' if cfg.progress_finetune.enabled else 'on'}: resume with the run's own settings")
        if cfg.progress_finetune.enabled:
            self.finetuner = ProgressFinetuner(scorer.critic, cfg.progress_finetune, Path(critic_dir),
                                               None if state is None else state["progress_critic"], seed=cfg.seed)
        pc = base.config
        self.replay = ChunkReplay(self.policy.config.feature_dim, pc.features.action_dim, pc.n_action_steps,
                                  cc.cached_candidates, cc.critic.gamma, full_horizon=pc.horizon)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.iteration, self.env_steps, self.episodes = 0, 0, 0
        self.ingested: dict[str, int] = {}  # committed online episodes in the replay, per store
        self.env_episodes: list[int] | None = None
        self._load_demos(demos or [])
        self.store_path = self.run / ONLINE_STORE
        if not self.store_path.exists():
            EpisodeStore.create(self.store_path).close()
        saved: dict[str, int] = {}
        if state is not None:
            saved = self._load_state(state, state_file)
            self._truncate_csv("metrics.csv")
            self._truncate_csv("eval.csv")
        self._load_online(saved)
        self.schedule = HelpSchedule(cfg.hil.protocol)  # k from the run's latest online episodes, resumed too
        self.schedule.record([s for s, d in zip(self.replay.ep_success, self.replay.ep_demo) if not d])

    # ------------------------------------------------------------------------------------ replay
    def _load_demos(self, demos: list[str]) -> None:
        paths = [p for p in demos]
        total = 0
        for path in paths:
            with EpisodeStore.open(path) as store:
                total += store.num_episodes
        bar = tqdm(total=total, desc="demos -> features", unit="ep", disable=not self.progress)
        k = 0
        cache = self.actors_ship_features  # the featurizer is frozen: what it made once holds for the run
        for path in paths:
            folder = self.run / DEMO_FEATURES / hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:16]
            with EpisodeStore.open(path) as store:
                for i in range(store.num_episodes):
                    ep = until_first_success(store.episode(i))
                    key = f"{self.features_key}|{DEMO_SEED + k}"
                    derived = load_derived(folder / f"{i:010d}.npz", ep, key) if cache else None
                    if derived is None:
                        derived = self.featurizer(ep, seed=DEMO_SEED + k)
                        if cache:  # a restarted learner (or the learner process after its supervisor) reads it
                            save_derived(folder / f"{i:010d}.npz", derived, ep, key)
                    self.replay.add(derived, demo=True)
                    k += 1
                    bar.update(1)
        bar.close()
        if self.cc.demo_fraction > 0 and not k:
            raise ConfigError("rl.chunk.demo_fraction > 0 needs demo stores")

    def online_stores(self) -> list[Path]:
        """The run's own episode stores: ``online.zarr`` (the synchronous loop's) and one per actor."""
        return [self.store_path, *sorted((self.run / ACTORS_DIR).glob("actor_*.zarr"))]

    def ingest(self, store: EpisodeStore, name: str, count_steps_from: int | None = None,
               limit: int | None = None) -> list[Derived]:
        """The store's committed episodes that are not in the replay yet (at most ``limit``), each exactly
        once (by store and index); those from index ``count_steps_from`` on (default: all) add their env
        steps."""
        start = self.ingested.setdefault(name, 0)
        stop = store.num_episodes if limit is None else min(store.num_episodes, start + limit)
        out = []
        for i in tqdm(range(start, stop), desc=f"{name} -> features", unit="ep",
                      disable=not self.progress or stop - start < 50):
            ep = store.episode(i)
            out.append(self._add_online(ep, name))
            if count_steps_from is None or i >= count_steps_from:
                self.env_steps += len(ep)
        return out

    def _add_online(self, ep: Episode, name: str) -> Derived:
        """One committed online episode, the next of store ``name``, into the replay (and the progress
        critic's fine-tuning data)."""
        index = self.ingested.get(name, 0)
        derived = None
        if self.actors_ship_features and name != ONLINE_STORE:
            derived = load_derived(shipped_path(self.run, name, index), ep, self.features_key)
        self.features_counts["shipped" if derived is not None else "computed"] += 1
        if derived is None:
            derived = self.featurizer(ep, seed=derived_seed(name, index))
        self.replay.add(derived, demo=False)
        if self.finetuner is not None:
            self.finetuner.add(ep)
        self.ingested[name] = index + 1
        self.episodes = sum(self.ingested.values())
        return derived

    @property
    def actors_ship_features(self) -> bool:
        """Whether asynchronous actors compute the replay data of their episodes (with the same frozen base
        and critic, the same seeds): not when either learns during the run (rl.progress_finetune, base_bc)."""
        return self.finetuner is None and self.learner.base_opt is None

    def _load_online(self, saved: dict[str, int]) -> None:
        """Every committed online episode into the replay; those committed after the last learner
        checkpoint also count their env steps."""
        for path in self.online_stores():
            with EpisodeStore.open(path) as store:
                self.ingest(store, path.name, count_steps_from=saved.get(path.name, 0))

    # -------------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        lr = self.learner
        opts = {"critic": lr.critic.optimizer.state_dict()}
        if lr.noise is not None:
            opts.update(actor=lr.noise.actor_opt.state_dict(), noise_critic=lr.noise.critic_opt.state_dict(),
                        alpha=lr.noise.alpha_opt.state_dict())
        if lr.residual is not None:
            opts["actor"] = lr.residual.optimizer.state_dict()
        base = {}
        if lr.base_opt is not None:  # the base's action head learns too: its weights are part of the commit
            opts["base"] = lr.base_opt.state_dict()
            base = self.policy.base.state_dict()
        tuned = {} if self.finetuner is None else {"progress_critic": self.finetuner.state_dict()}
        learner = {k: v for k, v in lr.state_dict().items() if not k.startswith("policy.")}
        return {**tuned, "base": base, "learner": learner,
                "optimizers": opts, "updates": lr.updates, "iteration": self.iteration,
                "env_steps": int(self.env_steps), "episodes": self.episodes, "ingested": dict(self.ingested),
                "env_episodes": None if self.env_episodes is None else [int(e) for e in self.env_episodes],
                "torch_rng": self.generator.get_state(), "np_rng": json.dumps(self.np_rng.bit_generator.state)}

    def _save_state(self, export: bool) -> None:
        if export:
            replace_folder(self.run / "policy", self.policy.save)
        if self.finetuner is not None and export:
            self.finetuner.export(self.run / "progress_critic")
        tmp_state = self.run / "learner.pt.tmp"
        torch.save(self._state(), tmp_state)
        tmp_state.replace(self.run / "learner.pt")  # the commit point: it names the update count

    def _load_state(self, state: dict, path: Path) -> dict[str, int]:
        lr = self.learner
        missing, unexpected = lr.load_state_dict(state["learner"], strict=False)
        if unexpected or [k for k in missing if not k.startswith("policy.")]:
            raise ConfigError(f"{path} does not match this learner (mode {self.cc.mode!r})")
        opts = state["optimizers"]
        lr.critic.optimizer.load_state_dict(opts["critic"])
        if lr.noise is not None:
            lr.noise.actor_opt.load_state_dict(opts["actor"])
            lr.noise.critic_opt.load_state_dict(opts["noise_critic"])
            lr.noise.alpha_opt.load_state_dict(opts["alpha"])
        if lr.residual is not None:
            lr.residual.optimizer.load_state_dict(opts["actor"])
        if lr.base_opt is not None:
            if not state.get("base"):
                raise ConfigError(f"{path} was saved with a frozen base policy; this run clones it further "
                                  "(rl.chunk.base_bc > 0): resume with the run's own settings")
            self.policy.base.load_state_dict(state["base"])
            lr.base_opt.load_state_dict(opts["base"])
        lr.updates, self.iteration, self.env_steps = state["updates"], state["iteration"], state["env_steps"]
        self.env_episodes = state["env_episodes"]
        self.generator.set_state(state["torch_rng"])
        self.np_rng.bit_generator.state = json.loads(state["np_rng"])
        # older checkpoints name only the synchronous loop's store
        return dict(state.get("ingested") or {ONLINE_STORE: int(state["episodes"])})

    # ------------------------------------------------------------------------------------ acting
    def choose(self, cond: torch.Tensor) -> torch.Tensor:
        n = self.cc.candidates if self.iteration >= self.cc.base_rounds else 1
        return choose_chunks(self.policy, cond, n, self.cc.explore, self.generator)

    def env_wrap(self) -> RunWrap | None:
        """How the training envs are wrapped for ``rl.hil`` (None: not at all)."""
        return run_wrap(self.cfg.hil, self.task_name, self.demos, self.critic_dir,
                        seed=TRAIN_SEED + 10_000_000 * self.cfg.seed)

    def collect_round(self, envs: ChunkVectorEnv, hist: ObservationWindows, asm: list[EpisodeAssembler],
                      store: EpisodeStore) -> dict[str, Any]:
        """``steps_per_iteration`` decisions in every env; finished episodes are committed to the store
        and added to the replay."""
        steps, finished, returns, helps = 0, [], [], []
        self.policy.eval()
        for _ in range(self.cfg.steps_per_iteration):
            cond = self.policy.encode(hist.batch())
            actions = action_chunks(self.policy, self.choose(cond))
            results = envs.step_chunks(list(actions), record=True)
            for i, r in enumerate(results):
                steps += r.steps
                ep = asm[i].add(actions[i], r, self.iteration)
                if ep is not None:
                    store.append(ep)
                    derived = self._add_online(ep, ONLINE_STORE)
                    finished.append(derived.success)
                    returns.append(float(derived.rewards.sum()))
                    helps.append(EpisodeHelp.of(ep.intervention, derived.success, asm[i].last_helped))
                    hist.start(i, r.obs)
                else:
                    hist.push(i, r.obs)
        return {"steps": steps, "finished": finished, "returns": returns, "help": helps}

    # ---------------------------------------------------------------------------------- learning
    def learn(self, updates: int, critic_only: bool = False) -> dict[str, float]:
        sums: dict[str, float] = {}
        self.learner.train()
        for _ in range(updates):
            batch = self.replay.sample(self.cc.batch_size, self.cc.demo_fraction, self.np_rng, self.cc.online_window)
            for k, v in self.learner.update(batch, self.generator, critic_only=critic_only).items():
                sums[k] = sums.get(k, 0.0) + v
        self.learner.eval()
        return {k: v / max(updates, 1) for k, v in sums.items()}

    def imitate(self, updates: int) -> dict[str, float]:
        """Behaviour cloning of the base policy's action head on the demos and successful online episodes."""
        losses = []
        horizon = self.policy.base.config.horizon
        for _ in range(updates):
            batch = self.replay.sample_successes(self.cc.batch_size, horizon, self.cc.demo_fraction, self.np_rng)
            if batch is None:
                break
            losses.append(self.learner.imitate(batch["features"], batch["chunks"], self.generator)["bc_loss"])
        self.policy.base.eval()
        return {"bc_loss": float(np.mean(losses))} if losses else {}

    @torch.no_grad()
    def evaluate(self, envs: ChunkVectorEnv, episodes: int, seed: int = EVAL_SEED) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(seed)
        self.policy.eval()
        return evaluate_chunked(envs, lambda cond: self.policy.sample(cond, generator=generator), self.policy,
                                episodes, seed)

    # ------------------------------------------------------------------------------------ the loop
    def train(self) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        if self.cfg.backend != "sync":
            from robot_rl.runtime.distributed import launch

            return launch(self)
        cfg, cc = self.cfg, self.cc
        tb = SummaryWriter(str(self.run / "tb"))
        start = time.perf_counter()
        deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else None
        if self.learner.updates < cc.warmup_updates:
            t = time.perf_counter()
            m = self.learn(cc.warmup_updates - self.learner.updates, critic_only=True)
            print(f"critic warm-up on the replay: {cc.warmup_updates} updates in {time.perf_counter() - t:.0f} s "
                  f"(q_mean {m.get('q_mean', float('nan')):.3f})", flush=True)
            self._save_state(export=True)
        envs = ChunkVectorEnv(self.env_config, cfg.num_envs, cfg.workers, seed=TRAIN_SEED + 10_000_000 * cfg.seed,
                              episodes=self.env_episodes, wrap=self.env_wrap())
        if cfg.hil.protocol.mode != "none":
            envs.set_help(self.schedule.steps())
        eval_envs = None
        bar = tqdm(total=cfg.iterations, initial=self.iteration, desc="rl chunk", unit="round",
                   disable=not self.progress)
        last_eval = None
        store = EpisodeStore.open(self.store_path, mode="a")
        try:
            obs = envs.reset()
            hist = ObservationWindows(cfg.num_envs, self.policy.config.n_obs_steps, self.instruction)
            asm = [EpisodeAssembler(self.task_name, self.instruction) for _ in range(cfg.num_envs)]
            for i, o in enumerate(obs):
                hist.start(i, o)
                asm[i].start(o)
            while self.iteration < cfg.iterations and (deadline is None or time.perf_counter() < deadline):
                t0 = time.perf_counter()
                help_steps = self.schedule.steps()
                rollout = self.collect_round(envs, hist, asm, store)
                if cfg.hil.protocol.mode != "none":
                    self.schedule.record(rollout["finished"])
                    envs.set_help(self.schedule.steps())
                t1 = time.perf_counter()
                self.env_steps += rollout["steps"]
                metrics = self.learn(max(1, round(cc.utd * rollout["steps"])))
                if cc.base_bc > 0:
                    metrics.update(self.imitate(max(1, round(cc.base_bc * rollout["steps"]))))
                if self.finetuner is not None and (self.iteration + 1) % cfg.progress_finetune.every == 0:
                    metrics.update(self.finetuner.burst())
                t2 = time.perf_counter()
                self.iteration += 1
                wins = rollout["finished"]
                row = {"iteration": self.iteration, "env_steps": self.env_steps, "episodes": self.episodes,
                       "updates": self.learner.updates,
                       "train_success": float(np.mean(wins)) if wins else float("nan"),
                       "episode_return": float(np.mean(rollout["returns"])) if wins else float("nan"),
                       "rollout_s": t1 - t0, "update_s": t2 - t1, "elapsed_s": time.perf_counter() - start,
                       **(dict(help_metrics(rollout["help"]), help_steps=help_steps) if cfg.hil.enabled else {}),
                       **metrics}
                self._log("metrics.csv", row, tb)
                evaluate = cfg.eval_every and self.iteration % cfg.eval_every == 0 and self.iteration < cfg.iterations
                if evaluate:
                    eval_envs = eval_envs or ChunkVectorEnv(self.env_config, cfg.num_envs, cfg.workers)
                    last_eval = self._eval_row(eval_envs, tb)
                self.env_episodes = envs.episode_counters()
                self._save_state(export=bool(evaluate))
                bar.update(1)
                bar.set_postfix(steps=self.env_steps, updates=self.learner.updates,
                                success=f"{row['train_success']:.2f}", ret=f"{row['episode_return']:.2f}")
            self._save_state(export=True)
            if self.iteration >= cfg.iterations and (last_eval is None or last_eval["iteration"] != self.iteration):
                eval_envs = eval_envs or ChunkVectorEnv(self.env_config, cfg.num_envs, cfg.workers)
                last_eval = self._eval_row(eval_envs, tb)
        except KeyboardInterrupt:
            self.env_episodes = envs.episode_counters()
            self._save_state(export=True)
            raise
        finally:
            bar.close()
            store.close()
            envs.close()
            if eval_envs is not None:
                eval_envs.close()
            tb.close()
        if cfg.hil.enabled:
            plot_help(self.run)
        return {"iterations": self.iteration, "env_steps": self.env_steps, "episodes": self.episodes,
                "updates": self.learner.updates, "wall_s": time.perf_counter() - start, "last_eval": last_eval,
                "run": str(self.run)}
