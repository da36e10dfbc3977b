"""cluster.yaml and the Serve configs, checked offline: the cluster config against Ray's own autoscaler
schema, the placement it promises (no pools on the head), the environment of every node, the deploy
step it runs; the Serve configs against the real option names (Ray's Serve schema silently ignores a
misspelled key, such as ``num_replica: 3``) and our own settings."""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

from capacity_service.entrypoints.http.deployment import CapacityApi
from capacity_service.runtime.health import health_check_env
from capacity_service.settings import service_settings

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIGS = ["serve_config.yaml", "serve_config.cassandra.yaml"]


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "cluster.yaml").read_text())
    return loaded


def test_cluster_yaml_passes_rays_autoscaler_schema(cluster: dict[str, Any]) -> None:
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"


def deployed_serve_config(cluster: dict[str, Any]) -> str:
    """The repository's Serve config that the head's start commands deploy."""
    commands = " ".join(cluster["head_start_ray_commands"])
    names = set(re.findall(r"~/capacity_service/(serve_config[\w.]*\.yaml)", commands))
    assert len(names) == 1, names
    return str(names.pop())


def test_pools_can_only_run_on_workers(cluster: dict[str, Any]) -> None:
    serve_config = yaml.safe_load((REPO / deployed_serve_config(cluster)).read_text())
    wanted = serve_config["applications"][0]["args"]["hosting"]["actor_resources"]
    assert wanted, "pool actors ask for no resource: nothing keeps them off the head"
    types_ = cluster["available_node_types"]
    head = types_[cluster["head_node_type"]]["resources"]
    assert head.get("CPU") == 0
    assert not set(wanted) & set(head), "the head offers a resource that pool actors need"
    workers = [t for name, t in types_.items() if name != cluster["head_node_type"]]
    assert workers and all(t["resources"].get(r, 0) >= amount for t in workers for r, amount in wanted.items())


def node_env(cluster: dict[str, Any]) -> dict[str, str]:
    """The exports that the setup commands write to ~/capacity.env."""
    script = next(c for c in cluster["setup_commands"] if "capacity.env" in c)
    exports = [word for word in shlex.split(script) if word.startswith("export ")]
    return dict(e.removeprefix("export ").split("=", 1) for e in exports)


def test_every_node_gets_the_same_environment(cluster: dict[str, Any]) -> None:
    env = node_env(cluster)
    assert env["RAY_AUTH_MODE"] == "token"
    assert {k: v for k, v in env.items() if k.startswith("RAY_health_check")} == health_check_env()
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    # Both kinds of node start Ray with that environment.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster[key] if "ray start" in c]
        assert starts and all(c.startswith(". ~/capacity.env &&") for c in starts), key
    assert "~/.ray/auth_token" in cluster["file_mounts"]


def test_the_deploy_step_opens_the_proxies_and_keeps_the_rest(cluster: dict[str, Any], tmp_path: Path) -> None:
    """Run the head's config rewrite for real, on this checkout, in a fake home directory."""
    (tmp_path / "capacity_service").symlink_to(REPO)
    rewrite = next(c for c in cluster["head_start_ray_commands"] if "serve_config.cluster.yaml" in c and "-c" in c)
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", rewrite.replace("python3 ", f"{sys.executable} ", 1)], env=env, check=True)
    original = yaml.safe_load((REPO / deployed_serve_config(cluster)).read_text())
    rewritten = yaml.safe_load((tmp_path / "serve_config.cluster.yaml").read_text())
    assert rewritten["http_options"]["host"] == "0.0.0.0"
    original["http_options"]["host"] = "0.0.0.0"
    assert rewritten == original
    deploy = cluster["head_start_ray_commands"][-1]
    assert deploy.startswith(". ~/capacity.env &&") and "serve deploy ~/serve_config.cluster.yaml" in deploy


@pytest.mark.parametrize("secrets", ["", "CAPACITY_API_KEYS=a", "CAPACITY_API_KEYS=a CAPACITY_ADMIN_KEYS=b"])
def test_the_cluster_does_not_deploy_without_api_keys(cluster: dict[str, Any], tmp_path: Path, secrets: str) -> None:
    """The head's deploy step, run for real in a fake home directory with ``serve`` stubbed: it deploys
    only when both kinds of keys are in the secrets file."""
    (tmp_path / "capacity.env").write_text(". ~/capacity.secrets.env\n")
    (tmp_path / "capacity.secrets.env").write_text("".join(f"export {pair}\n" for pair in secrets.split()))
    (tmp_path / "bin").mkdir()
    stub = tmp_path / "bin" / "serve"
    stub.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "deployed"}\n')
    stub.chmod(0o755)
    env = {"HOME": str(tmp_path), "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    deploy = cluster["head_start_ray_commands"][-1]
    done = subprocess.run(["bash", "-c", deploy], env=env, capture_output=True, text=True)
    if secrets.count("=") == 2:
        assert done.returncode == 0 and (tmp_path / "deployed").read_text().startswith("deploy ")
    else:
        assert done.returncode != 0 and not (tmp_path / "deployed").exists()
        assert "CAPACITY_API_KEYS and CAPACITY_ADMIN_KEYS" in done.stderr


# ---------------------------------------------------------------------------------------------- Serve


def unknown_keys(model: type[BaseModel], data: Any, path: str = "") -> list[str]:
    """Keys of ``data`` that ``model`` (recursively, through nested models, lists and optionals) has no
    field for: what pydantic would silently drop."""
    if not isinstance(data, dict):
        return []
    found: list[str] = []
    fields = model.model_fields
    names = {name for name in fields} | {f.alias for f in fields.values() if f.alias}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if key not in names:
            found.append(where)
            continue
        field = fields.get(key) or next(f for f in fields.values() if f.alias == key)
        for nested in _models_in(field.annotation):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    found += unknown_keys(nested, item, f"{where}[{i}]")
            else:
                found += unknown_keys(nested, value, where)
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.List):  # noqa: UP006 - both spellings occur
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


@pytest.mark.parametrize("name", SERVE_CONFIGS)
def test_serve_config_uses_only_real_option_names(name: str) -> None:
    config = yaml.safe_load((REPO / name).read_text())
    ServeDeploySchema.model_validate(config)
    assert unknown_keys(ServeDeploySchema, config) == []
    deployments: Any = CapacityApi
    for app in config["applications"]:
        assert app["import_path"] == "capacity_service.entrypoints.http.deployment:build_app"
        service_settings(app["args"], environ={})  # our settings forbid unknown keys themselves
        assert {d["name"] for d in app.get("deployments", [])} <= {deployments.name}


def test_the_lint_catches_what_rays_schema_lets_through() -> None:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    deployment = config["applications"][0]["deployments"][0]
    deployment["num_replica"] = 3
    deployment["ray_actor_options"] = {"num_cpu": 1}
    config["http_options"]["hots"] = "0.0.0.0"
    ServeDeploySchema.model_validate(config)  # Ray accepts it...
    assert sorted(unknown_keys(ServeDeploySchema, config)) == [  # ...we do not
        "applications[0].deployments[0].num_replica",
        "applications[0].deployments[0].ray_actor_options.num_cpu",
        "http_options.hots",
    ]
