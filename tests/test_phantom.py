"""Tests of the BraTS-like phantom built from the MNI152 template (mrisynth.phantom)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrisynth.conventions import BRATS_SHAPE, LABELS, MODALITIES
from mrisynth.phantom import PhantomCase, Tumor, case_seed, generate_case, write_dataset
from mrisynth.phantom.anatomy import load_template
from mrisynth.phantom.deform import apply_affine
from mrisynth.phantom.tumor import (
    Z_RANGE,
    geodesic_distance,
    lesion_box,
    mass_effect_pullback,
    sample_tumors,
)

SEED = 7
FILES = (*MODALITIES, "seg")


@pytest.fixture(scope="module")
def case() -> PhantomCase:
    """Case 0 of the dataset seeded with SEED, in memory."""
    return generate_case(case_seed(SEED, 0))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The dataset of SEED written twice, independently: with 1 case and with 2 cases."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    assert write_dataset(one, 1, SEED) == [one / "BraTS2021_00000"]
    assert write_dataset(two, 2, SEED) == [two / "BraTS2021_00000", two / "BraTS2021_00001"]
    return one, two


def _load(path: Path) -> nib.Nifti1Image:
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image)
    return image


def _median(image: np.ndarray, mask: np.ndarray) -> float:
    assert mask.sum() > 200, "too few voxels to measure a contrast"
    return float(np.median(image[mask]))


def test_case_shapes_dtypes_and_labels(case: PhantomCase) -> None:
    assert set(case.images) == set(MODALITIES)
    for image in case.images.values():
        assert image.shape == BRATS_SHAPE and image.dtype == np.float32
        assert np.isfinite(image).all() and image.min() >= 0.0
    assert case.label.shape == BRATS_SHAPE and case.label.dtype == np.uint8
    assert set(np.unique(case.label)) <= set(LABELS)
    assert np.allclose(np.abs(np.diag(case.affine)), 1.0) and np.count_nonzero(case.affine[:3, :3]) == 3
    assert 1 <= len(case.tumors) <= 3


def test_first_tumor_has_core_rim_and_edema(case: PhantomCase) -> None:
    tumor = case.tumors[0]
    box = lesion_box(tumor, BRATS_SHAPE)
    assert set(np.unique(case.label[box])) == {0, 1, 2, 4}
    covered = np.zeros(BRATS_SHAPE, dtype=bool)
    for other in case.tumors:
        covered[lesion_box(other, BRATS_SHAPE)] = True
    assert not case.label[~covered].any()
    assert case.label[tuple(int(round(c)) for c in tumor.center)] == 1


def test_skull_stripped_background_is_exactly_zero(case: PhantomCase) -> None:
    outside = ~case.brain
    for name, image in case.images.items():
        assert not image[outside].any(), name
        assert (image[case.brain] > 0).mean() > 0.99, name
    assert not case.label[outside].any()
    total = case.tissue["gm"] + case.tissue["wm"] + case.tissue["csf"]
    assert np.allclose(total[case.brain], 1.0, atol=1e-4)
    assert not total[outside].any()


def test_brain_is_centred_and_slices_55_to_105_hold_the_ventricles(case: PhantomCase) -> None:
    index = np.argwhere(case.brain)
    world = apply_affine(case.affine, index.T.astype(np.float32))
    # Undeformed, the brain's bounding-box centre sits at MNI (0, -17, 5); the random affine moves it
    # by at most about 8 mm plus the effect of a 10 % scale.
    centre = (world.min(axis=1) + world.max(axis=1)) / 2
    assert np.all(np.abs(centre - [0.0, -17.0, 5.0]) < 20.0)
    area = case.brain.sum(axis=(0, 1))
    assert area[55:106].min() > 0.5 * area.max()
    ventricles = (case.tissue["csf"] > 0.9)[90:150, 70:170].sum(axis=(0, 1))
    assert 55 <= int(np.argmax(ventricles)) <= 105
    # RAS-like world: the cerebellum (low slices) lies posterior to the brain's centre.
    low = world[:, index[:, 2] < 35]
    assert low[1].mean() < world[1].mean() - 5.0


def test_contrasts(case: PhantomCase) -> None:
    healthy = case.brain & (case.label == 0)
    wm, gm, csf = (healthy & (case.tissue[name] > 0.9) for name in ("wm", "gm", "csf"))
    t1, t1ce, t2, flair = (case.images[m] for m in MODALITIES)
    assert _median(t2, csf) > _median(t2, gm) > _median(t2, wm)
    assert _median(flair, csf) < _median(flair, gm) and _median(flair, gm) > _median(flair, wm)
    assert _median(t1, wm) > _median(t1, gm) > _median(t1, csf)

    core, edema, rim = (case.label == value for value in (1, 2, 4))
    assert _median(t1ce, rim) / _median(t1ce, wm) > 1.3 * _median(t1, rim) / _median(t1, wm)
    assert _median(t1ce, rim) > _median(t1ce, wm)
    assert _median(t2, edema) > _median(t2, wm) and _median(flair, edema) > _median(flair, wm)
    assert _median(t1, edema) < _median(t1, wm)
    assert _median(t1, core) < _median(t1, wm) and _median(t1ce, core) < _median(t1ce, wm)
    assert _median(t2, core) > _median(t2, wm)


def test_edema_prefers_white_matter(case: PhantomCase) -> None:
    tumor = case.tumors[0]
    reach = tumor.radius * 1.5 + tumor.edema_mm
    grid = np.ogrid[tuple(slice(0, n) for n in BRATS_SHAPE)]
    near = sum((g - c) ** 2 for g, c in zip(grid, tumor.center, strict=True)) < reach**2
    surroundings = near & case.brain & (case.label != 1) & (case.label != 4)
    edema = near & (case.label == 2)
    assert case.tissue["wm"][edema].mean() > case.tissue["wm"][surroundings].mean() + 0.1


def test_same_seed_gives_same_bytes_whatever_the_number_of_cases(datasets: tuple[Path, Path]) -> None:
    one, two = datasets
    for name in FILES:
        path = Path("BraTS2021_00000") / f"BraTS2021_00000_{name}.nii.gz"
        assert (one / path).read_bytes() == (two / path).read_bytes(), name
    assert sorted(p.name for p in one.iterdir()) == ["BraTS2021_00000"]
    assert sorted(p.name for p in two.iterdir()) == ["BraTS2021_00000", "BraTS2021_00001"]


def test_written_case_is_the_generated_case(datasets: tuple[Path, Path], case: PhantomCase) -> None:
    for name in FILES:
        image = _load(datasets[0] / "BraTS2021_00000" / f"BraTS2021_00000_{name}.nii.gz")
        expected = case.label if name == "seg" else case.images[name]
        assert image.get_data_dtype() == expected.dtype
        assert np.array_equal(np.asanyarray(image.dataobj), expected), name
        assert np.array_equal(image.affine, case.affine)
        assert image.header.get_zooms() == (1.0, 1.0, 1.0)


def test_different_seed_gives_different_tumors(datasets: tuple[Path, Path], case: PhantomCase) -> None:
    assert case_seed(SEED, 1) != case_seed(SEED, 0) != case_seed(SEED + 1, 0)
    other = _load(datasets[1] / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz")
    other_label = np.asanyarray(other.dataobj)
    tumor_voxels = (case.label > 0) | (other_label > 0)
    assert (case.label != other_label)[tumor_voxels].mean() > 0.5


def test_existing_case_is_not_overwritten(datasets: tuple[Path, Path]) -> None:
    with pytest.raises(FileExistsError, match="BraTS2021_00000"):
        write_dataset(datasets[0], 1, SEED)


@pytest.mark.parametrize(("cases", "seed"), [(0, 1), (-2, 1), (1, -1)])
def test_bad_arguments_raise(tmp_path: Path, cases: int, seed: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        write_dataset(tmp_path, cases, seed)
    assert not any(tmp_path.iterdir())


def test_negative_case_seed_raises() -> None:
    with pytest.raises(ValueError, match="seed must be >= 0"):
        generate_case(-1)


def test_mass_effect_pushes_tissue_outward() -> None:
    tumor = Tumor(center=(100.0, 110.0, 80.0), radius=15.0, core_fraction=0.5, edema_mm=10.0, mass_effect=0.5)
    directions = np.random.default_rng(0).normal(size=(3, 50))
    directions /= np.linalg.norm(directions, axis=0)
    radii = np.linspace(0.5, 120.0, 200)
    points = np.array(tumor.center)[:, None, None] + directions[:, :, None] * radii
    source = mass_effect_pullback(points, tumor)
    offset = source - np.array(tumor.center)[:, None, None]
    source_radius = np.linalg.norm(offset, axis=0)
    # Tissue seen at radius r came from closer in (so it moved outward), along the same ray,
    assert np.all(source_radius <= radii + 1e-4) and np.all(
        source_radius[:, radii < 60.0] < radii[radii < 60.0]
    )
    np.testing.assert_allclose(
        offset / source_radius, directions[:, :, None] * np.ones_like(radii), atol=1e-4
    )
    # without folding, by several mm next to the tumor and by almost nothing far from it.
    assert np.all(np.diff(source_radius, axis=1) > 0)
    push = radii - source_radius
    assert push[:, np.abs(radii - 18.0).argmin()].min() > 4.0
    assert push[:, radii > 100.0].max() < 0.01


def test_mass_effect_displaces_the_anatomy_around_the_tumor_only(case: PhantomCase) -> None:
    flat = generate_case(case_seed(SEED, 0), mass_effect=False)
    assert [t.center for t in flat.tumors] == [t.center for t in case.tumors]
    assert all(t.mass_effect == 0.0 for t in flat.tumors)
    grid = np.ogrid[tuple(slice(0, n) for n in BRATS_SHAPE)]
    distance = np.full(BRATS_SHAPE, np.inf, dtype=np.float32)
    for tumor in case.tumors:
        d = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, tumor.center, strict=True)) / tumor.radius**2)
        distance = np.minimum(distance, d)
    change = np.abs(case.tissue["wm"] - flat.tissue["wm"])
    assert change[(distance > 1.0) & (distance < 2.0) & case.brain].mean() > 0.05
    assert change[(distance > 6.0) & case.brain].max() < 1e-3


def test_tumor_centres_lie_in_white_matter_mostly_on_slices_55_to_105() -> None:
    template = load_template()

    def to_template(points: np.ndarray) -> np.ndarray:
        return apply_affine(template.grid_to_template, points)

    draws = [sample_tumors(np.random.default_rng(s), to_template, BRATS_SHAPE) for s in range(40)]
    centres = np.array([t.center for tumors in draws for t in tumors]).T
    wm = template.wm[tuple(np.rint(to_template(centres)).astype(int))]
    assert np.median(wm) > 0.8 and wm.min() > 0.3
    assert np.mean((centres[2] >= Z_RANGE[0]) & (centres[2] <= Z_RANGE[1])) > 0.7
    assert {len(tumors) for tumors in draws} == {1, 2, 3}


def test_geodesic_distance_is_shorter_along_fast_tissue() -> None:
    speed = np.full((41, 41, 5), 0.1, dtype=np.float32)
    speed[:, 18:23, :] = 1.0  # a fast strip along x
    seed = np.zeros(speed.shape, dtype=bool)
    seed[20, 20, 2] = True
    distance = geodesic_distance(seed, speed, step_mm=1.0, reach_mm=200.0)
    assert distance[35, 20, 2] == pytest.approx(15.0)  # 15 fast steps
    assert distance[20, 35, 2] == pytest.approx(2.0 + 13 * 10.0)  # 2 fast steps, then 13 slow ones
    assert np.isfinite(distance).all()
