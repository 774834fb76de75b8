"""The RQ job of a dataset on an uploaded scan: its translation (Sec. 2.4) or synthesis on its structure
(Sec. 2.5), written as volumes on the scan's grid (:mod:`worker.scan_bundle`).

One job per dataset, under the assembly job's id (:func:`worker.jobs.enqueue_dataset`), so the service
follows, serves and removes it as any dataset. Progress is ``job.meta["progress"]``, a
:class:`ScanProgress` saved (``job.save_meta()``) when the job starts and after every batch of axial
slices through the networks, which the service reads (:func:`service.status.refresh`). Either way the
work is bounded by the scan's limits (:mod:`worker.scans`) times the request's ``n``.
:func:`scan_bundle` is what the CLI runs locally.
"""

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from rq import get_current_job

from mrisynth.settings import get_settings
from worker.bundle_layout import BundleOptions
from worker.candidates import LESION_STREAM, candidate_rng
from worker.jobs import DatasetSpec, bundle_path, loaded_synthesizer
from worker.lesion_volumes import LabelVolume, read_label_volumes
from worker.lesions import LabelLimits, read_label_files
from worker.request import SynthesisRequest
from worker.scan_bundle import write_scan_bundle
from worker.scans import Scan, read_scan_set, scan_brain, scan_slices, to_grid
from worker.sessions import Synthesizer
from worker.structure_source import synthesize_on_scan
from worker.translation import translate

log = logging.getLogger(__name__)

COMBINATION = "mean of the EC codes of the given modalities (Sec. 2.4, loss (11)); docs/translations.md"
"""How several input modalities are combined, as the translation manifest says it."""


class ScanProgress(BaseModel):
    """``job.meta["progress"]`` of a scan job, JSON-ready: how far its volumes are.

    Attributes:
        requested: volumes asked for (the dataset's n; 1 for a translation), >= 1.
        accepted: volumes made whole so far.
        slices_done: axial slices through the networks so far, all volumes together.
        slices_total: axial slices to make, ``requested`` times the scan's, >= 1.
        elapsed_s: wall-clock seconds since the job started.
    """

    requested: int = Field(ge=1)
    accepted: int = 0
    slices_done: int = 0
    slices_total: int = Field(ge=1)
    elapsed_s: float = 0.0


class ProgressTracker:
    """Counts a scan job's slices and volumes and hands a :class:`ScanProgress` to ``report`` at each step.

    Args:
        requested: volumes asked for.
        depth: the scan's axial slices (Z).
        report: called with the progress at the start and after every step (saves ``job.meta``).
    """

    def __init__(self, requested: int, depth: int, report: Callable[[ScanProgress], None]) -> None:
        self.progress = ScanProgress(requested=requested, slices_total=requested * depth)
        self._report, self._start = report, time.monotonic()
        report(self.progress)

    def _step(self, **update: int) -> None:
        elapsed = time.monotonic() - self._start
        self.progress = self.progress.model_copy(update={**update, "elapsed_s": elapsed})
        self._report(self.progress)

    def slices(self, count: int) -> None:
        """``count`` more axial slices went through the networks."""
        self._step(slices_done=self.progress.slices_done + count)

    def volume(self) -> None:
        """One more volume is whole."""
        self._step(accepted=self.progress.accepted + 1)


def _resampling(synthesizer: Synthesizer, scan: Scan) -> dict[str, Any]:
    """The manifest's ``resampling``: whether and how slices were resized to the networks' size."""
    size = list(synthesizer.image_size)
    resampled = list(scan.grid[:2]) != size
    how = "standardized per axial slice, resized to the artifacts' size (INTER_AREA) and back (linear)"
    return {"resampled": resampled, "network_size": size, "grid": list(scan.grid), "how": how}


