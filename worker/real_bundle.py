"""Real BraTS slices as a bundle (``mrisynth slices --format nifti``): the layout, image size, voxel size
and scale of a synthetic bundle, so that real and synthetic sets mix (the paper's Table 2) with no code.

Every kept axial slice (`SliceConfig`, Sec. 3.1) of every case of the chosen split is one case of the
bundle, written by `worker.bundle.BundleWriter` exactly as a synthetic sample is:

- the four images standardized per slice (Sec. 3.1) and resized to the image size as training resizes
  them (`resize_image`), then 0 outside the brain; the label resized nearest (`resize_label`);
- the brain mask is Algorithm 2 without expansion: every pixel above its slice's background in any
  modality; the structural map (extras) is Algorithm 1 of the T1 slice;
- case ids take the bundle's prefix (`REAL_CASE_PREFIXES` unless one is given), so that they never
  collide with a synthetic bundle's; each case's scores say its source case and axial slice.
"""

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from mrisynth.brats import find_cases, load_case
from mrisynth.brats.slices import SliceConfig, case_slices, resize_image, resize_label, split_cases
from mrisynth.conventions import MODALITIES
from mrisynth.structure import brain_mask, structural_feature_map
from worker.bundle import BundleWriter
from worker.bundle_layout import BundleLayout, BundleOptions, PlainSample

log = logging.getLogger(__name__)

Split = Literal["train", "test", "all"]

REAL_CASE_PREFIXES: dict[BundleLayout, str] = {
    BundleLayout.BRATS: "BraTSReal",
    BundleLayout.BRATS2023: "BraTS-REAL",
    BundleLayout.NNUNET: "BraTSReal",
}
"""Case-id prefix of a real-slice bundle that names none: unlike the synthetic defaults."""


def _split_case_ids(case_ids: list[str], config: SliceConfig, split: Split) -> list[str]:
    if split == "all":
        return sorted(case_ids)
    train, test = split_cases(case_ids, config.test_fraction, config.seed)
    return train if split == "train" else test


def real_slices(data: Path, config: SliceConfig, size: int, split: Split = "all") -> Iterator[PlainSample]:
    """The kept slices of the split's cases, case by case (one case's volumes in memory at a time).

    Args:
        data: a BraTS folder (any layout `mrisynth.brats.find_cases` reads).
        config: the kept slices and the subject split (its ``test_fraction`` and ``seed``).
        size: side of the written slices in pixels, e.g. the artifacts' 96; 240 keeps BraTS' grid.
        split: ``train``, ``test`` (the split training and evaluation use) or ``all`` cases.
    """
    cases = {case.case_id: case for case in find_cases(data)}
    for case_id in _split_case_ids(list(cases), config, split):
        images, labels = case_slices(load_case(cases[case_id]), config)
        for z, row, label in zip(config.slices, images, labels, strict=True):
            resized = np.stack([resize_image(image, size) for image in row])
            brain = brain_mask(resized, expansion=0).max(axis=0)
            yield PlainSample(
                images={m: resized[i] for i, m in enumerate(MODALITIES)},
                label=resize_label(label, size),
                f=structural_feature_map(resized[MODALITIES.index("t1")]),
                brain_mask=brain,
                scores={"source_case": case_id, "z": z},
            )


def write_real_bundle(
    data: Path, out: Path, options: BundleOptions, config: SliceConfig, size: int, split: Split = "all"
) -> Path:
    """Write the real slices of ``data`` as the bundle ``out`` (see the module docstring).

    Args:
        data: a BraTS folder.
        out: the zip to create; never overwritten.
        options: layout, modalities, voxel size, extras; a missing ``case_prefix`` takes
            `REAL_CASE_PREFIXES`.
        config: the kept slices and the subject split.
        size: side of the written slices in pixels.
        split: ``train``, ``test`` or ``all``.

    Returns:
        ``out``.

    Raises:
        BratsError: no case, or a case without label or with too few slices; no bundle is left behind.
    """
    if options.case_prefix is None:
        options = replace(options, case_prefix=REAL_CASE_PREFIXES[options.layout])
    request = {
        "source": "real BraTS slices",
        "data": str(data),
        "split": split,
        "image_size": size,
        "slices": {"start": config.start, "stop": config.stop, "test_fraction": config.test_fraction},
    }
    with BundleWriter(out, options, request=request, seed=config.seed, artifacts={}) as bundle:
        for sample in tqdm(real_slices(data, config, size, split), unit="slice"):
            bundle.add(sample)
    log.info("wrote %d real slices of %s to %s", len(bundle), data, out)
    return out
