"""``mrisynth serve``'s embedded default under faults (issue 13), as real processes: ``kill -9`` of its
worker, of its redis-server and of ``mrisynth serve`` itself, each in the middle of a dataset. Every
dataset must finish, no record may be lost, and each zip must equal, voxel for voxel, the zip of the
same request made without a fault.

The intervals are small (``ENVIRONMENT``), so that a dead worker's chunk is retried within seconds
and a dead worker stops counting as live at most 16 s (its ttl) after its last heartbeat."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import free_port
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from service_fixtures import FAST, ROOT, bundle_cases

from service.embedded import PID_FILE
from service.supervisor import kill_leftovers, kill_session, session_members, start_time

REQUEST = {"n": 10, "seed": 3, **FAST}
"""Five chunk jobs of two samples: several seconds of work on the demo artifacts."""

ENVIRONMENT = {
    "MRISYNTH_CHUNK_SIZE": "2",
    "MRISYNTH_BATCH_SIZE": "4",
    "MRISYNTH_JOB_MONITORING_INTERVAL_S": "1",
    "MRISYNTH_HEARTBEAT_GRACE_S": "2",
    "MRISYNTH_MAINTENANCE_INTERVAL_S": "1",
}
WORKER_TTL_S = 16
"""A worker's ttl under ``ENVIRONMENT``: ``maintenance_interval_s`` + 15 (``worker.jobs.worker_ttl_s``);
a busy worker's registration expires sooner, ``job_monitoring_interval_s + heartbeat_grace_s`` after
its last heartbeat."""

ONNXRUNTIME_SESSION_FILE = ".ses"
"""What ``import onnxruntime`` writes to (and reads again from) TMPDIR, in its native code: 51 bytes, the
only file a ``mrisynth serve`` leaves outside its data directory."""

READY_TIMEOUT_S = 60.0
FINISH_TIMEOUT_S = 120.0


class Serve:
    """A ``mrisynth serve`` on ``data_dir`` in a session of its own, with its log and an empty TMPDIR.

    Args:
        data_dir: its ``--data-dir``.
        log: file its output is appended to.
        tmpdir: its TMPDIR, to show that it writes nothing outside ``data_dir``.
    """

    def __init__(self, data_dir: Path, log: Path, tmpdir: Path) -> None:
        self.data_dir, self.log, self.tmpdir = data_dir, log, tmpdir
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        unset = ("REDIS_URL", "MRISYNTH_REDIS_URL", "MRISYNTH_API_KEYS", "MRISYNTH_DATA_DIR")
        environment = {k: v for k, v in os.environ.items() if k not in unset}
        command = [sys.executable, "-m", "cli", "serve", "--port", str(port), "--data-dir", data_dir]
        with log.open("a") as output:
            self.process = subprocess.Popen(
                command,
                env={**environment, **ENVIRONMENT, "TMPDIR": str(tmpdir)},
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def text(self) -> str:
        return self.log.read_text()

    def children(self) -> dict[str, int]:
        """The supervised children's pids by name, from the supervisor's pid file."""
        return {entry["name"]: entry["pid"] for entry in json.loads((self.data_dir / PID_FILE).read_text())}

    def readiness(self) -> tuple[int, dict[str, str]]:
        """``/readyz``'s status code and checks; (0, {}) while nothing answers."""
        try:
            answer = self.client.get("/readyz", timeout=5)
        except httpx.TransportError:
            return 0, {}
        return answer.status_code, answer.json()["checks"]

    def wait_ready(self) -> None:
        _until(lambda: self.readiness()[0] == 200, READY_TIMEOUT_S, "ready", self)

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/datasets/{dataset_id}").raise_for_status().json())

    def ids(self) -> set[str]:
        return {record["id"] for record in self.client.get("/datasets").raise_for_status().json()["datasets"]}

    def post(self) -> str:
        answer = self.client.post("/datasets", json=REQUEST)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def finish(self, dataset_id: str) -> bytes:
        """The zip of the dataset, once it finished (it must not fail)."""
        records: list[dict[str, Any]] = []

        def ended() -> bool:
            records.append(self.dataset(dataset_id))
            return records[-1]["state"] in {"finished", "failed", "cancelled"}

        _until(ended, FINISH_TIMEOUT_S, f"dataset {dataset_id} ends", self)
        assert records[-1]["state"] == "finished" and records[-1]["error"] is None, records[-1]
        return self.client.get(f"/datasets/{dataset_id}/download").raise_for_status().content

    def wait_running(self, dataset_id: str) -> dict[str, Any]:
        """The dataset's record once a chunk has started and before it has finished."""
        records: list[dict[str, Any]] = []

        def running() -> bool:
            records.append(self.dataset(dataset_id))
            return records[-1]["state"] != "queued"

        _until(running, READY_TIMEOUT_S, f"dataset {dataset_id} runs", self, poll_s=0.05)
        assert records[-1]["state"] == "running", records[-1]
        return records[-1]

    def stop(self) -> int:
        """SIGINT, as Ctrl-C does; its exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


def _until(
    condition: Callable[[], bool], timeout_s: float, what: str, serve: Serve, poll_s: float = 0.2
) -> None:
    """Wait for ``condition``; fail with ``serve``'s log if it does not hold within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout_s:.0f} s:\n{serve.text()[-6000:]}"
        time.sleep(poll_s)


