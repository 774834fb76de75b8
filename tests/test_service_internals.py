"""The service's parts in this process, on the real redis-server of the session: loopback-only without
API keys, and what a failure half-way through leaves behind (nothing). ``tests/test_service_api.py``
checks the API end to end over real HTTP."""

import asyncio
import hashlib
import logging
from typing import Any

import httpx
import pytest
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from service_fixtures import FAST, KEY_A, A

from mrisynth.settings import DEMO_ARTIFACTS, Settings
from service.app import LOOPBACK_ONLY, create_app, requires_loopback
from service.auth import owner_of
from service.context import build_context
from service.datasets import create_dataset
from service.schemas import DatasetCreate
from service.status import refresh
from worker.jobs import assembly_job_id, bundle_path, cancel_dataset, synthesis_queues


@pytest.fixture(scope="module")
def settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        redis_url=redis_url,
        artifacts_dir=DEMO_ARTIFACTS,
        data_dir=tmp_path_factory.mktemp("service-internals"),
        queue="test-service-internals",
        api_keys=[KEY_A],
        chunk_size=8,
    )


def _in_process(app: Any, method: str, url: str, client: str = "127.0.0.1", **kwargs: Any) -> httpx.Response:
    """One request to an app in this process, as if from the address ``client``."""

    async def request() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 50_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://mrisynth.test") as http:
            return await http.request(method, url, **kwargs)

    return asyncio.run(request())


def test_without_keys_one_local_owner_on_the_loopback(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert not requires_loopback(settings)
    open_settings = settings.model_copy(update={"api_keys": []})
    assert requires_loopback(open_settings)
    with caplog.at_level(logging.WARNING, logger="service.app"):
        app = create_app(open_settings)
    assert caplog.messages == ["no API keys configured: serving on loopback only"] == [LOOPBACK_ONLY]

    response = _in_process(app, "GET", "/datasets")
    assert response.status_code == 200 and response.json() == {"datasets": []}
    for address in ("::1", "::ffff:127.0.0.1"):
        assert _in_process(app, "GET", "/datasets", client=address).status_code == 200
    for address in ("203.0.113.7", "::ffff:10.0.0.1", "testclient"):
        refused = _in_process(app, "GET", "/datasets", client=address)
        assert refused.status_code == 403 and "answers loopback clients only" in refused.json()["detail"]
    keyed = create_app(settings)
    assert _in_process(keyed, "GET", "/datasets", client="203.0.113.7", headers=A).status_code == 200


def test_a_failed_enqueue_leaves_no_record_and_no_job(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis fails after the chunk jobs were queued and before the assembly job: the client gets 503
    without Redis' address, and neither the record, the active slot nor the chunk jobs stay behind."""
    isolated = settings.model_copy(update={"queue": "test-enqueue-failure"})
    app = create_app(isolated)
    connection = Redis.from_url(str(settings.redis_url))
    queued_before_the_failure = []

    def fail(*args: object, **kwargs: object) -> None:
        queued_before_the_failure.append(sum(q.count for q in synthesis_queues(connection, isolated)))
        raise RedisError(f"injected: connection to {isolated.redis_url} lost")

    monkeypatch.setattr(Queue, "enqueue", fail)
    response = _in_process(app, "POST", "/datasets", headers=A, json={"n": 20, **FAST})
    assert response.status_code == 503 and response.json()["detail"].startswith("Redis unavailable")
    assert "injected" not in response.text and "127.0.0.1" not in response.text
    assert queued_before_the_failure == [3], "the 3 chunk jobs (chunk_size 8) were queued, then it failed"
    assert sum(q.count for q in synthesis_queues(connection, isolated)) == 0
    jobs = [key for key in connection.scan_iter("rq:job:*") if connection.type(key) == b"hash"]
    assert [key for key in jobs if connection.hget(key, "origin") == b"test-enqueue-failure"] == []
    store = app.state.context.store
    assert store.dataset_ids() == [] and store.active_ids(owner_of(KEY_A)) == set()


def test_an_end_that_could_not_be_recorded_is_recorded_by_the_next_refresh(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh that claims a dataset's end but fails to record it (here hashing the zip) gives the
    claim back: the dataset does not stay ``queued`` for good, the next refresh finishes it."""
    isolated = settings.model_copy(update={"queue": "test-final-claim"})
    context = build_context(isolated)
    record = create_dataset(context, owner_of(KEY_A), DatasetCreate(n=1), None)
    bundle = bundle_path(isolated, record.id)
    bundle.parent.mkdir(parents=True)
    bundle.write_bytes(b"a zip")
    assembly = Job.fetch(assembly_job_id(record.id), connection=context.connection, serializer=JSONSerializer)
    assembly.set_status(JobStatus.FINISHED)

    def unreadable(path: object) -> str:
        raise OSError("disk error")

    with monkeypatch.context() as patch:
        patch.setattr("service.status.sha256_file", unreadable)
        with pytest.raises(OSError, match="disk error"):
            refresh(context, record.model_copy())
    assert context.store.get_dataset(record.id).state == "queued"  # type: ignore[union-attr]
    finished = refresh(context, record.model_copy())
    assert finished.state == "finished" and finished.sha256 == hashlib.sha256(b"a zip").hexdigest()
    cancel_dataset(context.connection, record.id, isolated)


def test_unknown_methods_make_no_new_metric_series(settings: Settings) -> None:
    app = create_app(settings)
    for method in ("FOO", "BAR"):
        assert _in_process(app, method, "/datasets", headers=A).status_code == 405
    text = _in_process(app, "GET", "/metrics", headers=A).text
    assert 'mrisynth_http_requests_total{method="other",route="/datasets",status="405"} 2.0' in text
    assert "FOO" not in text and "BAR" not in text
