"""The committed demo artifacts draw four modalities that differ as real ones do (issue 12).

Unfiltered samples of the worker pipeline on ``artifacts/demo`` against the phantom's held-out case
(case 6 of seed 0, the test split of the committed training run): the modalities of a sample must not
be one image (mean MS-SSIM between them <= 0.9; the collapsed demo scored 0.999, real slices about
0.5), and wherever the real lesion contrast of a region has a clear sign, the synthetic one must have it.
T1ce is a strict expected failure: its core and edema have the wrong sign (issue 12 stays open on it);
the day a retrained demo gets them right, the XPASS fails the suite so that the mark is removed.
"""

import numpy as np
import pytest

from models.evaluation.modalities import REGIONS, contrast_table
from models.evaluation.realism import between_modalities_ms_ssim
from mrisynth.conventions import MODALITIES
from mrisynth.phantom import case_seed, generate_case
from mrisynth.settings import DEMO_ARTIFACTS
from worker.pipeline import synthesize
from worker.request import RequestThresholds, SynthesisRequest
from worker.sessions import Synthesizer

SAMPLES = 24
CLEAR = 0.25
"""Real contrasts within +-CLEAR healthy-brain standard deviations have no sign to keep."""


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, 4, H, W), labels, MG brain masks) of unfiltered samples, seed 0."""
    request = SynthesisRequest(thresholds=RequestThresholds(dice=0.0))
    samples = synthesize(Synthesizer.load(DEMO_ARTIFACTS), request, 0, SAMPLES).samples
    images = np.stack([np.stack([s.images[m] for m in MODALITIES]) for s in samples])
    return images, np.stack([s.label for s in samples]), np.stack([s.brain_mask for s in samples])


@pytest.fixture(scope="module")
def real() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The held-out phantom case's axial slices 55-104 with a lesion: (images, labels, brain masks)."""
    case = generate_case(case_seed(0, 6))
    kept = [z for z in range(55, 105) if case.label[:, :, z].any()]
    images = np.stack([np.stack([case.images[m][:, :, z] for m in MODALITIES]) for z in kept])
    labels = np.stack([case.label[:, :, z] for z in kept])
    return images.astype(np.float32), labels, np.stack([case.brain[:, :, z] for z in kept])


def test_the_modalities_of_a_sample_are_not_one_image(synthetic: tuple[np.ndarray, ...]) -> None:
    assert between_modalities_ms_ssim(synthetic[0]) <= 0.9


@pytest.mark.parametrize(
    "modality",
    [
        "t1",
        pytest.param(
            "t1ce",
            marks=pytest.mark.xfail(
                strict=True,
                reason="issue 12, measured: the demo draws the T1ce necrotic core and edema bright "
                "(+0.5 to +0.9 healthy-brain sd) where the phantom's are dark; the enhancing rim is right",
            ),
        ),
        "t2",
        "flair",
    ],
)
def test_lesion_contrast_has_the_real_sign(
    modality: str, synthetic: tuple[np.ndarray, ...], real: tuple[np.ndarray, ...]
) -> None:
    real_table, synthetic_table = contrast_table(*real)[modality], contrast_table(*synthetic)[modality]
    wrong = [
        f"{REGIONS[value]}: real {real_table[value]:+.2f}, synthetic {synthetic_table[value]:+.2f}"
        for value in REGIONS
        if abs(real_table[value]) > CLEAR and np.sign(real_table[value]) != np.sign(synthetic_table[value])
    ]
    assert wrong == []
