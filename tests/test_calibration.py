"""The export's calibration of the lesion filter's default Dice on the real held-out slices."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from models.calibration import calibrate_dice, held_out_dice
from models.networks import LesionGuidance
from mrisynth.brats import SliceCache, SliceConfig, build_slice_cache
from mrisynth.conventions import LABELS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32


class KnownSegmentation(LesionGuidance):
    """Segmentors that answer the label given to them (its one-hot), or its lesion shifted by ``shift``."""

    def __init__(self, labels: np.ndarray, shift: int = 0) -> None:
        super().__init__("1SEG", ngf=2, dropout=0.0)
        self.labels, self.shift, self.start = labels, shift, 0

    def segment(self, x: Tensor, modality: int) -> Tensor:
        labels = torch.from_numpy(np.roll(self.labels[self.start : self.start + len(x)], self.shift, axis=-1))
        if modality == 3:
            self.start += len(x)
        return torch.stack([labels == value for value in LABELS], dim=1).float()


def test_a_segmentor_that_is_always_right_scores_one_per_slice() -> None:
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[:, 2:5, 2:5] = 2
    dice = held_out_dice(KnownSegmentation(labels), np.zeros((3, 4, 8, 8), np.float32), labels, batch=2)
    assert dice.shape == (3, 4) and np.all(dice == 1.0)


def test_a_shifted_lesion_scores_its_overlap() -> None:
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, 2:4, 2:6] = 1  # 8 pixels; shifted by 2 columns, 4 overlap: Dice 2 * 4 / 16 = 0.5
    dice = held_out_dice(KnownSegmentation(labels, shift=2), np.zeros((2, 4, 8, 8), np.float32), labels)
    assert dice == pytest.approx(np.full((2, 4), 0.5))


def test_calibration_on_a_run_cache(brats: Path, tmp_path: Path) -> None:
    config = SliceConfig(start=2, stop=10, test_fraction=0.4, seed=0)
    cache = build_slice_cache(brats, tmp_path / "cache", config)
    test = SliceCache.open(cache, "test")
    lesion_slices = sum(int(np.asarray(label).max() > 0) for label in test.labels)
    torch.manual_seed(0)
    calibration = calibrate_dice(LesionGuidance("4SEG", ngf=2, dropout=0.0).eval(), cache, SIZE)
    assert calibration is not None and calibration.slices == lesion_slices > 0
    quantiles = list(calibration.quantiles.values())
    assert quantiles == sorted(quantiles) and list(calibration.quantiles) == [
        "p10",
        "p25",
        "p50",
        "p75",
        "p90",
    ]
    assert calibration.dice == round(min(0.95, max(0.01, calibration.quantiles["p50"])), 3)
    assert set(calibration.per_modality_median) == {"t1", "t1ce", "t2", "flair"}


def test_no_cache_keeps_the_papers_threshold(tmp_path: Path) -> None:
    assert calibrate_dice(LesionGuidance("4SEG", ngf=2, dropout=0.0), tmp_path / "nothing", SIZE) is None
