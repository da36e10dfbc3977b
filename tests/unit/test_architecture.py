"""The domain layer, and the warehouse stream's logic, import no infrastructure (checked in a fresh
interpreter, where nothing else has been imported yet)."""

import subprocess
import sys

import pytest

INFRASTRUCTURE = ("ray", "cassandra", "sqlalchemy", "pyarrow", "redshift_connector", "psycopg")


@pytest.mark.parametrize(
    "module", ["capacity_service.domain", "capacity_service.serialization", "capacity_service.warehouse.stream"]
)
def test_module_imports_no_infrastructure(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {INFRASTRUCTURE!r})\n"
        "print(','.join(loaded))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == ""
