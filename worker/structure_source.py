"""A tumour placed into a real scan: synthesis on an uploaded scan's structure (paper Sec. 2.5, Fig. 7).

Sec. 2.5 takes the structural feature map f' of a real image x (Algorithm 1), removes the tumour x may
hold with Algorithm 2's mask of its label, ``f = mask_l,x * f'``, and fuses f with a lesion label placed
inside x's brain. Here, for each axial slice of an uploaded scan (:mod:`worker.scans`), at the artifacts'
size S:

1. f' is Algorithm 1 (the manifest's beta) of the scan's first modality in ``MODALITIES`` order (T1 when
   given), the modality order training draws from; with the scan's own label (``seg``), f =
   ``remove_lesion(f', label_x)``;
2. the brain is Algorithm 2 without expansion, the union over the given modalities;
3. lesions come from the request's ``lesion_source`` pool (library or uploaded labels) and are placed
   **once per scan**: a drawn label is augmented as in Sec. 2.8 (:func:`worker.lesions.augment`) and, for a
   3D scan, swept into a 3D lesion (:func:`sweep_lesion`: the label scaled about its centroid by
   ``sqrt(1 - (d / r)^2)`` at d slices from its centre, r its equivalent radius in slices), which must
   lie inside the brain in every slice it occupies (re-drawn otherwise, ``bounds.lesion_draws`` times);
   so the tumour is one coherent body across slices. From a lesion set of 3D label volumes, on a 3D
   scan, one 3D label is placed whole on the scan's grid instead (:mod:`worker.lesion_volumes`) and
   sliced with it. ``lesion_source="none"`` gives a healthy brain;
4. the fusion map (Sec. 2.5), EC_r, then DC in each requested modality (:func:`synthesize_from_structure`).

Images are resized back to the scan's grid (:func:`worker.scans.to_grid`) and set to 0 outside its brain;
the label is resized with nearest neighbours and kept inside the brain.
"""

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from mrisynth.brats.slices import resize_label
from mrisynth.structure import brain_mask, remove_lesion, structural_feature_map
from worker.filters import fuse
from worker.lesion_volumes import LabelVolume, place_label_volumes, voxel_spacing
from worker.lesions import augment
from worker.request import LesionControls
from worker.scans import Scan, scan_brain, scan_slices, to_grid
from worker.sessions import Synthesizer
from worker.translation import decode


def synthesize_from_structure(
    synthesizer: Synthesizer, f: np.ndarray, label: np.ndarray, modalities: Sequence[str]
) -> dict[str, np.ndarray]:
    """Images of structural maps fused with labels (Sec. 2.5, 2.6): fusion map, EC_r, DC per modality.

    Args:
        synthesizer: the loaded artifacts.
        f: float32 (B, S, S) structural feature maps in {0, 1} (lesion structure removed).
        label: uint8 (B, S, S) lesion labels, values in (0, 1, 2, 4).
        modalities: the modalities to decode, distinct.

    Returns:
        modality -> float32 (B, S, S), per-image standardized.
    """
    code = synthesizer.run("EC_r", fusion=fuse(f, label, synthesizer.manifest.fusion))
    return decode(synthesizer, code, modalities)


def lesion_half_depth(label: np.ndarray, scan: Scan, size: int) -> int:
    """Slices a swept lesion reaches on each side of its centre: its equivalent radius, in slices.

    The radius ``sqrt(area / pi)`` of the lesion at the artifacts' size is converted to millimetres with
    the scan's in-plane voxel size (times X / S) and to slices with its slice spacing (the affine's
    columns); 0 for a 2D scan.
    """
    if scan.grid[2] == 1:
        return 0
    spacing = np.linalg.norm(np.asarray(scan.affine)[:3, :3], axis=0)
    radius_mm = np.sqrt((label > 0).sum() / np.pi) * spacing[0] * scan.grid[0] / size
    return int(round(radius_mm / max(spacing[2], 1e-6)))


def sweep_lesion(label: np.ndarray, half_depth: int) -> np.ndarray:
    """A 2D label swept into a 3D lesion: uint8 (2 * half_depth + 1, H, W), the label itself in the middle.

    At d slices from the middle the label is scaled about its centroid by ``sqrt(1 - (d / r)^2)``,
    r = half_depth + 1/2 (nearest neighbours, so the label's nested regions keep their order).
    """
    rows, cols = np.nonzero(label)
    center = (float(cols.mean()), float(rows.mean()))
    height, width = label.shape
    radius = half_depth + 0.5
    slices = []
    for d in range(-half_depth, half_depth + 1):
        matrix = cv2.getRotationMatrix2D(center, 0.0, float(np.sqrt(1.0 - (d / radius) ** 2)))
        slices.append(
            cv2.warpAffine(np.ascontiguousarray(label), matrix, (width, height), flags=cv2.INTER_NEAREST)
        )
    return np.stack(slices)


