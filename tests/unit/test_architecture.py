"""The package's layers and who may import whom (the table in docs/architecture.md); where Ray may be
imported; that the domain and the warehouse stream's logic import no infrastructure (checked in a fresh
interpreter, where nothing else has been imported yet); that every actor method called by name exists."""

import ast
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import pytest

INFRASTRUCTURE = ("ray", "cassandra", "sqlalchemy", "pyarrow", "redshift_connector", "psycopg")


@pytest.mark.parametrize(
    "module",
    ["capacity_service.domain", "capacity_service.adapters.codec", "capacity_service.application.warehouse_stream"],
)
def test_module_imports_no_infrastructure(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {INFRASTRUCTURE!r})\n"
        "print(','.join(loaded))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == ""


PACKAGE = Path(__file__).resolve().parents[2] / "capacity_service"
# Where Ray may be imported, and why; everything else reaches Ray through runtime/_ray.py (one seam).
RAY_ALLOWED = {
    "runtime/_ray.py": "the seam itself",
    "runtime/local.py": "starts local Ray nodes (ray.cluster_utils) for the multi-node cluster",
    "entrypoints/http/deployment.py": "the Serve deployment: Serve's decorators and private hooks",
    "entrypoints/cli.py": "starts Ray and Serve for `start` and `stop`",
}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_listed_modules_import_ray() -> None:
    importing = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if "ray" in _imported_roots(path)}
    assert importing == set(RAY_ALLOWED), f"Ray imported beyond the seam: {sorted(importing - set(RAY_ALLOWED))}"


def test_the_domain_imports_nothing_but_the_standard_library_and_itself() -> None:
    for path in (PACKAGE / "domain").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                inside = name == "capacity_service.domain" or name.startswith("capacity_service.domain.")
                standard = name.split(".")[0] in sys.stdlib_module_names or name == "__future__"
                assert inside or standard, f"domain/{path.name} imports {name}"


# Each layer and what it may import, besides itself. "shared" is the public vocabulary every layer above
# the domain uses (settings, errors, result models); ``client`` is an entry point for Python code.
LAYER_OF_TOP = {
    "domain": "domain",
    "adapters": "adapters",
    "application": "application",
    "runtime": "runtime",
    "entrypoints": "entrypoints",
    "settings": "shared",
    "errors": "shared",
    "models": "shared",
    "client": "entrypoints",
    "__main__": "entrypoints",
    "__init__": "entrypoints",
}
MAY_IMPORT = {
    "domain": set(),
    "shared": {"domain"},
    "adapters": {"domain", "shared"},
    "application": {"domain", "shared", "adapters"},
    "runtime": {"domain", "shared", "adapters", "application"},
    "entrypoints": {"domain", "shared", "adapters", "application", "runtime"},
}
# Leaves any layer may import: constants with no imports of their own.
ANYONE_MAY_IMPORT = {"capacity_service.runtime.names"}


def _layer(module: str) -> str:
    parts = module.split(".")
    return LAYER_OF_TOP[parts[1] if len(parts) > 1 else "__init__"]


def _package_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("capacity_service")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            module = node.module or ""
            found |= {f"{module}.{alias.name}" for alias in node.names if module.startswith("capacity_service")}
    return found


def test_every_module_imports_only_from_its_own_and_lower_layers() -> None:
    broken = []
    checked = 0
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        layer = _layer(module)
        for imported in _package_imports(path):
            checked += 1
            if imported.split(".")[1] not in LAYER_OF_TOP:  # `from capacity_service import client`
                imported_layer = _layer(imported.rsplit(".", 1)[0]) if imported.count(".") > 1 else "entrypoints"
            else:
                imported_layer = _layer(imported)
            allowed = imported_layer == layer or imported_layer in MAY_IMPORT[layer]
            if not allowed and not any(imported.startswith(leaf) for leaf in ANYONE_MAY_IMPORT):
                broken.append(f"{module} ({layer}) imports {imported} ({imported_layer})")
    assert checked > 100  # the scan sees the imports
    assert broken == []


