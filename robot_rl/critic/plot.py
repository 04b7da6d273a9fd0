"""A picture of what the critic sees: value curves of a successful and a failed episode, with frame
thumbnails along the time axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robot_rl.critic.dataset import EpisodeFrames
from robot_rl.critic.reward import CriticReward


def plot_value_curves(scorer: CriticReward, episodes: list[tuple[str, EpisodeFrames]], out: str | Path,
                      thumbnails: int = 6) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(episodes), 1, figsize=(9, 3.6 * len(episodes)), squeeze=False)
    for ax, (title, ep) in zip(axes[:, 0], episodes):
        values, dones = scorer.score_frames(ep.frames, ep.instruction)
        curve = values - values[0]
        t = np.arange(len(curve))
        ax.plot(t, curve, lw=2, label="critic value (accumulated deltas)")
        if ep.progress is not None:
            ax.plot(t, ep.progress - ep.progress[0], "--", color="gray", label="progress label")
        ax.fill_between(t, -1.3, 1.3, where=dones > scorer.done_threshold, color="green", alpha=0.12,
                        label="critic: done")
        ax.set(xlim=(-0.5, len(t) - 0.5), ylim=(-1.3, 1.3), xlabel="frame", ylabel="value",
               title=f"{title}: {ep.instruction}")
        cam = next(iter(ep.frames))
        for k in np.linspace(0, len(t) - 1, thumbnails).astype(int):
            inset = ax.inset_axes([k, -1.25, max(len(t) / (thumbnails + 2), 1), 0.8], transform=ax.transData)
            inset.imshow(ep.frames[cam][k])
            inset.axis("off")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
