"""Helpers of the service tests: real uvicorn and ``mrisynth worker`` processes, NIfTI uploads."""

import gzip
import io
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
from conftest import free_port

from mrisynth.settings import DEMO_ARTIFACTS, Settings

ROOT = Path(__file__).resolve().parent.parent

KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"
"""Two API keys: two callers who must not see each other's datasets."""
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
FAST = {"thresholds": {"dice": 0.0}}
"""Request fields under which the demo models accept samples quickly: they accept no lesion at the
default Dice 0.95 (see the README)."""


def keyed_settings(redis_url: str, data_dir: Path, queue: str, **fields: Any) -> Settings:
    """Settings of a service with keys A and B on the demo artifacts, whose workers and sweeps react
    within a second or two (a killed worker's job is retried after 2 s); ``fields`` set the rest."""
    quick = {
        "sweep_interval_s": 1,
        "job_monitoring_interval_s": 1,
        "heartbeat_grace_s": 2,
        "maintenance_interval_s": 1,
    }
    return Settings(
        redis_url=redis_url,
        artifacts_dir=DEMO_ARTIFACTS,
        data_dir=data_dir,
        queue=queue,
        api_keys=[KEY_A, KEY_B],
        batch_size=4,
        **(quick | fields),
    )


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these settings (lists as JSON)."""
    values = settings.model_dump(mode="json", exclude_none=True)
    variables = {
        f"MRISYNTH_{name.upper()}": value if isinstance(value, str) else json.dumps(value)
        for name, value in values.items()
    }
    return {**os.environ, **variables, "REDIS_URL": str(settings.redis_url)}


class Child:
    """A child process in a session of its own, stopped with SIGTERM to its whole process group."""

    def __init__(
        self, command: list[str], settings: Settings, preexec_fn: Callable[[], None] | None = None
    ) -> None:
        self.process = subprocess.Popen(
            command, env=service_env(settings), cwd=ROOT, start_new_session=True, preexec_fn=preexec_fn
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class Api(Child):
    """``uvicorn service.app:create_app --factory`` on a free loopback port, started when it answers;
    ``memory_bytes``: the most address space it and each process it starts may take (``RLIMIT_AS``),
    so that a runaway allocation fails there instead of taking the machine."""

    def __init__(self, settings: Settings, memory_bytes: int | None = None) -> None:
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory"]
        limit = (
            None
            if memory_bytes is None
            else partial(resource.setrlimit, resource.RLIMIT_AS, (memory_bytes,) * 2)
        )
        super().__init__(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], settings, limit
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"uvicorn did not start on port {port}")
            time.sleep(0.1)


def start_worker(settings: Settings) -> Child:
    """A real ``mrisynth worker`` on the settings' Redis and queue."""
    return Child([sys.executable, "-m", "cli", "worker"], settings)


@contextmanager
def api_client(settings: Settings) -> Iterator[httpx.Client]:
    """An httpx client of a real :class:`Api` with these settings, stopped on exit."""
    server = Api(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield client
    finally:
        server.stop()


@contextmanager
def ready_worker(settings: Settings, api: httpx.Client) -> Iterator[Child]:
    """A real ``mrisynth worker``, yielded once the API's ``/readyz`` counts it; stopped on exit."""
    child = start_worker(settings)
    try:
        deadline = time.monotonic() + 60
        while api.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, api.get("/readyz").json()
            time.sleep(0.2)
        yield child
    finally:
        child.stop()


def nifti_file(label: np.ndarray, compress: bool = True) -> bytes:
    """The bytes of a NIfTI-1 file (gzipped: a .nii.gz) holding the array."""
    data = nib.Nifti1Image(label, np.eye(4)).to_bytes()
    return gzip.compress(data) if compress else data


def patched_header(nifti: bytes, offset: int, layout: str, *values: int) -> bytes:
    """An uncompressed NIfTI-1 file with header fields overwritten: ``values`` packed as ``layout``
    (:mod:`struct`) at byte ``offset``, e.g. ``dim`` at 40 (``"<4h"``), ``datatype`` at 70 (``"<h"``)."""
    patched = bytearray(nifti)
    struct.pack_into(layout, patched, offset, *values)
    return bytes(patched)


def bundle_cases(bundle: bytes) -> list[dict[str, np.ndarray]]:
    """Every case of a bundle zip as its manifest lists them, each file opened with nibabel."""
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        return [
            {
                key: np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(archive.read(name))).dataobj)
                for key, name in case["files"].items()
            }
            for case in manifest["cases"]
        ]


def detail_text(detail: str | list[dict[str, Any]]) -> str:
    """An error's detail as text: the string, or each validation error's field path and message."""
    if isinstance(detail, str):
        return detail
    return "; ".join(
        ".".join(str(part) for part in error["loc"][1:]) + ": " + error["msg"] for error in detail
    )


MULTIPART = {"Content-Type": "multipart/form-data; boundary=b"}
"""The content type of :func:`chunked_multipart`'s body."""


def chunked_multipart(size: int) -> Iterator[bytes]:
    """A multipart upload of one file of ``size`` bytes, sent in chunks without Content-Length."""
    yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.nii"\r\n\r\n'
    for _ in range(size // 10_000):
        yield b"x" * 10_000