def _redis_url(serve: Serve) -> str:
    """The URL of the last redis-server ``serve`` started (from its log)."""
    urls = re.findall(r"started redis-server \(pid \d+\) at (redis://\S+),", serve.text())
    assert urls, serve.text()
    return str(urls[-1])


def _answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_timeout=1).ping())
    except RedisConnectionError:
        return False


def _same_cases(bundle: bytes, reference: bytes) -> None:
    cases, expected = bundle_cases(bundle), bundle_cases(reference)
    assert len(cases) == len(expected) == REQUEST["n"]
    for case, want in zip(cases, expected, strict=True):
        assert case.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(case[key], want[key], err_msg=key)


@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Path], Serve]]:
    """Start a :class:`Serve` (``launch(data_dir)``); every one is stopped at the end, with every child
    it left behind, whether or not its test passed."""
    started: list[Serve] = []
    directory = tmp_path_factory.mktemp("faults")

    def start(data_dir: Path) -> Serve:
        tmpdir = directory / f"tmp-{len(started)}"
        tmpdir.mkdir()
        served = Serve(data_dir, directory / f"serve-{len(started)}.log", tmpdir)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.send_signal(signal.SIGINT)
            try:
                served.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(served.process.pid, signal.SIGKILL)
                served.process.wait()
        kill_leftovers(served.data_dir / PID_FILE)
        served.client.close()


@pytest.fixture(scope="module")
def served(launch: Callable[[Path], Serve], tmp_path_factory: pytest.TempPathFactory) -> Serve:
    """One ``mrisynth serve``, ready, for the worker and the Redis faults."""
    serve = launch(tmp_path_factory.mktemp("served") / "data")
    serve.wait_ready()
    return serve


@pytest.fixture(scope="module")
def reference(served: Serve) -> tuple[str, bytes]:
    """The id and zip of ``REQUEST`` made without a fault."""
    dataset_id = served.post()
    return dataset_id, served.finish(dataset_id)


