"""On-disk cache of the 2D slices of a BraTS folder (`mrisynth.brats.slices`), memory-mapped for training.

`build_slice_cache` finds, reads, slices and splits the cases once; `SliceCache.open` reads a split back, so
that no training epoch decodes NIfTI again.

Cache format (``format`` 1), one folder::

    index.json          format, config, source root, source fingerprint, slice shape, and per split
                        the case ids and the (case_id, z) of every row
    train_images.npy    float32 (N, 4, H, W), channels in MODALITIES order, each (H, W) image
                        standardized (`mrisynth.conventions.standardize`)
    train_labels.npy    uint8 (N, H, W), labels {0, 1, 2, 4}
    test_images.npy     the same for the test split
    test_labels.npy

Row ``n`` is slice ``volume[:, :, z]`` of its case, unflipped: H and W are the volume's first two (x, y)
axes, 240 x 240 for BraTS. Each case takes 50 x (4 x 4 + 1) x 240 x 240 bytes = 49 MB, so BraTS 2015's
274 cases take 13.4 GB.

Why plain ``.npy`` files opened with ``np.load(mmap_mode="r")``: zero-copy random access to any row, nothing
decoded per epoch, the OS page cache shared between data-loader workers, and no dependency beyond numpy.
The cache is built by streaming case by case into preallocated ``np.lib.format.open_memmap`` files, each
case through its own mapped window, so the build's resident memory stays at one case (about 0.3 GB)
whatever the dataset size. It is written in a temporary sibling folder renamed into place when complete,
so a cache folder is either whole or absent. The fingerprint (relative names, sizes and mtimes of the
source files) tells a stale cache: `build_slice_cache` rebuilds it, ``SliceCache.open(...,
verify_source=True)`` refuses it.
"""

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrisynth.brats.errors import BratsError
from mrisynth.brats.layouts import CaseFiles, find_cases
from mrisynth.brats.read import load_case
from mrisynth.brats.slices import SliceConfig, case_slices, split_cases
from mrisynth.conventions import MODALITIES

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Version of the cache layout written by `build_slice_cache`; other versions are rebuilt or refused."""

SPLITS: tuple[str, ...] = ("train", "test")
_INDEX = "index.json"


def source_fingerprint(root: Path, cases: list[CaseFiles]) -> str:
    """SHA-256 of the relative names, sizes and mtimes of every file of ``cases`` under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(path for case in cases for path in case.files):
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _preallocate(folder: Path, split: str, n: int, shape: tuple[int, int]) -> dict[str, int]:
    """Create ``<split>_images.npy`` (N, 4, H, W) and ``<split>_labels.npy`` (N, H, W), zero-filled.

    Returns:
        Per array name, the byte offset of its data in the file.
    """
    shapes = {"images": (np.float32, (n, len(MODALITIES), *shape)), "labels": (np.uint8, (n, *shape))}
    offsets = {}
    for name, (dtype, full_shape) in shapes.items():
        array = np.lib.format.open_memmap(folder / f"{split}_{name}.npy", "w+", dtype, full_shape)
        offsets[name] = array.offset
        del array
    return offsets


def _write_rows(path: Path, offset: int, first_row: int, block: np.ndarray) -> None:
    """Write ``block`` (rows, ...) into a preallocated .npy from ``first_row`` on, through a mapped window.

    Mapping only this window (not the whole file) keeps the build's resident memory at one case.
    """
    window = np.memmap(path, block.dtype, "r+", offset + first_row * block[0].nbytes, block.shape)
    window[:] = block
    window.flush()


def _write_split(
    cases: list[CaseFiles], folder: Path, split: str, config: SliceConfig, shape: tuple[int, int] | None
) -> tuple[list[tuple[str, int]], tuple[int, int] | None]:
    """Stream one split's cases, one at a time, into ``<split>_images.npy`` and ``<split>_labels.npy``.

    Args:
        shape: the (H, W) all slices must have, or None to take the first case's.

    Returns:
        The (case_id, z) of every row and the (H, W) of the slices (``shape`` when there is no case).
    """
    n_slices = len(config.slices)
    offsets: dict[str, int] = {}
    rows: list[tuple[str, int]] = []
    for i, case in enumerate(cases):
        images, labels = case_slices(load_case(case), config)
        if shape is not None and labels.shape[1:] != shape:
            first = case.images[MODALITIES[0]]
            raise BratsError(f"{first}: slices of shape {labels.shape[1:]}, other cases have {shape}")
        shape = (labels.shape[1], labels.shape[2])
        offsets = offsets or _preallocate(folder, split, len(cases) * n_slices, shape)
        for name, block in (("images", images), ("labels", labels)):
            _write_rows(folder / f"{split}_{name}.npy", offsets[name], i * n_slices, block)
        rows += [(case.case_id, z) for z in config.slices]
        logger.info("slice cache: %s case %d/%d %s", split, i + 1, len(cases), case.case_id)
    if not offsets:
        _preallocate(folder, split, 0, shape or (0, 0))
    return rows, shape


