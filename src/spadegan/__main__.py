"""The ``spadegan`` command (and ``python -m spadegan``): the command line of ``spadegan.cli``,
started with the allocator ``spadegan.memory`` prefers."""

from __future__ import annotations

import sys

from .memory import start_with_preferred_allocator


def main() -> None:
    start_with_preferred_allocator()  # before torch is imported: it may run the process again
    from .cli import main as run_command_line

    sys.exit(run_command_line())


if __name__ == "__main__":
    main()
