"""Paired fidelity as BraSyn scores it: SSIM and PSNR of a synthetic image against the real one, inside
the tumour and outside it.

The BraSyn challenge (BraTS 2023-2024, missing-modality synthesis) scores a synthesized volume against
the real one in its evaluation script: each image is clipped at its own 0.5 and 99.5 percentiles and
scaled to [0, 1] (``__percentile_clip``); then both images are multiplied by the tumour mask (label >
0) for the "tumour" scores and by its complement for the "non-tumour" scores, and SSIM (Gaussian
window 11, sigma 1.5, torchmetrics' defaults) and PSNR (data range 1) are taken over the whole masked
image. We do the same with scikit-image (:func:`skimage.metrics.structural_similarity` with Gaussian
weights, sigma 1.5, population covariance, data range 1, which is that window; and
:func:`skimage.metrics.peak_signal_noise_ratio`), with two differences that the 2D, standardized data
asks for:

* images are 2D slices (the paper's and ours), scored one by one and averaged over slices; the
  tumour scores only over the slices with at least ``MIN_REGION_PIXELS`` tumour pixels (a volume
  always has a tumour, a slice need not);
* BraSyn's ``strictlyPositive`` floors the lower clip at 0, the background of raw MRI; our images are
  standardized, the background is their minimum, and the 0.5 percentile is already that minimum
  whenever the background covers more than 0.5 % of the slice, so the floor is not needed.

PSNR is capped at :data:`PSNR_CAP` dB (identical images have an infinite PSNR). As the worker sets a
synthesized scan to 0 outside its brain (:mod:`worker.structure_source`), and BraSyn's submissions are
brain-masked, the synthetic image is set to its minimum outside the real slice's brain (Algorithm 2
without expansion) before it is scored: the background of a standardized slice is its minimum, which
the clipping maps to 0 in both images. Without it, DC's faint background texture alone costs much of
the SSIM outside the tumour. The masked-whole-image SSIM inside the tumour is dominated by the zeros
around a small tumour (BraSyn's definition); compare it between methods, not with the outside score.

The paired synthesis (issue 15's 15c) makes the synthetic image of a real test slice from its own
structure and its own label, as the worker places a tumour into an uploaded scan
(:mod:`worker.structure_source`): Algorithm 1 of T1 (:func:`mrisynth.structure.structural_feature_map`,
the artifacts' beta), the lesion removed with the slice's own label (Sec. 2.5,
:func:`mrisynth.structure.remove_lesion`), then the worker's
:func:`worker.structure_source.synthesize_from_structure` (fusion with that label, EC_r, DC per modality).
"""

from dataclasses import dataclass

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from models.evaluation.modalities import MIN_REGION_PIXELS
from mrisynth.conventions import MODALITIES
from mrisynth.structure import remove_lesion, structural_feature_map
from worker.sessions import Synthesizer
from worker.structure_source import synthesize_from_structure

CLIP_PERCENTILES: tuple[float, float] = (0.5, 99.5)
"""BraSyn's percentile clipping."""

PSNR_CAP = 100.0
"""Largest PSNR in dB (the value of two identical images)."""

SSIM_SIGMA = 1.5
"""Gaussian window of SSIM (11 pixels at scikit-image's truncation 3.5)."""

BATCH = 32
"""Slices per ONNX call."""


def percentile_clip(image: np.ndarray, percentiles: tuple[float, float] = CLIP_PERCENTILES) -> np.ndarray:
    """An image clipped at its own percentiles and scaled to [0, 1] (BraSyn's ``__percentile_clip``).

    Args:
        image: float (H, W).
        percentiles: (low, high) in [0, 100].

    Returns:
        float32 (H, W) in [0, 1]; zeros for a constant image.
    """
    low, high = np.percentile(image, percentiles)
    if high <= low:
        return np.zeros(image.shape, np.float32)
    return ((np.clip(image, low, high) - low) / (high - low)).astype(np.float32)


def masked_scores(real: np.ndarray, synthetic: np.ndarray, tumour: np.ndarray) -> tuple[float, ...]:
    """BraSyn's four scores of one slice: SSIM and PSNR inside and outside the tumour.

    Args:
        real: float (H, W), the real image.
        synthetic: float (H, W), the synthetic image of it.
        tumour: bool (H, W), label > 0.

    Returns:
        (SSIM inside, SSIM outside, PSNR inside, PSNR outside); the inside scores are NaN when the
        slice holds fewer than ``MIN_REGION_PIXELS`` tumour pixels.
    """
    if real.shape != synthetic.shape or real.shape != tumour.shape or real.ndim != 2:
        raise ValueError(f"need three (H, W) arrays, got {real.shape}, {synthetic.shape}, {tumour.shape}")
    a, b = percentile_clip(real), percentile_clip(synthetic)
    scores = []
    for mask in (tumour, ~tumour):
        if mask.sum() < MIN_REGION_PIXELS:
            scores.append((float("nan"), float("nan")))
            continue
        masked_a, masked_b = a * mask, b * mask
        ssim = structural_similarity(
            masked_a,
            masked_b,
            data_range=1.0,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
        )
        mse = float(np.mean((masked_a.astype(np.float64) - masked_b) ** 2))
        psnr = (
            PSNR_CAP
            if mse <= 10 ** (-PSNR_CAP / 10)
            else peak_signal_noise_ratio(masked_a, masked_b, data_range=1.0)
        )
        scores.append((float(ssim), float(psnr)))
    (ssim_in, psnr_in), (ssim_out, psnr_out) = scores
    return ssim_in, ssim_out, psnr_in, psnr_out


