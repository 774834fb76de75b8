"""Scans through the real service (issue 17): uvicorn, redis-server and a worker.

A phantom case's T1 volume is uploaded as a scan set (``POST /scan-sets``) and used as a dataset's
``structure_source``: out come four registered modalities and a label, every file on the input's grid, in
each bundle layout; ``mrisynth generate --structure-from`` does the same from the command line. A scan set
a dataset is made on cannot be deleted. ``POST /translations`` gives the missing modalities. Bad uploads
get a 4xx that names the file, and leave nothing behind.
"""

import gzip
import io
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
from phantom_files import phantom_case
from service_fixtures import KEY_A, ROOT, A, B, api_client, keyed_settings, ready_worker

from mrisynth.conventions import LABELS, MODALITIES
from mrisynth.settings import Settings


@pytest.fixture(scope="module")
def settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = keyed_settings(redis_url, tmp_path_factory.mktemp("data"), "test-scans")
    return settings.model_copy(update={"batch_size": 32})


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[httpx.Client]:
    with api_client(settings) as client, ready_worker(settings, client):
        yield client


def _file(modality: str) -> bytes:
    return (phantom_case(6) / f"{phantom_case(6).name}_{modality}.nii.gz").read_bytes()


def _nifti(data: np.ndarray, affine: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(data, affine).to_bytes(), compresslevel=1)


def _source() -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(_file("t1")))


def _cut(slices: slice) -> bytes:
    """The phantom T1 restricted to some axial slices, as a .nii.gz."""
    source = _source()
    return _nifti(np.asarray(source.dataobj)[:, :, slices], source.affine)


def _scan_set(api: httpx.Client, files: dict[str, tuple[str, bytes]]) -> dict[str, Any]:
    answer = api.post("/scan-sets", headers=A, files=files)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _finished(
    api: httpx.Client, answer: httpx.Response, seen: list[dict[str, Any]] | None = None
) -> zipfile.ZipFile:
    """The zip of the dataset ``answer`` made, once finished; every status polled, the last (finished)
    one included, is appended to ``seen`` (then polled every 20 ms rather than every 0.5 s)."""
    assert answer.status_code == 202, answer.text
    url = answer.json()["status_url"]
    deadline = time.monotonic() + 240
    while True:
        state = api.get(url, headers=A).json()
        if seen is not None:
            seen.append(state)
        if state["state"] in ("finished", "failed"):
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.5 if seen is None else 0.02)
    assert state["state"] == "finished", state
    return zipfile.ZipFile(io.BytesIO(api.get(state["download_url"], headers=A).content))


def _volumes(bundle: zipfile.ZipFile) -> tuple[dict[str, Any], list[dict[str, nib.Nifti1Image]]]:
    manifest = json.loads(bundle.read("manifest.json"))
    cases = [
        {
            key: nib.Nifti1Image.from_bytes(gzip.decompress(bundle.read(name)))
            for key, name in case["files"].items()
        }
        for case in manifest["cases"]
    ]
    return manifest, cases


def _check_on_grid(images: dict[str, nib.Nifti1Image], source: nib.Nifti1Image, labels: set[int]) -> None:
    """Four modalities and a label on the source's grid; the tumour inside the brain in every slice."""
    assert sorted(images) == sorted([*MODALITIES, "seg"])
    for key, image in images.items():
        assert image.shape == source.shape, key
        np.testing.assert_allclose(image.affine, source.affine, atol=1e-4, err_msg=key)
    label = np.asarray(images["seg"].dataobj)
    assert set(np.unique(label).tolist()) <= labels and label.any()
    voxels = np.asarray(source.dataobj)
    brain = voxels > voxels.min(axis=(0, 1), keepdims=True)
    occupied = np.flatnonzero(label.any(axis=(0, 1)))
    assert np.array_equal(occupied, np.arange(occupied[0], occupied[-1] + 1)), "one coherent tumour"
    for z in occupied:
        assert not (label[:, :, z] > 0)[~brain[:, :, z]].any(), f"slice {z}: tumour outside the brain"
    for m in MODALITIES:
        image = np.asarray(images[m].dataobj)
        assert np.isfinite(image).all() and not image[~brain.any(axis=2)].any(), m


def test_a_scan_set_is_stored_listed_and_seen_by_its_owner_only(
    api: httpx.Client, settings: Settings
) -> None:
    stored = _scan_set(api, {"t1": ("case_t1.nii.gz", _cut(slice(70, 74)))})
    assert stored["files"] == {"t1": "case_t1.nii.gz"} and stored["shape"] == [240, 240, 4]
    assert len(stored["sha256"]["t1"]) == 64 and stored["size_bytes"] > 0
    assert api.get(f"/scan-sets/{stored['id']}", headers=A).json() == stored
    assert stored in api.get("/scan-sets", headers=A).json()["scan_sets"]
    assert api.get(f"/scan-sets/{stored['id']}", headers=B).status_code == 404
    theirs = api.post("/datasets", headers=B, json={"n": 1, "structure_source": stored["id"]})
    assert theirs.status_code == 422 and theirs.json()["detail"].startswith("structure_source: no scan set")
    assert sorted(p.name for p in (settings.data_dir / "scan-sets" / stored["id"]).iterdir()) == ["t1.nii.gz"]
    assert api.delete(f"/scan-sets/{stored['id']}", headers=A).status_code == 204
    assert not (settings.data_dir / "scan-sets" / stored["id"]).exists()
    assert api.get(f"/scan-sets/{stored['id']}", headers=A).status_code == 404


