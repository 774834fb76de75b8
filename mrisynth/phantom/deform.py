"""Random smooth spatial transforms and the coarse-grid machinery that keeps them cheap.

Every spatial map here is a *pull-back*: for a point of the output (BraTS) grid it gives the point
of the source it samples from. All maps of a case are composed on a coarse grid of nodes spaced
``stride`` voxels apart and upsampled once with separable linear interpolation, which reproduces the
affine part exactly and interpolates the smooth displacements. Units are voxels, which are 1 mm.
"""

import numpy as np
from scipy import ndimage


def coarse_nodes(shape: tuple[int, ...], stride: int) -> np.ndarray:
    """Positions of the coarse nodes that cover a grid.

    Args:
        shape: full grid shape, e.g. (240, 240, 155).
        stride: node spacing in voxels, >= 1.

    Returns:
        float32 array (3, nx, ny, nz) of voxel positions ``stride * node index``; the last node of
        each axis lies at or beyond the last voxel.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    axes = [np.arange(-(-(n - 1) // stride) + 1, dtype=np.float32) * stride for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _interpolation_matrix(n_out: int, n_in: int, stride: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation weights from nodes ``stride`` apart to every voxel."""
    position = np.clip(np.arange(n_out) / stride, 0, n_in - 1)
    left = np.minimum(np.floor(position).astype(int), max(n_in - 2, 0))
    weight = (position - left).astype(np.float32)
    matrix = np.zeros((n_out, n_in), dtype=np.float32)
    matrix[np.arange(n_out), left] = 1.0 - weight
    if n_in > 1:
        matrix[np.arange(n_out), left + 1] += weight
    return matrix


def upsample_linear(coarse: np.ndarray, shape: tuple[int, int, int], stride: int) -> np.ndarray:
    """Separable linear interpolation from coarse nodes to every voxel of a grid.

    Args:
        coarse: (..., nx, ny, nz) values at nodes ``stride`` voxels apart (as from ``coarse_nodes``
            or ``array[::stride, ::stride, ::stride]``); positions past the last node are clamped.
        shape: full (X, Y, Z) grid shape.
        stride: node spacing in voxels.

    Returns:
        float32 array (..., X, Y, Z).
    """
    out = np.asarray(coarse, dtype=np.float32)
    for axis, n_out in zip((-3, -2, -1), shape, strict=True):
        matrix = _interpolation_matrix(n_out, out.shape[axis], stride)
        out = np.moveaxis(np.tensordot(matrix, out, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(out)


def sample_coarse(coarse: np.ndarray, points: np.ndarray, stride: int) -> np.ndarray:
    """Linear interpolation of a coarse field at arbitrary points.

    Args:
        coarse: (C, nx, ny, nz) field at nodes ``stride`` voxels apart.
        points: (3, ...) voxel positions.
        stride: node spacing in voxels.

    Returns:
        float32 array (C, ...); outside the nodes the nearest node's value is used.
    """
    nodes = np.asarray(points, dtype=np.float32) / stride
    return np.stack(
        [ndimage.map_coordinates(c, nodes, order=1, mode="nearest", output=np.float32) for c in coarse]
    )


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit standard deviation.

    Args:
        rng: random generator.
        shape: output shape.
        sigma: smoothing width in array voxels.

    Returns:
        float32 array of ``shape``.
    """
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return (noise - noise.mean()) / max(float(noise.std()), 1e-12)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) affine to (3, ...) points; returns float32 (3, ...)."""
    flat = np.asarray(points, dtype=np.float32).reshape(3, -1)
    moved = matrix[:3, :3].astype(np.float32) @ flat + matrix[:3, 3:].astype(np.float32)
    return moved.reshape(np.shape(points))


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx for angles (3,) in radians about x, y, z."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def sample_affine(
    rng: np.random.Generator,
    center: np.ndarray,
    max_rotation_deg: float = 10.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    max_translation_mm: float = 8.0,
) -> np.ndarray:
    """Random affine about ``center``, returned as the pull-back of the output grid.

    The anatomy moves as ``y = center + R @ S @ (x - center) + t`` with rotations about each axis
    uniform in +-max_rotation_deg, per-axis scales uniform in scale_range and per-axis translations
    uniform in +-max_translation_mm.

    Args:
        rng: random generator.
        center: (3,) centre of rotation and scaling in voxels.
        max_rotation_deg: largest rotation about each axis (default 10).
        scale_range: (low, high) per-axis scale factors, both > 0 (default 0.9-1.1).
        max_translation_mm: largest translation along each axis (default 8).

    Returns:
        (4, 4) float64 matrix mapping an output voxel to the point it samples,
        ``x = center + S^-1 R^T (y - center - t)``.
    """
    if not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    rotation = _rotation(np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3)))
    scale = rng.uniform(*scale_range, 3)
    translation = rng.uniform(-max_translation_mm, max_translation_mm, 3)
    linear = np.diag(1.0 / scale) @ rotation.T
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = center - linear @ (center + translation)
    return matrix


def sample_elastic(
    rng: np.random.Generator, node_shape: tuple[int, int, int], amplitude_mm: float, sigma: float
) -> np.ndarray:
    """Smooth random displacement field on the coarse nodes.

    Args:
        rng: random generator.
        node_shape: (nx, ny, nz) coarse node grid.
        amplitude_mm: standard deviation of each displacement component is half of this, so the
            largest displacements are about ``amplitude_mm``.
        sigma: smoothing width in nodes.

    Returns:
        float32 array (3, nx, ny, nz) of displacements in voxels.
    """
    return np.stack([smooth_noise(rng, node_shape, sigma) for _ in range(3)]) * (amplitude_mm / 2)


def warp(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Sample ``volume`` at ``coords`` with linear interpolation and zero outside.

    Args:
        volume: (X, Y, Z) source volume.
        coords: (3, ...) voxel indices into ``volume``.

    Returns:
        float32 array of shape ``coords.shape[1:]``.
    """
    return ndimage.map_coordinates(
        volume, coords, order=1, mode="constant", cval=0.0, output=np.float32, prefilter=False
    )
