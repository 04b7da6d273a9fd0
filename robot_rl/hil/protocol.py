"""The graded protocol of human help (VLAC): how much of an episode a helper does before the policy explores.

- ``demo_replay``: the episode starts where a stored demo started (its reset seed) and the demo's own actions
  are replayed for the first k steps; then the policy acts.
- ``return_explore``: the episode starts in the state a stored demo reached after k steps, restored exactly
  through the simulator's state (no env steps spent getting there); then the policy explores.
- ``human_guided``: the operator (a person's device or the simulated one) drives the first k steps.

k falls as the run succeeds (``HelpSchedule``): help where the policy fails, none once it does not. The steps
a helper drove are stored as interventions (the policy did not choose them), so they are learned from like a
takeover; metrics tell them apart from takeovers because they open the episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from robot_rl.core.errors import ConfigError

PROTOCOL_MODES = ("none", "demo_replay", "return_explore", "human_guided")
OPERATORS = ("none", "simulated")


@dataclass
class OperatorConfig:
    """Who may take over during an episode (``kind``) and, for the simulated operator, how it behaves."""

    kind: str = "none"
    """``none`` or ``simulated`` (the task's scripted expert behind the operator interface)."""
    patience: int = 10
    """Simulated: steps the policy's motion may point away from the expert's before it takes over. The defaults
    (10 steps, ``min_speed`` 0.5) were chosen so that it judges like an operator: watching the lift task's cloned
    policy act alone, it would have taken over in 8% of the episodes that went on to succeed and 62% of those
    that failed (5 steps and no speed floor: 92% and 100%)."""
    delay_steps: int = 2
    """Simulated: reaction time between deciding to take over and acting."""
    hold_steps: int = 10
    """Simulated: steps it drives before it hands back."""
    noise: float = 0.05
    """Simulated: Gaussian noise on its actions (a person is not a script)."""
    min_cosine: float = 0.0
    """Simulated: the policy 'heads away' while the cosine between its and the expert's translation is below
    this."""
    min_speed: float = 0.5
    """Simulated: steps where the expert's own translation command is slower than this (grasping, pausing) do
    not count as the policy heading away (they neither add to nor reset the count)."""
    max_takeovers: int | None = None
    """Simulated: at most this many takeovers per episode (None: no limit)."""
    stall_steps: int = 0
    """Simulated: also take over when the progress critic's progress has risen by less than ``stall_delta`` over
    this many steps (0: off; needs the run's critic, scored in the env workers)."""
    stall_delta: float = 0.02

    def validate(self) -> None:
        if self.kind not in OPERATORS:
            raise ConfigError(f"unknown operator kind {self.kind!r}; known: {', '.join(OPERATORS)}")
        if min(self.patience, self.hold_steps) < 1 or self.delay_steps < 0 or self.noise < 0:
            raise ConfigError(f"operator needs patience, hold_steps >= 1, delay_steps >= 0, noise >= 0, got "
                              f"{self.patience}, {self.hold_steps}, {self.delay_steps}, {self.noise}")
        if self.stall_steps < 0:
            raise ConfigError(f"operator stall_steps must be >= 0, got {self.stall_steps}")
        if self.max_takeovers is not None and self.max_takeovers < 0:
            raise ConfigError(f"operator max_takeovers must be >= 0 or None, got {self.max_takeovers}")


@dataclass
class ProtocolConfig:
    """The graded protocol: which help opens an episode, how often, and how much."""

    mode: str = "none"
    """``none``, ``demo_replay``, ``return_explore`` or ``human_guided`` (see ``robot_rl.hil.protocol``)."""
    help_steps: int = 20
    """k while the run has no success: steps of help at the start of a helped episode."""
    schedule: str = "success"
    """``success``: k = help_steps x (1 - success rate of the run's last ``window`` episodes); ``fixed``: k =
    help_steps throughout."""
    window: int = 32
    fraction: float = 0.5
    """Share of episodes that get help (the rest start as usual)."""

    def validate(self) -> None:
        if self.mode not in PROTOCOL_MODES:
            raise ConfigError(f"unknown protocol mode {self.mode!r}; known: {', '.join(PROTOCOL_MODES)}")
        if self.schedule not in ("success", "fixed"):
            raise ConfigError(f"protocol schedule must be 'success' or 'fixed', got {self.schedule!r}")
        if self.help_steps < 0 or self.window < 1 or not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"protocol needs help_steps >= 0, window >= 1, fraction in [0, 1], got "
                              f"{self.help_steps}, {self.window}, {self.fraction}")


