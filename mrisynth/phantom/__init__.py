"""BraTS-like phantom from real anatomy: the MNI152 template, deformed, with synthetic tumors.

``write_dataset(out, cases, seed)`` writes cases in the BraTS 2021 layout; ``generate_case(seed)``
returns one case in memory. See ``generate`` for the steps.
"""

from mrisynth.phantom.dataset import case_seed, write_dataset
from mrisynth.phantom.generate import PhantomCase, generate_case
from mrisynth.phantom.tumor import Tumor

__all__ = ["PhantomCase", "Tumor", "case_seed", "generate_case", "write_dataset"]
