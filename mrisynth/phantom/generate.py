"""One phantom case: deform the real anatomy, grow tumors, simulate the four modalities.

The steps follow the order in which the case is built:

1. A random affine and a smooth elastic field move the MNI152 template onto the BraTS grid.
2. 1-3 tumor centres are drawn in the deep white matter of that healthy anatomy.
3. Each tumor pushes the tissue around it outward (mass effect); all three maps are composed into
   one coordinate map on a coarse grid, upsampled once, and every template volume is sampled through
   it, so T1 and the tissue maps stay registered.
4. Core, enhancing rim and WM-guided edema are painted on the pushed anatomy.
5. T1, T1ce, T2 and FLAIR are simulated at the brain voxels; the background stays exactly 0.

The random streams of the deformation, the tumors and the contrasts are independent children of
the case seed, so switching the mass effect off changes nothing else.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from mrisynth.conventions import BRATS_SHAPE
from mrisynth.phantom.anatomy import GRID_AFFINE, load_template
from mrisynth.phantom.contrast import Voxels, simulate
from mrisynth.phantom.deform import (
    apply_affine,
    coarse_nodes,
    sample_affine,
    sample_coarse,
    sample_elastic,
    upsample_linear,
    warp,
)
from mrisynth.phantom.tumor import Tumor, labels, mass_effect_pullback, paint_tumors, sample_tumors

NODE_STRIDE = 4
"""Spacing in voxels of the coarse grid on which the coordinate map is composed."""

ELASTIC_AMPLITUDE_MM = (2.0, 4.0)
"""Range of the largest elastic displacements."""

ELASTIC_SIGMA_NODES = 3.0
"""Smoothness of the elastic field in coarse nodes (12 mm)."""


@dataclass(frozen=True)
class PhantomCase:
    """One synthetic BraTS-like case; volumes are (240, 240, 155) on the BraTS grid.

    Attributes:
        images: float32 volumes keyed by ``t1``, ``t1ce``, ``t2``, ``flair``; 0 outside the brain.
        label: uint8 BraTS labels (0, 1 necrotic core, 2 edema, 4 enhancing), 0 outside the brain.
        affine: (4, 4) voxel-to-millimetre affine, ``anatomy.GRID_AFFINE``.
        tissue: float32 ``gm``, ``wm``, ``csf`` fractions of the deformed, pushed anatomy (under
            the lesions too), summing to 1 in the brain and 0 outside.
        brain: bool brain mask.
        tumors: the tumors, largest first.
    """

    images: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray
    tissue: dict[str, np.ndarray]
    brain: np.ndarray
    tumors: tuple[Tumor, ...]


def _scatter(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A float32 volume shaped like ``mask``: ``values`` inside, 0 outside."""
    volume = np.zeros(mask.shape, dtype=np.float32)
    volume[mask] = values
    return volume


def generate_case(seed: int, *, mass_effect: bool = True) -> PhantomCase:
    """Generate one case; the same seed always gives the same arrays.

    Args:
        seed: non-negative integer seed of this case (``dataset.case_seed`` derives it per case).
        mass_effect: push the tissue away from the tumors (default True); False gives the same case
            with the tumors painted on undisplaced anatomy.

    Returns:
        The case: about 2 s on a 2-core CPU, plus about 3 s once per process to load the template.

    Raises:
        ValueError: if ``seed`` is negative.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    template = load_template()
    deform_rng, tumor_rng, contrast_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(3)
    )

    nodes = coarse_nodes(BRATS_SHAPE, NODE_STRIDE)
    center = (np.array(BRATS_SHAPE, dtype=np.float64) - 1.0) / 2.0
    grid_to_template = template.grid_to_template @ sample_affine(deform_rng, center)
    amplitude = float(deform_rng.uniform(*ELASTIC_AMPLITUDE_MM))
    elastic = sample_elastic(deform_rng, nodes.shape[1:], amplitude, ELASTIC_SIGMA_NODES)

    def healthy_to_template(points: np.ndarray) -> np.ndarray:
        """Template voxel index sampled by grid points (3, ...) before any mass effect."""
        return apply_affine(grid_to_template, points + sample_coarse(elastic, points, NODE_STRIDE))

    tumors = sample_tumors(tumor_rng, healthy_to_template, BRATS_SHAPE)
    if not mass_effect:
        tumors = tuple(dataclasses.replace(tumor, mass_effect=0.0) for tumor in tumors)
    source = nodes
    for tumor in tumors:
        source = mass_effect_pullback(source, tumor)
    coords = upsample_linear(healthy_to_template(source), BRATS_SHAPE, NODE_STRIDE)

    mask = warp(template.mask, coords)
    brain = mask >= 0.5
    points = coords[:, brain]
    total = mask[brain]
    tissue = {
        name: _scatter(warp(getattr(template, name), points) / total, brain) for name in ("gm", "wm", "csf")
    }
    t1 = warp(template.t1, points) / total
    texture = warp(template.texture, points) / total
    del coords, points

    fractions = paint_tumors(tumors, tissue["wm"], tissue["gm"], brain, tumor_rng)
    voxels = Voxels(
        positions=np.argwhere(brain).T.astype(np.float32),
        t1=t1,
        texture=texture,
        gm=tissue["gm"][brain],
        wm=tissue["wm"][brain],
        csf=tissue["csf"][brain],
        core=fractions.core[brain],
        tumor=fractions.tumor[brain],
        edema=fractions.edema[brain],
    )
    images = simulate(voxels, template.t1_wm_gm, BRATS_SHAPE, contrast_rng)
    return PhantomCase(
        images={name: _scatter(values, brain) for name, values in images.items()},
        label=labels(fractions),
        affine=GRID_AFFINE.copy(),
        tissue=tissue,
        brain=brain,
        tumors=tumors,
    )
