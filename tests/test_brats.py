"""BraTS data layer: layouts, validation errors, subject-level split and the slice cache.

Layouts and the slice cache are tested on phantom cases (real size, written by `mrisynth.phantom`, which
needs the ``train`` extra); exact round trips and every bad input on tiny hand-made volumes.
"""

import gzip
import json
import os
import re
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrisynth.brats import (
    BratsError,
    Layout,
    SliceCache,
    SliceConfig,
    build_slice_cache,
    case_file,
    find_cases,
    load_case,
    split_cases,
    write_case,
)
from mrisynth.brats import write as write_module
from mrisynth.conventions import BRATS_SHAPE, LABELS, MODALITIES, standardize

SHAPE = (24, 20, 155)
"""Tiny volumes with BraTS's depth, so the default slices 55-104 exist."""

N_CASES = 3
"""Cases of both the phantom and the tiny folder, ``BraTS2021_0000<i>``."""

CASE_IDS = [f"BraTS2021_{i:05d}" for i in range(N_CASES)]


def _case_arrays(seed: int, shape: tuple[int, int, int] = SHAPE) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Images distinct per modality and a label volume holding every label."""
    rng = np.random.default_rng(seed)
    images = {
        m: (rng.normal(size=shape) * (i + 1) + 10 * i).astype(np.float32) for i, m in enumerate(MODALITIES)
    }
    label = rng.choice(np.array(LABELS, dtype=np.uint8), size=shape)
    return images, label


@pytest.fixture(scope="session")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BraTS 2021 folder of ``N_CASES`` phantom cases, written once (about 15 s)."""
    phantom = pytest.importorskip("mrisynth.phantom", reason="the phantom needs the train extra")
    root = tmp_path_factory.mktemp("phantom") / "BraTS2021"
    phantom.write_dataset(root, cases=N_CASES, seed=0)
    return root


@pytest.fixture
def phantom_copy(phantom: Path, tmp_path: Path) -> Path:
    """A private hard-linked copy of the phantom folder: files may be deleted or replaced, not edited."""
    return Path(shutil.copytree(phantom, tmp_path / "BraTS2021", copy_function=os.link))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BraTS 2021 folder of ``N_CASES`` tiny cases made from ``_case_arrays(i)``."""
    root = tmp_path_factory.mktemp("tiny")
    for i, case_id in enumerate(CASE_IDS):
        images, label = _case_arrays(i)
        write_case(root, case_id, images, label, np.diag([-1.0, -1.0, 1.0, 1.0]))
    return root


@pytest.fixture
def tiny_copy(tiny: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny folder, for tests that break it."""
    return Path(shutil.copytree(tiny, tmp_path / "brats"))


def _nifti(path: Path) -> nib.Nifti1Image:
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image)
    return image


def _rename_to_2023(src: Path, dst: Path) -> None:
    """Rename a BraTS 2021 folder to BraTS 2023 naming by hand (hard links), rewriting label 4 as 3."""
    tokens = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}
    for case_dir in sorted(src.iterdir()):
        new_id = "BraTS-GLI-" + case_dir.name.split("_")[1] + "-000"
        (dst / new_id).mkdir(parents=True)
        for key, token in tokens.items():
            path = case_file(case_dir, case_dir.name, key)
            target = dst / new_id / f"{new_id}-{token}.nii.gz"
            if key != "seg":
                os.link(path, target)
                continue
            image = _nifti(path)
            label = np.asarray(image.dataobj)
            nib.save(nib.Nifti1Image(np.where(label == 4, 3, label).astype(np.uint8), image.affine), target)


def _write_brats2015(root: Path, case_id: str, images: dict[str, np.ndarray], label: np.ndarray) -> None:
    """A BraTS 2015 case as its .mha tree; volumes given (x, y, z), written as SimpleITK (z, y, x) arrays."""
    sitk = pytest.importorskip("SimpleITK")
    tokens = {"t1": "MR_T1", "t1ce": "MR_T1c", "t2": "MR_T2", "flair": "MR_Flair"}
    volumes = {f"VSD.Brain.XX.O.{tokens[m]}.{54512 + i}": images[m] for i, m in enumerate(MODALITIES)}
    volumes["VSD.Brain_3more.XX.O.OT.54517"] = label
    for name, volume in volumes.items():
        (root / case_id / name).mkdir(parents=True)
        image = sitk.GetImageFromArray(np.ascontiguousarray(volume.T))
        image.SetOrigin((0.0, -239.0, 0.0))
        sitk.WriteImage(image, str(root / case_id / name / f"{name}.mha"))


