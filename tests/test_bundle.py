"""The bundle zip (issues 4, 14): layouts, file contents, datalists, nnU-Net dataset.json, determinism,
cleanup, memory.

Samples are hand-made arrays (the pipeline is not imported): 32x32 by default, every label value present.
"""

import json
import tracemalloc
import zipfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import BaseModel

from mrisynth.brats import find_cases, load_case
from mrisynth.conventions import LABELS, MODALITIES
from worker.bundle import MANIFEST_NAME, BundleWriter, read_manifest, read_nifti
from worker.bundle_layout import BundleLayout, BundleOptions, PlainSample, case_files, case_id
from worker.nnunet import NnunetDataset

SHAPE = (32, 32)
VOXEL = (2.5, 2.5, 1.0)
REQUEST = {"count": 3, "modalities": list(MODALITIES), "lesions": "library"}
ARTIFACTS = {"DC.onnx": "0" * 64, "lesion_library.npz": "ab" * 32}

FILE_LABELS: dict[BundleLayout, dict[int, int]] = {
    BundleLayout.BRATS: {0: 0, 1: 1, 2: 2, 4: 4},
    BundleLayout.BRATS2023: {0: 0, 1: 1, 2: 2, 4: 3},
    BundleLayout.NNUNET: {0: 0, 1: 2, 2: 1, 4: 3},  # nnU-Net's Dataset137_BraTS21: edema 1, necrotic 2
}
"""Our label -> the value each layout's files hold."""

CASE0_FILES: dict[BundleLayout, set[str]] = {
    BundleLayout.BRATS: {
        *(f"BraTSSyn_00000/BraTSSyn_00000_{key}.nii.gz" for key in (*MODALITIES, "seg")),
        "extras/BraTSSyn_00000_structure.nii.gz",
        "extras/BraTSSyn_00000_brainmask.nii.gz",
    },
    BundleLayout.BRATS2023: {
        *(f"BraTS-SYN-00000-000/BraTS-SYN-00000-000-{key}.nii.gz" for key in ("t1n", "t1c", "t2w", "t2f")),
        "BraTS-SYN-00000-000/BraTS-SYN-00000-000-seg.nii.gz",
        "extras/BraTS-SYN-00000-000_structure.nii.gz",
        "extras/BraTS-SYN-00000-000_brainmask.nii.gz",
    },
    BundleLayout.NNUNET: {
        *(f"Dataset901_MRISynth/imagesTr/BraTSSyn_00000_{i:04d}.nii.gz" for i in range(4)),
        "Dataset901_MRISynth/labelsTr/BraTSSyn_00000.nii.gz",
        "Dataset901_MRISynth/extras/BraTSSyn_00000_structure.nii.gz",
        "Dataset901_MRISynth/extras/BraTSSyn_00000_brainmask.nii.gz",
    },
}


class Scores(BaseModel):
    """Scores as a pydantic model, as the pipeline's draft ``SampleScores``."""

    dice: dict[str, float]
    mean_dice: float


def _sample(seed: int, shape: tuple[int, int] = SHAPE) -> PlainSample:
    rng = np.random.default_rng(seed)
    images = {m: (rng.normal(size=shape) + 3 * i).astype(np.float32) for i, m in enumerate(MODALITIES)}
    label = rng.choice(np.array(LABELS, np.uint8), size=shape)
    structure = (rng.random(shape) > 0.7).astype(np.float32)
    brain_mask = np.zeros(shape, np.float32)
    brain_mask[2:-2, 3:-3] = 1.0
    scores = {"dice": {"flair": 0.9 + seed / 100}, "structure_mae": 0.01 * seed, "kept": seed % 2 == 0}
    return PlainSample(images, label, structure, brain_mask, scores)


