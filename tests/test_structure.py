"""Algorithms 1-3 (paper Sec. 2.2, 2.3, 2.5, 2.8) on real-anatomy phantom slices."""

import cv2
import numpy as np
import pytest

from mrisynth.conventions import MODALITIES, standardize
from mrisynth.phantom import generate_case
from mrisynth.structure import (
    DEFAULT_MAE_THRESHOLD,
    accept_structure,
    brain_mask,
    contour_mask,
    remove_lesion,
    structural_feature_map,
    structure_mae,
)

AXIAL = range(55, 105, 10)


@pytest.fixture(scope="module")
def slices() -> dict[str, np.ndarray]:
    """Standardized axial slices (5, 240, 240) of every modality, plus the label under "seg"."""
    case = generate_case(seed=11)
    stacks = {m: np.stack([standardize(case.images[m][:, :, z]) for z in AXIAL]) for m in MODALITIES}
    stacks["seg"] = np.stack([case.label[:, :, z] for z in AXIAL])
    return stacks


def _gradient(image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float64)
    return np.hypot(cv2.Sobel(x, cv2.CV_64F, 1, 0), cv2.Sobel(x, cv2.CV_64F, 0, 1))


def _cut_open(feature_map: np.ndarray, brain: np.ndarray, width: int = 8) -> np.ndarray:
    """Erase a band from the image border to the brain's center, opening every contour it crosses."""
    rows, cols = np.nonzero(brain)
    center_row, center_col = int(rows.mean()), int(cols.mean())
    cut = feature_map.copy()
    cut[:center_row, center_col - width // 2 : center_col + width // 2] = 0.0
    return cut


def test_feature_map_is_binary_and_sparse(slices):
    for modality in MODALITIES:
        f = structural_feature_map(slices[modality])
        assert f.dtype == np.float32 and f.shape == slices[modality].shape
        assert set(np.unique(f)) == {0.0, 1.0}
        assert 0.005 < f.mean() < 0.3


def test_feature_map_is_zero_outside_the_brain(slices):
    for modality in MODALITIES:
        images = slices[modality]
        brain = brain_mask(images, expansion=0).astype(np.uint8)
        within_sobel_reach = np.stack([cv2.dilate(b, np.ones((3, 3), np.uint8)) for b in brain])
        f = structural_feature_map(images)
        assert f[within_sobel_reach == 0].sum() == 0


def test_feature_map_lies_on_intensity_edges(slices):
    for modality in MODALITIES:
        for image, f in zip(slices[modality], structural_feature_map(slices[modality]), strict=True):
            gradient = _gradient(image)
            inside = brain_mask(image, expansion=0) > 0
            on_map, off_map = gradient[f > 0], gradient[inside & (f == 0)]
            assert np.median(on_map) > 3.0 * np.median(off_map)
            assert np.percentile(on_map, 5) > 0.0


def test_feature_map_marks_a_step_edge_exactly():
    step = np.zeros((32, 32), np.float32)
    step[:, 16:] = 1.0
    f = structural_feature_map(step)
    assert np.array_equal(np.nonzero(f.any(axis=0))[0], [15, 16])
    assert f[:, 15:17].all()


def test_feature_map_is_invariant_to_intensity_rescale(slices):
    for modality in MODALITIES:
        images = slices[modality]
        f = structural_feature_map(images)
        assert np.array_equal(f, structural_feature_map(3.7 * images - 12.0))
        assert np.array_equal(f, structural_feature_map(images * 1000.0))


def test_beta_trades_edges_for_sparsity(slices):
    image = slices["t2"][2]
    assert structural_feature_map(image, beta=0.06).sum() > structural_feature_map(image, beta=0.2).sum()
    with pytest.raises(ValueError, match="beta"):
        structural_feature_map(image, beta=1.5)


def test_brain_mask_covers_the_brain_and_grows_with_p(slices):
    for modality in MODALITIES:
        images = slices[modality]
        brain = images > images.min(axis=(1, 2), keepdims=True)
        areas = []
        for p in (0, 5, 10, 20):
            mask = brain_mask(images, expansion=p)
            assert set(np.unique(mask)) <= {0.0, 1.0}
            covered = mask[brain].mean()
            assert covered == 1.0 if p == 0 else covered > 0.995
            areas.append(mask.sum(axis=(1, 2)))
        assert np.all(np.diff(np.stack(areas), axis=0) > 0)


def test_brain_mask_rejects_negative_expansion(slices):
    with pytest.raises(ValueError, match="expansion"):
        brain_mask(slices["t1"], expansion=-1)


def test_remove_lesion_erases_the_lesion_structure(slices):
    f = structural_feature_map(slices["flair"])
    label = slices["seg"]
    cleaned = remove_lesion(f, label)
    assert label.any(), "the phantom case should have a tumor on these slices"
    assert cleaned[label > 0].sum() == 0
    assert np.array_equal(cleaned[label == 0], f[label == 0])


def test_algorithm3_accepts_closed_and_rejects_cut_open_contours(slices):
    for modality in MODALITIES:
        images = slices[modality]
        f = structural_feature_map(images)
        masks = brain_mask(images)
        assert accept_structure(f, masks).all(), structure_mae(f, masks)
        cut = np.stack([_cut_open(fi, mi) for fi, mi in zip(f, masks, strict=True)])
        assert not accept_structure(cut, masks).any(), structure_mae(cut, masks)
        assert (structure_mae(cut, masks) > 4 * DEFAULT_MAE_THRESHOLD).all()


def test_contour_mask_fills_a_closed_ring_and_not_an_open_one():
    ring = np.zeros((64, 64), np.float32)
    cv2.circle(ring, (32, 32), 20, 1.0, thickness=1)
    disk = np.zeros((64, 64), np.float32)
    cv2.circle(disk, (32, 32), 21, 1.0, thickness=-1)  # the blur widens the line by about a pixel
    assert np.abs(contour_mask(ring) - disk).mean() < 0.02
    opened = ring.copy()
    opened[:32, 28:36] = 0.0
    assert contour_mask(opened).sum() < 0.3 * disk.sum()
