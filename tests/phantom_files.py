"""Cases of the seed-0 phantom (``mrisynth phantom --seed 0``, the demo's data) written as NIfTI files once
per test session, for the tests that upload or read a real case: ``data/phantom`` is not in the repository."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from mrisynth.brats import write_case
from mrisynth.phantom import case_seed, generate_case
from mrisynth.phantom.dataset import CASE_ID


@functools.cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="mrisynth-phantom-"))
    atexit.register(shutil.rmtree, root, True)
    return root


@functools.cache
def phantom_case(index: int) -> Path:
    """The folder of case ``index`` in the BraTS 2021 layout, e.g. ``BraTS2021_00006`` holding
    ``BraTS2021_00006_t1.nii.gz``."""
    case = generate_case(case_seed(0, index))
    return write_case(_root(), CASE_ID.format(index), case.images, case.label, case.affine)
