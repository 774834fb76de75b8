"""Training samples from a BraTS slice cache: x, its label, f (Algorithm 1), brain mask (Algorithm 2).

The slice cache (:mod:`mrisynth.brats.cache`) holds the training split's standardized slices at the
source size, memory-mapped. Each sample is made from one row, on the fly, in numpy/OpenCV:

1. the four images are resized to the preset's size with ``cv2.INTER_AREA`` (the label with
   ``cv2.INTER_NEAREST``) and re-standardized (Sec. 3.1). Area averaging leaves float round-off on the
   constant background of skull-stripped slices, which Algorithm 2 (``x > min(x)``) would read as
   brain, so pixels that are wholly background at the source size are reset to the background value;
2. the structural feature map f is Algorithm 1 of ONE modality drawn uniformly per sample, with the
   lesion removed (``remove_lesion``, Sec. 2.5). A random modality rather than a fixed one gives DC_f
   and EC_r the structure of all four contrasts, and the structure stage and the synthesis stage draw
   f the same way, so the maps DC_f learns to generate are the maps EC_r learns to read;
3. the brain mask is Algorithm 2 (p = ``mask_expansion``) of that same modality, 1 inside the brain;
4. the lesion label fused with f in the synthesis stage (Sec. 2.5-2.6) is drawn uniformly from the
   lesion library (the training split's label slices with a lesion) until it lies inside that brain
   mask (``label * (1 - mask) == 0``, Sec. 2.5); after 20 misses the sample's own label is used;
5. the pasted sample (the registered objective's (S) with ``Preset.paired_lesion`` "pasted", a
   copy-paste augmentation as TumorCP): a lesion slice of the library with its four images, flipped at
   random and shifted by up to ``PASTE_SHIFT`` of the image size (the images with linear, the label
   with nearest interpolation), pasted into the sample where it lies inside the brain mask:
   ``x_paste = x_src`` on the pasted lesion and ``x`` elsewhere, ``label_paste`` the pasted lesion over
   the sample's own label, and ``f_paste`` Algorithm 1 of ``x_paste`` without ``label_paste``. It gives
   the synthesis a pixel target for a lesion away from where it grew, as at serving time, where the
   library's lesions are placed anywhere in a generated brain; after 20 misses it is the sample itself.

Rows are drawn uniformly with replacement with a ``numpy.random.Generator``, whose state alone (saved
in the checkpoint) determines every later batch.
"""

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from models.presets import Preset
from mrisynth.brats import SliceCache, build_slice_cache
from mrisynth.brats.slices import resize_image, resize_label
from mrisynth.conventions import MODALITIES, VOXEL_SIZE_MM
from mrisynth.structure import brain_mask, remove_lesion, structural_feature_map

logger = logging.getLogger(__name__)

LABEL_DRAWS = 20
"""Draws from the lesion library before falling back to the sample's own label."""

PASTE_SHIFT = 0.2
"""Largest shift of a pasted lesion slice, as a fraction of the image size (the worker's default)."""