def _read_index(cache_dir: Path) -> dict[str, Any]:
    path = cache_dir / _INDEX
    try:
        index: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BratsError(
            f"{cache_dir} is not a slice cache: no {_INDEX} (build_slice_cache makes one)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise BratsError(f"cannot read slice cache index {path}: {exc}") from exc
    if index.get("format") != CACHE_FORMAT:
        raise BratsError(f"{path}: cache format {index.get('format')!r}, expected {CACHE_FORMAT}; rebuild it")
    return index


def _stale_reason(index: dict[str, Any], config: SliceConfig, fingerprint: str) -> str | None:
    if index["config"] != dataclasses.asdict(config):
        return f"built with config {index['config']}, asked for {dataclasses.asdict(config)}"
    if index["fingerprint"] != fingerprint:
        return "source files changed (names, sizes or mtimes) since it was built"
    return None


def build_slice_cache(root: Path, cache_dir: Path, config: SliceConfig | None = None) -> Path:
    """Build (or reuse, when up to date) the slice cache of the labeled BraTS cases under ``root``.

    Args:
        root: a BraTS folder in any layout `find_cases` knows; every case needs its label.
        cache_dir: the cache folder; an up-to-date cache there is reused, a stale one rebuilt, any other
            non-empty folder refused.
        config: slices and split (default `SliceConfig()`: slices 55-104, 9:1, seed 0).

    Returns:
        ``cache_dir``, to open with `SliceCache.open`.

    Raises:
        BratsError: bad source data (see `find_cases`, `load_case`), slices of different shapes, or a
            ``cache_dir`` that holds something else than a slice cache.
    """
    config = config or SliceConfig()
    root, cache_dir = Path(root).resolve(), Path(cache_dir).resolve()
    cases = find_cases(root)
    fingerprint = source_fingerprint(root, cases)
    if (cache_dir / _INDEX).is_file():
        try:
            reason = _stale_reason(_read_index(cache_dir), config, fingerprint)
        except BratsError as exc:
            reason = str(exc)
        if reason is None:
            logger.info("slice cache %s is up to date", cache_dir)
            return cache_dir
        logger.warning("rebuilding stale slice cache %s: %s", cache_dir, reason)
    elif cache_dir.exists() and any(cache_dir.iterdir()):
        raise BratsError(f"{cache_dir} is not empty and not a slice cache (no {_INDEX}); not overwriting it")
    by_id = {case.case_id: case for case in cases}
    train_ids, test_ids = split_cases(list(by_id), config.test_fraction, config.seed)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.", suffix=".partial", dir=cache_dir.parent))
    try:
        splits: dict[str, Any] = {}
        shape = None
        for split, ids in zip(SPLITS, (train_ids, test_ids), strict=True):
            rows, shape = _write_split([by_id[i] for i in ids], partial, split, config, shape)
            splits[split] = {"cases": ids, "rows": rows}
        index = {
            "format": CACHE_FORMAT,
            "config": dataclasses.asdict(config),
            "source": str(root),
            "fingerprint": fingerprint,
            "modalities": list(MODALITIES),
            "slice_shape": list(shape or ()),
            "splits": splits,
        }
        (partial / _INDEX).write_text(json.dumps(index))
        if cache_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.", suffix=".old", dir=cache_dir.parent))
            cache_dir.rename(old / cache_dir.name)
            partial.rename(cache_dir)
            shutil.rmtree(old)
        else:
            partial.rename(cache_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info("slice cache %s: %d train and %d test cases", cache_dir, len(train_ids), len(test_ids))
    return cache_dir


@dataclass(frozen=True, eq=False)
class SliceCache:
    """One split of a slice cache, memory-mapped read-only.

    Attributes:
        split: ``train`` or ``test``.
        images: float32 (N, 4, H, W) memory map, channels in `MODALITIES` order, standardized per image.
        labels: uint8 (N, H, W) memory map, labels {0, 1, 2, 4}.
        rows: (case_id, z) of each of the N rows.
        config: the config the cache was built with.
        source: the BraTS folder it was built from.
    """

    split: str
    images: np.ndarray
    labels: np.ndarray
    rows: list[tuple[str, int]]
    config: SliceConfig
    source: Path

    @classmethod
    def open(cls, cache_dir: Path, split: str = "train", verify_source: bool = False) -> "SliceCache":
        """Open one split of a cache built by `build_slice_cache`; no NIfTI is read.

        Args:
            cache_dir: the cache folder.
            split: ``train`` or ``test``.
            verify_source: also check that the source files still match the cache's fingerprint (finds
                the cases again: needs the source folder).

        Raises:
            BratsError: not a cache, another format version, missing or truncated arrays, or (with
                ``verify_source``) a stale cache.
        """
        cache_dir = Path(cache_dir)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        index = _read_index(cache_dir)
        config = SliceConfig(**index["config"])
        if verify_source:
            fingerprint = source_fingerprint(Path(index["source"]), find_cases(Path(index["source"])))
            reason = _stale_reason(index, config, fingerprint)
            if reason is not None:
                raise BratsError(f"stale slice cache {cache_dir}: {reason}; rebuild it (build_slice_cache)")
        rows = [(case_id, z) for case_id, z in index["splits"][split]["rows"]]
        arrays = []
        for name in ("images", "labels"):
            path = cache_dir / f"{split}_{name}.npy"
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise BratsError(f"cannot open {path}: {exc}; rebuild the cache") from exc
            if len(array) != len(rows):
                raise BratsError(f"{path} has {len(array)} rows, {_INDEX} {len(rows)}; rebuild the cache")
            arrays.append(array)
        return cls(split, arrays[0], arrays[1], rows, config, Path(index["source"]))

    def __len__(self) -> int:
        return len(self.rows)
