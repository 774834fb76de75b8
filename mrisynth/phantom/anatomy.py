"""Real anatomy for the phantom: the MNI ICBM152 2009 (nonlinear, symmetric) templates.

The templates ship inside the nilearn package and load without network access. They are 1 mm
isotropic, RAS-oriented and already skull-stripped (nilearn's brain mask is ``T1 > 0.2``). The
template is cropped to the brain's bounding box once per process and cached.

The BraTS grid (``BRATS_SHAPE``, 240x240x155) is tied to the template through ``GRID_AFFINE``: the
array is stored like BraTS (x and y flipped relative to RAS, axial slices along the last axis) and
the affine maps a voxel to MNI millimetres of the undeformed template. With it the template brain is
centred in x and y, spans slices 0-154 exactly, and slices 55-105 run from MNI z = -17 mm to +33 mm:
the basal ganglia and the lateral ventricles, the mid-brain levels that BraTS slices 55-105 show.
"""

import functools
import logging
from dataclasses import dataclass

import numpy as np
from nilearn import datasets
from scipy import ndimage

logger = logging.getLogger(__name__)

GRID_AFFINE: np.ndarray = np.array(
    [[-1.0, 0.0, 0.0, 120.0], [0.0, -1.0, 0.0, 103.0], [0.0, 0.0, 1.0, -72.0], [0.0, 0.0, 0.0, 1.0]]
)
"""Voxel (i, j, k) of the BraTS grid to MNI millimetres: 1 mm voxels, diag(-1, -1, 1) like BraTS.

MNI (0, -17, 5), the centre of the template brain's bounding box, lands on voxel (120, 120, 77).
"""

TEXTURE_SIGMA_MM = 2.0
"""Width of the Gaussian whose residual is the template T1's texture (high-pass)."""


@dataclass(frozen=True)
class Template:
    """The MNI152 template, cropped to the brain; all volumes have the same (X, Y, Z) shape.

    Attributes:
        t1: T1-weighted template in [0, 1] (WM ~0.86, GM ~0.65, CSF ~0.3), zero outside the brain.
        gm: grey-matter probability in [0, 1], zero outside the brain.
        wm: white-matter probability in [0, 1], zero outside the brain.
        csf: brain mask minus GM and WM, clipped at 0, so ``gm + wm + csf`` is 1 in the brain.
        mask: brain mask (0 or 1, float32), holes filled.
        texture: high-pass of ``t1`` inside the brain (``t1`` minus its masked Gaussian blur).
        t1_wm_gm: median T1 in pure WM minus median T1 in pure GM, the template's WM-GM contrast.
        grid_to_template: (4, 4) affine from a BraTS-grid voxel to a voxel index of these arrays.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray
    texture: np.ndarray
    t1_wm_gm: float
    grid_to_template: np.ndarray


def _masked_blur(image: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur that only averages voxels inside ``mask`` (normalized convolution)."""
    weight = ndimage.gaussian_filter(mask, sigma)
    blurred = ndimage.gaussian_filter(image * mask, sigma)
    return np.divide(blurred, weight, out=np.zeros_like(blurred), where=weight > 1e-3)


@functools.cache
def load_template() -> Template:
    """Load, crop and cache the MNI152 2009 templates (about 2 s on first call, then free).

    Returns:
        The cached ``Template``; its arrays are read-only.
    """
    t1_img = datasets.load_mni152_template(resolution=1)
    t1 = t1_img.get_fdata(dtype=np.float32)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    mask_bool = ndimage.binary_fill_holes(datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0.5)

    inside = np.argwhere(mask_bool)
    lo = np.maximum(inside.min(axis=0) - 2, 0)
    hi = inside.max(axis=0) + 3
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    mask = mask_bool[crop].astype(np.float32)
    t1, gm, wm = t1[crop] * mask, gm[crop] * mask, wm[crop] * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    texture = (t1 - _masked_blur(t1, mask, TEXTURE_SIGMA_MM)) * mask
    t1_wm_gm = float(np.median(t1[wm > 0.9]) - np.median(t1[gm > 0.9]))

    shift = np.eye(4)
    shift[:3, 3] = -lo
    grid_to_template = shift @ np.linalg.inv(t1_img.affine) @ GRID_AFFINE
    arrays = {"t1": t1, "gm": gm, "wm": wm, "csf": csf, "mask": mask, "texture": texture}
    for array in (*arrays.values(), grid_to_template):
        array.setflags(write=False)
    logger.debug("loaded MNI152 template, cropped to %s", mask.shape)
    return Template(**arrays, t1_wm_gm=t1_wm_gm, grid_to_template=grid_to_template)
