"""``mrisynth serve`` and ``mrisynth generate`` as real processes (issue 5), and the client's download
logic against a mock transport."""

import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from conftest import descendant_pids, free_port

from cli.main import main
from mrisynth.settings import get_settings
from service.client import GenerateError, download, error_detail, generate, idempotency_key
from service.embedded import LOCK_FILE, PID_FILE
from service.supervisor import kill_leftovers, start_time

READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Served:
    """A running ``mrisynth serve``: its process, URL, log file, and the TMPDIR and data directory it got."""

    process: subprocess.Popen
    url: str
    log: Path
    tmpdir: Path
    data_dir: Path


def _environment(**variables: str) -> dict[str, str]:
    """This process's environment without Redis or API keys, plus ``variables``."""
    unset = ("REDIS_URL", "MRISYNTH_REDIS_URL", "MRISYNTH_API_KEYS", "MRISYNTH_API_KEY", "MRISYNTH_DATA_DIR")
    return {**{k: v for k, v in os.environ.items() if k not in unset}, **variables}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``mrisynth serve`` without REDIS_URL (its own redis-server and one worker), ready."""
    directory = tmp_path_factory.mktemp("serve")
    tmpdir, log, data_dir = directory / "tmp", directory / "serve.log", directory / "data"
    tmpdir.mkdir()
    port = free_port()
    command = [sys.executable, "-m", "cli", "serve", "--port", str(port), "--workers", "1"]
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--data-dir", str(data_dir)],
            env=_environment(TMPDIR=str(tmpdir), MRISYNTH_BATCH_SIZE="4"),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mrisynth serve did not get ready:\n{log.read_text()}")
            time.sleep(0.2)
        yield Served(process, url, log, tmpdir, data_dir)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        kill_leftovers(data_dir / PID_FILE)


def _ready(url: str, path: str = "/readyz") -> bool:
    """Whether ``url`` answers 200 at ``path``."""
    try:
        return httpx.get(f"{url}{path}", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _generate(url: str, out: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cli", "generate", "--server", url, "--out", str(out), *arguments]
    return subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=120)


def _dataset_id(stderr: str) -> str:
    """The dataset id that generate logs (``dataset <id>: <status url>``)."""
    found = re.search(r"dataset (\S+): \S*/datasets/", stderr)
    assert found is not None, stderr
    return found.group(1)


GENERATE = ("--n", "2", "--seed", "5", "--dice", "0", "--modalities", "t1", "flair")


@pytest.fixture(scope="module")
def generated(served: Served, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A zip made by ``mrisynth generate`` and the dataset id it logged."""
    out = tmp_path_factory.mktemp("generate") / "set.zip"
    result = _generate(served.url, out, *GENERATE)
    assert result.returncode == 0, result.stderr
    return out, _dataset_id(result.stderr)


def test_generate_downloads_a_bundle_that_nibabel_opens(generated: tuple[Path, str]) -> None:
    out, _ = generated
    assert not out.with_name("set.zip.part").exists()
    with zipfile.ZipFile(out) as bundle:
        cases = json.loads(bundle.read("manifest.json"))["cases"]
        assert len(cases) == 2
        for case in cases:
            assert set(case["files"]) >= {"t1", "flair", "seg"} and "t2" not in case["files"]
            image = nib.Nifti1Image.from_bytes(gzip.decompress(bundle.read(case["files"]["flair"])))
            assert image.get_fdata().ndim == 3 and np.asarray(image.dataobj).dtype == np.float32


def test_a_rerun_resumes_the_part_of_the_same_dataset(served: Served, generated: tuple[Path, str]) -> None:
    out, dataset_id = generated
    whole = out.read_bytes()
    out.with_name("set.zip.part").write_bytes(whole[: len(whole) // 2])
    out.unlink()
    result = _generate(served.url, out, *GENERATE)
    assert result.returncode == 0, result.stderr
    assert _dataset_id(result.stderr) == dataset_id, "the rerun should follow the same dataset"
    assert f"at {len(whole) // 2} bytes" in result.stderr
    assert out.read_bytes() == whole


@pytest.mark.parametrize(
    ("arguments", "detail"),
    [
        (("--n", "0"), "n: Input should be greater than or equal to 1"),
        (("--n", "1", "--modalities", "dwi"), "modalities.0: Input should be 't1', 't1ce', 't2' or 'flair'"),
    ],
)
def test_generate_prints_the_server_detail_of_a_4xx(
    served: Served, tmp_path: Path, arguments: tuple[str, ...], detail: str
) -> None:
    result = _generate(served.url, tmp_path / "set.zip", *arguments)
    assert result.returncode == 2
    assert "HTTP 422" in result.stderr and detail in result.stderr, result.stderr


def test_generate_says_when_the_server_is_unreachable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--server", url, "--n", "1", "--out", str(tmp_path / "set.zip")])
    assert exit_.value.code == 2
    assert f"cannot reach the server at {url}" in capsys.readouterr().err


def test_serve_refuses_a_public_host_without_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("MRISYNTH_API_KEYS", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["serve", "--host", "0.0.0.0", "--port", str(free_port())])
    finally:
        get_settings.cache_clear()
    assert exit_.value.code == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in capsys.readouterr().err


def test_sigint_stops_every_child_and_keeps_everything_in_the_data_dir(
    served: Served, generated: tuple[Path, str]
) -> None:
    """The datasets and Redis' append-only file stay in the data directory for the next start; the
    only file outside it is the one ``import onnxruntime`` writes to TMPDIR (``.ses``)."""
    _, dataset_id = generated
    children = descendant_pids(served.process.pid)
    names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in children}
    assert "redis-server" in names and any(name.startswith("python") for name in names), names
    assert (served.data_dir / PID_FILE).is_file()
    served.process.send_signal(signal.SIGINT)
    assert served.process.wait(timeout=30) == 0, served.log.read_text()
    deadline = time.monotonic() + 5
    while [pid for pid in children if start_time(pid) is not None] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in children if start_time(pid) is not None] == [], "every child should be gone"
    assert {path.name for path in served.tmpdir.iterdir()} <= {".ses"}
    assert {path.name for path in served.data_dir.iterdir()} == {"datasets", "redis", LOCK_FILE}
    assert (served.data_dir / "datasets" / dataset_id / f"{dataset_id}.zip").is_file()
    assert list((served.data_dir / "redis").glob("appendonly*"))
    assert "stopped by SIGINT" in served.log.read_text()


