"""Training and evaluation runs of the progress critic on episode stores.

Run folder: ``critic/`` (the latest saved critic), ``train_state.pt`` (optimiser, schedule, step),
``split.json`` (the held-out episodes of every store), ``metrics.csv`` and ``tb/``.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import draccus
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from robot_rl.core.errors import ConfigError
from robot_rl.core.files import replace_folder
from robot_rl.critic.config import CriticConfig
from robot_rl.critic.dataset import PairSampler, load_episodes
from robot_rl.critic.metrics import evaluate_critic, evaluate_on_rollouts
from robot_rl.critic.model import ProgressCritic
from robot_rl.nn import random_shift
from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.training.pretrain import _lr_lambda


@dataclass
class CriticTrainConfig:
    """Critic training settings; ``--critic.<field>`` overrides go to the CriticConfig."""

    steps: int = 3000
    batch_size: int = 32
    """Pairs per step."""
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    value_weight: float = 1.0
    """Weight of the per-frame progress loss beside the pair-delta loss."""
    done_weight: float = 1.0
    label_failures: bool = True
    """Label every frame of a failed episode progress 0 (delta 0 between its frames); False leaves failed
    episodes without progress labels (done = 0 only)."""
    augment_shift: int = 4
    """Random-shift augmentation of every training image, in pixels (0 disables)."""
    holdout: float = 0.2
    """Fraction of successful and of failed episodes of each task kept out of training, for eval."""
    checkpoint_every: int = 500
    log_every: int = 25
    max_minutes: float | None = None
    seed: int = 0
    critic: dict[str, Any] = field(default_factory=dict)


def _episodes_of(paths: list[str], cameras: list[str], split: dict | None, part: str):
    out = []
    for path in paths:
        store = EpisodeStore.open(path)
        indices = None if split is None or path not in split else split[path][part]
        out += load_episodes(store, cameras, indices)
    return out


def _cameras_of(path: str) -> tuple[list[str], int]:
    steps = EpisodeStore.open(path).schema["steps"]
    cams = [k.split("/", 2)[2] for k in steps if k.startswith("obs/images/")]
    if not cams:
        raise ConfigError(f"{path} holds no camera images: the critic needs them")
    return cams, int(steps[f"obs/images/{cams[0]}"]["shape"][0])


def _make_split(paths: list[str], holdout: float, seed: int) -> dict:
    """Per store, the indices of training and held-out episodes (stratified by task and outcome)."""
    split = {}
    for path in paths:
        store = EpisodeStore.open(path)
        tasks = store.episode_field("task")
        success = store.episode_field("success")
        rng = np.random.default_rng(seed)
        held = []
        for key in {(str(t), bool(s)) for t, s in zip(tasks, success)}:
            group = [i for i in range(store.num_episodes) if (str(tasks[i]), bool(success[i])) == key]
            n = int(round(holdout * len(group))) if len(group) > 1 else 0
            held += [int(x) for x in rng.permutation(group)[:n]]
        split[path] = {"train": sorted(set(range(store.num_episodes)) - set(held)), "heldout": sorted(held)}
    return split


def augment(batch, pad: int):
    """Shift every image of a PairBatch by up to ``pad`` pixels (DrQ-style), independently."""
    if pad <= 0:
        return batch
    def shift(images: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
        return random_shift(x, pad).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    batch.frames_a = {c: shift(v) for c, v in batch.frames_a.items()}
    batch.frames_b = {c: shift(v) for c, v in batch.frames_b.items()}
    return batch


def critic_loss(critic: ProgressCritic, batch, cfg: CriticTrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    out = critic(batch.frames_a, batch.frames_b, batch.instructions)
    dev = out.delta.device
    t = lambda x: torch.as_tensor(x, device=dev)  # noqa: E731
    dmask, vmask = t(batch.delta_mask).float(), t(batch.value_mask).float()
    delta_loss = ((out.delta - t(batch.delta)) ** 2 * dmask).sum() / dmask.sum().clamp_min(1)
    value_err = (out.value_a - t(batch.value_a)) ** 2 + (out.value_b - t(batch.value_b)) ** 2
    value_loss = (value_err * vmask).sum() / vmask.sum().clamp_min(1)
    done_loss = F.binary_cross_entropy(out.done.clamp(1e-6, 1 - 1e-6), t(batch.done_b).float())
    loss = delta_loss + cfg.value_weight * value_loss + cfg.done_weight * done_loss
    return loss, {"loss": loss.item(), "delta_loss": delta_loss.item(), "value_loss": value_loss.item(),
                  "done_loss": done_loss.item()}


def train_critic(data: list[str], out: str | Path, cfg: CriticTrainConfig, resume: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    run = Path(out)
    data = [str(Path(d).resolve()) for d in data]  # the split is keyed by absolute paths
    if run.exists() and any(run.iterdir()) and not resume:
        raise ConfigError(f"{run} already exists; pass --resume to continue it or choose another --out")
    if resume and not (run / "train_state.pt").is_file():
        raise ConfigError(f"nothing to resume in {run}: no train_state.pt")
    cameras, size = _cameras_of(data[0])
    if resume:
        meta = json.loads((run / "critic_train.json").read_text())
        split, critic = meta["split"], ProgressCritic.load(run / "critic")
    else:
        split = _make_split(data, cfg.holdout, cfg.seed)
        fields = {"cameras": cameras, "image_size": size, **cfg.critic}
        try:
            critic_cfg = draccus.decode(CriticConfig, fields)
        except Exception as exc:
            raise ConfigError(f"invalid --critic settings: {exc}") from None
        torch.manual_seed(cfg.seed)
        critic = ProgressCritic(critic_cfg)
        run.mkdir(parents=True, exist_ok=True)
        meta = {"data": data, "split": split, "train": asdict(cfg), "critic": draccus.encode(critic_cfg)}
        (run / "critic_train.json").write_text(json.dumps(meta, indent=2))
    train_eps = _episodes_of(data, critic.config.cameras, split, "train")
    sampler = PairSampler(train_eps, seed=cfg.seed, label_failures=cfg.label_failures)
    params = [p for p in critic.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    step = 0
    if resume:
        state = torch.load(run / "train_state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        sampler.rng = np.random.default_rng(cfg.seed + step)

    def checkpoint():
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   run / "train_state.tmp")
        replace_folder(run / "critic", critic.save)
        (run / "train_state.tmp").replace(run / "train_state.pt")

    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(run / "tb"))
    csv_path = run / "metrics.csv"
    start = time.perf_counter()
    deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else None
    bar = tqdm(total=cfg.steps, initial=step, desc="critic", unit="step", disable=not progress)
    critic.train()
    window: list[dict] = []
    try:
        while step < cfg.steps and (deadline is None or time.perf_counter() < deadline):
            loss, metrics = critic_loss(critic, augment(sampler.sample(cfg.batch_size), cfg.augment_shift), cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            window.append(metrics)
            bar.update(1)
            if step % cfg.log_every == 0:
                row = {"step": step, **{k: float(np.mean([m[k] for m in window])) for k in window[0]},
                       "elapsed_s": time.perf_counter() - start}
                new = not csv_path.is_file()
                with csv_path.open("a", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=list(row))
                    if new:
                        writer.writeheader()
                    writer.writerow(row)
                for k, v in row.items():
                    if k != "step":
                        tb.add_scalar(f"critic/{k}", v, step)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                window = []
            if step % cfg.checkpoint_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        raise
    finally:
        bar.close()
        tb.close()
    checkpoint()
    return {"steps": step, "wall_s": time.perf_counter() - start, "run": str(run)}


def eval_critic(checkpoint: str | Path, data: list[str] | None, rollouts: list[str] | None = None,
                done_threshold: float | None = None) -> dict[str, Any]:
    """Metrics on the held-out episodes of ``data`` (those a training run kept out, where it used the
    store; every episode of any other store) and, with ``rollouts``, on every episode of those stores of a
    policy's own episodes: how the final value separates successes from failures, the done head's false
    positives on failures, and a failed episode's return relative to a successful one's. ``done_threshold``
    replaces the critic's own for the done metrics."""
    if not data and not rollouts:
        raise ConfigError("critic eval needs --data (demo stores) and/or --rollouts (policy episode stores)")
    if done_threshold is not None and not 0.0 < done_threshold < 1.0:
        raise ConfigError(f"done threshold must lie in (0, 1), got {done_threshold}")
    checkpoint = Path(checkpoint)
    critic_dir = checkpoint / "critic" if (checkpoint / "critic" / "config.json").is_file() else checkpoint
    critic = ProgressCritic.load(critic_dir)
    if done_threshold is not None:
        critic.config.done_threshold = done_threshold
    meta_file = critic_dir.parent / "critic_train.json"
    split = json.loads(meta_file.read_text())["split"] if meta_file.is_file() else {}
    split = {str(Path(k).resolve()): v for k, v in split.items()}
    result: dict[str, Any] = {"done_threshold": critic.config.done_threshold}
    if data:
        data = [str(Path(d).resolve()) for d in data]
        episodes = _episodes_of(data, critic.config.cameras, {p: split[p] for p in data if p in split}, "heldout")
        if not episodes:
            raise ConfigError("no held-out episodes to evaluate on")
        result.update(evaluate_critic(critic, episodes))
    if rollouts:
        episodes = []
        for path in rollouts:
            with EpisodeStore.open(path) as store:
                episodes += load_episodes(store, critic.config.cameras)
        if not episodes:
            raise ConfigError(f"no episodes in {rollouts}")
        result.update({f"rollout_{k}": v for k, v in evaluate_on_rollouts(critic, episodes).items()})
    return result
