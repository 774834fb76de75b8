"""BraTS file naming and case discovery: the one place that knows how BraTS names its files.

Three layouts are recognised, anywhere under a root (BraTS 2018/2019 put cases under ``HGG/`` and ``LGG/``):

- ``brats2021`` (BraTS 2018-2021): ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (or ``.nii``, as parts
  of BraTS 2020 ship); labels 0, 1, 2, 4 as ours.
- ``brats2023``: ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (or ``.nii``); labels 0, 1, 2, 3 with
  3 = enhancing tumor, read as our 4.
- ``brats2015``: ``<case>/VSD.Brain.XX.O.MR_{T1,T1c,T2,Flair}.<id>/<same name>.mha`` and the label
  ``<case>/VSD.Brain_<n>more.XX.O.OT.<id>/<same name>.mha`` (the ``.mha`` may also sit directly in
  ``<case>/``); labels 0-4 with 3 = non-enhancing core, read as our 1 (BraTS 2017 merged it into the
  necrotic core).

Readers go through `find_cases`, writers through `case_file`. Files and folders whose name starts with a dot
(macOS ``._*`` resource forks, temporary caches) are ignored.
"""

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mrisynth.brats.errors import BratsError
from mrisynth.conventions import MODALITIES

LABEL_KEY = "seg"
"""Key of the label file next to the modality names."""


class Layout(StrEnum):
    """A BraTS release's file layout: BraTS 2018-2021 (``brats2021``), 2023 or 2015."""

    BRATS2021 = "brats2021"
    BRATS2023 = "brats2023"
    BRATS2015 = "brats2015"


_LOOKED_FOR: dict[Layout, str] = {
    Layout.BRATS2021: "<case>/<case>_{t1,t1ce,t2,flair,seg}.nii[.gz]",
    Layout.BRATS2023: "<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii[.gz]",
    Layout.BRATS2015: "<case>/VSD.Brain*.XX.O.{MR_T1,MR_T1c,MR_T2,MR_Flair,OT}.<id>/<same>.mha",
}


LABEL_MAPS: dict[Layout, dict[int, int]] = {
    Layout.BRATS2021: {0: 0, 1: 1, 2: 2, 4: 4},
    Layout.BRATS2023: {0: 0, 1: 1, 2: 2, 3: 4},
    Layout.BRATS2015: {0: 0, 1: 1, 2: 2, 3: 1, 4: 4},
}
"""Per layout, every label value its files may hold -> our label value (`mrisynth.conventions.LABELS`)."""

