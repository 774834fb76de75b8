"""Tumors: where they sit, how they push the brain aside, and their core, rim and edema.

A tumor is an irregular ball: a necrotic core (label 1) inside an enhancing rim (label 4), both
bounded by smooth-noise-perturbed radii, surrounded by edema (label 2) that spreads along white
matter. The edema is the set of voxels whose WM-weighted geodesic distance from the tumor is below
a threshold: travelling costs about 1 per mm in WM, 8 in GM and 50 in CSF, so the edema fingers out
along the WM and stops at the cortex and the ventricles. All fractions are soft (partial volume);
labels are their 0.5 level sets. Positions are BraTS-grid voxels, which are 1 mm.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

from mrisynth.phantom.anatomy import load_template
from mrisynth.phantom.deform import smooth_noise, upsample_linear

Z_RANGE = (55.0, 105.0)
"""Axial slices on which most tumor centres lie (the paper's slices 55-105)."""

Z_RANGE_PROBABILITY = 0.85
"""Probability that a centre is drawn from ``Z_RANGE``; otherwise from slices 30-130."""

MASS_EFFECT_WIDTH = 1.2
"""Width of the mass-effect push as a multiple of the tumor radius."""

EDGE_MM = 0.6
"""Width of the soft partial-volume edge of core and rim."""

EDEMA_STEP = 2
"""The edema distance is computed on every second voxel (2 mm) and upsampled."""

SHAPE_NOISE = 0.25
"""Relative amplitude (per noise standard deviation, clipped at 2) of the outer radius's lobes."""

CORE_NOISE = 0.15
"""Relative amplitude of the core radius's own lobes; with core_fraction <= 0.75 a rim remains."""

EDEMA_NOISE = 0.3
"""Relative amplitude of the lobes of the edema's reach."""


@dataclass(frozen=True)
class Tumor:
    """One lesion on the BraTS grid.

    Attributes:
        center: (x, y, z) voxel position of the centre.
        radius: outer radius of the enhancing rim before shape noise, mm.
        core_fraction: radius of the necrotic core relative to ``radius``, in [0.3, 0.75].
        edema_mm: WM-weighted geodesic reach of the edema beyond the tumor, mm.
        mass_effect: strength of the radial push in [0, 1); 0 means none.
    """

    center: tuple[float, float, float]
    radius: float
    core_fraction: float
    edema_mm: float
    mass_effect: float


@dataclass(frozen=True)
class TumorFractions:
    """Soft lesion fractions, each float32 (X, Y, Z) in [0, 1], zero outside the brain.

    Attributes:
        core: necrotic core.
        tumor: core plus enhancing rim (the rim is ``tumor - core``).
        edema: edema reach; it also covers the tumor, which takes precedence.
    """

    core: np.ndarray
    tumor: np.ndarray
    edema: np.ndarray


@functools.cache
def _placement_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Template-space maps for choosing centres: smoothed WM, distance to CSF, distance to outside."""
    template = load_template()
    wm_smooth = ndimage.gaussian_filter(template.wm, 2.0)
    csf_distance = ndimage.distance_transform_edt(template.csf < 0.5).astype(np.float32)
    surface_distance = ndimage.distance_transform_edt(template.mask > 0.5).astype(np.float32)
    for array in (wm_smooth, csf_distance, surface_distance):
        array.setflags(write=False)
    return wm_smooth, csf_distance, surface_distance


def _place(
    rng: np.random.Generator,
    radius: float,
    placed: list[Tumor],
    to_template: Callable[[np.ndarray], np.ndarray],
    grid_shape: tuple[int, int, int],
) -> tuple[float, float, float] | None:
    """A centre in deep white matter, off the ventricles, clear of the surface and of other tumors."""
    maps = _placement_maps()
    n = 256
    for _ in range(20):
        in_range = rng.random(n) < Z_RANGE_PROBABILITY
        axial = np.where(in_range, rng.uniform(*Z_RANGE, n), rng.uniform(30.0, 130.0, n))
        in_plane = rng.uniform(20.0, np.array(grid_shape[:2])[:, None] - 20.0, (2, n))
        points = np.vstack([in_plane, axial[None]]).astype(np.float32)
        where = to_template(points)
        wm, csf_distance, surface_distance = (
            ndimage.map_coordinates(m, where, order=1, mode="constant") for m in maps
        )
        ok = (wm >= 0.6) & (csf_distance >= 4.0) & (surface_distance >= radius + 4.0)
        for other in placed:
            gap = np.linalg.norm(points - np.array(other.center)[:, None], axis=0)
            ok &= gap >= radius + other.radius + 4.0
        if ok.any():
            x, y, z = (float(v) for v in points[:, np.argmax(ok)])
            return x, y, z
    return None


def sample_tumors(
    rng: np.random.Generator,
    to_template: Callable[[np.ndarray], np.ndarray],
    grid_shape: tuple[int, int, int],
) -> tuple[Tumor, ...]:
    """Draw 1-3 tumors: the first 12-25 mm in radius, the others 6-14 mm, with 2.5-7 mm thick rims.

    Args:
        rng: random generator.
        to_template: maps (3, N) grid points to template voxel indices for the healthy anatomy
            (before mass effect), used to put centres in deep white matter.
        grid_shape: (X, Y, Z) of the grid.

    Returns:
        The tumors, largest first.

    Raises:
        RuntimeError: if no valid centre is found even after shrinking a tumor to 5 mm.
    """
    tumors: list[Tumor] = []
    for index in range(int(rng.integers(1, 4))):
        radius = float(rng.uniform(12.0, 25.0) if index == 0 else rng.uniform(6.0, 14.0))
        center = _place(rng, radius, tumors, to_template, grid_shape)
        while center is None and radius > 5.0:
            radius *= 0.9
            center = _place(rng, radius, tumors, to_template, grid_shape)
        if center is None:
            raise RuntimeError("could not place a tumor in the white matter of this case")
        tumors.append(
            Tumor(
                center=center,
                radius=radius,
                core_fraction=float(np.clip(1.0 - rng.uniform(2.5, 7.0) / radius, 0.3, 0.75)),
                edema_mm=float(rng.uniform(6.0, 22.0)),
                mass_effect=float(rng.uniform(0.3, 0.55)),
            )
        )
    return tuple(tumors)


def mass_effect_pullback(points: np.ndarray, tumor: Tumor) -> np.ndarray:
    """Where the tissue now at ``points`` sat before the tumor pushed it outward.

    A point at distance r from the centre samples the healthy anatomy at distance
    ``r * (1 - a * exp(-r^2 / (2 s^2)))``, with a = ``tumor.mass_effect`` and s =
    ``MASS_EFFECT_WIDTH * tumor.radius``: tissue moves radially outward by up to ``0.6 a s`` mm, the
    push decays as a Gaussian with distance, and the map stays monotonic (no folding) for a < 1.

    Args:
        points: (3, ...) voxel positions on the grid.
        tumor: the tumor; ``mass_effect`` must lie in [0, 1).

    Returns:
        float32 array (3, ...) of source positions, never farther from the centre than ``points``.
    """
    if not 0.0 <= tumor.mass_effect < 1.0:
        raise ValueError(f"mass_effect must lie in [0, 1), got {tumor.mass_effect}")
    center = np.asarray(tumor.center, dtype=np.float32).reshape((3,) + (1,) * (np.ndim(points) - 1))
    offset = np.asarray(points, dtype=np.float32) - center
    sigma = MASS_EFFECT_WIDTH * tumor.radius
    shrink = 1.0 - tumor.mass_effect * np.exp(-(offset**2).sum(axis=0) / (2.0 * sigma**2))
    return (center + offset * shrink).astype(np.float32)


def _chamfer_footprints() -> list[tuple[np.ndarray, float]]:
    """3x3x3 neighbour footprints grouped by step length (1, sqrt 2, sqrt 3 voxels)."""
    offsets = np.indices((3, 3, 3)) - 1
    steps = np.abs(offsets).sum(axis=0)
    return [(steps == k, float(np.sqrt(k))) for k in (1, 2, 3)]


_CHAMFER = _chamfer_footprints()


def geodesic_distance(seed: np.ndarray, speed: np.ndarray, step_mm: float, reach_mm: float) -> np.ndarray:
    """Weighted chamfer distance from ``seed`` where crossing a voxel costs ``1 / speed`` per mm.

    Args:
        seed: (X, Y, Z) bool, where the distance is 0.
        speed: (X, Y, Z) positive propagation speed (1 = plain Euclidean mm).
        step_mm: voxel size in mm.
        reach_mm: distances up to this value are exact; larger ones may be overestimated.

    Returns:
        float32 (X, Y, Z) distance in mm, ``inf`` where not reached.
    """
    cost = (step_mm / np.maximum(speed, 1e-3)).astype(np.float32)
    distance = np.where(seed, 0.0, np.inf).astype(np.float32)
    iterations = int(np.ceil(reach_mm * float(speed.max(initial=1.0)) / step_mm)) + 2
    for _ in range(iterations):
        for footprint, length in _CHAMFER:
            nearest = ndimage.minimum_filter(distance, footprint=footprint, mode="constant", cval=np.inf)
            np.minimum(distance, nearest + length * cost, out=distance)
    return distance


def lesion_box(tumor: Tumor, grid_shape: tuple[int, int, int]) -> tuple[slice, ...]:
    """The part of the grid that a tumor's core, rim and edema can reach.

    Args:
        tumor: the tumor.
        grid_shape: (X, Y, Z) of the grid.

    Returns:
        Three slices, clipped to the grid.
    """
    half = (1 + 2 * SHAPE_NOISE) * tumor.radius + (1 + 2 * EDEMA_NOISE) * tumor.edema_mm + 4.0
    return tuple(
        slice(max(int(c - half), 0), min(int(c + half) + 2, n))
        for c, n in zip(tumor.center, grid_shape, strict=True)
    )


def _lesion(
    tumor: Tumor, wm: np.ndarray, gm: np.ndarray, brain: np.ndarray, rng: np.random.Generator
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Core, tumor and edema fractions of one tumor inside its ``lesion_box`` (box, 3 arrays)."""
    box = lesion_box(tumor, wm.shape)
    shape = tuple(s.stop - s.start for s in box)
    coarse_shape = tuple(-(-n // EDEMA_STEP) for n in shape)
    noise_sigma = 1.0 + tumor.radius / 8.0
    lobes, core_lobes, edema_lobes = (
        np.clip(upsample_linear(smooth_noise(rng, coarse_shape, noise_sigma), shape, EDEMA_STEP), -2, 2)
        for _ in range(3)
    )
    offsets = np.ogrid[box]
    r = np.sqrt(sum((o - c).astype(np.float32) ** 2 for o, c in zip(offsets, tumor.center, strict=True)))
    inside = brain[box].astype(np.float32)
    outer = tumor.radius * (1.0 + SHAPE_NOISE * lobes)
    tumor_frac = special.expit((outer - r) / EDGE_MM) * inside
    core_radius = outer * tumor.core_fraction * (1.0 + CORE_NOISE * core_lobes)
    core_frac = special.expit((core_radius - r) / EDGE_MM) * inside

    sub = (slice(None, None, EDEMA_STEP),) * 3
    seed = tumor_frac[sub] >= 0.5
    if not seed.any():
        start = np.array([s.start for s in box])
        centre = np.clip(np.rint((np.array(tumor.center) - start) / EDEMA_STEP), 0, np.array(seed.shape) - 1)
        seed[tuple(centre.astype(int))] = True
    speed = (0.02 + 0.9 * wm[box][sub] + 0.1 * gm[box][sub]) * inside[sub]
    reach = (1.0 + 2 * EDEMA_NOISE) * tumor.edema_mm
    distance = np.minimum(geodesic_distance(seed, speed, float(EDEMA_STEP), reach), 1e4)
    distance = upsample_linear(distance, shape, EDEMA_STEP)
    edema_frac = special.expit(tumor.edema_mm * (1.0 + EDEMA_NOISE * edema_lobes) - distance) * inside
    return box, core_frac, tumor_frac, edema_frac


def paint_tumors(
    tumors: tuple[Tumor, ...], wm: np.ndarray, gm: np.ndarray, brain: np.ndarray, rng: np.random.Generator
) -> TumorFractions:
    """Soft core, tumor and edema fractions of all tumors on the (already mass-effected) anatomy.

    Args:
        tumors: the tumors.
        wm: (X, Y, Z) float32 white-matter fraction.
        gm: (X, Y, Z) float32 grey-matter fraction.
        brain: (X, Y, Z) bool brain mask; fractions are zero outside it.
        rng: random generator for the shape noise.

    Returns:
        The fractions, overlapping tumors combined by their maximum.
    """
    fractions = TumorFractions(*(np.zeros(wm.shape, dtype=np.float32) for _ in range(3)))
    for tumor in tumors:
        box, *parts = _lesion(tumor, wm, gm, brain, rng)
        for total, part in zip((fractions.core, fractions.tumor, fractions.edema), parts, strict=True):
            np.maximum(total[box], part, out=total[box])
    return fractions


def labels(fractions: TumorFractions) -> np.ndarray:
    """BraTS labels from the fractions: 1 core, 4 enhancing rim, 2 edema, 0 elsewhere.

    Args:
        fractions: the soft fractions of ``paint_tumors``.

    Returns:
        uint8 (X, Y, Z) label volume with values in {0, 1, 2, 4}.
    """
    label = np.zeros(fractions.core.shape, dtype=np.uint8)
    label[fractions.edema >= 0.5] = 2
    label[fractions.tumor >= 0.5] = 4
    label[fractions.core >= 0.5] = 1
    return label