def _smooth_sample(seed: int, shape: tuple[int, int]) -> PlainSample:
    """A sample of smooth images and a round lesion: as large as a real one, quick to compress."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float32) / max(shape)
    images = {m: np.sin(6 * rows * (i + 1) + cols + seed) for i, m in enumerate(MODALITIES)}
    radius = np.hypot(rows - 0.5, cols - 0.5)
    label = np.select([radius < 0.05, radius < 0.1, radius < 0.2], [1, 4, 2], 0).astype(np.uint8)
    structure = (radius < 0.4).astype(np.float32)
    return PlainSample(images, label, structure, structure, {"seed": seed})


def _write(out: Path, options: BundleOptions, samples: list[PlainSample], seed: int = 7) -> Path:
    with BundleWriter(out, options, request=REQUEST, seed=seed, artifacts=ARTIFACTS) as bundle:
        for sample in samples:
            bundle.add(sample)
    return out


def _read_png(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(zf.read(name), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, f"{name} is not a PNG"
    return image


def _full(layout: BundleLayout) -> BundleOptions:
    return BundleOptions(layout, voxel_size_mm=VOXEL, extras=True, previews=True, montage_samples=2)


@pytest.mark.parametrize("layout", list(BundleLayout))
def test_layout_names_dtypes_geometry_and_values(layout: BundleLayout, tmp_path: Path) -> None:
    samples = [_sample(i) for i in range(3)]
    out = _write(tmp_path / "bundle.zip", _full(layout), samples)
    assert not (tmp_path / "bundle.zip.partial").exists()
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        manifest = read_manifest(zf)
        names = set(zf.namelist())
        assert CASE0_FILES[layout] <= names
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            stored = info.filename.endswith(".nii.gz")
            assert info.compress_type == (zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
        assert zf.infolist()[-1].filename == MANIFEST_NAME
        cases = manifest["cases"]
        assert [c["case_id"] for c in cases] == [case_id(_full(layout), i) for i in range(3)]
        listed = {MANIFEST_NAME, "montage.png"} | {name for c in cases for name in c["files"].values()}
        listed.add("Dataset901_MRISynth/dataset.json" if layout == BundleLayout.NNUNET else "datalist.json")
        per_case = 4 + 1 + 2 + 1  # modalities, seg, extras, preview
        assert listed == names and len(names) == 3 * per_case + 3
        if layout != BundleLayout.NNUNET:  # a case folder holds exactly its layout's five files
            case_folders = {name.split("/")[0] for name in names if "/" in name} - {"extras", "previews"}
            assert case_folders == {c["case_id"] for c in cases}
            for case in cases:
                assert len([n for n in names if n.startswith(case["case_id"] + "/")]) == 5
        file_shape = SHAPE if layout == BundleLayout.NNUNET else (*SHAPE, 1)
        for sample, case in zip(samples, cases, strict=True):
            files = case["files"]
            assert case["scores"] == sample.scores
            brain = sample.brain_mask > 0
            expected = {m: np.where(brain, sample.images[m], 0) for m in MODALITIES} | {
                "structure": sample.f,
                "brainmask": sample.brain_mask,
            }
            for key, array in expected.items():
                image = read_nifti(zf, files[key])
                data = np.asarray(image.dataobj)
                dtype = np.float32 if key in MODALITIES else np.uint8
                assert data.dtype == dtype and data.shape == file_shape, files[key]
                np.testing.assert_array_equal(data.reshape(SHAPE), array)
                assert image.header.get_zooms() == pytest.approx(VOXEL[: len(file_shape)])
                np.testing.assert_array_equal(image.affine, np.diag([-2.5, -2.5, 1.0, 1.0]))
            seg = np.asarray(read_nifti(zf, files["seg"]).dataobj)
            assert seg.dtype == np.uint8 and seg.shape == file_shape
            remapped = np.vectorize(FILE_LABELS[layout].get)(sample.label).astype(np.uint8)
            np.testing.assert_array_equal(seg.reshape(SHAPE), remapped)
            assert set(np.unique(seg).tolist()) == set(FILE_LABELS[layout].values())
            preview = _read_png(zf, files["preview"])
            assert preview.shape[1] == 7 * SHAPE[1]  # 4 modalities, label overlay, structure, brain mask
        montage = _read_png(zf, "montage.png")
        assert montage.shape == (preview.shape[0] + SHAPE[0], *preview.shape[1:])  # montage_samples=2 rows
    label_voxels = {name: 0 for name in ("background", "necrotic core", "edema", "enhancing tumor")}
    for sample in samples:
        for value, name in zip(LABELS, label_voxels, strict=True):
            label_voxels[name] += int((sample.label == value).sum())
    assert manifest["counts"] == {"samples": 3, "files": len(names), "label_voxels": label_voxels}
    assert manifest["label_values"] == {
        name: FILE_LABELS[layout][value] for value, name in zip(LABELS, label_voxels, strict=True)
    }
    assert (manifest["request"], manifest["seed"], manifest["artifacts"]) == (REQUEST, 7, ARTIFACTS)
    assert manifest["layout"] == layout.value and manifest["format_version"] == 1
    assert (manifest["image_size"], manifest["voxel_size_mm"]) == ([32, 32], list(VOXEL))
    assert manifest["modalities"] == list(MODALITIES) and manifest["montage"] == "montage.png"
    enhancing = {"brats": "ET = 4", "brats2023": "ET = 3", "nnunet": "3 enhancing"}
    assert enhancing[layout.value] in manifest["label_convention"]
    assert manifest["case_prefix"] == cases[0]["case_id"].removesuffix("_00000").removesuffix("-00000-000")


@pytest.mark.parametrize("layout", [BundleLayout.BRATS, BundleLayout.BRATS2023])
def test_brats_layouts_hold_a_monai_datalist_of_their_cases(layout: BundleLayout, tmp_path: Path) -> None:
    options = replace(_full(layout), modalities=("flair", "t1ce"), case_prefix="BraTS-GLI")
    samples = [_sample(i) for i in range(7)]
    with zipfile.ZipFile(_write(tmp_path / "bundle.zip", options, samples)) as zf:
        datalist = json.loads(zf.read("datalist.json"))
        names = set(zf.namelist())
        manifest = read_manifest(zf)
    assert manifest["datalist"] == "datalist.json"
    cases = [c["case_id"] for c in manifest["cases"]]
    assert all(case.startswith("BraTS-GLI") for case in cases)
    assert datalist["numTraining"] == 7 and datalist["modality"] == {"0": "t1ce", "1": "flair"}
    assert [entry["fold"] for entry in datalist["training"]] == [0, 1, 2, 3, 4, 0, 1]
    for case, entry in zip(cases, datalist["training"], strict=True):
        files = case_files(options, case)
        assert entry["image"] == [files["t1ce"], files["flair"]] and entry["label"] == files["seg"]
        assert {*entry["image"], entry["label"]} <= names


def test_background_is_exactly_zero_outside_the_brain_mask(tmp_path: Path) -> None:
    sample = _sample(0)
    with zipfile.ZipFile(_write(tmp_path / "bundle.zip", BundleOptions(extras=True), [sample])) as zf:
        files = read_manifest(zf)["cases"][0]["files"]
        mask = np.asarray(read_nifti(zf, files["brainmask"]).dataobj)[:, :, 0]
        for modality in MODALITIES:
            image = np.asarray(read_nifti(zf, files[modality]).dataobj)[:, :, 0]
            assert (image[mask == 0] == 0).all()
            np.testing.assert_array_equal(image[mask == 1], sample.images[modality][mask == 1])
    assert (mask == 0).any() and sample.images["t1"][mask == 0].min() < 0


def test_nnunet_dataset_json_matches_the_files(tmp_path: Path) -> None:
    dataset = NnunetDataset(42, "Synth-Brain", licence="CC0")
    options = BundleOptions(BundleLayout.NNUNET, modalities=("flair", "t1"), extras=True, nnunet=dataset)
    samples = [_sample(i) for i in range(3)]
    with zipfile.ZipFile(_write(tmp_path / "nnunet.zip", options, samples)) as zf:
        ordered = json.loads(zf.read("Dataset042_Synth-Brain/dataset.json"))
        names = sorted(zf.namelist())
        images = [n for n in names if n.startswith("Dataset042_Synth-Brain/imagesTr/")]
        labels = [n for n in names if n.startswith("Dataset042_Synth-Brain/labelsTr/")]
        t1 = read_nifti(zf, "Dataset042_Synth-Brain/imagesTr/BraTSSyn_00002_0000.nii.gz")
        flair = read_nifti(zf, "Dataset042_Synth-Brain/imagesTr/BraTSSyn_00002_0001.nii.gz")
        brain, arrays = samples[2].brain_mask > 0, samples[2].images
        np.testing.assert_array_equal(np.asarray(t1.dataobj), np.where(brain, arrays["t1"], 0))
        np.testing.assert_array_equal(np.asarray(flair.dataobj), np.where(brain, arrays["flair"], 0))
        assert read_manifest(zf)["nnunet"]["dataset"] == "Dataset042_Synth-Brain"
    assert list(ordered["labels"]) == ["background", "whole tumor", "tumor core", "enhancing tumor"]
    assert ordered == {
        "channel_names": {"0": "T1", "1": "Flair"},
        "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
        "regions_class_order": [1, 2, 3],
        "numTraining": 3,
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
        "name": "Dataset042_Synth-Brain",
        "description": dataset.description,
        "reference": dataset.reference,
        "licence": "CC0",
        "release": "1.0",
    }
    assert len(labels) == ordered["numTraining"]
    assert len(images) == ordered["numTraining"] * len(ordered["channel_names"])
    assert sorted(n.removeprefix("Dataset042_Synth-Brain/imagesTr/") for n in images) == [
        f"BraTSSyn_{i:05d}_{c:04d}.nii.gz" for i in range(3) for c in range(2)
    ]


def test_nnunet_images_read_as_2d_by_simpleitk(tmp_path: Path) -> None:
    """nnU-Net's SimpleITKIO plans the image plane of a 2D file (out-of-plane spacing 999 x in-plane)."""
    sitk = pytest.importorskip("SimpleITK")
    options = BundleOptions(BundleLayout.NNUNET, voxel_size_mm=VOXEL)
    with zipfile.ZipFile(_write(tmp_path / "nnunet.zip", options, [_sample(0)])) as zf:
        zf.extractall(tmp_path)
    for name in ("imagesTr/BraTSSyn_00000_0000.nii.gz", "labelsTr/BraTSSyn_00000.nii.gz"):
        image = sitk.ReadImage(str(tmp_path / "Dataset901_MRISynth" / name))
        assert (image.GetDimension(), image.GetSize(), image.GetSpacing()) == (2, SHAPE, VOXEL[:2])