def test_phantom_brats2021_layout_loads_names_shapes_labels(phantom: Path) -> None:
    cases = find_cases(phantom)
    assert [c.case_id for c in cases] == CASE_IDS
    assert {c.layout for c in cases} == {Layout.BRATS2021}
    assert cases[1].images["t1ce"] == phantom / "BraTS2021_00001" / "BraTS2021_00001_t1ce.nii.gz"
    assert cases[1].label == phantom / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz"
    volume = load_case(cases[1])
    assert volume.case_id == "BraTS2021_00001" and list(volume.images) == list(MODALITIES)
    for image in volume.images.values():
        assert image.dtype == np.float32 and image.shape == BRATS_SHAPE
    assert volume.label is not None and volume.label.dtype == np.uint8 and volume.label.shape == BRATS_SHAPE
    assert set(np.unique(volume.label).tolist()) == set(LABELS)
    np.testing.assert_array_equal(volume.affine, _nifti(cases[1].images["t1"]).affine)


def test_phantom_brats2023_rename_loads_identical_arrays(phantom: Path, tmp_path: Path) -> None:
    _rename_to_2023(phantom, tmp_path / "brats2023")
    cases2021, cases2023 = find_cases(phantom), find_cases(tmp_path / "brats2023")
    assert [c.case_id for c in cases2023] == [f"BraTS-GLI-{i:05d}-000" for i in range(N_CASES)]
    assert {c.layout for c in cases2023} == {Layout.BRATS2023}
    assert cases2023[0].images["flair"].name == "BraTS-GLI-00000-000-t2f.nii.gz"
    for a, b in zip(map(load_case, cases2021), map(load_case, cases2023), strict=True):
        for m in MODALITIES:
            np.testing.assert_array_equal(a.images[m], b.images[m])
        np.testing.assert_array_equal(a.label, b.label)


def test_phantom_brats2018_nesting_and_plain_nii_are_found(phantom: Path, tmp_path: Path) -> None:
    root = tmp_path / "MICCAI_BraTS_2018_Data_Training"
    for i, case_id in enumerate(CASE_IDS):
        new_id = f"Brats18_2013_{i}_1"
        target = root / ("HGG" if i % 2 == 0 else "LGG") / new_id
        target.mkdir(parents=True)
        for key in (*MODALITIES, "seg"):
            source = case_file(phantom / case_id, case_id, key)
            if i == 1:  # BraTS 2020 ships some cases as plain .nii
                (target / f"{new_id}_{key}.nii").write_bytes(gzip.decompress(source.read_bytes()))
            else:
                os.link(source, target / f"{new_id}_{key}.nii.gz")
    (root / "HGG" / "._Brats18_2013_0_1_t1.nii.gz").write_bytes(b"macOS resource fork")
    cases = find_cases(root)
    assert [(c.case_id, c.images["t1"].parent.parent.name) for c in cases] == [
        ("Brats18_2013_0_1", "HGG"),
        ("Brats18_2013_1_1", "LGG"),
        ("Brats18_2013_2_1", "HGG"),
    ]
    assert cases[1].images["t2"].name == "Brats18_2013_1_1_t2.nii"
    plain, gzipped = load_case(cases[1]), load_case(find_cases(phantom)[1])
    np.testing.assert_array_equal(plain.images["t2"], gzipped.images["t2"])
    np.testing.assert_array_equal(plain.label, gzipped.label)