def test_structure_source_turns_a_t1_volume_into_four_registered_modalities_and_a_label(
    api: httpx.Client,
) -> None:
    """The issue's end-to-end check; the scan set cannot be deleted while the dataset is made on it."""
    scan = _scan_set(api, {"t1": ("t1.nii.gz", _file("t1"))})
    too_many = api.post("/datasets", headers=A, json={"n": 65, "structure_source": scan["id"]})
    assert too_many.status_code == 422 and "65 volumes of the scan set's 155 slices" in too_many.text
    answer = api.post("/datasets", headers=A, json={"n": 2, "seed": 7, "structure_source": scan["id"]})
    in_use = api.delete(f"/scan-sets/{scan['id']}", headers=A)
    assert in_use.status_code == 409, in_use.text
    assert in_use.json()["detail"].startswith(f"scan_set_id: scan set {scan['id']!r} is the structure source")
    seen: list[dict[str, Any]] = []
    manifest, cases = _volumes(_finished(api, answer, seen))
    for images in cases:
        _check_on_grid(images, _source(), set(LABELS))
        assert len(np.flatnonzero(np.asarray(images["seg"].dataobj).any(axis=(0, 1)))) > 1, "a 3D tumour"
    assert manifest["resampling"]["resampled"] and manifest["given"] == ["t1"]
    assert api.delete(f"/scan-sets/{scan['id']}", headers=A).status_code == 204, "the dataset ended"
    _check_progress(seen, volumes=2, slices=2 * 155)


def _check_progress(seen: list[dict[str, Any]], volumes: int, slices: int) -> None:
    """Statuses polled while a dataset on a scan ran: its slices and volumes counted up from 0 (the
    worker saves its job's meta after every batch of 32 slices, the service reads it), seen strictly
    between 0 and the total while running, and whole when finished."""
    progress = [state["progress"] for state in seen]
    assert all((p["target"], p["slices_total"]) == (volumes, slices) for p in progress), progress[0]
    done = [p["slices_done"] for p in progress]
    assert done == sorted(done) and done[-1] == slices, done
    assert [p["accepted"] for p in progress] == sorted(p["accepted"] for p in progress)
    assert seen[-1]["state"] == "finished" and progress[-1]["accepted"] == volumes
    running = [p for state, p in zip(seen, progress, strict=True) if state["state"] == "running"]
    assert any(0 < p["slices_done"] < slices for p in running), done
    assert any(p["eta_s"] is not None and p["eta_s"] > 0 for p in running), running
    if volumes > 1:
        assert any(0 < p["accepted"] < volumes for p in running), [p["accepted"] for p in running]


def test_a_3d_label_volume_is_placed_once_whole_and_sliced_with_the_scan(api: httpx.Client) -> None:
    """A lesion set holding a 3D label (another phantom case's, on the same 1 mm grid): the tumour out is
    that label, whole (no scale, no flip), inside the brain in every slice it touches."""
    other = phantom_case(1) / "BraTS2021_00001_seg.nii.gz"
    lesions = api.post("/lesion-sets", headers=A, files=[("files", ("seg.nii.gz", other.read_bytes()))])
    assert lesions.status_code == 201, lesions.text
    scan = _scan_set(api, {"t1": ("t1.nii.gz", _file("t1"))})
    body = {
        "n": 1,
        "seed": 7,
        "structure_source": scan["id"],
        "lesion_source": lesions.json()["id"],
        "lesion": {"scale": [1.0, 1.0], "flip": False},
    }
    _, (images,) = _volumes(_finished(api, api.post("/datasets", headers=A, json=body)))
    _check_on_grid(images, _source(), set(LABELS))
    placed, source = np.asarray(images["seg"].dataobj), np.asarray(nib.load(other).dataobj)

    def crop(label: np.ndarray) -> np.ndarray:
        return label[tuple(slice(a.min(), a.max() + 1) for a in np.nonzero(label))]

    np.testing.assert_array_equal(crop(placed), crop(source))


