"""The translation core (Sec. 2.4), scan reading and the 3D lesion sweep (Sec. 2.5), on the demo artifacts,
the progress a scan job reports, and ``mrisynth translate`` / ``synthesize --structure-from`` in this
process."""

import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import pytest
from phantom_files import phantom_case

from mrisynth.brats import find_cases, load_case
from mrisynth.conventions import MODALITIES
from mrisynth.settings import DEMO_ARTIFACTS
from worker.jobs import DatasetSpec
from worker.request import SynthesisRequest
from worker.scan_jobs import ScanProgress, scan_bundle
from worker.scans import read_scan, scan_set_files
from worker.sessions import Synthesizer
from worker.structure_source import sweep_lesion
from worker.translation import decode, encode, prepare_slices, translate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def synthesizer() -> Synthesizer:
    return Synthesizer.load(DEMO_ARTIFACTS)


@pytest.fixture(scope="module")
def slices(synthesizer: Synthesizer) -> dict[str, np.ndarray]:
    (case,) = [c for c in find_cases(phantom_case(6).parent) if c.case_id == phantom_case(6).name]
    volume = load_case(case)
    size = synthesizer.image_size[0]
    return {m: prepare_slices(np.moveaxis(volume.images[m][:, :, 70:74], 2, 0), size) for m in MODALITIES}


def test_translate_gives_each_target_at_the_artifacts_size(
    synthesizer: Synthesizer, slices: dict[str, np.ndarray]
) -> None:
    out = translate(synthesizer, {"t1": slices["t1"]}, ["t2", "flair"])
    assert sorted(out) == ["flair", "t2"]
    assert all(image.shape == slices["t1"].shape and image.dtype == np.float32 for image in out.values())
    correlation = np.corrcoef(out["flair"].ravel(), slices["flair"].ravel())[0, 1]
    assert correlation > 0.5, correlation


def test_several_inputs_are_combined_by_the_mean_of_their_codes(
    synthesizer: Synthesizer, slices: dict[str, np.ndarray]
) -> None:
    given = {m: slices[m] for m in ("t1", "flair")}
    codes = [encode(synthesizer, {m: image}) for m, image in given.items()]
    np.testing.assert_allclose(encode(synthesizer, given), np.mean(codes, axis=0), atol=1e-5)
    expected = decode(synthesizer, np.mean(codes, axis=0).astype(np.float32), ["t2"])["t2"]
    np.testing.assert_allclose(translate(synthesizer, given, ["t2"])["t2"], expected, atol=1e-4)


@pytest.mark.parametrize(
    ("images", "targets", "words"),
    [
        ({}, ["t2"], "at least one input"),
        ({"pd": np.zeros((1, 96, 96), np.float32)}, ["t2"], "unknown modalities"),
        ({"t1": np.zeros((1, 64, 64), np.float32)}, ["t2"], "must all be (B, 96, 96)"),
        ({"t1": np.full((1, 96, 96), np.nan, np.float32)}, ["t2"], "NaN"),
        ({"t1": np.zeros((1, 96, 96), np.float32)}, ["t2", "t2"], "distinct"),
    ],
)
def test_translate_refuses_bad_inputs(
    synthesizer: Synthesizer, images: dict[str, np.ndarray], targets: list[str], words: str
) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        translate(synthesizer, images, targets)


def test_a_swept_lesion_is_the_label_in_the_middle_and_shrinks_away_from_it() -> None:
    label = np.zeros((40, 40), np.uint8)
    label[10:30, 10:30] = 2
    label[15:25, 15:25] = 1
    swept = sweep_lesion(label, 3)
    assert swept.shape == (7, 40, 40)
    np.testing.assert_array_equal(swept[3], label)
    areas = (swept > 0).sum(axis=(1, 2))
    assert list(areas[:4]) == sorted(areas[:4]) and areas[0] > 0 and areas[0] < areas[3]
    assert set(np.unique(swept).tolist()) == {0, 1, 2}


