"""The ``capacity-service`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from capacity_service.demo import run_demo
from capacity_service.settings import SqlJournalSettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="capacity-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="create a pool, reserve, release, recover from the journal")
    demo.add_argument("--data-dir", type=Path, default=Path("data"), help="where the SQLite journal lives")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        run_demo(SqlJournalSettings(url=f"sqlite:///{args.data_dir / 'capacity.db'}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
