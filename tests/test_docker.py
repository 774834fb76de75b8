"""The compose deployment, checked statically (no Docker engine here): docker/compose.yaml and the two
Dockerfiles name files, commands, settings and packages that exist."""

import importlib
import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis import Redis
from rq import Worker

from cli.main import build_parser
from mrisynth.settings import Settings
from worker.jobs import dataset_queue

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert set(compose["services"]) == {"redis", "api", "worker"}
    return dict(compose["services"])


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _dockerfile(services: dict[str, Any], name: str) -> Path:
    build = services[name]["build"]
    return (DOCKER / build["context"] / build["dockerfile"]).resolve()


def _requirements(extras: set[str]) -> set[str]:
    """Distribution names installed by ``pip install .[extras]``, extras of mrisynth resolved."""
    project = PYPROJECT["project"]
    names = {re.split(r"[<>=\[; ]", spec)[0].lower() for spec in project["dependencies"]}
    for extra in extras:
        for spec in project["optional-dependencies"][extra]:
            if spec.startswith("mrisynth["):
                names |= _requirements(set(spec[len("mrisynth[") : -1].split(",")))
            else:
                names.add(re.split(r"[<>=\[; ]", spec)[0].lower())
    return names


def _installed_extras(dockerfile: Path) -> set[str]:
    """Extras of the project the Dockerfile installs, with ``pip install -c constraints.txt ".[...]"``."""
    runs = [arguments for instruction, arguments in _instructions(dockerfile) if instruction == "RUN"]
    installs = [re.search(r'pip install -c constraints\.txt "?\.\[([a-z0-9,]+)\]"?', run) for run in runs]
    found = [match.group(1).split(",") for match in installs if match]
    assert len(found) == 1, f"{dockerfile.name} should install the project once"
    return set(found[0])


def _check_command(argv: list[str]) -> None:
    """``argv`` runs an existing console script's subcommand, or uvicorn on an existing app factory."""
    if argv[0] == "uvicorn":
        module, attribute = argv[1].split(":")
        assert callable(getattr(importlib.import_module(module), attribute)), argv
        assert "--factory" in argv, "create_app is a factory"
    else:
        assert PYPROJECT["project"]["scripts"].get(argv[0]) == "cli.main:main", argv
        build_parser().parse_args(argv[1:])