def test_a_scan_reads_as_one_grid_and_a_2d_file_as_one_slice(tmp_path: Path) -> None:
    image = np.zeros((20, 24), np.float32)
    image[5:15, 5:15] = 1
    nib.save(nib.Nifti1Image(image, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "t1.nii")
    scan = read_scan({"t1": tmp_path / "t1.nii"})
    assert scan.grid == (20, 24, 1) and scan.shape == (20, 24) and scan.label is None
    assert scan.restore(scan.images["t1"]).shape == (20, 24)


def _cut_t1(folder: Path, name: str = "t1.nii.gz", depth: int = 6) -> nib.Nifti1Image:
    """Axial slices 70 to 70 + depth of the phantom case's T1, saved as ``folder/name``."""
    folder.mkdir(exist_ok=True)
    volume = nib.load(phantom_case(6) / f"{phantom_case(6).name}_t1.nii.gz")
    cut = nib.Nifti1Image(np.asarray(volume.dataobj)[:, :, 70 : 70 + depth], volume.affine)
    nib.save(cut, folder / name)
    return cut


@pytest.mark.parametrize(
    ("task", "n", "steps"),
    [
        # (slices_done, accepted) after each report: the start, each batch of 4 slices, each volume
        ("synthesis", 2, [(0, 0), (4, 0), (6, 0), (6, 1), (10, 1), (12, 1), (12, 2)]),
        ("translation", 1, [(0, 0), (4, 0), (6, 0), (6, 1)]),
    ],
)
def test_a_scan_job_reports_progress_after_every_batch_of_slices(
    synthesizer: Synthesizer,
    tmp_path: Path,
    task: Literal["synthesis", "translation"],
    n: int,
    steps: list[tuple[int, int]],
) -> None:
    _cut_t1(tmp_path / "scan")
    request = SynthesisRequest(modalities=("t2",), structure_source=tmp_path / "scan")
    spec = DatasetSpec(dataset_id="progress", n=n, seed=1, request=request, task=task)
    reports: list[ScanProgress] = []
    scan_bundle(synthesizer, spec, tmp_path / "out.zip", 4, reports.append)
    assert [(r.slices_done, r.accepted) for r in reports] == steps
    assert {(r.requested, r.slices_total) for r in reports} == {(n, n * 6)}
    elapsed = [r.elapsed_s for r in reports]
    assert elapsed == sorted(elapsed) and elapsed[-1] > 0


def test_a_scan_set_folder_with_two_files_of_one_key_is_refused_naming_both(tmp_path: Path) -> None:
    _cut_t1(tmp_path, "t1.nii")
    _cut_t1(tmp_path, "t1.nii.gz")
    with pytest.raises(ValueError, match=r"t1.nii and t1.nii.gz: two files of key t1"):
        scan_set_files(tmp_path)


def _run(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "cli", *arguments], cwd=ROOT, check=True, capture_output=True)


@pytest.mark.parametrize(
    ("names", "as_folder"),
    [(["t1.nii.gz", "BraTS2021_00006_t1.nii.gz"], True), (["a_t1.nii.gz", "b_t1.nii.gz"], False)],
)
def test_structure_from_with_two_files_of_one_key_fails_naming_both(
    tmp_path: Path, names: list[str], as_folder: bool
) -> None:
    """A folder where two files match ``t1``, or ``t1=`` given twice: no file is silently taken."""
    folder = tmp_path / "case"
    for name in names:
        _cut_t1(folder, name, depth=2)
    sources = [str(folder)] if as_folder else [f"t1={folder / name}" for name in names]
    for command in ("synthesize", "translate"):
        arguments = ["--structure-from", *sources] if command == "synthesize" else sources
        result = subprocess.run(
            [sys.executable, "-m", "cli", command, *arguments, "--out", str(tmp_path / "x.zip")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0, result.stderr
        assert all(str((folder / name).resolve()) in result.stderr for name in names), result.stderr
        assert "are both t1" in result.stderr and not (tmp_path / "x.zip").exists()


def test_cli_translate_and_synthesize_on_a_scan(tmp_path: Path) -> None:
    one = tmp_path / "case"
    cut = _cut_t1(one)
    _run("translate", f"t1={one / 't1.nii.gz'}", "--out", str(tmp_path / "t.zip"))
    _run(
        "synthesize",
        "--structure-from",
        f"t1={one / 't1.nii.gz'}",
        "--n",
        "2",
        "--out",
        str(tmp_path / "s.zip"),
    )
    with zipfile.ZipFile(tmp_path / "t.zip") as zf:
        manifest = json.loads(zf.read("manifest.json"))
        (case,) = manifest["cases"]
        assert sorted(case["files"]) == ["flair", "t1ce", "t2"]
        image = nib.Nifti1Image.from_bytes(gzip.decompress(zf.read(case["files"]["t2"])))
        assert image.shape == cut.shape and np.allclose(image.affine, cut.affine)
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        cases = json.loads(zf.read("manifest.json"))["cases"]
        assert len(cases) == 2 and all(sorted(c["files"]) == sorted([*MODALITIES, "seg"]) for c in cases)