def translate_scan(
    synthesizer: Synthesizer,
    scan: Scan,
    targets: Sequence[str],
    batch_size: int,
    on_slices: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """The target modalities of a scan on its grid: :func:`worker.translation.translate` of its axial
    slices, ``batch_size`` at a time.

    Args:
        synthesizer: the loaded artifacts.
        scan: the uploaded scan, (X, Y, Z) volumes.
        targets: modalities to make, distinct.
        batch_size: slices per EC / DC call, >= 1.
        on_slices: called with the slices of each batch once it is translated.

    Returns:
        target -> float32 (X, Y, Z), 0 outside the scan's brain.
    """
    slices = scan_slices(scan, synthesizer.image_size[0])
    parts = []
    for i in range(0, scan.grid[2], batch_size):
        batch = {m: s[i : i + batch_size] for m, s in slices.items()}
        parts.append(translate(synthesizer, batch, targets))
        if on_slices is not None:
            on_slices(len(next(iter(batch.values()))))
    brain = scan_brain(scan)
    return {
        m: np.where(brain, to_grid(np.concatenate([p[m] for p in parts]), scan.grid[:2]), np.float32(0))
        for m in targets
    }


def _pool(
    synthesizer: Synthesizer, request: SynthesisRequest, scan: Scan
) -> np.ndarray | list[LabelVolume] | None:
    """The lesions to draw: None (``none``), the library's uint8 (N, S, S), or a lesion set's 3D volumes
    (on a 3D scan, when it has some) else its uint8 (N, S, S) 2D slices."""
    if request.lesion_source == "none":
        return None
    if isinstance(request.lesion_source, Path):
        limits = LabelLimits.of(get_settings())
        volumes = read_label_volumes(request.lesion_source, limits) if scan.grid[2] > 1 else []
        return volumes or read_label_files(request.lesion_source, synthesizer.image_size, limits)
    if not len(synthesizer.lesion_library):
        raise ValueError(f"the lesion library of {synthesizer.directory} holds no lesion")
    return synthesizer.lesion_library


def synthesize_scan(
    synthesizer: Synthesizer,
    scan: Scan,
    request: SynthesisRequest,
    seed: int,
    n: int,
    batch_size: int,
    tracker: ProgressTracker | None = None,
) -> list[dict[str, np.ndarray]]:
    """n samples on the scan's structure (:func:`worker.structure_source.synthesize_on_scan`).

    Sample k's lesions come from ``SeedSequence(seed, spawn_key=(k, 0, LESION_STREAM))`` only, so sample
    k is the same whatever n.

    Args:
        synthesizer: the loaded artifacts.
        scan: the uploaded scan.
        request: the modalities, lesion source, lesion controls and draw bound.
        seed: the dataset's seed.
        n: volumes to make, >= 1.
        batch_size: slices per EC_r / DC call.
        tracker: told of every batch of slices and every whole volume.

    Returns:
        Per sample, modality -> float32 (X, Y, Z) and ``seg`` -> uint8 (X, Y, Z).
    """
    pool = _pool(synthesizer, request, scan)
    on_slices = tracker.slices if tracker is not None else None
    draws = request.bounds.lesion_draws
    cases = []
    for k in range(n):
        rng = candidate_rng(seed, k, 0, LESION_STREAM)
        cases.append(
            synthesize_on_scan(
                synthesizer, scan, pool, request.modalities, rng, request.lesion, draws, batch_size, on_slices
            )
        )
        if tracker is not None:
            tracker.volume()
    return cases


def scan_bundle(
    synthesizer: Synthesizer,
    spec: DatasetSpec,
    out: Path,
    batch_size: int,
    report: Callable[[ScanProgress], None],
) -> Path:
    """Run a dataset spec on its uploaded scan (``spec.request.structure_source``) and write the zip.

    Args:
        synthesizer: the loaded artifacts.
        spec: the dataset: ``task`` ``translation`` (one volume of ``request.modalities``) or
            ``synthesis`` (``n`` volumes on the scan's structure).
        out: the zip to write (:func:`worker.scan_bundle.write_scan_bundle`).
        batch_size: slices per network call.
        report: called with the progress at the start and after every batch of slices.

    Returns:
        ``out``.

    Raises:
        ValueError: the spec is not on a scan, or the scan or its lesion source is unusable.
    """
    if not isinstance(spec.request.structure_source, Path):
        raise ValueError(f"dataset {spec.dataset_id}: structure_source is not a scan set folder")
    scan = read_scan_set(spec.request.structure_source)
    tracker = ProgressTracker(1 if spec.task == "translation" else spec.n, scan.grid[2], report)
    manifest = synthesizer.manifest
    about: dict[str, Any] = {
        "task": spec.task,
        "given": list(scan.modalities),
        "given_label": scan.label is not None,
        "resampling": _resampling(synthesizer, scan),
        "request": spec.model_dump(mode="json", exclude={"dataset_id"}),
        "seed": spec.seed,
        "artifacts": {name: entry.sha256 for name, entry in manifest.files().items()},
    }
    if spec.task == "translation":
        targets = spec.request.modalities
        cases = [translate_scan(synthesizer, scan, targets, batch_size, tracker.slices)]
        about["method"] = f"x_t,i = DC(code, i), code = {COMBINATION}"
        tracker.volume()
    else:
        cases = synthesize_scan(synthesizer, scan, spec.request, spec.seed, spec.n, batch_size, tracker)
        about["method"] = (
            "Sec. 2.5: Algorithm 1 of each slice of the scan's first modality, its own label removed, "
            "lesions placed once inside its brain (Algorithm 2), EC_r then DC"
        )
    modalities = tuple(m for m in cases[0] if m != "seg")
    options = BundleOptions(
        layout=spec.bundle.layout,
        modalities=modalities,
        nnunet=spec.bundle.nnunet,
        case_prefix=spec.bundle.case_prefix,
    )
    return write_scan_bundle(out, options, scan, cases, about)


def run_scan_dataset(arguments: dict) -> dict:
    """The job of a dataset on an uploaded scan: its bundle, written to :func:`worker.jobs.bundle_path`,
    its progress saved in ``job.meta["progress"]`` (:class:`ScanProgress`) at every step.

    Args:
        arguments: the :class:`~worker.jobs.DatasetSpec`, JSON.

    Returns:
        The bundle's path and case count (JSON).
    """
    spec, settings, job = DatasetSpec.model_validate(arguments), get_settings(), get_current_job()
    requested = 1 if spec.task == "translation" else spec.n

    def report(progress: ScanProgress) -> None:
        if job is not None:
            job.meta["progress"] = progress.model_dump(mode="json")
            job.save_meta()

    out = bundle_path(settings, spec.dataset_id)
    if out.exists():
        log.info("dataset %s: its bundle was written before this retry", spec.dataset_id)
    else:
        scan_bundle(loaded_synthesizer(settings.artifacts_dir), spec, out, settings.batch_size, report)
    log.info("dataset %s (%s on an uploaded scan): %s", spec.dataset_id, spec.task, out)
    return {"path": str(out), "samples": requested}
