"""``python -m gateway.workers``: the same command as ``gateway worker`` (one worker CLI).

Kept as an alias for scripts and tests that start workers by module; every option,
default and exit code is ``gateway worker``'s (see ``gateway.cli``).
"""

from __future__ import annotations

from gateway.cli import worker_main

if __name__ == "__main__":
    worker_main()