@dataclass
class HILConfig:
    """Human in the loop during a run: takeovers by an operator and the graded protocol."""

    operator: OperatorConfig = field(default_factory=OperatorConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    blend_steps: int = 2
    """Policy actions after a hand-back blended from the operator's last one (no jump in commanded motion)."""

    @property
    def enabled(self) -> bool:
        return self.operator.kind != "none" or self.protocol.mode != "none"

    @property
    def needs_demos(self) -> bool:
        return self.protocol.mode in ("demo_replay", "return_explore")

    def validate(self) -> None:
        self.operator.validate()
        self.protocol.validate()
        if self.blend_steps < 0:
            raise ConfigError(f"hil.blend_steps must be >= 0, got {self.blend_steps}")
        if self.protocol.mode == "human_guided" and self.operator.kind == "none":
            raise ConfigError("protocol mode human_guided needs an operator (hil.operator.kind=simulated in sim)")


class HelpSchedule:
    """k from the run's recent success: ``help_steps`` while it fails, 0 once it always succeeds."""

    def __init__(self, cfg: ProtocolConfig) -> None:
        self.cfg = cfg
        self.recent: list[bool] = []

    def record(self, successes: list[bool]) -> None:
        self.recent = (self.recent + [bool(s) for s in successes])[-self.cfg.window :]

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.recent)) if self.recent else 0.0

    def steps(self) -> int:
        if self.cfg.mode == "none":
            return 0
        if self.cfg.schedule == "fixed":
            return self.cfg.help_steps
        return int(round(self.cfg.help_steps * (1.0 - self.success_rate)))


@dataclass
class DemoTrack:
    """What the protocol needs of one stored demo: where it started, what it did, what it saw."""

    seed: int
    actions: np.ndarray  # (T, A)
    states: np.ndarray  # (T, S) the observed proprioception before each action (a replay's fidelity check)
    first_success: int  # steps before the task first succeeded (T if it never did)

    @classmethod
    def from_episode(cls, ep) -> DemoTrack:
        if ep.meta.seed < 0:
            raise ConfigError("a demo used by the protocol needs its reset seed (recorded by `robot-rl collect`); "
                              "this episode has none")
        hits = np.flatnonzero(ep.success)
        return cls(seed=int(ep.meta.seed), actions=np.asarray(ep.action, np.float32),
                   states=np.asarray(ep.obs["state"], np.float32), first_success=int(hits[0]) if len(hits) else len(ep))


def load_tracks(paths: list[str]) -> list[DemoTrack]:
    """The successful demos of the stores at ``paths`` (their actions, states and seeds)."""
    from robot_rl.replay.store import EpisodeStore

    tracks = []
    for path in paths:
        with EpisodeStore.open(path) as store:
            for i in range(store.num_episodes):
                ep = store.episode(i)
                if ep.meta.success:
                    tracks.append(DemoTrack.from_episode(ep))
    if not tracks:
        raise ConfigError(f"the protocol replays successful demos; none in {paths}")
    return tracks


