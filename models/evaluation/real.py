"""The real slices of the evaluation: the slice cache's training and test splits at the artifacts' size.

The split must be the one the artifacts were trained with, or the "held-out" test split would hold
slices the segmentors learned from: :func:`artifacts_slice_config` reads it from the manifest's
training record (``training.data.slice_config``, written by ``mrisynth train``), and
:func:`leaked_cases` names the test cases that the record lists among the training cases.
Images are resized as training resizes them (:func:`mrisynth.brats.slices.resize_image`, ``resize_label``).

The **held-out set** (:class:`HeldOut`) is what Table 2, paired fidelity, lesion contrast, the modality
classifier, MMD and the translation table score on. By default it is the artifacts' test split; with
``--test-data DIR`` it is every case of another BraTS folder (e.g. an evaluation phantom made with
another seed, ``mrisynth phantom --out data/phantom-eval --cases 6 --seed 1``), held out by subject:
none of its cases was seen by the artifacts or by any Table 2 segmentor. The phantom numbers its cases
from 0 whatever the seed, so ids cannot tell a leak there; :func:`content_leaks` compares the slices'
bytes with the training slices instead. Table 1 keeps the artifacts' own test split as its real row.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data import RealSplit, read_split
from mrisynth.artifacts import Manifest
from mrisynth.brats import SliceCache, SliceConfig, build_slice_cache

MIN_TEST_CASES = 5
"""Held-out cases the evaluation asks for by default (``--min-test-cases``)."""

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


@dataclass(frozen=True, eq=False)
class HeldOut:
    """The held-out real slices (module docstring).

    Attributes:
        split: the slices (images float32 (N, 4, S, S), labels uint8 (N, S, S), case ids).
        case_index: int64 (N,), the case of each slice as an index into ``split.cases``.
        source: the BraTS folder they come from.
        separate: True for a folder of its own (``--test-data``), False for the artifacts' test split.
    """

    split: RealSplit
    case_index: np.ndarray
    source: Path
    separate: bool

    def __len__(self) -> int:
        return len(self.split)


def case_index(cache: SliceCache, cases: tuple[str, ...]) -> np.ndarray:
    """int64 (N,): the index in ``cases`` of each row's case."""
    position = {case_id: k for k, case_id in enumerate(cases)}
    return np.asarray([position[case_id] for case_id, _ in cache.rows], dtype=np.int64)


def load_held_out(data: Path, cache_dir: Path, config: SliceConfig, size: int, separate: bool) -> HeldOut:
    """The held-out set: every case of ``data`` (``separate``) or the test split of its cache.

    Args:
        data: a BraTS folder.
        cache_dir: its slice cache folder (built or reused).
        config: slices and split; with ``separate`` its test fraction is set to 0 (all cases).
        size: the artifacts' image side.
        separate: whether ``data`` is a held-out folder of its own.
    """
    if separate:
        config = SliceConfig(start=config.start, stop=config.stop, test_fraction=0.0, seed=config.seed)
    cache = SliceCache.open(
        build_slice_cache(Path(data), Path(cache_dir), config), "train" if separate else "test"
    )
    split = read_split(cache, size)
    if not len(split):
        raise ValueError(f"{data}: no held-out slices with {config}")
    logger.info("held-out data: %d slices of %d cases from %s", len(split), len(split.cases), data)
    return HeldOut(split, case_index(cache, split.cases), Path(data), separate)


def _digests(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


def content_leaks(train: RealSplit, held_out: HeldOut) -> list[str]:
    """Held-out cases with a slice whose four images are byte-identical to a training slice's."""
    seen = set(_digests(train.images))
    leaked = {
        held_out.split.cases[int(held_out.case_index[k])]
        for k, digest in enumerate(_digests(held_out.split.images))
        if digest in seen
    }
    return sorted(leaked)


def check_enough_cases(held_out: HeldOut, minimum: int) -> None:
    """Raise a ValueError that says how to get more held-out cases when there are fewer than ``minimum``."""
    cases = held_out.split.cases
    if len(cases) < minimum:
        raise ValueError(
            f"the held-out set has {len(cases)} case(s) ({', '.join(cases)}), the evaluation asks for "
            f">= {minimum} to tell rows apart: pass --test-data DIR with held-out cases (for the phantom: "
            "mrisynth phantom --out data/phantom-eval --cases 6 --seed 1), or --min-test-cases "
            f"{len(cases)} to accept it"
        )
