"""Configuration of an environment instance."""

from __future__ import annotations

from dataclasses import dataclass, field

from robot_rl.core.errors import ConfigError


@dataclass
class EnvConfig:
    """How to build an env: which task and what the robot sees."""

    task: str = "push"
    """Registered task name (`robot-rl tasks` lists them)."""
    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    """Cameras rendered into ``obs["images"]``; an empty list gives state-only observations."""
    image_size: int = 84
    """Height and width in pixels of every camera image."""
    control_hz: float = 10.0
    """Control rate: one env step applies one action for 1/control_hz seconds."""
    max_steps: int | None = None
    """Episode time limit in env steps; None uses the task's default."""
    terminate_on_success: bool = True
    """End the episode (terminated=True) on the first step the task succeeds."""
    shadows: bool = False
    """Render shadows and reflections (about 10x slower on a CPU renderer)."""
    antialias: bool = False
    """Multisample anti-aliasing of camera images (about 2x slower on a CPU renderer)."""
    render_size: int = 256
    """Size of the images returned by ``env.render()`` (videos)."""

    def validate(self) -> None:
        if self.image_size < 8 or self.image_size > 1024:
            raise ConfigError(f"image_size must be in [8, 1024], got {self.image_size}")
        if not 1.0 <= self.control_hz <= 100.0:
            raise ConfigError(f"control_hz must be in [1, 100], got {self.control_hz}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"cameras must not repeat, got {self.cameras}")
