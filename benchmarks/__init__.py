"""The benchmark scripts. They need the dev extras: `scripts/setup dev` once installs them.

Importing this package (which every benchmark does before its own modules) checks that they are there, and
otherwise says in one line what to run and exits, instead of a traceback from deep inside a run (the
dev-only packages are imported where they are used, after this check).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# What the benchmarks import from the dev extras and not from the package's own dependencies
# (tests/unit/test_benchmarks.py checks that this covers every such import).
DEV_ONLY_MODULES = ("asyncpg", "matplotlib", "psycopg")


def missing_dev_modules(modules: tuple[str, ...] = DEV_ONLY_MODULES) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def exit_unless_set_up() -> None:
    """Exits with one line naming the setup command when a dev-only module is missing."""
    missing = missing_dev_modules()
    if missing:
        script = f"benchmarks/{Path(sys.argv[0]).name}" if sys.argv and sys.argv[0] else "the benchmarks"
        sys.exit(
            f"{script} needs {', '.join(missing)} (the dev extras): run `scripts/setup dev` once, then run it again"
        )


exit_unless_set_up()
