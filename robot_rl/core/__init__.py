"""Types every layer shares: the Step/Episode schema, specs and errors."""

from robot_rl.core.errors import (
    ConfigError,
    RobotRLError,
    StoreCorruptError,
    StoreError,
    UnknownTaskError,
)
from robot_rl.core.schema import (
    EPISODE_SOURCES,
    STEP_FIELDS,
    Episode,
    EpisodeMeta,
    flatten_obs,
    step_schema,
    unflatten_obs,
)

__all__ = [
    "ConfigError",
    "EPISODE_SOURCES",
    "Episode",
    "EpisodeMeta",
    "RobotRLError",
    "STEP_FIELDS",
    "StoreCorruptError",
    "StoreError",
    "UnknownTaskError",
    "flatten_obs",
    "step_schema",
    "unflatten_obs",
]
