"""Write phantom cases to disk in the BraTS 2021 layout.

``out/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz``: images float32, seg uint8,
all with the 1 mm diagonal ``GRID_AFFINE``. Case k is generated from a seed derived from
``(seed, k)`` with ``np.random.SeedSequence``, so it does not depend on how many cases are written,
and `mrisynth.brats.write_case` writes deterministic bytes, so the same seed gives the same bytes.
"""

import logging
import time
from pathlib import Path

import numpy as np

from mrisynth.brats import write_case
from mrisynth.phantom.generate import generate_case

logger = logging.getLogger(__name__)

CASE_ID = "BraTS2021_{:05d}"
"""Directory and file-name stem of case k."""


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of a dataset seeded with ``seed``.

    Args:
        seed: dataset seed, >= 0.
        index: case index, >= 0.

    Returns:
        A 64-bit non-negative integer for ``generate_case``, derived with
        ``np.random.SeedSequence(seed, spawn_key=(index,))`` (the ``index``-th child of ``seed``).

    Raises:
        ValueError: if ``seed`` or ``index`` is negative.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    state = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, dtype=np.uint64)
    return int(state[0])


def write_dataset(out: Path, cases: int, seed: int) -> list[Path]:
    """Generate ``cases`` phantom cases and write them in the BraTS 2021 layout under ``out``.

    Args:
        out: dataset directory, created if missing; existing cases are never overwritten.
        cases: number of cases, >= 1.
        seed: dataset seed, >= 0; case k uses ``case_seed(seed, k)``.

    Returns:
        The case directories, in case order.

    Raises:
        ValueError: if ``cases`` < 1 or ``seed`` < 0.
        FileExistsError: if a case directory already exists.
    """
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    case_dirs = [out / CASE_ID.format(index) for index in range(cases)]
    existing = [case_dir for case_dir in case_dirs if case_dir.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]} already exists; write the dataset to a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, case_dir in enumerate(case_dirs):
        start = time.perf_counter()
        case = generate_case(case_seed(seed, index))
        written.append(write_case(out, case_dir.name, case.images, case.label, case.affine))
        logger.info(
            "phantom case %d/%d: %s, %d tumor(s), %.1f s",
            index + 1,
            cases,
            case_dir,
            len(case.tumors),
            time.perf_counter() - start,
        )
    return written
