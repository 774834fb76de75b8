"""Fixtures shared by the test modules: a real redis-server, a writer of training run directories and the
random-init networks the pipeline and evaluation tests export."""

import dataclasses
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from mrisynth.brats import write_case
from mrisynth.conventions import MODALITIES


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private redis-server on the loopback, started for the test session (no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH: apt-get install -y redis-server (as .ci/run does)")
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            Redis.from_url(url).ping()
            break
        except RedisConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module: tiny networks gain nothing from a second thread, and OpenMP
    spin-waits lose a lot when other processes share the 2 cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def write_run() -> Callable[..., Path]:
    """A function that writes a training run directory as ``mrisynth train`` does, for export tests.

    ``write(directory, networks, config, size, labels, structure_density=0.08)`` saves ``run.json`` (the
    keys the export reads), ``checkpoint.pt`` with the networks' state dict and ``lesion_library.npz``
    with ``labels``.
    """

    def write(
        directory: Path,
        networks: Any,
        config: Any,
        size: int,
        labels: np.ndarray,
        structure_density: float = 0.08,
    ) -> Path:
        import torch

        directory.mkdir(parents=True, exist_ok=True)
        info = {
            "preset": {"name": "test", "beta": 0.12},
            "network_config": dataclasses.asdict(config),
            "image_size": [size, size],
            "voxel_size_mm": [240 / size, 240 / size, 1.0],
            "data": {"source": "random init", "structure_density": structure_density},
            "command": "pytest",
            "seed": 0,
            "steps": {"structure": 0, "synthesis": 0, "segmentation": 0},
            "final_losses": {},
        }
        (directory / "run.json").write_text(json.dumps(info))
        torch.save({"networks": networks.state_dict()}, directory / "checkpoint.pt")
        np.savez_compressed(directory / "lesion_library.npz", labels=labels)
        return directory

    return write


@pytest.fixture(scope="session")
def brain_everywhere_networks() -> Callable[[], tuple[Any, Any]]:
    """A function that builds random-init networks (torch seed 0, ngf 4, ``1SEG``) -> (config, networks).

    MG's head is set to a constant logit of 4 (probability 0.98), so MG calls every pixel brain:
    Algorithm 3 and lesion fitting then pass candidates that untrained networks would never make.
    """

    def build() -> tuple[Any, Any]:
        import torch
        from torch import nn

        from models.networks import NetworkConfig, define_networks

        torch.manual_seed(0)
        config = NetworkConfig(ngf=4, lesion_variant="1SEG")
        networks = define_networks(config)
        mask_head = networks.get_submodule("MG.head.0")
        assert isinstance(mask_head, nn.Conv2d) and mask_head.bias is not None
        with torch.no_grad():
            mask_head.weight.zero_()
            mask_head.bias.fill_(4.0)
        return config, networks

    return build


def descendant_pids(pid: int) -> list[int]:
    """Pids of the live processes descended from ``pid`` (children, grandchildren...), read from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found: list[int] = []
    generation = [pid]
    while generation:
        generation = [child for child, parent in parents.items() if parent in generation]
        found += generation
    return found


TINY_CASE_SHAPE = (48, 48, 12)
"""Shape of the hand-made cases of the ``brats`` fixture."""


def _smooth(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return cv2.GaussianBlur(rng.normal(size=shape).astype(np.float32), (0, 0), 3.0)


def _write_case(root: Path, index: int) -> None:
    rng = np.random.default_rng(index)
    yy, xx = np.mgrid[: TINY_CASE_SHAPE[0], : TINY_CASE_SHAPE[1]].astype(np.float32)
    brain = ((yy - 24) / rng.uniform(17, 21)) ** 2 + ((xx - 24) / rng.uniform(14, 19)) ** 2 <= 1
    center = rng.uniform(18, 30, size=2)
    distance = np.hypot(yy - center[0], xx - center[1])
    images = {m: np.zeros(TINY_CASE_SHAPE, np.float32) for m in MODALITIES}
    label = np.zeros(TINY_CASE_SHAPE, np.uint8)
    for z in range(TINY_CASE_SHAPE[2]):
        lesion = brain & (distance <= 4 + z % 3)
        label[:, :, z] = np.where(lesion, np.where(distance <= 2, 1, 2), 0)
        for k, modality in enumerate(MODALITIES):
            tissue = 1.0 + 0.3 * k + _smooth(rng, TINY_CASE_SHAPE[:2]) + 0.2 * np.cos(xx / (3 + k))
            tissue = (
                tissue
                + np.where(label[:, :, z] == 2, 0.8 - 0.4 * k, 0)
                + np.where(label[:, :, z] == 1, -1, 0)
            )
            images[modality][:, :, z] = np.where(brain, np.maximum(tissue, 0.05), 0.0)
    write_case(root, f"BraTS2021_{index:05d}", images, label, np.eye(4))


@pytest.fixture(scope="session")
def brats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three labeled 48 x 48 x 12 cases in BraTS 2021 layout: two train cases, one test case."""
    root = tmp_path_factory.mktemp("brats")
    for index in range(3):
        _write_case(root, index)
    return root