@pytest.mark.parametrize("layout", [BundleLayout.BRATS, BundleLayout.BRATS2023])
def test_brats_bundles_read_back_with_find_cases(layout: BundleLayout, tmp_path: Path) -> None:
    samples = [_sample(i) for i in range(3)]
    with zipfile.ZipFile(_write(tmp_path / "bundle.zip", _full(layout), samples)) as zf:
        zf.extractall(tmp_path / "data")
    cases = find_cases(tmp_path / "data")
    assert [c.case_id for c in cases] == [case_id(_full(layout), i) for i in range(3)]
    for sample, case in zip(samples, cases, strict=True):
        volume = load_case(case)
        assert volume.label is not None
        np.testing.assert_array_equal(volume.label[:, :, 0], sample.label)
        t2 = np.where(sample.brain_mask > 0, sample.images["t2"], 0)
        np.testing.assert_array_equal(volume.images["t2"][:, :, 0], t2)


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    samples = [_sample(i) for i in range(3)]
    for layout in BundleLayout:
        first = _write(tmp_path / f"{layout}-a.zip", _full(layout), samples).read_bytes()
        second = _write(tmp_path / f"{layout}-b.zip", _full(layout), samples).read_bytes()
        assert first == second
        other_seed = _write(tmp_path / f"{layout}-c.zip", _full(layout), samples, seed=8).read_bytes()
        assert other_seed != first