def place_lesions(
    pool: np.ndarray,
    brain: np.ndarray,
    rng: np.random.Generator,
    controls: LesionControls,
    max_draws: int,
    reach: Callable[[np.ndarray], int],
) -> np.ndarray | None:
    """Draw, augment and sweep pool labels until ``controls.count`` fit the brain without overlap.

    Args:
        pool: uint8 (N, S, S) labels with a lesion.
        brain: bool (Z, S, S) the scan's brain per slice.
        rng: the sample's generator.
        controls: augmentation and lesion count (Sec. 2.8).
        max_draws: draws allowed in all.
        reach: slices each side of its centre a drawn (augmented) label reaches (:func:`lesion_half_depth`).

    Returns:
        uint8 (Z, S, S) label, or None when the draws ran out.
    """
    depth = len(brain)
    occupied = np.zeros(brain.shape, dtype=np.uint8)
    with_brain = np.flatnonzero(brain.any(axis=(1, 2)))
    placed = 0
    for _ in range(max_draws):
        lesion = augment(pool[int(rng.integers(len(pool)))], rng, controls)
        centre = int(with_brain[rng.integers(len(with_brain))])
        if not lesion.any():
            continue
        half_depth = reach(lesion)
        volume = np.zeros(brain.shape, dtype=np.uint8)
        for offset, plane in enumerate(sweep_lesion(lesion, half_depth)):
            z = centre - half_depth + offset
            if 0 <= z < depth:
                volume[z] = plane
        inside = volume > 0
        if (inside & ~brain).any() or (inside & (occupied > 0)).any():
            continue
        occupied = np.where(inside, volume, occupied)
        placed += 1
        if placed == controls.count:
            return occupied
    return None


def synthesize_on_scan(
    synthesizer: Synthesizer,
    scan: Scan,
    pool: np.ndarray | list[LabelVolume] | None,
    modalities: Sequence[str],
    rng: np.random.Generator,
    controls: LesionControls,
    max_draws: int,
    batch_size: int,
    on_slices: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """One sample on the scan's structure (module docstring): its modalities and label on the scan's grid.

    Args:
        synthesizer: the loaded artifacts.
        scan: the uploaded scan.
        pool: uint8 (N, S, S) 2D lesion labels to draw from (swept into 3D), 3D label volumes
            (:mod:`worker.lesion_volumes`, placed whole on the scan's grid), or None for a healthy brain.
        modalities: the modalities to synthesize.
        rng: the sample's lesion generator.
        controls: lesion augmentation and count.
        max_draws: lesion draws before giving up.
        batch_size: slices per EC_r / DC call.
        on_slices: called with the slices of each batch once EC_r and DC made it.

    Returns:
        modality -> float32 (X, Y, Z), 0 outside the brain, and ``seg`` -> uint8 (X, Y, Z).

    Raises:
        ValueError: the scan shows no brain, or no lesion fitted inside it in ``max_draws`` draws.
    """
    size = synthesizer.image_size[0]
    slices = scan_slices(scan, size)
    brain = brain_mask(np.stack(list(slices.values())), expansion=0).max(axis=0) > 0
    if not brain.any():
        raise ValueError("the scan shows no brain: every slice is constant")
    f = structural_feature_map(slices[scan.modalities[0]], synthesizer.manifest.thresholds.beta)
    if scan.label is not None:
        f = remove_lesion(f, np.stack([resize_label(s, size) for s in np.moveaxis(scan.label, 2, 0)]))
    grid_brain = scan_brain(scan)
    label = np.zeros(f.shape, dtype=np.uint8)
    grid_label: np.ndarray | None = None
    if isinstance(pool, list):
        grid_label = place_label_volumes(
            pool, grid_brain, voxel_spacing(scan.affine), rng, controls, max_draws
        )
        if grid_label is not None:
            label = np.stack([resize_label(s, size) for s in np.moveaxis(grid_label, 2, 0)])
    elif pool is not None:
        placed = place_lesions(
            pool, brain, rng, controls, max_draws, lambda x: lesion_half_depth(x, scan, size)
        )
        if placed is not None:
            label = placed
    if pool is not None and not label.any():
        raise ValueError(
            f"no lesion fitted inside the scan's brain in {max_draws} draws; raise bounds.lesion_draws "
            "or lower the lesion scale"
        )
    parts = []
    for i in range(0, len(f), batch_size):
        batch = slice(i, i + batch_size)
        parts.append(synthesize_from_structure(synthesizer, f[batch], label[batch], modalities))
        if on_slices is not None:
            on_slices(len(f[batch]))
    volumes = {
        m: np.where(grid_brain, to_grid(np.concatenate([p[m] for p in parts]), scan.grid[:2]), np.float32(0))
        for m in modalities
    }
    on_grid = grid_label if grid_label is not None else to_grid(label, scan.grid[:2], label=True)
    volumes["seg"] = np.where(grid_brain, on_grid, np.uint8(0))
    return volumes