# The seam's calls that take an actor call, and that call's position among their arguments.
_TAKES_AN_ACTOR_CALL = {"ask": 1, "ask_now": 1, "tell": 1, "_call_actor": 1, "submit": 0, "ask_replica": 0}


def test_actor_methods_are_named_through_their_protocols_never_as_strings() -> None:
    """Ray calls an actor's method by its name: a name typed as a string would break only end to end.
    Every call names its method as ``call(SomeApi.method, ...)``, which mypy checks."""
    calls, by_string = 0, []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called == "call" and node.args and isinstance(node.args[0], ast.Attribute):
                calls += 1
            position = _TAKES_AN_ACTOR_CALL.get(called)
            if position is not None and len(node.args) > position:
                argument = node.args[position]
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    by_string.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert calls > 15  # the scan sees the calls (a change in their shape would blind it)
    assert by_string == []


def _public_method(name: str, value: object) -> bool:
    return not name.startswith("_") and callable(value)


def test_every_actor_implements_every_method_of_its_protocol() -> None:
    """An actor that renamed a method would inherit its Protocol's empty stub, which mypy accepts and
    Ray would serve: each method must be the actor's own."""
    from capacity_service.runtime.actor_api import CacheApi, PoolApi, SupervisorApi, WarehouseStreamApi
    from capacity_service.runtime.cache_actor import AvailabilityCache
    from capacity_service.runtime.pool_actor import PoolActor
    from capacity_service.runtime.supervisor import Supervisor
    from capacity_service.runtime.warehouse_stream_actor import WarehouseStreamActor

    pairs: tuple[tuple[type, type], ...] = (
        (PoolActor, PoolApi),
        (AvailabilityCache, CacheApi),
        (Supervisor, SupervisorApi),
    )
    pairs += ((WarehouseStreamActor, WarehouseStreamApi),)
    from capacity_service.runtime.actor_api import WebhooksApi
    from capacity_service.runtime.webhook_actor import WebhookActor

    pairs += ((WebhookActor, WebhooksApi),)
    stubs = []
    for actor, protocol in pairs:
        assert protocol in actor.__mro__
        protocols = [base for base in protocol.__mro__ if getattr(base, "_is_protocol", False) and base is not Protocol]
        methods = [name for base in protocols for name, value in vars(base).items() if _public_method(name, value)]
        assert methods
        stubs += [f"{actor.__name__}.{name}" for name in methods if name not in vars(actor)]
    assert stubs == []


# What only the composition root makes from settings (besides the adapters' own factories).
COMPOSED = {
    "open_journal",
    "open_sink",
    "SqlJournal",
    "CassandraJournal",
    "InMemoryJournal",
    "ParquetSink",
    "SqlSink",
    "RedshiftSink",
    "PoolHost",
    "PoolRouter",
    "WarehouseStream",
    "open_webhook_store",
    "SqlWebhookStore",
    "CassandraWebhookStore",
    "WebhookDeliveries",
    "AiohttpTransport",
}
MAY_COMPOSE = {
    "runtime/bootstrap.py": "the composition root",
    "adapters/journal/__init__.py": "the journal factory (open_journal)",
    "adapters/warehouse/__init__.py": "the sink factory (open_sink)",
    "adapters/webhooks/__init__.py": "the webhook store factory (open_webhook_store)",
    "adapters/journal/preflight.py": "opens the journal the settings name to check it before anything starts",
}


def _called_names(path: Path) -> set[str]:
    called: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            called.add(name)
    return called


def test_only_the_composition_root_constructs_adapters_hosts_and_routers() -> None:
    composing = {
        str(path.relative_to(PACKAGE)): sorted(_called_names(path) & COMPOSED) for path in PACKAGE.rglob("*.py")
    }
    found = {module: names for module, names in composing.items() if names}
    assert "runtime/bootstrap.py" in found  # the scan sees the calls
    assert set(found) <= set(MAY_COMPOSE), {m: n for m, n in found.items() if m not in MAY_COMPOSE}
