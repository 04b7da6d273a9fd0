"""Behaviour cloning from episode stores: the training loop, checkpoints, resume and logs.

Run folder layout::

    RUN/pretrain.json          the PretrainConfig and the policy config (what --resume checks)
    RUN/env.json               the env config the demos were collected with (for eval)
    RUN/policy/                the latest EMA policy (config.json + model.safetensors)
    RUN/checkpoints/step_N/    policy/ (EMA) + train_state.pt (raw weights, optimiser, schedule, RNG)
    RUN/metrics.csv, RUN/tb/   CSV and TensorBoard logs
    RUN/loss_curve.png         training loss against steps
"""

from __future__ import annotations

import copy
import csv
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import draccus
import numpy as np
import torch
from tqdm import tqdm

from robot_rl.core.errors import ConfigError
from robot_rl.core.files import replace_folder
from robot_rl.policy import Policy, PolicyFeatures, load_policy, make_policy, policy_class
from robot_rl.replay.memory import InMemoryEpisodes, estimate_bytes
from robot_rl.replay.sampling import read_windows
from robot_rl.replay.store import EpisodeStore


@dataclass
class PretrainConfig:
    """Behaviour-cloning settings; ``--policy.<field>`` overrides go to the policy's own config."""

    steps: int = 20000
    """Optimiser steps in total (a resumed run continues to this number)."""
    batch_size: int = 64
    lr: float = 3e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    """Linear warm-up, then cosine decay to zero at ``steps``."""
    ema_decay: float = 0.995
    """Decay of the exponential moving average of the weights that is saved and evaluated."""
    grad_clip: float = 1.0
    checkpoint_every: int = 2000
    keep_checkpoints: int = 2
    log_every: int = 50
    max_minutes: float | None = None
    """Stop (with a checkpoint) after this much wall time, whatever ``steps`` says."""
    seed: int = 0
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    memory_limit_gb: float = 8.0
    """Stores that fit are loaded into memory; larger ones are read from disk."""
    policy: dict[str, Any] = field(default_factory=dict)
    """Policy config fields (set with ``--policy.<field>=...``)."""


def _features_of(store: EpisodeStore) -> PolicyFeatures:
    steps = store.schema["steps"]
    cameras = [k.split("/", 2)[2] for k in steps if k.startswith("obs/images/")]
    sizes = {tuple(steps[f"obs/images/{c}"]["shape"][:2]) for c in cameras}
    if len(sizes) > 1 or any(h != w for h, w in sizes):
        raise ConfigError(f"{store.path}: cameras must share one square image size, got {sorted(sizes)}")
    return PolicyFeatures(
        cameras=cameras,
        image_size=sizes.pop()[0] if sizes else 0,
        state_dim=int(steps["obs/state"]["shape"][0]),
        action_dim=int(steps["action"]["shape"][0]),
    )


class DemoData:
    """Windows of observations and action chunks from one or more stores, with instructions."""

    def __init__(self, paths: list[str], features: PolicyFeatures | None, memory_limit_gb: float) -> None:
        self.stores = [EpisodeStore.open(p) for p in paths]
        self.features = features or _features_of(self.stores[0])
        for store in self.stores:
            theirs = _features_of(store)
            if theirs != self.features:
                raise ConfigError(f"{store.path} has features {theirs}, expected {self.features}")
        self.keys = [f"obs/images/{c}" for c in self.features.cameras] + ["obs/state", "action"]
        needed = sum(estimate_bytes(s, self.keys) for s in self.stores)
        if needed <= memory_limit_gb * 2**30:
            self.source = InMemoryEpisodes.from_stores(self.stores, self.keys)
            self.instructions = self.source.instructions
        elif len(self.stores) == 1:
            self.source = self.stores[0]
            self.instructions = [str(x) for x in self.source.episode_field("instruction")]
        else:
            raise ConfigError(f"the stores need {needed / 2**30:.1f} GiB, over memory_limit_gb={memory_limit_gb}; "
                              "pass one store to read from disk, or raise the limit")
        self.env_config = self.stores[0].env_config
        self.num_steps = self.source.num_steps

    def all_steps(self, key: str) -> np.ndarray:
        if isinstance(self.source, InMemoryEpisodes):
            return self.source.field(key)
        return np.concatenate([self.source.read_episode(i, [key])[key] for i in range(self.source.num_episodes)])

    def sample(self, batch_size: int, horizon: int, n_obs: int, rng: np.random.Generator) -> dict[str, Any]:
        idx = rng.integers(0, self.num_steps, size=batch_size)
        windows = {k: (1 - n_obs, n_obs) for k in self.keys if k != "action"}
        windows["action"] = (0, horizon)
        batch = read_windows(self.source, idx, windows)
        episodes = self.source.episode_of_steps(idx)
        batch["instruction"] = [self.instructions[e] for e in episodes]
        return batch


def _lr_lambda(cfg: PretrainConfig):
    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return fn


