"""The main job, ``robot-rl train CONFIG``: demos -> behaviour cloning -> progress critic -> evaluation
-> online RL fine-tuning -> evaluation, in one run folder. Every stage reuses what a previous run left
(complete stages are skipped, interrupted ones resume from their last checkpoint).

Run folder::

    OUT/demos.zarr, OUT/failures.zarr   expert demos (with done frames) and failed rollouts
    OUT/bc/                             behaviour cloning run (see runtime/training/pretrain.py)
    OUT/rollouts.zarr                   the cloned policy's own episodes: the critic's successes and failures
    OUT/critic/                         progress-critic run (see runtime/training/critic_train.py)
    OUT/rl/                             RL run (see runtime/training/rl.py); OUT/rl/policy is the fine-tuned policy
    OUT/eval_before.json, OUT/eval_after.json
    OUT/eval_before.zarr                the held-out evaluation episodes of the cloned policy
    OUT/critic_eval.json                the critic on those held-out episodes: does it rank success above failure?
    OUT/learning_curve.png              success against env steps, the BC level marked
    OUT/summary.json                    success_before, success_after, env_steps, wall_s, ...
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import draccus
import torch

from robot_rl.config import EnvConfig
from robot_rl.runtime.training.critic_train import CriticTrainConfig
from robot_rl.runtime.training.pretrain import PretrainConfig
from robot_rl.runtime.training.rl import RLConfig


@dataclass
class DemoSpec:
    """Scripted-expert episodes to collect."""

    episodes: int = 40
    noise: float = 0.1
    """Std of the Gaussian noise on the expert's actions."""
    seed: int = 0
    """Seed of the first episode."""
    extra_steps: int | None = 3
    """Steps recorded after the first success (done frames for the critic); None: stop at success."""
    max_steps: int | None = None
    """Episode time limit (None: the task's)."""


@dataclass
class TrainJobConfig:
    """The whole job; ``--section.field=value`` overrides any field."""

    out: str = "data/quickstart"
    """Run folder (stages found complete there are reused)."""
    env: EnvConfig = field(default_factory=lambda: EnvConfig(task="push", image_size=64))
    policy: str = "flow"
    """Policy type: flow, shortcut or vla (ReinFlow), diffusion (DPPO)."""
    demos: DemoSpec = field(default_factory=DemoSpec)
    failures: DemoSpec = field(default_factory=lambda: DemoSpec(episodes=15, noise=1.0, seed=30_000,
                                                                  extra_steps=None, max_steps=40))
    """Failed rollouts (a very noisy expert) for the critic's negatives."""
    rollouts: DemoSpec = field(default_factory=lambda: DemoSpec(episodes=48, seed=2_000_000, extra_steps=None))
    """Episodes of the cloned policy itself (seeds apart from the held-out ones), labelled by the env's
    success, for the critic: its failures are the negatives that matter (0 episodes: none). Only
    ``episodes`` and ``seed`` apply."""
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(steps=2000, warmup_steps=200))
    critic: CriticTrainConfig = field(default_factory=lambda: CriticTrainConfig(steps=1200))
    rl: RLConfig = field(default_factory=RLConfig)
    eval_episodes: int = 48
    """Held-out episodes for the before/after evaluation."""
    eval_workers: int | None = None
    """Env processes of the before/after evaluation (None: as rl.workers)."""


def _stage(name: str) -> None:
    print(f"\n== {name}", flush=True)


def _collect(env: EnvConfig, spec: DemoSpec, path: Path, progress: bool) -> None:
    from robot_rl.replay.store import EpisodeStore
    from robot_rl.runtime.training.collect import collect_demos

    have = 0
    if path.exists():
        with EpisodeStore.open(path) as store:
            have = store.num_episodes
    if have >= spec.episodes:
        print(f"reusing {path} ({have} episodes)")
        return
    cfg = copy.deepcopy(env)
    cfg.max_steps = spec.max_steps or cfg.max_steps
    res = collect_demos(cfg, spec.episodes - have, path, noise=spec.noise, seed=spec.seed + have,
                        append=have > 0, progress=progress, extra_steps=spec.extra_steps)
    print(f"collected {res.episodes} episodes into {path}: success rate {res.success_rate:.3f}")


