"""The HTTP API end to end (issue 5): real uvicorn, real redis-server, a real ``mrisynth worker``.

The tests run in file order: readiness is checked before the worker starts, and the expiry test, whose
service removes every bundle older than 2 s, comes last.
"""

import hashlib
import io
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from redis import Redis
from rq.job import Job
from service_fixtures import (
    FAST,
    KEY_A,
    MULTIPART,
    A,
    Api,
    B,
    Child,
    api_client,
    bundle_cases,
    chunked_multipart,
    detail_text,
    keyed_settings,
    nifti_file,
    patched_header,
    ready_worker,
)

from mrisynth.conventions import LABELS
from mrisynth.settings import Settings
from worker.jobs import chunk_job_id, synthesis_queues


@pytest.fixture(scope="module")
def settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return keyed_settings(
        redis_url,
        tmp_path_factory.mktemp("service-data"),
        "test-service",
        chunk_size=8,
        max_n=400,
        max_active_jobs_per_key=3,
        max_upload_bytes=100_000,
        max_upload_files=4,
    )


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[httpx.Client]:
    with api_client(settings) as client:
        yield client


@pytest.fixture(scope="module")
def worker(settings: Settings, api: httpx.Client) -> Iterator[Child]:
    with ready_worker(settings, api) as child:
        yield child


def _queued(settings: Settings) -> int:
    """Jobs waiting in every queue of the service."""
    return sum(queue.count for queue in synthesis_queues(Redis.from_url(str(settings.redis_url)), settings))


def _post(api: httpx.Client, body: dict[str, Any], headers: dict[str, str] = A) -> httpx.Response:
    return api.post("/datasets", json=body, headers=headers)


def _wait(
    api: httpx.Client, dataset_id: str, states: set[str], headers: dict[str, str] = A, accepted: int = 0
) -> dict[str, Any]:
    """The dataset once in one of the states with at least ``accepted`` samples."""
    deadline = time.monotonic() + 120
    while True:
        dataset = api.get(f"/datasets/{dataset_id}", headers=headers).json()
        if dataset["state"] in states and dataset["progress"]["accepted"] >= accepted:
            return dataset
        assert time.monotonic() < deadline, dataset
        time.sleep(0.1)