_NIFTI_TOKENS: dict[Layout, tuple[str, dict[str, str]]] = {
    Layout.BRATS2021: ("_", {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", LABEL_KEY: "seg"}),
    Layout.BRATS2023: ("-", {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", LABEL_KEY: "seg"}),
}
"""Per NIfTI layout: separator after the case id, and our key -> the file's token."""

_MHA_TOKENS: dict[str, str] = {
    "t1": "MR_T1",
    "t1ce": "MR_T1c",
    "t2": "MR_T2",
    "flair": "MR_Flair",
    LABEL_KEY: "OT",
}

_NIFTI_PATTERNS: dict[Layout, re.Pattern[str]] = {
    layout: re.compile(rf"^(?P<case>.+){re.escape(sep)}(?P<token>{'|'.join(tokens.values())})\.nii(?:\.gz)?$")
    for layout, (sep, tokens) in _NIFTI_TOKENS.items()
}
_MHA_PATTERN = re.compile(rf"^VSD\.Brain.*?\.(?P<token>{'|'.join(_MHA_TOKENS.values())})\.(?P<id>\d+)\.mha$")


@dataclass(frozen=True)
class CaseFiles:
    """The files of one BraTS case.

    Attributes:
        case_id: the case's name, e.g. ``BraTS2021_00000``; unique under a root.
        layout: the layout its files follow.
        images: one file per modality, keyed by our names (`mrisynth.conventions.MODALITIES`).
        label: the segmentation file, or None for an unlabeled (test-set) case.
    """

    case_id: str
    layout: Layout
    images: dict[str, Path]
    label: Path | None

    @property
    def files(self) -> list[Path]:
        """Every file of the case: the modalities in `MODALITIES` order, then the label if any."""
        paths = [self.images[m] for m in MODALITIES]
        return paths if self.label is None else [*paths, self.label]


def case_file(case_dir: Path, case_id: str, key: str, layout: Layout = Layout.BRATS2021) -> Path:
    """Path of one file of a case, as BraTS names it (``.nii.gz``).

    Args:
        case_dir: the case's folder, usually ``<root>/<case_id>``.
        case_id: the case's name.
        key: a modality name (``t1``, ``t1ce``, ``t2``, ``flair``) or ``seg``.
        layout: `Layout.BRATS2021` or `Layout.BRATS2023`; BraTS 2015 names carry a per-file id and are
            only read, never written.

    Returns:
        e.g. ``case_dir / "BraTS2021_00000_t1ce.nii.gz"`` or ``case_dir / "BraTS-GLI-00000-000-t1c.nii.gz"``.
    """
    if layout not in _NIFTI_TOKENS:
        raise ValueError(f"layout {layout} has no writable file names; use brats2021 or brats2023")
    separator, tokens = _NIFTI_TOKENS[layout]
    if key not in tokens:
        raise ValueError(f"key {key!r} is not one of {tuple(tokens)}")
    return Path(case_dir) / f"{case_id}{separator}{tokens[key]}.nii.gz"


@dataclass(frozen=True)
class _Found:
    layout: Layout
    case_dir: Path
    case_id: str
    key: str
    path: Path


def _classify(path: Path) -> _Found | None:
    """The BraTS file that ``path`` is, or None for any other file."""
    for layout, pattern in _NIFTI_PATTERNS.items():
        match = pattern.match(path.name)
        if match:
            key = {token: key for key, token in _NIFTI_TOKENS[layout][1].items()}[match["token"]]
            return _Found(layout, path.parent, match["case"], key, path)
    match = _MHA_PATTERN.match(path.name)
    if match is None:
        return None
    key = {token: key for key, token in _MHA_TOKENS.items()}[match["token"]]
    case_dir = path.parent.parent if path.parent.name == path.stem else path.parent
    return _Found(Layout.BRATS2015, case_dir, case_dir.name, key, path)


def _expected_name(case_id: str, key: str, layout: Layout) -> str:
    if layout == Layout.BRATS2015:
        prefix = "VSD.Brain_<n>more" if key == LABEL_KEY else "VSD.Brain"
        name = f"{prefix}.XX.O.{_MHA_TOKENS[key]}.<id>"
        return f"{name}/{name}.mha"
    return f"{case_file(Path(), case_id, key, layout).name} (or .nii)"


def _case_from(
    case_dir: Path, found: list[_Found], require_label: bool
) -> tuple[CaseFiles | None, list[str]]:
    """Assemble one case from the BraTS files found in its folder; the problems found instead, if any."""
    layouts = sorted({f.layout for f in found})
    case_ids = sorted({f.case_id for f in found})
    if len(layouts) > 1:
        return None, [f"{case_dir}: mixes layouts {', '.join(layouts)}"]
    if len(case_ids) > 1:
        return None, [f"{case_dir}: holds files of several cases {case_ids}; expected one case per folder"]
    layout, case_id = layouts[0], case_ids[0]
    by_key: dict[str, list[Path]] = defaultdict(list)
    for f in found:
        by_key[f.key].append(f.path)
    problems = [
        f"{case_dir}: several {key} files: {', '.join(p.name for p in sorted(paths))}"
        for key, paths in by_key.items()
        if len(paths) > 1
    ]
    required = [*MODALITIES, LABEL_KEY] if require_label else list(MODALITIES)
    problems += [
        f"{case_dir}: missing {key} file, expected {_expected_name(case_id, key, layout)}"
        for key in required
        if key not in by_key
    ]
    if problems:
        return None, problems
    label = by_key[LABEL_KEY][0] if LABEL_KEY in by_key else None
    return CaseFiles(case_id, layout, {m: by_key[m][0] for m in MODALITIES}, label), []


def find_cases(root: Path, require_label: bool = True) -> list[CaseFiles]:
    """Find every BraTS case under ``root``, in any of the `Layout` s, at any depth.

    Args:
        root: a BraTS folder, e.g. ``MICCAI_BraTS_2019_Data_Training`` (with ``HGG/`` and ``LGG/``),
            ``BRATS2015_Training`` or ``ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData``.
        require_label: whether every case must have its segmentation file (False for test sets).

    Returns:
        The cases sorted by case id.

    Raises:
        BratsError: ``root`` is not a folder or holds no case; a case misses a modality (or its label when
            ``require_label``), has two files for one modality, or shares its id with another case. All the
            problems found are listed in one message, each with the folder and the file name expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise BratsError(f"BraTS root {root} is not a directory")
    found: dict[Path, list[_Found]] = defaultdict(list)
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            hit = None if name.startswith(".") else _classify(Path(folder) / name)
            if hit is not None:
                found[hit.case_dir].append(hit)
    if not found:
        looked_for = "; ".join(f"{layout} {pattern}" for layout, pattern in _LOOKED_FOR.items())
        raise BratsError(f"no BraTS case found under {root}; looked for {looked_for}")
    cases: list[CaseFiles] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for case_dir in sorted(found):
        case, case_problems = _case_from(case_dir, found[case_dir], require_label)
        problems += case_problems
        if case is not None and case.case_id in seen:
            problems.append(f"case id {case.case_id} found twice: in {seen[case.case_id]} and in {case_dir}")
        elif case is not None:
            seen[case.case_id] = case_dir
            cases.append(case)
    if problems:
        raise BratsError(f"bad BraTS data under {root}:\n" + "\n".join(problems))
    return sorted(cases, key=lambda case: case.case_id)
