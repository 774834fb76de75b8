"""Issue 13, the findings of the request path and the queues, against the real service: real uvicorn,
real redis-server, a real ``mrisynth worker``.

Covered here: NaN and Infinity answered 422 (and the connection kept), 422 bodies that never echo the
input, keys asked for on ``/metrics``, ``/models``, ``/docs`` and before an upload's body is read,
security headers, Swagger UI served by the app, ``HEAD`` wherever ``GET`` is, ``If-None-Match`` -> 304,
Redis bounded over create/cancel cycles, fair turns between owners on one worker, no parser process
left by a killed API, and no address in an answer during a Redis outage.
"""

import os
import signal
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from service_fixtures import FAST, A, Api, B, Child, api_client, keyed_settings, ready_worker

from mrisynth.settings import Settings
from worker.jobs import chunk_job_id


@pytest.fixture(scope="module")
def settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return keyed_settings(
        redis_url, tmp_path_factory.mktemp("hostile-data"), "test-hostile", chunk_size=1, max_n=2000
    )


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[httpx.Client]:
    with api_client(settings) as client:
        yield client


def _raw_post(api: httpx.Client, body: bytes) -> httpx.Response:
    return api.post("/datasets", content=body, headers={**A, "Content-Type": "application/json"})


@pytest.mark.parametrize(
    "body",
    [
        b'{"n": NaN}',
        b'{"n": Infinity}',
        b'{"n": 1, "thresholds": {"dice": NaN}}',
        b'{"n": 1, "seed": -Infinity}',
    ],
)
def test_nan_and_infinity_are_422_and_the_connection_stays_usable(api: httpx.Client, body: bytes) -> None:
    response = _raw_post(api, body)
    assert response.status_code == 422, response.text
    assert all({"loc", "msg", "type"} == set(issue) for issue in response.json()["detail"])
    assert api.get("/healthz").status_code == 200


def test_a_422_never_echoes_a_large_input(api: httpx.Client) -> None:
    huge = "x" * 5_000_000
    for body in ({"n": huge}, {"n": 1, huge[:100_000]: 1}, {"n": 1, "lesion_source": huge}):
        response = api.post("/datasets", json=body, headers=A)
        assert response.status_code == 422, response.text[:300]
        assert len(response.content) < 2_000, response.text[:300]


@pytest.mark.parametrize(
    "path", ["/metrics", "/models", "/docs", "/openapi.json", "/datasets", "/docs/assets/swagger-ui.css"]
)
def test_with_keys_everything_but_the_probes_needs_one(api: httpx.Client, path: str) -> None:
    refused = api.get(path)
    assert refused.status_code == 401, refused.text
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert api.get(path, headers=A).status_code == 200
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code in (200, 503)


def test_a_keyless_upload_is_refused_before_its_body_is_read(api: httpx.Client) -> None:
    """60 MB declared, none sent: the 401 comes back from the headers alone."""
    host, port = api.base_url.host, api.base_url.port
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(
            b"POST /lesion-sets HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 60000000\r\n\r\n"
        )
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


@pytest.mark.parametrize("headers", [{}, A])
def test_every_answer_carries_the_security_headers(api: httpx.Client, headers: dict[str, str]) -> None:
    for path in ("/healthz", "/datasets", "/datasets/nope", "/models"):
        response = api.get(path, headers=headers)
        assert response.headers["X-Content-Type-Options"] == "nosniff", (path, response.status_code)
        assert response.headers["Cache-Control"] == "no-store", path
        assert response.headers["X-Frame-Options"] == "DENY", path


def test_swagger_ui_is_served_by_the_app_not_a_cdn(api: httpx.Client) -> None:
    page = api.get("/docs", headers=A).text
    assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    script = api.get("/docs/assets/swagger-ui-bundle.js", headers=A)
    assert script.status_code == 200 and len(script.content) > 100_000
    assert api.get("/redoc", headers=A).status_code == 404


def test_head_answers_wherever_get_does(api: httpx.Client) -> None:
    for path in ("/healthz", "/models", "/datasets", "/openapi.json"):
        got, head = api.get(path, headers=A), api.head(path, headers=A)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"], path
    assert api.head("/datasets/unknown", headers=A).status_code == 404


def _redis_footprint(settings: Settings) -> tuple[int, int]:
    redis = Redis.from_url(str(settings.redis_url))
    return int(redis.dbsize()), int(redis.info("memory")["used_memory"])


