"""3D lesion labels placed whole into a 3D scan (paper Sec. 2.5, issue 17): one label, placed once and
sliced with the scan, so the tumour is one coherent body across its slices.

When a dataset on a 3D scan draws its lesions from an uploaded lesion set holding 3D label volumes
(X, Y, Z > 1), each drawn volume is cropped to its lesion's bounding box, resampled with nearest
neighbours from its own voxel size to the scan's (the affines' column norms) times a scale drawn from
``controls.scale``, flipped at random in-plane (``controls.flip``), and placed at a random offset where
every labelled voxel lies inside the scan's brain and off the lesions placed before (centred on a brain
voxel drawn at random); ``controls.count``
lesions, ``max_draws`` tries in all. Rotation and translation limits do not apply: the offset is free
within the brain. The 2D library and 2D label files keep the swept 2D lesion of
:func:`worker.structure_source.place_lesions`.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.lesions import LabelLimits, check_label_values, label_files, read_file_work, read_voxels, set_work
from worker.request import LesionControls


@dataclass(frozen=True, eq=False)
class LabelVolume:
    """A 3D lesion label cropped to its lesion.

    Attributes:
        label: uint8 (x, y, z) values in {0, 1, 2, 4}, a lesion in every border plane.
        spacing: (3,) float64 voxel size in mm along each axis.
    """

    label: np.ndarray
    spacing: np.ndarray


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """(3,) voxel sizes in mm: the norms of a (4, 4) affine's first three columns."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def read_label_volumes(path: Path, limits: LabelLimits) -> list[LabelVolume]:
    """The 3D label files of a lesion source with a lesion, each cropped to it; 2D files are left out.

    Raises:
        ValueError: naming the file, as :func:`worker.lesions.read_label_files`.
    """
    files = label_files(Path(path))
    headers = [read_file_work(file, limits) for file in files]
    set_work([work for _, work in headers], limits)
    volumes = []
    for file, (header, work) in zip(files, headers, strict=True):
        data, affine = read_voxels(file, header, work)
        label = check_label_values(file, data)
        if label.ndim != 3 or not label.any():
            continue
        box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(label))
        volumes.append(LabelVolume(label=np.ascontiguousarray(label[box]), spacing=voxel_spacing(affine)))
    return volumes


def resample_nearest(label: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """A label volume resized by ``factors`` (3,) per axis with nearest neighbours, each axis >= 1 voxel."""
    shape = np.maximum(np.round(np.asarray(label.shape) * factors).astype(int), 1)
    index = [
        np.minimum((np.arange(n) / f).astype(int), length - 1)
        for n, f, length in zip(shape, factors, label.shape, strict=True)
    ]
    return label[np.ix_(*index)]


def place_label_volumes(
    volumes: list[LabelVolume],
    brain: np.ndarray,
    spacing: np.ndarray,
    rng: np.random.Generator,
    controls: LesionControls,
    max_draws: int,
) -> np.ndarray | None:
    """Draw and place 3D labels inside a scan's brain (module docstring).

    Args:
        volumes: the lesion set's 3D labels.
        brain: bool (X, Y, Z) the scan's brain on its grid.
        spacing: (3,) the scan's voxel sizes in mm.
        rng: the sample's generator.
        controls: lesion scale, flips and count (Sec. 2.8).
        max_draws: draws allowed in all.

    Returns:
        uint8 (X, Y, Z) label on the scan's grid, or None when the draws ran out.
    """
    occupied = np.zeros(brain.shape, dtype=np.uint8)
    candidates = np.argwhere(brain)
    placed = 0
    for _ in range(max_draws):
        volume = volumes[int(rng.integers(len(volumes)))]
        scale = rng.uniform(*controls.scale)
        lesion = resample_nearest(volume.label, volume.spacing / spacing * scale)
        if controls.flip:
            lesion = lesion[:: rng.choice((-1, 1)), :: rng.choice((-1, 1))]
        room = np.asarray(brain.shape) - lesion.shape
        if (room < 0).any():
            continue
        centre = candidates[int(rng.integers(len(candidates)))]
        start = np.clip(centre - np.asarray(lesion.shape) // 2, 0, room)
        box = tuple(slice(s, s + n) for s, n in zip(start, lesion.shape, strict=True))
        inside = lesion > 0
        if (inside & ~brain[box]).any() or (inside & (occupied[box] > 0)).any():
            continue
        occupied[box] = np.where(inside, lesion, occupied[box])
        placed += 1
        if placed == controls.count:
            return occupied
    return None
