"""``python -m service.benchmark``: latency of the API under concurrent clients, on the loopback.

It starts its own ``redis-server`` and ``uvicorn service.app:create_app --factory`` (and, with
``--workers N``, N ``mrisynth worker`` processes) on free loopback ports, in a temporary directory
removed at the end. Then ``--clients`` clients, each its own ``httpx.AsyncClient`` (keep-alive), all
at once: first each posts ``--requests`` datasets of ``--n`` samples one after the other, then each
reads the status of its datasets (``GET /datasets/{id}``) as many times. It prints the p50 and p99
latency and the rate of each phase; the rate of the first is the jobs/s the API queues. Without
workers (the default) the datasets stay queued, so the figures are the API's and Redis' alone.
"""

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from service.embedded import find_redis_server, free_loopback_port, private_redis, worker_processes

log = logging.getLogger(__name__)

KEY = "benchmark-key"
START_TIMEOUT_S = 60.0


@contextmanager
def _child(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A child process, terminated (then killed) on exit."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until(ready: Callable[[], bool], what: str, process: subprocess.Popen) -> None:
    """Poll ``ready()`` until true; RuntimeError if the process ends or it takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def _api_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz").status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def _stack(workdir: Path, workers: int) -> Iterator[str]:
    """Redis (:func:`service.embedded.private_redis`), the workers and the API; yields the API's URL."""
    with ExitStack() as stack:
        redis_url = stack.enter_context(private_redis(workdir))
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "MRISYNTH_DATA_DIR": str(workdir / "data"),
            "MRISYNTH_QUEUE": "benchmark",
            "MRISYNTH_API_KEYS": json.dumps([KEY]),
            "MRISYNTH_MAX_ACTIVE_JOBS_PER_KEY": str(10**9),
            "MRISYNTH_SWEEP_INTERVAL_S": "3600",
        }
        if workers:
            stack.enter_context(worker_processes(workers, env))
        port = free_loopback_port()
        url = f"http://127.0.0.1:{port}"
        api_command = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory"]
        api = stack.enter_context(
            _child([*api_command, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env)
        )
        _wait_until(lambda: _api_answers(url), "uvicorn", api)
        yield url


async def _post_all(client: httpx.AsyncClient, count: int, n: int) -> tuple[list[float], list[str]]:
    latencies, ids = [], []
    for _ in range(count):
        start = time.perf_counter()
        response = await client.post("/datasets", json={"n": n, "thresholds": {"dice": 0.0}})
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()
        ids.append(response.json()["id"])
    return latencies, ids


async def _get_all(client: httpx.AsyncClient, ids: list[str]) -> list[float]:
    latencies = []
    for dataset_id in ids:
        start = time.perf_counter()
        response = await client.get(f"/datasets/{dataset_id}")
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()
    return latencies


async def _run(url: str, clients: int, requests: int, n: int) -> dict[str, tuple[list[float], float]]:
    """Latencies (s) and wall time (s) of each phase."""
    headers = {"Authorization": f"Bearer {KEY}"}
    pool = [httpx.AsyncClient(base_url=url, headers=headers, timeout=120) for _ in range(clients)]
    try:
        await asyncio.gather(*(client.get("/healthz") for client in pool))
        start = time.perf_counter()
        posted = await asyncio.gather(*(_post_all(client, requests, n) for client in pool))
        post_wall = time.perf_counter() - start
        start = time.perf_counter()
        got = await asyncio.gather(
            *(_get_all(client, ids) for client, (_, ids) in zip(pool, posted, strict=True))
        )
        get_wall = time.perf_counter() - start
    finally:
        await asyncio.gather(*(client.aclose() for client in pool))
    return {
        "POST /datasets": ([t for latencies, _ in posted for t in latencies], post_wall),
        "GET /datasets/{id}": ([t for latencies in got for t in latencies], get_wall),
    }


def _row(name: str, latencies: list[float], wall_s: float) -> str:
    """A line of the table: count, p50 and p99 in ms, requests per second."""
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return (
        f"{name:<20} {len(latencies):>6} {1000 * cuts[49]:>9.1f} {1000 * cuts[98]:>9.1f} "
        f"{len(latencies) / wall_s:>10.1f}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m service.benchmark``."""
    parser = argparse.ArgumentParser(prog="python -m service.benchmark", description=__doc__)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument(
        "--requests", type=int, default=20, help="datasets each client posts, then reads (20)"
    )
    parser.add_argument("--n", type=int, default=1, help="samples per dataset (default 1)")
    parser.add_argument("--workers", type=int, default=0, help="mrisynth workers to start (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if min(args.clients, args.requests, args.n) < 1 or args.workers < 0:
        parser.error("--clients, --requests and --n must be >= 1, --workers >= 0")
    try:
        find_redis_server()
    except RuntimeError as error:
        parser.error(str(error))
    with (
        tempfile.TemporaryDirectory(prefix="mrisynth-benchmark-") as workdir,
        _stack(Path(workdir), args.workers) as url,
    ):
        phases = asyncio.run(_run(url, args.clients, args.requests, args.n))
    log.info(
        "%d clients x %d requests, %d worker(s), one uvicorn process, %d CPUs",
        args.clients,
        args.requests,
        args.workers,
        os.cpu_count() or 0,
    )
    log.info("%-20s %6s %9s %9s %10s", "request", "count", "p50 ms", "p99 ms", "per s")
    for name, (latencies, wall_s) in phases.items():
        log.info(_row(name, latencies, wall_s))
    log.info(
        "jobs/s (datasets queued per second): %.1f",
        len(phases["POST /datasets"][0]) / phases["POST /datasets"][1],
    )


if __name__ == "__main__":
    main()