def _make(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = _post(api, body)
    assert response.status_code == 202, response.text
    dataset = _wait(api, response.json()["id"], {"finished", "failed"})
    assert dataset["state"] == "finished", dataset
    return dataset


def test_alive_with_its_model_but_not_ready_without_a_worker(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    model = api.get("/models", headers=A).json()
    assert model["image_size"] == [96, 96] and model["modalities"] == ["t1", "t1ce", "t2", "flair"]
    ready = api.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {
        "redis": "ok",
        "artifacts": "ok",
        "workers": "no worker on queue test-service",
    }


def test_ready_once_a_worker_runs(api: httpx.Client, worker: Child) -> None:
    assert api.get("/readyz").json() == {
        "ready": True,
        "checks": dict.fromkeys(("artifacts", "redis", "workers"), "ok"),
    }


@pytest.mark.parametrize(
    "headers, why",
    [
        ({}, "a bearer token is required"),
        ({"Authorization": "Bearer not-a-key"}, "not an API key"),
        ({"Authorization": f"Basic {KEY_A}"}, "a bearer token is required"),
    ],
)
def test_requests_without_a_valid_key_get_401(api: httpx.Client, headers: dict[str, str], why: str) -> None:
    for response in (api.get("/datasets", headers=headers), _post(api, {"n": 1}, headers)):
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert why in response.json()["detail"]


BAD_REQUESTS: list[tuple[dict[str, Any], int, str]] = [
    ({"n": 1, "modalities": ["t1", "pd"]}, 422, "modalities"),
    ({"n": 1, "modalities": []}, 422, "modalities"),
    ({"n": 1, "modalities": ["t1", "t1"]}, 422, "modalities"),
    ({"n": 0}, 422, "n"),
    ({"n": -3}, 422, "n"),
    ({"n": 401}, 422, "n: at most 400 samples per dataset"),
    ({"n": 1, "thresholds": {"dice": 1.5}}, 422, "thresholds.dice"),
    ({"n": 1, "thresholds": {"structure_mae": -0.1}}, 422, "thresholds.structure_mae"),
    ({"n": 1, "lesion": {"scale": [2.0, 1.0]}}, 422, "lesion.scale"),
    ({"n": 1, "lesion": {"count": 9}}, 422, "lesion.count"),
    ({"n": 1, "layout": "nifti"}, 422, "layout"),
    ({"n": 1, "case_prefix": "../BraTS"}, 422, "case_prefix"),
    ({"n": 1, "case_prefix": "BraTS_Syn"}, 422, "case_prefix"),
    ({"n": 1, "layout": "nnunet", "nnunet_dataset_id": 1000}, 422, "nnunet_dataset_id"),
    ({"n": 1, "layout": "nnunet", "nnunet_dataset_name": "My Set"}, 422, "nnunet_dataset_name"),
    ({"n": 1, "nnunet_dataset_id": 42}, 422, "nnunet_dataset_id apply to layout 'nnunet' only, not 'brats'"),
    ({"n": 1, "seed": -1}, 422, "seed"),
    ({"n": 1, "colour": "blue"}, 422, "colour"),
    ({"n": "1"}, 422, "n: Input should be a valid integer"),
    ({"n": 1, "previews": 0}, 422, "previews: Input should be a valid boolean"),
    ({"n": 1, "lesion_source": "0123456789abcdef"}, 422, "lesion_source: no lesion set '0123456789abcdef'"),
]


@pytest.mark.parametrize("body, code, field", BAD_REQUESTS)
def test_bad_requests_get_a_4xx_naming_the_field_and_leave_nothing(
    api: httpx.Client, settings: Settings, body: dict[str, Any], code: int, field: str
) -> None:
    before = api.get("/datasets", headers=A).json()["datasets"]
    queued = _queued(settings)
    response = _post(api, body)
    assert response.status_code == code, response.text
    assert field in detail_text(response.json()["detail"])
    assert api.get("/datasets", headers=A).json()["datasets"] == before
    assert _queued(settings) == queued


def test_a_body_that_is_not_a_json_object_gets_422(api: httpx.Client) -> None:
    for content in (b"{not json", b"[1]", b"n=1", b""):
        response = api.post("/datasets", content=content, headers={**A, "Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][0] == "body"


def test_unknown_method_query_parameter_and_route(api: httpx.Client) -> None:
    wrong_method = api.put("/datasets", headers=A)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, POST"
    typo = api.get("/datasets", params={"limt": 5}, headers=A)
    assert typo.status_code == 422 and typo.json() == {
        "detail": "query: unknown parameter 'limt' (this route takes limit)"
    }
    assert api.get("/dataset", headers=A).status_code == 404


def test_unknown_dataset_is_404(api: httpx.Client) -> None:
    for response in (
        api.get("/datasets/nope", headers=A),
        api.get("/datasets/nope/download", headers=A),
        api.delete("/datasets/nope", headers=A),
    ):
        assert response.status_code == 404 and response.json() == {"detail": "dataset_id: no dataset 'nope'"}


@pytest.fixture(scope="module")
def finished(api: httpx.Client, worker: Child) -> tuple[dict[str, Any], bytes]:
    """A finished 3-sample dataset of key A (t1 and flair), and its zip downloaded in one piece."""
    response = _post(api, {"n": 3, "modalities": ["flair", "t1"], "seed": 7, **FAST})
    assert response.status_code == 202
    created = response.json()
    assert created == {"id": created["id"], "state": "queued", "status_url": f"/datasets/{created['id']}"}
    assert response.headers["location"] == created["status_url"]
    dataset = _wait(api, created["id"], {"finished", "failed"})
    download = api.get(dataset["download_url"], headers=A)
    assert download.status_code == 200
    return dataset, download.content


def test_post_poll_download_and_open_the_niftis(
    api: httpx.Client, finished: tuple[dict[str, Any], bytes]
) -> None:
    dataset, bundle = finished
    assert dataset["state"] == "finished" and dataset["error"] is None and dataset["seed"] == 7
    progress = dataset["progress"]
    assert progress["accepted"] == progress["target"] == dataset["n"] == 3 and progress["eta_s"] == 0
    assert progress["samples_per_s"] > 0 and set(progress["rejected"]) == {"structure", "lesion", "dice"}
    assert progress["slices_done"] is None and progress["slices_total"] is None, "only datasets on a scan"
    assert dataset["size_bytes"] == len(bundle) and dataset["sha256"] == hashlib.sha256(bundle).hexdigest()
    assert dataset["expires_at"] > dataset["created_at"]
    head = api.get(dataset["download_url"], headers=A)
    assert head.headers["content-length"] == str(len(bundle)) and head.headers["accept-ranges"] == "bytes"
    assert (
        head.headers["x-content-sha256"] == dataset["sha256"]
        and head.headers["etag"] == f'"{dataset["sha256"]}"'
    )
    cases = bundle_cases(bundle)
    assert len(cases) == 3
    for case in cases:
        assert set(case) == {"t1", "flair", "seg", "structure", "brainmask"}
        assert case["t1"].shape == case["seg"].shape == (96, 96, 1) and case["t1"].dtype == np.float32
        assert set(np.unique(case["seg"])) <= set(LABELS) and case["seg"].any()
    listed = api.get("/datasets", headers=A).json()["datasets"]
    assert dataset in listed


def test_the_request_names_the_nnunet_dataset_and_the_cases(api: httpx.Client, worker: Child) -> None:
    body = {"n": 1, "layout": "nnunet", "nnunet_dataset_id": 42, "nnunet_dataset_name": "Mine", **FAST}
    dataset = _make(api, body | {"case_prefix": "BraTS-GLI"})
    with zipfile.ZipFile(io.BytesIO(api.get(dataset["download_url"], headers=A).content)) as archive:
        names = set(archive.namelist())
    assert "Dataset042_Mine/dataset.json" in names
    assert "Dataset042_Mine/labelsTr/BraTS-GLI_00000.nii.gz" in names


def test_range_requests_resume_a_broken_download(
    api: httpx.Client, finished: tuple[dict[str, Any], bytes]
) -> None:
    dataset, bundle = finished
    size, half = len(bundle), len(bundle) // 2
    first = api.get(dataset["download_url"], headers={**A, "Range": f"bytes=0-{half - 1}"})
    assert first.status_code == 206 and first.headers["content-range"] == f"bytes 0-{half - 1}/{size}"
    assert len(first.content) == half
    rest = api.get(
        dataset["download_url"], headers={**A, "Range": f"bytes={half}-", "If-Range": first.headers["etag"]}
    )
    assert rest.status_code == 206 and rest.headers["content-range"] == f"bytes {half}-{size - 1}/{size}"
    assert hashlib.sha256(first.content + rest.content).hexdigest() == first.headers["x-content-sha256"]
    assert first.content + rest.content == bundle
    beyond = api.get(dataset["download_url"], headers={**A, "Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"


def test_another_key_cannot_see_download_or_delete_it(
    api: httpx.Client, settings: Settings, finished: tuple[dict[str, Any], bytes]
) -> None:
    dataset, _ = finished
    url = f"/datasets/{dataset['id']}"
    not_found = {"detail": f"dataset_id: no dataset '{dataset['id']}'"}
    for response in (
        api.get(url, headers=B),
        api.get(f"{url}/download", headers=B),
        api.delete(url, headers=B),
    ):
        assert response.status_code == 404 and response.json() == not_found
    assert dataset["id"] not in [d["id"] for d in api.get("/datasets", headers=B).json()["datasets"]]
    assert api.get(url, headers=A).json()["state"] == "finished"
    assert (settings.data_dir / "datasets" / dataset["id"] / f"{dataset['id']}.zip").is_file()


def test_same_idempotency_key_same_dataset(api: httpx.Client, settings: Settings, worker: Child) -> None:
    body = {"n": 1, "seed": 11, **FAST}
    first = api.post("/datasets", json=body, headers={**A, "Idempotency-Key": "order-1"})
    again = api.post("/datasets", json=body, headers={**A, "Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["location"] == first.headers["location"]
    listed = [d["id"] for d in api.get("/datasets", headers=A).json()["datasets"]]
    assert listed.count(first.json()["id"]) == 1
    other = api.post("/datasets", json={**body, "n": 2}, headers={**A, "Idempotency-Key": "order-1"})
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    theirs = api.post("/datasets", json=body, headers={**B, "Idempotency-Key": "order-1"})
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    connection = Redis.from_url(str(settings.redis_url))
    jobs = [key for key in connection.scan_iter(f"rq:job:{first.json()['id']}*") if b":dependents" not in key]
    assert len(jobs) == 2, jobs  # one chunk job and one assembly job
    assert _wait(api, first.json()["id"], {"finished", "failed"})["state"] == "finished"
    assert _wait(api, theirs.json()["id"], {"finished", "failed"}, headers=B)["state"] == "finished"


def test_a_failed_dataset_says_why_and_leaves_no_files(
    api: httpx.Client, settings: Settings, worker: Child
) -> None:
    response = _post(api, {"n": 1, "thresholds": {"structure_mae": 0.0, "dice": 0.0}})
    assert response.status_code == 202
    dataset = _wait(api, response.json()["id"], {"finished", "failed"})
    assert dataset["state"] == "failed" and dataset["download_url"] is None
    assert (
        "not accepted in 200 candidates" in dataset["error"]
        and "relax thresholds.structure_mae" in dataset["error"]
    )
    assert dataset["progress"]["rejected"]["structure"] == 200 and dataset["progress"]["accepted"] == 0
    assert not (settings.data_dir / "datasets" / dataset["id"]).exists()
    assert api.get(f"{response.json()['status_url']}/download", headers=A).status_code == 409


@pytest.fixture(scope="module")
def edema_only() -> bytes:
    """A 3D label volume (64, 64, 5) with an edema-only lesion on two slices."""
    label = np.zeros((64, 64, 5), dtype=np.uint8)
    label[24:34, 20:32, 1] = 2
    label[26:36, 22:30, 3] = 2
    return nifti_file(label)


def test_uploaded_lesion_set_is_the_lesion_source(
    api: httpx.Client, settings: Settings, edema_only: bytes
) -> None:
    flat = np.zeros((48, 48), dtype=np.uint8)
    flat[20:26, 18:24] = 2
    files = [
        ("files", ("case1_seg.nii.gz", edema_only)),
        ("files", ("slice.nii", nifti_file(flat, compress=False))),
    ]
    response = api.post("/lesion-sets", files=files, headers=A)
    assert response.status_code == 201, response.text
    lesion_set = response.json()
    assert lesion_set["files"] == ["case1_seg.nii.gz", "slice.nii"] and lesion_set["slices"] == 3
    assert api.get(f"/lesion-sets/{lesion_set['id']}", headers=A).json() == lesion_set
    assert api.get(f"/lesion-sets/{lesion_set['id']}", headers=B).status_code == 404
    stored = settings.data_dir / "lesion-sets" / lesion_set["id"]
    assert sorted(p.name for p in stored.iterdir()) == ["000.nii.gz", "001.nii"]
    theirs = _post(api, {"n": 1, "lesion_source": lesion_set["id"]}, headers=B)
    assert theirs.status_code == 422 and theirs.json()["detail"].startswith("lesion_source: no lesion set")
    dataset = _make(api, {"n": 2, "lesion_source": lesion_set["id"], "layout": "brats", **FAST})
    cases = bundle_cases(api.get(dataset["download_url"], headers=A).content)
    assert len(cases) == 2
    for case in cases:
        assert set(np.unique(case["seg"])) == {0, 2}, "the lesions come from the edema-only upload"


def _upload(api: httpx.Client, *files: tuple[str, bytes]) -> httpx.Response:
    return api.post("/lesion-sets", files=[("files", file) for file in files], headers=A)


def test_bad_uploads_get_a_4xx_and_leave_nothing(
    api: httpx.Client, settings: Settings, edema_only: bytes
) -> None:
    root = settings.data_dir / "lesion-sets"
    before = sorted(p.name for p in root.iterdir()) if root.exists() else []
    wrong_values = np.zeros((32, 32), dtype=np.uint8)
    wrong_values[10:12, 10:12] = 3
    empty = np.zeros((32, 32, 2), dtype=np.uint8)
    four_d = np.ones((8, 8, 2, 2), dtype=np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, 120_000, dtype=np.uint8).tobytes()
    flat = np.zeros((16, 16), dtype=np.uint8)
    flat[4:8, 4:8] = 1
    plain = nifti_file(flat, compress=False)
    rgb = np.zeros((16, 16), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    cases = [
        (_upload(api, ("ok.nii.gz", edema_only), ("scan.png", b"\x89PNG\r\n\x1a\n" + b"0" * 500)), 422,
         "files[1] (scan.png): not a NIfTI image"),
        (_upload(api, ("seg.nii.gz", nifti_file(wrong_values))), 422,
         "files[0] (seg.nii.gz): label values must be in (0, 1, 2, 4), found [3]; these labels are BraTS "
         "2018-2021's (1 necrotic core, 2 edema, 4 enhancing tumour): 3 is enhancing tumour in BraTS 2023"),
        (_upload(api, ("empty.nii.gz", nifti_file(empty))), 422, "files[0] (empty.nii.gz): none of"),
        (_upload(api, ("4d.nii.gz", nifti_file(four_d))), 422, "files[0] (4d.nii.gz): a label must be 2D"),
        (_upload(api, ("neg.nii", patched_header(plain, 40, "<4h", 3, 16, 16, -5))), 422,
         "files[0] (neg.nii): shape (16, 16, -5) has no voxels"),
        (_upload(api, ("code.nii", patched_header(plain, 70, "<h", 9999))), 422,
         "files[0] (code.nii): not a NIfTI image (data code 9999 not recognized)"),
        (_upload(api, ("offset.nii", patched_header(plain, 108, "<f", -5))), 422,
         "files[0] (offset.nii): not a NIfTI image (vox offset -5 too low"),
        (_upload(api, ("rgb.nii", nifti_file(rgb, compress=False))), 422,
         "files[0] (rgb.nii): voxels of type [('R', 'u1'), ('G', 'u1'), ('B', 'u1')], not numbers"),
        (_upload(api, ("big.nii", noise)), 413, "larger than 100000 bytes (the service's max_upload_bytes)"),
        (_upload(api, *[(f"{i}.nii.gz", edema_only) for i in range(5)]), 400, "Maximum number of files is 4"),
        (api.post("/lesion-sets", headers=A), 422, "files"),
        (api.post("/lesion-sets", content=chunked_multipart(150_000), headers={**A, **MULTIPART}), 413,
         "larger than 100000 bytes"),
    ]  # fmt: skip
    for response, code, why in cases:
        assert response.status_code == code, response.text
        assert why in detail_text(response.json()["detail"]), response.text
    assert sorted(p.name for p in root.iterdir()) == before, "no lesion set, not even a partial one"


def test_cancel_and_the_active_job_limit(api: httpx.Client, settings: Settings, worker: Child) -> None:
    big = {"n": 400, **FAST}
    ids = [_post(api, big).json()["id"] for _ in range(settings.max_active_jobs_per_key)]
    refused = _post(api, big)
    assert refused.status_code == 429 and "too many active datasets: 3" in refused.json()["detail"]
    assert api.get(f"/datasets/{ids[0]}", headers=A).json()["state"] in ("queued", "running")
    _wait(api, ids[0], {"running"}, accepted=1)
    assert api.delete(f"/datasets/{ids[0]}", headers=A).status_code == 204
    cancelled = api.get(f"/datasets/{ids[0]}", headers=A).json()
    assert cancelled["state"] == "cancelled" and cancelled["download_url"] is None
    assert 0 < cancelled["progress"]["accepted"] < 400
    assert not (settings.data_dir / "datasets" / ids[0]).exists()
    connection = Redis.from_url(str(settings.redis_url))
    assert not any(Job.exists(chunk_job_id(ids[0], c), connection) for c in (0, 49)), "jobs deleted"
    replacement = _post(api, big)
    assert replacement.status_code == 202, "a cancelled dataset frees its slot"
    for dataset_id in [*ids[1:], replacement.json()["id"]]:
        assert api.delete(f"/datasets/{dataset_id}", headers=A).status_code == 204
        assert api.get(f"/datasets/{dataset_id}", headers=A).json()["state"] == "cancelled"
    assert api.delete(f"/datasets/{ids[0]}", headers=A).status_code == 204
    assert api.get(f"/datasets/{ids[0]}", headers=A).status_code == 404, (
        "deleting an ended dataset forgets it"
    )


def test_metrics(api: httpx.Client, finished: tuple[dict[str, Any], bytes]) -> None:
    text = api.get("/metrics", headers=A).text
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"
    }
    assert lines['mrisynth_http_requests_total{method="POST",route="/datasets",status="202"}'] >= 3
    assert (
        lines['mrisynth_http_requests_total{method="GET",route="/datasets/{dataset_id}",status="404"}'] >= 1
    )
    assert (
        lines['mrisynth_datasets{state="finished"}'] >= 3
        and lines['mrisynth_datasets{state="cancelled"}'] >= 3
    )
    assert lines["mrisynth_workers"] == 1 and lines["mrisynth_queue_depth"] >= 0
    assert lines["mrisynth_samples_total"] >= 3
    assert 'mrisynth_http_request_duration_seconds_count{method="POST",route="/datasets"}' in lines


def test_bundles_expire_and_the_disk_quota_refuses_new_work(
    api: httpx.Client, settings: Settings, edema_only: bytes, worker: Child
) -> None:
    """A second service process on the same Redis and data: bundles expire 2 s after they finish, and
    any byte a key stores is over its quota."""
    dataset = _make(api, {"n": 1, **FAST})
    bundle = settings.data_dir / "datasets" / dataset["id"]
    assert bundle.exists()
    strict = Api(
        settings.model_copy(update={"bundle_ttl_s": 2, "owner_disk_quota_bytes": 1, "sweep_interval_s": 0.5})
    )
    try:
        deadline = time.monotonic() + 30
        while bundle.exists():
            assert time.monotonic() < deadline, "the sweep did not remove the expired bundle"
            time.sleep(0.1)
        gone = api.get(f"/datasets/{dataset['id']}", headers=A)
        assert gone.status_code == 404 and "expired" in gone.json()["detail"]
        assert dataset["id"] not in [d["id"] for d in api.get("/datasets", headers=A).json()["datasets"]]
        with httpx.Client(base_url=strict.url) as client:
            full = client.post("/datasets", json={"n": 1}, headers=A)
            assert full.status_code == 409 and full.json()["detail"].startswith("quota: this key stores ")
            upload = client.post("/lesion-sets", files=[("files", ("a.nii.gz", edema_only))], headers=A)
            assert upload.status_code == 409 and "wait for them to expire" in upload.json()["detail"]
    finally:
        strict.stop()