def _evaluate(policy_dir: Path, env: EnvConfig, cfg: TrainJobConfig, out: Path, episodes: int | None = None,
              seed: int | None = None, record: Path | None = None, state: dict | None = None) -> dict[str, Any]:
    """Success of a saved policy as it acts (its own sampler and step count) on held-out seeds; with
    ``record`` every episode is committed to that (new) store. An earlier result in ``out`` is reused only
    for the same policy folder, episode count and ``state`` (e.g. the RL iteration whose policy it measured:
    a run continued further is evaluated again)."""
    from robot_rl.policy import load_policy
    from robot_rl.runtime.training.evaluate import EVAL_SEED, evaluate_saved

    episodes = cfg.eval_episodes if episodes is None else episodes
    seed = EVAL_SEED if seed is None else seed
    if out.is_file() and (record is None or record.exists()):
        saved = json.loads(out.read_text())
        if (saved.get("policy_dir") == str(policy_dir) and saved["episodes"] == episodes
                and saved.get("state") == state):
            print(f"reusing {out}: success {saved['success_rate']:.3f}")
            return saved
    policy = load_policy(policy_dir)
    workers = cfg.rl.workers if cfg.eval_workers is None else cfg.eval_workers
    # an interrupted recording is recorded again, whole
    res = evaluate_saved(policy, env, episodes, seed, cfg.rl.num_envs, workers, record=record,
                         overwrite=record is not None and record.exists())
    res.update(policy_dir=str(policy_dir), state=state,
               sampling_steps=getattr(policy.config, "num_inference_steps", None))
    out.write_text(json.dumps(res, indent=2))
    print(f"success {res['success_rate']:.3f} (95% CI {res['success_ci95'][0]:.2f}-{res['success_ci95'][1]:.2f}) "
          f"over {res['episodes']} episodes (seeds from {seed}" + (", held out)" if seed == EVAL_SEED else ")"))
    return res


def run_job(cfg: TrainJobConfig, progress: bool = True) -> dict[str, Any]:
    from robot_rl.envs import get_task
    from robot_rl.runtime.training.critic_train import train_critic
    from robot_rl.runtime.training.offpolicy import ChunkRLTrainer
    from robot_rl.runtime.training.pretrain import Pretrainer
    from robot_rl.runtime.training.rl import RLTrainer

    get_task(cfg.env.task)  # an unknown task fails before anything is written
    cfg.rl.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "job.json").write_text(json.dumps(draccus.encode(cfg), indent=2))
    start = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        return result

    _stage(f"1/7 demos: {cfg.demos.episodes} expert episodes of {cfg.env.task}")
    demos, failures = out / "demos.zarr", out / "failures.zarr"
    timed("demos", lambda: _collect(cfg.env, cfg.demos, demos, progress))
    needs_critic = cfg.rl.reward.needs_critic
    if needs_critic:
        timed("failures", lambda: _collect(cfg.env, cfg.failures, failures, progress))

    _stage(f"2/7 behaviour cloning: {cfg.policy}, {cfg.pretrain.steps} steps")
    bc = out / "bc"
    resume = (bc / "pretrain.json").is_file()
    trainer = Pretrainer(cfg.policy, [str(demos)], bc, cfg.pretrain, resume=resume, progress=progress)
    if trainer.step >= cfg.pretrain.steps:
        print(f"reusing {bc} (step {trainer.step})")
    else:
        timed("pretrain", trainer.train)

    rl_env = copy.deepcopy(cfg.env)
    rl_env.terminate_on_success = True
    critic_dir, critic_data = None, [str(demos), str(failures)]
    if needs_critic:
        rollouts = out / "rollouts.zarr"
        if cfg.rollouts.episodes > 0:
            _stage(f"3/7 the cloned policy's own episodes for the critic: {cfg.rollouts.episodes}")
            timed("rollouts", lambda: _evaluate(bc / "policy", rl_env, cfg, out / "rollouts.json",
                                                cfg.rollouts.episodes, cfg.rollouts.seed, record=rollouts))
            critic_data.append(str(rollouts))
        _stage(f"4/7 progress critic: {cfg.critic.steps} steps")
        critic_run = out / "critic"
        state = critic_run / "train_state.pt"
        done_steps = int(torch.load(state, weights_only=True)["step"]) if state.is_file() else 0
        if done_steps >= cfg.critic.steps:
            print(f"reusing {critic_run} (step {done_steps})")
        else:
            timed("critic", lambda: train_critic(critic_data, critic_run, cfg.critic,
                                                 resume=state.is_file(), progress=progress))
        critic_dir = critic_run / "critic"

    _stage("5/7 evaluation of the BC policy")
    record = out / "eval_before.zarr" if needs_critic else None
    before = timed("eval_before", lambda: _evaluate(bc / "policy", rl_env, cfg, out / "eval_before.json",
                                                    record=record))
    critic_check = timed("critic_check", lambda: _check_critic(critic_dir, record, out / "critic_eval.json")) \
        if critic_dir is not None else None

    _stage(f"6/7 RL fine-tuning: {cfg.rl.algo}, reward {cfg.rl.reward.kind}, {cfg.rl.iterations} iterations")
    rl_run = out / "rl"
    trainer_cls = ChunkRLTrainer if cfg.rl.algo == "chunk" else RLTrainer
    rl = trainer_cls(bc / "policy", rl_env, rl_run, cfg.rl, critic_dir=critic_dir, demos=[str(demos)],
                     resume=rl_run.exists(), progress=progress)
    if rl.iteration >= cfg.rl.iterations:
        print(f"reusing {rl_run} (iteration {rl.iteration})")
    else:
        timed("rl", rl.train)

    _stage("7/7 evaluation of the fine-tuned policy")
    after = timed("eval_after", lambda: _evaluate(rl_run / "policy", rl_env, cfg, out / "eval_after.json",
                                                  state={"rl_iteration": rl.iteration}))
    curve = plot_learning_curve(rl_run, before["success_rate"], out / "learning_curve.png")
    summary = {
        "task": cfg.env.task, "policy": cfg.policy, "algo": cfg.rl.algo, "reward": cfg.rl.reward.kind,
        "success_before": before["success_rate"], "success_before_ci95": before["success_ci95"],
        "success_after": after["success_rate"], "success_after_ci95": after["success_ci95"],
        "improvement_points": round(100 * (after["success_rate"] - before["success_rate"]), 1),
        "eval_episodes": cfg.eval_episodes, "env_steps": rl.env_steps, "rl_iterations": rl.iteration,
        "wall_s": round(time.perf_counter() - start, 1), "stage_s": timings,
        "learning_curve": str(curve) if curve else None, "policy_dir": str(rl_run / "policy"),
        "critic_on_cloned_rollouts": critic_check,
    }
    if getattr(rl, "acted_env_steps", None) is not None:  # asynchronous actors: what they acted, learned from or not
        summary["acted_env_steps"] = rl.acted_env_steps
    if (out / "summary.json").is_file():  # a resumed job: wall time adds up over its sessions
        prev = json.loads((out / "summary.json").read_text())
        summary["wall_s_previous_sessions"] = prev.get("wall_s", 0) + prev.get("wall_s_previous_sessions", 0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nsuccess {summary['success_before']:.3f} (BC) -> {summary['success_after']:.3f} "
          f"({summary['improvement_points']:+.1f} points) after {rl.env_steps} env steps; "
          f"summary in {out / 'summary.json'}")
    return summary


