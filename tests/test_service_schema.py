"""Schemathesis against the app's own OpenAPI schema: no 5xx, every answer as the schema says.

The app runs in-process (``schemathesis.openapi.from_asgi``) on the real redis-server of the session,
without a worker: datasets are queued and never run. ``/readyz`` is left out, as it answers 503 by
design while no worker runs (``tests/test_service_api.py`` checks it both ways). Some bodies have rules
no schema can state, answered 422 naming the field: a ``lesion_source`` (``structure_source``) must be a
lesion set (scan set) of the caller's, and uploaded files real NIfTI labels or scans; for those
operations 422 also counts as accepting schema-valid data.
"""

import hypothesis
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.openapi import from_asgi

from mrisynth.settings import DEMO_ARTIFACTS, Settings
from service.app import create_app

KEY = "schema-test-key"

ACCEPTED = ["2xx", "401", "404", "409", "429"]
"""Schemathesis' statuses for accepted schema-valid data, but 5xx: the service never answers one."""

CONFIG = {
    "auth": {"openapi": {"HTTPBearer": {"bearer": KEY}}},
    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
    "operations": [
        {
            "include-method": "POST",
            "include-path": path,
            "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
        }
        for path in ("/datasets", "/lesion-sets", "/scan-sets", "/translations")
    ],
}


@pytest.fixture(scope="module")
def api_schema(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    settings = Settings(
        redis_url=redis_url,
        artifacts_dir=DEMO_ARTIFACTS,
        data_dir=tmp_path_factory.mktemp("schema-data"),
        queue="test-schema",
        api_keys=[KEY],
        max_n=50,
        max_active_jobs_per_key=10_000,
        max_upload_bytes=1 << 20,
    )
    return from_asgi(
        "/openapi.json",
        create_app(settings),
        config=SchemathesisConfig.from_dict(CONFIG),
        headers={"Authorization": f"Bearer {KEY}"},
    )


def test_every_answer_conforms_to_the_schema(api_schema: schemathesis.BaseSchema) -> None:
    """Each operation (but ``/readyz``) on 40 generated cases, Hypothesis driving ``operation.as_strategy()``
    (schemathesis' documented use outside its pytest plugin, which breaks with each pytest release)."""
    results = list(api_schema.exclude(path="/readyz").get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) >= 10, [operation.label for operation in operations]
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=40, deadline=None, database=None, suppress_health_check=list(hypothesis.HealthCheck)
        )
        def conforms(case: schemathesis.Case) -> None:
            case.call_and_validate()

        conforms()