@dataclass(frozen=True)
class PairedScores:
    """BraSyn's scores of synthetic images against real ones, per image and modality.

    Attributes:
        ssim_tumour: float64 (N, M), NaN for slices without a tumour.
        ssim_healthy: float64 (N, M), outside the tumour.
        psnr_tumour: float64 (N, M) in dB, NaN likewise.
        psnr_healthy: float64 (N, M) in dB.
        modalities: the M modalities, in column order.
    """

    ssim_tumour: np.ndarray
    ssim_healthy: np.ndarray
    psnr_tumour: np.ndarray
    psnr_healthy: np.ndarray
    modalities: tuple[str, ...]

    def means(self) -> dict[str, dict[str, float]]:
        """``{modality: {score name: mean over images}}`` (NaN-skipping; NaN when no image counts)."""
        table: dict[str, dict[str, float]] = {}
        for j, modality in enumerate(self.modalities):
            table[modality] = {}
            for name in ("ssim_tumour", "ssim_healthy", "psnr_tumour", "psnr_healthy"):
                column = getattr(self, name)[:, j]
                finite = column[np.isfinite(column)]
                table[modality][name] = float(finite.mean()) if len(finite) else float("nan")
        return table


def background_to_minimum(synthetic: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """A (H, W) image with every pixel outside ``brain`` (bool (H, W)) set to the image's minimum."""
    return np.where(brain, synthetic, synthetic.min()).astype(np.float32)


def paired_scores(
    real: np.ndarray,
    synthetic: np.ndarray,
    labels: np.ndarray,
    modalities: tuple[str, ...],
    brain: np.ndarray | None = None,
) -> PairedScores:
    """:func:`masked_scores` of every image and modality.

    Args:
        real: float32 (N, M, H, W) real images.
        synthetic: float32 (N, M, H, W) their synthetic counterparts.
        labels: (N, H, W) label values; the tumour is label > 0.
        modalities: the M modality names.
        brain: optional (N, H, W) brain masks of the real slices, nonzero inside: the synthetic image is
            set to its minimum outside (module docstring).
    """
    if (
        real.shape != synthetic.shape
        or real.shape[1] != len(modalities)
        or labels.shape
        != (
            real.shape[0],
            *real.shape[2:],
        )
    ):
        raise ValueError(
            f"shapes differ: real {real.shape}, synthetic {synthetic.shape}, labels {labels.shape}"
        )
    if brain is not None:
        synthetic = np.stack(
            [
                [background_to_minimum(image, brain[k] > 0) for image in sample]
                for k, sample in enumerate(synthetic)
            ]
        )
    scores = np.array(
        [
            [masked_scores(real[k, j], synthetic[k, j], labels[k] > 0) for j in range(len(modalities))]
            for k in range(len(labels))
        ],
        dtype=np.float64,
    ).reshape(len(labels), len(modalities), 4)
    return PairedScores(scores[..., 0], scores[..., 1], scores[..., 2], scores[..., 3], tuple(modalities))


def paired_synthesis(
    synthesizer: Synthesizer, images: np.ndarray, labels: np.ndarray, structure_modality: str = "t1"
) -> np.ndarray:
    """Each real slice synthesized from its own structure map and its own label (module docstring).

    Args:
        synthesizer: the artifacts.
        images: float32 (N, 4, S, S) real slices, modalities in ``MODALITIES`` order.
        labels: uint8 (N, S, S) their labels.
        structure_modality: the modality whose Algorithm 1 map is f.

    Returns:
        float32 (N, 4, S, S), the four synthetic modalities of each slice.
    """
    beta = synthesizer.manifest.thresholds.beta
    structure = structural_feature_map(images[:, MODALITIES.index(structure_modality)], beta)
    f = remove_lesion(structure, labels).astype(np.float32)
    out = np.empty(images.shape, np.float32)
    for start in range(0, len(labels), BATCH):
        chunk = slice(start, start + BATCH)
        decoded = synthesize_from_structure(synthesizer, f[chunk], labels[chunk], MODALITIES)
        out[chunk] = np.stack([decoded[m] for m in MODALITIES], axis=1)
    return out
