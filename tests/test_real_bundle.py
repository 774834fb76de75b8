"""Real slices as a bundle and bundles merged (issue 14): real and synthetic sets mix with no code."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mrisynth.brats import find_cases, load_case
from mrisynth.brats.slices import SliceConfig, resize_image, resize_label
from mrisynth.conventions import MODALITIES, standardize
from worker.bundle import BundleWriter, read_manifest, read_nifti
from worker.bundle_layout import BundleLayout, BundleOptions, PlainSample
from worker.merge import merge_bundles
from worker.real_bundle import write_real_bundle

SIZE = 32
VOXEL = (2.5, 2.5, 1.0)
CONFIG = SliceConfig(start=2, stop=10, test_fraction=0.1, seed=0)


def _synthetic(out: Path, options: BundleOptions, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[4:-4, 4:-4] = 1
    with BundleWriter(out, options, request={"n": n}, seed=1, artifacts={"DC.onnx": "0" * 64}) as bundle:
        for _ in range(n):
            images = {m: rng.normal(size=(SIZE, SIZE)).astype(np.float32) for m in MODALITIES}
            label = np.zeros((SIZE, SIZE), np.uint8)
            label[10:14, 10:14] = 4
            bundle.add(PlainSample(images, label, mask, mask))
    return out


def test_real_slices_are_written_as_a_bundle_in_the_training_scale(brats: Path, tmp_path: Path) -> None:
    options = BundleOptions(voxel_size_mm=VOXEL, extras=True)
    out = write_real_bundle(brats, tmp_path / "real.zip", options, CONFIG, SIZE, split="train")
    with zipfile.ZipFile(out) as zf:
        manifest = read_manifest(zf)
        cases = manifest["cases"]
        datalist = json.loads(zf.read("datalist.json"))
        first = {
            key: np.asarray(read_nifti(zf, name).dataobj)[:, :, 0] for key, name in cases[0]["files"].items()
        }
        assert read_nifti(zf, cases[0]["files"]["t1"]).header.get_zooms() == pytest.approx(VOXEL)
    assert [c["case_id"] for c in cases] == [f"BraTSReal_{i:05d}" for i in range(16)]  # 2 train cases x 8
    assert datalist["numTraining"] == 16 and manifest["request"]["split"] == "train"
    source = cases[0]["scores"]
    assert source["z"] == 2 and source["source_case"] in {c.case_id for c in find_cases(brats)}
    volume = load_case(next(c for c in find_cases(brats) if c.case_id == source["source_case"]))
    assert volume.label is not None
    np.testing.assert_array_equal(first["seg"], resize_label(volume.label[:, :, 2], SIZE))
    brain = first["brainmask"] == 1
    assert 0 < brain.mean() < 1
    for modality in MODALITIES:
        expected = resize_image(standardize(volume.images[modality][:, :, 2]), SIZE)
        assert (first[modality][~brain] == 0).all() and first[modality].shape == (SIZE, SIZE)
        np.testing.assert_allclose(first[modality][brain], expected[brain], rtol=1e-6)


@pytest.mark.parametrize("layout", [BundleLayout.BRATS, BundleLayout.NNUNET])
def test_a_real_and_a_synthetic_bundle_merge_into_one(
    brats: Path, layout: BundleLayout, tmp_path: Path
) -> None:
    options = BundleOptions(layout, voxel_size_mm=VOXEL, extras=True)
    real = write_real_bundle(brats, tmp_path / "real.zip", options, CONFIG, SIZE, split="test")
    synthetic = _synthetic(tmp_path / "synthetic.zip", options)
    merged = merge_bundles([synthetic, real], tmp_path / "mixed.zip")
    with zipfile.ZipFile(merged) as zf, zipfile.ZipFile(real) as zr, zipfile.ZipFile(synthetic) as zs:
        manifest = read_manifest(zf)
        names = set(zf.namelist())
        copied = (set(zr.namelist()) | set(zs.namelist())) - {"manifest.json", "datalist.json"}
        if layout == BundleLayout.NNUNET:
            index = json.loads(zf.read("Dataset901_MRISynth/dataset.json"))
            copied -= {"Dataset901_MRISynth/dataset.json"}
        else:
            index = json.loads(zf.read("datalist.json"))
            assert {
                path for entry in index["training"] for path in [*entry["image"], entry["label"]]
            } <= names
        for name in copied:
            assert zf.read(name) == (zr if name in zr.namelist() else zs).read(name)
    assert copied < names and index["numTraining"] == 3 + 8 == manifest["counts"]["samples"]
    assert [s["samples"] for s in manifest["sources"]] == [3, 8]
    assert manifest["sources"][1]["request"]["source"] == "real BraTS slices"
    assert [c["source"] for c in manifest["cases"]] == [0] * 3 + [1] * 8
    if layout == BundleLayout.BRATS:
        (tmp_path / "mixed").mkdir()
        zipfile.ZipFile(merged).extractall(tmp_path / "mixed")
        assert len(find_cases(tmp_path / "mixed")) == 11


def test_bundles_that_disagree_or_share_case_ids_are_not_merged(brats: Path, tmp_path: Path) -> None:
    options = BundleOptions(voxel_size_mm=VOXEL)
    first = _synthetic(tmp_path / "a.zip", options)
    same_ids = _synthetic(tmp_path / "b.zip", options)
    other_modalities = _synthetic(tmp_path / "c.zip", BundleOptions(voxel_size_mm=VOXEL, modalities=("t1",)))
    other_dataset = BundleOptions(BundleLayout.NNUNET, voxel_size_mm=VOXEL)
    for inputs, message in [
        ([first, same_ids], r"case ids \['BraTSSyn_00000'"),
        ([first, other_modalities], "differs from .* in {'modalities'"),
        ([first], "at least two"),
        (
            [_synthetic(tmp_path / "d.zip", other_dataset), _synthetic(tmp_path / "e.zip", other_dataset)],
            "case ids",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            merge_bundles(inputs, tmp_path / "mixed.zip")
        assert not (tmp_path / "mixed.zip").exists() and not (tmp_path / "mixed.zip.partial").exists()
