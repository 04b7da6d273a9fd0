"""Loading typed configs from YAML files and command-line overrides.

draccus maps a YAML file and ``--field.sub=value`` arguments onto a dataclass, checking types; nothing
is evaluated as code.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, TypeVar

import draccus

from robot_rl.core.errors import ConfigError

T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from an optional YAML file, then apply ``--key=value`` overrides."""
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return draccus.parse(config_class=cls, config_path=path, args=list(overrides or []))
    except SystemExit as exc:  # argparse inside draccus exits on a bad argument, after printing usage
        reason = captured.getvalue().strip().splitlines()[-1:] or ["bad argument"]
        reason = reason[0].rsplit("error: ", 1)[-1]
        raise ConfigError(f"invalid {cls.__name__} overrides {overrides!r}: {reason}") from exc
    except (draccus.utils.ParsingError, ValueError, TypeError) as exc:
        raise ConfigError(f"invalid {cls.__name__} config: {exc}") from exc


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-able dict of a config dataclass."""
    return draccus.encode(cfg)
