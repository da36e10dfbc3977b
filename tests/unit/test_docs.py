"""docs/architecture.md stays true where it lists what the code has: the events of a pool (class, stored
name, version) and the benchmark scripts. A new event or benchmark without its line fails here."""

import re
import typing
from pathlib import Path

from capacity_service.domain import events

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()


def test_the_event_table_lists_every_event_with_its_stored_name_and_version() -> None:
    in_code = {(cls.__name__, cls.TYPE, cls.VERSION) for cls in typing.get_args(events.PoolEvent)}
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| (\d+) \|", ARCHITECTURE, re.MULTILINE)
    in_docs = {(name, stored, int(version)) for name, stored, version in rows}
    assert len(in_code) >= 10  # the union is read
    assert in_docs == in_code


def test_the_layout_table_names_every_benchmark_script() -> None:
    scripts = {path.name for path in (ROOT / "benchmarks").glob("*.py") if not path.name.startswith("_")}
    [row] = [line for line in ARCHITECTURE.splitlines() if line.startswith("| `benchmarks/` |")]
    named = set(re.findall(r"`(\w+\.py)`", row)) - {"_common.py", "_journals.py"}
    assert len(scripts) >= 10
    assert named == scripts