@dataclass(frozen=True, eq=False)
class RealSplit:
    """One split of the real slices of a slice cache at an image size S (training or evaluation).

    Attributes:
        name: ``train`` or ``test``.
        images: float32 (N, 4, S, S), modalities in ``MODALITIES`` order, per-image standardized.
        labels: uint8 (N, S, S), values in ``LABELS``.
        cases: the split's case ids.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    cases: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def read_split(cache: SliceCache, size: int) -> RealSplit:
    """One opened split of a slice cache at ``size`` x ``size``, resized as training resizes."""
    images = np.stack(
        [np.stack([resize_image(np.asarray(image), size) for image in row]) for row in cache.images]
    ).astype(np.float32)
    labels = np.stack([resize_label(np.asarray(label), size) for label in cache.labels])
    cases = tuple(sorted({case_id for case_id, _ in cache.rows}))
    return RealSplit(cache.split, images, labels, cases)


@dataclass(frozen=True, eq=False)
class TrainingData:
    """The training split of a slice cache, served as batches at the preset's image size.

    Attributes:
        cache: the memory-mapped training split, images (N, 4, H0, W0), labels (N, H0, W0).
        preset: image size, Algorithm 1 beta and Algorithm 2 p.
        labels: uint8 (N, S, S) training labels at the image size S.
        lesion_library: uint8 (L, S, S), the rows of ``labels`` holding a lesion (Sec. 2.8).
        library_rows: int (L,), the training row of each library label (the images pasted with it).
    """

    cache: SliceCache
    preset: Preset
    labels: np.ndarray
    lesion_library: np.ndarray
    library_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.cache)

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """Voxel size at the image size: the source's 1 mm in-plane scaled by H0 / S, 1 mm between slices."""
        height, width = self.cache.images.shape[-2:]
        size = self.preset.image_size
        return (VOXEL_SIZE_MM[0] * height / size, VOXEL_SIZE_MM[1] * width / size, VOXEL_SIZE_MM[2])

    def sample(self, row: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One training sample (see the module docstring), S the image size.

        Returns:
            ``x`` float32 (4, S, S) in ``MODALITIES`` order; ``label_x`` uint8 (S, S), its label;
            ``f`` float32 (1, S, S) in {0, 1}; ``brain_mask`` float32 (1, S, S), 1 inside the brain;
            ``label`` uint8 (S, S), the lesion label to fuse with f; with the registered objective and
            ``Preset.paired_lesion`` "pasted" only (drawn from ``rng`` after the rest), ``x_paste``
            float32 (4, S, S), ``label_paste`` uint8 (S, S) and ``f_paste`` float32 (1, S, S), the
            pasted sample.
        """
        preset = self.preset
        x = self.images(row)
        label_x = self.labels[row]
        modality = int(rng.integers(len(MODALITIES)))
        f = remove_lesion(structural_feature_map(x[modality], preset.beta), label_x)
        mask = brain_mask(x[modality], preset.mask_expansion)
        label = label_x
        for _ in range(LABEL_DRAWS if len(self.lesion_library) else 0):
            candidate = self.lesion_library[int(rng.integers(len(self.lesion_library)))]
            if not np.any((candidate > 0) & (mask == 0)):
                label = candidate
                break
        sample = {"x": x, "label_x": label_x, "f": f[None], "brain_mask": mask[None], "label": label}
        if preset.registered and preset.paired_lesion == "pasted":
            x_paste, label_paste = self.paste(x, label_x, mask, rng)
            f_paste = remove_lesion(structural_feature_map(x_paste[modality], preset.beta), label_paste)
            sample.update(x_paste=x_paste, label_paste=label_paste, f_paste=f_paste[None])
        return sample

    def images(self, row: int) -> np.ndarray:
        """float32 (4, S, S): the row's four images at the image size S."""
        return np.stack(
            [resize_image(np.asarray(image), self.preset.image_size) for image in self.cache.images[row]]
        )

    def paste(
        self, x: np.ndarray, label_x: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Step 5 of the module docstring: (x_paste (4, S, S), label_paste (S, S)) for a sample x with
        label ``label_x`` and brain mask ``mask``; ``(x, label_x)`` after ``LABEL_DRAWS`` misses."""
        size = self.preset.image_size
        for _ in range(LABEL_DRAWS if len(self.lesion_library) else 0):
            k = int(rng.integers(len(self.lesion_library)))
            flip = tuple(slice(None, None, -1 if flipped else 1) for flipped in rng.random(2) < 0.5)
            matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            matrix[:, 2] = rng.uniform(-PASTE_SHIFT, PASTE_SHIFT, size=2) * size
            label = self.lesion_library[k][flip]
            label = cv2.warpAffine(np.ascontiguousarray(label), matrix, (size, size), flags=cv2.INTER_NEAREST)
            if not label.any() or np.any((label > 0) & (mask == 0)):
                continue
            source = self.images(int(self.library_rows[k]))[(slice(None), *flip)]
            source = np.stack(
                [cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size)) for image in source]
            )
            lesion = label > 0
            return np.where(lesion, source, x).astype(np.float32), np.where(lesion, label, label_x)
        return x, label_x

    def batch(self, batch_size: int, rng: np.random.Generator, device: torch.device) -> dict[str, Tensor]:
        """``batch_size`` samples of rows drawn uniformly with replacement, stacked on ``device``.

        Returns:
            The keys of :meth:`sample` with a leading batch axis B; labels as int64 (B, S, S).
        """
        rows = rng.integers(len(self), size=batch_size)
        samples = [self.sample(int(row), rng) for row in rows]
        batch = {key: torch.from_numpy(np.stack([s[key] for s in samples])) for key in samples[0]}
        batch["label_x"] = batch["label_x"].long()
        batch["label"] = batch["label"].long()
        if "label_paste" in batch:
            batch["label_paste"] = batch["label_paste"].long()
        return {key: value.to(device) for key, value in batch.items()}

    def structure_density(self, samples: int = 64) -> float:
        """Mean of the real structural feature maps f: the fraction of pixels on a structure edge.

        Estimated on ``samples`` training samples drawn with a fixed seed. The export calibrates the
        level at which DC_f's generated maps are binarized so that they have this density.
        """
        rng = np.random.default_rng(0)
        rows = rng.integers(len(self), size=samples)
        return float(np.mean([self.sample(int(row), rng)["f"].mean() for row in rows]))

    def describe(self) -> dict[str, object]:
        """JSON-ready description of the data, for ``run.json``."""
        cases = sorted({case_id for case_id, _ in self.cache.rows})
        return {
            "structure_density": self.structure_density(),
            "source": str(self.cache.source),
            "slice_config": dataclasses.asdict(self.cache.config),
            "source_slice_shape": list(self.cache.images.shape[-2:]),
            "train_cases": cases,
            "train_slices": len(self),
            "lesion_slices": len(self.lesion_library),
        }


def load_training_data(data_dir: Path, cache_dir: Path, preset: Preset) -> TrainingData:
    """Build (or reuse) the slice cache of ``data_dir`` and open its training split.

    Args:
        data_dir: a BraTS folder (any layout :func:`mrisynth.brats.find_cases` knows).
        cache_dir: the cache folder, e.g. ``RUN/cache``.
        preset: slice config, image size, Algorithm 1 and 2 parameters.

    Raises:
        mrisynth.brats.BratsError: unusable data (a ValueError).
        ValueError: the training split is empty.
    """
    cache = SliceCache.open(build_slice_cache(Path(data_dir), Path(cache_dir), preset.slices), "train")
    if len(cache) == 0:
        raise ValueError(f"the training split of {data_dir} is empty; it needs at least one labeled case")
    labels = np.stack([resize_label(np.asarray(label), preset.image_size) for label in cache.labels])
    library_rows = np.flatnonzero(labels.reshape(len(labels), -1).max(axis=1) > 0)
    library = labels[library_rows]
    logger.info(
        "training data: %d slices of %d cases, %d with a lesion, at %d x %d",
        len(cache),
        len({case_id for case_id, _ in cache.rows}),
        len(library),
        preset.image_size,
        preset.image_size,
    )
    return TrainingData(cache, preset, labels, np.ascontiguousarray(library), library_rows)
