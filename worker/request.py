"""What a synthesis job asks for: a typed, JSON-ready request (paper Sec. 2.8, Fig. 7).

The request names the modalities to synthesize, where the lesion labels come from, how they are
augmented, the two filters' thresholds and the attempt bounds. Every field has a default, so
``SynthesisRequest()`` is the paper's setting: four modalities, labels from the artifacts' lesion
library, the manifest's thresholds (Algorithm 3 MAE 0.05, Dice 0.95).
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mrisynth.conventions import MODALITIES

LesionSourceName = Literal["library", "none"]
"""``library``: the artifacts' ``lesion_library.npz``; ``none``: healthy brains, all-zero labels."""

StructureSourceName = Literal["noise"]
"""``noise``: structural feature maps decoded by DC_f from N(0, 1) codes (Sec. 2.3)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RequestThresholds(_Frozen):
    """The filters of Sec. 2.8; None takes the artifacts manifest's value.

    Attributes:
        structure_mae: Algorithm 3, largest accepted MAE between MG's brain mask and the filled
            contours of f, in [0, 1]; None: the manifest's (0.05 by default). 1.0 accepts every map.
        dice: smallest accepted mean whole-tumor Dice of the segmentors over the requested
            modalities, in [0, 1]; None: the manifest's (0.95 by default). 0.0 accepts every sample.
            Not used with ``lesion_source="none"``, which ``lesion_free_fraction`` filters instead.
        lesion_free_fraction: with ``lesion_source="none"``, the largest fraction of an image's pixels
            a segmentor may call lesion for the sample to count as healthy, in [0, 1); default 0.001
            (9 pixels at 96 x 96, 1 pixel at 32 x 32), which forgives isolated misclassified pixels.
    """

    structure_mae: float | None = Field(default=None, ge=0.0, le=1.0)
    dice: float | None = Field(default=None, ge=0.0, le=1.0)
    lesion_free_fraction: float = Field(default=0.001, ge=0.0, lt=1.0)


class LesionControls(_Frozen):
    """Random augmentation of the drawn labels, Sec. 2.8 ("randomly scaled, rotated, translated, flipped").

    Each draw flips the label (left-right and up-down, each with probability 0.5), rotates it by an
    angle uniform in [-rotation_degrees, rotation_degrees] and scales it by a factor uniform in
    ``scale`` about the lesion's centroid, then shifts it by a uniform fraction in
    [-translation, translation] of the image size along each axis (``cv2.warpAffine``, nearest).

    Attributes:
        scale: (low, high) scale factors, 0 < low <= high <= 4; default (0.8, 1.2).
        rotation_degrees: largest rotation in degrees, in [0, 180]; default 180 (any orientation).
        translation: largest shift as a fraction of the image size, in [0, 1); default 0.2.
        flip: whether to flip at random; default True.
        count: lesions per sample, 1 to 8; several are drawn independently and must not overlap.
    """

    scale: tuple[float, float] = (0.8, 1.2)
    rotation_degrees: float = Field(default=180.0, ge=0.0, le=180.0)
    translation: float = Field(default=0.2, ge=0.0, lt=1.0)
    flip: bool = True
    count: int = Field(default=1, ge=1, le=8)

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, scale: tuple[float, float]) -> tuple[float, float]:
        low, high = scale
        if not 0.0 < low <= high <= 4.0:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 4, got {scale}")
        return scale


class AttemptBounds(_Frozen):
    """How long to keep trying before giving up with :class:`worker.pipeline.AcceptanceError`.

    Attributes:
        candidates_per_sample: candidates (structural map + lesion + synthesis) tried per sample
            before the request fails, 1 to 100000; default 200.
        lesion_draws: lesion draws per candidate before its structural map is given up (rejected by
            lesion fit), 1 to 10000; default 50.
    """

    candidates_per_sample: int = Field(default=200, ge=1, le=100_000)
    lesion_draws: int = Field(default=50, ge=1, le=10_000)


class SynthesisRequest(_Frozen):
    """One synthetic-dataset request.

    Attributes:
        modalities: non-empty subset of ``MODALITIES``, stored in ``MODALITIES`` order; default all four.
        lesion_source: ``"library"`` (the artifacts' lesion library, default), ``"none"`` (healthy
            brains) or the path of a label NIfTI file or of a directory of them (2D or 3D, values in
            {0, 1, 2, 4}); see :mod:`worker.lesions`.
        structure_source: ``"noise"`` (default: DC_f's maps from noise, filtered by Algorithm 3 and the
            lesion filter) or the folder of an uploaded scan set (:mod:`worker.scans`), whose own structure
            the lesions are placed into (:mod:`worker.structure_source`; no filter applies).
        thresholds: the filters' thresholds.
        lesion: label augmentation and lesions per sample (ignored with ``"none"``).
        bounds: attempt bounds.
    """

    modalities: tuple[str, ...] = MODALITIES
    lesion_source: LesionSourceName | Path = "library"
    structure_source: StructureSourceName | Path = "noise"
    thresholds: RequestThresholds = RequestThresholds()
    lesion: LesionControls = LesionControls()
    bounds: AttemptBounds = AttemptBounds()

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, modalities: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(modalities) - set(MODALITIES))
        if not modalities or unknown or len(set(modalities)) != len(modalities):
            raise ValueError(
                f"modalities must be a non-empty subset of {MODALITIES} without repeats, got {modalities}"
            )
        return tuple(m for m in MODALITIES if m in modalities)

    @model_validator(mode="after")
    def _path_given(self) -> "SynthesisRequest":
        if isinstance(self.lesion_source, Path) and not str(self.lesion_source).strip(". "):
            raise ValueError("lesion_source must be 'library', 'none' or the path of label files")
        return self