def test_create_and_cancel_cycles_keep_redis_bounded(api: httpx.Client, settings: Settings) -> None:
    """No worker runs yet: every dataset's 500 chunk jobs stay queued until it is deleted."""
    keys_before, memory_before = _redis_footprint(settings)
    cycles = 10
    for cycle in range(cycles):
        created = api.post("/datasets", json={"n": 500, "seed": cycle}, headers=A)
        assert created.status_code == 202, created.text
        assert api.delete(f"/datasets/{created.json()['id']}", headers=A).status_code == 204
    keys_after, memory_after = _redis_footprint(settings)
    assert keys_after - keys_before <= 4 * cycles, (keys_before, keys_after)
    assert memory_after - memory_before < 2_000_000, (memory_before, memory_after)


@pytest.fixture(scope="module")
def worker(settings: Settings, api: httpx.Client) -> Iterator[Child]:
    with ready_worker(settings, api) as child:
        yield child


def _dataset(api: httpx.Client, dataset_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = api.get(f"/datasets/{dataset_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _chunk_runs(settings: Settings, dataset_id: str, chunks: int) -> list[tuple[datetime, datetime]]:
    """(started, ended) of the chunk jobs of a dataset that have run."""
    ids = [chunk_job_id(dataset_id, chunk) for chunk in range(chunks)]
    jobs = Job.fetch_many(ids, connection=Redis.from_url(str(settings.redis_url)), serializer=JSONSerializer)
    return [(job.started_at, job.ended_at) for job in jobs if job and job.started_at and job.ended_at]


def test_an_owner_with_a_backlog_does_not_starve_another(
    api: httpx.Client, settings: Settings, worker: Child
) -> None:
    """Owner A queues 4 x 300 one-sample chunks; owner B's 3 chunks then take turns with A's: while B's
    chunks run (first start to last end), the worker starts at most one of A's between two of B's."""
    backlog = [api.post("/datasets", json={"n": 300, "seed": s, **FAST}, headers=A) for s in range(4)]
    assert all(response.status_code == 202 for response in backlog), [r.text for r in backlog]
    a_ids = [response.json()["id"] for response in backlog]
    deadline = time.monotonic() + 120
    while not _chunk_runs(settings, a_ids[0], 2):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    b = api.post("/datasets", json={"n": 3, "seed": 9, **FAST}, headers=B)
    assert b.status_code == 202, b.text
    while (state := _dataset(api, b.json()["id"], B))["state"] != "finished":
        assert state["state"] in ("queued", "running") and time.monotonic() < deadline, state
        time.sleep(0.2)
    b_runs = _chunk_runs(settings, b.json()["id"], 3)
    first, last = min(start for start, _ in b_runs), max(end for _, end in b_runs)
    a_runs = [run for dataset_id in a_ids for run in _chunk_runs(settings, dataset_id, 300)]
    a_between = sum(first < start < last for start, _ in a_runs)
    for dataset_id in a_ids:
        assert api.delete(f"/datasets/{dataset_id}", headers=A).status_code == 204
    assert len(b_runs) == 3 and a_between <= 2, f"{a_between} of A's chunks started among B's 3"
    download = api.get(f"/datasets/{b.json()['id']}/download", headers=B)
    etag = download.headers["ETag"]
    again = api.get(f"/datasets/{b.json()['id']}/download", headers={**B, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    other = api.get(f"/datasets/{b.json()['id']}/download", headers={**B, "If-None-Match": '"other"'})
    assert other.status_code == 200


def _children(pid: int) -> list[int]:
    """Pids of a process's children (Linux /proc)."""
    tasks = Path(f"/proc/{pid}/task")
    return [int(child) for task in tasks.iterdir() for child in (task / "children").read_text().split()]


def test_a_killed_api_leaves_no_upload_parser_behind(settings: Settings) -> None:
    server = Api(settings)
    deadline = time.monotonic() + 30
    while len(parsers := _children(server.process.pid)) < settings.upload_parsers:
        assert time.monotonic() < deadline, parsers
        time.sleep(0.1)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    deadline = time.monotonic() + 10
    while alive := [pid for pid in parsers if Path(f"/proc/{pid}").exists()]:
        assert time.monotonic() < deadline, f"parser processes {alive} outlived the API"
        time.sleep(0.1)


def test_readiness_during_a_redis_outage_names_no_address(settings: Settings) -> None:
    port = free_port()
    server = Api(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"}))
    try:
        ready = httpx.get(f"{server.url}/readyz", timeout=30)
        created = httpx.post(f"{server.url}/datasets", json={"n": 1}, headers=A, timeout=30)
    finally:
        server.stop()
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("unreachable")
    assert created.status_code == 503
    for answer in (ready, created):
        assert str(port) not in answer.text and "127.0.0.1" not in answer.text, answer.text
