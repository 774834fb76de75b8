"""Helpers of the service tests: real uvicorn and ``mrisynth worker`` processes, NIfTI uploads."""

import gzip
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
from conftest import free_port

from mrisynth.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"
"""Two API keys: two callers who must not see each other's datasets."""
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
FAST = {"thresholds": {"dice": 0.0}}
"""Request fields under which the demo models accept samples quickly: they accept no lesion at the
default Dice 0.95 (see the README)."""


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

    def __init__(self, command: list[str], settings: Settings) -> None:
        self.process = subprocess.Popen(command, env=service_env(settings), cwd=ROOT, start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class Api(Child):
    """``uvicorn service.app:create_app --factory`` on a free loopback port, started when it answers."""

    def __init__(self, settings: Settings) -> None:
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory"]
        super().__init__(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], settings
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
    return Child([sys.executable, "-m", "mrisynth", "worker"], settings)


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
