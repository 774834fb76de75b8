"""Hostile lesion-set uploads and per-key quotas (issue 13), against real uvicorn and redis-server.

Each finding of the issue is reproduced with the attacker's input: the API answers within bounded time
and memory (its process, and each parser process it spawns, runs under ``RLIMIT_AS``, so a regression
fails here instead of taking the machine), ``/healthz`` keeps answering, and nothing is stored that a
client did not receive. Unit tests of :func:`worker.lesions.label_work` come first (no server).
"""

import gzip
import io
import re
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
from service_fixtures import A, Api, B, keyed_settings, nifti_file, patched_header

from mrisynth.settings import Settings
from worker.lesions import (
    MAX_DATA_OFFSET,
    MAX_LABEL_VOXELS,
    LabelLimits,
    LabelWork,
    label_header,
    label_work,
    read_label_files,
    set_work,
)

LIMITS = LabelLimits(max_slices=4096, max_voxels=16 * 240 * 240 * 155)
"""The settings' defaults."""


def _lesion(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    """Zeros of a shape with one lesion voxel (label 1) in the last slice."""
    label: np.ndarray = np.zeros(shape, dtype=dtype)
    label[(0,) * (len(shape) - 1) + (-1,)] = 1
    return label


def _nifti2(label: np.ndarray) -> bytes:
    """A gzipped NIfTI-2 file (whose axes may be longer than NIfTI-1's 32767)."""
    return gzip.compress(nib.Nifti2Image(label, np.eye(4)).to_bytes(), compresslevel=1)


def _header(nifti: bytes) -> nib.Nifti1Header:
    """The header of a file's bytes, gzipped or not, read as the service reads it (540 bytes)."""
    stream = gzip.GzipFile(fileobj=io.BytesIO(nifti)) if nifti[:2] == b"\x1f\x8b" else io.BytesIO(nifti)
    return label_header(stream.read(540))


def _far_data(gap: int) -> bytes:
    """A .nii.gz of a 16 x 16 label whose voxels lie ``gap`` bytes into the gzip stream (its
    ``vox_offset``): a few MB that decompress to ``gap`` bytes of zeros before the data. Built from
    one deflated MiB of zeros repeated, as a full flush makes each copy independent; the gzip trailer's
    CRC is left 0 (no reader of the label gets that far)."""
    plain = nifti_file(_lesion((16, 16)), compress=False)
    header, data = patched_header(plain, 108, "<f", gap)[:352], plain[352:]

    def deflated(chunk: bytes, mode: int) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(chunk) + compressor.flush(mode)

    zeros, rest = divmod(gap - len(header), 1 << 20)
    body = [
        deflated(header, zlib.Z_FULL_FLUSH),
        deflated(bytes(1 << 20), zlib.Z_FULL_FLUSH) * zeros,
        deflated(bytes(rest), zlib.Z_FULL_FLUSH),
        deflated(data, zlib.Z_FINISH),
    ]
    trailer = struct.pack("<II", 0, (gap + len(data)) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"".join(body) + trailer


FAR_GAP = 4_000_000_000
"""The issue's offset: the data 4 GB into the gzip stream (9 s of CPU per upload before the fix)."""


@pytest.fixture(scope="module")
def far_data() -> bytes:
    return _far_data(FAR_GAP)


# Unit tests of the header-work limits


@pytest.mark.parametrize(
    "shape, slices",
    [((240, 240), 1), ((240, 240, 155), 155), ((64, 64, 1, 1), 1), ((64, 64, 7, 1), 7), ((1, 1, 4096), 4096)],
)
def test_label_work_counts_slices_and_bytes_from_the_header(shape: tuple[int, ...], slices: int) -> None:
    work = label_work(_header(nifti_file(np.zeros(shape, np.uint8))), LIMITS)
    voxels = int(np.prod(shape))
    assert work == LabelWork(slices=slices, voxels=voxels, read_bytes=352 + voxels)


@pytest.mark.parametrize(
    "shape, dtype, why",
    [
        ((1, 1, 17_856_000), np.uint8, "17856000 axial slices (1, 1, 17856000), more than the 4096 allowed"),
        ((1, 1, 32767), np.uint8, "32767 axial slices"),
        ((8, 8, 2, 2), np.uint8, "a label must be 2D (X, Y) or 3D (X, Y, Z), got shape (8, 8, 2, 2)"),
        ((2000, 2000, 5), np.uint8, f"20000000 voxels (2000, 2000, 5), more than the {MAX_LABEL_VOXELS}"),
        ((4, 4), np.complex64, "voxels of type complex64, not numbers"),
    ],
)
def test_label_work_refuses_costly_headers(shape: tuple[int, ...], dtype: type, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        label_work(_header(_nifti2(np.zeros(shape, dtype))), LIMITS)


def test_label_work_refuses_far_data_and_damaged_headers(far_data: bytes) -> None:
    with pytest.raises(
        ValueError, match=f"data offset {FAR_GAP} bytes \\(vox_offset\\), more than the {MAX_DATA_OFFSET}"
    ):
        label_work(_header(far_data), LIMITS)
    plain = nifti_file(np.zeros((4, 4), np.uint8), compress=False)
    with pytest.raises(ValueError, match=r"shape \(4, 4, -5\) has no voxels"):
        label_work(_header(patched_header(plain, 40, "<4h", 3, 4, 4, -5)), LIMITS)
    with pytest.raises(ValueError, match=r"not a NIfTI image \(data code 9999 not recognized\)"):
        _header(patched_header(plain, 70, "<h", 9999))
    with pytest.raises(ValueError, match="not a NIfTI image"):
        label_header(b"\x89PNG\r\n\x1a\n" + bytes(600))


def test_set_work_bounds_the_files_together() -> None:
    file = label_work(_header(nifti_file(np.zeros((1, 1, 300), np.uint8))), LIMITS)
    assert set_work([file] * 13, LIMITS) == LabelWork(slices=3900, voxels=3900, read_bytes=13 * 652)
    with pytest.raises(ValueError, match="4200 axial slices in all, more than the 4096 of a lesion set"):
        set_work([file] * 14, LIMITS)
    with pytest.raises(ValueError, match="3900 voxels in all, more than the 1000 of a lesion set"):
        set_work([file] * 13, LabelLimits(max_slices=4096, max_voxels=1000))


def test_the_worker_refuses_from_the_headers_what_the_api_refuses(tmp_path: Path, far_data: bytes) -> None:
    """Finding 2's set and finding 3's file, read by the worker: refused before a voxel is read."""
    for index in range(16):
        (tmp_path / f"{index:02d}.nii.gz").write_bytes(nifti_file(_lesion((1, 1, 2000))))
    start = time.monotonic()
    with pytest.raises(ValueError, match="32000 axial slices in all, more than the 4096 of a lesion set"):
        read_label_files(tmp_path, (96, 96), LIMITS)
    far = tmp_path / "far" / "far.nii.gz"
    far.parent.mkdir()
    far.write_bytes(far_data)
    with pytest.raises(ValueError, match="data offset 4000000000 bytes"):
        read_label_files(far.parent, (96, 96), LIMITS)
    assert time.monotonic() - start < 2
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.nii.gz").write_bytes(nifti_file(_lesion((16, 16, 3))))
    assert read_label_files(tmp_path / "ok", (96, 96), LIMITS).shape == (1, 96, 96)


# Against the service

MEMORY = 3 << 30
"""The address space of the API process and each of its parser processes."""


def _settings(redis_url: str, data_dir: Path, queue: str, **changes: Any) -> Settings:
    limits = {"max_upload_bytes": 8 << 20, "max_upload_files": 16, "sweep_interval_s": 0.5}
    return keyed_settings(redis_url, data_dir, queue, **(limits | changes))


@pytest.fixture(scope="module")
def hostile_settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(
        redis_url, tmp_path_factory.mktemp("hostile-data"), "test-uploads", upload_parse_timeout_s=20
    )


@pytest.fixture(scope="module")
def hostile(hostile_settings: Settings) -> Iterator[httpx.Client]:
    server = Api(hostile_settings, memory_bytes=MEMORY)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert _upload(client, b"not a NIfTI file").status_code == 422, "the parsers run"
        yield client
    server.stop()


def _upload(api: httpx.Client, *files: bytes, headers: dict[str, str] = A) -> httpx.Response:
    named = [("files", (f"{index}.nii.gz", file)) for index, file in enumerate(files)]
    return api.post("/lesion-sets", files=named, headers=headers)


def _stored(settings: Settings) -> list[str]:
    root = settings.data_dir / "lesion-sets"
    return sorted(path.name for path in root.iterdir()) if root.exists() else []


def test_finding_1_one_small_file_of_millions_of_slices_is_refused_from_its_header(
    hostile: httpx.Client, hostile_settings: Settings
) -> None:
    """(1, 1, 17 856 000) at the voxel limit: 17 KB that made 17.8 M slices of 96 x 96 (3.7 GB)."""
    bomb = _nifti2(_lesion((1, 1, 17_856_000)))
    assert len(bomb) < 100_000
    start = time.monotonic()
    response = _upload(hostile, bomb)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == (
        "files[0] (0.nii.gz): 17856000 axial slices (1, 1, 17856000), "
        "more than the 4096 allowed per lesion set (max_lesion_set_slices)"
    )
    assert time.monotonic() - start < 10
    assert hostile.get("/healthz").status_code == 200 and _stored(hostile_settings) == []


def test_finding_2_files_that_pass_one_by_one_are_refused_together(
    hostile: httpx.Client, hostile_settings: Settings
) -> None:
    """16 files of (1, 1, 32767), which passed one at a time and killed the work-horse together; and
    16 files within the per-file limit whose sum is not."""
    start = time.monotonic()
    each = _upload(hostile, *[_nifti2(_lesion((1, 1, 32767)))] * 16)
    assert each.status_code == 422 and each.json()["detail"].startswith(
        "files[0] (0.nii.gz): 32767 axial slices"
    )
    together = _upload(hostile, *[_nifti2(_lesion((1, 1, 300)))] * 16)
    assert together.status_code == 422, together.text
    assert together.json()["detail"] == (
        "files: 4800 axial slices in all, more than the 4096 of a lesion set (max_lesion_set_slices)"
    )
    assert time.monotonic() - start < 20
    assert _stored(hostile_settings) == []
    within = _upload(hostile, *[_nifti2(_lesion((1, 1, 256)))] * 16)
    assert within.status_code == 201 and within.json()["slices"] == 16, within.text
    assert hostile.delete(f"/lesion-sets/{within.json()['id']}", headers=A).status_code == 204


def test_finding_3_hostile_gzip_uploads_keep_healthz_answering_and_store_nothing_unreceived(
    hostile: httpx.Client, hostile_settings: Settings, far_data: bytes
) -> None:
    """40 concurrent uploads of the 3.9 MB file whose data lies 4 GB into its gzip stream, and 4 of
    valid but costly float64 volumes (143 MB each decompressed) by clients that give up after 1 s;
    ``/healthz`` is timed all along, then no set may be stored but those a client received."""
    costly = nifti_file(_lesion((240, 240, 310), np.float64))
    outcomes: list[str] = []
    received: list[str] = []

    def upload(index: int) -> None:
        body, timeout = (costly, 1.0) if index % 11 == 0 else (far_data, 60.0)
        try:
            response = clients.post(
                "/lesion-sets", files=[("files", ("f.nii.gz", body))], headers=B, timeout=timeout
            )
        except httpx.TimeoutException:
            outcomes.append("gone")
            return
        outcomes.append(f"{response.status_code} {'far' if body is far_data else 'costly'}")
        if response.status_code == 201:
            received.append(response.json()["id"])
        elif body is far_data:
            assert response.json()["detail"].startswith("files[0] (f.nii.gz): data offset 4000000000 bytes")

    latencies = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    with httpx.Client(base_url=hostile.base_url, limits=limits) as clients, ThreadPoolExecutor(44) as threads:
        uploads = [threads.submit(upload, index) for index in range(44)]
        while not all(future.done() for future in uploads):
            start = time.monotonic()
            assert hostile.get("/healthz", timeout=10).status_code == 200
            latencies.append(time.monotonic() - start)
            time.sleep(0.1)
        for future in uploads:
            future.result()
    assert len(latencies) >= 5 and max(latencies) < 1.0, latencies
    assert outcomes.count("422 far") == 40, outcomes
    deadline = time.monotonic() + 30
    while any(name.startswith(".partial-") for name in _stored(hostile_settings)):
        assert time.monotonic() < deadline, "a staging folder outlived its check"
        time.sleep(0.2)
    listed = [lesion_set["id"] for lesion_set in hostile.get("/lesion-sets", headers=B).json()["lesion_sets"]]
    assert sorted(listed) == sorted(received) == _stored(hostile_settings), outcomes


def test_finding_3_a_client_that_went_away_leaves_nothing(
    hostile: httpx.Client, hostile_settings: Settings
) -> None:
    """A valid set of 3 float64 volumes that takes seconds to check, whose client gives up after 0.3 s:
    once its check ended, no set and no staging folder is left."""
    before = _stored(hostile_settings)
    costly = nifti_file(_lesion((240, 240, 310), np.float64))
    files = [("files", (f"{index}.nii.gz", costly)) for index in range(3)]
    with pytest.raises(httpx.TimeoutException):
        hostile.post("/lesion-sets", files=files, headers=A, timeout=0.3)
    deadline = time.monotonic() + 30
    while _stored(hostile_settings) != before:
        assert time.monotonic() < deadline, _stored(hostile_settings)
        time.sleep(0.2)
    time.sleep(1)
    assert _stored(hostile_settings) == before
    assert hostile.get("/lesion-sets", headers=A).json() == {"lesion_sets": []}


@pytest.fixture(scope="module")
def quota_settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(
        redis_url,
        tmp_path_factory.mktemp("quota-data"),
        "test-quotas",
        owner_disk_quota_bytes=2 * (352 + 64 * 64 * 10),
        max_lesion_sets_per_owner=3,
        max_datasets_per_owner=2,
    )


@pytest.fixture(scope="module")
def quotas(quota_settings: Settings) -> Iterator[httpx.Client]:
    server = Api(quota_settings, memory_bytes=MEMORY)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()


BIG = nifti_file(_lesion((64, 64, 10)), compress=False)
"""An uncompressed set file of 352 + 40960 bytes: two of them fill the quota's disk share."""
SMALL = nifti_file(_lesion((16, 16)), compress=False)


def _files(*files: bytes) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (f"{index}.nii", file)) for index, file in enumerate(files)]


def _detail(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["detail"]) if status >= 400 else ""


def test_finding_4_one_key_at_its_quota_locks_out_no_other(
    quotas: httpx.Client, quota_settings: Settings
) -> None:
    """Key A fills its disk share with two sets: its uploads and datasets get 409 naming the quota while
    key B still uploads and creates; a DELETE frees A's share; the listing shows each key its own; a set
    a queued dataset uses cannot be deleted; the set and dataset counts have their own quotas."""
    first = quotas.post("/lesion-sets", files=_files(BIG), headers=A).json()
    second = quotas.post("/lesion-sets", files=_files(BIG), headers=A).json()
    assert first["size_bytes"] == second["size_bytes"] == len(BIG)
    full = "quota: this key stores 82624 bytes, its quota is 82624 (the service's owner_disk_quota_bytes)"
    assert _detail(quotas.post("/lesion-sets", files=_files(SMALL), headers=A), 409).startswith(full)
    assert _detail(quotas.post("/datasets", json={"n": 1}, headers=A), 409).startswith(full)
    theirs = quotas.post("/lesion-sets", files=_files(SMALL), headers=B)
    assert theirs.status_code == 201, theirs.text
    b_dataset = quotas.post("/datasets", json={"n": 1}, headers=B)
    assert b_dataset.status_code == 202, b_dataset.text

    mine = quotas.get("/lesion-sets", headers=A).json()["lesion_sets"]
    assert [lesion_set["id"] for lesion_set in mine] == [second["id"], first["id"]], "newest first"
    assert [s["id"] for s in quotas.get("/lesion-sets", headers=B).json()["lesion_sets"]] == [
        theirs.json()["id"]
    ]
    assert quotas.delete(f"/lesion-sets/{first['id']}", headers=B).status_code == 404
    assert quotas.delete(f"/lesion-sets/{first['id']}", headers=A).status_code == 204
    assert quotas.get(f"/lesion-sets/{first['id']}", headers=A).status_code == 404
    assert not (quota_settings.data_dir / "lesion-sets" / first["id"]).exists()

    over = _detail(
        quotas.post("/lesion-sets", files=_files(nifti_file(_lesion((64, 64, 12)), False)), headers=A), 409
    )
    assert over.startswith(
        "quota: this key stores 41312 bytes, and these files would add 49504, its quota is 82624"
    )
    using = quotas.post("/datasets", json={"n": 1, "lesion_source": second["id"]}, headers=A)
    assert using.status_code == 202, using.text
    in_use = _detail(quotas.delete(f"/lesion-sets/{second['id']}", headers=A), 409)
    assert in_use.startswith(f"lesion_set_id: lesion set {second['id']!r} is the lesion source of dataset")
    for _ in range(2):
        assert quotas.post("/lesion-sets", files=_files(SMALL), headers=A).status_code == 201
    sets_full = _detail(quotas.post("/lesion-sets", files=_files(SMALL), headers=A), 409)
    assert sets_full.startswith(
        "quota: this key stores 3 lesion sets, the most it may (the service's max_lesion_sets_per_owner)"
    )
    assert quotas.post("/datasets", json={"n": 1}, headers=A).status_code == 202
    datasets_full = _detail(quotas.post("/datasets", json={"n": 1}, headers=A), 409)
    assert datasets_full.startswith(
        "quota: this key stores 2 datasets, the most it may (the service's max_datasets_per_owner)"
    )
    assert quotas.post("/datasets", json={"n": 1}, headers=B).status_code == 202, "B is not concerned"

    for headers in (A, B):
        for dataset in quotas.get("/datasets", headers=headers).json()["datasets"]:
            assert quotas.delete(f"/datasets/{dataset['id']}", headers=headers).status_code == 204
    assert quotas.delete(f"/lesion-sets/{second['id']}", headers=A).status_code == 204, "no longer in use"


def test_finding_4_lesion_sets_expire_with_their_files(redis_url: str, tmp_path: Path) -> None:
    """Sets live ``lesion_set_ttl_s``: then the record is gone, the listing and the quota no longer count
    it and the sweep removes its files; but not while a queued dataset uses them."""
    settings = _settings(redis_url, tmp_path, "test-expiry", lesion_set_ttl_s=2)
    server = Api(settings, memory_bytes=MEMORY)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            kept, used = (api.post("/lesion-sets", files=_files(SMALL), headers=A).json() for _ in range(2))
            dataset = api.post("/datasets", json={"n": 1, "lesion_source": used["id"]}, headers=A).json()
            assert api.get("/lesion-sets", headers=A).json()["lesion_sets"] == [used, kept]
            folders = settings.data_dir / "lesion-sets"
            deadline = time.monotonic() + 20
            while (folders / kept["id"]).exists():
                assert time.monotonic() < deadline, "the sweep did not remove the expired set's files"
                time.sleep(0.2)
            assert api.get(f"/lesion-sets/{kept['id']}", headers=A).status_code == 404
            assert api.get("/lesion-sets", headers=A).json() == {"lesion_sets": []}
            assert (folders / used["id"]).is_dir(), "a queued dataset still draws from it"
            assert api.delete(f"/datasets/{dataset['id']}", headers=A).status_code == 204
            while (folders / used["id"]).exists():
                assert time.monotonic() < deadline, "the sweep did not remove the set no longer in use"
                time.sleep(0.2)
            assert _stored(settings) == []
    finally:
        server.stop()


def test_a_check_that_times_out_answers_503_and_leaves_nothing(redis_url: str, tmp_path: Path) -> None:
    """``upload_parse_timeout_s`` of 1 s and a set of 3 float64 volumes that takes seconds to check: 503
    at once, and the staging folder is removed once the check ended."""
    settings = _settings(redis_url, tmp_path, "test-parse-timeout", upload_parse_timeout_s=1)
    server = Api(settings, memory_bytes=MEMORY)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            costly = nifti_file(_lesion((240, 240, 310), np.float64))
            start = time.monotonic()
            response = _upload(api, costly, costly, costly)
            assert time.monotonic() - start < 5
            assert _detail(response, 503) == (
                "files: not checked within 1 s (the service's upload_parse_timeout_s); "
                "the service is busy, try again later"
            )
            assert api.get("/healthz").status_code == 200
            deadline = time.monotonic() + 30
            while _stored(settings):
                assert time.monotonic() < deadline, _stored(settings)
                time.sleep(0.2)
            assert api.get("/lesion-sets", headers=A).json() == {"lesion_sets": []}
    finally:
        server.stop()