class ProtocolWrapper(gym.Wrapper):
    """Opens episodes as the protocol says. ``set_help(k)`` sets k for the episodes that start after it;
    ``scripted_action()`` is the demo action to replay at this step (demo_replay) and ``guide_steps`` the
    steps the operator should drive from the start (human_guided), both read by the ``InterventionWrapper``
    above it."""

    def __init__(self, env: gym.Env, cfg: ProtocolConfig, tracks: list[DemoTrack] | None = None,
                 seed: int = 0) -> None:
        super().__init__(env)
        cfg.validate()
        if cfg.mode in ("demo_replay", "return_explore") and not tracks:
            raise ConfigError(f"protocol mode {cfg.mode!r} needs demos with reset seeds")
        if cfg.mode == "return_explore" and not hasattr(env.unwrapped, "restore"):
            raise ConfigError(f"return_explore restores simulator states; {type(env.unwrapped).__name__} cannot")
        self.cfg, self.tracks = cfg, tracks or []
        self.rng = np.random.default_rng(seed)
        self.k = cfg.help_steps if cfg.mode != "none" else 0
        self._bank: dict[int, np.ndarray] = {}  # demo index -> its sim state after each step
        self.script: np.ndarray = np.zeros((0, 0), np.float32)
        self.guide_steps, self.restored_at, self._t, self.helped = 0, None, 0, False

    def set_help(self, k: int) -> None:
        if k < 0:
            raise ConfigError(f"help steps must be >= 0, got {k}")
        self.k = int(k)

    def sim_states(self, index: int) -> np.ndarray:
        """The simulator's state after each step of demo ``index``, by replaying its actions from its reset
        seed (once per demo); raises if the replay does not see what the demo saw (another env or version)."""
        if index not in self._bank:
            track, env = self.tracks[index], self.env.unwrapped
            obs, _ = self.env.reset(seed=track.seed)
            states = []
            for t, action in enumerate(track.actions):
                if not np.allclose(obs["state"], track.states[t], atol=1e-4):
                    raise ConfigError(f"replaying demo {index} (seed {track.seed}) diverges from what it recorded at "
                                      f"step {t}: it was recorded with another env config or simulator version")
                obs = self.env.step(action)[0]
                states.append(env.sim_state())
            self._bank[index] = np.stack(states)
        return self._bank[index]

    def reset(self, **kwargs):
        self.script, self.guide_steps, self.restored_at, self._t = self.script[:0], 0, None, 0
        self.helped = False
        mode = self.cfg.mode
        if mode == "none" or self.k <= 0 or self.rng.random() >= self.cfg.fraction:
            return self.env.reset(**kwargs)
        self.helped = True
        if mode == "human_guided":
            self.guide_steps = self.k
            return self.env.reset(**kwargs)
        index = int(self.rng.integers(len(self.tracks)))
        track = self.tracks[index]
        k = min(self.k, max(track.first_success - 1, 0))  # help up to, never through, the success
        if mode == "demo_replay":
            obs, info = self.env.reset(seed=track.seed)
            self.script = track.actions[:k]
            return obs, info
        states = self.sim_states(index) if k else None
        obs, info = self.env.reset(seed=track.seed)
        if k:
            obs = self.env.unwrapped.restore(states[k - 1])
            self.restored_at = k
        return obs, {**info, "restored_at": k}

    def scripted_action(self) -> np.ndarray | None:
        return self.script[self._t] if self._t < len(self.script) else None

    def step(self, action):
        self._t += 1
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "helped": self.helped}


def find_protocol(env: gym.Env) -> ProtocolWrapper | None:
    """The ProtocolWrapper in a chain of wrappers, if any."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, ProtocolWrapper):
            return env
        env = env.env
    return None


def wrap_for_run(env: gym.Env, cfg: HILConfig, task: str, tracks: list[DemoTrack] | None = None,
                 seed: int = 0, progress=None) -> gym.Env:
    """``env`` as a run with ``cfg`` acts on it: the protocol opens its episodes, the operator may take over.
    ``progress(obs) -> float``: what the simulated operator watches for a stall (``operator.stall_steps``)."""
    from robot_rl.hil.intervention import InterventionWrapper, NoOperator, SimulatedOperator

    cfg.validate()
    if cfg.operator.stall_steps and progress is None:
        raise ConfigError("operator stall_steps watches the progress critic: the run needs a critic")
    if cfg.protocol.mode != "none":
        env = ProtocolWrapper(env, cfg.protocol, tracks, seed=seed)
    operator = (SimulatedOperator.from_config(cfg.operator, task, seed=seed + 1, progress=progress)
                if cfg.operator.kind == "simulated" else NoOperator())
    return InterventionWrapper(env, operator, cfg.blend_steps)


@dataclass
class RunWrap:
    """``wrap_for_run`` as a picklable ``wrap(env, index)`` for vector envs (each env its own seed)."""

    cfg: HILConfig
    task: str
    tracks: list[DemoTrack] | None = None
    seed: int = 0
    progress: Any = None  # picklable progress(obs) -> float (``critic.reward.ObservationProgress``)

    def __call__(self, env: gym.Env, index: int) -> gym.Env:
        return wrap_for_run(env, self.cfg, self.task, self.tracks, seed=self.seed + 7919 * index,
                            progress=self.progress if self.cfg.operator.stall_steps else None)