def test_a_second_serve_on_the_same_data_dir_is_refused(served: Serve) -> None:
    command = [sys.executable, "-m", "cli", "serve", "--port", str(free_port())]
    result = subprocess.run(
        [*command, "--data-dir", str(served.data_dir)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    pid = served.process.pid
    assert f"another mrisynth serve (pid {pid}) runs on the data directory {served.data_dir}" in result.stderr
    assert served.readiness()[0] == 200


def test_a_killed_worker_is_restarted_counted_again_and_its_chunk_rerun(
    served: Serve, reference: tuple[str, bytes]
) -> None:
    """The worker and its work-horse hang mid-chunk (SIGSTOP): ``/readyz`` stops counting the worker
    once its heartbeat is a ttl old; then they are killed (SIGKILL): the supervisor restarts the
    worker, ``/readyz`` counts it, and the abandoned chunk is retried."""
    dataset_id = served.post()
    worker = served.children()["worker 1"]
    assert served.wait_running(dataset_id)["progress"]["accepted"] < REQUEST["n"]
    hung = session_members(worker)
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    _until(lambda: served.readiness()[0] == 503, WORKER_TTL_S + 10, "unready without a live worker", served)
    print(f"/readyz stopped counting the hung worker after {time.monotonic() - stopped_at:.1f} s")
    assert served.readiness()[1]["workers"] == "no worker on queue mrisynth"
    kill_session(worker)
    killed_at = time.monotonic()
    _until(lambda: served.children()["worker 1"] != worker, 10, "worker restarted", served, poll_s=0.05)
    restarted_in = time.monotonic() - killed_at
    served.wait_ready()
    print(f"worker restarted in {restarted_in:.2f} s, ready after {time.monotonic() - killed_at:.1f} s")
    assert restarted_in < 5
    assert re.search(rf"worker 1 \(pid {worker}\) ended \(killed by SIGKILL\)", served.text())
    assert f"restarted worker 1 (pid {served.children()['worker 1']})" in served.text()
    assert all(start_time(pid) is None for pid in hung), "the hung work-horse should be gone too"
    _same_cases(served.finish(dataset_id), reference[1])


def test_a_killed_redis_is_restarted_on_its_port_with_every_record(
    served: Serve, reference: tuple[str, bytes]
) -> None:
    before, url = served.ids(), _redis_url(served)
    dataset_id = served.post()
    redis = served.children()["redis-server"]
    served.wait_running(dataset_id)
    os.kill(redis, signal.SIGKILL)
    killed_at = time.monotonic()
    _until(lambda: _answers(url), 10, "Redis answers again on its port", served, poll_s=0.05)
    print(f"redis-server answered again after {time.monotonic() - killed_at:.2f} s")
    assert served.children()["redis-server"] != redis
    assert re.search(rf"redis-server \(pid {redis}\) ended \(killed by SIGKILL\)", served.text())
    _same_cases(served.finish(dataset_id), reference[1])
    assert served.ids() == before | {dataset_id}
    reference_id, reference_zip = reference
    assert served.dataset(reference_id)["state"] == "finished"
    assert served.client.get(f"/datasets/{reference_id}/download").content == reference_zip
    served.wait_ready()


def test_a_killed_serve_restarts_on_its_data_dir_and_finishes_the_dataset(
    launch: Callable[[Path], Serve], reference: tuple[str, bytes], tmp_path: Path
) -> None:
    """``kill -9`` of the process group of ``mrisynth serve`` mid-dataset: the children, in sessions
    of their own, run on; the next ``mrisynth serve`` on the data directory kills them, resumes the
    queued work and finds every record; nothing is left in a temporary directory."""
    data_dir = tmp_path / "data"
    first = launch(data_dir)
    first.wait_ready()
    finished = first.post()
    first.finish(finished)
    dataset_id = first.post()
    first.wait_running(dataset_id)
    orphans = first.children()
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait()
    assert all(start_time(pid) is not None for pid in orphans.values()), "the children should outlive it"

    second = launch(data_dir)
    second.wait_ready()
    assert all(start_time(pid) is None for pid in orphans.values()), "the orphans should be killed"
    assert "left running by a mrisynth serve that did not stop" in second.text()
    _same_cases(second.finish(dataset_id), reference[1])
    assert second.ids() == {finished, dataset_id}
    assert second.stop() == 0, second.text()
    for tmpdir in (first.tmpdir, second.tmpdir):
        assert {path.name for path in tmpdir.iterdir()} <= {ONNXRUNTIME_SESSION_FILE}
    assert not (data_dir / PID_FILE).exists()
    assert {path.name for path in data_dir.iterdir()} == {"datasets", "redis", "serve.lock"}
