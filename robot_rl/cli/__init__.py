"""The ``robot-rl`` command line: thin subcommands over the library."""
