"""MR contrasts from tissue and lesion fractions: T1, T1ce, T2 and FLAIR with bias field and noise.

Every voxel is a partial-volume mix. Its healthy part (``1 - tumor``) is grey matter, white matter
and CSF, of which a fraction ``edema`` is replaced by edema; the tumor part is necrotic core and
enhancing rim. T1 and T1ce use the real template T1 for the healthy tissue; T2 and FLAIR mix the
tissue intensities below and add the template T1's texture back with the sign and size of their own
WM-GM contrast. Each modality then gets a smooth multiplicative bias field and Rician noise and is
rounded to integers like a scanner's magnitude image (stored as float32; this also halves the size
of the gzipped volumes). Intensities are on a raw-MRI-like scale: WM about 300-600, at most ~1300.
"""

from dataclasses import dataclass

import numpy as np

from mrisynth.conventions import MODALITIES
from mrisynth.phantom.deform import coarse_nodes, sample_coarse, smooth_noise

T1_SCALE = 700.0
"""Intensity of template T1 value 1 on T1 and T1ce (template WM ~0.86 -> ~600, CSF ~0.3 -> ~210)."""

TISSUE_INTENSITY: dict[str, dict[str, float]] = {
    "t2": {"wm": 300.0, "gm": 450.0, "csf": 900.0},
    "flair": {"wm": 330.0, "gm": 450.0, "csf": 80.0},
}
"""Healthy tissue intensities of the simulated modalities: T2 CSF > GM > WM, FLAIR GM > WM > CSF."""

LESION_INTENSITY: dict[str, dict[str, float]] = {
    "t1": {"edema": 380.0, "core": 250.0, "rim": 430.0},
    "t1ce": {"edema": 390.0, "core": 260.0, "rim": 1050.0},
    "t2": {"edema": 720.0, "core": 880.0, "rim": 560.0},
    "flair": {"edema": 760.0, "core": 450.0, "rim": 620.0},
}
"""Lesion intensities: edema dark-ish on T1, bright on T2/FLAIR; core dark on T1/T1ce, bright on T2;
rim bright on T1ce. The FLAIR core is redrawn per case from ``FLAIR_CORE_RANGE``."""

FLAIR_CORE_RANGE = (200.0, 700.0)
"""The necrotic core is variable on FLAIR: anything from CSF-like to edema-like."""

TEXTURE_GAIN = 0.7
"""Template texture added to T2/FLAIR, relative to their WM-GM contrast over the template's."""

BIAS_STRIDE = 8
"""Node spacing (voxels) of the coarse grid on which the bias field is drawn."""


@dataclass(frozen=True)
class Voxels:
    """What is known about the N brain voxels of a case; every array is float32 (N,).

    Attributes:
        positions: (3, N) voxel indices on the grid (for the bias field).
        t1: template T1 in [0, 1].
        texture: template T1 high-pass.
        gm: grey-matter fraction of the healthy tissue.
        wm: white-matter fraction of the healthy tissue.
        csf: CSF fraction of the healthy tissue (gm + wm + csf = 1).
        core: necrotic-core fraction.
        tumor: core plus enhancing-rim fraction (>= core).
        edema: edema fraction of the healthy part.
    """

    positions: np.ndarray
    t1: np.ndarray
    texture: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    core: np.ndarray
    tumor: np.ndarray
    edema: np.ndarray


def _jitter(table: dict[str, float], rng: np.random.Generator, spread: float = 0.05) -> dict[str, float]:
    """Each intensity times an independent factor uniform in 1 +- spread."""
    return {name: value * float(rng.uniform(1.0 - spread, 1.0 + spread)) for name, value in table.items()}


def clean_intensities(voxels: Voxels, t1_wm_gm: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Noise-free intensities of every modality.

    Args:
        voxels: the brain voxels.
        t1_wm_gm: the template's WM-GM T1 difference, which sizes the texture on T2 and FLAIR.
        rng: random generator for the per-case intensity jitter and the FLAIR core.

    Returns:
        float32 (N,) arrays keyed by ``MODALITIES``.
    """
    healthy_fraction = 1.0 - voxels.tumor
    rim = np.clip(voxels.tumor - voxels.core, 0.0, 1.0)
    out = {}
    for modality in MODALITIES:
        lesion = _jitter(LESION_INTENSITY[modality], rng)
        if modality == "flair":
            lesion["core"] = float(rng.uniform(*FLAIR_CORE_RANGE))
        if modality in TISSUE_INTENSITY:
            tissue = _jitter(TISSUE_INTENSITY[modality], rng)
            gain = TEXTURE_GAIN * (tissue["wm"] - tissue["gm"]) / t1_wm_gm
            healthy = (
                tissue["gm"] * voxels.gm
                + tissue["wm"] * voxels.wm
                + tissue["csf"] * voxels.csf
                + gain * voxels.texture
            )
        else:
            healthy = T1_SCALE * float(rng.uniform(0.95, 1.05)) * voxels.t1
        healthy = (1.0 - voxels.edema) * healthy + voxels.edema * lesion["edema"]
        image = healthy_fraction * healthy + voxels.core * lesion["core"] + rim * lesion["rim"]
        out[modality] = np.maximum(image, 0.0).astype(np.float32)
    return out


def bias_field(
    positions: np.ndarray, grid_shape: tuple[int, int, int], strength: float, rng: np.random.Generator
) -> np.ndarray:
    """Smooth multiplicative bias ``exp(strength * s)`` with s a unit-std field of ~5 cm wavelength.

    Args:
        positions: (3, N) voxel positions.
        grid_shape: (X, Y, Z) grid the field covers.
        strength: standard deviation of the log-bias, e.g. 0.1 for about +-20 %.
        rng: random generator.

    Returns:
        float32 (N,) factors.
    """
    node_shape = coarse_nodes(grid_shape, BIAS_STRIDE).shape[1:]
    log_bias = smooth_noise(rng, node_shape, sigma=3.0)[None] * strength
    return np.exp(sample_coarse(log_bias, positions, BIAS_STRIDE)[0])


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma`` per channel.

    Args:
        image: float32 array, the true magnitude.
        sigma: noise level (> 0) in intensity units.
        rng: random generator.

    Returns:
        float32 array like ``image``.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.hypot(real, imaginary)


def simulate(
    voxels: Voxels, t1_wm_gm: float, grid_shape: tuple[int, int, int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """All four modalities at the brain voxels: clean intensities, then bias field, then Rician noise.

    Args:
        voxels: the brain voxels.
        t1_wm_gm: the template's WM-GM T1 difference.
        grid_shape: (X, Y, Z) of the grid.
        rng: random generator.

    Returns:
        float32 (N,) integer-valued arrays keyed by ``MODALITIES``; the noise level is 1.5-3 % of
        the median intensity.
    """
    images = clean_intensities(voxels, t1_wm_gm, rng)
    for modality, image in images.items():
        biased = image * bias_field(voxels.positions, grid_shape, float(rng.uniform(0.04, 0.1)), rng)
        sigma = float(rng.uniform(0.015, 0.03)) * float(np.median(biased))
        images[modality] = np.rint(rician(biased, sigma, rng))
    return images
