"""The HTTP API's request and response bodies: the contract with clients (``docs/api.md``).

``*Create`` models are what a client sends, ``*Public`` what it gets back. The thresholds and lesion
controls are the worker's own :class:`~worker.request.RequestThresholds` and
:class:`~worker.request.LesionControls`, so their limits are checked once, in one place; request
bodies are validated strictly (JSON types as the schema says: no ``0`` for false, no ``"1"`` for 1).
"""

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator, model_validator

from worker.bundle_layout import CASE_PREFIX_PATTERN, BundleLayout, BundleOptions
from worker.nnunet import NNUNET_NAME_PATTERN, nnunet_dataset
from worker.request import LesionControls, RequestThresholds

Modality = Literal["t1", "t1ce", "t2", "flair"]
"""A modality name of :data:`mrisynth.conventions.MODALITIES`."""

DatasetState = Literal["queued", "running", "finished", "failed", "cancelled"]
"""Where a dataset stands; ``finished``, ``failed`` and ``cancelled`` are final."""

MAX_SEED = 2**32 - 1
"""Largest seed: 32 bits, as most tools take seeds, and exact in every JSON parser."""


class ThresholdsBody(RequestThresholds):
    """:class:`~worker.request.RequestThresholds`, strictly typed."""

    model_config = ConfigDict(strict=True)


class LesionBody(LesionControls):
    """:class:`~worker.request.LesionControls`, strictly typed (``scale`` a JSON array of numbers)."""

    model_config = ConfigDict(strict=True)

    scale: tuple[StrictFloat, StrictFloat] = Field(
        default=LesionControls.model_fields["scale"].default, strict=False
    )


class DatasetCreate(BaseModel):
    """``POST /datasets``: what to synthesize.

    Attributes:
        n: samples, >= 1 and at most the service's ``max_n``.
        modalities: non-empty subset of t1, t1ce, t2, flair without repeats; default all four.
        lesion_source: ``library`` (the model's lesion library, default), ``none`` (healthy brains) or
            the id of one of the caller's lesion sets (``POST /lesion-sets``).
        structure_source: ``noise`` (default: structural maps decoded from noise, Sec. 2.3, each sample
            one 2D slice) or the id of one of the caller's scan sets (``POST /scan-sets``): each sample is
            then a volume on that scan's grid, its own structure with lesions placed inside its brain
            (Sec. 2.5; ``docs/translations.md``); the quality filters do not apply to it.
        seed: 0 to 2**32 - 1; same seed, model and request, same samples. Default: a random seed,
            reported back.
        layout: file layout of the bundle: ``brats`` (default), ``brats2023`` or ``nnunet``.
        case_prefix: prefix of the case ids: a letter, then up to 31 letters, digits or ``-`` (e.g.
            ``BraTS-GLI`` for loaders that select BraTS 2023 cases by it); default null, the layout's
            (``BraTSSyn``, ``BraTS-SYN``), which says the data is synthetic.
        nnunet_dataset_id: the ``nnunet`` layout's dataset id, 1-999 (folder ``Dataset<id>_<name>``);
            default 901. Only with ``layout`` ``nnunet``.
        nnunet_dataset_name: the ``nnunet`` layout's dataset name: letters, digits, ``_`` and ``-``;
            default ``MRISynth``. Only with ``layout`` ``nnunet``.
        previews: also put a PNG preview per sample in the bundle; default false.
        thresholds: the quality filters (Algorithm 3's structure MAE, the lesion Dice); null takes the
            model's.
        lesion: lesion augmentation (scale range, rotation, translation, flips) and lesions per sample.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    n: int = Field(ge=1)
    modalities: list[Modality] = Field(
        default_factory=lambda: list(get_args(Modality)), min_length=1, max_length=4
    )
    lesion_source: str = Field(
        default="library",
        min_length=1,
        max_length=64,
        description="library, none or the id of one of your lesion sets (POST /lesion-sets)",
    )
    structure_source: str = Field(
        default="noise",
        min_length=1,
        max_length=64,
        description="noise (structure decoded from noise, 2D samples) or the id of one of your scan sets "
        "(POST /scan-sets): volumes on that scan's grid, its structure with lesions placed in its brain",
    )
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    layout: BundleLayout = Field(default=BundleLayout.BRATS, strict=False)
    case_prefix: str | None = Field(default=None, pattern=CASE_PREFIX_PATTERN)
    nnunet_dataset_id: int | None = Field(default=None, ge=1, le=999)
    nnunet_dataset_name: str | None = Field(default=None, pattern=NNUNET_NAME_PATTERN, max_length=64)
    previews: bool = False
    thresholds: ThresholdsBody = ThresholdsBody()
    lesion: LesionBody = LesionBody()

    @field_validator("modalities")
    @classmethod
    def _distinct(cls, modalities: list[str]) -> list[str]:
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must not repeat, got {modalities}")
        return modalities

    @model_validator(mode="after")
    def _nnunet_fields_need_nnunet(self) -> "DatasetCreate":
        fields = ("nnunet_dataset_id", "nnunet_dataset_name")
        given = [name for name in fields if getattr(self, name) is not None]
        if given and self.layout != BundleLayout.NNUNET:
            names = " and ".join(given)
            raise ValueError(f"{names} apply to layout 'nnunet' only, not '{self.layout.value}'")
        return self

    def bundle_options(self) -> BundleOptions:
        """The bundle options the request asks for (with the structural maps and brain masks)."""
        return BundleOptions(
            layout=self.layout,
            extras=True,
            previews=self.previews,
            nnunet=nnunet_dataset(self.nnunet_dataset_id, self.nnunet_dataset_name),
            case_prefix=self.case_prefix,
        )


class DatasetCreated(BaseModel):
    """``202`` answer to ``POST /datasets``."""

    id: str
    state: DatasetState
    status_url: str


class Progress(BaseModel):
    """How far a dataset is.

    Attributes:
        accepted: samples accepted so far.
        target: samples asked for (n).
        rejected: candidates rejected so far, by filter: ``structure`` (Algorithm 3), ``lesion`` (no
            lesion fitted in the brain) and ``dice`` (the lesion filter).
        samples_per_s: accepted samples per second since the first chunk started; null before.
        eta_s: seconds left at that rate (for a dataset on a scan, at its rate of slices); null before the
            first sample (slice), 0 when finished.
        slices_done: for a dataset on a scan (``structure_source`` a scan set, or a translation), whose
            samples are volumes: axial slices made so far, all volumes together, counted after each
            batch of slices; null for a dataset from noise (each of its samples is one slice).
        slices_total: for a dataset on a scan, the axial slices to make: ``target`` times the scan's;
            null for a dataset from noise.
    """

    accepted: int
    target: int
    rejected: dict[str, int]
    samples_per_s: float | None
    eta_s: float | None
    slices_done: int | None = Field(
        default=None, description="datasets on a scan: axial slices made so far; null for noise datasets"
    )
    slices_total: int | None = Field(
        default=None, description="datasets on a scan: axial slices to make; null for noise datasets"
    )


class DatasetPublic(BaseModel):
    """``GET /datasets/{id}``.

    Attributes:
        id: the dataset's id.
        state: see :data:`DatasetState`.
        n: samples asked for.
        seed: the seed used (the one asked for, or the random one drawn).
        progress: see :class:`Progress`.
        error: why the dataset failed; null otherwise.
        download_url: where to get the zip once finished; null before.
        sha256: hex sha256 of the whole zip once finished.
        size_bytes: size of the zip once finished.
        created_at: when it was asked for (UTC).
        expires_at: when a finished bundle is removed (UTC); null until finished.
    """

    id: str
    state: DatasetState
    n: int
    seed: int
    progress: Progress
    error: str | None
    download_url: str | None
    sha256: str | None
    size_bytes: int | None
    created_at: datetime
    expires_at: datetime | None


class DatasetList(BaseModel):
    """``GET /datasets``: the caller's datasets, newest first."""

    datasets: list[DatasetPublic]


