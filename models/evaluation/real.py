"""The real slices of the evaluation: the slice cache's training and test splits at the artifacts' size.

The split must be the one the artifacts were trained with, or the "held-out" test split would hold
slices the segmentors learned from: :func:`artifacts_slice_config` reads it from the manifest's
training record (``training.data.slice_config``, written by ``mrisynth train``), and
:func:`leaked_cases` names the test cases that the record lists among the training cases.
Images are resized as training resizes them (:func:`mrisynth.brats.slices.resize_image`, ``resize_label``).
"""

import logging
from pathlib import Path

from models.data import RealSplit, read_split
from mrisynth.artifacts import Manifest
from mrisynth.brats import SliceCache, SliceConfig, build_slice_cache

logger = logging.getLogger(__name__)


def artifacts_slice_config(manifest: Manifest) -> SliceConfig:
    """The slices and subject split the artifacts were trained on (``SliceConfig()`` if unrecorded)."""
    recorded = manifest.training.data.get("slice_config")
    return SliceConfig(**recorded) if isinstance(recorded, dict) else SliceConfig()


def leaked_cases(manifest: Manifest, test: RealSplit) -> list[str]:
    """Test cases that the artifacts' training record lists as training cases (should be none)."""
    trained = set(manifest.training.data.get("train_cases", []))
    return sorted(set(test.cases) & trained)


def load_real_splits(
    data: Path, cache_dir: Path, config: SliceConfig, size: int
) -> tuple[RealSplit, RealSplit]:
    """Build (or reuse) the slice cache of ``data`` and read both splits at ``size`` x ``size``.

    Args:
        data: a BraTS folder.
        cache_dir: the slice cache folder (an up-to-date cache, e.g. a training run's, is reused).
        config: slices and split, normally :func:`artifacts_slice_config`.
        size: the artifacts' image side.

    Returns:
        (training split, test split).

    Raises:
        ValueError: either split is empty (the test split needs >= 2 cases and ``test_fraction`` > 0).
    """
    cache = build_slice_cache(Path(data), Path(cache_dir), config)
    train, test = (read_split(SliceCache.open(cache, split), size) for split in ("train", "test"))
    if not len(train) or not len(test):
        raise ValueError(
            f"{data}: the evaluation needs a training and a test split, got {len(train.cases)} and "
            f"{len(test.cases)} cases with {config}"
        )
    logger.info(
        "real data: %d training slices of %d cases, %d test slices of %d cases, at %d x %d",
        len(train),
        len(train.cases),
        len(test),
        len(test.cases),
        size,
        size,
    )
    return train, test