def _command_lines(pids: list[int]) -> list[bytes]:
    """The command lines of the processes still there."""
    lines = []
    for pid in pids:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "))
        except OSError:
            continue
    return lines


def test_with_redis_url_serve_is_the_gateway_only(redis_url: str, tmp_path: Path) -> None:
    """``REDIS_URL`` set: the API on that Redis, without a redis-server or a worker of its own."""
    port, log = free_port(), tmp_path / "serve.log"
    environment = _environment(
        REDIS_URL=redis_url, MRISYNTH_QUEUE="test-gateway", MRISYNTH_DATA_DIR=str(tmp_path / "data")
    )
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(port)],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(url, "/healthz"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        checks = httpx.get(f"{url}/readyz").json()["checks"]
        assert checks == {"artifacts": "ok", "redis": "ok", "workers": "no worker on queue test-gateway"}
        started = _command_lines(descendant_pids(process.pid))
        assert not [line for line in started if b"redis-server" in line or b"worker" in line], started
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "gateway only: Redis at 127.0.0.1" in text and "stopped by SIGINT" in text, text


BLOB = np.random.default_rng(0).bytes(3000)
SHA256 = hashlib.sha256(BLOB).hexdigest()


class _CutStream(httpx.SyncByteStream):
    """A response body that breaks off after ``data``, as a dropped connection does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset")


def _serving(blob: bytes, ranges: list[str | None], cut_first_at: int | None = None) -> httpx.Client:
    """A client of a mock server that serves ``blob`` with ranges, recording each request's Range."""

    def handle(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("Range"))
        start = int(request.headers["Range"][6:-1]) if "Range" in request.headers else 0
        status, headers = (
            (206, {"Content-Range": f"bytes {start}-{len(blob) - 1}/{len(blob)}"}) if start else (200, {})
        )
        headers["Content-Length"] = str(len(blob) - start)
        if cut_first_at is not None and len(ranges) == 1:
            return httpx.Response(status, headers=headers, stream=_CutStream(blob[start:cut_first_at]))
        return httpx.Response(status, headers=headers, content=blob[start:])

    return httpx.Client(transport=httpx.MockTransport(handle), base_url="http://mrisynth.test")


def test_a_cut_download_resumes_where_it_stopped(tmp_path: Path) -> None:
    ranges: list[str | None] = []
    part = tmp_path / "set.zip.part"
    download(_serving(BLOB, ranges, cut_first_at=1000), "/download", SHA256, part)
    assert ranges == [None, "bytes=1000-"]
    assert part.read_bytes() == BLOB


def test_a_stale_part_that_does_not_match_is_downloaded_again(tmp_path: Path) -> None:
    ranges: list[str | None] = []
    part = tmp_path / "set.zip.part"
    part.write_bytes(b"another dataset")
    download(_serving(BLOB, ranges), "/download", SHA256, part)
    assert ranges == [f"bytes={len(b'another dataset')}-", None]
    assert part.read_bytes() == BLOB
    with pytest.raises(GenerateError, match="sha256"):
        download(_serving(BLOB, []), "/download", "0" * 64, tmp_path / "other.part")


def test_a_failed_dataset_reports_its_error_and_a_rerun_sends_the_same_key(tmp_path: Path) -> None:
    keys: list[str] = []
    progress = {"accepted": 0, "target": 2, "rejected": {"dice": 400}, "samples_per_s": None, "eta_s": None}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            keys.append(request.headers["Idempotency-Key"])
            return httpx.Response(202, json={"id": "d1", "state": "queued", "status_url": "/datasets/d1"})
        error = "acceptance rate 0.0%: relax thresholds.dice"
        return httpx.Response(200, json={"id": "d1", "state": "failed", "progress": progress, "error": error})

    client = httpx.Client(transport=httpx.MockTransport(handle), base_url="http://mrisynth.test")
    request = {"n": 2, "modalities": ["t1"], "lesion_source": "library", "thresholds": {"dice": 1.0}}
    for _ in range(2):
        with pytest.raises(
            GenerateError, match=r"dataset d1 failed: acceptance rate 0\.0%: relax thresholds\.dice"
        ):
            generate(client, request, tmp_path / "set.zip", poll_interval_s=0)
    assert keys == [idempotency_key(request, tmp_path / "set.zip")] * 2
    assert idempotency_key(request, tmp_path / "other.zip") != keys[0]


def test_error_detail_names_the_fields_of_validation_errors() -> None:
    invalid = {
        "detail": [{"loc": ["body", "thresholds", "dice"], "msg": "Input should be less than or equal to 1"}]
    }
    assert (
        error_detail(httpx.Response(422, json=invalid))
        == "thresholds.dice: Input should be less than or equal to 1"
    )
    assert error_detail(httpx.Response(404, json={"detail": "no dataset d1"})) == "no dataset d1"
    assert error_detail(httpx.Response(502, text="Bad Gateway")) == "Bad Gateway"
