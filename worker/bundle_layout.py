"""How a bundle lays out its files: layouts, case ids, file names and the options of a bundle.

Layouts (`BundleLayout`), as paths inside the zip; ``<case>`` is `case_id`:

- ``brats``: BraTS 2018-2021 naming, ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``, labels 0, 1, 2, 4.
- ``brats2023``: ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``, labels 0, 1, 2, 3 (3 enhancing tumor).
- ``nnunet``: an nnU-Net v2 raw dataset, ``Dataset<id>_<name>/{dataset.json,imagesTr,labelsTr}``
  (``Dataset901_MRISynth`` by default), labels 1 edema, 2 necrotic core, 3 enhancing tumor (`worker.nnunet`).

Only the requested modalities get files, in `MODALITIES` order. Images are float32 and labels uint8, with
the affine diag(-x, -y, z) of the voxel size: BraTS stores x and y flipped relative to RAS, and the
samples are BraTS axial slices. The brats layouts store a slice as a (H, W, 1) volume, nnunet as a 2D
image (see `worker.nnunet` for why). A case folder holds exactly the files its layout's loaders expect:
on request, the structural map and the brain mask (uint8, 0 and 1) go beside the case folders, in
``extras/<case>_{structure,brainmask}.nii.gz`` (nnunet: ``<dataset>/extras/``, a folder nnU-Net does not
read). The brats layouts also hold `DATALIST_NAME`, a MONAI datalist of the cases (`datalist`).

Case ids follow their release's pattern without being any real case's id: ``BraTSSyn_00000`` as
``BraTS2021_00000`` (a prefix and 5 digits), ``BraTS-SYN-00000-000`` as ``BraTS-GLI-00000-000`` (challenge,
5-digit subject, 3-digit timepoint). The prefix is a bundle option (``case_prefix``); the defaults say
the data is synthetic, and start with ``BraTS`` since nnU-Net's BraTS conversion scripts select case
folders by that prefix.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from mrisynth.brats.layouts import LABEL_KEY, LABEL_MAPS, Layout, case_file
from mrisynth.conventions import MODALITIES, VOXEL_SIZE_MM
from worker.nnunet import EXTRAS_FOLDER, NNUNET_LABEL_MAP, NnunetDataset, nnunet_case_files

MAX_SAMPLES = 100_000
"""Case ids have 5 digits."""

EXTRAS: tuple[str, ...] = ("structure", "brainmask")
"""File keys of the structural map and the brain mask."""

DATALIST_NAME = "datalist.json"
"""The brats layouts' MONAI datalist, at the bundle's root."""

DATALIST_FOLDS = 5
"""Case k of a datalist is in fold ``k % DATALIST_FOLDS``, as the folds of MONAI's BraTS 2021 tutorial."""

CASE_PREFIX_PATTERN = r"^[A-Za-z][A-Za-z0-9-]{0,31}$"
"""A case-id prefix: a letter, then up to 31 letters, digits and ``-``."""


class BundleLayout(StrEnum):
    """How a bundle names its files and encodes its labels (see the module docstring)."""

    BRATS = "brats"
    BRATS2023 = "brats2023"
    NNUNET = "nnunet"


_BRATS_LAYOUTS: dict[BundleLayout, Layout] = {
    BundleLayout.BRATS: Layout.BRATS2021,
    BundleLayout.BRATS2023: Layout.BRATS2023,
}

DEFAULT_CASE_PREFIXES: dict[BundleLayout, str] = {
    BundleLayout.BRATS: "BraTSSyn",
    BundleLayout.BRATS2023: "BraTS-SYN",
    BundleLayout.NNUNET: "BraTSSyn",
}
"""Case-id prefix of each layout when a bundle names none."""

LABEL_CONVENTIONS: dict[BundleLayout, str] = {
    BundleLayout.BRATS: "BraTS 2018-2021: 1 necrotic core, 2 edema, 4 enhancing tumor (ET = 4)",
    BundleLayout.BRATS2023: "BraTS 2023: 1 necrotic core, 2 edema, 3 enhancing tumor (ET = 3)",
    BundleLayout.NNUNET: (
        "nnU-Net's BraTS conversion: 1 edema, 2 necrotic core, 3 enhancing tumor, trained as the regions "
        "whole tumor (1, 2, 3), tumor core (2, 3), enhancing tumor (3)"
    ),
}
"""The label convention of each layout, stated in the manifest."""


class BundleSample(Protocol):
    """What the bundle needs of a synthesized sample, all arrays (H, W).

    Attributes:
        images: modality -> float32 image, per-image standardized; at least the written modalities.
        label: uint8 lesion label in {0, 1, 2, 4}.
        f: binary structural feature map f (Algorithm 1), values 0 and 1 in any numeric dtype.
        brain_mask: binary brain mask, values 0 and 1 in any numeric dtype.
        scores: the sample's scores, copied into the manifest: a JSON-serializable mapping or a pydantic
            model (dumped in JSON mode).
    """

    @property
    def images(self) -> Mapping[str, np.ndarray]: ...

    @property
    def label(self) -> np.ndarray: ...

    @property
    def f(self) -> np.ndarray: ...

    @property
    def brain_mask(self) -> np.ndarray: ...

    @property
    def scores(self) -> Mapping[str, Any] | BaseModel: ...