def test_phantom_brats2015_mha_tree_maps_modalities_and_labels(phantom: Path, tmp_path: Path) -> None:
    volume = load_case(find_cases(phantom)[0])
    assert volume.label is not None
    label2015 = volume.label.copy()
    core = np.flatnonzero(volume.label == 1)
    assert len(core) > 1
    label2015.flat[core[: len(core) // 2]] = 3  # half the core as non-enhancing tumor, merged into 1
    _write_brats2015(
        tmp_path / "BRATS2015_Training" / "HGG", "brats_2013_pat0001_1", volume.images, label2015
    )
    (case,) = find_cases(tmp_path / "BRATS2015_Training")
    assert (case.case_id, case.layout) == ("brats_2013_pat0001_1", Layout.BRATS2015)
    assert case.images["t1ce"].name == "VSD.Brain.XX.O.MR_T1c.54513.mha"
    assert case.label is not None and case.label.name == "VSD.Brain_3more.XX.O.OT.54517.mha"
    read = load_case(case)
    for m in MODALITIES:
        assert read.images[m].dtype == np.float32 and read.images[m].shape == BRATS_SHAPE
        np.testing.assert_array_equal(read.images[m], volume.images[m])
    np.testing.assert_array_equal(read.label, volume.label)
    np.testing.assert_array_equal(read.affine[:3, 3], [0.0, 239.0, 0.0])  # the LPS origin, in RAS


def test_phantom_slice_cache_rows_standardized_and_memory_mapped(phantom_copy: Path, tmp_path: Path) -> None:
    cache_dir = build_slice_cache(phantom_copy, tmp_path / "cache")
    train_ids, test_ids = split_cases(CASE_IDS, 0.1, seed=0)
    assert (len(train_ids), len(test_ids)) == (2, 1)
    index = json.loads((cache_dir / "index.json").read_text())
    assert (index["splits"]["train"]["cases"], index["splits"]["test"]["cases"]) == (train_ids, test_ids)
    volume = load_case(find_cases(phantom_copy)[CASE_IDS.index(test_ids[0])])
    assert volume.label is not None
    shutil.rmtree(phantom_copy)  # the cache must not need the NIfTI files any more
    for split, ids in (("train", train_ids), ("test", test_ids)):
        cache = SliceCache.open(cache_dir, split)
        assert len(cache) == len(ids) * 50
        assert isinstance(cache.images, np.memmap) and isinstance(cache.labels, np.memmap)
        assert cache.images.shape == (len(cache), 4, 240, 240) and cache.images.dtype == np.float32
        assert cache.labels.shape == (len(cache), 240, 240) and cache.labels.dtype == np.uint8
        assert cache.rows[:2] == [(ids[0], 55), (ids[0], 56)] and cache.rows[-1] == (ids[-1], 104)
        assert set(np.unique(cache.labels).tolist()) <= set(LABELS)
        np.testing.assert_allclose(cache.images.mean(axis=(2, 3)), 0, atol=1e-4)
        np.testing.assert_allclose(cache.images.std(axis=(2, 3)), 1, atol=1e-3)
    cache = SliceCache.open(cache_dir, "test")
    assert cache.rows[15] == (test_ids[0], 70)
    np.testing.assert_array_equal(cache.images[15, 1], standardize(volume.images["t1ce"][:, :, 70]))
    np.testing.assert_array_equal(cache.labels[15], volume.label[:, :, 70])
    assert cache.config == SliceConfig() and cache.source == phantom_copy.resolve()


def test_tiny_brats2021_round_trip_is_exact(tiny: Path) -> None:
    cases = find_cases(tiny)
    assert [c.case_id for c in cases] == CASE_IDS
    volume = load_case(cases[1])
    images, label = _case_arrays(1)
    for m in MODALITIES:
        assert volume.images[m].dtype == np.float32
        np.testing.assert_array_equal(volume.images[m], images[m])
    np.testing.assert_array_equal(volume.label, label)
    np.testing.assert_array_equal(volume.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))


def test_write_case_brats2023_writes_enhancing_as_3(tmp_path: Path) -> None:
    images, label = _case_arrays(0)
    case_dir = write_case(tmp_path, "BraTS-GLI-00007-000", images, label, np.eye(4), Layout.BRATS2023)
    seg = np.asarray(_nifti(case_file(case_dir, "BraTS-GLI-00007-000", "seg", Layout.BRATS2023)).dataobj)
    assert seg.dtype == np.uint8 and set(np.unique(seg).tolist()) == {0, 1, 2, 3}
    np.testing.assert_array_equal(load_case(find_cases(tmp_path)[0]).label, label)


def test_case_file_names() -> None:
    assert case_file(Path("d"), "c", "t1ce") == Path("d/c_t1ce.nii.gz")
    assert case_file(Path("d"), "c", "flair", Layout.BRATS2023) == Path("d/c-t2f.nii.gz")
    with pytest.raises(ValueError, match="brats2021 or brats2023"):
        case_file(Path("d"), "c", "t1", Layout.BRATS2015)
    with pytest.raises(ValueError, match="'t1c'"):
        case_file(Path("d"), "c", "t1c")


def test_brats2015_without_simpleitk_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, label = _case_arrays(5)
    _write_brats2015(tmp_path, "brats_2013_pat0001_1", images, label)
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(ImportError, match=r"mrisynth\[brats2015\]"):
        load_case(find_cases(tmp_path)[0])


def test_unlabeled_cases_need_require_label_false(tiny_copy: Path) -> None:
    seg = case_file(tiny_copy / "BraTS2021_00001", "BraTS2021_00001", "seg")
    seg.unlink()
    with pytest.raises(BratsError, match="missing seg file, expected BraTS2021_00001_seg.nii.gz"):
        find_cases(tiny_copy)
    cases = find_cases(tiny_copy, require_label=False)
    assert [c.label is None for c in cases] == [False, True, False]
    assert load_case(cases[1]).label is None


def test_missing_modality_names_case_dir_and_expected_file(tiny_copy: Path) -> None:
    case_dir = tiny_copy / "BraTS2021_00002"
    case_file(case_dir, "BraTS2021_00002", "t1ce").unlink()
    with pytest.raises(BratsError) as error:
        find_cases(tiny_copy)
    assert f"{case_dir}: missing t1ce file, expected BraTS2021_00002_t1ce.nii.gz" in str(error.value)


def test_shape_mismatch_names_both_files_and_shapes(tiny_copy: Path) -> None:
    case_dir = tiny_copy / "BraTS2021_00000"
    flair = case_file(case_dir, "BraTS2021_00000", "flair")
    nib.save(nib.Nifti1Image(np.zeros((24, 20, 150), np.float32), np.eye(4)), flair)
    with pytest.raises(BratsError) as error:
        load_case(find_cases(tiny_copy)[0])
    message = str(error.value)
    assert str(flair) in message and "(24, 20, 150)" in message
    assert str(case_file(case_dir, "BraTS2021_00000", "t1")) in message and str(SHAPE) in message


@pytest.mark.parametrize("bad", [3, 5])
def test_bad_label_values_name_file_and_values(tiny_copy: Path, bad: int) -> None:
    seg = case_file(tiny_copy / "BraTS2021_00001", "BraTS2021_00001", "seg")
    label = _case_arrays(1)[1]
    label[0, 0, 0] = bad
    nib.save(nib.Nifti1Image(label, np.eye(4)), seg)
    with pytest.raises(
        BratsError, match=re.escape(f"{seg}: label values {bad} are not brats2021 labels [0, 1, 2, 4]")
    ):
        load_case(find_cases(tiny_copy)[1])


def test_empty_directory_names_it_and_the_layouts(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(BratsError) as error:
        find_cases(tmp_path)
    message = str(error.value)
    assert f"no BraTS case found under {tmp_path}" in message
    assert all(layout in message for layout in ("brats2021", "brats2023", "brats2015"))
    with pytest.raises(BratsError, match="is not a directory"):
        find_cases(tmp_path / "absent")


@pytest.mark.parametrize("content", [b"not an image", gzip.compress(b"not a NIfTI header")])
def test_unreadable_file_is_named(tiny_copy: Path, content: bytes) -> None:
    t2 = case_file(tiny_copy / "BraTS2021_00000", "BraTS2021_00000", "t2")
    t2.write_bytes(content)
    with pytest.raises(BratsError, match=re.escape(f"cannot read {t2}")):
        load_case(find_cases(tiny_copy)[0])


def test_truncated_file_is_named(tiny_copy: Path) -> None:
    t1 = case_file(tiny_copy / "BraTS2021_00000", "BraTS2021_00000", "t1")
    t1.write_bytes(t1.read_bytes()[:2000])
    with pytest.raises(BratsError, match=re.escape(f"cannot read {t1}")):
        load_case(find_cases(tiny_copy)[0])


def test_duplicate_files_and_case_ids_are_refused(tiny_copy: Path) -> None:
    t1 = case_file(tiny_copy / "BraTS2021_00000", "BraTS2021_00000", "t1")
    nib.save(nib.load(t1), t1.with_name("BraTS2021_00000_t1.nii"))
    shutil.copytree(tiny_copy / "BraTS2021_00001", tiny_copy / "copy" / "BraTS2021_00001")
    with pytest.raises(BratsError) as error:
        find_cases(tiny_copy)
    message = str(error.value)
    assert "several t1 files: BraTS2021_00000_t1.nii, BraTS2021_00000_t1.nii.gz" in message
    assert "case id BraTS2021_00001 found twice" in message


def test_write_case_refuses_bad_arrays(tmp_path: Path) -> None:
    images, label = _case_arrays(0)
    with pytest.raises(ValueError, match="modalities"):
        write_case(tmp_path, "c", {"t1": images["t1"]}, label, np.eye(4))
    with pytest.raises(ValueError, match="outside"):
        write_case(tmp_path, "c", images, np.full(SHAPE, 3, np.uint8), np.eye(4))
    with pytest.raises(ValueError, match="one shape"):
        write_case(tmp_path, "c", images, label[:, :, :10], np.eye(4))
    assert not (tmp_path / "c").exists()


def test_write_case_is_atomic_deterministic_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, label = _case_arrays(0)
    first = write_case(tmp_path / "a", "c", images, label, np.eye(4))
    second = write_case(tmp_path / "b", "c", images, label, np.eye(4))
    for a in sorted(first.iterdir()):
        assert a.read_bytes() == (second / a.name).read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        write_case(tmp_path / "a", "c", images, label, np.eye(4))

    def fail_on_seg(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
        if path.name.endswith("_seg.nii.gz"):
            raise OSError("disk full")
        path.write_bytes(b"partial")

    monkeypatch.setattr(write_module, "_write_nifti", fail_on_seg)
    with pytest.raises(OSError, match="disk full"):
        write_case(tmp_path / "c", "c", images, label, np.eye(4))
    assert not any((tmp_path / "c").iterdir())


def test_split_is_subject_level_9_to_1_and_reproducible() -> None:
    ids = [f"case{i:03d}" for i in range(274)]
    train, test = split_cases(ids, 0.1, seed=3)
    assert (len(train), len(test)) == (247, 27)
    assert not set(train) & set(test) and sorted(train + test) == ids
    assert split_cases(list(reversed(ids)), 0.1, seed=3) == (train, test)
    assert split_cases(ids, 0.1, seed=4) != (train, test)
    assert [len(part) for part in split_cases(["a", "b"], 0.1)] == [1, 1]
    assert split_cases(["a"], 0.1) == (["a"], [])
    with pytest.raises(ValueError, match="distinct"):
        split_cases(["a", "a"])


def test_slice_cache_is_reused_rebuilt_when_stale_and_refused_when_verified(
    tiny_copy: Path, tmp_path: Path
) -> None:
    cache_dir = build_slice_cache(tiny_copy, tmp_path / "cache")
    index_mtime = (cache_dir / "index.json").stat().st_mtime_ns
    assert build_slice_cache(tiny_copy, cache_dir) == cache_dir
    assert (cache_dir / "index.json").stat().st_mtime_ns == index_mtime
    cache = SliceCache.open(cache_dir, "train", verify_source=True)
    assert len(cache) == 100 and cache.rows[0][1] == 55
    np.testing.assert_allclose(cache.images.std(axis=(2, 3)), 1, atol=1e-4)
    t2 = case_file(tiny_copy / "BraTS2021_00002", "BraTS2021_00002", "t2")
    os.utime(t2, ns=(t2.stat().st_atime_ns, t2.stat().st_mtime_ns + 10**9))
    with pytest.raises(BratsError, match=re.escape(f"stale slice cache {cache_dir}: source files changed")):
        SliceCache.open(cache_dir, "train", verify_source=True)
    build_slice_cache(tiny_copy, cache_dir)
    assert len(SliceCache.open(cache_dir, "train", verify_source=True)) == 100
    build_slice_cache(tiny_copy, cache_dir, SliceConfig(start=60, stop=70))
    assert len(SliceCache.open(cache_dir, "train", verify_source=True)) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brats", "cache"]  # no partial or old folder left


def test_slice_cache_refuses_foreign_folders_and_partial_caches(tiny: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "model.onnx").write_bytes(b"weights")
    with pytest.raises(BratsError, match=re.escape(f"{foreign} is not empty and not a slice cache")):
        build_slice_cache(tiny, foreign)
    with pytest.raises(BratsError, match=re.escape(f"{foreign} is not a slice cache")):
        SliceCache.open(foreign)
    cache_dir = build_slice_cache(tiny, tmp_path / "cache")
    (cache_dir / "test_labels.npy").unlink()
    with pytest.raises(BratsError, match="test_labels.npy"):
        SliceCache.open(cache_dir, "test")


def test_slice_cache_needs_deep_enough_volumes(tmp_path: Path) -> None:
    images, label = _case_arrays(0, (8, 8, 100))
    write_case(tmp_path / "src", "shallow", images, label, np.eye(4))
    with pytest.raises(BratsError, match="case shallow has 100 axial slices, fewer than stop=105"):
        build_slice_cache(tmp_path / "src", tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