class LesionSetPublic(BaseModel):
    """An uploaded lesion set: pass its id as a dataset's ``lesion_source``.

    Attributes:
        id: the lesion set's id.
        files: the uploaded file names, in upload order.
        slices: label slices with a lesion found in them (each 2D file is one slice; 3D files give
            their axial slices that hold a lesion).
        size_bytes: bytes stored.
        created_at: when it was uploaded (UTC).
        expires_at: when it is removed (UTC): ``lesion_set_ttl_s`` after its upload.
    """

    id: str
    files: list[str]
    slices: int
    size_bytes: int
    created_at: datetime
    expires_at: datetime


class LesionSetList(BaseModel):
    """``GET /lesion-sets``: the caller's lesion sets, newest first."""

    lesion_sets: list[LesionSetPublic]


class ScanSetPublic(BaseModel):
    """An uploaded scan set, one case: pass its id as a dataset's ``structure_source``.

    Attributes:
        id: the scan set's id.
        files: file key (``t1``, ``t1ce``, ``t2``, ``flair``, ``seg``) -> the uploaded file's name.
        shape: the files' shape, (X, Y) for one axial slice or (X, Y, Z).
        sha256: file key -> the file's sha256 (hex), so a client finds the set it uploaded before.
        size_bytes: bytes stored.
        created_at: when it was uploaded (UTC).
        expires_at: when it is removed (UTC): ``lesion_set_ttl_s`` after its upload, as lesion sets.
    """

    id: str
    files: dict[str, str] = Field(description="file key (t1, t1ce, t2, flair, seg) -> uploaded file name")
    shape: list[int] = Field(description="the files' shape: (X, Y) for one axial slice, or (X, Y, Z)")
    sha256: dict[str, str] = Field(description="file key -> the uploaded file's sha256 (hex)")
    size_bytes: int
    created_at: datetime
    expires_at: datetime


class ScanSetList(BaseModel):
    """``GET /scan-sets``: the caller's scan sets, newest first."""

    scan_sets: list[ScanSetPublic]


class Health(BaseModel):
    """``GET /healthz``: the process answers."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """``GET /readyz``: whether the service can take and run jobs, with each check's finding.

    Attributes:
        ready: Redis answers, the artifacts are loaded and at least one worker is alive.
        checks: ``redis``, ``artifacts`` and ``workers``, each ``ok`` or what is wrong.
    """

    ready: bool
    checks: dict[str, str]
