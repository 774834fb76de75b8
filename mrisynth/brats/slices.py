"""2D axial slices of BraTS cases as the paper uses them (Sec. 3.1): which slices, standardized, split how.

The paper keeps axial slices 55-105 of every 3D case (50 per case: ``range(55, 105)``), standardizes each
2D image and splits the subjects 9:1 into training and test sets. `mrisynth.brats.cache` stores the result.
"""

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from mrisynth.brats.errors import BratsError
from mrisynth.brats.read import CaseVolume
from mrisynth.conventions import MODALITIES, standardize


@dataclass(frozen=True)
class SliceConfig:
    """Which slices to keep and how to split the subjects.

    Attributes:
        start: first axial slice kept (default 55, paper Sec. 3.1).
        stop: slice after the last one kept (default 105: 50 slices, ``range(start, stop)``).
        test_fraction: share of the subjects in the test split, in [0, 1) (default 0.1: the paper's 9:1).
        seed: seed of the split; the same case ids and seed always give the same split.
    """

    start: int = 55
    stop: int = 105
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise ValueError(f"need 0 <= start < stop, got start={self.start}, stop={self.stop}")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")

    @property
    def slices(self) -> range:
        """The axial slice indices kept, e.g. ``range(55, 105)``."""
        return range(self.start, self.stop)


def split_cases(
    case_ids: list[str], test_fraction: float = 0.1, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split subjects (never slices) into training and test sets.

    Each case id is ranked by a SHA-256 hash of ``seed`` and the id, and the lowest-ranked go to test: the
    split depends only on the set of ids and the seed (not their order, nor the numpy version).

    Args:
        case_ids: distinct case ids.
        test_fraction: share of the cases in the test set, in [0, 1); rounded to the nearest count, at
            least 1 when there are 2 cases or more and ``test_fraction > 0``, and never all of them.
        seed: the split's seed.

    Returns:
        (train ids, test ids), each sorted.

    Raises:
        ValueError: duplicate ids or ``test_fraction`` outside [0, 1).
    """
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids must be distinct")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n_test = round(len(case_ids) * test_fraction)
    if test_fraction > 0 and len(case_ids) >= 2:
        n_test = min(max(n_test, 1), len(case_ids) - 1)
    ranked = sorted(case_ids, key=lambda case_id: hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest())
    return sorted(ranked[n_test:]), sorted(ranked[:n_test])


def case_slices(volume: CaseVolume, config: SliceConfig) -> tuple[np.ndarray, np.ndarray]:
    """One labeled case's kept slices, standardized.

    Args:
        volume: a case with its label, images (X, Y, Z).
        config: which slices to keep.

    Returns:
        float32 (S, 4, X, Y) images in `MODALITIES` order, each (X, Y) image standardized, and uint8
        (S, X, Y) labels, S = ``len(config.slices)``.

    Raises:
        BratsError: the case has no label or fewer than ``config.stop`` slices.
    """
    if volume.label is None:
        raise BratsError(f"case {volume.case_id} has no label; slices need labeled cases")
    depth = volume.label.shape[2]
    if depth < config.stop:
        raise BratsError(f"case {volume.case_id} has {depth} axial slices, fewer than stop={config.stop}")
    images = np.stack(
        [np.stack([standardize(volume.images[m][:, :, z]) for m in MODALITIES]) for z in config.slices]
    )
    labels = np.ascontiguousarray(np.moveaxis(volume.label[:, :, config.start : config.stop], 2, 0))
    return images, labels


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """One standardized slice (H, W) -> (size, size), INTER_AREA, background kept exact, re-standardized."""
    if image.shape == (size, size):
        return image.astype(np.float32)
    background = image.min()
    resized = cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    is_background = (image == background).astype(np.float32)
    wholly_background = cv2.resize(is_background, (size, size), interpolation=cv2.INTER_AREA) > 1.0 - 1e-4
    resized[wholly_background] = background
    return standardize(resized)


def resize_label(label: np.ndarray, size: int) -> np.ndarray:
    """One label slice (H, W) -> uint8 (size, size), INTER_NEAREST."""
    if label.shape == (size, size):
        return label.astype(np.uint8)
    return cv2.resize(label.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
