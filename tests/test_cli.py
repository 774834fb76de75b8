"""The ``mrisynth`` command line on a one-case phantom: phantom, montage, slices, and its errors."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest

from cli.main import main
from mrisynth.brats import SliceCache
from worker.bundle import read_manifest, read_nifti


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "phantom"
    main(["phantom", "--out", str(out), "--cases", "2", "--seed", "5"])
    return out


def test_phantom_writes_brats2021_cases(phantom: Path) -> None:
    assert sorted(p.name for p in phantom.iterdir()) == ["BraTS2021_00000", "BraTS2021_00001"]


def test_montage_draws_every_modality_and_the_label(phantom: Path, tmp_path: Path) -> None:
    png = tmp_path / "montage.png"
    main(["montage", "--data", str(phantom), "--out", str(png), "--cases", "2", "--slice", "80"])
    image = cv2.imread(str(png))
    assert image.shape == (28 + 2 * 240, 5 * 240, 3)
    gray_columns = image[28:, : 4 * 240].astype(int)
    overlay = image[28:, 4 * 240 :].astype(int)
    assert (gray_columns[..., 0] == gray_columns[..., 2]).all()
    assert (abs(overlay[..., 1] - overlay[..., 0]) > 40).any(), "the label overlay should show color"


def test_slices_builds_the_split_cache(phantom: Path, tmp_path: Path) -> None:
    main(
        ["slices", "--data", str(phantom), "--out", str(tmp_path / "cache"), "--start", "60", "--stop", "70"]
    )
    train, test = SliceCache.open(tmp_path / "cache", "train"), SliceCache.open(tmp_path / "cache", "test")
    assert (len(train), len(test)) == (10, 10)
    assert train.images.shape[1:] == (4, 240, 240)


def test_real_slices_and_a_synthetic_set_mix_into_one_bundle(phantom: Path, tmp_path: Path) -> None:
    """``slices --format nifti`` writes the artifacts' size and layout; ``merge`` mixes it with synthetic."""
    real, synthetic, mixed = tmp_path / "real.zip", tmp_path / "synthetic.zip", tmp_path / "mixed.zip"
    slices = [
        "--start",
        "60",
        "--stop",
        "62",
        "--layout",
        "nnunet",
        "--nnunet-id",
        "7",
        "--nnunet-name",
        "Mix",
    ]
    main(["slices", "--format", "nifti", "--data", str(phantom), "--out", str(real), *slices])
    bundle = ["--layout", "nnunet", "--nnunet-id", "7", "--nnunet-name", "Mix", "--case-prefix", "BraTS-SYN"]
    main(["synthesize", "--n", "2", "--seed", "3", "--dice", "0", "--out", str(synthetic), *bundle])
    main(["merge", str(real), str(synthetic), "--out", str(mixed)])
    with zipfile.ZipFile(mixed) as zf:
        manifest = read_manifest(zf)
        dataset = json.loads(zf.read("Dataset007_Mix/dataset.json"))
        shape = read_nifti(zf, manifest["cases"][0]["files"]["t1"]).shape
    assert [case["case_id"] for case in manifest["cases"]] == [
        *(f"BraTSReal_{i:05d}" for i in range(4)),  # 2 cases x 2 slices
        "BraTS-SYN_00000",
        "BraTS-SYN_00001",
    ]
    assert dataset["numTraining"] == 6 and shape == tuple(manifest["image_size"]) == (96, 96)


def test_errors_exit_with_a_message_and_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["montage", "--data", str(tmp_path), "--out", str(tmp_path / "m.png")])
    assert exit_info.value.code == 2
    assert str(tmp_path) in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["phantom", "--out", str(tmp_path / "p"), "--cases", "0"])
    assert "cases must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synthesize", "--n", "1", "--out", str(tmp_path / "s.zip"), "--nnunet-id", "3"])
    assert "--nnunet-id and --nnunet-name apply to --layout nnunet only" in capsys.readouterr().err
    assert not (tmp_path / "s.zip").exists()


def test_python_m_cli_is_the_console_script(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "--help"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("usage: mrisynth ") and "synthesize" in result.stdout
