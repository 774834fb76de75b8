"""BraTS data layer: find and read BraTS folders in the layouts people have, write cases, cache 2D slices.

Example:
    >>> cases = find_cases(Path("MICCAI_BraTS_2019_Data_Training"))  # HGG/ and LGG/ inside
    >>> volume = load_case(cases[0])  # float32 (240, 240, 155) per modality, labels {0, 1, 2, 4}
    >>> cache = SliceCache.open(build_slice_cache(root, Path("runs/cache")), "train")
    >>> cache.images.shape  # (N, 4, 240, 240), N = 50 slices x training cases
"""

from mrisynth.brats.cache import CACHE_FORMAT, SliceCache, build_slice_cache, source_fingerprint
from mrisynth.brats.errors import BratsError
from mrisynth.brats.layouts import LABEL_KEY, LABEL_MAPS, CaseFiles, Layout, case_file, find_cases
from mrisynth.brats.read import CaseVolume, load_case
from mrisynth.brats.slices import SliceConfig, case_slices, split_cases
from mrisynth.brats.write import write_case

__all__ = [
    "CACHE_FORMAT",
    "LABEL_KEY",
    "LABEL_MAPS",
    "BratsError",
    "CaseFiles",
    "CaseVolume",
    "Layout",
    "SliceCache",
    "SliceConfig",
    "build_slice_cache",
    "case_file",
    "case_slices",
    "find_cases",
    "load_case",
    "source_fingerprint",
    "split_cases",
    "write_case",
]
