"""The model artifacts directory of ``docs/artifacts.md``: its manifest, file names and checks.

This is the worker's side of the contract between training and serving, so it imports neither torch
nor ``models``: :func:`verify_artifacts` checks a directory written by ``mrisynth export`` and
returns its :class:`Manifest`; :data:`NETWORK_IO` names the inputs and outputs of every ONNX file.
"""

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from mrisynth.conventions import LABELS, MODALITIES

FORMAT_VERSION: Literal[1] = 1
"""Version of the artifacts layout written by this code."""

MANIFEST_NAME: str = "manifest.json"
"""File name of the manifest inside an artifacts directory."""

LESION_LIBRARY_NAME: str = "lesion_library.npz"
"""File name of the lesion library, in the training run and in the artifacts directory."""

LesionVariant = Literal["1SEG", "1EC+4DC", "4SEG"]
"""Lesion guidance variants of Sec. 2.7 (the same as ``models.networks.LESION_VARIANTS``)."""

DEFAULT_DICE_THRESHOLD: float = 0.95
"""Lesion filter of Sec. 2.8: a synthetic sample is kept when its segmentation reaches this Dice."""

DEFAULT_PROBABILITY_THRESHOLD: float = 0.5
"""Level at which the worker binarizes probability maps: ``f > 0.5``, ``mask > 0.5``."""


def segmentor_name(modality: str) -> str:
    """Network name (and file stem) of the lesion segmentor of a modality, e.g. ``SEG_flair``."""
    return f"SEG_{modality}"


_IMAGE_IO: tuple[tuple[str, ...], tuple[str, ...]] = (("image",), ("probabilities",))

NETWORK_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "DC_f": (("code",), ("f",)),
    "MG": (("f",), ("mask",)),
    "EC_r": (("fusion",), ("code",)),
    "DC": (("code", "condition"), ("image",)),
    "EC": (("image",), ("code",)),
    **{segmentor_name(m): _IMAGE_IO for m in MODALITIES},
}
"""(input names, output names) of every network file, keyed by network name (file ``<name>.onnx``)."""

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+-]+$")]


class ArtifactError(ValueError):
    """An artifacts directory is incomplete, corrupted or has an invalid manifest."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Frozen):
    """A file of the artifacts directory and the sha256 of its bytes (lowercase hex)."""

    file: FileName
    sha256: Sha256


class LesionLibraryEntry(FileEntry):
    """The lesion library file and its number of labels N (``labels`` is uint8 (N, H, W))."""

    count: int = Field(ge=1)


class FusionWeights(_Frozen):
    """Weights of the fusion map of Sec. 2.5: ``label_weight * onehot_c + structure_weight * f``."""

    label_weight: float
    structure_weight: float


class Thresholds(_Frozen):
    """Thresholds of the synthesis pipeline.

    Attributes:
        beta: Algorithm 1 pixel threshold.
        structure_mae: Algorithm 3 acceptance threshold on the MAE between the two brain masks.
        dice: Sec. 2.8 lesion filter, minimum Dice of the segmentors on a synthetic sample.
        probability: binarization level of probability maps (the brain mask, label probabilities).
        structure_probability: binarization level of DC_f's generated maps, calibrated by the export
            so that they have the edge density of the real training maps (``mrisynth export``).
    """

    beta: float = Field(gt=0)
    structure_mae: float = Field(gt=0)
    dice: float = Field(gt=0, le=1)
    probability: float = Field(gt=0, lt=1)
    structure_probability: float = Field(gt=0, lt=1)


class DiceCalibration(_Frozen):
    """How the export chose ``thresholds.dice``: the segmentors on the real held-out slices.

    Attributes:
        slices: held-out slices with a lesion that were segmented.
        cases: their case ids.
        quantiles: quantiles (``"p10"`` ... ``"p90"``) of the lesion filter's score on them, the
            whole-tumor Dice averaged over the four modalities.
        per_modality_median: median whole-tumor Dice of each modality's segmentor.
        dice: the default threshold, min(0.95, the median score): a synthetic sample must be as
            recognisable as a typical real slice.
    """

    slices: int = Field(ge=1)
    cases: tuple[str, ...]
    quantiles: dict[str, float]
    per_modality_median: dict[str, float]
    dice: float = Field(gt=0, le=1)


class Training(_Frozen):
    """How the exported networks were trained, copied from the run's ``run.json``."""

    preset: str
    command: str
    seed: int
    data: dict[str, Any]
    steps: dict[str, int]
    final_losses: dict[str, dict[str, float]]


class Manifest(_Frozen):
    """``manifest.json`` of an artifacts directory; field by field as in ``docs/artifacts.md``."""

    format_version: Literal[1]
    image_size: tuple[int, int]
    voxel_size_mm: tuple[float, float, float]
    modalities: tuple[str, ...]
    labels: tuple[int, ...]
    lesion_guidance: LesionVariant
    fusion: FusionWeights
    structure_code_shape: tuple[int, int, int]
    semantic_code_channels: int = Field(ge=1)
    thresholds: Thresholds
    networks: dict[str, FileEntry]
    segmentors: dict[str, str]
    lesion_library: LesionLibraryEntry
    training: Training
    dice_calibration: DiceCalibration | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if self.modalities != MODALITIES or self.labels != LABELS:
            raise ValueError(f"modalities and labels must be {MODALITIES} and {LABELS}")
        if any(size <= 0 or size % 8 for size in self.image_size):
            raise ValueError(f"image_size must be positive multiples of 8, got {self.image_size}")
        if set(self.segmentors) != set(MODALITIES):
            raise ValueError(f"segmentors must have one entry per modality {MODALITIES}")
        missing = sorted((set(NETWORK_IO) | set(self.segmentors.values())) - set(self.networks))
        if missing:
            raise ValueError(f"networks lack {missing}")
        return self

    def files(self) -> dict[str, FileEntry]:
        """Every file listed in the manifest (networks and lesion library), keyed by file name."""
        entries: list[FileEntry] = [*self.networks.values(), self.lesion_library]
        return {entry.file: entry for entry in entries}


def sha256_file(path: Path) -> str:
    """Lowercase hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(path: Path) -> Manifest:
    """Read and validate a ``manifest.json``.

    Args:
        path: the manifest file, or an artifacts directory holding ``manifest.json``.

    Returns:
        The validated manifest.

    Raises:
        ArtifactError: if the file is missing, not JSON, or does not match :class:`Manifest`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as error:
        raise ArtifactError(f"{path}: manifest not found") from error
    except (json.JSONDecodeError, ValidationError) as error:
        raise ArtifactError(f"{path}: invalid manifest: {error}") from error


def verify_artifacts(directory: Path) -> Manifest:
    """Check an artifacts directory: valid manifest, every listed file present with its sha256.

    Args:
        directory: a directory written by ``mrisynth export``.

    Returns:
        The validated manifest.

    Raises:
        ArtifactError: naming the first missing or corrupted file, or the invalid manifest.
    """
    directory = Path(directory)
    manifest = load_manifest(directory / MANIFEST_NAME)
    for name, entry in manifest.files().items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path}: file listed in the manifest is missing")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ArtifactError(
                f"{path}: corrupted file, sha256 {digest} does not match the manifest's {entry.sha256}"
            )
    return manifest