@pytest.mark.parametrize(
    ("layout", "labels", "listing"),
    [
        ("brats2023", {0, 1, 2, 3}, "datalist.json"),
        ("nnunet", {0, 1, 2, 3}, "Dataset901_MRISynth/dataset.json"),
    ],
)
def test_a_scan_dataset_in_the_brats2023_and_nnunet_layouts(
    api: httpx.Client, layout: str, labels: set[int], listing: str
) -> None:
    cut = _cut(slice(60, 84))
    scan = _scan_set(api, {"t1": ("t1.nii.gz", cut)})
    body = {"n": 2, "seed": 3, "structure_source": scan["id"], "layout": layout}
    bundle = _finished(api, api.post("/datasets", headers=A, json=body))
    manifest, cases = _volumes(bundle)
    assert manifest["layout"] == layout and len(cases) == 2 and listing in bundle.namelist()
    source = nib.Nifti1Image.from_bytes(gzip.decompress(cut))
    names = manifest["cases"][0]["files"]
    if layout == "brats2023":
        assert names["t1"].endswith("-t1n.nii.gz") and names["seg"].endswith("-seg.nii.gz")
    else:
        assert names["t1"].startswith("Dataset901_MRISynth/imagesTr/") and names["t1"].endswith(
            "_0000.nii.gz"
        )
        assert names["seg"].startswith("Dataset901_MRISynth/labelsTr/")
    for images in cases:
        _check_on_grid(images, source, labels)


def test_generate_structure_from_uploads_the_scan_and_downloads_its_dataset(
    api: httpx.Client, tmp_path: Path
) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    (folder / "case_t1.nii.gz").write_bytes(_cut(slice(70, 76)))
    out = tmp_path / "set.zip"
    command = [sys.executable, "-m", "cli", "generate", "--server", str(api.base_url), "--key", KEY_A]
    arguments = ["--n", "1", "--seed", "2", "--out", str(out), "--structure-from", str(folder)]
    for _ in range(2):
        result = subprocess.run([*command, *arguments], cwd=ROOT, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
    assert "uploaded before" in result.stderr, "the second run uses the scan set of the first"
    with zipfile.ZipFile(out) as bundle:
        _, (images,) = _volumes(bundle)
    _check_on_grid(images, nib.Nifti1Image.from_bytes(gzip.decompress(_cut(slice(70, 76)))), set(LABELS))


def test_translation_gives_the_missing_modalities_on_the_input_grid(api: httpx.Client) -> None:
    source = _source()
    answer = api.post(
        "/translations",
        headers=A,
        files={"t1": ("a.nii.gz", _file("t1")), "flair": ("b.nii.gz", _file("flair"))},
    )
    assert answer.status_code == 202, answer.text
    queued = api.get(answer.json()["status_url"], headers=A).json()["progress"]
    assert (queued["slices_total"], queued["target"]) == (155, 1), queued
    seen: list[dict[str, Any]] = []
    manifest, (images,) = _volumes(_finished(api, answer, seen))
    _check_progress(seen, volumes=1, slices=155)
    assert sorted(images) == ["t1ce", "t2"]
    for key, image in images.items():
        assert image.shape == source.shape and np.allclose(image.affine, source.affine, atol=1e-4), key
        assert np.asarray(image.dataobj).std() > 0.1, key
    assert "mean of the EC codes" in manifest["method"] and manifest["given"] == ["t1", "flair"]


def _refused(api: httpx.Client, route: str, files: dict[str, tuple[str, bytes]], words: str) -> None:
    answer = api.post(route, headers=A, files=files)
    assert answer.status_code == 422, answer.text
    assert words in answer.json()["detail"], answer.json()


def _partial(settings: Settings) -> list[Path]:
    return [p for p in settings.data_dir.rglob("*") if ".partial" in str(p)]


def test_bad_scans_are_refused_naming_the_file(api: httpx.Client, settings: Settings) -> None:
    volume = np.ones((32, 32, 4), np.float32)
    volume[8:24, 8:24] = 2.0
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    nan = volume.copy()
    nan[10, 10, 1] = np.nan
    label = np.zeros((32, 32, 4), np.uint8)
    label[10, 10, 1] = 3
    good = ("t1.nii.gz", _nifti(volume, np.eye(4)))
    before = {s["id"] for s in api.get("/scan-sets", headers=A).json()["scan_sets"]}
    for route in ("/scan-sets", "/translations"):
        _refused(api, route, {"t1": good, "t2": ("x", _nifti(volume, shifted))}, "t2: its affine differs")
        _refused(
            api,
            route,
            {"t1": good, "t2": ("x", _nifti(volume[:, :, :3], np.eye(4)))},
            "t2: shape (32, 32, 3)",
        )
        _refused(api, route, {"flair": ("x", _nifti(nan, np.eye(4)))}, "flair: 1 NaN or infinite voxels")
        _refused(api, route, {"t1": ("x", b"not a nifti")}, "t1: not a NIfTI image")
        _refused(
            api, route, {"t1": ("x", _nifti(np.ones((32, 32, 5000), np.uint8), np.eye(4)))}, "axial slices"
        )
    brats2023 = {"t1": good, "seg": ("s", _nifti(label, np.eye(4)))}
    _refused(api, "/scan-sets", brats2023, "seg: label values must be in (0, 1, 2, 4), found [3]")
    _refused(api, "/scan-sets", brats2023, "relabel 3 as 4 (BraTS 2023) or as 1 (BraTS 2015)")
    _refused(api, "/scan-sets", {"seg": ("x", _nifti(label, np.eye(4)))}, "files: upload at least")
    assert {s["id"] for s in api.get("/scan-sets", headers=A).json()["scan_sets"]} == before
    assert not _partial(settings)