@torch.no_grad()
def _ema_update(ema: Policy, model: Policy, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _latest_checkpoint(run: Path) -> Path | None:
    ckpts = sorted((run / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    complete = [c for c in ckpts if (c / "train_state.pt").is_file() and (c / "policy" / "config.json").is_file()]
    return complete[-1] if complete else None


class Pretrainer:
    """Owns one run folder: builds or resumes the policy and trains it."""

    def __init__(self, policy_name: str, data: list[str], out: str | Path, cfg: PretrainConfig,
                 resume: bool = False, progress: bool = True) -> None:
        self.run = Path(out)
        self.cfg = cfg
        self.progress = progress
        if self.run.exists() and any(self.run.iterdir()) and not resume:
            raise ConfigError(f"{self.run} already exists; pass --resume to continue it or choose another --out")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        ckpt = _latest_checkpoint(self.run) if resume else None
        if resume and ckpt is None:
            raise ConfigError(f"nothing to resume in {self.run}: no complete checkpoint")
        saved = json.loads((self.run / "pretrain.json").read_text()) if ckpt else None
        if saved and saved["policy_type"] != policy_name:
            raise ConfigError(f"{self.run} trains a {saved['policy_type']!r} policy, not {policy_name!r}")

        features = draccus.decode(PolicyFeatures, saved["features"]) if saved else None
        self.data = DemoData(data, features, cfg.memory_limit_gb)
        cls = policy_class(policy_name)
        if not cls.cloned:
            raise ConfigError(f"policy {policy_name!r} is not trained by behaviour cloning: it steers a cloned "
                              "policy and comes out of `robot-rl rl` (algo=chunk)")
        fields = {**(saved["policy_config"] if saved else {}), **cfg.policy}
        fields["features"] = draccus.encode(self.data.features)
        try:
            policy_cfg = draccus.decode(cls.config_cls, fields)
        except Exception as exc:
            raise ConfigError(f"invalid --policy settings for {policy_name!r}: {exc}") from None
        torch.manual_seed(cfg.seed)
        self.model = make_policy(policy_name, policy_cfg)
        self.step = 0
        self.rng = np.random.default_rng(cfg.seed)
        if ckpt is None:
            self.model.fit_normalizers(self.data.all_steps("obs/state"), self.data.all_steps("action"))
        self.ema = copy.deepcopy(self.model)
        self.ema.requires_grad_(False)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg))
        if ckpt is not None:
            self._load_checkpoint(ckpt)
        else:
            self.run.mkdir(parents=True, exist_ok=True)
            meta = {"policy_type": policy_name, "data": [str(d) for d in data], "pretrain": asdict(cfg),
                    "policy_config": draccus.encode(policy_cfg), "features": draccus.encode(self.data.features)}
            (self.run / "pretrain.json").write_text(json.dumps(meta, indent=2))
            if self.data.env_config is not None:
                (self.run / "env.json").write_text(json.dumps(self.data.env_config, indent=2))

    # ------------------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> Path:
        def write(tmp: Path) -> None:
            self.ema.save(tmp / "policy")
            state = {
                "step": self.step,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            }
            torch.save(state, tmp / "train_state.pt")
            (tmp / "numpy_rng.json").write_text(json.dumps(self.rng.bit_generator.state))

        final = replace_folder(self.run / "checkpoints" / f"step_{self.step:07d}", write)
        replace_folder(self.run / "policy", lambda tmp: shutil.copytree(final / "policy", tmp))
        ckpts = sorted((self.run / "checkpoints").glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1]))
        for old in ckpts[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _load_checkpoint(self, ckpt: Path) -> None:
        state = torch.load(ckpt / "train_state.pt", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(load_policy(ckpt / "policy").state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = json.loads((ckpt / "numpy_rng.json").read_text())
        self.step = int(state["step"])
        self._truncate_csv(self.step)

    # ------------------------------------------------------------------------------------ logs
    def _truncate_csv(self, step: int) -> None:
        path = self.run / "metrics.csv"
        if path.is_file():
            rows = list(csv.DictReader(path.open()))
            kept = [r for r in rows if int(r["step"]) <= step]
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["step"])
                writer.writeheader()
                writer.writerows(kept)

    def _log(self, row: dict[str, float], tb) -> None:
        path = self.run / "metrics.csv"
        new = not path.is_file() or path.stat().st_size == 0
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if tb is not None:
            for key, value in row.items():
                if key != "step":
                    tb.add_scalar(f"pretrain/{key}", value, int(row["step"]))

    def plot(self) -> Path | None:
        path = self.run / "metrics.csv"
        if not path.is_file():
            return None
        rows = list(csv.DictReader(path.open()))
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [int(r["step"]) for r in rows]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, [float(r["loss"]) for r in rows], lw=1)
        ax.set(xlabel="optimiser step", ylabel="training loss", yscale="log",
               title=f"{json.loads((self.run / 'pretrain.json').read_text())['policy_type']} BC")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = self.run / "loss_curve.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out

    # ----------------------------------------------------------------------------------- train
    def train(self) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        cfg, pcfg = self.cfg, self.model.config
        tb = SummaryWriter(str(self.run / "tb"))
        start, start_step = time.perf_counter(), self.step
        deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else None
        bar = tqdm(total=cfg.steps, initial=self.step, desc="pretrain", unit="step", disable=not self.progress)
        window: list[float] = []
        t_window = time.perf_counter()
        self.model.train()
        try:
            while self.step < cfg.steps and (deadline is None or time.perf_counter() < deadline):
                batch = self.data.sample(cfg.batch_size, pcfg.horizon, pcfg.n_obs_steps, self.rng)
                loss, metrics = self.model.loss(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                _ema_update(self.ema, self.model, min(cfg.ema_decay, (1 + self.step) / (10 + self.step)))
                self.step += 1
                window.append(metrics["loss"])
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    now = time.perf_counter()
                    row = {"step": self.step, "loss": float(np.mean(window)),
                           "lr": self.scheduler.get_last_lr()[0],
                           "samples_per_s": cfg.batch_size * len(window) / (now - t_window),
                           "elapsed_s": now - start}
                    self._log(row, tb)
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    window, t_window = [], now
                if self.step % cfg.checkpoint_every == 0:
                    self._save_checkpoint()
                    self.plot()
        except KeyboardInterrupt:
            self._save_checkpoint()
            bar.close()
            tb.close()
            raise
        bar.close()
        self._save_checkpoint()
        tb.close()
        self.plot()
        return {"steps": self.step, "trained_steps": self.step - start_step,
                "wall_s": time.perf_counter() - start, "run": str(self.run)}