@dataclass(frozen=True)
class PlainSample:
    """A `BundleSample` of plain arrays and a scores dict (real slices, hand-made samples)."""

    images: dict[str, np.ndarray]
    label: np.ndarray
    f: np.ndarray
    brain_mask: np.ndarray
    scores: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BundleOptions:
    """What a bundle holds and how it is laid out.

    Attributes:
        layout: file naming and label values; default ``brats``.
        modalities: the modalities to write, a non-empty subset of `MODALITIES`, written in `MODALITIES`
            order whatever the order given; default all four.
        voxel_size_mm: (x, y, z) voxel size of the samples, all > 0; default 1 mm isotropic.
        extras: also write each sample's structural map and brain mask; default False.
        previews: also write ``previews/<case>.png`` per sample: the modalities, the label over the
            FLAIR (else the first modality) and the structural map; default False.
        montage_samples: ``montage.png`` shows the previews of this many first samples, 0 (default) for
            none; only these are kept in memory.
        nnunet: dataset id, name and descriptive fields of the ``nnunet`` layout.
        case_prefix: the case ids' prefix (`CASE_PREFIX_PATTERN`); default None, the layout's
            `DEFAULT_CASE_PREFIXES`.
    """

    layout: BundleLayout = BundleLayout.BRATS
    modalities: tuple[str, ...] = MODALITIES
    voxel_size_mm: tuple[float, float, float] = VOXEL_SIZE_MM
    extras: bool = False
    previews: bool = False
    montage_samples: int = 0
    nnunet: NnunetDataset = field(default_factory=NnunetDataset)
    case_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.case_prefix is not None and not re.match(CASE_PREFIX_PATTERN, self.case_prefix):
            raise ValueError(
                "case_prefix must be a letter, then up to 31 letters, digits or '-', "
                f"got {self.case_prefix!r}"
            )
        unknown = sorted(set(self.modalities) - set(MODALITIES))
        if unknown or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct names of {MODALITIES}, got {self.modalities}")
        if len(self.voxel_size_mm) != 3 or min(self.voxel_size_mm) <= 0:
            raise ValueError(f"voxel_size_mm must be 3 sizes > 0, got {self.voxel_size_mm}")
        if self.montage_samples < 0:
            raise ValueError(f"montage_samples must be >= 0, got {self.montage_samples}")

    @property
    def written_modalities(self) -> tuple[str, ...]:
        """The requested modalities in `MODALITIES` order: the channel order of the files."""
        return tuple(m for m in MODALITIES if m in self.modalities)

    @property
    def prefix(self) -> str:
        """The case ids' prefix: ``case_prefix`` or the layout's default."""
        return self.case_prefix or DEFAULT_CASE_PREFIXES[self.layout]

    @property
    def label_map(self) -> dict[int, int]:
        """File label value -> our label value, for the layout."""
        if self.layout == BundleLayout.NNUNET:
            return NNUNET_LABEL_MAP
        return LABEL_MAPS[_BRATS_LAYOUTS[self.layout]]

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel-to-RAS (mm) affine of every file, diag(-x, -y, z, 1) as BraTS."""
        x, y, z = self.voxel_size_mm
        return np.diag([-x, -y, z, 1.0])


def case_id(options: BundleOptions, index: int) -> str:
    """The id of a bundle's ``index``-th case (from 0), e.g. ``BraTSSyn_00000`` or ``BraTS-SYN-00000-000``."""
    if not 0 <= index < MAX_SAMPLES:
        raise ValueError(f"case index must be 0-{MAX_SAMPLES - 1}, got {index}")
    if options.layout == BundleLayout.BRATS2023:
        return f"{options.prefix}-{index:05d}-000"
    return f"{options.prefix}_{index:05d}"


def case_files(options: BundleOptions, case: str) -> dict[str, str]:
    """Zip member names of every file a case may have: the modalities, ``seg`` and `EXTRAS`."""
    modalities = options.written_modalities
    if options.layout == BundleLayout.NNUNET:
        return nnunet_case_files(options.nnunet, case, modalities)
    layout = _BRATS_LAYOUTS[options.layout]
    files = {key: case_file(Path(case), case, key, layout).as_posix() for key in (*modalities, LABEL_KEY)}
    return files | {extra: f"{EXTRAS_FOLDER}/{case}_{extra}.nii.gz" for extra in EXTRAS}


def datalist(
    layout: BundleLayout, modalities: Sequence[str], cases: Sequence[Mapping[str, str]]
) -> dict[str, Any]:
    """The MONAI datalist of a brats-layout bundle (`DATALIST_NAME`), paths relative to the bundle root.

    ``training`` lists ``{"fold", "image", "label"}`` per case, ``image`` the modality files in channel
    order: what ``monai.data.load_decathlon_datalist(path, data_list_key="training")`` reads and
    ``LoadImaged`` stacks into channels, with the fold key of MONAI's BraTS 2021 tutorial.

    Args:
        layout: a brats layout.
        modalities: the written modalities, in channel order.
        cases: each case's files keyed as `case_files`.
    """
    entries = [
        {"fold": k % DATALIST_FOLDS, "image": [files[m] for m in modalities], "label": files[LABEL_KEY]}
        for k, files in enumerate(cases)
    ]
    return {
        "description": LABEL_CONVENTIONS[layout],
        "modality": {str(i): m for i, m in enumerate(modalities)},
        "numTraining": len(entries),
        "training": entries,
    }