def test_an_exception_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "bundle.zip"
    with (
        pytest.raises(RuntimeError, match="job cancelled"),
        BundleWriter(out, request=REQUEST, seed=0, artifacts=ARTIFACTS) as bundle,
    ):
        bundle.add(_sample(0))
        assert (tmp_path / "bundle.zip.partial").stat().st_size > 0
        raise RuntimeError("job cancelled")
    assert list(tmp_path.iterdir()) == []
    with (
        pytest.raises(ValueError, match="at least one sample"),
        BundleWriter(out, request=REQUEST, seed=0, artifacts=ARTIFACTS),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


def test_write_failure_aborts_the_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = zipfile.ZipFile.writestr

    def fail_third(self: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes) -> None:
        calls.append(info.filename)
        if len(calls) == 3:
            raise OSError("disk full")
        original(self, info, data)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", fail_third)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path / "bundle.zip", BundleOptions(), [_sample(0)])
    assert list(tmp_path.iterdir()) == []


def test_a_refused_sample_writes_nothing_and_the_bundle_goes_on(tmp_path: Path) -> None:
    bad_label = _sample(1)
    bad_label.label[0, 0] = 3
    nan_score = replace(_sample(2), scores={"dice": float("nan")})
    wrong_shape = _sample(3, (32, 30))
    no_flair = replace(_sample(4), images={m: a for m, a in _sample(4).images.items() if m != "flair"})
    infinite = _sample(5)
    infinite.images["t2"][1, 1] = np.inf
    soft_mask = replace(_sample(6), brain_mask=np.full(SHAPE, 0.5, np.float32))
    as_pipeline = replace(  # uint8 masks and pydantic scores, as the pipeline's draft Sample has them
        _sample(7),
        f=_sample(7).f.astype(np.uint8),
        brain_mask=_sample(7).brain_mask.astype(np.uint8),
        scores=Scores(dice={"flair": 0.97}, mean_dice=0.97),
    )
    out = tmp_path / "bundle.zip"
    with BundleWriter(out, request=REQUEST, seed=0, artifacts=ARTIFACTS) as bundle:
        bundle.add(_sample(0))
        for bad, message in [
            (bad_label, r"holds values \[3\] outside"),
            (nan_score, "JSON-serializable without NaN"),
            (wrong_shape, r"shape \(32, 32\)"),
            (no_flair, r"lacks modalities \['flair'\]"),
            (infinite, r"\['t2'\] hold NaN or infinite"),
            (soft_mask, r"\['brainmask'\] must hold only 0 and 1"),
        ]:
            with pytest.raises(ValueError, match=message):
                bundle.add(bad)
        assert bundle.add(as_pipeline) == "BraTSSyn_00001"
    with zipfile.ZipFile(out) as zf:
        cases = read_manifest(zf)["cases"]
        assert [c["case_id"] for c in cases] == ["BraTSSyn_00000", "BraTSSyn_00001"]
        assert cases[1]["scores"] == {"dice": {"flair": 0.97}, "mean_dice": 0.97}
        assert len(zf.namelist()) == 2 * 5 + 2  # and the datalist, the manifest


def test_existing_bundles_are_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "bundle.zip"
    out.write_bytes(b"an earlier bundle")
    with pytest.raises(FileExistsError, match="never overwritten"):
        BundleWriter(out, request=REQUEST, seed=0, artifacts=ARTIFACTS)
    assert out.read_bytes() == b"an earlier bundle"


def test_bad_options_and_provenance_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="modalities"):
        BundleOptions(modalities=("t1", "t1c"))
    with pytest.raises(ValueError, match="modalities"):
        BundleOptions(modalities=())
    with pytest.raises(ValueError, match="voxel_size_mm"):
        BundleOptions(voxel_size_mm=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="1-999"):
        NnunetDataset(1000)
    with pytest.raises(ValueError, match="name"):
        NnunetDataset(name="My Dataset")
    for prefix in ("", "1BraTS", "BraTS_Syn", "BraTS/../x", "B" * 33):
        with pytest.raises(ValueError, match="case_prefix"):
            BundleOptions(case_prefix=prefix)
    with pytest.raises(ValueError, match="sha256"):
        BundleWriter(tmp_path / "a.zip", request=REQUEST, seed=0, artifacts={"DC.onnx": "ABC"})
    with pytest.raises(ValueError, match="request must be JSON-serializable"):
        BundleWriter(tmp_path / "a.zip", request={"path": tmp_path}, seed=0, artifacts=ARTIFACTS)
    assert list(tmp_path.iterdir()) == []
    brats, brats2023 = BundleOptions(), BundleOptions(BundleLayout.BRATS2023)
    assert (case_id(brats, 12), case_id(brats2023, 12)) == ("BraTSSyn_00012", "BraTS-SYN-00012-000")
    assert case_id(replace(brats2023, case_prefix="BraTS-GLI"), 3) == "BraTS-GLI-00003-000"
    with pytest.raises(ValueError, match="0-99999"):
        case_id(BundleOptions(BundleLayout.NNUNET), 100_000)


def test_memory_stays_bounded_by_a_sample(tmp_path: Path) -> None:
    """200 samples of 240x240 with 4 modalities, ~196 MB as arrays, written with a few MB of memory."""
    pool = [_smooth_sample(i, (240, 240)) for i in range(4)]
    dataset_bytes = 200 * sum(a.nbytes for a in (*pool[0].images.values(), pool[0].label))
    tracemalloc.start()
    try:
        with BundleWriter(tmp_path / "big.zip", request=REQUEST, seed=0, artifacts=ARTIFACTS) as bundle:
            for i in range(200):
                bundle.add(pool[i % len(pool)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert dataset_bytes > 190e6
    assert peak < dataset_bytes / 20, f"peak {peak / 1e6:.1f} MB"
    with zipfile.ZipFile(tmp_path / "big.zip") as zf:
        assert read_manifest(zf)["counts"]["samples"] == 200