def test_build_contexts_and_dockerfiles_exist(services: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        assert (DOCKER / services[name]["build"]["context"]).resolve() == ROOT
        assert _dockerfile(services, name).is_file()


def test_every_copy_source_exists_and_is_in_the_build_context(services: dict[str, Any]) -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for name in ("api", "worker"):
        for instruction, arguments in _instructions(_dockerfile(services, name)):
            if instruction != "COPY" or arguments.startswith("--from="):
                continue
            *sources, _ = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{name}: COPY {source} is not in the repository"
                assert source in allowed, f"{name}: COPY {source} is excluded by .dockerignore"


def test_commands_name_existing_entry_points(services: dict[str, Any]) -> None:
    assert services["api"]["command"][:2] == ["uvicorn", "service.app:create_app"]
    assert services["worker"]["command"] == ["mrisynth", "worker"]
    for name in ("api", "worker"):
        _check_command(services[name]["command"])
        commands = [arguments for instruction, arguments in _instructions(_dockerfile(services, name))
                    if instruction in ("CMD", "ENTRYPOINT")]  # fmt: skip
        assert len(commands) == 1
        _check_command(json.loads(commands[0]))


def test_environment_names_are_settings(services: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name in ("api", "worker"):
        environment = services[name]["environment"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        for variable in set(environment) - {"REDIS_URL"}:
            assert variable.startswith("MRISYNTH_"), variable
            assert variable.removeprefix("MRISYNTH_").lower() in fields, f"{name}: {variable} is no setting"


def test_api_needs_keys_as_it_listens_beyond_the_loopback(services: dict[str, Any]) -> None:
    assert "0.0.0.0" in services["api"]["command"]
    assert services["api"]["environment"]["MRISYNTH_API_KEYS"].startswith("${MRISYNTH_API_KEYS:?")


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> the volume entry mounted there (``source:target[:ro]``)."""
    mounts = {}
    for volume in service["volumes"]:
        parts = volume.split(":")
        mounts[parts[-2] if parts[-1] in ("ro", "rw") else parts[-1]] = volume
    return mounts


def test_api_and_workers_share_the_data_and_the_artifacts(services: dict[str, Any]) -> None:
    mounted = []
    for name in ("api", "worker"):
        environment, mounts = services[name]["environment"], _mounts(services[name])
        mounted.append(tuple(mounts[environment[f"MRISYNTH_{key}_DIR"]] for key in ("DATA", "ARTIFACTS")))
    assert mounted[0] == mounted[1]
    data, artifacts = mounted[0]
    assert data == "data:/data"
    default = re.fullmatch(r"\$\{MRISYNTH_ARTIFACTS:-([^}]+)\}:/artifacts:ro", artifacts)
    assert default is not None
    assert (DOCKER / default.group(1) / "manifest.json").is_file(), "the default artifacts are the demo"


def test_redis_persists_with_appendonly(services: dict[str, Any]) -> None:
    command = services["redis"]["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])


def test_healthchecks_and_start_order(services: dict[str, Any]) -> None:
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any("/healthz" in part for part in services["api"]["healthcheck"]["test"])
    assert services["worker"]["healthcheck"]["test"][:3] == ["CMD", "python", "-c"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_the_worker_healthcheck_finds_the_worker_of_its_host(
    services: dict[str, Any], redis_url: str
) -> None:
    """The worker's healthcheck command, run here on a real Redis: unhealthy until a worker of this
    host (a container's) is registered, healthy while one is."""
    *_, script = services["worker"]["healthcheck"]["test"]

    def healthcheck() -> int:
        environment = {"PATH": os.environ["PATH"], "REDIS_URL": redis_url}
        return subprocess.run([sys.executable, "-c", script], env=environment, timeout=60).returncode

    connection = Redis.from_url(redis_url)
    assert not [w for w in Worker.all(connection=connection) if w.hostname == socket.gethostname()]
    assert healthcheck() == 1
    worker = Worker([dataset_queue(connection, Settings(queue="test-healthcheck"))], connection=connection)
    worker.register_birth()
    try:
        assert healthcheck() == 0
    finally:
        worker.register_death()
    assert healthcheck() == 1


def test_worker_reserves_a_gpu_and_scales(services: dict[str, Any]) -> None:
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)
    assert "container_name" not in worker and "ports" not in worker
    base = _instructions(_dockerfile(services, "worker"))[0]
    assert base[0] == "FROM" and re.fullmatch(r"nvidia/cuda:12\.[\d.]+-cudnn-runtime-ubuntu[\d.]+", base[1])


def test_images_install_their_extra_only(services: dict[str, Any]) -> None:
    api, worker = (_installed_extras(_dockerfile(services, name)) for name in ("api", "worker"))
    assert api == {"service"}
    assert not _requirements(api) & {"torch", "onnxruntime", "onnxruntime-gpu"}
    assert worker == {"gpu"}
    assert "onnxruntime-gpu" in _requirements(worker)
    assert not _requirements(worker) & {"torch", "onnxruntime"}
    base = _instructions(_dockerfile(services, "api"))[0]
    assert base == ("FROM", "python:3.11-slim")


def test_the_app_imports_without_torch_and_onnxruntime() -> None:
    """What the api image has: blocking both modules makes any import of them fail (Redis is lazy)."""
    script = (
        "import sys; sys.modules['torch'] = sys.modules['onnxruntime'] = None\n"
        "from mrisynth.settings import Settings; from service.app import create_app\n"
        "create_app(Settings(redis_url='redis://127.0.0.1:1/0'))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