def _check_critic(critic_dir: Path, rollouts: Path, out: Path) -> dict[str, Any]:
    """The critic on the cloned policy's held-out episodes: AUROC of the final value (successes over
    failures), the done head's false positives on failures, a failure's return relative to a success's."""
    from robot_rl.runtime.training.critic_train import eval_critic

    if out.is_file():
        saved = json.loads(out.read_text())
        if saved.get("critic") == str(critic_dir) and saved.get("rollouts") == str(rollouts):
            return saved
    res = eval_critic(critic_dir, None, [str(rollouts)])
    res = {"critic": str(critic_dir), "rollouts": str(rollouts),
           **{k.removeprefix("rollout_"): v for k, v in res.items()}}
    out.write_text(json.dumps(res, indent=2))
    print(f"critic on the held-out episodes ({res['successes']} successes, {res['failures']} failures): "
          f"final-value AUROC {res['final_value_auroc']:.3f}, done fires on {res['done_fpr_failed']:.0%} of "
          f"failures, a failure's return {res['failed_return_ratio']:.2f} of a success's")
    return res


def plot_learning_curve(rl_run: Path, bc_success: float, out: Path) -> Path | None:
    """Evaluation success (and training-episode success) against env steps, the BC level dashed."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def rows(name):
        path = rl_run / name
        if not path.is_file():
            return []
        with path.open() as f:
            return list(csv.DictReader(f))

    evals, train = rows("eval.csv"), rows("metrics.csv")
    if not evals and not train:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axhline(bc_success, color="gray", linestyle="--", label=f"BC ({bc_success:.2f})")
    if train:
        xs = [int(r["env_steps"]) for r in train if r["train_success"] not in ("", "nan")]
        ys = [float(r["train_success"]) for r in train if r["train_success"] not in ("", "nan")]
        ax.plot(xs, ys, color="tab:blue", alpha=0.35, label="training episodes (with exploration noise)")
    if evals:
        xs = [0] + [int(r["env_steps"]) for r in evals]
        ys = [bc_success] + [float(r["success_rate"]) for r in evals]
        ax.plot(xs, ys, marker="o", color="tab:red", label="held-out evaluation")
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"RL fine-tuning ({rl_run})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
