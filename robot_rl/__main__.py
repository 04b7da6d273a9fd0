"""``python -m robot_rl`` is the ``robot-rl`` command."""

import sys

from robot_rl.cli.main import main

sys.exit(main())
